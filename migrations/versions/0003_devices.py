"""devices, admission, commands and inventory

Revision ID: 0003_devices
Revises: 0001_foundation
Create Date: 2026-11-22 00:21:24.168499
"""

import sqlalchemy as sa
from alembic import op

import mdmserver.db

revision = '0003_devices'
down_revision = '0001_foundation'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('admission_preauthorizations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('value', sa.String(length=64), nullable=False),
    sa.Column('created_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_admission_preauthorizations')),
    sa.UniqueConstraint('kind', 'value', name=op.f('uq_admission_preauthorizations_kind_value'))
    )
    op.create_table('devices',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('udid', sa.String(length=64), nullable=False),
    sa.Column('serial_number', sa.String(length=64), nullable=True),
    sa.Column('platform', sa.String(length=16), nullable=True),
    sa.Column('model', sa.String(length=100), nullable=True),
    sa.Column('model_name', sa.String(length=100), nullable=True),
    sa.Column('product_name', sa.String(length=100), nullable=True),
    sa.Column('os_version', sa.String(length=32), nullable=True),
    sa.Column('build_version', sa.String(length=32), nullable=True),
    sa.Column('device_name', sa.String(length=255), nullable=True),
    sa.Column('imei', sa.String(length=32), nullable=True),
    sa.Column('meid', sa.String(length=32), nullable=True),
    sa.Column('topic', sa.String(length=255), nullable=True),
    sa.Column('identity_fingerprint', sa.String(length=64), nullable=True),
    sa.Column('admission_status', sa.String(length=20), nullable=False),
    sa.Column('push_token', sa.LargeBinary(), nullable=True),
    sa.Column('push_magic', sa.String(length=255), nullable=True),
    sa.Column('token_updated_at', mdmserver.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('awaiting_configuration', sa.Boolean(), nullable=False),
    sa.Column('unlock_token_encrypted', sa.LargeBinary(), nullable=True),
    sa.Column('bootstrap_token_encrypted', sa.LargeBinary(), nullable=True),
    sa.Column('enrolled', sa.Boolean(), nullable=False),
    sa.Column('enrolled_at', mdmserver.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('unenrolled_at', mdmserver.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_seen_at', mdmserver.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('capacity_gb', sa.Float(), nullable=True),
    sa.Column('available_capacity_gb', sa.Float(), nullable=True),
    sa.Column('battery_level', sa.Float(), nullable=True),
    sa.Column('is_supervised', sa.Boolean(), nullable=True),
    sa.Column('wifi_mac', sa.String(length=32), nullable=True),
    sa.Column('bluetooth_mac', sa.String(length=32), nullable=True),
    sa.Column('activation_lock_enabled', sa.Boolean(), nullable=True),
    sa.Column('lost_mode_enabled', sa.Boolean(), nullable=True),
    sa.Column('find_my_enabled', sa.Boolean(), nullable=True),
    sa.Column('phone_number', sa.String(length=64), nullable=True),
    sa.Column('iccid', sa.String(length=64), nullable=True),
    sa.Column('hostname', sa.String(length=255), nullable=True),
    sa.Column('local_hostname', sa.String(length=255), nullable=True),
    sa.Column('device_information', sa.JSON(), nullable=True),
    sa.Column('inventory_updated_at', mdmserver.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('asset_tag', sa.String(length=100), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('office', sa.String(length=255), nullable=True),
    sa.Column('asset_owner', sa.String(length=255), nullable=True),
    sa.Column('purchase_type', sa.String(length=50), nullable=True),
    sa.Column('purchase_date', sa.Date(), nullable=True),
    sa.Column('purchase_price', sa.Numeric(precision=12, scale=2), nullable=True),
    sa.Column('purchase_order_number', sa.String(length=100), nullable=True),
    sa.Column('warranty_number', sa.String(length=100), nullable=True),
    sa.Column('warranty_type', sa.String(length=100), nullable=True),
    sa.Column('warranty_expiration', sa.Date(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_devices')),
    sa.UniqueConstraint('identity_fingerprint', name=op.f('uq_devices_identity_fingerprint')),
    sa.UniqueConstraint('udid', name=op.f('uq_devices_udid'))
    )
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_devices_last_seen_at'), ['last_seen_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_devices_platform'), ['platform'], unique=False)
        batch_op.create_index(batch_op.f('ix_devices_serial_number'), ['serial_number'], unique=False)

    op.create_table('auth_sets',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('identity_data', sa.Text(), nullable=False),
    sa.Column('pubkey', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('created_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_auth_sets_device_id_devices'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_auth_sets'))
    )
    with op.batch_alter_table('auth_sets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_auth_sets_device_id'), ['device_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_auth_sets_status'), ['status'], unique=False)

    op.create_table('commands',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('uuid', sa.String(length=36), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('request_type', sa.String(length=64), nullable=False),
    sa.Column('parameters', sa.LargeBinary(), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=24), nullable=False),
    sa.Column('enqueued_by', sa.String(length=100), nullable=True),
    sa.Column('created_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('sent_at', mdmserver.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('completed_at', mdmserver.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('expires_at', mdmserver.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('result', sa.LargeBinary(), nullable=True),
    sa.Column('error_chain', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_commands_device_id_devices'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_commands')),
    sa.UniqueConstraint('uuid', name=op.f('uq_commands_uuid'))
    )
    with op.batch_alter_table('commands', schema=None) as batch_op:
        batch_op.create_index('ix_commands_active_queue', ['device_id', 'status', 'priority', 'id'], unique=False, postgresql_where=sa.text("status IN ('queued', 'sent', 'not_now')"), sqlite_where=sa.text("status IN ('queued', 'sent', 'not_now')"))
        batch_op.create_index('ix_commands_device_created', ['device_id', 'created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_commands_request_type'), ['request_type'], unique=False)
        batch_op.create_index('ix_commands_status_completed', ['status', 'completed_at'], unique=False)

    op.create_table('device_certificates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('common_name', sa.String(length=500), nullable=True),
    sa.Column('is_identity', sa.Boolean(), nullable=False),
    sa.Column('subject', sa.Text(), nullable=True),
    sa.Column('issuer', sa.Text(), nullable=True),
    sa.Column('serial_number', sa.String(length=100), nullable=True),
    sa.Column('not_before', mdmserver.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('not_after', mdmserver.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('fingerprint_sha256', sa.String(length=64), nullable=True),
    sa.Column('parse_error', sa.String(length=255), nullable=True),
    sa.Column('reported_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_device_certificates_device_id_devices'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_device_certificates'))
    )
    with op.batch_alter_table('device_certificates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_device_certificates_device_id'), ['device_id'], unique=False)

    op.create_table('device_installed_applications',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('identifier', sa.String(length=255), nullable=True),
    sa.Column('name', sa.String(length=255), nullable=True),
    sa.Column('version', sa.String(length=100), nullable=True),
    sa.Column('short_version', sa.String(length=100), nullable=True),
    sa.Column('bundle_size', sa.BigInteger(), nullable=True),
    sa.Column('dynamic_size', sa.BigInteger(), nullable=True),
    sa.Column('external_version_identifier', sa.BigInteger(), nullable=True),
    sa.Column('is_validated', sa.Boolean(), nullable=True),
    sa.Column('installing', sa.Boolean(), nullable=True),
    sa.Column('app_store_vendable', sa.Boolean(), nullable=True),
    sa.Column('beta_app', sa.Boolean(), nullable=True),
    sa.Column('has_update_available', sa.Boolean(), nullable=True),
    sa.Column('managed_status', sa.String(length=50), nullable=True),
    sa.Column('reported_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_device_installed_applications_device_id_devices'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_device_installed_applications'))
    )
    with op.batch_alter_table('device_installed_applications', schema=None) as batch_op:
        batch_op.create_index('ix_device_installed_applications_device_identifier', ['device_id', 'identifier'], unique=False)

    op.create_table('device_installed_profiles',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('identifier', sa.String(length=255), nullable=True),
    sa.Column('uuid', sa.String(length=64), nullable=True),
    sa.Column('display_name', sa.String(length=255), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('organization', sa.String(length=255), nullable=True),
    sa.Column('version', sa.Integer(), nullable=True),
    sa.Column('is_managed', sa.Boolean(), nullable=True),
    sa.Column('is_encrypted', sa.Boolean(), nullable=True),
    sa.Column('removal_disallowed', sa.Boolean(), nullable=True),
    sa.Column('has_removal_passcode', sa.Boolean(), nullable=True),
    sa.Column('payloads', sa.JSON(), nullable=True),
    sa.Column('reported_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_device_installed_profiles_device_id_devices'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_device_installed_profiles'))
    )
    with op.batch_alter_table('device_installed_profiles', schema=None) as batch_op:
        batch_op.create_index('ix_device_installed_profiles_device_identifier', ['device_id', 'identifier'], unique=False)

    op.create_table('device_locations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('latitude', sa.Float(), nullable=False),
    sa.Column('longitude', sa.Float(), nullable=False),
    sa.Column('horizontal_accuracy', sa.Float(), nullable=True),
    sa.Column('vertical_accuracy', sa.Float(), nullable=True),
    sa.Column('altitude', sa.Float(), nullable=True),
    sa.Column('speed', sa.Float(), nullable=True),
    sa.Column('course', sa.Float(), nullable=True),
    sa.Column('timestamp', mdmserver.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('received_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_device_locations_device_id_devices'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_device_locations'))
    )
    with op.batch_alter_table('device_locations', schema=None) as batch_op:
        batch_op.create_index('ix_device_locations_device_received', ['device_id', 'received_at'], unique=False)

    op.create_table('device_os_updates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('product_key', sa.String(length=255), nullable=True),
    sa.Column('human_readable_name', sa.String(length=255), nullable=True),
    sa.Column('product_name', sa.String(length=255), nullable=True),
    sa.Column('version', sa.String(length=64), nullable=True),
    sa.Column('build', sa.String(length=64), nullable=True),
    sa.Column('download_size', sa.BigInteger(), nullable=True),
    sa.Column('install_size', sa.BigInteger(), nullable=True),
    sa.Column('is_critical', sa.Boolean(), nullable=True),
    sa.Column('is_config_data_update', sa.Boolean(), nullable=True),
    sa.Column('is_firmware_update', sa.Boolean(), nullable=True),
    sa.Column('is_major_os_update', sa.Boolean(), nullable=True),
    sa.Column('restart_required', sa.Boolean(), nullable=True),
    sa.Column('allows_install_later', sa.Boolean(), nullable=True),
    sa.Column('reported_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_device_os_updates_device_id_devices'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_device_os_updates'))
    )
    with op.batch_alter_table('device_os_updates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_device_os_updates_device_id'), ['device_id'], unique=False)

    op.create_table('device_security_info',
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('passcode_present', sa.Boolean(), nullable=True),
    sa.Column('passcode_compliant', sa.Boolean(), nullable=True),
    sa.Column('passcode_compliant_with_profiles', sa.Boolean(), nullable=True),
    sa.Column('hardware_encryption_caps', sa.Integer(), nullable=True),
    sa.Column('fde_enabled', sa.Boolean(), nullable=True),
    sa.Column('fde_has_personal_recovery_key', sa.Boolean(), nullable=True),
    sa.Column('fde_has_institutional_recovery_key', sa.Boolean(), nullable=True),
    sa.Column('sip_enabled', sa.Boolean(), nullable=True),
    sa.Column('firewall_enabled', sa.Boolean(), nullable=True),
    sa.Column('enrolled_via_dep', sa.Boolean(), nullable=True),
    sa.Column('user_approved_enrollment', sa.Boolean(), nullable=True),
    sa.Column('is_user_enrollment', sa.Boolean(), nullable=True),
    sa.Column('recovery_lock_enabled', sa.Boolean(), nullable=True),
    sa.Column('details', sa.JSON(), nullable=True),
    sa.Column('updated_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_device_security_info_device_id_devices'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('device_id', name=op.f('pk_device_security_info'))
    )
    op.create_table('device_users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.String(length=64), nullable=False),
    sa.Column('short_name', sa.String(length=255), nullable=True),
    sa.Column('long_name', sa.String(length=255), nullable=True),
    sa.Column('push_token', sa.LargeBinary(), nullable=True),
    sa.Column('push_magic', sa.String(length=255), nullable=True),
    sa.Column('not_on_console', sa.Boolean(), nullable=True),
    sa.Column('updated_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_device_users_device_id_devices'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_device_users')),
    sa.UniqueConstraint('device_id', 'user_id', name=op.f('uq_device_users_device_id_user_id'))
    )


def downgrade() -> None:
    op.drop_table('device_users')
    op.drop_table('device_security_info')
    with op.batch_alter_table('device_os_updates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_device_os_updates_device_id'))

    op.drop_table('device_os_updates')
    with op.batch_alter_table('device_locations', schema=None) as batch_op:
        batch_op.drop_index('ix_device_locations_device_received')

    op.drop_table('device_locations')
    with op.batch_alter_table('device_installed_profiles', schema=None) as batch_op:
        batch_op.drop_index('ix_device_installed_profiles_device_identifier')

    op.drop_table('device_installed_profiles')
    with op.batch_alter_table('device_installed_applications', schema=None) as batch_op:
        batch_op.drop_index('ix_device_installed_applications_device_identifier')

    op.drop_table('device_installed_applications')
    with op.batch_alter_table('device_certificates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_device_certificates_device_id'))

    op.drop_table('device_certificates')
    with op.batch_alter_table('commands', schema=None) as batch_op:
        batch_op.drop_index('ix_commands_status_completed')
        batch_op.drop_index(batch_op.f('ix_commands_request_type'))
        batch_op.drop_index('ix_commands_device_created')
        batch_op.drop_index('ix_commands_active_queue', postgresql_where=sa.text("status IN ('queued', 'sent', 'not_now')"), sqlite_where=sa.text("status IN ('queued', 'sent', 'not_now')"))

    op.drop_table('commands')
    with op.batch_alter_table('auth_sets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_auth_sets_status'))
        batch_op.drop_index(batch_op.f('ix_auth_sets_device_id'))

    op.drop_table('auth_sets')
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_devices_serial_number'))
        batch_op.drop_index(batch_op.f('ix_devices_platform'))
        batch_op.drop_index(batch_op.f('ix_devices_last_seen_at'))

    op.drop_table('devices')
    op.drop_table('admission_preauthorizations')
