"""Sites: a shop's key (public, in the embed snippet), its secret, and where the widget may run."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callserver.errors import InvalidInput, OriginNotAllowed, UnknownSite
from callserver.store.models import Site


@dataclass(frozen=True)
class NewSite:
    """What `site add` hands back: the key is public, the secret is shown once."""

    id: int
    name: str
    key: str
    secret: str


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


async def create_site(
    session: AsyncSession,
    name: str,
    origins: list[str],
    notify_email: str | None = None,
    records_calls: bool = False,
) -> NewSite:
    if not name.strip():
        raise InvalidInput("A site needs a name.")
    site = Site(
        name=name.strip(),
        key="site_" + secrets.token_urlsafe(12),
        secret="sk_" + secrets.token_urlsafe(24),
        allowed_origins=sorted({normalize_origin(o) for o in origins}),
        notify_email=notify_email,
        records_calls=records_calls,
        created_at=datetime.now(UTC),
    )
    session.add(site)
    await session.flush()
    return NewSite(id=site.id, name=site.name, key=site.key, secret=site.secret)


async def site_by_key(session: AsyncSession, key: str) -> Site:
    site = await session.scalar(select(Site).where(Site.key == key))
    if site is None:
        raise UnknownSite(f"No site has the key {key!r}.")
    return site


def check_origin(site: Site, origin: str | None) -> None:
    """Raise OriginNotAllowed unless the page's Origin is one the site allows."""
    try:
        normalized = normalize_origin(origin or "")
    except InvalidInput as e:
        raise OriginNotAllowed(f"The page's origin {origin!r} is not allowed for this site.") from e
    if normalized not in site.allowed_origins:
        raise OriginNotAllowed(f"Calls from {normalized} are not enabled for this site.")
