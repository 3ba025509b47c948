"""CSV exports (`/dashboard/export/*.csv`), streamed, with cells a spreadsheet would run neutralised."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from callserver.dashboard.filters import tag, time_range
from callserver.dashboard.page import signed_in_owner
from callserver.web.errors import Handler
from callserver.web.keys import DATABASE

Rows = Callable[[AsyncSession, Sequence[int], datetime | None, datetime | None], AsyncIterator[list[str]]]


class TaggedRows(Protocol):
    """Rows of an export that the log's tag filter narrows (calls, orders)."""

    def __call__(
        self,
        session: AsyncSession,
        site_ids: Sequence[int],
        start: datetime | None,
        end: datetime | None,
        tag: str | None = None,
    ) -> AsyncIterator[list[str]]: ...


# Spreadsheets run a cell that starts with one of these as a formula, TAB and CR (and LF) included
# because some of them skip those before looking (OWASP, "CSV Injection"); so is a formula behind
# leading blanks, which some spreadsheets trim away.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


def spreadsheet_safe(cell: str) -> str:
    """The cell with a leading `'` when a spreadsheet would take it for a formula (CSV injection)."""
    risky = cell.startswith(FORMULA_STARTS) or cell.lstrip().startswith(FORMULA_STARTS[:4])
    return "'" + cell if risky else cell


def csv_export(name: str, rows: Rows) -> Handler:
    """A view streaming `rows` of the owner's sites between `from` and `to` as `NAME-YYYYMMDD.csv`."""
    return _export(name, lambda query: rows)


def tagged_csv_export(name: str, rows: TaggedRows) -> Handler:
    """As `csv_export`, narrowed to the conversations tagged `tag` when the link carries one."""

    def narrowed(query: Mapping[str, str]) -> Rows:
        wanted = tag(query)
        return lambda session, site_ids, start, end: rows(session, site_ids, start, end, wanted)

    return _export(name, narrowed)


def _export(name: str, rows_for: Callable[[Mapping[str, str]], Rows]) -> Handler:
    async def export(request: web.Request) -> web.StreamResponse:
        owner = await signed_in_owner(request)
        start, end = time_range(request.query)
        rows = rows_for(request.query)  # before the response starts: a bad filter is still a 400 page
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/csv; charset=utf-8",
                "Content-Disposition": f'attachment; filename="{name}-{datetime.now(UTC):%Y%m%d}.csv"',
                "Cache-Control": "no-store",
            }
        )
        await response.prepare(request)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        async with request.app[DATABASE].session() as session:
            count = 0
            async for row in rows(session, owner.site_ids, start, end):
                writer.writerow([spreadsheet_safe(v) for v in row])
                count += 1
                if count % 500 == 0:
                    await response.write(buffer.getvalue().encode())
                    buffer.seek(0)
                    buffer.truncate()
        await response.write(buffer.getvalue().encode())
        await response.write_eof()
        return response

    return export
