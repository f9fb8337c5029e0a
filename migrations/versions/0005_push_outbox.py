"""push outbox: push requests (coalesced per device), device push state, outcome counters

Revision ID: 0005_push_outbox
Revises: 0003_devices, 0004_push_certificate
"""

import sqlalchemy as sa
from alembic import op

import mdmserver.db

revision = '0005_push_outbox'
down_revision = ('0003_devices', '0004_push_certificate')
branch_labels = None
depends_on = None

_PENDING = "status = 'pending'"
_CLAIMABLE = "status IN ('pending', 'retry', 'sending')"


def upgrade() -> None:
    op.create_table('push_counters',
    sa.Column('outcome', sa.String(length=32), nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('outcome', name=op.f('pk_push_counters'))
    )
    op.create_table('device_push_state',
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('last_push_at', mdmserver.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_status', sa.Integer(), nullable=True),
    sa.Column('last_reason', sa.String(length=100), nullable=True),
    sa.Column('last_apns_id', sa.String(length=64), nullable=True),
    sa.Column('token_invalid_at', mdmserver.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_repush_at', mdmserver.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_device_push_state_device_id_devices'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('device_id', name=op.f('pk_device_push_state'))
    )
    op.create_table('push_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=16), nullable=False),
    sa.Column('created_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('not_before', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('lease_until', mdmserver.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('claimed_by', sa.String(length=32), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('sent_at', mdmserver.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('completed_at', mdmserver.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('apns_id', sa.String(length=64), nullable=True),
    sa.Column('last_status', sa.Integer(), nullable=True),
    sa.Column('last_reason', sa.String(length=100), nullable=True),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_push_requests_device_id_devices'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_push_requests'))
    )
    op.create_index('ix_push_requests_claimable', 'push_requests', ['status', 'not_before', 'id'], unique=False,
                    postgresql_where=sa.text(_CLAIMABLE), sqlite_where=sa.text(_CLAIMABLE))
    op.create_index('ix_push_requests_device_created', 'push_requests', ['device_id', 'created_at'], unique=False)
    op.create_index('ix_push_requests_status_completed', 'push_requests', ['status', 'completed_at'], unique=False)
    op.create_index('uq_push_requests_pending_device', 'push_requests', ['device_id'], unique=True,
                    postgresql_where=sa.text(_PENDING), sqlite_where=sa.text(_PENDING))


def downgrade() -> None:
    op.drop_index('uq_push_requests_pending_device', table_name='push_requests')
    op.drop_index('ix_push_requests_status_completed', table_name='push_requests')
    op.drop_index('ix_push_requests_device_created', table_name='push_requests')
    op.drop_index('ix_push_requests_claimable', table_name='push_requests')
    op.drop_table('push_requests')
    op.drop_table('device_push_state')
    op.drop_table('push_counters')
