"""Order webhooks from Shopify and WooCommerce, verified by each platform's own HMAC signature."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from decimal import Decimal
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from callserver import sites
from callserver.errors import UnknownSite
from callserver.orders.intake import MAX_TOTAL, OrderReport, Source, first_delivery, record_order
from callserver.store.models import Site
from callserver.web import openapi
from callserver.web.bodies import UtcDateTime, parse_json, read_body, refuse_large_body, validate
from callserver.web.errors import HttpError, json_errors
from callserver.web.keys import DATABASE
from callserver.web.openapi import Answer, Operation

# The widget writes the visitor token into the cart's attributes under this name.
VISITOR_ATTRIBUTE = "callbutton_visitor"
SHOPIFY_ORDER_TOPICS = {"orders/create", "orders/updated", "orders/paid"}
WOOCOMMERCE_ORDER_TOPICS = {"order.created", "order.updated", "order.restored"}
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


class ShopifyOrder(_Platform):
    """The fields of Shopify's order JSON that attribution needs."""

    id: int | str
    name: str | None = None
    total_price: Total
    currency: str = Field(pattern=r"^[A-Za-z]{3}$")
    email: str | None = None
    contact_email: str | None = None
    phone: str | None = None
    created_at: UtcDateTime | None = None
    note_attributes: list[ShopifyAttribute] | None = None
    customer: ShopifyCustomer | None = None
    billing_address: ShopifyAddress | None = None
    shipping_address: ShopifyAddress | None = None

    def report(self) -> OrderReport:
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
        )


@json_errors
async def shopify_orders(request: web.Request) -> web.StreamResponse:
    refuse_large_body(request)
    body = await read_body(request)
    async with request.app[DATABASE].session() as session:
        site = await _verified_site(request, session, body, "X-Shopify-Hmac-Sha256")
        topic = request.headers.get("X-Shopify-Topic", "")
        if topic not in SHOPIFY_ORDER_TOPICS:
            return web.json_response({"status": "ignored", "topic": topic})
        report = validate(ShopifyOrder, parse_json(body)).report()
        # Shopify delivers again when it saw no 200 in time; the webhook id stays the same on every retry.
        delivery = request.headers.get("X-Shopify-Webhook-Id") or request.headers.get("X-Shopify-Event-Id")
        return await _record(session, site, report, Source.SHOPIFY, delivery)


# ---- WooCommerce ----


class WooAddress(_Platform):
    email: str | None = None
    phone: str | None = None


class WooMeta(_Platform):
    key: object = None
    value: object = None


class WooOrder(_Platform):
    """The fields of WooCommerce's order JSON (REST API v3 shape) that attribution needs."""

    id: int
    number: str | int | None = None
    status: str | None = None
    total: Total
    currency: str = Field(pattern=r"^[A-Za-z]{3}$")
    # WooCommerce writes `*_gmt` times without an offset; they are UTC by name.
    date_created_gmt: UtcDateTime | None = None
    billing: WooAddress | None = None
    shipping: WooAddress | None = None
    meta_data: list[WooMeta] | None = None

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
        if topic not in WOOCOMMERCE_ORDER_TOPICS:
            return web.json_response({"status": "ignored", "topic": topic})
        order = validate(WooOrder, parse_json(body))
        if order.status == "checkout-draft":
            # The block checkout saves a draft before the shopper pays: not an order yet.
            return web.json_response({"status": "ignored", "reason": "checkout-draft"})
        # WooCommerce's delivery id is new on every attempt, so the order id alone keeps this idempotent.
        return await _record(session, site, order.report(), Source.WOOCOMMERCE, None)


async def _record(
    session: AsyncSession, site: Site, report: OrderReport, source: Source, delivery: str | None
) -> web.Response:
    if delivery and not await first_delivery(session, site, source, delivery):
        return web.json_response({"status": "duplicate", "order_id": report.order_id})
    intake = await record_order(session, site, report, source)
    status = "created" if intake.created else "updated"
    return web.json_response({"status": status, "order_id": intake.order.order_id})


SIGNED_BODY = "The platform's order JSON, signed."
OPERATIONS = (
    Operation(
        "post",
        "/hooks/shopify/{site_key}/orders",
        shopify_orders,
        "shopifyOrderWebhook",
        "Shopify orders/create, orders/updated, orders/paid (X-Shopify-Hmac-Sha256).",
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
        "WooCommerce order.created/updated (X-WC-Webhook-Signature); pings get 200.",
        body=WooOrder,
        body_description=SIGNED_BODY,
        answers=(Answer(200, "Handled."),),
        errors=(400, 401, 404, 413),
        secured=False,
    ),
)


def add_routes(app: web.Application) -> None:
    openapi.add_routes(app, OPERATIONS)
