"""auth_sets: a re-binding held for an administrator, and what its enrollment sent meanwhile

While a device's previous binding is still valid, a new certificate's ``Authenticate`` no longer
moves the binding: the auth set is ``held`` and its device-channel ``TokenUpdate`` (push token,
PushMagic, topic, the sealed UnlockToken) is stored here until an administrator accepts it.

Revision ID: 0013_held_rebinding
Revises: 0012_retire_reconcile
"""

import sqlalchemy as sa
from alembic import op

import mdmserver.db

revision = '0013_held_rebinding'
down_revision = '0012_retire_reconcile'
branch_labels = None
depends_on = None

_HELD_COLUMNS = (
    'held_push_token', 'held_push_magic', 'held_topic', 'held_unlock_token_encrypted',
    'held_awaiting_configuration', 'held_token_updated_at',
)


# plain ALTER TABLE on both databases, as in 0012 (no batch copy of a table others refer to)


def upgrade() -> None:
    # existing auth sets are never held: before this revision a re-binding moved the binding at once
    op.add_column('auth_sets', sa.Column('held', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column('auth_sets', sa.Column('held_push_token', sa.LargeBinary(), nullable=True))
    op.add_column('auth_sets', sa.Column('held_push_magic', sa.String(length=255), nullable=True))
    op.add_column('auth_sets', sa.Column('held_topic', sa.String(length=255), nullable=True))
    op.add_column('auth_sets', sa.Column('held_unlock_token_encrypted', sa.LargeBinary(), nullable=True))
    op.add_column('auth_sets', sa.Column('held_awaiting_configuration', sa.Boolean(), nullable=True))
    op.add_column('auth_sets', sa.Column('held_token_updated_at', mdmserver.db.UTCDateTime(timezone=True),
                                         nullable=True))


def downgrade() -> None:
    for name in reversed(_HELD_COLUMNS):
        op.drop_column('auth_sets', name)
    op.drop_column('auth_sets', 'held')
