"""webhooks: the shop's subscriptions to outbound events, and the stored queue of their deliveries

Revision ID: 0006_webhooks
Revises: 0005_left_mail
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_webhooks"
down_revision = "0005_left_mail"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_subscriptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("secret", sa.String(length=128), nullable=False),
        sa.Column("allow_private_network", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_webhook_subscriptions_site_id", "webhook_subscriptions", ["site_id"], unique=False)
    op.create_table(
        "outbound_deliveries",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=32), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response_ms", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["subscription_id"], ["webhook_subscriptions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_outbound_deliveries_site_created", "outbound_deliveries", ["site_id", "created_at"], unique=False
    )
    op.create_index(
        "ix_outbound_deliveries_subscription_id", "outbound_deliveries", ["subscription_id"], unique=False
    )
    op.create_index("ix_outbound_deliveries_next_at", "outbound_deliveries", ["next_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_outbound_deliveries_next_at", table_name="outbound_deliveries")
    op.drop_index("ix_outbound_deliveries_subscription_id", table_name="outbound_deliveries")
    op.drop_index("ix_outbound_deliveries_site_created", table_name="outbound_deliveries")
    op.drop_table("outbound_deliveries")
    op.drop_index("ix_webhook_subscriptions_site_id", table_name="webhook_subscriptions")
    op.drop_table("webhook_subscriptions")
