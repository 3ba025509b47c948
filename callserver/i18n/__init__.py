"""Language packs for the widget and the softphone, and the owner's own texts on top of them.

The packs (`en.json`, `ru.json`, …) live on the server so the widget stays small: `/widget/config`
hands the widget the texts of one language, merged with the site's overrides. A site's overrides
are `{"*": {key: text}, "ru": {key: text}}`: `*` for every language, a code for one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

LANGUAGES = ("en", "ru", "pl", "it", "de", "es")
DEFAULT = "en"
# The texts an owner may change in the dashboard (the rest are the product's own wording).
EDITABLE = ("greeting", "title", "idle", "call", "chat", "invite_call", "invite_chat", "send_message")
_FOLDER = Path(__file__).parent
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@cache
def pack(language: str) -> dict[str, Any]:
    """The whole pack of one supported language (read once; treat it as read-only)."""
    if language not in LANGUAGES:
        raise KeyError(language)
    loaded: dict[str, Any] = json.loads((_FOLDER / f"{language}.json").read_text(encoding="utf-8"))
    return loaded


def choose(requested: str | None, site_language: str | None = None) -> str:
    """The language to speak: the site's forced one, else the page's (`ru-RU` → `ru`), else English."""
    for candidate in (site_language, requested):
        code = (candidate or "").strip().lower().replace("_", "-").split("-")[0]
        if code in LANGUAGES:
            return code
    return DEFAULT


def widget_texts(
    language: str, overrides: Mapping[str, Mapping[str, object]] | None = None
) -> dict[str, str]:
    """The widget's texts in `language`, with the site's overrides (for all languages, then this one)."""
    texts: dict[str, str] = dict(pack(language)["widget"])
    for scope in ("*", language):
        for key, value in ((overrides or {}).get(scope) or {}).items():
            if key in texts and isinstance(value, str) and value.strip():
                texts[key] = value.strip()[:500]
    return texts


def softphone_texts(language: str) -> dict[str, str]:
    texts: dict[str, str] = dict(pack(language)["softphone"])
    return texts


def opening_text(
    language: str, opens: datetime | None, now: datetime, overrides: Mapping[str, Mapping[str, object]] | None
) -> str:
    """ "We're closed now — we open Monday at 09:00." in `language` (`opens` in the shop's time zone)."""
    texts = widget_texts(language, overrides)
    if opens is None:
        return texts["closed_plain"]
    days = pack(language)["days"]
    local_today = now.astimezone(opens.tzinfo).date()
    delta = (opens.date() - local_today).days
    when = (
        days["today"] if delta == 0 else days["tomorrow"] if delta == 1 else days[WEEKDAYS[opens.weekday()]]
    )
    if delta > 6:
        when = opens.strftime("%d.%m.")
    return texts["closed"].format(when=when, time=opens.strftime("%H:%M"))
