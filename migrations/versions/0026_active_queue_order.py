"""ix_commands_active_queue in delivery order: (device_id, priority DESC, id, status) instead of
(device_id, status, priority, id), so the next command of a device is read without sorting its queue.
Building the index reads the whole table once (PostgreSQL holds writes to commands meanwhile): seconds for
millions of rows; the index itself holds only the active commands.

Revision ID: 0026_active_queue_order
Revises: 0025_os_update_status
"""

import sqlalchemy as sa
from alembic import op

revision = '0026_active_queue_order'
down_revision = '0025_os_update_status'
branch_labels = None
depends_on = None

_ACTIVE_SQL = "status IN ('queued', 'sent', 'not_now')"


def _queue_index(*columns) -> None:
    op.drop_index('ix_commands_active_queue', table_name='commands')
    op.create_index('ix_commands_active_queue', 'commands', list(columns), unique=False,
                    postgresql_where=sa.text(_ACTIVE_SQL), sqlite_where=sa.text(_ACTIVE_SQL))


def upgrade() -> None:
    _queue_index('device_id', sa.text('priority DESC'), 'id', 'status')


def downgrade() -> None:
    _queue_index('device_id', 'status', 'priority', 'id')
