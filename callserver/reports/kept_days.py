"""Past days' report figures, counted once and kept until something on that day changes.

The Sources page, the revenue report by source or campaign and the overview's CSAT add up every
conversation of the period (~90,000 a month for a busy shop); each past day's sums are kept instead
(`source_day_figures`, `csat_day_figures`) and only today and yesterday are counted live.

A kept day must never be stale: a refund or a cancellation weeks later, a rating given the next
morning, a conversation imported into an old day all change it. Database triggers
(migration 0009_revenue_figures) count every write to a past day's conversations, orders and ratings
in `report_day_changes.generation`; a day's figures are kept with the generation they were counted
at (`report_days`) and are counted again once it moved on. The generation is read *before* the day
is counted, so a write that commits while it is being counted leaves a newer generation behind: the
day is counted again next time, never kept stale.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, delete, func, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from callserver.store.models import ReportDay, ReportDayChange

changes = cast(Table, ReportDayChange.__table__)
kept = cast(Table, ReportDay.__table__)
SiteDay = tuple[int, str]  # site id, YYYY-MM-DD
# Counts a report's rows ({"site_id", "day", and the table's other columns}) for sites and days first..last.
DayCounter = Callable[[AsyncSession, Sequence[int], date, date], Awaitable[list[dict[str, Any]]]]
LIVE_DAYS = 2  # today and yesterday: counted on every visit (a clock a little off the database's is fine)


@dataclass(frozen=True)
class KeptReport:
    """A report whose past days are kept: its name in `report_days`, its table, how a day is counted."""

    name: str
    table: Table
    count: DayCounter


def day_of(column: Any, dialect: str) -> ColumnElement[str]:
    """A UTC timestamp column's day as YYYY-MM-DD (what the triggers write)."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    return func.date(column)


def last_kept_day(today: date | None = None) -> date:
    """The newest day whose figures are kept; later days are counted live."""
    return (today or datetime.now(UTC).date()) - timedelta(days=LIVE_DAYS)


async def keep_days(
    session: AsyncSession, report: KeptReport, site_ids: Sequence[int], start: date, end: date
) -> None:
    """Make `report.table` hold current figures for every site and day of start..end (all past days)."""
    if not site_ids or start > end:
        return
    first, last = start.isoformat(), end.isoformat()
    generation: dict[SiteDay, int] = {
        (row.site_id, row.day): row.generation
        for row in await session.execute(
            select(changes).where(
                changes.c.site_id.in_(site_ids), changes.c.day >= first, changes.c.day <= last
            )
        )
    }
    have: dict[SiteDay, int] = {
        (row.site_id, row.day): row.generation
        for row in await session.execute(
            select(kept.c.site_id, kept.c.day, kept.c.generation).where(
                kept.c.report == report.name,
                kept.c.site_id.in_(site_ids),
                kept.c.day >= first,
                kept.c.day <= last,
            )
        )
    }
    days = [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
    stale = sorted(
        (site_id, day)
        for site_id in site_ids
        for day in days
        if have.get((site_id, day)) != generation.get((site_id, day), 0)
    )
    if not stale:
        return
    stale_set = set(stale)
    counted = await report.count(
        session,
        sorted({site_id for site_id, _day in stale}),
        date.fromisoformat(min(day for _s, day in stale)),
        date.fromisoformat(max(day for _s, day in stale)),
    )
    fresh = [row for row in counted if (row["site_id"], row["day"]) in stale_set]
    for chunk in _chunks(stale, 400):
        await session.execute(
            delete(report.table).where(tuple_(report.table.c.site_id, report.table.c.day).in_(chunk))
        )
        await session.execute(
            delete(kept).where(kept.c.report == report.name, tuple_(kept.c.site_id, kept.c.day).in_(chunk))
        )
    if fresh:
        await _insert(session, report.table, fresh)
    await _insert(
        session,
        kept,
        [
            {
                "report": report.name,
                "site_id": site_id,
                "day": day,
                "generation": generation.get((site_id, day), 0),
            }
            for site_id, day in stale
        ],
    )


def kept_range(
    start: date, end: date, today: date | None = None
) -> tuple[tuple[date, date] | None, tuple[date, date] | None]:
    """Split start..end into the kept days and the live ones (either may be None)."""
    settled = last_kept_day(today)
    kept_part = (start, min(end, settled)) if start <= min(end, settled) else None
    live_start = max(start, settled + timedelta(days=1))
    live_part = (live_start, end) if live_start <= end else None
    return kept_part, live_part


def _chunks(items: list[SiteDay], size: int) -> list[list[SiteDay]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


async def _insert(session: AsyncSession, table: Table, rows: list[dict[str, Any]]) -> None:
    # Two owners counting the same day at once: the second one's rows are the same, and are dropped.
    dialect = session.get_bind().dialect.name
    for i in range(0, len(rows), 500):
        chunk = rows[i : i + 500]
        if dialect == "sqlite":
            await session.execute(sqlite.insert(table).on_conflict_do_nothing(), chunk)
        elif dialect == "postgresql":
            await session.execute(postgresql.insert(table).on_conflict_do_nothing(), chunk)
        else:  # pragma: no cover - callserver runs on SQLite or PostgreSQL
            await session.execute(table.insert(), chunk)
