"""Order webhooks from Shopify and WooCommerce, verified by each platform's own HMAC signature.

Every topic of an order's life lands on the one URL per platform (`X-Shopify-Topic`,
`X-WC-Webhook-Topic`): created, updated, paid, cancelled, refunded, deleted. A topic we do not handle
is answered 200 (so the platform does not retry it for days) and logged once per site and topic.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
from decimal import Decimal
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from callserver import events, sites
from callserver.errors import UnknownSite
from callserver.events import EventSink
from callserver.orders.intake import (
    MAX_TOTAL,
    Intake,
    OrderReport,
    OrderStatus,
    RefundReport,
    Source,
    find_order,
    first_delivery,
    record_order,
    record_refund,
)
from callserver.store.models import Site
from callserver.web import openapi
from callserver.web.bodies import UtcDateTime, parse_json, read_body, refuse_large_body, validate
from callserver.web.errors import HttpError, json_errors
from callserver.web.keys import DATABASE
from callserver.web.openapi import Answer, Operation

log = logging.getLogger(__name__)

# The widget writes the visitor token into the cart's attributes under this name.
VISITOR_ATTRIBUTE = "callbutton_visitor"
SHOPIFY_ORDER_TOPICS = {"orders/create", "orders/updated", "orders/paid", "orders/cancelled"}
SHOPIFY_REFUND_TOPIC = "refunds/create"
WOOCOMMERCE_ORDER_TOPICS = {"order.created", "order.updated", "order.restored"}
WOOCOMMERCE_DELETED = "order.deleted"
# Where `order.attributed` goes (the outbound webhooks put their sink here; none: nobody listens).
ORDER_EVENTS = web.AppKey("order_events", EventSink)
# (platform, site key, topic) already logged as unknown: each is logged once, not on every delivery.
UNKNOWN_TOPICS = web.AppKey("unknown_hook_topics", set[tuple[str, str, str]])


async def announce_attributed(app: web.Application, site_id: int, order_id: str) -> None:
    """Publish `order.attributed` (call it once the order is committed: listeners read it back)."""
    sink = app.get(ORDER_EVENTS)
    if sink is not None:
        await sink.publish(site_id, events.ORDER_ATTRIBUTED, {"id": order_id})


def _ignored_topic(request: web.Request, platform: str, topic: str) -> web.Response:
    seen = request.app.get(UNKNOWN_TOPICS)
    entry = (platform, request.match_info["site_key"][:64], topic[:100])
    if seen is not None and entry not in seen:
        seen.add(entry)
        log.info("%s hook for site %s: topic %r is not handled; answered 200 and ignored", *entry)
    return web.json_response({"status": "ignored", "topic": topic})


# WooCommerce's ping when a webhook is created: `webhook_id=N`, form-encoded, unsigned (deliver_ping).
WOOCOMMERCE_PING = re.compile(rb"webhook_id=\d+")


def signature_matches(secret: str, body: bytes, signature: str | None) -> bool:
    """base64(HMAC-SHA256(raw body, secret)) as both platforms send it, compared in constant time."""
    if not signature:
        return False
    expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
    return hmac.compare_digest(expected, signature.strip().encode("ascii", "replace"))


async def _site(request: web.Request, session: AsyncSession) -> Site:
    try:
        return await sites.site_by_key(session, request.match_info["site_key"])
    except UnknownSite as e:
        raise HttpError(404, "not_found", e.message) from e


async def _verified_site(
    request: web.Request, session: AsyncSession, body: bytes, signature_header: str
) -> Site:
    """The site of the URL, when the body carries its signature; checked before the body is parsed."""
    site = await _site(request, session)
    if not signature_matches(site.webhook_secret or site.secret, body, request.headers.get(signature_header)):
        raise HttpError(
            401, "bad_signature", f"The {signature_header} header is missing or does not match the body."
        )
    return site


def _text(value: object) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value).strip()
    return text or None


class _Platform(BaseModel):
    model_config = ConfigDict(extra="ignore")


# Bounded like the API's totals: what `orders.total` holds, and quantizing to cents stays exact.
Total = Annotated[Decimal, Field(ge=0, lt=MAX_TOTAL)]


# ---- Shopify ----


class ShopifyAttribute(_Platform):
    name: object = None
    value: object = None


class ShopifyCustomer(_Platform):
    email: str | None = None
    phone: str | None = None


class ShopifyAddress(_Platform):
    phone: str | None = None


class ShopifyTransaction(_Platform):
    """A transaction of a refund: `kind` refund and `status` success is money that went back."""

    kind: str | None = None
    status: str | None = None
    amount: Total = Decimal(0)


class ShopifyRefund(_Platform):
    """Shopify's refund JSON (the `refunds/create` body, and each of an order's `refunds`)."""

    id: int | str
    order_id: int | str | None = None
    created_at: UtcDateTime | None = None
    transactions: list[ShopifyTransaction] = []

    @property
    def amount(self) -> Decimal:
        # Failed or pending refund transactions returned nothing (yet); a transaction without a
        # status is taken as done, as in payloads that leave it out.
        returned = [
            t.amount
            for t in self.transactions
            if (t.kind or "refund") == "refund" and (t.status or "success") == "success"
        ]
        return sum(returned, Decimal(0)).quantize(Decimal("0.01"))


# Shopify's `financial_status` in the words of an order's life.
SHOPIFY_STATUS = {
    "pending": OrderStatus.PENDING,
    "authorized": OrderStatus.PENDING,
    "partially_paid": OrderStatus.PENDING,
    "paid": OrderStatus.PAID,
    "partially_refunded": OrderStatus.PARTIALLY_REFUNDED,
    "refunded": OrderStatus.REFUNDED,
    "voided": OrderStatus.CANCELLED,
}


class ShopifyOrder(_Platform):
    """The fields of Shopify's order JSON that attribution and the order's life need."""

    id: int | str
    name: str | None = None
    total_price: Total
    currency: str = Field(pattern=r"^[A-Za-z]{3}$")
    email: str | None = None
    contact_email: str | None = None
    phone: str | None = None
    created_at: UtcDateTime | None = None
    updated_at: UtcDateTime | None = None
    cancelled_at: UtcDateTime | None = None
    financial_status: str | None = None
    refunds: list[ShopifyRefund] | None = None
    note_attributes: list[ShopifyAttribute] | None = None
    customer: ShopifyCustomer | None = None
    billing_address: ShopifyAddress | None = None
    shipping_address: ShopifyAddress | None = None

    def status(self, topic: str) -> OrderStatus | None:
        if self.cancelled_at is not None or topic == "orders/cancelled":
            return OrderStatus.CANCELLED
        return SHOPIFY_STATUS.get((self.financial_status or "").lower())

    def report(self, topic: str = "orders/create") -> OrderReport:
        attributes = {_text(a.name): _text(a.value) for a in self.note_attributes or []}
        customer = self.customer or ShopifyCustomer()
        phones = [
            self.phone,
            customer.phone,
            (self.billing_address or ShopifyAddress()).phone,
            (self.shipping_address or ShopifyAddress()).phone,
        ]
        return OrderReport(
            # The numeric id is stable; the name ("#1001") is what people see and may be reformatted.
            order_id=str(self.id),
            number=_text(self.name),
            total=self.total_price.quantize(Decimal("0.01")),
            currency=self.currency.upper(),
            created_at=self.created_at,
            visitor_token=(attributes.get(VISITOR_ATTRIBUTE) or "")[:64] or None,
            email=_text(self.email) or _text(self.contact_email) or _text(customer.email),
            phone=next((p for p in map(_text, phones) if p), None),
            status=self.status(topic),
            refunds=({str(r.id): r.amount for r in self.refunds} if self.refunds is not None else None),
            updated_at=self.updated_at,
        )


@json_errors
async def shopify_orders(request: web.Request) -> web.StreamResponse:
    refuse_large_body(request)
    body = await read_body(request)
    async with request.app[DATABASE].session() as session:
        site = await _verified_site(request, session, body, "X-Shopify-Hmac-Sha256")
        topic = request.headers.get("X-Shopify-Topic", "")
        # Shopify delivers again when it saw no 200 in time; the webhook id stays the same on every retry.
        delivery = request.headers.get("X-Shopify-Webhook-Id") or request.headers.get("X-Shopify-Event-Id")
        if topic == SHOPIFY_REFUND_TOPIC:
            refund = validate(ShopifyRefund, parse_json(body))
            if refund.order_id is None:
                raise HttpError(400, "invalid", "order_id: a refund names its order.")
            return await _refund(session, site, refund, delivery)
        if topic not in SHOPIFY_ORDER_TOPICS:
            return _ignored_topic(request, "shopify", topic)
        report = validate(ShopifyOrder, parse_json(body)).report(topic)
        answer, intake = await _record(session, site, report, Source.SHOPIFY, delivery)
    if intake is not None and intake.attributed:
        await announce_attributed(request.app, site.id, intake.order.order_id)
    return answer


async def _refund(
    session: AsyncSession, site: Site, refund: ShopifyRefund, delivery: str | None
) -> web.Response:
    order_id = str(refund.order_id)
    if delivery and not await first_delivery(session, site, Source.SHOPIFY, delivery):
        return web.json_response({"status": "duplicate", "order_id": order_id})
    intake = await record_refund(
        session, site, RefundReport(order_id, str(refund.id), refund.amount, refund.created_at)
    )
    if intake is None:
        # Shopify also sends orders/updated with the refund in it, which finds the order once it is here.
        return web.json_response({"status": "ignored", "reason": "unknown_order", "order_id": order_id})
    return web.json_response({"status": "updated", "order_id": order_id})


# ---- WooCommerce ----


class WooAddress(_Platform):
    email: str | None = None
    phone: str | None = None


class WooMeta(_Platform):
    key: object = None
    value: object = None


class WooRefund(_Platform):
    """One of an order's `refunds`: WooCommerce writes its total as a negative string ("-10.00")."""

    id: int | str
    total: Annotated[Decimal, Field(gt=-MAX_TOTAL, le=0)]


