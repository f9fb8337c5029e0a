"""enrollment attempts counted per client and window; device private keys no longer kept

Revision ID: 0010_enrollment_limits
Revises: 0009_device_trust

The enrollment limit moves from each worker's memory to the ``enrollment_attempts`` table, shared
by every worker and server. Device identity private keys were stored at enrollment although the
server never uses them (the device holds its key): the rows are deleted here and no longer written.
A downgrade cannot bring those keys back.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010_enrollment_limits'
down_revision = '0009_device_trust'
branch_labels = None
depends_on = None

_BATCH = 5000


def upgrade() -> None:
    op.create_table('enrollment_attempts',
    sa.Column('client', sa.String(length=64), nullable=False),
    sa.Column('window_start', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('client', 'window_start', name=op.f('pk_enrollment_attempts'))
    )
    with op.batch_alter_table('enrollment_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_enrollment_attempts_window_start', ['window_start'], unique=False)
    _drop_device_private_keys()


def _drop_device_private_keys() -> None:
    """Detach and delete the private keys of device identity certificates, a batch at a time."""
    bind = op.get_bind()
    certificates = sa.table(
        'certificates', sa.column('id', sa.Integer), sa.column('purpose', sa.String),
        sa.column('private_key_id', sa.Integer),
    )
    keys = sa.table('rsa_private_keys', sa.column('id', sa.Integer))
    while True:
        rows = bind.execute(
            sa.select(certificates.c.id, certificates.c.private_key_id)
            .where(certificates.c.purpose == 'device_identity', certificates.c.private_key_id.is_not(None))
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        bind.execute(
            sa.update(certificates).where(certificates.c.id.in_([r.id for r in rows])).values(private_key_id=None)
        )
        bind.execute(sa.delete(keys).where(keys.c.id.in_([r.private_key_id for r in rows])))


def downgrade() -> None:
    with op.batch_alter_table('enrollment_attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_enrollment_attempts_window_start')

    op.drop_table('enrollment_attempts')
