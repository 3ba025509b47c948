"""The site form's visitor settings: invitation rules, working hours, score weights, language and texts.

Parsed from the posted form into the site's columns; a value that doesn't parse is an InvalidInput
with a message for the owner, and nothing of the form is saved.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from multidict import MultiDictProxy
from pydantic import ValidationError

from callserver import i18n
from callserver.errors import InvalidInput
from callserver.hours import DAYS, WorkingHours, parse_spans
from callserver.store.models import Site
from callserver.visitors.invitations import InviteRule, rules_of
from callserver.visitors.score import LABELS, ScoreWeights

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


def form_values(site: Site) -> dict[str, Any]:
    """What the template shows for one site."""
    rules: list[dict[str, Any] | None] = [r.model_dump() for r in rules_of(site.invite_rules)]
    rules += [None] * max(1, RULE_ROWS - len(rules))
    hours = WorkingHours.of_site(site.hours)
    weights = ScoreWeights.for_site(site.score_weights)
    overrides = site.texts or {}
    text_lines = [
        f"{'' if scope == '*' else scope + '.'}{key} = {value}"
        for scope, texts in overrides.items()
        if isinstance(texts, dict)
        for key, value in texts.items()
    ]
    return {
        "rules": rules,
        "hours": hours,
        "day_names": DAY_NAMES,
        "weights": [(name, LABELS[name], getattr(weights, name)) for name in LABELS],
        "languages": [(code, i18n.pack(code)["language"]) for code in i18n.LANGUAGES],
        "editable": i18n.EDITABLE,
        "text_lines": "\n".join(text_lines),
    }


def _number(value: Any, name: str) -> float | None:
    text = str(value or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError as e:
        raise InvalidInput(f"{name} must be a number, not {text!r}.") from e


def _whole(value: Any, name: str) -> int | None:
    number = _number(value, name)
    if number is not None and not number.is_integer():
        raise InvalidInput(f"{name} must be a whole number, not {number}.")
    return None if number is None else int(number)


def apply(site: Site, form: MultiDictProxy[Any]) -> None:
    """Put the form's visitor settings on the site (raises InvalidInput, naming the field)."""
    rules = []
    for i in range(RULE_ROWS):
        pattern = str(form.get(f"rule_pattern_{i}", "")).strip()
        if not pattern:
            continue
        try:
            rule = InviteRule(
                pattern=pattern,
                seconds=_whole(form.get(f"rule_seconds_{i}"), "Seconds on the page") or 0,
                min_score=_whole(form.get(f"rule_score_{i}"), "Minimum score"),
                min_value=_number(form.get(f"rule_value_{i}"), "Minimum value"),
                only_when_free=form.get(f"rule_free_{i}") == "on",
                max_per_visitor=_whole(form.get(f"rule_max_{i}"), "Invitations per visitor") or 1,
                message=str(form.get(f"rule_message_{i}", "")).strip() or None,
            )
        except ValidationError as e:
            raise InvalidInput(f"Invitation rule {pattern!r}: {e.errors()[0]['msg']}.") from e
        rules.append(rule.model_dump(exclude_none=True))
    site.invite_rules = rules

    if form.get("hours_on") == "on":
        week = {}
        for day in DAYS:
            spans = str(form.get(f"hours_{day}", "")).strip()
            parse_spans(spans)  # names the bad value
            if spans:
                week[day] = spans
        closed: list[date] = []
        for line in str(form.get("closed_dates", "")).split():
            try:
                closed.append(date.fromisoformat(line.strip().rstrip(",")))
            except ValueError as e:
                raise InvalidInput(f"Closed dates are written like 2026-12-25, not {line!r}.") from e
        try:
            hours = WorkingHours(
                timezone=str(form.get("timezone", "UTC")).strip() or "UTC", week=week, closed_dates=closed
            )
        except ValidationError as e:
            raise InvalidInput(f"Working hours: {e.errors()[0]['msg']}.") from e
        site.hours = hours.model_dump(mode="json")
    else:
        site.hours = None

    weights: dict[str, float] = {}
    defaults = ScoreWeights()
    for name in LABELS:
        value = _number(form.get(f"weight_{name}"), LABELS[name])
        if value is not None and value != getattr(defaults, name):
            weights[name] = value
    try:
        ScoreWeights.model_validate(weights)
    except ValidationError as e:
        raise InvalidInput(f"Score weights: {e.errors()[0]['loc'][0]} {e.errors()[0]['msg']}.") from e
    site.score_weights = weights or None

    language = str(form.get("language", "")).strip()
    if language and language not in i18n.LANGUAGES:
        raise InvalidInput(f"Unknown language {language!r}.")
    site.language = language or None

    texts: dict[str, dict[str, str]] = {}
    for line in str(form.get("texts", "")).splitlines():
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
        texts.setdefault(scope, {})[key] = text.strip()[:500]
    site.texts = texts
