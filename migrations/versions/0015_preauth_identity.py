"""admission_preauthorizations.identity_data: the identity a preauthorization was given with

Mender's ``device_identity`` (a JSON string of vendor attributes: the seed's ``mac``, ``sku``, ``sn``…),
kept as given and shown with the preauthorization. Nullable: existing rows, and preauthorizations made
from the configuration, have none.

Revision ID: 0015_preauth_identity
Revises: 0014_attribute_values
"""

import sqlalchemy as sa
from alembic import op

revision = '0015_preauth_identity'
down_revision = '0014_attribute_values'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('admission_preauthorizations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('identity_data', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('admission_preauthorizations', schema=None) as batch_op:
        batch_op.drop_column('identity_data')
