"""Attributed revenue as the owner can trust it: net of refunds, a cancelled order counts 0, and
amounts in different currencies are never added together (one figure per currency).

`net_revenue()` is the one definition every report uses (the dashboard's overview, the CSV, the API's
revenue report). `GROUPINGS` names the ways the revenue report can be cut; each grouping says how
to count a key's conversations and how to sum its orders.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Numeric, and_, case, false, func, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import SQLCoreOperations

from callserver.store.models import Call, Chat, ConversationTable, LeftMessage, Order, User

CENT = Decimal("0.01")
CANCELLED = "cancelled"
CHANNELS = ("call", "chat", "message")


def net_revenue() -> ColumnElement[Decimal]:
    """An order's revenue in SQL: its total less its refunds, 0 when it was cancelled."""
    return type_coerce(
        case((Order.status == CANCELLED, 0), else_=Order.total - Order.refunded_total), Numeric(14, 2)
    )


def counted_refunds() -> ColumnElement[Decimal]:
    """The refunds of an order that counts (a cancelled order's refunds are no revenue lost: it had none)."""
    return type_coerce(case((Order.status == CANCELLED, 0), else_=Order.refunded_total), Numeric(14, 2))


def counted_orders() -> ColumnElement[int]:
    """1 for an order that counts as sold, 0 for a cancelled one (to be summed)."""
    return case((Order.status == CANCELLED, 0), else_=1)


def cents(value: object) -> Decimal:
    """A summed amount as cents (SQLite sums in floating point)."""
    return Decimal(str(value or 0)).quantize(CENT)


def in_sites(
    column: SQLCoreOperations[int] | SQLCoreOperations[int | None], site_ids: Sequence[int]
) -> ColumnElement[bool]:
    if not site_ids:
        return false()
    if len(site_ids) == 1:
        return column == site_ids[0]
    return column.in_(site_ids)


@dataclass(frozen=True)
class Period:
    """Whole days in UTC, both inclusive, as `[since, until)`."""

    start: date
    end: date

    @property
    def since(self) -> datetime:
        return datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC)

    @property
    def until(self) -> datetime:
        return datetime(self.end.year, self.end.month, self.end.day, tzinfo=UTC) + timedelta(days=1)


@dataclass(frozen=True)
class OrderFigures:
    """The counted orders of one key in one currency."""

    key: str | None
    currency: str
    orders: int
    revenue: Decimal
    refunded: Decimal


@dataclass(frozen=True)
class RevenueRow:
    """One row of the revenue report: a key (channel, operator, …) in one currency.

    `conversations` are the key's conversations begun in the period (the same on each of its
    currencies' rows); a key with conversations and no orders has one row with `currency` None.
    """

    key: str | None
    conversations: int
    orders: int
    revenue: Decimal
    refunded: Decimal
    currency: str | None


ConversationCounter = Callable[[AsyncSession, Sequence[int], Period], Awaitable[dict[str | None, int]]]
OrderSummer = Callable[[AsyncSession, Sequence[int], Period], Awaitable[list[OrderFigures]]]


@dataclass(frozen=True)
class Grouping:
    """One way to cut the revenue report: how to count a key's conversations, how to sum its orders."""

    conversations: ConversationCounter
    orders: OrderSummer


def _orders_in(site_ids: Sequence[int], period: Period) -> list[ColumnElement[bool]]:
    # Orders count in the period they were placed in, as on the dashboard's overview.
    return [
        in_sites(Order.site_id, site_ids),
        Order.created_at >= period.since,
        Order.created_at < period.until,
    ]


def _figure_columns() -> tuple[Any, ...]:
    return (
        Order.currency,
        func.sum(counted_orders()),
        func.sum(net_revenue()),
        func.sum(counted_refunds()),
    )


# ---- by channel ----


async def _channel_conversations(
    session: AsyncSession, site_ids: Sequence[int], period: Period
) -> dict[str | None, int]:
    counts: dict[str | None, int] = {}
    tables: tuple[tuple[ConversationTable, str], ...] = (
        (Call, "call"),
        (Chat, "chat"),
        (LeftMessage, "message"),
    )
    for table, channel in tables:
        counts[channel] = int(
            await session.scalar(
                select(func.count()).where(
                    in_sites(table.site_id, site_ids),
                    table.created_at >= period.since,
                    table.created_at < period.until,
                )
            )
            or 0
        )
    return counts


async def _channel_orders(
    session: AsyncSession, site_ids: Sequence[int], period: Period
) -> list[OrderFigures]:
    rows = await session.execute(
        select(Order.channel, *_figure_columns())
        .where(*_orders_in(site_ids, period), Order.channel.is_not(None))
        .group_by(Order.channel, Order.currency)
    )
    return [
        OrderFigures(channel, currency, int(n or 0), cents(revenue), cents(refunded))
        for channel, currency, n, revenue, refunded in rows
    ]


