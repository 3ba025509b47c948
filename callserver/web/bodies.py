"""Request bodies at the edge: at most 1 MB, JSON with exact decimals and bounded nesting, validated
into a pydantic model, so that nothing malformed reaches the domain (used by the API and the hooks)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, TypeVar

from aiohttp import web
from pydantic import AfterValidator, BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from callserver.web.errors import HttpError

MAX_BODY = 1024 * 1024
# No order or platform webhook nests deeper than a handful of levels; a body that does is refused
# before anything walks it (Python's own recursion limit is about 1000).
MAX_JSON_DEPTH = 32
M = TypeVar("M", bound=BaseModel)


def _too_large() -> HttpError:
    return HttpError(413, "too_large", f"The request body is over {MAX_BODY // (1024 * 1024)} MB.")


def refuse_large_body(request: web.Request) -> None:
    """413 before anything else when the announced body is over 1 MB (nothing is read)."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise _too_large()


async def read_body(request: web.Request) -> bytes:
    """The raw body, at most 1 MB (413 beyond, also for chunked bodies that announce no length)."""
    too_large = _too_large()
    refuse_large_body(request)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge as e:
        raise too_large from e
    if len(body) > MAX_BODY:
        raise too_large
    return body


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _depth_over(value: object, limit: int) -> bool:
    # Walked with a stack, not recursion: the point is to refuse what would exhaust recursion.
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def parse_json(body: bytes) -> object:
    """JSON with exact decimals (a total of 0.1 stays 0.1); 400 `bad_json` when it is none."""
    try:
        data: object = json.loads(body, parse_float=Decimal, parse_constant=_no_constant)
    except RecursionError as e:
        raise HttpError(400, "bad_json", f"The body nests deeper than {MAX_JSON_DEPTH} levels.") from e
    except ValueError as e:  # bad JSON, bad UTF-8, NaN, or an integer of thousands of digits
        raise HttpError(400, "bad_json", f"The body is not JSON: {e}.") from e
    if _depth_over(data, MAX_JSON_DEPTH):
        raise HttpError(400, "bad_json", f"The body nests deeper than {MAX_JSON_DEPTH} levels.")
    return data


def validate(model: type[M], data: object) -> M:
    """Validate into `model`; 400 `invalid` naming the first field that is wrong."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        error = e.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "body"
        raise HttpError(400, "invalid", f"{field}: {error['msg']}.") from e


def utc(value: datetime | None) -> datetime | None:
    """The time in UTC; one without an offset is taken as UTC (shops' systems that drop it mean UTC)."""
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError as e:  # 0001-01-01T00:00+01:00 is before the first time Python can hold
        raise PydanticCustomError(
            "datetime_range", "Input should be a time between the years 1 and 9999"
        ) from e


# Times in UTC (one without an offset is UTC), checked while validating so an impossible one is a 400.
UtcDateTime = Annotated[datetime, AfterValidator(utc)]
