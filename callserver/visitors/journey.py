"""A visitor's journey through the shop: the page views the widget reports, and where they came from.

Page views arrive by the thousand (a beacon per page, a heartbeat every 20 s per open tab), so they are
kept live in memory (`board.py`) and written to the store in batches, once a second, rather than one
transaction per beacon. The same view can be reported twice (the widget re-reports its page when a
restarted server has forgotten it, `CB-Listen: again`), so a view is an upsert on
(site, visitor, view): the first report stands. A batch the database refuses is retried row by row so
one bad row never holds the others back; while the database is away the views wait, up to
`MAX_PENDING` of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import Float, Insert, Table, bindparam, case, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from callserver.background import stop_task
from callserver.store.database import Database
from callserver.store.models import PageView

log = logging.getLogger(__name__)
page_views = cast(Table, PageView.__table__)
# Views (and ended views) waiting for the store at most. A busy shop reports ~1,000 views a minute,
# each ~0.5-2 KB here: this rides out a database away for several minutes in under ~40 MB, and past
# it the oldest are dropped (counted in a warning) rather than let memory grow without end.
MAX_PENDING = 20_000

# The query parameter each search engine puts the shopper's words in.
SEARCH_PARAMS = {
    "google.": "q",
    "bing.": "q",
    "duckduckgo.": "q",
    "yandex.": "text",
    "yahoo.": "p",
    "ecosia.": "q",
    "baidu.": "wd",
    "seznam.": "q",
}


@dataclass(frozen=True)
class PageSeen:
    """What the widget tells about one page a visitor opened."""

    view_id: str
    page: str
    title: str | None = None
    referrer: str | None = None
    utm: dict[str, str] = field(default_factory=dict)
    search: str | None = None
    product_name: str | None = None
    product_price: float | None = None
    sku: str | None = None
    currency: str | None = None
    cart_value: float | None = None
    returning: bool = False


def search_in_referrer(referrer: str | None) -> str | None:
    """The words a shopper searched for, when they came from a search engine that still says so."""
    if not referrer:
        return None
    parts = urlsplit(referrer)
    host = (parts.hostname or "").lower()
    for engine, param in SEARCH_PARAMS.items():
        if engine in host:
            words = parse_qs(parts.query).get(param)
            if words and words[0].strip():
                return words[0].strip()[:200]
    return None


def source_of(referrer: str | None, utm: dict[str, str], page: str) -> str:
    """`utm_source`, else the referring site's host (not the shop itself), else `direct`."""
    if utm.get("source"):
        return utm["source"][:100]
    if referrer:
        host = (urlsplit(referrer).hostname or "").lower()
        own = (urlsplit(page).hostname or "").lower()
        if host and host != own:
            return host.removeprefix("www.")
    return "direct"