# WooCommerce's order statuses in the words of an order's life; a shop's own statuses keep what is stored.
WOO_STATUS = {
    "pending": OrderStatus.PENDING,
    "on-hold": OrderStatus.PENDING,
    "processing": OrderStatus.PAID,
    "completed": OrderStatus.PAID,
    "refunded": OrderStatus.REFUNDED,
    "cancelled": OrderStatus.CANCELLED,
    "failed": OrderStatus.CANCELLED,  # the payment failed: nothing was sold
    "trash": OrderStatus.CANCELLED,
}


class WooDeleted(_Platform):
    """`order.deleted` carries only the order's id."""

    id: int


class WooOrder(_Platform):
    """The fields of WooCommerce's order JSON (REST API v3 shape) that attribution and its life need."""

    id: int
    number: str | int | None = None
    status: str | None = None
    total: Total
    currency: str = Field(pattern=r"^[A-Za-z]{3}$")
    # WooCommerce writes `*_gmt` times without an offset; they are UTC by name.
    date_created_gmt: UtcDateTime | None = None
    date_modified_gmt: UtcDateTime | None = None
    billing: WooAddress | None = None
    shipping: WooAddress | None = None
    meta_data: list[WooMeta] | None = None
    refunds: list[WooRefund] | None = None

    def report(self) -> OrderReport:
        meta = {_text(m.key): _text(m.value) for m in self.meta_data or []}
        token = meta.get(VISITOR_ATTRIBUTE) or meta.get("_" + VISITOR_ATTRIBUTE)
        billing = self.billing or WooAddress()
        return OrderReport(
            order_id=str(self.id),
            number=_text(self.number),
            total=self.total.quantize(Decimal("0.01")),
            currency=self.currency.upper(),
            created_at=self.date_created_gmt,
            visitor_token=(token or "")[:64] or None,
            email=_text(billing.email),
            phone=_text(billing.phone) or _text((self.shipping or WooAddress()).phone),
            status=WOO_STATUS.get((self.status or "").lower()),
            refunds=(
                {str(r.id): -r.total.quantize(Decimal("0.01")) for r in self.refunds}
                if self.refunds is not None
                else None
            ),
            updated_at=self.date_modified_gmt,
        )


