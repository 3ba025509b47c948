"""One site as the live server sees it: a frozen value built from the stored row in one place.

Every reader (the widget's socket and configuration, beacons, invitations, ringing, the chat desk)
gets this one shape from the directory (`callserver/sites/directory.py`), never the ORM row.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from urllib.parse import urlsplit

from callserver.errors import InvalidInput, OriginNotAllowed
from callserver.hours import ShopClosed, WorkingHours
from callserver.sites.rules import InviteRule, ScoreWeights, rules_of
from callserver.store import models

# What a widget may call itself: it chooses its own token, so anything else is replaced by a fresh one.
VISITOR_TOKEN = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


def is_visitor_token(value: str) -> bool:
    """Whether `value` looks like a token the widget makes (8–64 URL-safe characters)."""
    return VISITOR_TOKEN.match(value) is not None


class RingStrategy(StrEnum):
    LONGEST_IDLE = "longest_idle"
    ROUND_ROBIN = "round_robin"
    RING_ALL = "ring_all"


def normalize_origin(value: str) -> str:
    """`https://Shop.example:443/path` → `https://shop.example`; raises InvalidInput when it is no origin."""
    parts = urlsplit(value.strip())
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise InvalidInput(f"Not an origin (expected http(s)://host[:port]): {value!r}")
    default_port = {"http": 80, "https": 443}[parts.scheme]
    try:
        port = parts.port
    except ValueError as e:
        raise InvalidInput(f"Not an origin (bad port): {value!r}") from e
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default_port else "")


@dataclass(frozen=True)
class Site:
    """A shop: where its widget may run, how its calls ring, when it is open, what its widget says."""

    id: int
    key: str
    name: str
    origins: frozenset[str]
    strategy: RingStrategy = RingStrategy.LONGEST_IDLE
    ring_timeout: float | None = None  # None: the server's default (settings.ring_timeout)
    hours: WorkingHours | None = None  # None: always open
    rules: tuple[InviteRule, ...] = ()
    weights: ScoreWeights = field(default_factory=ScoreWeights)
    language: str | None = None  # None: the page's language
    texts: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: MappingProxyType({})
    )  # owner's changes, per language
    notify_email: str | None = None
    records_calls: bool = False
    callbacks: bool = True  # the widget offers "call me back" when nobody can answer

    @classmethod
    def of(cls, row: models.Site) -> Site:
        """The live shape of a stored site (the one place that reads the row's columns)."""
        return cls(
            id=row.id,
            key=row.key,
            name=row.name,
            origins=frozenset(row.allowed_origins or ()),
            strategy=RingStrategy(row.ring_strategy),
            ring_timeout=row.ring_timeout or None,
            hours=WorkingHours.of_site(row.hours),
            rules=rules_of(row.invite_rules),
            weights=ScoreWeights.for_site(row.score_weights),
            language=row.language,
            texts=MappingProxyType(
                {k: MappingProxyType(dict(v)) for k, v in (row.texts or {}).items() if isinstance(v, dict)}
            ),
            notify_email=row.notify_email,
            records_calls=bool(row.records_calls),
            callbacks=row.callbacks is not False,
        )

    def is_open(self, now: datetime | None = None) -> bool:
        """Whether the shop is within its working hours (a site without hours is always open)."""
        return self.hours is None or self.hours.is_open(now or datetime.now(UTC))

    def check_open(self, now: datetime | None = None) -> None:
        """Raise ShopClosed outside the site's working hours."""
        if not self.is_open(now):
            raise ShopClosed("The shop is closed now: leave a message and we will get back to you.")

    def next_opening(self, now: datetime) -> datetime | None:
        """When the shop opens next; None when it has no hours or never opens in the next 60 days."""
        return self.hours.next_opening(now) if self.hours is not None else None

    def check_origin(self, origin: str | None) -> None:
        """Raise OriginNotAllowed unless the page's Origin is one the site allows."""
        try:
            normalized = normalize_origin(origin or "")
        except InvalidInput as e:
            raise OriginNotAllowed(f"The page's origin {origin!r} is not allowed for this site.") from e
        if normalized not in self.origins:
            raise OriginNotAllowed(f"Calls from {normalized} are not enabled for this site.")
