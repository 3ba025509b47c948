"""Conversations, attributed orders and net revenue by where the visitor came from.

Each conversation keeps its last touch's source, medium and campaign (and its first touch's):
`callserver/orders/sources.py` derives them when the call, chat or left message is written. An
attributed order counts under its conversation's labels; revenue is `orders.revenue.net_revenue()`
(net of refunds, a cancelled order 0), one figure per currency. Lives apart from the orders package
because it reads both the orders and the conversations' tables, as the dashboard and the API do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Literal, cast

from sqlalchemy import Select, Table, and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from callserver.orders.revenue import (
    Grouping,
    OrderFigures,
    Period,
    cents,
    counted_orders,
    counted_refunds,
    in_sites,
    net_revenue,
)
from callserver.orders.sources import DIRECT, NO_CAMPAIGN, NO_MEDIUM
from callserver.reports.kept_days import KeptReport, day_of, keep_days, kept_range
from callserver.store.models import Call, Chat, ConversationTable, LeftMessage, Order, SourceDayFigures

Touch = Literal["last", "first"]
TOUCHES: tuple[Touch, ...] = ("last", "first")
CONVERSATIONS: tuple[tuple[ConversationTable, str], ...] = (
    (Call, "call"),
    (Chat, "chat"),
    (LeftMessage, "message"),
)
Key = tuple[str, str, str]  # source, medium, campaign
Conversations = dict[Key, int]
Sold = dict[tuple[Key, str], list[Any]]  # (labels, currency) → [orders, revenue, refunded]
day_figures = cast(Table, SourceDayFigures.__table__)


@dataclass(frozen=True)
class SourceRow:
    """One source / medium / campaign in one currency (`currency` None: conversations, no orders)."""

    source: str
    medium: str
    campaign: str
    conversations: int
    orders: int
    revenue: Decimal
    refunded: Decimal
    currency: str | None


def _labels(
    table: ConversationTable, touch: Touch
) -> tuple[
    InstrumentedAttribute[str | None], InstrumentedAttribute[str | None], InstrumentedAttribute[str | None]
]:
    if touch == "first":
        return table.first_source, table.first_medium, table.first_campaign
    return table.source, table.medium, table.campaign


def _key(source: str | None, medium: str | None, campaign: str | None) -> Key:
    # Conversations written before 0006_sources have no labels: they count as direct visits.
    return (source or DIRECT, medium or NO_MEDIUM, campaign or NO_CAMPAIGN)


def _counted(
    table: ConversationTable, touch: Touch, site_ids: Sequence[int], period: Period, per_day_on: str = ""
) -> Select[Any]:
    """Conversations begun in the period per labels; `per_day_on` (the database's dialect, for the kept
    days) puts the site and the day first."""
    labels = _labels(table, touch)
    per_day = (table.site_id, day_of(table.created_at, per_day_on)) if per_day_on else ()
    return (
        select(*per_day, *labels, func.count())
        .where(
            in_sites(table.site_id, site_ids),
            table.created_at >= period.since,
            table.created_at < period.until,
        )
        .group_by(*per_day, *labels)
    )


def _sold(
    table: ConversationTable,
    channel: str,
    touch: Touch,
    site_ids: Sequence[int],
    period: Period,
    per_day_on: str = "",
) -> Select[Any]:
    """Counted orders placed in the period, net revenue and refunds, per labels and currency, each order
    under its conversation's labels; `per_day_on` as in `_counted`."""
    labels = _labels(table, touch)
    per_day = (Order.site_id, day_of(Order.created_at, per_day_on)) if per_day_on else ()
    return (
        select(
            *per_day,
            *labels,
            Order.currency,
            func.sum(counted_orders()),
            func.sum(net_revenue()),
            func.sum(counted_refunds()),
        )
        .join(table, and_(Order.channel == channel, table.id == Order.conversation_id))
        .where(
            in_sites(Order.site_id, site_ids),
            Order.created_at >= period.since,
            Order.created_at < period.until,
        )
        .group_by(*per_day, *labels, Order.currency)
    )


