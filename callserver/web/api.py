"""The REST API under `/api/v1/` (bearer token: the site secret) and its OpenAPI document."""

from __future__ import annotations

import base64
import hmac
import json
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Literal
from urllib.parse import quote

from aiohttp import web
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callserver.calls.records import CALL_ID_LENGTH, CallFilter, Keyset, call_of_site, calls_of_site
from callserver.calls.states import CallState, EndReason
from callserver.errors import NotFound
from callserver.orders import revenue
from callserver.orders.intake import (
    MAX_TOTAL,
    TEXT_LIMITS,
    Ignored,
    OrderReport,
    OrderStatus,
    Source,
    order_of_site,
    record_order,
)
from callserver.reports import sources as source_report
from callserver.store.models import Call, ConversationOutcome, Order, Site, User
from callserver.web import hooks, openapi
from callserver.web.bodies import UtcDateTime, parse_json, read_body, refuse_large_body, validate
from callserver.web.errors import HttpError, json_errors
from callserver.web.keys import DATABASE
from callserver.web.openapi import Answer, Operation

PREFIX = "/api/v1"
# What `_cursor` hands out is about 80 characters.
MAX_CURSOR = 200
# A revenue report covers at most this many days (a few years; beyond that a date is a typo).
MAX_REPORT_DAYS = 3 * 366


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


def _cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _blank_to_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


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
    status: OrderStatus | None = Field(
        default=None,
        description="Where the order is in its life. Default: as stored (a new order: paid, or refunded "
        "as far as refunded_total says). A cancelled order counts 0 in every revenue figure.",
    )
    refunded_total: Annotated[Money | None, Field(description="All refunds so far (not this one's).")] = None
    updated_at: UtcDateTime | None = Field(
        default=None,
        description="When the shop last changed the order. A report older than the stored updated_at "
        "changes nothing (the answer says `ignored: stale`). Default: now.",
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
            status=self.status,
            refunded_total=self.refunded_total,
            updated_at=self.updated_at,
        )


# How the visitor was found, as the API names it (`token` is stored; the API says what token).
BY = {"token": "visitor_token", "email": "email", "phone": "phone", "manual": "manual"}


class AttributedByUser(BaseModel):
    id: int
    email: str | None = Field(description="null once the account is gone.")


class AttributionOut(BaseModel):
    """Which conversation sold the order, and why it was credited to it."""

    channel: Literal["call", "chat", "message"] | None = Field(description="null: no conversation sold it.")
    conversation_id: str | None = Field(description="The call's, chat's or left message's id.")
    attributed_by: Literal["token", "email", "phone", "manual"] | None = Field(
        description="As stored; `by` says the same in words."
    )
    by: Literal["visitor_token", "email", "phone", "manual"] | None = Field(
        description="How the conversation was found: the order's visitor token, e-mail or phone matched "
        "the visitor's, or an owner attributed it by hand (`by_user`). The model is the visitor's last "
        "conversation within the site's attribution window before the order."
    )
    by_user: AttributedByUser | None = Field(description="Who attributed it by hand.")


class OrderOut(BaseModel):
    order_id: str
    number: str | None
    total: Money
    currency: str
    status: OrderStatus
    refunded_total: Money = Field(description="Refunds so far; revenue is total less this (0 if cancelled).")
    created_at: datetime
    updated_at: datetime = Field(description="When the shop last changed the order (as it said).")
    received_at: datetime
    source: Literal["api", "shopify", "woocommerce"]
    attribution: AttributionOut

    @classmethod
    def of(cls, order: Order, by_user: User | None = None) -> OrderOut:
        """The order as the API shows it; `by_user` is the account that attributed it by hand."""
        user = None
        if order.attributed_by_user_id is not None:
            user = AttributedByUser(id=order.attributed_by_user_id, email=by_user.email if by_user else None)
        return cls(
            order_id=order.order_id,
            number=order.number,
            total=order.total,
            currency=order.currency,
            status=OrderStatus(order.status),
            refunded_total=order.refunded_total,
            created_at=order.created_at,
            updated_at=order.updated_at or order.received_at,
            received_at=order.received_at,
            source=order.source,
            attribution=AttributionOut(
                channel=order.channel,
                conversation_id=order.conversation_id,
                attributed_by=order.attributed_by,
                by=BY.get(order.attributed_by) if order.attributed_by else None,
                by_user=user,
            ),
        )


