"""What a site's owner sets about its visitors: proactive invitation rules and the value score's weights.

Both are stored on the site as JSON and edited in the dashboard; both are read forgivingly (a stored
value that no longer validates is skipped or replaced by the defaults rather than break the site).
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger(__name__)


class InviteRule(BaseModel):
    """One proactive rule of a site: invite on matching pages after some seconds, when worth it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    # A glob (`/products/*`, `*sale*`) matched against the page's path and its whole URL, or,
    # without wildcards, a piece of text the URL contains.
    pattern: str = Field("*", min_length=1, max_length=500)
    seconds: int = Field(30, ge=0, le=3600)
    min_score: int | None = Field(None, ge=0, le=100_000)
    min_value: float | None = Field(None, ge=0)
    only_when_free: bool = True
    max_per_visitor: int = Field(1, ge=1, le=20)
    message: str | None = Field(None, max_length=300)

    def matches(self, url: str) -> bool:
        if not any(c in self.pattern for c in "*?["):
            return self.pattern in url
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        return any(fnmatch.fnmatchcase(target, self.pattern) for target in (url, parts.path, path))


def rules_of(stored: Sequence[Mapping[str, object]] | None) -> tuple[InviteRule, ...]:
    """A site's stored rules; one that no longer validates is skipped rather than break the others."""
    rules = []
    for item in stored or []:
        try:
            rules.append(InviteRule.model_validate(item))
        except ValidationError:
            log.warning("skipping an invalid invitation rule: %r", item)
    return tuple(rules)


class ScoreWeights(BaseModel):
    """The weights of the value score (`callserver/visitors/score.py`); a site overrides any of them."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    value_per_100: float = Field(9.0, ge=0, le=1000)
    value_cap: float = Field(50.0, ge=0, le=1000)
    per_page: float = Field(3.0, ge=0, le=1000)
    pages_cap: float = Field(30.0, ge=0, le=1000)
    per_minute: float = Field(2.0, ge=0, le=1000)
    minutes_cap: float = Field(20.0, ge=0, le=1000)
    has_cart: float = Field(15.0, ge=0, le=1000)
    returning: float = Field(10.0, ge=0, le=1000)
    searched: float = Field(5.0, ge=0, le=1000)
    campaign: float = Field(5.0, ge=0, le=1000)

    @classmethod
    def for_site(cls, overrides: Mapping[str, object] | None) -> ScoreWeights:
        """The defaults with a site's overrides on top; an unusable override is ignored."""
        try:
            return cls.model_validate(overrides or {})
        except ValidationError:
            return cls()
