"""webhook_subscriptions, webhook_subscription_events, webhook_events, webhook_deliveries, webhook_attempts,
webhook_notices: webhook subscriptions and their transactional outbox

Revision ID: 0019_webhooks
Revises: 0018_scep_challenges
"""

import sqlalchemy as sa
from alembic import op

import mdmserver.db

revision = '0019_webhooks'
down_revision = '0018_scep_challenges'
branch_labels = None
depends_on = None

_UNFINISHED = "status IN ('pending', 'sending')"


def upgrade() -> None:
    op.create_table(
        'webhook_subscriptions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('url', sa.String(length=2048), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('secret_encrypted', sa.LargeBinary(), nullable=False),
        sa.Column('secret_rotated_at', mdmserver.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('created_by', sa.String(length=100), nullable=True),
        sa.Column('created_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_subscriptions')),
        sa.UniqueConstraint('name', name=op.f('uq_webhook_subscriptions_name')),
    )
    op.create_table(
        'webhook_subscription_events',
        sa.Column('subscription_id', sa.Integer(), nullable=False),
        sa.Column('event_type', sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(['subscription_id'], ['webhook_subscriptions.id'],
                                name=op.f('fk_webhook_subscription_events_subscription_id_webhook_subscriptions'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('subscription_id', 'event_type', name=op.f('pk_webhook_subscription_events')),
    )
    op.create_index('ix_webhook_subscription_events_type', 'webhook_subscription_events',
                    ['event_type', 'subscription_id'], unique=False)
    op.create_table(
        'webhook_events',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('type', sa.String(length=64), nullable=False),
        sa.Column('subject', sa.String(length=128), nullable=False),
        sa.Column('body', sa.Text(), nullable=False),
        sa.Column('created_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_events')),
    )
    op.create_index(op.f('ix_webhook_events_created_at'), 'webhook_events', ['created_at'], unique=False)
    op.create_table(
        'webhook_deliveries',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('subscription_id', sa.Integer(), nullable=False),
        sa.Column('event_id', sa.String(length=36), nullable=False),
        sa.Column('subject', sa.String(length=128), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('created_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('not_before', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('lease_until', mdmserver.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('claimed_by', sa.String(length=32), nullable=True),
        sa.Column('completed_at', mdmserver.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('last_status', sa.Integer(), nullable=True),
        sa.Column('last_error', sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(['event_id'], ['webhook_events.id'],
                                name=op.f('fk_webhook_deliveries_event_id_webhook_events'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['subscription_id'], ['webhook_subscriptions.id'],
                                name=op.f('fk_webhook_deliveries_subscription_id_webhook_subscriptions'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_deliveries')),
    )
    op.create_index('ix_webhook_deliveries_claimable', 'webhook_deliveries', ['status', 'not_before', 'id'],
                    unique=False, postgresql_where=sa.text(_UNFINISHED), sqlite_where=sa.text(_UNFINISHED))
    op.create_index('ix_webhook_deliveries_order', 'webhook_deliveries', ['subscription_id', 'subject', 'id'],
                    unique=False, postgresql_where=sa.text(_UNFINISHED), sqlite_where=sa.text(_UNFINISHED))
    op.create_index('ix_webhook_deliveries_subscription', 'webhook_deliveries', ['subscription_id', 'id'],
                    unique=False)
    op.create_index('ix_webhook_deliveries_event', 'webhook_deliveries', ['event_id'], unique=False)
    op.create_index('ix_webhook_deliveries_status_completed', 'webhook_deliveries', ['status', 'completed_at'],
                    unique=False)
    op.create_table(
        'webhook_attempts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('delivery_id', sa.Integer(), nullable=False),
        sa.Column('attempted_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('status_code', sa.Integer(), nullable=True),
        sa.Column('error', sa.String(length=255), nullable=True),
        sa.Column('duration_ms', sa.Integer(), nullable=False),
        sa.Column('response_body', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['delivery_id'], ['webhook_deliveries.id'],
                                name=op.f('fk_webhook_attempts_delivery_id_webhook_deliveries'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_attempts')),
    )
    op.create_index('ix_webhook_attempts_delivery', 'webhook_attempts', ['delivery_id', 'id'], unique=False)
    op.create_table(
        'webhook_notices',
        sa.Column('key', sa.String(length=200), nullable=False),
        sa.Column('created_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('key', name=op.f('pk_webhook_notices')),
    )


def downgrade() -> None:
    op.drop_table('webhook_notices')
    op.drop_index('ix_webhook_attempts_delivery', table_name='webhook_attempts')
    op.drop_table('webhook_attempts')
    for name in ('ix_webhook_deliveries_status_completed', 'ix_webhook_deliveries_event',
                 'ix_webhook_deliveries_subscription', 'ix_webhook_deliveries_order', 'ix_webhook_deliveries_claimable'):
        op.drop_index(name, table_name='webhook_deliveries')
    op.drop_table('webhook_deliveries')
    op.drop_index(op.f('ix_webhook_events_created_at'), table_name='webhook_events')
    op.drop_table('webhook_events')
    op.drop_index('ix_webhook_subscription_events_type', table_name='webhook_subscription_events')
    op.drop_table('webhook_subscription_events')
    op.drop_table('webhook_subscriptions')
