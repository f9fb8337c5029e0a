"""device_os_update_statuses (the updates a device's OSUpdateStatus answer lists) and
devices.os_updates_reported_at (when it last answered AvailableOSUpdates)

Revision ID: 0025_os_update_status
Revises: 0024_ddm
"""

import sqlalchemy as sa
from alembic import op

import mdmserver.db

revision = '0025_os_update_status'
down_revision = '0024_ddm'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'device_os_update_statuses',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('device_id', sa.Integer(), nullable=False),
        sa.Column('product_key', sa.String(length=255), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=True),
        sa.Column('is_downloaded', sa.Boolean(), nullable=True),
        sa.Column('download_percent_complete', sa.Float(), nullable=True),
        sa.Column('max_deferrals', sa.Integer(), nullable=True),
        sa.Column('deferrals_remaining', sa.Integer(), nullable=True),
        sa.Column('next_scheduled_install', mdmserver.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('reported_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['device_id'], ['devices.id'],
                                name=op.f('fk_device_os_update_statuses_device_id_devices'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_device_os_update_statuses')),
    )
    op.create_index(op.f('ix_device_os_update_statuses_device_id'), 'device_os_update_statuses', ['device_id'])
    # plain ALTER TABLE on both databases (SQLite >= 3.35 drops columns in place): a batch copy of
    # ``devices`` would drop the table, and with foreign keys on that cascades to every dependent row
    op.add_column('devices', sa.Column('os_updates_reported_at', mdmserver.db.UTCDateTime(timezone=True),
                                       nullable=True))


def downgrade() -> None:
    op.drop_column('devices', 'os_updates_reported_at')
    op.drop_index(op.f('ix_device_os_update_statuses_device_id'), table_name='device_os_update_statuses')
    op.drop_table('device_os_update_statuses')
