"""device_custom_attributes: an attribute holds a list of values, one row per value

The unique key becomes (device_id, name, value) instead of (device_id, name). Existing rows are one
value each, so nothing is rewritten; a downgrade keeps the first value of each attribute.

Revision ID: 0014_attribute_values
Revises: 0013_held_rebinding
"""

import sqlalchemy as sa
from alembic import op

revision = '0014_attribute_values'
down_revision = '0013_held_rebinding'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('device_custom_attributes', schema=None) as batch_op:
        batch_op.drop_constraint('uq_device_custom_attributes_device_id_name', type_='unique')
        batch_op.create_unique_constraint(op.f('uq_device_custom_attributes_device_id_name_value'),
                                          ['device_id', 'name', 'value'])


def downgrade() -> None:
    # keep one value (the first written) per attribute, as the old key allows
    table = sa.table('device_custom_attributes', sa.column('id', sa.Integer), sa.column('device_id', sa.Integer),
                     sa.column('name', sa.String))
    first = (sa.select(sa.func.min(table.c.id)).group_by(table.c.device_id, table.c.name)).scalar_subquery()
    op.execute(table.delete().where(table.c.id.not_in(first)))
    with op.batch_alter_table('device_custom_attributes', schema=None) as batch_op:
        batch_op.drop_constraint('uq_device_custom_attributes_device_id_name_value', type_='unique')
        batch_op.create_unique_constraint(op.f('uq_device_custom_attributes_device_id_name'), ['device_id', 'name'])
