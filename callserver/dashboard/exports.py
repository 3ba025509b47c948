"""CSV exports (`/dashboard/export/*.csv`), streamed, with cells a spreadsheet would run neutralised."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from callserver.dashboard.filters import time_range
from callserver.dashboard.page import signed_in_owner
from callserver.web.errors import Handler
from callserver.web.keys import DATABASE

Rows = Callable[[AsyncSession, Sequence[int], datetime | None, datetime | None], AsyncIterator[list[str]]]
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

    async def export(request: web.Request) -> web.StreamResponse:
        owner = await signed_in_owner(request)
        start, end = time_range(request.query)
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
