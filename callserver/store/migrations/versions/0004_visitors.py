"""visitors: page views, scores, invitation rules, working hours and languages; merges the 0003 heads

Revision ID: 0004_visitors
Revises: 0003_chat, 0003_dashboard, 0003_orders
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_visitors"
down_revision = ("0003_chat", "0003_dashboard", "0003_orders")
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "page_views",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("visitor_token", sa.String(length=64), nullable=False),
        sa.Column("view_id", sa.String(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("page", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("referrer", sa.Text(), nullable=True),
        sa.Column("utm", sa.JSON(), nullable=True),
        sa.Column("search", sa.String(length=200), nullable=True),
        sa.Column("product_price", sa.Float(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("sku", sa.String(length=200), nullable=True),
        sa.Column("cart_value", sa.Float(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("site_id", "visitor_token", "view_id"),
    )
    op.create_index("ix_page_views_site_at", "page_views", ["site_id", "at"], unique=False)
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.add_column(sa.Column("score_weights", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("invite_rules", sa.JSON(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("hours", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("language", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("texts", sa.JSON(), nullable=False, server_default="{}"))
    with op.batch_alter_table("visitors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("invitations", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("invitation_dismissed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("visitors", schema=None) as batch_op:
        batch_op.drop_column("invitation_dismissed_at")
        batch_op.drop_column("invitations")
    with op.batch_alter_table("sites", schema=None) as batch_op:
        for column in ("texts", "language", "hours", "invite_rules", "score_weights"):
            batch_op.drop_column(column)
    op.drop_index("ix_page_views_site_at", table_name="page_views")
    op.drop_table("page_views")
