"""profile assignments and per-device profile states

Revision ID: 0007_profile_assignments
Revises: 0006_admin_api
Create Date: 2026-11-22 00:36:04.995133
"""

import sqlalchemy as sa
from alembic import op

import mdmserver.db

revision = '0007_profile_assignments'
down_revision = '0006_admin_api'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('device_profile_states',
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('profile_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=24), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('command_uuid', sa.String(length=36), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('updated_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_device_profile_states_device_id_devices'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['profile_id'], ['profiles.id'], name=op.f('fk_device_profile_states_profile_id_profiles'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('device_id', 'profile_id', name=op.f('pk_device_profile_states'))
    )
    with op.batch_alter_table('device_profile_states', schema=None) as batch_op:
        batch_op.create_index('ix_device_profile_states_profile_status', ['profile_id', 'status'], unique=False)

    op.create_table('profile_assignments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('profile_id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=True),
    sa.Column('group_id', sa.Integer(), nullable=True),
    sa.Column('created_by', sa.String(length=100), nullable=True),
    sa.Column('created_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('(device_id IS NULL) <> (group_id IS NULL)', name=op.f('ck_profile_assignments_one_target')),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_profile_assignments_device_id_devices'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['group_id'], ['device_groups.id'], name=op.f('fk_profile_assignments_group_id_device_groups'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['profile_id'], ['profiles.id'], name=op.f('fk_profile_assignments_profile_id_profiles'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_profile_assignments')),
    sa.UniqueConstraint('profile_id', 'device_id', name=op.f('uq_profile_assignments_profile_id_device_id')),
    sa.UniqueConstraint('profile_id', 'group_id', name=op.f('uq_profile_assignments_profile_id_group_id'))
    )
    with op.batch_alter_table('profile_assignments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_profile_assignments_device_id'), ['device_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_profile_assignments_group_id'), ['group_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('profile_assignments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_profile_assignments_group_id'))
        batch_op.drop_index(batch_op.f('ix_profile_assignments_device_id'))

    op.drop_table('profile_assignments')
    with op.batch_alter_table('device_profile_states', schema=None) as batch_op:
        batch_op.drop_index('ix_device_profile_states_profile_status')

    op.drop_table('device_profile_states')