# ---- by operator (the operator's e-mail; None: a conversation nobody answered, a left message) ----


async def _operator_emails(session: AsyncSession, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    return {i: e for i, e in await session.execute(select(User.id, User.email).where(User.id.in_(ids)))}


async def _operator_conversations(
    session: AsyncSession, site_ids: Sequence[int], period: Period
) -> dict[str | None, int]:
    by_id: dict[int | None, int] = {}
    unanswered = 0  # nobody's, and those of an operator id no user has (both count under None)
    for table in (Call, Chat):
        in_period = (
            in_sites(table.site_id, site_ids),
            table.created_at >= period.since,
            table.created_at < period.until,
        )
        # Each user's conversations are a seek per (site, user) on (site_id, operator_id, created_at),
        # grouped in that index's order: no sort. A plain GROUP BY operator_id over the period let
        # SQLite walk the whole site's index (every call ever) to save that sort, ~1 s on 1,000,000 calls.
        rows = await session.execute(
            select(table.operator_id, func.count())
            .where(*in_period, table.operator_id.in_(select(User.id).scalar_subquery()))
            .group_by(table.site_id, table.operator_id)
        )
        answered = 0
        for operator_id, count in rows:
            by_id[operator_id] = by_id.get(operator_id, 0) + int(count)
            answered += int(count)
        total = int(await session.scalar(select(func.count()).where(*in_period)) or 0)
        unanswered += total - answered
    messages = await session.scalar(
        select(func.count()).where(
            in_sites(LeftMessage.site_id, site_ids),
            LeftMessage.created_at >= period.since,
            LeftMessage.created_at < period.until,
        )
    )
    emails = await _operator_emails(session, {i for i in by_id if i is not None})
    counts: dict[str | None, int] = {None: unanswered + int(messages or 0)}
    for operator_id, count in by_id.items():
        key = emails.get(operator_id) if operator_id is not None else None
        counts[key] = counts.get(key, 0) + count
    return {key: count for key, count in counts.items() if count}


async def _operator_orders(
    session: AsyncSession, site_ids: Sequence[int], period: Period
) -> list[OrderFigures]:
    totals: dict[tuple[int | None, str], list[Any]] = {}
    for table, channel in ((Call, "call"), (Chat, "chat")):
        rows = await session.execute(
            select(table.operator_id, *_figure_columns())
            .join(table, and_(Order.channel == channel, table.id == Order.conversation_id))
            .where(*_orders_in(site_ids, period))
            .group_by(table.operator_id, Order.currency)
        )
        for operator_id, currency, n, revenue, refunded in rows:
            sums = totals.setdefault((operator_id, currency), [0, Decimal(0), Decimal(0)])
            sums[0] += int(n or 0)
            sums[1] += cents(revenue)
            sums[2] += cents(refunded)
    rows = await session.execute(
        select(*_figure_columns())
        .where(*_orders_in(site_ids, period), Order.channel == "message")
        .group_by(Order.currency)
    )
    for currency, n, revenue, refunded in rows:
        sums = totals.setdefault((None, currency), [0, Decimal(0), Decimal(0)])
        sums[0] += int(n or 0)
        sums[1] += cents(revenue)
        sums[2] += cents(refunded)
    emails = await _operator_emails(session, {i for i, _c in totals if i is not None})
    return [
        OrderFigures(emails.get(i) if i is not None else None, currency, n, revenue, refunded)
        for (i, currency), (n, revenue, refunded) in totals.items()
    ]


# The report's `by=`: add a grouping here (the sources feature adds `source` and `campaign`).
GROUPINGS: dict[str, Grouping] = {
    "channel": Grouping(_channel_conversations, _channel_orders),
    "operator": Grouping(_operator_conversations, _operator_orders),
}


async def revenue_report(
    session: AsyncSession,
    site_ids: Sequence[int],
    period: Period,
    by: str,
    groupings: Mapping[str, Grouping] = GROUPINGS,
) -> list[RevenueRow]:
    """Conversations, counted orders, net revenue and refunds per key and currency (`by` in `groupings`).

    `groupings` may add cuts built elsewhere on this module (reports/sources.py: `source`, `campaign`,
    which cannot be imported here without a cycle). Raises KeyError for a grouping that is not in it
    (the caller checks `by` first).
    """
    grouping = groupings[by]
    conversations = await grouping.conversations(session, site_ids, period)
    figures = await grouping.orders(session, site_ids, period)
    rows = [
        RevenueRow(f.key, conversations.get(f.key, 0), f.orders, f.revenue, f.refunded, f.currency)
        for f in figures
    ]
    sold = {f.key for f in figures}
    rows += [
        RevenueRow(key, count, 0, Decimal("0.00"), Decimal("0.00"), None)
        for key, count in conversations.items()
        if key not in sold and count
    ]
    return sorted(rows, key=lambda r: (r.key is None, r.key or "", r.currency or ""))
