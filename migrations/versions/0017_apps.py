"""apps, app_assignments, device_app_states: the app catalogue, its assignments and install states

Revision ID: 0017_apps
Revises: 0016_private_key_purpose
"""

import sqlalchemy as sa
from alembic import op

import mdmserver.db

revision = '0017_apps'
down_revision = '0016_private_key_purpose'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'apps',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('source', sa.String(length=16), nullable=False),
        sa.Column('platform', sa.String(length=16), nullable=False),
        sa.Column('bundle_id', sa.String(length=255), nullable=True),
        sa.Column('itunes_store_id', sa.BigInteger(), nullable=True),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('version', sa.String(length=64), nullable=True),
        sa.Column('build_version', sa.String(length=64), nullable=True),
        sa.Column('minimum_os', sa.String(length=32), nullable=True),
        sa.Column('package_kind', sa.String(length=8), nullable=True),
        sa.Column('package_sha256', sa.String(length=64), nullable=True),
        sa.Column('package_size', sa.BigInteger(), nullable=True),
        sa.Column('package_name', sa.String(length=255), nullable=True),
        sa.Column('package_chunks', sa.JSON(), nullable=True),
        sa.Column('download_token', sa.String(length=64), nullable=False),
        sa.Column('revision', sa.Integer(), nullable=False),
        sa.Column('created_by', sa.String(length=100), nullable=True),
        sa.Column('created_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint('bundle_id IS NOT NULL OR itunes_store_id IS NOT NULL', name=op.f('ck_apps_identified')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_apps')),
        sa.UniqueConstraint('download_token', name=op.f('uq_apps_download_token')),
        sa.UniqueConstraint('platform', 'bundle_id', name=op.f('uq_apps_platform_bundle_id')),
        sa.UniqueConstraint('platform', 'itunes_store_id', name=op.f('uq_apps_platform_itunes_store_id')),
    )
    op.create_index('ix_apps_package_sha256', 'apps', ['package_sha256'], unique=False)
    op.create_table(
        'app_assignments',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('app_id', sa.Integer(), nullable=False),
        sa.Column('device_id', sa.Integer(), nullable=True),
        sa.Column('group_id', sa.Integer(), nullable=True),
        sa.Column('options', sa.JSON(), nullable=True),
        sa.Column('created_by', sa.String(length=100), nullable=True),
        sa.Column('created_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint('(device_id IS NULL) <> (group_id IS NULL)', name=op.f('ck_app_assignments_one_target')),
        sa.ForeignKeyConstraint(['app_id'], ['apps.id'], name=op.f('fk_app_assignments_app_id_apps'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_app_assignments_device_id_devices'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['group_id'], ['device_groups.id'],
                                name=op.f('fk_app_assignments_group_id_device_groups'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_app_assignments')),
        sa.UniqueConstraint('app_id', 'device_id', name=op.f('uq_app_assignments_app_id_device_id')),
        sa.UniqueConstraint('app_id', 'group_id', name=op.f('uq_app_assignments_app_id_group_id')),
    )
    op.create_index(op.f('ix_app_assignments_device_id'), 'app_assignments', ['device_id'], unique=False)
    op.create_index(op.f('ix_app_assignments_group_id'), 'app_assignments', ['group_id'], unique=False)
    op.create_table(
        'device_app_states',
        sa.Column('device_id', sa.Integer(), nullable=False),
        sa.Column('app_id', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=24), nullable=False),
        sa.Column('revision', sa.Integer(), nullable=False),
        sa.Column('installed_version', sa.String(length=64), nullable=True),
        sa.Column('command_uuid', sa.String(length=36), nullable=True),
        sa.Column('detail', sa.Text(), nullable=True),
        sa.Column('updated_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['app_id'], ['apps.id'], name=op.f('fk_device_app_states_app_id_apps'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_device_app_states_device_id_devices'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('device_id', 'app_id', name=op.f('pk_device_app_states')),
    )
    op.create_index('ix_device_app_states_app_status', 'device_app_states', ['app_id', 'status'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_device_app_states_app_status', table_name='device_app_states')
    op.drop_table('device_app_states')
    op.drop_index(op.f('ix_app_assignments_group_id'), table_name='app_assignments')
    op.drop_index(op.f('ix_app_assignments_device_id'), table_name='app_assignments')
    op.drop_table('app_assignments')
    op.drop_index('ix_apps_package_sha256', table_name='apps')
    op.drop_table('apps')
