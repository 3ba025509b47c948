"""Merge the features that added migrations side by side (order life, webhooks, sources, after-conversation,
call-backs): one head again.

Revision ID: 0008_merge
"""

from __future__ import annotations

revision = "0008_merge"
down_revision = (
    "0006_order_life",
    "0006_webhooks",
    "0007_after_conversation",
    "0007_callbacks",
    "0007_sources_index",
)
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
