"""device trust: revoked certificates, auth sets bound to their certificate and flagged re-bindings

Revision ID: 0009_device_trust
Revises: 0008_command_parameters
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mdmserver.db

revision = '0009_device_trust'
down_revision = '0008_command_parameters'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.add_column(sa.Column('revoked_at', mdmserver.db.UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table('auth_sets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('fingerprint', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('previous_fingerprint', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('rebinding', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.create_index(batch_op.f('ix_auth_sets_fingerprint'), ['fingerprint'], unique=False)
    # Existing auth sets: the enrollment certificate whose key is the auth set's key.
    op.execute(
        "UPDATE auth_sets SET fingerprint = ("
        " SELECT c.fingerprint_sha256 FROM certificates c"
        " JOIN rsa_private_keys k ON k.id = c.private_key_id"
        " WHERE c.purpose = 'device_identity' AND k.public_key_pem = auth_sets.pubkey"
        " ORDER BY c.id DESC LIMIT 1)"
    )


def downgrade() -> None:
    with op.batch_alter_table('auth_sets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_auth_sets_fingerprint'))
        batch_op.drop_column('rebinding')
        batch_op.drop_column('previous_fingerprint')
        batch_op.drop_column('fingerprint')
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.drop_column('revoked_at')
