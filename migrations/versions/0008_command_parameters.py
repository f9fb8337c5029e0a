"""command parameters stored once per distinct body (content-addressed by SHA-256)

Revision ID: 0008_command_parameters
Revises: 0003_devices
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = '0008_command_parameters'
down_revision = '0003_devices'
branch_labels = None
depends_on = None

_ACTIVE_SQL = "status IN ('queued', 'sent', 'not_now')"


def _sha256_hex(blob: bytes | None) -> str | None:
    return None if blob is None else hashlib.sha256(blob).hexdigest()


def _digest_sql(column: str) -> str:
    """SQL for the lowercase hex SHA-256 of a blob column (PostgreSQL built-in; a Python function
    registered on the SQLite connection)."""
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        return f"encode(sha256({column}), 'hex')"
    bind.connection.driver_connection.create_function("mdm_sha256_hex", 1, _sha256_hex, deterministic=True)
    return f"mdm_sha256_hex({column})"


def upgrade() -> None:
    op.create_table('command_parameters',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_command_parameters')),
    sa.UniqueConstraint('sha256', name=op.f('uq_command_parameters_sha256'))
    )
    with op.batch_alter_table('commands', schema=None) as batch_op:
        batch_op.add_column(sa.Column('parameters_id', sa.Integer(), nullable=True))

    digest = _digest_sql("parameters")
    op.execute(
        "INSERT INTO command_parameters (sha256, body) "
        f"SELECT DISTINCT {digest}, parameters FROM commands"
    )
    op.execute(
        "UPDATE commands SET parameters_id = (SELECT command_parameters.id FROM command_parameters "
        f"WHERE command_parameters.sha256 = {digest})"
    )

    with op.batch_alter_table('commands', schema=None) as batch_op:
        batch_op.alter_column('parameters_id', existing_type=sa.Integer(), nullable=False)
        batch_op.create_index('ix_commands_parameters_id', ['parameters_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_commands_parameters_id_command_parameters'),
                                    'command_parameters', ['parameters_id'], ['id'])
        batch_op.drop_column('parameters')
    _restore_active_queue_index()


def downgrade() -> None:
    with op.batch_alter_table('commands', schema=None) as batch_op:
        batch_op.add_column(sa.Column('parameters', sa.LargeBinary(), nullable=True))
    op.execute(
        "UPDATE commands SET parameters = (SELECT command_parameters.body FROM command_parameters "
        "WHERE command_parameters.id = commands.parameters_id)"
    )
    with op.batch_alter_table('commands', schema=None) as batch_op:
        batch_op.alter_column('parameters', existing_type=sa.LargeBinary(), nullable=False)
        batch_op.drop_constraint(batch_op.f('fk_commands_parameters_id_command_parameters'), type_='foreignkey')
        batch_op.drop_index('ix_commands_parameters_id')
        batch_op.drop_column('parameters_id')
    op.drop_table('command_parameters')
    _restore_active_queue_index()


def _restore_active_queue_index() -> None:
    """SQLite's batch mode rebuilds the table; make sure the partial queue index keeps its WHERE."""
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute("DROP INDEX IF EXISTS ix_commands_active_queue")
    op.create_index('ix_commands_active_queue', 'commands', ['device_id', 'status', 'priority', 'id'], unique=False,
                    sqlite_where=sa.text(_ACTIVE_SQL))
