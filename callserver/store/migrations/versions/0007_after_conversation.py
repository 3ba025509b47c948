"""after_conversation: a conversation's satisfaction rating, the operator's note, order number and tags

Revision ID: 0007_after_conversation
Revises: 0005_left_mail
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_after_conversation"
down_revision = "0005_left_mail"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversation_outcomes",
        sa.Column("conversation_id", sa.String(length=32), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("csat_score", sa.Integer(), nullable=True),
        sa.Column("csat_comment", sa.Text(), nullable=True),
        sa.Column("csat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("csat_dismissed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("order_ref", sa.String(length=100), nullable=True),
        sa.Column("updated_by", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["updated_by"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("conversation_id"),
    )
    op.create_index(
        "ix_conversation_outcomes_site_order", "conversation_outcomes", ["site_id", "order_ref"], unique=False
    )
    op.create_table(
        "conversation_tags",
        sa.Column("conversation_id", sa.String(length=32), nullable=False),
        sa.Column("tag", sa.String(length=50), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("conversation_id", "tag"),
    )
    op.create_index("ix_conversation_tags_site_tag", "conversation_tags", ["site_id", "tag"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_conversation_tags_site_tag", table_name="conversation_tags")
    op.drop_table("conversation_tags")
    op.drop_index("ix_conversation_outcomes_site_order", table_name="conversation_outcomes")
    op.drop_table("conversation_outcomes")
