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

# The weights are a site setting (stored on the site, edited in the dashboard): they live with the site.
from callserver.sites.rules import ScoreWeights

__all__ = ["LABELS", "ScoreWeights", "VisitFacts", "value_score"]


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
