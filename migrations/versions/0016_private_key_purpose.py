"""rsa_private_keys.purpose: what a key that has no certificate yet is for

``push_request``: the key of an APNs push certificate request (``mdmserver push-cert request``); the
certificate Apple returns is bound to it by its public key. Nullable: keys stored with their
certificate (CA, server identity) need no purpose of their own.

Revision ID: 0016_private_key_purpose
Revises: 0015_preauth_identity
"""

import sqlalchemy as sa
from alembic import op

revision = '0016_private_key_purpose'
down_revision = '0015_preauth_identity'
branch_labels = None
depends_on = None


# Plain ALTER TABLE, not a batch: a batch rebuilds the table on SQLite, and ``certificates`` references
# it (the foreign key refuses the drop). SQLite adds, and since 3.35 drops, a plain column in place.


def upgrade() -> None:
    op.add_column('rsa_private_keys', sa.Column('purpose', sa.String(length=30), nullable=True))
    op.create_index('ix_rsa_private_keys_purpose', 'rsa_private_keys', ['purpose'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_rsa_private_keys_purpose', table_name='rsa_private_keys')
    op.drop_column('rsa_private_keys', 'purpose')
