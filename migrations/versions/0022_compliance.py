"""compliance_policies, compliance_policy_targets, device_policy_results, device_compliance,
compliance_history, scheduled_actions: compliance policies and scheduled actions

Revision ID: 0022_compliance
Revises: 0021_blueprints
"""

import sqlalchemy as sa
from alembic import op

import mdmserver.db

revision = '0022_compliance'
down_revision = '0021_blueprints'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'compliance_policies',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('description', sa.Text(), nullable=True),
        sa.Column('rule', sa.String(length=32), nullable=False),
        sa.Column('parameters', sa.JSON(), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('all_devices', sa.Boolean(), nullable=False),
        sa.Column('remediation', sa.JSON(), nullable=True),
        sa.Column('grace_minutes', sa.Integer(), nullable=False),
        sa.Column('created_by', sa.String(length=100), nullable=True),
        sa.Column('created_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_compliance_policies')),
        sa.UniqueConstraint('name', name=op.f('uq_compliance_policies_name')),
    )
    op.create_table(
        'compliance_policy_targets',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('policy_id', sa.Integer(), nullable=False),
        sa.Column('device_id', sa.Integer(), nullable=True),
        sa.Column('group_id', sa.Integer(), nullable=True),
        sa.CheckConstraint('(device_id IS NULL) <> (group_id IS NULL)',
                           name=op.f('ck_compliance_policy_targets_one_target')),
        sa.ForeignKeyConstraint(['policy_id'], ['compliance_policies.id'],
                                name=op.f('fk_compliance_policy_targets_policy_id_compliance_policies'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['device_id'], ['devices.id'],
                                name=op.f('fk_compliance_policy_targets_device_id_devices'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['group_id'], ['device_groups.id'],
                                name=op.f('fk_compliance_policy_targets_group_id_device_groups'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_compliance_policy_targets')),
        sa.UniqueConstraint('policy_id', 'device_id', name=op.f('uq_compliance_policy_targets_policy_id_device_id')),
        sa.UniqueConstraint('policy_id', 'group_id', name=op.f('uq_compliance_policy_targets_policy_id_group_id')),
    )
    op.create_index(op.f('ix_compliance_policy_targets_policy_id'), 'compliance_policy_targets', ['policy_id'])
    op.create_index(op.f('ix_compliance_policy_targets_device_id'), 'compliance_policy_targets', ['device_id'])
    op.create_index(op.f('ix_compliance_policy_targets_group_id'), 'compliance_policy_targets', ['group_id'])
    op.create_table(
        'device_policy_results',
        sa.Column('device_id', sa.Integer(), nullable=False),
        sa.Column('policy_id', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('observed', sa.String(length=255), nullable=True),
        sa.Column('changed_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('violated_at', mdmserver.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('remediate_after', mdmserver.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('remediated_at', mdmserver.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['device_id'], ['devices.id'],
                                name=op.f('fk_device_policy_results_device_id_devices'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['policy_id'], ['compliance_policies.id'],
                                name=op.f('fk_device_policy_results_policy_id_compliance_policies'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('device_id', 'policy_id', name=op.f('pk_device_policy_results')),
    )
    op.create_index(op.f('ix_device_policy_results_policy_id'), 'device_policy_results', ['policy_id'])
    op.create_index('ix_device_policy_results_due', 'device_policy_results',
                    ['status', 'remediated_at', 'remediate_after'])
    op.create_table(
        'device_compliance',
        sa.Column('device_id', sa.Integer(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('violation_count', sa.Integer(), nullable=False),
        sa.Column('changed_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['device_id'], ['devices.id'],
                                name=op.f('fk_device_compliance_device_id_devices'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('device_id', name=op.f('pk_device_compliance')),
    )
    op.create_index(op.f('ix_device_compliance_state'), 'device_compliance', ['state'])
    op.create_table(
        'compliance_history',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('device_id', sa.Integer(), nullable=False),
        sa.Column('from_state', sa.String(length=16), nullable=True),
        sa.Column('to_state', sa.String(length=16), nullable=False),
        sa.Column('violation_count', sa.Integer(), nullable=False),
        sa.Column('changed_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['device_id'], ['devices.id'],
                                name=op.f('fk_compliance_history_device_id_devices'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_compliance_history')),
    )
    op.create_index('ix_compliance_history_device_at', 'compliance_history', ['device_id', 'changed_at'])
    op.create_table(
        'scheduled_actions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('action', sa.String(length=40), nullable=False),
        sa.Column('selection', sa.JSON(), nullable=False),
        sa.Column('parameters_sealed', sa.LargeBinary(), nullable=True),
        sa.Column('not_before', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('window', sa.JSON(), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('result', sa.JSON(), nullable=True),
        sa.Column('detail', sa.Text(), nullable=True),
        sa.Column('created_by', sa.String(length=100), nullable=True),
        sa.Column('created_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('queued_at', mdmserver.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_scheduled_actions')),
    )
    op.create_index('ix_scheduled_actions_status_not_before', 'scheduled_actions', ['status', 'not_before'])


def downgrade() -> None:
    op.drop_index('ix_scheduled_actions_status_not_before', table_name='scheduled_actions')
    op.drop_table('scheduled_actions')
    op.drop_index('ix_compliance_history_device_at', table_name='compliance_history')
    op.drop_table('compliance_history')
    op.drop_index(op.f('ix_device_compliance_state'), table_name='device_compliance')
    op.drop_table('device_compliance')
    op.drop_index('ix_device_policy_results_due', table_name='device_policy_results')
    op.drop_index(op.f('ix_device_policy_results_policy_id'), table_name='device_policy_results')
    op.drop_table('device_policy_results')
    op.drop_index(op.f('ix_compliance_policy_targets_group_id'), table_name='compliance_policy_targets')
    op.drop_index(op.f('ix_compliance_policy_targets_device_id'), table_name='compliance_policy_targets')
    op.drop_index(op.f('ix_compliance_policy_targets_policy_id'), table_name='compliance_policy_targets')
    op.drop_table('compliance_policy_targets')
    op.drop_table('compliance_policies')
