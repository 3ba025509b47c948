"""Call figures per site and day for the overview, with the days that are over computed only once.

A busy shop has ~80,000 calls in a month; adding their waits and talk times up on every visit of
the overview costs ~100 ms on SQLite. A day's calls have all ended a day after it is over, so its
figures are kept in `dashboard_call_days` the first time they are asked for; today and yesterday
are always counted live. Delete rows from that table to have days counted again (after an import).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, case, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from callserver.calls.states import EndReason
from callserver.store.models import Call, CallDayFigures

day_figures = cast(Table, CallDayFigures.__table__)
FIGURES = ("calls", "answered", "missed", "abandoned", "wait_seconds", "talk_seconds")


@dataclass
class CallDay:
    calls: int = 0
    answered: int = 0
    missed: int = 0
    abandoned: int = 0
    wait_seconds: float = 0.0
    talk_seconds: float = 0.0

    def add(self, other: CallDay) -> None:
        for name in FIGURES:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def _seconds(later: Any, earlier: Any, dialect: str) -> Any:
    if dialect == "sqlite":
        return (func.julianday(later) - func.julianday(earlier)) * 86400.0
    return func.extract("epoch", later - earlier)


async def _count(
    session: AsyncSession, site_ids: Sequence[int], start: date, end: date
) -> dict[tuple[int, date], CallDay]:
    """Figures per (site, day) for start..end, straight from the calls."""
    dialect = session.get_bind().dialect.name
    since = datetime(start.year, start.month, start.day, tzinfo=UTC)
    until = datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1)
    answered = Call.answered_at.is_not(None)
    day = func.date(Call.created_at)
    rows = await session.execute(
        select(
            Call.site_id,
            day,
            func.count(),
            func.sum(case((answered, 1), else_=0)),
            func.sum(case((Call.end_reason == EndReason.MISSED, 1), else_=0)),
            func.sum(case((Call.end_reason == EndReason.ABANDONED, 1), else_=0)),
            func.sum(case((answered, _seconds(Call.answered_at, Call.created_at, dialect)))),
            func.sum(
                case(
                    (
                        and_(answered, Call.ended_at.is_not(None)),
                        _seconds(Call.ended_at, Call.answered_at, dialect),
                    )
                )
            ),
        )
        .where(Call.site_id.in_(site_ids), Call.created_at >= since, Call.created_at < until)
        .group_by(Call.site_id, day)
    )
    result: dict[tuple[int, date], CallDay] = {}
    for site_id, day_value, calls, answered_count, missed, abandoned, wait, talk in rows:
        result[(site_id, date.fromisoformat(str(day_value)[:10]))] = CallDay(
            int(calls),
            int(answered_count or 0),
            int(missed or 0),
            int(abandoned or 0),
            float(wait or 0),
            float(talk or 0),
        )
    return result


async def call_days(
    session: AsyncSession, site_ids: Sequence[int], start: date, end: date, today: date | None = None
) -> dict[date, CallDay]:
    """Call figures per day (all these sites together) for start..end."""
    if not site_ids:
        return {}
    today = today or datetime.now(UTC).date()
    settled_until = today - timedelta(days=2)  # the last day whose calls have surely ended
    totals: dict[date, CallDay] = {}

    def add(day: date, figures: CallDay) -> None:
        totals.setdefault(day, CallDay()).add(figures)

    settled_end = min(end, settled_until)
    if start <= settled_end:
        cached = await session.execute(
            select(day_figures).where(
                day_figures.c.site_id.in_(site_ids),
                day_figures.c.day >= start.isoformat(),
                day_figures.c.day <= settled_end.isoformat(),
            )
        )
        have: set[tuple[int, date]] = set()
        for stored in cached:
            day = date.fromisoformat(stored.day)
            have.add((stored.site_id, day))
            add(day, CallDay(*(getattr(stored, name) for name in FIGURES)))
        wanted = {
            (site_id, start + timedelta(days=i))
            for site_id in site_ids
            for i in range((settled_end - start).days + 1)
        }
        missing = wanted - have
        if missing:
            first, last = min(d for _s, d in missing), max(d for _s, d in missing)
            counted = await _count(session, sorted({s for s, _d in missing}), first, last)
            fresh = [
                {"site_id": site_id, "day": day.isoformat(), **vars(counted.get((site_id, day), CallDay()))}
                for site_id, day in sorted(missing)
            ]
            for row in fresh:
                add(date.fromisoformat(row["day"]), CallDay(*(row[name] for name in FIGURES)))
            await _store(session, fresh)
    live_start = max(start, settled_until + timedelta(days=1))
    if live_start <= end:
        for (_site_id, day), figures in (await _count(session, site_ids, live_start, end)).items():
            add(day, figures)
    return totals


async def _store(session: AsyncSession, rows: list[dict[str, object]]) -> None:
    # Two owners opening the overview at once compute the same days: the second insert is a no-op.
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        await session.execute(sqlite.insert(day_figures).on_conflict_do_nothing(), rows)
    elif dialect == "postgresql":
        await session.execute(postgresql.insert(day_figures).on_conflict_do_nothing(), rows)
    else:  # pragma: no cover - callserver runs on SQLite or PostgreSQL
        await session.execute(day_figures.insert(), rows)
