"""order_life: an order's status, refunds and last update, and who attributed it by hand

Revision ID: 0006_order_life
Revises: 0005_left_mail
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_order_life"
down_revision = "0005_left_mail"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        # Orders reported before this revision were counted as sold: they stay `paid`.
        batch_op.add_column(sa.Column("status", sa.String(length=20), nullable=False, server_default="paid"))
        batch_op.add_column(
            sa.Column("refunded_total", sa.Numeric(precision=14, scale=2), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("refunds", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("attributed_by_user_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "fk_orders_attributed_by_user_id_users",
            "users",
            ["attributed_by_user_id"],
            ["id"],
            ondelete="SET NULL",
        )
    # An order nobody updated yet was last changed when it was received.
    op.execute("UPDATE orders SET updated_at = received_at WHERE updated_at IS NULL")


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_constraint("fk_orders_attributed_by_user_id_users", type_="foreignkey")
        for column in ("attributed_by_user_id", "updated_at", "refunds", "refunded_total", "status"):
            batch_op.drop_column(column)
