"""The sites of this process, cached: beacons and sockets come far too often to read the site each time."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import select

from callserver.errors import UnknownSite
from callserver.sites.site import Site
from callserver.store import models
from callserver.store.database import Database

MAX_KEYS = 10_000  # keys remembered (junk keys included) before the cache starts afresh


class SiteDirectory:
    """Sites by key and id, re-read after `ttl` seconds so the dashboard's changes apply within seconds."""

    def __init__(
        self, database: Database, ttl: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._database = database
        self._ttl = ttl
        self._clock = clock
        self._by_key: dict[str, tuple[float, Site | None]] = {}
        self._by_id: dict[int, Site] = {}

    async def by_key(self, key: str, fresh: bool = False) -> Site:
        """The site with this public key; raises UnknownSite (remembered too, so junk keys stay cheap).

        `fresh` reads the row now (and refreshes the cache): a socket, opened once per page, sees the
        settings saved a moment ago; beacons and configuration, many per page, take the cached site.
        """
        cached = self._by_key.get(key)
        if fresh or cached is None or self._clock() - cached[0] > self._ttl:
            async with self._database.session() as session:
                row = await session.scalar(select(models.Site).where(models.Site.key == key))
                site = Site.of(row) if row is not None else None
            if len(self._by_key) > MAX_KEYS:
                self._by_key.clear()
            cached = self._by_key[key] = (self._clock(), site)
            if site is not None:
                self._by_id[site.id] = site
        if cached[1] is None:
            raise UnknownSite(f"No site has the key {key!r}.")
        return cached[1]

    def by_id(self, site_id: int) -> Site | None:
        """A site already seen by key (every live visitor's site is)."""
        return self._by_id.get(site_id)

    def forget(self) -> None:
        """Drop the cache (after the dashboard saved a site in this process)."""
        self._by_key.clear()
