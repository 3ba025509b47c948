"""Creating a site and changing its settings: everything an owner may set is checked here before it is
stored, for `callserver site add` and for the dashboard's site form alike.

A setting that is wrong raises InvalidInput naming it, and nothing of the change is saved (the caller's
transaction is rolled back).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from callserver import i18n
from callserver.errors import InvalidInput, UnknownSite
from callserver.hours import DAYS, WorkingHours, parse_spans
from callserver.jsontypes import JsonObject
from callserver.sites.rules import InviteRule, ScoreWeights
from callserver.sites.site import RingStrategy, normalize_origin
from callserver.store import models

RING_TIMEOUT = (5.0, 300.0)  # seconds
RETENTION_DAYS = (1, 36_500)
ATTRIBUTION_DAYS = (0, 365)
MAX_TEXT = 500
# Google Ads takes a conversion action's name of up to 100 characters (and so does the column).
CONVERSION_NAME_LENGTH = 100


@dataclass(frozen=True)
class NewSite:
    """What `site add` hands back: the key is public, the secret is shown once."""

    id: int
    name: str
    key: str
    secret: str


@dataclass(frozen=True)
class Hours:
    """Working hours as the owner writes them: spans per day (`09:00-13:00, 14:00-18:00`), closed dates."""

    timezone: str = "UTC"
    week: Mapping[str, str] = field(default_factory=dict)
    closed_dates: Sequence[date] = ()


@dataclass(frozen=True)
class SiteSettings:
    """Everything the site form sets; None where the owner left a field empty."""

    origins: Sequence[str]
    ring_strategy: str
    attribution_days: int | None
    ring_timeout: float | None = None
    records_calls: bool = False
    callbacks: bool = True  # the widget offers "call me back" when nobody can answer
    retention_days: int | None = None  # None: keep recordings
    notify_email: str | None = None
    webhook_secret: str | None = None  # None: keep the one set
    clear_webhook_secret: bool = False
    invite_rules: Sequence[Mapping[str, object]] = ()  # InviteRule's fields
    hours: Hours | None = None  # None: always open
    score_weights: Mapping[str, float] = field(default_factory=dict)  # ScoreWeights' fields
    language: str | None = None
    google_ads_conversion: str | None = None  # None: the export's default name
    texts: str = ""  # lines like `greeting = Hello!` or `ru.greeting = Здравствуйте!`


def normalize_origins(origins: Iterable[str]) -> list[str]:
    """The origins as the site stores them: normalized, sorted, once each (InvalidInput for a bad one)."""
    return sorted({normalize_origin(o) for o in origins})


def notify_address(value: str | None) -> str | None:
    """The site's notification address, or None when blank (InvalidInput when it is no address)."""
    address = (value or "").strip()
    if address and "@" not in address:
        raise InvalidInput(f"Not an e-mail address: {address!r}.")
    return address or None


def conversion_name(value: str | None) -> str | None:
    """The Google Ads conversion action's name for the export, None when blank (the default name).

    Google matches the name exactly, so it is stored as written (ends trimmed) or refused: a name the
    export's spreadsheet-safe cells would change (a leading `=`, `+`, `-`, `@`) could match nothing.
    """
    name = (value or "").strip()
    if len(name) > CONVERSION_NAME_LENGTH:
        raise InvalidInput(f"The Google Ads conversion name is at most {CONVERSION_NAME_LENGTH} characters.")
    if any(not c.isprintable() for c in name):
        raise InvalidInput("The Google Ads conversion name is one line of text, without control characters.")
    if name.startswith(("=", "+", "-", "@")):
        raise InvalidInput("The Google Ads conversion name may not start with =, +, - or @.")
    return name or None


async def create_site(
    session: AsyncSession,
    name: str,
    origins: list[str],
    notify_email: str | None = None,
    records_calls: bool = False,
) -> NewSite:
    """Store a new site with a fresh key and secret (InvalidInput for a blank name or a bad origin)."""
    if not name.strip():
        raise InvalidInput("A site needs a name.")
    site = models.Site(
        name=name.strip(),
        key="site_" + secrets.token_urlsafe(12),
        secret="sk_" + secrets.token_urlsafe(24),
        allowed_origins=normalize_origins(origins),
        notify_email=notify_address(notify_email),
        records_calls=records_calls,
        created_at=datetime.now(UTC),
    )
    session.add(site)
    await session.flush()
    return NewSite(id=site.id, name=site.name, key=site.key, secret=site.secret)


