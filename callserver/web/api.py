"""The REST API under `/api/v1/` (bearer token: the site secret) and its OpenAPI document."""

from __future__ import annotations

import base64
import functools
import hmac
import json
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote

from aiohttp import web
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
)
from pydantic.json_schema import models_json_schema
from pydantic_core import PydanticCustomError
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from callserver.calls.states import CallState, EndReason
from callserver.errors import NotFound
from callserver.orders.attribution import Channel
from callserver.orders.intake import MAX_TOTAL, TEXT_LIMITS, OrderReport, Source, order_of_site, record_order
from callserver.store.models import Call, Order, Site
from callserver.web.errors import HttpError, json_errors
from callserver.web.keys import DATABASE

MAX_BODY = 1024 * 1024
# No order or platform webhook nests deeper than a handful of levels; a body that does is refused
# before anything walks it (Python's own recursion limit is about 1000).
MAX_JSON_DEPTH = 32
PREFIX = "/api/v1"
# What `_cursor` hands out is about 80 characters; ids are uuid4().hex (`Call.id`: String(32)).
MAX_CURSOR = 200
CALL_ID_LENGTH = 32
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


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _depth_over(value: Any, limit: int) -> bool:
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


def parse_json(body: bytes) -> Any:
    """JSON with exact decimals (a total of 0.1 stays 0.1); 400 `bad_json` when it is none."""
    try:
        data = json.loads(body, parse_float=Decimal, parse_constant=_no_constant)
    except RecursionError as e:
        raise HttpError(400, "bad_json", f"The body nests deeper than {MAX_JSON_DEPTH} levels.") from e
    except ValueError as e:  # bad JSON, bad UTF-8, NaN, or an integer of thousands of digits
        raise HttpError(400, "bad_json", f"The body is not JSON: {e}.") from e
    if _depth_over(data, MAX_JSON_DEPTH):
        raise HttpError(400, "bad_json", f"The body nests deeper than {MAX_JSON_DEPTH} levels.")
    return data


def validate(model: type[M], data: Any) -> M:
    """Validate into `model`; 400 `invalid` naming the first field that is wrong."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        error = e.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "body"
        raise HttpError(400, "invalid", f"{field}: {error['msg']}.") from e


async def authenticated_site(request: web.Request, session: AsyncSession) -> Site:
    """The site whose secret is the request's bearer token; 401 `unauthorized` otherwise."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    site = None
    if scheme.lower() == "bearer" and 0 < len(token) <= 200:
        site = await session.scalar(select(Site).where(Site.secret == token).limit(1))
    if site is None or not hmac.compare_digest(site.secret.encode(), token.encode()):
        raise HttpError(
            401,
            "unauthorized",
            "Send the site secret as `Authorization: Bearer <secret>`.",
            {"WWW-Authenticate": 'Bearer realm="callserver"'},
        )
    return site


# ---- wire models: validated in, serialised out, and the source of the OpenAPI document ----


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


def _cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _blank_to_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


UtcDateTime = Annotated[datetime, AfterValidator(utc)]
Money = Annotated[
    Decimal,
    Field(ge=0, lt=MAX_TOTAL, description="Rounded to cents.", examples=["123.45"]),
    AfterValidator(_cents),
    PlainSerializer(lambda value: f"{value:.2f}", return_type=str, when_used="json"),
]
# Optional text: blank is None. The length limit sits on the `str` branch: on the union it would be
# applied to None too, and pydantic raises TypeError (a 500) for `"number": " "`.
Text50 = Annotated[Annotated[str, Field(max_length=50)] | None, BeforeValidator(_blank_to_none)]
Text64 = Annotated[Annotated[str, Field(max_length=64)] | None, BeforeValidator(_blank_to_none)]
Text100 = Annotated[Annotated[str, Field(max_length=100)] | None, BeforeValidator(_blank_to_none)]
Text320 = Annotated[Annotated[str, Field(max_length=320)] | None, BeforeValidator(_blank_to_none)]


