"""A visitor's journey through the shop: the page views the widget reports, and where they came from.

Page views arrive by the thousand (a beacon per page, a heartbeat every 20 s per open tab), so they are
kept live in memory (`board.py`) and written to the store in batches, once a second, rather than one
transaction per beacon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import bindparam, insert, update

from callserver.store.database import Database
from callserver.store.models import PageView

log = logging.getLogger(__name__)

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

    def __init__(self, database: Database, interval: float = 1.0) -> None:
        self._database = database
        self._interval = interval
        self._new: list[dict[str, object]] = []
        self._ended: dict[tuple[int, str, str], float] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False

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

    def ended(self, site_id: int, token: str, view_id: str, seconds: float) -> None:
        self._ended[(site_id, token, view_id)] = seconds

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Exception:
                log.exception("page views could not be written; retrying in %.0f s", self._interval)

    async def flush(self) -> None:
        """Write what has gathered since the last flush, in one transaction."""
        new, self._new = self._new, []
        ended, self._ended = self._ended, {}
        if not new and not ended:
            return
        try:
            async with self._database.session() as session:
                if new:
                    await session.execute(insert(PageView), new)
                if ended:
                    statement = (
                        update(PageView)
                        .where(
                            PageView.site_id == bindparam("b_site"),
                            PageView.visitor_token == bindparam("b_token"),
                            PageView.view_id == bindparam("b_view"),
                        )
                        .values(seconds=bindparam("b_seconds"))
                    )
                    rows = [
                        {"b_site": s, "b_token": t, "b_view": v, "b_seconds": sec}
                        for (s, t, v), sec in ended.items()
                    ]
                    connection = await session.connection()
                    await connection.execute(statement, rows)
        except Exception:
            # Keep them for the next try rather than lose a shop's journeys to a busy database.
            self._new = new + self._new
            self._ended = {**ended, **self._ended}
            raise

    async def close(self) -> None:
        """Stop the writer and write what is left; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
