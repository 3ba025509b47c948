"""Helpers for the visitors tests: a site's invitation rules, hours and language set directly."""

from __future__ import annotations

from typing import Any

from callserver.store.models import Site
from callserver.web.keys import SITES
from tests.stack import Stack


async def configure_site(stack: Stack, **values: Any) -> None:
    """Set columns of the test site (invite_rules, hours, language, texts, score_weights)."""
    async with stack.database.session() as session:
        site = await session.get(Site, stack.site.id)
        assert site is not None
        for name, value in values.items():
            setattr(site, name, value)
    stack.app[SITES].forget()