async def order_out(session: AsyncSession, order: Order) -> OrderOut:
    """`OrderOut.of` with the account that attributed the order by hand looked up (the API's order)."""
    user = await session.get(User, order.attributed_by_user_id) if order.attributed_by_user_id else None
    return OrderOut.of(order, user)


class OrderAnswer(OrderOut):
    """The stored order after a report; `ignored` says why the report changed nothing."""

    ignored: Literal["stale"] | None = Field(
        default=None,
        description="stale: the report's updated_at is older than the stored one (an out-of-order "
        "delivery); the answer is the stored order, unchanged.",
    )


# The revenue report's cuts: the orders' own (channel, operator) and where conversations come from.
GROUPINGS: dict[str, revenue.Grouping] = {**revenue.GROUPINGS, **source_report.GROUPINGS}


class RevenueQuery(BaseModel):
    """Filters of `GET /api/v1/reports/revenue`."""

    model_config = ConfigDict(extra="ignore")

    from_: date = Field(alias="from", description="First day (UTC), inclusive.")
    to: date = Field(description="Last day (UTC), inclusive.")
    by: str = Field(
        default="channel",
        description="How to cut the report: " + ", ".join(GROUPINGS) + ".",
        json_schema_extra={"enum": list(GROUPINGS)},
    )


class RevenueRowOut(BaseModel):
    key: str | None = Field(
        description="The channel (call, chat, message), or the operator's e-mail (null: nobody answered, "
        "a left message), or the last touch's source or campaign (`(direct)`, `(not set)` when it had none)."
    )
    conversations: int = Field(description="The key's conversations begun in the period.")
    orders: int = Field(description="Orders placed in the period and credited to it; cancelled ones not.")
    revenue: Money = Field(description="Their totals less refunds, in `currency`.")
    refunded: Money = Field(description="Their refunds, in `currency`.")
    currency: str | None = Field(description="null on the row of a key that sold nothing.")


class RevenueReport(BaseModel):
    rows: list[RevenueRowOut] = Field(description="One per key and currency: currencies are never added up.")


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
    context: dict[str, object] = Field(
        description="UTM, search query, cart and product values, setContext()."
    )
    country: str | None
    device: str | None


class LinkedOrder(BaseModel):
    order_id: str
    total: Money
    currency: str
    created_at: datetime


class CsatOut(BaseModel):
    score: int = Field(ge=1, le=5, description="The shopper's rating, 1 (bad) to 5 (great).")
    comment: str | None = Field(description="What the shopper wrote with it, if anything.")


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
    quality: dict[str, object] | None = Field(
        description="Loss, jitter, RTT, relayed, as measured at the end."
    )
    recorded: bool
    orders: list[LinkedOrder] = Field(description="Orders attributed to this call.")
    csat: CsatOut | None = Field(
        default=None, description="The shopper's rating after the call; null until rated."
    )

    @classmethod
    def of(cls, call: Call, orders: list[Order], csat: CsatOut | None = None) -> CallOut:
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
            csat=csat,
        )


async def ratings_of(session: AsyncSession, call_ids: list[str]) -> dict[str, CsatOut]:
    """The shoppers' ratings of these calls, by call id (a call not rated is not in it)."""
    if not call_ids:
        return {}
    rows = await session.execute(
        select(
            ConversationOutcome.conversation_id,
            ConversationOutcome.csat_score,
            ConversationOutcome.csat_comment,
        ).where(
            ConversationOutcome.conversation_id.in_(call_ids),
            ConversationOutcome.csat_score.is_not(None),
        )
    )
    return {row[0]: CsatOut(score=row[1], comment=row[2]) for row in rows}


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
        stored = await order_out(session, intake.order)
        # `ignored` is there only when the report changed nothing: otherwise the answer is the order.
        out: OrderOut = stored
        if intake.ignored is Ignored.STALE:
            out = OrderAnswer(**stored.model_dump(), ignored="stale")
    if intake.attributed:
        await hooks.announce_attributed(request.app, site.id, intake.order.order_id)
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
        return _json(await order_out(session, order))


# ---- reports ----


