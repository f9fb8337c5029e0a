"""devices.group_fields_changed_at: when a device-reported field that device groups filter on last changed

Revision ID: 0012_retire_reconcile
Revises: 0011_sealed_secrets
"""

import sqlalchemy as sa
from alembic import op

import mdmserver.db

revision = '0012_retire_reconcile'
down_revision = '0011_sealed_secrets'
branch_labels = None
depends_on = None


# plain ALTER TABLE on both databases (SQLite >= 3.35 drops columns in place): a batch copy of
# ``devices`` would drop the table, and with foreign keys on that cascades to every dependent row


def upgrade() -> None:
    op.add_column('devices', sa.Column('group_fields_changed_at', mdmserver.db.UTCDateTime(timezone=True),
                                       nullable=True))


def downgrade() -> None:
    op.drop_column('devices', 'group_fields_changed_at')
