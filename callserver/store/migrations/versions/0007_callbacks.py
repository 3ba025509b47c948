"""callbacks: a shopper's call-me-back requests (phone, preferred time, outcome, mail) and the site switch

Revision ID: 0007_callbacks
Revises: 0005_left_mail
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_callbacks"
down_revision = "0005_left_mail"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "callback_requests",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("visitor_token", sa.String(length=64), nullable=True),
        sa.Column("call_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("phone", sa.String(length=50), nullable=False),
        sa.Column("preferred_time", sa.String(length=200), nullable=True),
        sa.Column("page", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(length=20), nullable=True),
        sa.Column("handled_by", sa.Integer(), nullable=True),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("mail_state", sa.String(length=20), nullable=True),
        sa.Column("mail_attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("mail_error", sa.Text(), nullable=True),
        sa.Column("mail_next_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["handled_by"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_callback_requests_site_created", "callback_requests", ["site_id", "created_at"], unique=False
    )
    op.create_index("ix_callback_requests_mail_next_at", "callback_requests", ["mail_next_at"], unique=False)
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.add_column(sa.Column("callbacks", sa.Boolean(), server_default=sa.true(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.drop_column("callbacks")
    op.drop_index("ix_callback_requests_mail_next_at", table_name="callback_requests")
    op.drop_index("ix_callback_requests_site_created", table_name="callback_requests")
    op.drop_table("callback_requests")