@json_errors
async def woocommerce_orders(request: web.Request) -> web.StreamResponse:
    refuse_large_body(request)
    body = await read_body(request)
    async with request.app[DATABASE].session() as session:
        if "X-WC-Webhook-Signature" not in request.headers and WOOCOMMERCE_PING.fullmatch(body.strip()):
            # WooCommerce saves a webhook only when this unsigned ping gets a 200; it carries no order.
            await _site(request, session)
            return web.json_response({"status": "pong"})
        site = await _verified_site(request, session, body, "X-WC-Webhook-Signature")
        topic = request.headers.get("X-WC-Webhook-Topic", "")
        if topic == WOOCOMMERCE_DELETED:
            return await _deleted(session, site, validate(WooDeleted, parse_json(body)))
        if topic not in WOOCOMMERCE_ORDER_TOPICS:
            return _ignored_topic(request, "woocommerce", topic)
        order = validate(WooOrder, parse_json(body))
        if order.status == "checkout-draft":
            # The block checkout saves a draft before the shopper pays: not an order yet.
            return web.json_response({"status": "ignored", "reason": "checkout-draft"})
        # WooCommerce's delivery id is new on every attempt, so the order id alone keeps this idempotent.
        answer, intake = await _record(session, site, order.report(), Source.WOOCOMMERCE, None)
    if intake is not None and intake.attributed:
        await announce_attributed(request.app, site.id, intake.order.order_id)
    return answer


