"""device_compliance: the state index also holds device_id, so the device list filtered by
compliance_state reads its page in device order from the index (PostgreSQL: an index-only scan instead
of a merge join along the primary keys); a lookup by state alone uses it as before

Revision ID: 0023_compliance_state_device
Revises: 0022_compliance
"""

from alembic import op

revision = '0023_compliance_state_device'
down_revision = '0022_compliance'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_device_compliance_state_device', 'device_compliance', ['state', 'device_id'])
    op.drop_index('ix_device_compliance_state', table_name='device_compliance')


def downgrade() -> None:
    op.create_index('ix_device_compliance_state', 'device_compliance', ['state'])
    op.drop_index('ix_device_compliance_state_device', table_name='device_compliance')
