"""Where a conversation comes from: the visitor's first and last touch, and the source, medium and
campaign the reports group by.

A touch is what the widget kept of a landing on the shop (DESIGN.md, "Where conversations come
from"): a page opened with campaign parameters or from another site. The widget keeps the first and
the last one in the shop's own localStorage and sends both with every call, chat and left message;
each conversation stores them as they were then, so "the last touch before the conversation" is the
conversation's own last touch, whatever the visitor did afterwards.

Lives with the orders because it is what attribution is read by: the Sources page and the revenue
report put an attributed order under its conversation's last touch, and the Google Ads export takes
the click id from it. The calls and chats packages already depend on this one, so no new edge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
CLICK_IDS = ("gclid", "gbraid", "wbraid", "fbclid", "msclkid")
TOUCH_FIELDS = (*UTM_FIELDS, *CLICK_IDS, "referrer", "search")
# The ad network a click id belongs to, for a landing that carried no `utm_source`.
CLICK_ID_SOURCES = {
    "gclid": "google",
    "gbraid": "google",
    "wbraid": "google",
    "msclkid": "bing",
    "fbclid": "facebook",
}
# Referrers whose visitors searched before they came (Google Analytics' "organic" medium).
SEARCH_ENGINES = ("google.", "bing.", "yahoo.", "duckduckgo.", "yandex.", "baidu.", "ecosia.", "qwant.")
DIRECT = "(direct)"
NO_MEDIUM = "(none)"
NO_CAMPAIGN = "(not set)"
# Column sizes of the labels (`calls.source` and the like).
LABEL_LENGTH = 200


@dataclass(frozen=True)
class Labels:
    """A touch as the reports group it (Google Analytics' conventions for the placeholders)."""

    source: str
    medium: str
    campaign: str


def labels(touch: Mapping[str, object] | None) -> Labels:
    """Source, medium and campaign of a touch; `(direct)` / `(none)` / `(not set)` for a visit with none."""
    if not touch:
        return Labels(DIRECT, NO_MEDIUM, NO_CAMPAIGN)
    click = next((name for name in CLICK_IDS if touch.get(name)), None)
    referrer = str(touch.get("referrer") or "")
    source = touch.get("utm_source") or (CLICK_ID_SOURCES[click] if click else None) or referrer or DIRECT
    medium = touch.get("utm_medium")
    if not medium:
        if click:
            medium = "cpc"
        elif referrer and any(engine in referrer for engine in SEARCH_ENGINES):
            medium = "organic"
        elif referrer:
            medium = "referral"
        else:
            medium = NO_MEDIUM
    campaign = touch.get("utm_campaign") or NO_CAMPAIGN
    return Labels(str(source)[:LABEL_LENGTH], str(medium)[:LABEL_LENGTH], str(campaign)[:LABEL_LENGTH])


def touch_columns(touches: Mapping[str, Any] | None) -> dict[str, object]:
    """What a call, chat or left message stores of `{"first": …, "last": …}` (either may be missing).

    The last touch is the first one when only that is known (a visitor who landed once). The click id
    for Google Ads is the last touch's, else the first touch's: an upload may credit a click up to 90
    days back, and Google applies its own attribution among the clicks it knows.
    """
    first = dict((touches or {}).get("first") or {}) or None
    last = dict((touches or {}).get("last") or {}) or first
    first_labels, last_labels = labels(first), labels(last)
    gclid = (last or {}).get("gclid") or (first or {}).get("gclid")
    return {
        "touches": {"first": first, "last": last} if first or last else None,
        "source": last_labels.source,
        "medium": last_labels.medium,
        "campaign": last_labels.campaign,
        "first_source": first_labels.source,
        "first_medium": first_labels.medium,
        "first_campaign": first_labels.campaign,
        "gclid": gclid or None,
    }
