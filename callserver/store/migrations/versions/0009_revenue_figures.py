"""revenue_figures: the Sources page, the revenue report by source or campaign and the overview's CSAT
keep each past day's figures (`source_day_figures`, `csat_day_figures`, which days are kept in
`report_days`), and database triggers count every later write to a past day's conversations, orders
and ratings in `report_day_changes` so that a refund weeks later, a cancelled order or a conversation
imported into a counted day has that day counted again (callserver/reports/kept_days.py).

Triggers rather than application hooks: orders change from REST, two shop platforms, the dashboard's
manual attribution, erasure and foreign-key cascades; a trigger sees every one of them. They only
count changes to days before today (today is always counted live), so the day being written all day
long is no hot row.

Measured with benchmarks/dashboard.py (1,000,000 calls, SQLite): see the README's figures.

Revision ID: 0009_revenue_figures
Revises: 0008_merge
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_revenue_figures"
down_revision = "0008_merge"
branch_labels = None
depends_on = None

CONVERSATIONS = (("calls", "call"), ("chats", "chat"), ("left_messages", "message"))


def _sqlite_bump(site: str, at: str) -> str:
    # `date(x) < date('now')`: only past days are kept, and both are UTC here (SQLite stores UTC naive).
    return (
        "INSERT INTO report_day_changes (site_id, day, generation)"
        f" SELECT {site}, date({at}), 1 WHERE {at} IS NOT NULL AND date({at}) < date('now')"
        " ON CONFLICT (site_id, day) DO UPDATE SET generation = generation + 1;"
    )


def _sqlite_bump_orders(channel: str, conversation: str) -> str:
    # An order counts under its conversation's labels: a conversation changed or gone changes its
    # orders' days.
    return (
        "INSERT INTO report_day_changes (site_id, day, generation)"
        " SELECT site_id, date(created_at), 1 FROM orders"
        f" WHERE channel = '{channel}' AND conversation_id = {conversation}"
        " AND date(created_at) < date('now')"
        " ON CONFLICT (site_id, day) DO UPDATE SET generation = generation + 1;"
    )


def _sqlite_bump_rated(conversation: str) -> str:
    # A rating counts on its conversation's day.
    return (
        "INSERT INTO report_day_changes (site_id, day, generation)"
        f" SELECT site_id, date(created_at), 1 FROM calls WHERE id = {conversation}"
        " AND date(created_at) < date('now')"
        f" UNION ALL SELECT site_id, date(created_at), 1 FROM chats WHERE id = {conversation}"
        " AND date(created_at) < date('now')"
        " ON CONFLICT (site_id, day) DO UPDATE SET generation = generation + 1;"
    )


def _sqlite_triggers() -> list[str]:
    statements = []
    for table, channel in CONVERSATIONS:
        statements += [
            f"CREATE TRIGGER report_days_{table}_insert AFTER INSERT ON {table} BEGIN"
            f" {_sqlite_bump('NEW.site_id', 'NEW.created_at')} END",
            f"CREATE TRIGGER report_days_{table}_update AFTER UPDATE ON {table} BEGIN"
            f" {_sqlite_bump('OLD.site_id', 'OLD.created_at')}"
            f" {_sqlite_bump('NEW.site_id', 'NEW.created_at')}"
            f" {_sqlite_bump_orders(channel, 'OLD.id')} END",
            f"CREATE TRIGGER report_days_{table}_delete AFTER DELETE ON {table} BEGIN"
            f" {_sqlite_bump('OLD.site_id', 'OLD.created_at')}"
            f" {_sqlite_bump_orders(channel, 'OLD.id')} END",
        ]
    statements += [
        "CREATE TRIGGER report_days_orders_insert AFTER INSERT ON orders BEGIN"
        f" {_sqlite_bump('NEW.site_id', 'NEW.created_at')} END",
        "CREATE TRIGGER report_days_orders_update AFTER UPDATE ON orders BEGIN"
        f" {_sqlite_bump('OLD.site_id', 'OLD.created_at')}"
        f" {_sqlite_bump('NEW.site_id', 'NEW.created_at')} END",
        "CREATE TRIGGER report_days_orders_delete AFTER DELETE ON orders BEGIN"
        f" {_sqlite_bump('OLD.site_id', 'OLD.created_at')} END",
        "CREATE TRIGGER report_days_outcomes_insert AFTER INSERT ON conversation_outcomes BEGIN"
        f" {_sqlite_bump_rated('NEW.conversation_id')} END",
        "CREATE TRIGGER report_days_outcomes_update AFTER UPDATE ON conversation_outcomes BEGIN"
        f" {_sqlite_bump_rated('OLD.conversation_id')} {_sqlite_bump_rated('NEW.conversation_id')} END",
        "CREATE TRIGGER report_days_outcomes_delete AFTER DELETE ON conversation_outcomes BEGIN"
        f" {_sqlite_bump_rated('OLD.conversation_id')} END",
    ]
    return statements


POSTGRES_FUNCTIONS = [
    """CREATE FUNCTION report_day_changed(site integer, at timestamptz) RETURNS void
    LANGUAGE plpgsql AS $$
    BEGIN
        IF at IS NOT NULL AND (at AT TIME ZONE 'UTC')::date < (now() AT TIME ZONE 'UTC')::date THEN
            INSERT INTO report_day_changes (site_id, day, generation)
            VALUES (site, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), 1)
            ON CONFLICT (site_id, day) DO UPDATE SET generation = report_day_changes.generation + 1;
        END IF;
    END $$""",
    """CREATE FUNCTION report_days_conversation_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE placed record;
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            PERFORM report_day_changed(OLD.site_id, OLD.created_at);
            FOR placed IN SELECT site_id, created_at FROM orders
                    WHERE channel = TG_ARGV[0] AND conversation_id = OLD.id LOOP
                PERFORM report_day_changed(placed.site_id, placed.created_at);
            END LOOP;
        END IF;
        IF TG_OP <> 'DELETE' THEN
            PERFORM report_day_changed(NEW.site_id, NEW.created_at);
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE FUNCTION report_days_order_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            PERFORM report_day_changed(OLD.site_id, OLD.created_at);
        END IF;
        IF TG_OP <> 'DELETE' THEN
            PERFORM report_day_changed(NEW.site_id, NEW.created_at);
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE FUNCTION report_days_rating_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE rated record;
    BEGIN
        FOR rated IN
            SELECT site_id, created_at FROM calls
                WHERE id IN (CASE WHEN TG_OP <> 'INSERT' THEN OLD.conversation_id END,
                             CASE WHEN TG_OP <> 'DELETE' THEN NEW.conversation_id END)
            UNION ALL
            SELECT site_id, created_at FROM chats
                WHERE id IN (CASE WHEN TG_OP <> 'INSERT' THEN OLD.conversation_id END,
                             CASE WHEN TG_OP <> 'DELETE' THEN NEW.conversation_id END)
        LOOP
            PERFORM report_day_changed(rated.site_id, rated.created_at);
        END LOOP;
        RETURN NULL;
    END $$""",
]


def _postgres_triggers() -> list[str]:
    statements = list(POSTGRES_FUNCTIONS)
    for table, channel in CONVERSATIONS:
        statements.append(
            f"CREATE TRIGGER report_days_{table} AFTER INSERT OR UPDATE OR DELETE ON {table}"
            f" FOR EACH ROW EXECUTE FUNCTION report_days_conversation_changed('{channel}')"
        )
    statements += [
        "CREATE TRIGGER report_days_orders AFTER INSERT OR UPDATE OR DELETE ON orders"
        " FOR EACH ROW EXECUTE FUNCTION report_days_order_changed()",
        "CREATE TRIGGER report_days_outcomes AFTER INSERT OR UPDATE OR DELETE ON conversation_outcomes"
        " FOR EACH ROW EXECUTE FUNCTION report_days_rating_changed()",
    ]
    return statements


def _site() -> sa.Column[int]:
    return sa.Column("site_id", sa.Integer(), sa.ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True)


def upgrade() -> None:
    op.create_table(
        "report_day_changes",
        sa.Column("site_id", sa.Integer(), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("generation", sa.Integer(), nullable=False),
    )
    op.create_table(
        "report_days",
        sa.Column("report", sa.String(20), primary_key=True),
        _site(),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("generation", sa.Integer(), nullable=False),
    )
    op.create_table(
        "source_day_figures",
        _site(),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("touch", sa.String(5), primary_key=True),
        sa.Column("source", sa.String(200), primary_key=True),
        sa.Column("medium", sa.String(200), primary_key=True),
        sa.Column("campaign", sa.String(200), primary_key=True),
        sa.Column("currency", sa.String(3), primary_key=True),
        sa.Column("conversations", sa.Integer(), nullable=False),
        sa.Column("orders", sa.Integer(), nullable=False),
        sa.Column("revenue_cents", sa.Integer(), nullable=False),
        sa.Column("refunded_cents", sa.Integer(), nullable=False),
    )
    op.create_table(
        "csat_day_figures",
        _site(),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("channel", sa.String(10), primary_key=True),
        sa.Column("operator_id", sa.Integer(), primary_key=True),
        sa.Column("asked", sa.Integer(), nullable=False),
        sa.Column("rated", sa.Integer(), nullable=False),
        sa.Column("score_sum", sa.Integer(), nullable=False),
    )
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        statements = _sqlite_triggers()
    elif dialect == "postgresql":
        statements = _postgres_triggers()
    else:  # pragma: no cover - callserver runs on SQLite or PostgreSQL
        statements = []
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for table in [t for t, _c in CONVERSATIONS] + ["orders", "outcomes"]:
            for when in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS report_days_{table}_{when}")
    elif dialect == "postgresql":
        for table in [t for t, _c in CONVERSATIONS] + ["orders"]:
            op.execute(f"DROP TRIGGER IF EXISTS report_days_{table} ON {table}")
        op.execute("DROP TRIGGER IF EXISTS report_days_outcomes ON conversation_outcomes")
        for function in (
            "report_days_rating_changed()",
            "report_days_order_changed()",
            "report_days_conversation_changed()",
            "report_day_changed(integer, timestamptz)",
        ):
            op.execute(f"DROP FUNCTION IF EXISTS {function}")
    for table in ("csat_day_figures", "source_day_figures", "report_days", "report_day_changes"):
        op.drop_table(table)
