"""The overview's CSAT counts: conversations worth a rating, ratings and their sum per site and operator.

An answered call or a chat an operator closed is worth asking; its rating (`conversation_outcomes`)
counts on the day the conversation began. Past days are kept in `csat_day_figures` and counted again
when one of their conversations or ratings changes (reports/kept_days.py); today and yesterday are
counted live. Adding up ~60,000 answered calls a month and their ratings on every visit was most of
the overview's time on 1,000,000 calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from callserver.orders.revenue import in_sites
from callserver.reports.kept_days import KeptReport, day_of, keep_days, kept_range
from callserver.store.models import Call, Chat, ConversationOutcome, CsatDayFigures

day_figures = cast(Table, CsatDayFigures.__table__)
NO_OPERATOR = 0  # how `csat_day_figures` writes a conversation without one (its operator was deleted)
CsatCount = tuple[int, int | None, int, int, int]  # site, operator (None: none), asked, rated, score sum


def _worth_asking() -> tuple[tuple[Any, str, ColumnElement[bool]], ...]:
    return (
        (Call, "call", Call.answered_at.is_not(None)),
        (Chat, "chat", and_(Chat.operator_id.is_not(None), Chat.state == "closed")),
    )


async def _counted(
    session: AsyncSession, site_ids: Sequence[int], since: datetime, until: datetime, by_day: bool
) -> list[tuple[Any, ...]]:
    """(channel, site, operator, [day,] asked, rated, score sum) for conversations begun in [since, until)."""
    dialect = session.get_bind().dialect.name
    found: list[tuple[Any, ...]] = []
    for table, channel, condition in _worth_asking():
        groups: list[Any] = [table.site_id, table.operator_id]
        if by_day:
            groups.append(day_of(table.created_at, dialect))
        rows = await session.execute(
            select(
                *groups,
                func.count(),
                func.count(ConversationOutcome.csat_score),
                func.coalesce(func.sum(ConversationOutcome.csat_score), 0),
            )
            .outerjoin(ConversationOutcome, ConversationOutcome.conversation_id == table.id)
            .where(
                in_sites(table.site_id, site_ids),
                table.created_at >= since,
                table.created_at < until,
                condition,
            )
            .group_by(*groups)
        )
        found += [(channel, *row) for row in rows]
    return found


def _count(row: tuple[Any, ...]) -> CsatCount:
    _channel, site_id, operator_id, asked, rated, score_sum = row
    return (site_id, operator_id, int(asked), int(rated), int(score_sum))


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


async def _count_days(
    session: AsyncSession, site_ids: Sequence[int], first: date, last: date
) -> list[dict[str, Any]]:
    rows = await _counted(session, site_ids, _midnight(first), _midnight(last + timedelta(days=1)), True)
    return [
        {
            "site_id": site_id,
            "day": str(day)[:10],
            "channel": channel,
            "operator_id": operator_id if operator_id is not None else NO_OPERATOR,
            "asked": int(asked),
            "rated": int(rated),
            "score_sum": int(score_sum),
        }
        for channel, site_id, operator_id, day, asked, rated, score_sum in rows
    ]


CSAT_DAYS = KeptReport("csat", day_figures, _count_days)


async def csat_counts(
    session: AsyncSession, site_ids: Sequence[int], since: datetime, until: datetime, live: bool = False
) -> list[CsatCount]:
    """What to add up for the overview's CSAT: past whole days kept, the rest counted live.

    `live`: count it all from the conversations and ratings (what the kept days must equal).
    """
    if not site_ids:
        return []
    whole_days = since == _midnight(since.date()) and until == _midnight(until.date()) and since < until
    if live or not whole_days:
        return [_count(row) for row in await _counted(session, site_ids, since, until, False)]
    kept_part, live_part = kept_range(since.date(), until.date() - timedelta(days=1))
    counts: list[CsatCount] = []
    if kept_part:
        first, last = kept_part
        await keep_days(session, CSAT_DAYS, site_ids, first, last)
        c = day_figures.c
        rows = await session.execute(
            select(c.site_id, c.operator_id, func.sum(c.asked), func.sum(c.rated), func.sum(c.score_sum))
            .where(c.site_id.in_(site_ids), c.day >= first.isoformat(), c.day <= last.isoformat())
            .group_by(c.site_id, c.operator_id)
        )
        counts += [
            (site_id, operator_id if operator_id != NO_OPERATOR else None, int(a), int(r), int(s))
            for site_id, operator_id, a, r, s in rows
        ]
    if live_part:
        first, last = live_part
        recent = await _counted(
            session, site_ids, _midnight(first), _midnight(last + timedelta(days=1)), False
        )
        counts += [_count(row) for row in recent]
    return counts