async def change_settings(session: AsyncSession, site_id: int, settings: SiteSettings) -> str:
    """Check the settings and put them on the site; returns its name. Raises UnknownSite, InvalidInput."""
    site = await session.get(models.Site, site_id)
    if site is None:
        raise UnknownSite("There is no such site.")
    apply_settings(site, settings)
    return site.name


def apply_settings(site: models.Site, settings: SiteSettings) -> None:
    """Put the checked settings on the stored site (raises InvalidInput naming the setting)."""
    site.allowed_origins = normalize_origins(settings.origins)
    if settings.ring_strategy not in {s.value for s in RingStrategy}:
        raise InvalidInput(f"Unknown ring strategy {settings.ring_strategy!r}.")
    site.ring_strategy = settings.ring_strategy
    low, high = RING_TIMEOUT
    if settings.ring_timeout is not None and not low <= settings.ring_timeout <= high:
        raise InvalidInput(f"The ring timeout must be between {low:.0f} and {high:.0f} seconds.")
    site.ring_timeout = settings.ring_timeout
    site.records_calls = settings.records_calls
    site.callbacks = settings.callbacks
    if settings.retention_days is not None and not (
        RETENTION_DAYS[0] <= settings.retention_days <= RETENTION_DAYS[1]
    ):
        raise InvalidInput(RETENTION_REFUSED)
    site.retention_days = settings.retention_days
    days = settings.attribution_days
    if days is None or not ATTRIBUTION_DAYS[0] <= days <= ATTRIBUTION_DAYS[1]:
        raise InvalidInput(ATTRIBUTION_REFUSED)
    site.attribution_days = days
    site.notify_email = notify_address(settings.notify_email)
    if settings.clear_webhook_secret:
        site.webhook_secret = None
    elif settings.webhook_secret:
        site.webhook_secret = settings.webhook_secret
    site.invite_rules = [_rule(fields) for fields in settings.invite_rules]
    site.hours = _hours(settings.hours).model_dump(mode="json") if settings.hours else None
    site.score_weights = _weights(settings.score_weights) or None
    if settings.language and settings.language not in i18n.LANGUAGES:
        raise InvalidInput(f"Unknown language {settings.language!r}.")
    site.language = settings.language or None
    site.google_ads_conversion = conversion_name(settings.google_ads_conversion)
    site.texts = _texts(settings.texts)


RETENTION_REFUSED = "Keep recordings 1 to 36,500 days, or leave the field empty to keep them."
ATTRIBUTION_REFUSED = "The attribution window is 0 to 365 days."


def _rule(fields: Mapping[str, object]) -> JsonObject:
    try:
        rule = InviteRule.model_validate(fields)
    except ValidationError as e:
        raise InvalidInput(f"Invitation rule {fields.get('pattern')!r}: {e.errors()[0]['msg']}.") from e
    return rule.model_dump(exclude_none=True)


def _hours(hours: Hours) -> WorkingHours:
    week = {}
    for day in DAYS:
        spans = hours.week.get(day, "").strip()
        parse_spans(spans)  # names the bad value
        if spans:
            week[day] = spans
    try:
        return WorkingHours(
            timezone=hours.timezone or "UTC", week=week, closed_dates=list(hours.closed_dates)
        )
    except ValidationError as e:
        raise InvalidInput(f"Working hours: {e.errors()[0]['msg']}.") from e


def _weights(given: Mapping[str, float]) -> dict[str, float]:
    # Only what differs from the defaults is stored, so a later change of a default reaches the site.
    defaults = ScoreWeights()
    weights = {name: value for name, value in given.items() if value != getattr(defaults, name, None)}
    try:
        ScoreWeights.model_validate(weights)
    except ValidationError as e:
        raise InvalidInput(f"Score weights: {e.errors()[0]['loc'][0]} {e.errors()[0]['msg']}.") from e
    return weights


def _texts(lines: str) -> dict[str, dict[str, str]]:
    texts: dict[str, dict[str, str]] = {}
    for line in lines.splitlines():
        if not line.strip():
            continue
        name, sep, text = line.partition("=")
        scope, _, key = name.strip().rpartition(".")
        scope = scope or "*"
        if not sep or key not in i18n.EDITABLE or (scope != "*" and scope not in i18n.LANGUAGES):
            raise InvalidInput(
                f"Texts are lines like `greeting = Hello!` or `ru.greeting = Здравствуйте!` "
                f"(texts: {', '.join(i18n.EDITABLE)}), not {line.strip()!r}."
            )
        texts.setdefault(scope, {})[key] = text.strip()[:MAX_TEXT]
    return texts
