"""Query strings and form fields the dashboard reads: dates, ids and the log's filters, refused with
InvalidInput (a 400 page) when they cannot be what they claim."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta

from callserver.calls.states import CallState, EndReason
from callserver.dashboard import queries
from callserver.errors import InvalidInput
from callserver.outcomes import clean_tags

OVERVIEW_DAYS = 30
# The overview and the activity page look at most this far at once: owners compare months, and
# the figures stay quick to compute on a busy shop.
MAX_RANGE_DAYS = 366
# Dates a filter may name: ranges are turned into [start 00:00, end + 1 day) and a month's worth
# is subtracted for the overview's default start, which must stay within what Python can hold.
FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(2999, 12, 31)
# Ids are SQL BIGINTs at most (SQLite and PostgreSQL refuse a larger parameter outright).
MAX_ID = 2**63 - 1


def day(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        found = date.fromisoformat(value.strip())
    except ValueError as e:
        raise InvalidInput(f"The {name} date must look like 2024-05-31, not {value[:40]!r}.") from e
    if not FIRST_DAY <= found <= LAST_DAY:
        raise InvalidInput(f"The {name} date must lie between {FIRST_DAY} and {LAST_DAY}, not {found}.")
    return found


def whole_number(value: str | None, name: str, at_least: int = -MAX_ID, at_most: int = MAX_ID) -> int | None:
    text = (value or "").strip()
    if not text:
        return None
    # isdecimal first: int() would take "١٢" or "1_000", and spend seconds on a million digits.
    digits = text.removeprefix("-")
    if not digits.isascii() or not digits.isdecimal() or len(digits) > len(str(MAX_ID)):
        raise InvalidInput(f"{name} must be a whole number, not {text[:40]!r}.")
    number = int(text)
    if not at_least <= number <= at_most:
        raise InvalidInput(f"{name} must be between {at_least} and {at_most}, not {number}.")
    return number


def date_range(query: Mapping[str, str]) -> tuple[date, date]:
    """The days a report covers: `from` and `to`, by default the last 30 days."""
    today = datetime.now(UTC).date()
    end = day(query.get("to"), "end") or today
    start = day(query.get("from"), "start") or end - timedelta(days=OVERVIEW_DAYS - 1)
    if start > end:
        raise InvalidInput("The start date is after the end date.")
    if (end - start).days >= MAX_RANGE_DAYS:
        raise InvalidInput(f"Pick at most {MAX_RANGE_DAYS} days at once.")
    return start, end


def time_range(query: Mapping[str, str]) -> tuple[datetime | None, datetime | None]:
    """`from` and `to` as [start 00:00, end + 1 day) in UTC; None where not given."""
    start, end = day(query.get("from"), "start"), day(query.get("to"), "end")
    return (
        queries.day_bounds(start, start)[0] if start else None,
        queries.day_bounds(end, end)[1] if end else None,
    )


def tag(query: Mapping[str, str]) -> str | None:
    """The `tag` filter as tags are stored (trimmed, lower case); InvalidInput when no tag looks so."""
    value = query.get("tag") or ""
    if len(value) > 200:  # a tag is 50 characters at most: refuse a long one before cleaning it
        raise InvalidInput("A tag is at most 50 characters.")
    cleaned = clean_tags([value])
    return cleaned[0] if cleaned else None


def log_filters(query: Mapping[str, str]) -> queries.LogFilters:
    start, end = time_range(query)
    channel = query.get("channel") or None
    state = query.get("state") or None
    end_reason = query.get("end_reason") or None
    orders = query.get("orders") or None
    if channel not in (None, *queries.CHANNELS):
        raise InvalidInput(f"Unknown channel {channel!r}.")
    if state not in (None, *CallState):
        raise InvalidInput(f"Unknown call state {state!r}.")
    if end_reason not in (None, *EndReason):
        raise InvalidInput(f"Unknown end reason {end_reason!r}.")
    if orders not in (None, "with", "without"):
        raise InvalidInput(f"Unknown orders filter {orders!r}.")
    return queries.LogFilters(
        start=start,
        end=end,
        site_id=whole_number(query.get("site"), "Site", at_least=1),
        operator_id=whole_number(query.get("operator"), "Operator", at_least=1),
        state=state,
        end_reason=end_reason,
        channel=channel,
        orders=orders,
        tag=tag(query),
    )
