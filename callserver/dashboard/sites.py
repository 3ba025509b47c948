"""Sites (`/dashboard/sites`): the embed snippet, and the site form, parsed here into `SiteSettings`
and checked and saved by `callserver/sites/admin.py` (as `callserver site add` is)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

from aiohttp import web
from sqlalchemy import select

from callserver import i18n
from callserver.dashboard import queries
from callserver.dashboard.filters import whole_number
from callserver.dashboard.google_ads import DEFAULT_CONVERSION_NAME
from callserver.dashboard.page import back, checked_form, render, signed_in_owner
from callserver.errors import CallserverError, InvalidInput, NotFound
from callserver.hours import DAYS, WorkingHours
from callserver.sites import admin
from callserver.sites.rules import ScoreWeights, rules_of
from callserver.sites.site import RingStrategy
from callserver.store.models import Site, UserSite
from callserver.visitors.score import LABELS
from callserver.web.keys import DATABASE, SETTINGS, SITES

PAGE = "/dashboard/sites"
RULE_ROWS = 4  # rule rows in the form: the site's rules, then blank ones
DAY_NAMES = {
    "mon": "Monday",
    "tue": "Tuesday",
    "wed": "Wednesday",
    "thu": "Thursday",
    "fri": "Friday",
    "sat": "Saturday",
    "sun": "Sunday",
}


async def sites_page(request: web.Request) -> web.StreamResponse:
    owner = await signed_in_owner(request)
    async with request.app[DATABASE].session() as session:
        rows = list(await session.scalars(select(Site).where(queries.in_sites(Site.id, owner.site_ids))))
    return render(
        request,
        owner,
        "sites.html",
        title="Sites",
        sites=sorted(rows, key=lambda s: s.name.lower()),
        visitor_settings={s.id: form_values(s) for s in rows},
        strategies=list(RingStrategy),
        base_url=request.app[SETTINGS].base_url,
        default_conversion=DEFAULT_CONVERSION_NAME,
        conversion_length=admin.CONVERSION_NAME_LENGTH,
    )


async def site_submit(request: web.Request) -> web.StreamResponse:
    owner, form = await checked_form(request)
    site_id = whole_number(request.match_info["site_id"], "Site")
    if site_id not in owner.site_ids:
        raise NotFound("There is no such site.")
    try:
        settings = settings_of(form)
        async with request.app[DATABASE].session() as session:
            name = await admin.change_settings(session, site_id, settings)
    except InvalidInput as e:
        raise back(PAGE, error=e.message) from e
    request.app[SITES].forget()  # the widget and the board use the new settings now
    raise back(PAGE, notice=f"Saved the settings of {name}.")


async def site_add(request: web.Request) -> web.StreamResponse:
    owner, form = await checked_form(request)
    try:
        async with request.app[DATABASE].session() as session:
            created = await admin.create_site(session, form.get("name", ""), form.get("origins", "").split())
            if not owner.sees_every_site:
                session.add(UserSite(user_id=owner.account.id, site_id=created.id))
    except CallserverError as e:
        raise back(PAGE, error=e.message) from e
    raise back(
        PAGE,
        notice=f"Added {created.name}. Its secret (for the orders API) is {created.secret} — keep it safe.",
    )


# ---- the form ----


def form_values(site: Site) -> dict[str, object]:
    """What the template shows of one site's visitor settings."""
    rules: list[dict[str, object] | None] = [r.model_dump() for r in rules_of(site.invite_rules)]
    rules += [None] * max(1, RULE_ROWS - len(rules))
    weights = ScoreWeights.for_site(site.score_weights)
    text_lines = [
        f"{'' if scope == '*' else scope + '.'}{key} = {value}"
        for scope, texts in (site.texts or {}).items()
        if isinstance(texts, dict)
        for key, value in texts.items()
    ]
    return {
        "rules": rules,
        "hours": WorkingHours.of_site(site.hours),
        "day_names": DAY_NAMES,
        "weights": [(name, LABELS[name], getattr(weights, name)) for name in LABELS],
        "languages": [(code, i18n.pack(code)["language"]) for code in i18n.LANGUAGES],
        "editable": i18n.EDITABLE,
        "text_lines": "\n".join(text_lines),
    }


def _number(value: str | None, name: str) -> float | None:
    text = (value or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError as e:
        raise InvalidInput(f"{name} must be a number, not {text!r}.") from e


def _whole(value: str | None, name: str) -> int | None:
    number = _number(value, name)
    if number is not None and not number.is_integer():
        raise InvalidInput(f"{name} must be a whole number, not {number}.")
    return None if number is None else int(number)


def _rules(form: Mapping[str, str]) -> list[dict[str, object]]:
    rules = []
    for i in range(RULE_ROWS):
        pattern = form.get(f"rule_pattern_{i}", "").strip()
        if not pattern:
            continue
        rules.append(
            {
                "pattern": pattern,
                "seconds": _whole(form.get(f"rule_seconds_{i}"), "Seconds on the page") or 0,
                "min_score": _whole(form.get(f"rule_score_{i}"), "Minimum score"),
                "min_value": _number(form.get(f"rule_value_{i}"), "Minimum value"),
                "only_when_free": form.get(f"rule_free_{i}") == "on",
                "max_per_visitor": _whole(form.get(f"rule_max_{i}"), "Invitations per visitor") or 1,
                "message": form.get(f"rule_message_{i}", "").strip() or None,
            }
        )
    return rules


def _hours(form: Mapping[str, str]) -> admin.Hours | None:
    if form.get("hours_on") != "on":
        return None
    closed: list[date] = []
    for line in form.get("closed_dates", "").split():
        try:
            closed.append(date.fromisoformat(line.strip().rstrip(",")))
        except ValueError as e:
            raise InvalidInput(f"Closed dates are written like 2026-12-25, not {line!r}.") from e
    return admin.Hours(
        timezone=form.get("timezone", "UTC").strip() or "UTC",
        week={day: form.get(f"hours_{day}", "") for day in DAYS},
        closed_dates=closed,
    )


def settings_of(form: Mapping[str, str]) -> admin.SiteSettings:
    """The posted site form as settings (InvalidInput for a field that is not what it says)."""
    timeout = form.get("ring_timeout", "").strip()
    try:
        ring_timeout = float(timeout) if timeout else None
    except ValueError as e:
        raise InvalidInput("The ring timeout is a number of seconds.") from e
    try:
        retention = whole_number(form.get("retention_days"), "Retention days")
    except InvalidInput as e:
        raise InvalidInput(admin.RETENTION_REFUSED) from e
    weights = {name: _number(form.get(f"weight_{name}"), label) for name, label in LABELS.items()}
    return admin.SiteSettings(
        origins=form.get("origins", "").split(),
        ring_strategy=form.get("ring_strategy", ""),
        ring_timeout=ring_timeout,
        records_calls=form.get("records_calls") == "on",
        # A form without the call-back box (an older page, a script) leaves call-back on.
        callbacks=form.get("callbacks") == "on" if "callbacks_shown" in form else True,
        retention_days=retention,
        attribution_days=whole_number(form.get("attribution_days"), "Attribution days"),
        notify_email=form.get("notify_email"),
        webhook_secret=form.get("webhook_secret", "").strip() or None,
        clear_webhook_secret=form.get("clear_webhook_secret") == "on",
        invite_rules=_rules(form),
        hours=_hours(form),
        score_weights={name: value for name, value in weights.items() if value is not None},
        language=form.get("language", "").strip() or None,
        google_ads_conversion=form.get("google_ads_conversion"),
        texts=form.get("texts", ""),
    )
