"""The value score: how much a visitor looks like a buyer worth approaching.

A good salesperson walks toward the shopper at the $10,000 TV, not the one at the $15 CDs. The score
adds up what the widget saw of the visit, each part with a weight and a cap:

    score = min(value / 100 × value_per_100, value_cap)        # cart value, else the dearest product seen
          + min(pages × per_page, pages_cap)                   # pages seen in this visit
          + min(minutes on site × per_minute, minutes_cap)
          + has_cart                                           # the shop reported a cart value above 0
          + returning                                          # came back after an earlier visit
          + searched                                           # arrived from a search, or searched the shop
          + campaign                                           # arrived with utm_source / utm_campaign

rounded to a whole number. With the defaults a visitor at a 1,290 € table after three pages and
two minutes scores 50 + 9 + 4 = 63, one at an 89 € lamp on their first page 8 + 3 = 11. A site can
override any weight (stored on the site as `score_weights`, edited in the dashboard).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ScoreWeights(BaseModel):
    """The weights of the value score; every field has a default, a site overrides any of them."""

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
    def for_site(cls, overrides: dict[str, Any] | None) -> ScoreWeights:
        """The defaults with a site's overrides on top; an unusable override is ignored."""
        try:
            return cls.model_validate(overrides or {})
        except ValidationError:
            return cls()


LABELS = {
    "value_per_100": "Points per 100 of cart or product value",
    "value_cap": "At most, for value",
    "per_page": "Points per page seen",
    "pages_cap": "At most, for pages",
    "per_minute": "Points per minute on the site",
    "minutes_cap": "At most, for time",
    "has_cart": "Has something in the cart",
    "returning": "Returning visitor",
    "searched": "Searched (on the shop or a search engine)",
    "campaign": "Came from a campaign (UTM)",
}


@dataclass(frozen=True)
class VisitFacts:
    """What the score looks at."""

    value: float  # cart value, or the dearest product price seen
    pages: int
    seconds_on_site: float
    has_cart: bool
    returning: bool
    searched: bool
    campaign: bool


def value_score(facts: VisitFacts, weights: ScoreWeights) -> int:
    """The score of one visit (see the module's docstring for the formula)."""
    total = min(facts.value / 100 * weights.value_per_100, weights.value_cap)
    total += min(facts.pages * weights.per_page, weights.pages_cap)
    total += min(facts.seconds_on_site / 60 * weights.per_minute, weights.minutes_cap)
    total += weights.has_cart if facts.has_cart else 0
    total += weights.returning if facts.returning else 0
    total += weights.searched if facts.searched else 0
    total += weights.campaign if facts.campaign else 0
    return round(total)