@json_errors
async def revenue_report(request: web.Request) -> web.StreamResponse:
    query = validate(RevenueQuery, dict(request.query))
    if query.by not in GROUPINGS:
        raise HttpError(400, "unknown_grouping", f"by: one of {', '.join(GROUPINGS)}, not {query.by[:40]!r}.")
    if query.to < query.from_:
        raise HttpError(400, "invalid", "to: before from.")
    if (query.to - query.from_).days > MAX_REPORT_DAYS:
        raise HttpError(400, "invalid", f"to: at most {MAX_REPORT_DAYS} days after from.")
    async with request.app[DATABASE].session() as session:
        site = await authenticated_site(request, session)
        rows = await revenue.revenue_report(
            session, [site.id], revenue.Period(query.from_, query.to), query.by, GROUPINGS
        )
    return _json(RevenueReport(rows=[RevenueRowOut(**vars(row)) for row in rows]))


# ---- calls ----


def _cursor(end: Keyset) -> str:
    raw = json.dumps([end.created_at.isoformat(), end.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after_cursor(cursor: str) -> Keyset:
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
    return Keyset(when, call_id)


@json_errors
async def list_calls(request: web.Request) -> web.StreamResponse:
    query = validate(CallQuery, dict(request.query))
    after = _after_cursor(query.cursor) if query.cursor else None
    filters = CallFilter(state=query.state, end_reason=query.end_reason, since=query.since, until=query.until)
    async with request.app[DATABASE].session() as session:
        site = await authenticated_site(request, session)
        page = await calls_of_site(session, site.id, filters, after, query.limit)
        ratings = await ratings_of(session, [call.id for call in page.calls])
        out = CallPage(
            calls=[CallOut.of(call, page.orders[call.id], ratings.get(call.id)) for call in page.calls],
            next_cursor=_cursor(page.next) if page.next else None,
        )
    return _json(out)


@json_errors
async def get_call(request: web.Request) -> web.StreamResponse:
    async with request.app[DATABASE].session() as session:
        site = await authenticated_site(request, session)
        call, orders = await call_of_site(session, site.id, request.match_info["call_id"])
        ratings = await ratings_of(session, [call.id])
        return _json(CallOut.of(call, orders, ratings.get(call.id)))


# ---- routes and the OpenAPI document ----

# `[^/]+` in paths: the default pattern leaves out `{` and `}`, and such an id would get the
# router's plain-text 404 instead of the API's JSON one.
OPERATIONS = (
    Operation(
        "post",
        f"{PREFIX}/orders",
        post_order,
        "reportOrder",
        "Report an order; idempotent per order_id (again: 200 and the stored order).",
        body=OrderIn,
        answers=(
            Answer(201, "Stored and attributed.", OrderAnswer),
            Answer(
                200,
                "Known already: updated, or left as it was when the report is older than the stored "
                "updated_at (`ignored: stale`).",
                OrderAnswer,
            ),
        ),
        errors=(400, 401, 413),
    ),
    Operation(
        "get",
        f"{PREFIX}/orders/{{order_id:[^/]+}}",
        get_order,
        "getOrder",
        "An order with its status, refunds and attribution (and why it was attributed).",
        answers=(Answer(200, "The order.", OrderOut),),
        errors=(401, 404),
    ),
    Operation(
        "get",
        f"{PREFIX}/reports/revenue",
        revenue_report,
        "revenueReport",
        "Conversations, orders and net revenue per channel or operator and currency, days in UTC.",
        query=RevenueQuery,
        answers=(Answer(200, "The report.", RevenueReport),),
        errors=(400, 401),
    ),
    Operation(
        "get",
        f"{PREFIX}/calls",
        list_calls,
        "listCalls",
        "Call records, newest first, a page at a time.",
        query=CallQuery,
        answers=(Answer(200, "One page.", CallPage),),
        errors=(400, 401),
    ),
    Operation(
        "get",
        f"{PREFIX}/calls/{{call_id:[^/]+}}",
        get_call,
        "getCall",
        "One call record.",
        answers=(Answer(200, "The call.", CallOut),),
        errors=(401, 404),
    ),
)


def add_routes(app: web.Application) -> None:
    """The API's routes, and its OpenAPI document (which describes the order webhooks too)."""
    openapi.add_routes(app, OPERATIONS)
    openapi.add_document(
        app,
        f"{PREFIX}/openapi.json",
        (*OPERATIONS, *hooks.OPERATIONS),
        title="callserver API",
        description="Orders for attribution, and call records. The bearer token is the site secret.",
    )
