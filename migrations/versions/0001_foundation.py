"""foundation: tokens, audit, organization, certificates and keys

Revision ID: 0001_foundation
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

import mdmserver.db

revision = '0001_foundation'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('scopes', sa.String(length=100), nullable=False),
    sa.Column('created_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', mdmserver.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', mdmserver.db.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('name', name=op.f('uq_api_tokens_name')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_tokens_token_hash'))
    )
    op.create_table('audit_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('created_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=100), nullable=False),
    sa.Column('action', sa.String(length=100), nullable=False),
    sa.Column('resource_type', sa.String(length=50), nullable=False),
    sa.Column('resource_id', sa.String(length=100), nullable=False),
    sa.Column('request_id', sa.String(length=128), nullable=True),
    sa.Column('details', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_events'))
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_events_action'), ['action'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_created_at'), ['created_at'], unique=False)
        batch_op.create_index('ix_audit_events_resource', ['resource_type', 'resource_id'], unique=False)

    op.create_table('organizations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('email', sa.String(length=255), nullable=True),
    sa.Column('phone', sa.String(length=64), nullable=True),
    sa.Column('address', sa.Text(), nullable=True),
    sa.Column('payload_prefix', sa.String(length=255), nullable=False),
    sa.Column('x509_ou', sa.String(length=64), nullable=True),
    sa.Column('x509_o', sa.String(length=64), nullable=True),
    sa.Column('x509_st', sa.String(length=128), nullable=True),
    sa.Column('x509_c', sa.String(length=2), nullable=True),
    sa.Column('created_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_organizations'))
    )
    op.create_table('rsa_private_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key_type', sa.String(length=10), nullable=False),
    sa.Column('key_size', sa.Integer(), nullable=False),
    sa.Column('encrypted_pem', sa.LargeBinary(), nullable=False),
    sa.Column('public_key_pem', sa.Text(), nullable=False),
    sa.Column('created_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rsa_private_keys'))
    )
    op.create_table('certificates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('purpose', sa.String(length=30), nullable=False),
    sa.Column('subject', sa.String(length=500), nullable=False),
    sa.Column('issuer', sa.String(length=500), nullable=False),
    sa.Column('common_name', sa.String(length=255), nullable=True),
    sa.Column('serial', sa.String(length=64), nullable=False),
    sa.Column('not_before', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('not_after', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('fingerprint_sha256', sa.String(length=64), nullable=False),
    sa.Column('pem_data', sa.Text(), nullable=False),
    sa.Column('is_ca', sa.Boolean(), nullable=False),
    sa.Column('private_key_id', sa.Integer(), nullable=True),
    sa.Column('created_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['private_key_id'], ['rsa_private_keys.id'], name=op.f('fk_certificates_private_key_id_rsa_private_keys')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_certificates')),
    sa.UniqueConstraint('fingerprint_sha256', name=op.f('uq_certificates_fingerprint_sha256'))
    )
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_certificates_purpose'), ['purpose'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_certificates_purpose'))

    op.drop_table('certificates')
    op.drop_table('rsa_private_keys')
    op.drop_table('organizations')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_events_resource')
        batch_op.drop_index(batch_op.f('ix_audit_events_created_at'))
        batch_op.drop_index(batch_op.f('ix_audit_events_action'))

    op.drop_table('audit_events')
    op.drop_table('api_tokens')