class PageViewLog:
    """Writes page views (and, when they end, the seconds spent on them) to the store in batches."""

    def __init__(self, database: Database, interval: float = 1.0, max_pending: int = MAX_PENDING) -> None:
        self._database = database
        self._interval = interval
        self._max_pending = max_pending
        self._new: deque[dict[str, object]] = deque()
        self._ended: dict[tuple[int, str, str], float] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._away = False  # the database failed the last flush (logged once per outage)
        self.dropped = 0  # views dropped since the start: the buffer was full, or the store refused them

    @property
    def pending(self) -> int:
        return len(self._new) + len(self._ended)

    def viewed(self, site_id: int, token: str, seen: PageSeen, at: datetime) -> None:
        self._new.append(
            {
                "site_id": site_id,
                "visitor_token": token,
                "view_id": seen.view_id,
                "at": at,
                "page": seen.page,
                "title": seen.title,
                "referrer": seen.referrer,
                "utm": seen.utm or None,
                "search": seen.search,
                "product_price": seen.product_price,
                "currency": seen.currency,
                "sku": seen.sku,
                "cart_value": seen.cart_value,
                "seconds": 0.0,
            }
        )
        self._bound()

    def ended(self, site_id: int, token: str, view_id: str, seconds: float) -> None:
        self._ended[(site_id, token, view_id)] = seconds
        self._bound()

    def _bound(self) -> None:
        over = self.pending - self._max_pending
        if over <= 0:
            return
        dropped = 0
        while over > 0 and self._new:
            self._new.popleft()
            over, dropped = over - 1, dropped + 1
        for key in list(self._ended)[:over]:  # dicts keep insertion order: the oldest first
            del self._ended[key]
            dropped += 1
        self.dropped += dropped
        if self.dropped == dropped or self.dropped % 1000 < dropped:  # the first, then every 1,000
            log.warning(
                "page views waiting for the database passed %d: dropped the oldest (%d dropped so far)",
                self._max_pending,
                self.dropped,
            )

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> None:
        """Write what has gathered since the last flush: one transaction, else row by row.

        Never raises for the store's sake: while the database is away the rows wait for the next
        flush (bounded), and a row the database refuses on its own is dropped and logged.
        """
        new, self._new = list(self._new), deque()
        ended, self._ended = self._ended, {}
        if not new and not ended:
            return
        try:
            async with self._database.session() as session:
                await _write(session, new, ended)
        except Exception as e:
            if _database_away(e):
                self._keep(new, ended, e)
                return
            if not await self._row_by_row(new, ended):
                return
        if self._away:
            self._away = False
            log.warning("page views are written again")

    async def _row_by_row(
        self, new: list[dict[str, object]], ended: dict[tuple[int, str, str], float]
    ) -> bool:
        """Write each row in a transaction of its own; False when the database went away meanwhile."""
        rows: list[tuple[list[dict[str, object]], dict[tuple[int, str, str], float]]] = [
            ([row], {}) for row in new
        ]
        rows += [([], {key: seconds}) for key, seconds in ended.items()]
        for i, (one_new, one_ended) in enumerate(rows):
            try:
                async with self._database.session() as session:
                    await _write(session, one_new, one_ended)
            except Exception as e:
                if _database_away(e):  # gone meanwhile: keep this row and the rest for later
                    rest = rows[i:]
                    self._keep(
                        [r for n, _ in rest for r in n], {k: v for _, d in rest for k, v in d.items()}, e
                    )
                    return False
                self.dropped += 1
                site_id, _token, view_id = (
                    (one_new[0]["site_id"], None, one_new[0]["view_id"]) if one_new else next(iter(one_ended))
                )
                log.warning(
                    "dropped a page view the database refuses (site %s, view %s): %s",
                    site_id,
                    view_id,
                    _reason(e),
                )
        return True

    def _keep(
        self, new: list[dict[str, object]], ended: dict[tuple[int, str, str], float], error: Exception
    ) -> None:
        """Put rows back in front of what came meanwhile, for the next flush."""
        self._new.extendleft(reversed(new))
        self._ended = {**ended, **self._ended}
        self._bound()
        if not self._away:
            self._away = True
            log.warning(
                "page views can't be written (%s); %d wait for the database", _reason(error), self.pending
            )

    async def close(self) -> None:
        """Stop the writer and write what is left; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            await stop_task(self._task)
        await self.flush()
        if self.pending:
            log.warning("%d page views could not be written before the server stopped", self.pending)


async def _write(
    session: AsyncSession, new: list[dict[str, object]], ended: dict[tuple[int, str, str], float]
) -> None:
    if new:
        await session.execute(_insert_views(session), new)
    if ended:
        seconds = bindparam("b_seconds", type_=Float)
        statement = (
            update(PageView)
            .where(
                PageView.site_id == bindparam("b_site"),
                PageView.visitor_token == bindparam("b_token"),
                PageView.view_id == bindparam("b_view"),
            )
            # The longest time reported wins: a page's time only grows, and the node that sees the
            # visitor's next page may know less of it than the one that took the last heartbeat.
            .values(seconds=case((PageView.seconds < seconds, seconds), else_=PageView.seconds))
        )
        rows = [
            {"b_site": s, "b_token": t, "b_view": v, "b_seconds": sec} for (s, t, v), sec in ended.items()
        ]
        connection = await session.connection()
        await connection.execute(statement, rows)


def _insert_views(session: AsyncSession) -> Insert:
    """INSERT … ON CONFLICT DO NOTHING: a view reported again (after a restart, a retried beacon) is
    already stored, and the first report stands."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        return sqlite.insert(page_views).on_conflict_do_nothing()
    if dialect == "postgresql":
        return postgresql.insert(page_views).on_conflict_do_nothing()
    return page_views.insert()  # pragma: no cover - callserver runs on SQLite or PostgreSQL


def _database_away(error: Exception) -> bool:
    """Whether the database itself failed (down, unreachable, locked), rather than refused a row."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, (OperationalError, InterfaceError, OSError, TimeoutError))


def _reason(error: Exception) -> str:
    original = getattr(error, "orig", None)
    return f"{type(original or error).__name__}: {str(original or error).splitlines()[0][:200]}"
