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
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import and_, func, select
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
from callserver.store.models import Call, Chat, ConversationTable, LeftMessage, Order

Touch = Literal["last", "first"]
TOUCHES: tuple[Touch, ...] = ("last", "first")
CONVERSATIONS: tuple[tuple[ConversationTable, str], ...] = (
    (Call, "call"),
    (Chat, "chat"),
    (LeftMessage, "message"),
)
Key = tuple[str, str, str]  # source, medium, campaign


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


async def conversations_by_source(
    session: AsyncSession, site_ids: Sequence[int], period: Period, touch: Touch = "last"
) -> dict[Key, int]:
    """Calls, chats and left messages begun in the period, per source, medium and campaign."""
    counts: dict[Key, int] = {}
    for table, _channel in CONVERSATIONS:
        labels = _labels(table, touch)
        rows = await session.execute(
            select(*labels, func.count())
            .where(
                in_sites(table.site_id, site_ids),
                table.created_at >= period.since,
                table.created_at < period.until,
            )
            .group_by(*labels)
        )
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
        labels = _labels(table, touch)
        rows = await session.execute(
            select(
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
            .group_by(*labels, Order.currency)
        )
        for source, medium, campaign, currency, n, revenue, refunded in rows:
            sums = totals.setdefault((_key(source, medium, campaign), currency), [0, Decimal(0), Decimal(0)])
            sums[0] += int(n or 0)
            sums[1] += cents(revenue)
            sums[2] += cents(refunded)
    return totals


async def source_report(
    session: AsyncSession, site_ids: Sequence[int], period: Period, touch: Touch = "last"
) -> list[SourceRow]:
    """The Sources page: one row per source, medium, campaign and currency, the best sellers first."""
    conversations = await conversations_by_source(session, site_ids, period, touch)
    orders = await orders_by_source(session, site_ids, period, touch)
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
    return sorted(rows, key=lambda r: (-r.revenue, -r.conversations, r.source, r.medium, r.campaign))


# ---- the revenue report's `by=source` and `by=campaign` (orders/revenue.py's GROUPINGS) ----


def _grouping(part: int) -> Grouping:
    """Cut by one of the labels: 0 the source, 2 the campaign (of the last touch)."""

    async def conversations(
        session: AsyncSession, site_ids: Sequence[int], period: Period
    ) -> dict[str | None, int]:
        counts: dict[str | None, int] = {}
        for key, count in (await conversations_by_source(session, site_ids, period)).items():
            counts[key[part]] = counts.get(key[part], 0) + count
        return counts

    async def orders(session: AsyncSession, site_ids: Sequence[int], period: Period) -> list[OrderFigures]:
        merged: dict[tuple[str, str], list[Any]] = {}
        for (key, currency), (n, revenue, refunded) in (
            await orders_by_source(session, site_ids, period)
        ).items():
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
