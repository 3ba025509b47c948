"""sources_index: the Sources page and the revenue report by source or campaign read the labels from
an index (site, time, last and first touch's labels) instead of each conversation's row

Measured with benchmarks/dashboard.py (1,000,000 calls, SQLite): the Sources page's p50 from
~153 ms to ~130 ms, the report by campaign from ~152 ms to ~107 ms. Chats too (a tenth as many).

Revision ID: 0007_sources_index
Revises: 0006_sources
"""

from alembic import op

revision = "0007_sources_index"
down_revision = "0006_sources"
branch_labels = None
depends_on = None

LABELS = ["source", "medium", "campaign", "first_source", "first_medium", "first_campaign"]


def upgrade() -> None:
    op.create_index("ix_calls_site_created_sources", "calls", ["site_id", "created_at", *LABELS])
    op.create_index("ix_chats_site_created_sources", "chats", ["site_id", "created_at", *LABELS])


def downgrade() -> None:
    op.drop_index("ix_chats_site_created_sources", table_name="chats")
    op.drop_index("ix_calls_site_created_sources", table_name="calls")
