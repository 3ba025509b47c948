"""canned replies for chats

Revision ID: 0003_chat
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_chat"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "canned_replies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=True),
        sa.Column("title", sa.String(length=100), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("canned_replies", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_canned_replies_site_id"), ["site_id"], unique=False)
    # Finding a returning visitor's open chat is the lookup every page of the shop makes.
    with op.batch_alter_table("chats", schema=None) as batch_op:
        batch_op.create_index("ix_chats_visitor_state", ["visitor_id", "state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("chats", schema=None) as batch_op:
        batch_op.drop_index("ix_chats_visitor_state")
    with op.batch_alter_table("canned_replies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_canned_replies_site_id"))
    op.drop_table("canned_replies")