class OrderIn(BaseModel):
    """An order the shop reports; `order_id` is its own id, unique within the site."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, title="OrderIn")

    order_id: Annotated[
        str,
        BeforeValidator(lambda v: str(v) if isinstance(v, int) and not isinstance(v, bool) else v),
        WithJsonSchema(
            {
                "anyOf": [{"type": "string", "minLength": 1, "maxLength": 100}, {"type": "integer"}],
                "description": "The shop's order id (a number is taken as text).",
            }
        ),
    ] = Field(min_length=1, max_length=100)
    number: Annotated[Text100, Field(description="What the shop shows people, e.g. #1001.")] = None
    total: Money
    currency: str = Field(pattern=r"^[A-Za-z]{3}$", description="ISO 4217 code, e.g. EUR.")
    visitor_token: Annotated[Text64, Field(description="`CallButton.visitorToken()`.")] = None
    email: Text320 = None
    phone: Text50 = None
    created_at: UtcDateTime | None = Field(
        default=None, description="When the order was placed (ISO 8601; without offset: UTC). Default: now."
    )

    def report(self) -> OrderReport:
        return OrderReport(
            order_id=self.order_id,
            number=self.number,
            total=self.total,
            currency=self.currency.upper(),
            created_at=self.created_at,
            visitor_token=self.visitor_token,
            email=self.email,
            phone=self.phone,
        )


class AttributionOut(BaseModel):
    channel: Literal["call", "chat", "message"] | None = Field(description="null: no conversation sold it.")
    conversation_id: str | None = Field(description="The call's, chat's or left message's id.")
    attributed_by: Literal["token", "email", "phone", "manual"] | None


class OrderOut(BaseModel):
    order_id: str
    number: str | None
    total: Money
    currency: str
    created_at: datetime
    received_at: datetime
    source: Literal["api", "shopify", "woocommerce"]
    attribution: AttributionOut

    @classmethod
    def of(cls, order: Order) -> OrderOut:
        return cls(
            order_id=order.order_id,
            number=order.number,
            total=order.total,
            currency=order.currency,
            created_at=order.created_at,
            received_at=order.received_at,
            source=order.source,
            attribution=AttributionOut(
                channel=order.channel,
                conversation_id=order.conversation_id,
                attributed_by=order.attributed_by,
            ),
        )


class OperatorOut(BaseModel):
    id: int
    name: str
    email: str


class VisitorOut(BaseModel):
    """What the widget and the request told about the shopper."""

    token: str | None
    page: str | None
    title: str | None
    referrer: str | None
    context: dict[str, Any] = Field(description="UTM, search query, cart and product values, setContext().")
    country: str | None
    device: str | None


class LinkedOrder(BaseModel):
    order_id: str
    total: Money
    currency: str
    created_at: datetime


class CallOut(BaseModel):
    id: str
    state: CallState
    end_reason: EndReason | None
    created_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    ring_seconds: float | None = Field(description="From the call's start until answered or ended.")
    talk_seconds: float | None = Field(description="From the answer until the end.")
    operator: OperatorOut | None
    visitor: VisitorOut
    quality: dict[str, Any] | None = Field(description="Loss, jitter, RTT, relayed, as measured at the end.")
    recorded: bool
    orders: list[LinkedOrder] = Field(description="Orders attributed to this call.")

    @classmethod
    def of(cls, call: Call, orders: list[Order]) -> CallOut:
        ring_end = call.answered_at or call.ended_at
        return cls(
            id=call.id,
            state=CallState(call.state),
            end_reason=EndReason(call.end_reason) if call.end_reason else None,
            created_at=call.created_at,
            answered_at=call.answered_at,
            ended_at=call.ended_at,
            ring_seconds=round((ring_end - call.created_at).total_seconds(), 3) if ring_end else None,
            talk_seconds=(
                round((call.ended_at - call.answered_at).total_seconds(), 3)
                if call.answered_at and call.ended_at
                else None
            ),
            operator=(
                OperatorOut(id=call.operator.id, name=call.operator.name, email=call.operator.email)
                if call.operator
                else None
            ),
            visitor=VisitorOut(
                token=call.visitor.token if call.visitor else None,
                page=call.page,
                title=call.title,
                referrer=call.referrer,
                context=call.context or {},
                country=call.visitor.country if call.visitor else None,
                device=call.visitor.device if call.visitor else None,
            ),
            quality=call.quality,
            recorded=bool(call.recording_path),
            orders=[
                LinkedOrder(order_id=o.order_id, total=o.total, currency=o.currency, created_at=o.created_at)
                for o in orders
            ],
        )


class CallPage(BaseModel):
    calls: list[CallOut] = Field(description="Newest first.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")


class CallQuery(BaseModel):
    """Filters of `GET /api/v1/calls`."""

    model_config = ConfigDict(extra="ignore")

    state: CallState | None = None
    end_reason: EndReason | None = None
    since: UtcDateTime | None = Field(default=None, description="Calls created at or after (ISO 8601).")
    until: UtcDateTime | None = Field(default=None, description="Calls created before (ISO 8601).")
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, description="`next_cursor` of the previous page (opaque).")


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable and machine-readable, e.g. not_found, unauthorized, invalid.")
    message: str = Field(description="For people.")


class ErrorOut(BaseModel):
    error: ErrorDetail


def _json(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=model.model_dump_json(), status=status, content_type="application/json", headers=headers
    )


# ---- orders ----


@json_errors
async def post_order(request: web.Request) -> web.StreamResponse:
    refuse_large_body(request)
    async with request.app[DATABASE].session() as session:
        site = await authenticated_site(request, session)
        report = validate(OrderIn, parse_json(await read_body(request))).report()
        intake = await record_order(session, site, report, Source.API)
        out = OrderOut.of(intake.order)
    # Percent-encoded: an id is the shop's text, and a header cannot carry all of it as it is.
    location = f"{PREFIX}/orders/{quote(intake.order.order_id, safe='')}"
    return _json(out, 201 if intake.created else 200, {"Location": location})


@json_errors
async def get_order(request: web.Request) -> web.StreamResponse:
    async with request.app[DATABASE].session() as session:
        site = await authenticated_site(request, session)
        order_id = request.match_info["order_id"]
        if len(order_id) > TEXT_LIMITS["order_id"] or "\x00" in order_id:
            raise NotFound(f"No order {order_id[:100]!r} has been reported for this site.")
        order = await order_of_site(session, site.id, order_id)
        return _json(OrderOut.of(order))


# ---- calls ----


def _cursor(call: Call) -> str:
    raw = json.dumps([call.created_at.isoformat(), call.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after_cursor(cursor: str) -> tuple[datetime, str]:
    refused = HttpError(400, "invalid", "cursor: not a cursor this API handed out.")
    if len(cursor) > MAX_CURSOR:
        raise refused
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, call_id = json.loads(raw)
        when = datetime.fromisoformat(at)
        if when.tzinfo is None or not isinstance(call_id, str) or len(call_id) > CALL_ID_LENGTH:
            raise ValueError(cursor)
        when = when.astimezone(UTC)
    # binascii.Error and UnicodeDecodeError are ValueErrors; OverflowError: year 1 or 9999 with an offset.
    except (ValueError, TypeError, OverflowError, RecursionError) as e:
        raise refused from e
    return when, call_id


async def _linked_orders(session: AsyncSession, site_id: int, call_ids: list[str]) -> dict[str, list[Order]]:
    linked: dict[str, list[Order]] = {call_id: [] for call_id in call_ids}
    if call_ids:
        orders = await session.scalars(
            select(Order)
            .where(
                Order.site_id == site_id,
                Order.channel == Channel.CALL.value,
                Order.conversation_id.in_(call_ids),
            )
            .order_by(Order.created_at)
        )
        for order in orders:
            linked[order.conversation_id or ""].append(order)
    return linked


@json_errors
async def list_calls(request: web.Request) -> web.StreamResponse:
    async with request.app[DATABASE].session() as session:
        site = await authenticated_site(request, session)
        query = validate(CallQuery, dict(request.query))
        statement = select(Call).where(Call.site_id == site.id)
        if query.state:
            statement = statement.where(Call.state == query.state.value)
        if query.end_reason:
            statement = statement.where(Call.end_reason == query.end_reason.value)
        if query.since:
            statement = statement.where(Call.created_at >= query.since)
        if query.until:
            statement = statement.where(Call.created_at < query.until)
        if query.cursor:
            # Keyset pagination: stable while new calls arrive, and as fast on page 1000 as on page 1.
            at, call_id = _after_cursor(query.cursor)
            statement = statement.where(
                or_(Call.created_at < at, and_(Call.created_at == at, Call.id < call_id))
            )
        statement = statement.order_by(Call.created_at.desc(), Call.id.desc()).limit(query.limit + 1)
        calls = list(await session.scalars(statement))
        more = len(calls) > query.limit
        calls = calls[: query.limit]
        linked = await _linked_orders(session, site.id, [c.id for c in calls])
        page = CallPage(
            calls=[CallOut.of(call, linked[call.id]) for call in calls],
            next_cursor=_cursor(calls[-1]) if more else None,
        )
    return _json(page)


@json_errors
async def get_call(request: web.Request) -> web.StreamResponse:
    async with request.app[DATABASE].session() as session:
        site = await authenticated_site(request, session)
        call_id = request.match_info["call_id"]
        # No stored id is longer or holds a NUL (which PostgreSQL would refuse to compare).
        plausible = len(call_id) <= CALL_ID_LENGTH and "\x00" not in call_id
        call = await session.get(Call, call_id) if plausible else None
        if call is None or call.site_id != site.id:
            raise NotFound(f"This site has no call {call_id[:100]!r}.")
        linked = await _linked_orders(session, site.id, [call.id])
        return _json(CallOut.of(call, linked[call.id]))


# ---- the OpenAPI document ----


def _error_responses(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "Bad JSON or a field that is wrong (the message names it).",
        401: "Missing or wrong bearer token (`unauthorized`) or webhook signature (`bad_signature`).",
        404: "No such record for this site (`not_found`).",
        413: "Body over 1 MB (`too_large`).",
    }
    ref = {"$ref": "#/components/schemas/ErrorOut"}
    return {
        str(s): {"description": reasons[s], "content": {"application/json": {"schema": ref}}}
        for s in statuses
    }


@functools.cache
def openapi_json() -> str:
    """The OpenAPI 3.1 document; schemas come from the wire models, so it cannot drift from them."""
    refs, definitions = models_json_schema(
        [
            (OrderIn, "validation"),
            (OrderOut, "serialization"),
            (CallOut, "serialization"),
            (CallPage, "serialization"),
            (CallQuery, "validation"),
            (ErrorOut, "serialization"),
        ],
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = definitions.get("$defs", {})

    def body(model: type[BaseModel], mode: Literal["validation", "serialization"]) -> dict[str, Any]:
        return {"application/json": {"schema": refs[(model, mode)]}}

    query_schema = schemas[refs[(CallQuery, "validation")]["$ref"].rsplit("/", 1)[-1]]
    call_filters = [
        {"name": name, "in": "query", "required": False, "schema": schema}
        for name, schema in query_schema["properties"].items()
    ]
    secured: list[dict[str, list[str]]] = [{"siteSecret": []}]
    order_id = {"name": "order_id", "in": "path", "required": True, "schema": {"type": "string"}}
    call_id = {"name": "call_id", "in": "path", "required": True, "schema": {"type": "string"}}
    site_key = {"name": "site_key", "in": "path", "required": True, "schema": {"type": "string"}}
    webhook_body = {"description": "The platform's order JSON, signed.", "required": True}
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "callserver API",
            "version": "1",
            "description": "Orders for attribution, and call records. The bearer token is the site secret.",
        },
        "servers": [{"url": "/"}],
        "paths": {
            f"{PREFIX}/orders": {
                "post": {
                    "operationId": "reportOrder",
                    "summary": "Report an order; idempotent per order_id (again: 200 and the stored order).",
                    "security": secured,
                    "requestBody": {"required": True, "content": body(OrderIn, "validation")},
                    "responses": {
                        "201": {
                            "description": "Stored and attributed.",
                            "content": body(OrderOut, "serialization"),
                        },
                        "200": {
                            "description": "Known already (total updated).",
                            "content": body(OrderOut, "serialization"),
                        },
                        **_error_responses(400, 401, 413),
                    },
                }
            },
            f"{PREFIX}/orders/{{order_id}}": {
                "get": {
                    "operationId": "getOrder",
                    "summary": "An order with its attribution.",
                    "security": secured,
                    "parameters": [order_id],
                    "responses": {
                        "200": {"description": "The order.", "content": body(OrderOut, "serialization")},
                        **_error_responses(401, 404),
                    },
                }
            },
            f"{PREFIX}/calls": {
                "get": {
                    "operationId": "listCalls",
                    "summary": "Call records, newest first, a page at a time.",
                    "security": secured,
                    "parameters": call_filters,
                    "responses": {
                        "200": {"description": "One page.", "content": body(CallPage, "serialization")},
                        **_error_responses(400, 401),
                    },
                }
            },
            f"{PREFIX}/calls/{{call_id}}": {
                "get": {
                    "operationId": "getCall",
                    "summary": "One call record.",
                    "security": secured,
                    "parameters": [call_id],
                    "responses": {
                        "200": {"description": "The call.", "content": body(CallOut, "serialization")},
                        **_error_responses(401, 404),
                    },
                }
            },
            "/hooks/shopify/{site_key}/orders": {
                "post": {
                    "operationId": "shopifyOrderWebhook",
                    "summary": "Shopify orders/create, orders/updated, orders/paid (X-Shopify-Hmac-Sha256).",
                    "parameters": [site_key],
                    "requestBody": {
                        **webhook_body,
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "responses": {"200": {"description": "Handled."}, **_error_responses(400, 401, 404, 413)},
                }
            },
            "/hooks/woocommerce/{site_key}/orders": {
                "post": {
                    "operationId": "woocommerceOrderWebhook",
                    "summary": "WooCommerce order.created/updated (X-WC-Webhook-Signature); pings get 200.",
                    "parameters": [site_key],
                    "requestBody": {
                        **webhook_body,
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "responses": {"200": {"description": "Handled."}, **_error_responses(400, 401, 404, 413)},
                }
            },
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "siteSecret": {"type": "http", "scheme": "bearer", "description": "The site secret."}
            },
        },
    }
    return json.dumps(document, indent=2)


async def openapi(request: web.Request) -> web.Response:
    return web.Response(text=openapi_json(), content_type="application/json")


def add_routes(app: web.Application) -> None:
    app.router.add_post(f"{PREFIX}/orders", post_order)
    # `[^/]+`: the default pattern leaves out `{` and `}`, and such an id would get the router's
    # plain-text 404 instead of the API's JSON one.
    app.router.add_get(f"{PREFIX}/orders/{{order_id:[^/]+}}", get_order)
    app.router.add_get(f"{PREFIX}/calls", list_calls)
    app.router.add_get(f"{PREFIX}/calls/{{call_id:[^/]+}}", get_call)
    app.router.add_get(f"{PREFIX}/openapi.json", openapi)
