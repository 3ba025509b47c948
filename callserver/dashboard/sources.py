"""Where conversations come from (`/dashboard/sources`, `dash-sources`): conversations, attributed
orders and net revenue by the source, medium and campaign of the visitor's last touch before the
conversation (or, with `touch=first`, of their first), for a period; the same as CSV."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from callserver.dashboard.exports import Rows, csv_export
from callserver.dashboard.filters import OVERVIEW_DAYS, date_range
from callserver.dashboard.page import render, signed_in_owner
from callserver.errors import InvalidInput
from callserver.orders.revenue import Period
from callserver.reports.sources import TOUCHES, Touch, source_report
from callserver.web.keys import DATABASE

COLUMNS = ["source", "medium", "campaign", "conversations", "orders", "revenue", "refunded", "currency"]


def touch_of(query: Mapping[str, str]) -> Touch:
    """`touch=last` (the default: the touch before the conversation) or `touch=first`."""
    touch = query.get("touch") or "last"
    if touch == "first":
        return "first"
    if touch != "last":
        raise InvalidInput(f"touch: last or first, not {touch[:40]!r}.")
    return "last"


async def sources_page(request: web.Request) -> web.StreamResponse:
    owner = await signed_in_owner(request)
    start, end = date_range(request.query)
    touch = touch_of(request.query)
    async with request.app[DATABASE].session() as session:
        rows = await source_report(session, owner.site_ids, Period(start, end), touch)
    return render(
        request,
        owner,
        "sources.html",
        title="Sources",
        rows=rows,
        start=start,
        end=end,
        touch=touch,
        touches=TOUCHES,
    )


def _rows(touch: Touch) -> Rows:
    async def rows(
        session: AsyncSession, site_ids: Sequence[int], start: datetime | None, end: datetime | None
    ) -> AsyncIterator[list[str]]:
        yield COLUMNS
        # The export's [start, end) as whole days; without them, the page's default period.
        last = (end - timedelta(days=1)).date() if end else datetime.now(UTC).date()
        first = start.date() if start else last - timedelta(days=OVERVIEW_DAYS - 1)
        for row in await source_report(session, site_ids, Period(first, last), touch):
            yield [
                row.source,
                row.medium,
                row.campaign,
                str(row.conversations),
                str(row.orders),
                f"{row.revenue:.2f}",
                f"{row.refunded:.2f}",
                row.currency or "",
            ]

    return rows


async def sources_csv(request: web.Request) -> web.StreamResponse:
    """`/dashboard/export/sources.csv?from&to&touch=`: the page's rows, spreadsheet-safe."""
    return await csv_export("sources", _rows(touch_of(request.query)))(request)
