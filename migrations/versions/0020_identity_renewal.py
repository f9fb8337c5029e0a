"""certificates.renews_udid: a device identity issued to renew another one; scep_challenges.renews_udid
and lifetime_days: what the certificate a SCEP challenge gets carries

Set on the identity certificate the server issues (or signs through SCEP) when a device's identity
nears its end: the InstallProfile carrying it reaches only that device, over its own authenticated
command channel, so the Authenticate that follows may move the device's binding at once instead of
holding it for an administrator (``mdmserver/checkin/renewal.py``). A UDID, not a device id: ids of
deleted rows can be handed out again on SQLite.

Revision ID: 0020_identity_renewal
Revises: 0019_webhooks
"""

import sqlalchemy as sa
from alembic import op

revision = '0020_identity_renewal'
down_revision = '0019_webhooks'
branch_labels = None
depends_on = None


# A plain ALTER TABLE (see 0016): a batch would rebuild ``certificates`` on SQLite.


def upgrade() -> None:
    op.add_column('certificates', sa.Column('renews_udid', sa.String(length=64), nullable=True))
    op.create_index('ix_certificates_renews_udid', 'certificates', ['renews_udid'], unique=False)
    op.add_column('scep_challenges', sa.Column('lifetime_days', sa.Float(), nullable=True))
    op.add_column('scep_challenges', sa.Column('renews_udid', sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column('scep_challenges', 'renews_udid')
    op.drop_column('scep_challenges', 'lifetime_days')
    op.drop_index('ix_certificates_renews_udid', table_name='certificates')
    op.drop_column('certificates', 'renews_udid')
