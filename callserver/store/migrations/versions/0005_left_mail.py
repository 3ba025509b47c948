"""left_mail: a left message's mail is retried until it is sent (state, attempts, last error, next try)

Revision ID: 0005_left_mail
Revises: 0004_visitors
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_left_mail"
down_revision = "0004_visitors"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("left_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mail_state", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("mail_attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("mail_error", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("mail_next_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_left_messages_mail_next_at", ["mail_next_at"], unique=False)
    # Messages mailed before this revision were sent; the others are not tried again (they may be old).
    op.execute("UPDATE left_messages SET mail_state = 'sent', mail_attempts = 1 WHERE mailed_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("left_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_left_messages_mail_next_at")
        for column in ("mail_next_at", "mail_error", "mail_attempts", "mail_state"):
            batch_op.drop_column(column)
