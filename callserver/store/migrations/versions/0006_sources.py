"""sources: where a conversation comes from (first and last touch, their labels, the Google click id)

Revision ID: 0006_sources
Revises: 0005_left_mail
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_sources"
down_revision = "0005_left_mail"
branch_labels = None
depends_on = None

TABLES = ("calls", "chats", "left_messages")
LABELS = ("source", "medium", "campaign", "first_source", "first_medium", "first_campaign", "gclid")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("touches", sa.JSON(), nullable=True))
            for column in LABELS:
                batch_op.add_column(sa.Column(column, sa.String(length=200), nullable=True))
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.add_column(sa.Column("google_ads_conversion", sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.drop_column("google_ads_conversion")
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in reversed(LABELS):
                batch_op.drop_column(column)
            batch_op.drop_column("touches")
