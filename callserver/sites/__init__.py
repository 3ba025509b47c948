"""Sites: a shop's key (public, in the embed snippet), its secret, and where the widget may run.

`site.py` is the one live shape of a site (`Site`, built from the row by `Site.of`), `directory.py`
the cache every reader goes through, `rules.py` what the owner sets about visitors.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callserver.errors import UnknownSite
from callserver.sites.admin import NewSite, create_site
from callserver.sites.directory import SiteDirectory
from callserver.sites.site import RingStrategy, Site, is_visitor_token, normalize_origin
from callserver.store import models

__all__ = [
    "NewSite",
    "RingStrategy",
    "Site",
    "SiteDirectory",
    "create_site",
    "is_visitor_token",
    "normalize_origin",
    "site_by_key",
]


async def site_by_key(session: AsyncSession, key: str) -> models.Site:
    """The stored row (with its secret: for the hooks and the admin side; live readers use the directory)."""
    site = await session.scalar(select(models.Site).where(models.Site.key == key))
    if site is None:
        raise UnknownSite(f"No site has the key {key!r}.")
    return site
