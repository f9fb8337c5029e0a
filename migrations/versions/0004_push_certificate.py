"""push certificate: the imported APNs MDM push certificate and its encrypted key

Revision ID: 0004_push_certificate
Revises: 0001_foundation
"""

import sqlalchemy as sa
from alembic import op

import mdmserver.db

revision = '0004_push_certificate'
down_revision = '0001_foundation'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('push_certificates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('topic', sa.String(length=255), nullable=False),
    sa.Column('subject', sa.String(length=500), nullable=False),
    sa.Column('issuer', sa.String(length=500), nullable=False),
    sa.Column('serial', sa.String(length=64), nullable=False),
    sa.Column('fingerprint_sha256', sa.String(length=64), nullable=False),
    sa.Column('certificate_pem', sa.Text(), nullable=False),
    sa.Column('encrypted_key', sa.LargeBinary(), nullable=False),
    sa.Column('not_before', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('not_after', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('imported_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('stopped_at', mdmserver.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('stop_reason', sa.String(length=255), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_push_certificates'))
    )
    op.create_index(op.f('ix_push_certificates_topic'), 'push_certificates', ['topic'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_push_certificates_topic'), table_name='push_certificates')
    op.drop_table('push_certificates')
