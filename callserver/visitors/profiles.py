"""What the visitors' side needs of a site, cached: beacons come far too often to read the site each time."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select

from callserver.errors import UnknownSite
from callserver.hours import WorkingHours
from callserver.store.database import Database
from callserver.store.models import Site
from callserver.visitors.invitations import InviteRule, rules_of
from callserver.visitors.score import ScoreWeights


@dataclass(frozen=True)
class SiteProfile:
    id: int
    key: str
    name: str
    allowed_origins: frozenset[str]
    records_calls: bool
    weights: ScoreWeights
    rules: tuple[InviteRule, ...]
    hours: WorkingHours | None
    language: str | None
    texts: dict[str, dict[str, str]]

    @classmethod
    def of(cls, site: Site) -> SiteProfile:
        return cls(
            id=site.id,
            key=site.key,
            name=site.name,
            allowed_origins=frozenset(site.allowed_origins),
            records_calls=site.records_calls,
            weights=ScoreWeights.for_site(site.score_weights),
            rules=rules_of(site.invite_rules),
            hours=WorkingHours.of_site(site.hours),
            language=site.language,
            texts={k: dict(v) for k, v in (site.texts or {}).items() if isinstance(v, dict)},
        )


class SiteProfiles:
    """Sites by key and id, re-read after `ttl` seconds so the dashboard's changes apply within seconds."""

    def __init__(
        self, database: Database, ttl: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._database = database
        self._ttl = ttl
        self._clock = clock
        self._by_key: dict[str, tuple[float, SiteProfile | None]] = {}
        self._by_id: dict[int, SiteProfile] = {}

    async def by_key(self, key: str) -> SiteProfile:
        """The site with this public key; raises UnknownSite (remembered too, so junk keys stay cheap)."""
        cached = self._by_key.get(key)
        if cached is None or self._clock() - cached[0] > self._ttl:
            async with self._database.session() as session:
                site = await session.scalar(select(Site).where(Site.key == key))
                profile = SiteProfile.of(site) if site is not None else None
            if len(self._by_key) > 10_000:
                self._by_key.clear()
            cached = self._by_key[key] = (self._clock(), profile)
            if profile is not None:
                self._by_id[profile.id] = profile
        if cached[1] is None:
            raise UnknownSite(f"No site has the key {key!r}.")
        return cached[1]

    def by_id(self, site_id: int) -> SiteProfile | None:
        """A site already seen by key (every live visitor's site is)."""
        return self._by_id.get(site_id)

    def forget(self) -> None:
        """Drop the cache (after the dashboard saved a site in this process)."""
        self._by_key.clear()
