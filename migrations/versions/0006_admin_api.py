"""admin API: owners, custom attributes, device groups, retirements

Revision ID: 0006_admin_api
Revises: 0002_profiles, 0003_devices
Create Date: 2026-11-22 00:24:59.467454
"""

import sqlalchemy as sa
from alembic import op

import mdmserver.db

revision = '0006_admin_api'
down_revision = ('0002_profiles', '0003_devices')
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('device_groups',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('filter', sa.JSON(), nullable=True),
    sa.Column('created_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['parent_id'], ['device_groups.id'], name=op.f('fk_device_groups_parent_id_device_groups'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_device_groups')),
    sa.UniqueConstraint('name', name=op.f('uq_device_groups_name'))
    )
    with op.batch_alter_table('device_groups', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_device_groups_parent_id'), ['parent_id'], unique=False)

    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('email', sa.String(length=255), nullable=False),
    sa.Column('uid', sa.String(length=255), nullable=True),
    sa.Column('created_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('email', name=op.f('uq_users_email')),
    sa.UniqueConstraint('uid', name=op.f('uq_users_uid'))
    )
    op.create_table('device_custom_attributes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('value', sa.String(length=512), nullable=False),
    sa.Column('updated_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_device_custom_attributes_device_id_devices'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_device_custom_attributes')),
    sa.UniqueConstraint('device_id', 'name', name=op.f('uq_device_custom_attributes_device_id_name'))
    )
    with op.batch_alter_table('device_custom_attributes', schema=None) as batch_op:
        batch_op.create_index('ix_device_custom_attributes_name_value', ['name', 'value'], unique=False)

    op.create_table('device_group_members',
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('added_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_device_group_members_device_id_devices'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['group_id'], ['device_groups.id'], name=op.f('fk_device_group_members_group_id_device_groups'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('group_id', 'device_id', name=op.f('pk_device_group_members'))
    )
    with op.batch_alter_table('device_group_members', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_device_group_members_device_id'), ['device_id'], unique=False)

    op.create_table('device_owners',
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('assigned_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_device_owners_device_id_devices'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_device_owners_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('device_id', name=op.f('pk_device_owners'))
    )
    with op.batch_alter_table('device_owners', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_device_owners_user_id'), ['user_id'], unique=False)

    op.create_table('device_retirements',
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('command_uuid', sa.String(length=36), nullable=True),
    sa.Column('requested_by', sa.String(length=100), nullable=True),
    sa.Column('requested_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_device_retirements_device_id_devices'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('device_id', name=op.f('pk_device_retirements'))
    )


def downgrade() -> None:
    op.drop_table('device_retirements')
    with op.batch_alter_table('device_owners', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_device_owners_user_id'))

    op.drop_table('device_owners')
    with op.batch_alter_table('device_group_members', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_device_group_members_device_id'))

    op.drop_table('device_group_members')
    with op.batch_alter_table('device_custom_attributes', schema=None) as batch_op:
        batch_op.drop_index('ix_device_custom_attributes_name_value')

    op.drop_table('device_custom_attributes')
    op.drop_table('users')
    with op.batch_alter_table('device_groups', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_device_groups_parent_id'))

    op.drop_table('device_groups')
