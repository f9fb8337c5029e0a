"""blueprints, blueprint_profiles, blueprint_apps, blueprint_targets, blueprint_members,
blueprint_os_updates: scoped bundles of profiles, apps and an OS-update target, and their state per device

Revision ID: 0021_blueprints
Revises: 0020_identity_renewal
"""

import sqlalchemy as sa
from alembic import op

import mdmserver.db

revision = '0021_blueprints'
down_revision = '0020_identity_renewal'
branch_labels = None
depends_on = None


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], [f'{target}.id'], name=op.f(f'fk_{table}_{column}_{target}'),
                                   ondelete='CASCADE')


def upgrade() -> None:
    op.create_table(
        'blueprints',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('description', sa.Text(), nullable=True),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('is_global', sa.Boolean(), nullable=False),
        sa.Column('apply_order', sa.Integer(), nullable=False),
        sa.Column('first_item', sa.String(length=16), nullable=False),
        sa.Column('remove_if_no_scope', sa.Boolean(), nullable=False),
        sa.Column('unscope_if_applied', sa.Boolean(), nullable=False),
        sa.Column('start_on', mdmserver.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('os_update_version', sa.String(length=32), nullable=True),
        sa.Column('os_update_deadline', sa.String(length=19), nullable=True),
        sa.Column('os_update_install_action', sa.String(length=24), nullable=False),
        sa.Column('created_by', sa.String(length=100), nullable=True),
        sa.Column('created_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_blueprints')),
        sa.UniqueConstraint('name', name=op.f('uq_blueprints_name')),
    )
    op.create_table(
        'blueprint_profiles',
        sa.Column('blueprint_id', sa.Integer(), nullable=False),
        sa.Column('profile_id', sa.Integer(), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        _fk('blueprint_profiles', 'blueprint_id', 'blueprints'),
        _fk('blueprint_profiles', 'profile_id', 'profiles'),
        sa.PrimaryKeyConstraint('blueprint_id', 'profile_id', name=op.f('pk_blueprint_profiles')),
    )
    op.create_index(op.f('ix_blueprint_profiles_profile_id'), 'blueprint_profiles', ['profile_id'], unique=False)
    op.create_table(
        'blueprint_apps',
        sa.Column('blueprint_id', sa.Integer(), nullable=False),
        sa.Column('app_id', sa.Integer(), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('options', sa.JSON(), nullable=True),
        _fk('blueprint_apps', 'blueprint_id', 'blueprints'),
        _fk('blueprint_apps', 'app_id', 'apps'),
        sa.PrimaryKeyConstraint('blueprint_id', 'app_id', name=op.f('pk_blueprint_apps')),
    )
    op.create_index(op.f('ix_blueprint_apps_app_id'), 'blueprint_apps', ['app_id'], unique=False)
    op.create_table(
        'blueprint_targets',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('blueprint_id', sa.Integer(), nullable=False),
        sa.Column('device_id', sa.Integer(), nullable=True),
        sa.Column('group_id', sa.Integer(), nullable=True),
        sa.CheckConstraint('(device_id IS NULL) <> (group_id IS NULL)', name=op.f('ck_blueprint_targets_one_target')),
        _fk('blueprint_targets', 'blueprint_id', 'blueprints'),
        _fk('blueprint_targets', 'device_id', 'devices'),
        _fk('blueprint_targets', 'group_id', 'device_groups'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_blueprint_targets')),
        sa.UniqueConstraint('blueprint_id', 'device_id', name=op.f('uq_blueprint_targets_blueprint_id_device_id')),
        sa.UniqueConstraint('blueprint_id', 'group_id', name=op.f('uq_blueprint_targets_blueprint_id_group_id')),
    )
    op.create_index(op.f('ix_blueprint_targets_device_id'), 'blueprint_targets', ['device_id'], unique=False)
    op.create_index(op.f('ix_blueprint_targets_group_id'), 'blueprint_targets', ['group_id'], unique=False)
    op.create_table(
        'blueprint_members',
        sa.Column('blueprint_id', sa.Integer(), nullable=False),
        sa.Column('device_id', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('entered_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
        _fk('blueprint_members', 'blueprint_id', 'blueprints'),
        _fk('blueprint_members', 'device_id', 'devices'),
        sa.PrimaryKeyConstraint('blueprint_id', 'device_id', name=op.f('pk_blueprint_members')),
    )
    op.create_index('ix_blueprint_members_device', 'blueprint_members', ['device_id'], unique=False)
    op.create_table(
        'blueprint_os_updates',
        sa.Column('blueprint_id', sa.Integer(), nullable=False),
        sa.Column('device_id', sa.Integer(), nullable=False),
        sa.Column('target_version', sa.String(length=32), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('command_uuid', sa.String(length=36), nullable=True),
        sa.Column('detail', sa.Text(), nullable=True),
        sa.Column('updated_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
        _fk('blueprint_os_updates', 'blueprint_id', 'blueprints'),
        _fk('blueprint_os_updates', 'device_id', 'devices'),
        sa.PrimaryKeyConstraint('blueprint_id', 'device_id', name=op.f('pk_blueprint_os_updates')),
    )
    op.create_index('ix_blueprint_os_updates_device', 'blueprint_os_updates', ['device_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_blueprint_os_updates_device', table_name='blueprint_os_updates')
    op.drop_table('blueprint_os_updates')
    op.drop_index('ix_blueprint_members_device', table_name='blueprint_members')
    op.drop_table('blueprint_members')
    op.drop_index(op.f('ix_blueprint_targets_group_id'), table_name='blueprint_targets')
    op.drop_index(op.f('ix_blueprint_targets_device_id'), table_name='blueprint_targets')
    op.drop_table('blueprint_targets')
    op.drop_index(op.f('ix_blueprint_apps_app_id'), table_name='blueprint_apps')
    op.drop_table('blueprint_apps')
    op.drop_index(op.f('ix_blueprint_profiles_profile_id'), table_name='blueprint_profiles')
    op.drop_table('blueprint_profiles')
    op.drop_table('blueprints')
