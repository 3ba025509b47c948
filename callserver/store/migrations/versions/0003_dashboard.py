"""dashboard: indexes for the owner's log filters and reports

Revision ID: 0003_dashboard
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_dashboard"
down_revision = "0002"
branch_labels = None
depends_on = None

# (index, table, columns): the log pages newest-first per site, filtered by operator, and the
# transcript of a call that fell back to chat. ix_calls_site_created already exists (0001).
INDEXES = [
    ("ix_calls_site_operator_created", "calls", ["site_id", "operator_id", "created_at"]),
    ("ix_calls_created", "calls", ["created_at"]),
    ("ix_chats_site_operator_created", "chats", ["site_id", "operator_id", "created_at"]),
    ("ix_chats_call_id", "chats", ["call_id"]),
]


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)
    # The overview's figures of days that are over, computed once (callserver/dashboard/daily.py).
    op.create_table(
        "dashboard_call_days",
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("answered", sa.Integer(), nullable=False),
        sa.Column("missed", sa.Integer(), nullable=False),
        sa.Column("abandoned", sa.Integer(), nullable=False),
        sa.Column("wait_seconds", sa.Float(), nullable=False),
        sa.Column("talk_seconds", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("site_id", "day"),
    )


def downgrade() -> None:
    op.drop_table("dashboard_call_days")
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