async def conversations_by_source(
    session: AsyncSession, site_ids: Sequence[int], period: Period, touch: Touch = "last"
) -> dict[Key, int]:
    """Calls, chats and left messages begun in the period, per source, medium and campaign."""
    counts: dict[Key, int] = {}
    for table, _channel in CONVERSATIONS:
        rows = await session.execute(_counted(table, touch, site_ids, period))
        for source, medium, campaign, count in rows:
            key = _key(source, medium, campaign)
            counts[key] = counts.get(key, 0) + int(count)
    return counts


async def orders_by_source(
    session: AsyncSession, site_ids: Sequence[int], period: Period, touch: Touch = "last"
) -> dict[tuple[Key, str], list[Any]]:
    """Counted orders placed in the period, net revenue and refunds, per labels and currency."""
    totals: dict[tuple[Key, str], list[Any]] = {}
    for table, channel in CONVERSATIONS:
        rows = await session.execute(_sold(table, channel, touch, site_ids, period))
        for source, medium, campaign, currency, n, revenue, refunded in rows:
            sums = totals.setdefault((_key(source, medium, campaign), currency), [0, Decimal(0), Decimal(0)])
            sums[0] += int(n or 0)
            sums[1] += cents(revenue)
            sums[2] += cents(refunded)
    return totals


# ---- each past day's figures, kept (reports/kept_days.py); today and yesterday counted live ----


async def _count_days(
    session: AsyncSession, site_ids: Sequence[int], first: date, last: date
) -> list[dict[str, Any]]:
    """`source_day_figures` rows for these sites and days: both touches, conversations and orders."""
    dialect = session.get_bind().dialect.name
    period = Period(first, last)
    rows: dict[tuple[int, str, Touch, Key, str], list[int]] = {}

    def add(site_id: int, day: str, touch: Touch, key: Key, currency: str, figures: list[int]) -> None:
        sums = rows.setdefault((site_id, str(day)[:10], touch, key, currency), [0, 0, 0, 0])
        for i, value in enumerate(figures):
            sums[i] += value

    for touch in TOUCHES:
        for table, channel in CONVERSATIONS:
            counted = await session.execute(_counted(table, touch, site_ids, period, per_day_on=dialect))
            for site_id, on, source, medium, campaign, count in counted:
                add(site_id, on, touch, _key(source, medium, campaign), "", [int(count), 0, 0, 0])
            sold = await session.execute(_sold(table, channel, touch, site_ids, period, per_day_on=dialect))
            for site_id, on, source, medium, campaign, currency, n, revenue, refunded in sold:
                add(
                    site_id,
                    on,
                    touch,
                    _key(source, medium, campaign),
                    currency,
                    [0, int(n or 0), int(cents(revenue) * 100), int(cents(refunded) * 100)],
                )
    return [
        {
            "site_id": site_id,
            "day": day,
            "touch": touch,
            "source": key[0],
            "medium": key[1],
            "campaign": key[2],
            "currency": currency,
            "conversations": figures[0],
            "orders": figures[1],
            "revenue_cents": figures[2],
            "refunded_cents": figures[3],
        }
        for (site_id, day, touch, key, currency), figures in rows.items()
    ]


SOURCE_DAYS = KeptReport("sources", day_figures, _count_days)


async def _kept_figures(
    session: AsyncSession, site_ids: Sequence[int], first: date, last: date, touch: Touch
) -> tuple[Conversations, Sold]:
    await keep_days(session, SOURCE_DAYS, site_ids, first, last)
    c = day_figures.c
    rows = await session.execute(
        select(
            c.source,
            c.medium,
            c.campaign,
            c.currency,
            func.sum(c.conversations),
            func.sum(c.orders),
            func.sum(c.revenue_cents),
            func.sum(c.refunded_cents),
        )
        .where(
            c.site_id.in_(site_ids),
            c.day >= first.isoformat(),
            c.day <= last.isoformat(),
            c.touch == touch,
        )
        .group_by(c.source, c.medium, c.campaign, c.currency)
    )
    conversations: Conversations = {}
    sold: Sold = {}
    for source, medium, campaign, currency, count, n, revenue, refunded in rows:
        key = (source, medium, campaign)
        if currency == "":
            conversations[key] = conversations.get(key, 0) + int(count)
        else:
            sold[(key, currency)] = [int(n), Decimal(int(revenue)) / 100, Decimal(int(refunded)) / 100]
    return conversations, sold