async def _deleted(session: AsyncSession, site: Site, deleted: WooDeleted) -> web.Response:
    """A deleted (or trashed) order sold nothing: it stays, cancelled, so its history is kept."""
    order = await find_order(session, site.id, str(deleted.id))
    if order is None:
        return web.json_response(
            {"status": "ignored", "reason": "unknown_order", "order_id": str(deleted.id)}
        )
    report = OrderReport(
        order_id=order.order_id,
        total=order.total,
        currency=order.currency,
        status=OrderStatus.CANCELLED,
        # The deletion carries no time of its own: it is the latest word on the order.
        updated_at=None,
    )
    await record_order(session, site, report, Source.WOOCOMMERCE)
    return web.json_response({"status": "updated", "order_id": order.order_id})


async def _record(
    session: AsyncSession, site: Site, report: OrderReport, source: Source, delivery: str | None
) -> tuple[web.Response, Intake | None]:
    if delivery and not await first_delivery(session, site, source, delivery):
        return web.json_response({"status": "duplicate", "order_id": report.order_id}), None
    intake = await record_order(session, site, report, source)
    answer: dict[str, object] = {"status": "updated", "order_id": intake.order.order_id}
    if intake.created:
        answer["status"] = "created"
    elif intake.ignored is not None:
        answer = {"status": "ignored", "reason": intake.ignored.value, "order_id": intake.order.order_id}
    return web.json_response(answer), intake


SIGNED_BODY = "The platform's order JSON, signed."
OPERATIONS = (
    Operation(
        "post",
        "/hooks/shopify/{site_key}/orders",
        shopify_orders,
        "shopifyOrderWebhook",
        "Shopify orders/create, orders/updated, orders/paid, orders/cancelled and refunds/create "
        "(X-Shopify-Topic, X-Shopify-Hmac-Sha256); an update older than the stored one is ignored; "
        "other topics: 200, ignored.",
        body=ShopifyOrder,
        body_description=SIGNED_BODY,
        answers=(Answer(200, "Handled."),),
        errors=(400, 401, 404, 413),
        secured=False,
    ),
    Operation(
        "post",
        "/hooks/woocommerce/{site_key}/orders",
        woocommerce_orders,
        "woocommerceOrderWebhook",
        "WooCommerce order.created, order.updated, order.deleted (X-WC-Webhook-Topic, "
        "X-WC-Webhook-Signature); an update older than the stored one is ignored; other topics and "
        "pings: 200.",
        body=WooOrder,
        body_description=SIGNED_BODY,
        answers=(Answer(200, "Handled."),),
        errors=(400, 401, 404, 413),
        secured=False,
    ),
)


def add_routes(app: web.Application) -> None:
    app[UNKNOWN_TOPICS] = set()
    openapi.add_routes(app, OPERATIONS)
