"""ddm_devices, ddm_status_items, ddm_declaration_statuses: declarative device management per device
(the token it was last told of, its status items and declaration statuses, its last report's errors);
blueprints.declarative_profiles (its profiles go as legacy-profile declarations where they can)

Revision ID: 0024_ddm
Revises: 0023_compliance_state_device
"""

import sqlalchemy as sa
from alembic import op

import mdmserver.db

revision = '0024_ddm'
down_revision = '0023_compliance_state_device'
branch_labels = None
depends_on = None


def _device_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f(f'fk_{table}_device_id_devices'),
                                   ondelete='CASCADE')


def upgrade() -> None:
    op.add_column('blueprints', sa.Column('declarative_profiles', sa.Boolean(), nullable=False,
                                          server_default=sa.false()))
    op.create_table(
        'ddm_devices',
        sa.Column('device_id', sa.Integer(), nullable=False),
        sa.Column('declarations_token', sa.String(length=64), nullable=False),
        sa.Column('token_changed_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('errors', sa.JSON(), nullable=True),
        sa.Column('reported_at', mdmserver.db.UTCDateTime(timezone=True), nullable=True),
        _device_fk('ddm_devices'),
        sa.PrimaryKeyConstraint('device_id', name=op.f('pk_ddm_devices')),
    )
    op.create_table(
        'ddm_status_items',
        sa.Column('device_id', sa.Integer(), nullable=False),
        sa.Column('key_path', sa.String(length=200), nullable=False),
        sa.Column('value', sa.JSON(), nullable=True),
        sa.Column('updated_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
        _device_fk('ddm_status_items'),
        sa.PrimaryKeyConstraint('device_id', 'key_path', name=op.f('pk_ddm_status_items')),
    )
    op.create_table(
        'ddm_declaration_statuses',
        sa.Column('device_id', sa.Integer(), nullable=False),
        sa.Column('identifier', sa.String(length=255), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('server_token', sa.String(length=255), nullable=True),
        sa.Column('active', sa.Boolean(), nullable=True),
        sa.Column('valid', sa.String(length=32), nullable=True),
        sa.Column('reasons', sa.JSON(), nullable=True),
        sa.Column('updated_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
        _device_fk('ddm_declaration_statuses'),
        sa.PrimaryKeyConstraint('device_id', 'identifier', name=op.f('pk_ddm_declaration_statuses')),
    )


def downgrade() -> None:
    op.drop_table('ddm_declaration_statuses')
    op.drop_table('ddm_status_items')
    op.drop_table('ddm_devices')
    # plain ALTER TABLE (SQLite >= 3.35 drops columns in place): a batch copy of ``blueprints`` would drop
    # the table, and with foreign keys on that cascades to its profiles, apps, targets and members
    op.drop_column('blueprints', 'declarative_profiles')