async def source_figures(
    session: AsyncSession, site_ids: Sequence[int], period: Period, touch: Touch = "last", live: bool = False
) -> tuple[Conversations, Sold]:
    """Conversations and counted orders by labels for the period: past days kept, the last two live.

    `live`: count every day from the conversations and orders themselves (what the kept days must equal).
    """
    if live or not site_ids:
        return (
            await conversations_by_source(session, site_ids, period, touch),
            await orders_by_source(session, site_ids, period, touch),
        )
    kept_part, live_part = kept_range(period.start, period.end)
    conversations: Conversations = {}
    sold: Sold = {}
    parts: list[tuple[Conversations, Sold]] = []
    if kept_part:
        parts.append(await _kept_figures(session, site_ids, *kept_part, touch))
    if live_part:
        recent = Period(*live_part)
        parts.append(
            (
                await conversations_by_source(session, site_ids, recent, touch),
                await orders_by_source(session, site_ids, recent, touch),
            )
        )
    for counted, orders in parts:
        for key, count in counted.items():
            conversations[key] = conversations.get(key, 0) + count
        for sold_key, (n, revenue, refunded) in orders.items():
            sums = sold.setdefault(sold_key, [0, Decimal(0), Decimal(0)])
            sums[0] += n
            sums[1] += revenue
            sums[2] += refunded
    for sums in sold.values():
        sums[1], sums[2] = cents(sums[1]), cents(sums[2])
    return conversations, sold


async def source_report(
    session: AsyncSession,
    site_ids: Sequence[int],
    period: Period,
    touch: Touch = "last",
    live: bool = False,
) -> list[SourceRow]:
    """The Sources page: one row per source, medium, campaign and currency, the best sellers first."""
    conversations, orders = await source_figures(session, site_ids, period, touch, live)
    rows = [
        SourceRow(*key, conversations.get(key, 0), n, revenue, refunded, currency)
        for (key, currency), (n, revenue, refunded) in orders.items()
    ]
    sold = {key for key, _currency in orders}
    rows += [
        SourceRow(*key, count, 0, Decimal("0.00"), Decimal("0.00"), None)
        for key, count in conversations.items()
        if key not in sold
    ]
    return sorted(
        rows, key=lambda r: (-r.revenue, -r.conversations, r.source, r.medium, r.campaign, r.currency or "")
    )


# ---- the revenue report's `by=source` and `by=campaign` (orders/revenue.py's GROUPINGS) ----


def _grouping(part: int, live: bool = False) -> Grouping:
    """Cut by one of the labels: 0 the source, 2 the campaign (of the last touch)."""

    async def conversations(
        session: AsyncSession, site_ids: Sequence[int], period: Period
    ) -> dict[str | None, int]:
        counts: dict[str | None, int] = {}
        found, _sold = await source_figures(session, site_ids, period, live=live)
        for key, count in found.items():
            counts[key[part]] = counts.get(key[part], 0) + count
        return counts

    async def orders(session: AsyncSession, site_ids: Sequence[int], period: Period) -> list[OrderFigures]:
        merged: dict[tuple[str, str], list[Any]] = {}
        _found, sold = await source_figures(session, site_ids, period, live=live)
        for (key, currency), (n, revenue, refunded) in sold.items():
            sums = merged.setdefault((key[part], currency), [0, Decimal(0), Decimal(0)])
            sums[0] += n
            sums[1] += revenue
            sums[2] += refunded
        return [
            OrderFigures(label, currency, n, revenue, refunded)
            for (label, currency), (n, revenue, refunded) in merged.items()
        ]

    return Grouping(conversations, orders)


GROUPINGS: dict[str, Grouping] = {"source": _grouping(0), "campaign": _grouping(2)}
# The same counted from every conversation and order (what GROUPINGS must equal; tests, benchmarks).
LIVE_GROUPINGS: dict[str, Grouping] = {"source": _grouping(0, live=True), "campaign": _grouping(2, live=True)}
