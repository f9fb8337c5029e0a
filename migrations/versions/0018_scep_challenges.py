"""scep_challenges: single-use SCEP challenge passwords issued with enrollment profiles

Revision ID: 0018_scep_challenges
Revises: 0017_apps
"""

import sqlalchemy as sa
from alembic import op

import mdmserver.db

revision = '0018_scep_challenges'
down_revision = '0017_apps'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'scep_challenges',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('digest', sa.String(length=64), nullable=False),
        sa.Column('enrollment_id', sa.String(length=36), nullable=False),
        sa.Column('created_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('expires_at', mdmserver.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('used_at', mdmserver.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('transaction_id', sa.String(length=128), nullable=True),
        sa.Column('public_key_sha256', sa.String(length=64), nullable=True),
        sa.Column('certificate_fingerprint', sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_scep_challenges')),
        sa.UniqueConstraint('digest', name=op.f('uq_scep_challenges_digest')),
    )
    op.create_index('ix_scep_challenges_expires_at', 'scep_challenges', ['expires_at'], unique=False)
    op.create_index('ix_scep_challenges_transaction_id', 'scep_challenges', ['transaction_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_scep_challenges_transaction_id', table_name='scep_challenges')
    op.drop_index('ix_scep_challenges_expires_at', table_name='scep_challenges')
    op.drop_table('scep_challenges')
