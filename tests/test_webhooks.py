"""Shopify and WooCommerce order webhooks: real payload shapes, real signatures, redeliveries, the ping."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from sqlalchemy import select

from callserver.store.models import Order, Site
from tests.conversations import add_call, add_chat, add_visitor
from tests.stack import Stack


def sign(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def shopify_order(
    created_at: datetime, token: str | None = "tok-anna", total: str = "199.00"
) -> dict[str, Any]:
    """Shaped like Shopify's orders/create payload (trimmed; unknown fields are ignored)."""
    return {
        "id": 820982911946154508,
        "admin_graphql_api_id": "gid://shopify/Order/820982911946154508",
        "name": "#1001",
        "order_number": 1001,
        "email": "anna@sofas.example",
        "contact_email": "anna@sofas.example",
        "phone": None,
        "created_at": created_at.astimezone(UTC).astimezone().isoformat(timespec="seconds"),
        "currency": "EUR",
        "presentment_currency": "EUR",
        "total_price": total,
        "subtotal_price": total,
        "total_tax": "31.77",
        "financial_status": "paid",
        "test": False,
        "note": None,
        "note_attributes": [{"name": "callbutton_visitor", "value": token}] if token else [],
        "customer": {"id": 115310627314723954, "email": "anna@sofas.example", "phone": "+4930123456"},
        "billing_address": {"first_name": "Anna", "city": "Berlin", "phone": "+49 30 123456"},
        "shipping_address": None,
        "line_items": [{"id": 866550311766439020, "title": "Blue sofa", "quantity": 1, "price": total}],
    }


def woo_order(created_at: datetime, meta_key: str = "_callbutton_visitor") -> dict[str, Any]:
    """Shaped like WooCommerce's order.created payload (REST API v3 order)."""
    return {
        "id": 727,
        "parent_id": 0,
        "number": "727",
        "order_key": "wc_order_58d2d042d1d",
        "created_via": "checkout",
        "status": "processing",
        "currency": "EUR",
        "date_created": created_at.isoformat(timespec="seconds").replace("+00:00", ""),
        "date_created_gmt": created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "discount_total": "0.00",
        "shipping_total": "10.00",
        "total": "89.90",
        "total_tax": "14.35",
        "customer_id": 0,
        "billing": {
            "first_name": "Ben",
            "last_name": "Doe",
            "email": "Ben@Sofas.example",
            "phone": "(555) 555-5555",
        },
        "shipping": {"first_name": "Ben", "last_name": "Doe"},
        "payment_method": "bacs",
        "meta_data": [
            {"id": 13106, "key": "_wc_order_attribution_source_type", "value": "typein"},
            {"id": 13107, "key": meta_key, "value": "tok-ben"},
        ],
        "line_items": [{"id": 315, "name": "Cushion", "quantity": 1, "total": "79.90"}],
    }


async def orders(stack: Stack) -> list[Order]:
    async with stack.database.session() as session:
        return list(await session.scalars(select(Order).order_by(Order.id)))


async def shopify_post(
    http: aiohttp.ClientSession,
    stack: Stack,
    payload: dict[str, Any],
    secret: str | None = None,
    webhook_id: str | None = None,
    topic: str = "orders/create",
    signature: str | None = None,
) -> tuple[int, dict[str, Any]]:
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": "sofas.myshopify.com",
        "X-Shopify-API-Version": "2025-01",
        "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
        "X-Shopify-Event-Id": str(uuid.uuid4()),
        "X-Shopify-Triggered-At": datetime.now(UTC).isoformat(),
    }
    if signature != "":
        headers["X-Shopify-Hmac-Sha256"] = signature or sign(secret or stack.site.secret, body)
    async with http.post(
        f"{stack.url}/hooks/shopify/{stack.site.key}/orders", data=body, headers=headers
    ) as r:
        return r.status, await r.json()


async def woo_post(
    http: aiohttp.ClientSession,
    stack: Stack,
    payload: dict[str, Any],
    topic: str = "order.created",
    signature: str | None = None,
) -> tuple[int, dict[str, Any]]:
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "WooCommerce/9.0.0 Hookshot (WordPress/6.5.0)",
        "X-WC-Webhook-Source": "https://sofas.example/",
        "X-WC-Webhook-Topic": topic,
        "X-WC-Webhook-Resource": topic.split(".")[0],
        "X-WC-Webhook-Event": topic.split(".")[1],
        "X-WC-Webhook-ID": "12",
        "X-WC-Webhook-Delivery-ID": uuid.uuid4().hex,
    }
    if signature != "":
        headers["X-WC-Webhook-Signature"] = signature or sign(stack.site.secret, body)
    async with http.post(
        f"{stack.url}/hooks/woocommerce/{stack.site.key}/orders", data=body, headers=headers
    ) as r:
        return r.status, await r.json()


async def test_shopify_order_is_stored_and_attributed_by_the_cart_attribute(stack: Stack) -> None:
    now = datetime.now(UTC)
    async with stack.database.session() as session:
        anna = await add_visitor(session, stack.site.id, "tok-anna")
        call = await add_call(session, stack.site.id, anna, now - timedelta(days=2))
    async with aiohttp.ClientSession() as http:
        status, answer = await shopify_post(http, stack, shopify_order(now))
        assert (status, answer["status"]) == (200, "created")
        async with http.get(
            f"{stack.url}/api/v1/orders/820982911946154508",
            headers={"Authorization": f"Bearer {stack.site.secret}"},
        ) as response:
            order = await response.json()
    assert order["number"] == "#1001" and order["source"] == "shopify"
    assert (order["total"], order["currency"]) == ("199.00", "EUR")
    assert order["attribution"] == {
        "channel": "call",
        "conversation_id": call.id,
        "attributed_by": "token",
        "by": "visitor_token",
        "by_user": None,
    }
    [row] = await orders(stack)
    assert (row.email, row.phone) == ("anna@sofas.example", "+4930123456")
    assert abs(row.created_at - now) < timedelta(seconds=1)


async def test_shopify_redelivery_and_updates_keep_one_order(stack: Stack) -> None:
    now = datetime.now(UTC)
    async with aiohttp.ClientSession() as http:
        status, first = await shopify_post(http, stack, shopify_order(now), webhook_id="wh-1")
        assert (status, first["status"]) == (200, "created")
        # The same delivery again (Shopify saw no 200 in time): nothing changes, even a different body.
        status, again = await shopify_post(http, stack, shopify_order(now, total="1.00"), webhook_id="wh-1")
        assert (status, again["status"]) == (200, "duplicate")
        # orders/updated with a new total: the order's total follows.
        status, updated = await shopify_post(
            http, stack, shopify_order(now, total="149.00"), webhook_id="wh-2", topic="orders/updated"
        )
        assert (status, updated["status"]) == (200, "updated")
        # Topics that are no orders are acknowledged and left alone.
        status, ignored = await shopify_post(http, stack, {"id": 1}, topic="products/create")
        assert (status, ignored["status"]) == (200, "ignored")
    assert [(o.order_id, str(o.total)) for o in await orders(stack)] == [("820982911946154508", "149.00")]


async def test_shopify_bad_or_missing_signature_stores_nothing(stack: Stack) -> None:
    payload = shopify_order(datetime.now(UTC))
    async with aiohttp.ClientSession() as http:
        for signature in ("", sign("sk_not_the_secret", json.dumps(payload).encode()), "bm90IGJhc2U2NA=="):
            status, answer = await shopify_post(http, stack, payload, signature=signature)
            assert (status, answer["error"]["code"]) == (401, "bad_signature")
        # Signed over a different body than the one sent (tampered on the way).
        status, answer = await shopify_post(
            http, stack, payload, signature=sign(stack.site.secret, json.dumps({**payload, "x": 1}).encode())
        )
        assert status == 401
        async with http.post(f"{stack.url}/hooks/shopify/site_unknown/orders", data=b"{}") as response:
            assert response.status == 404
    assert await orders(stack) == []


async def test_a_webhook_secret_replaces_the_site_secret(stack: Stack) -> None:
    # Shopify signs with the app's or the store's own secret, which the owner copies into the site.
    async with stack.database.session() as session:
        site = await session.get(Site, stack.site.id)
        assert site is not None
        site.webhook_secret = "shpss_0123456789abcdef"
    payload = shopify_order(datetime.now(UTC))
    async with aiohttp.ClientSession() as http:
        status, _ = await shopify_post(http, stack, payload)
        assert status == 401
        status, answer = await shopify_post(http, stack, payload, secret="shpss_0123456789abcdef")
        assert (status, answer["status"]) == (200, "created")


async def test_woocommerce_ping_gets_200_and_stores_nothing(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{stack.url}/hooks/woocommerce/{stack.site.key}/orders",
            data={"webhook_id": "12"},  # form-encoded and unsigned, as WooCommerce sends it
            headers={"User-Agent": "WooCommerce/9.0.0 Hookshot (WordPress/6.5.0)"},
        ) as response:
            assert response.status == 200
        # Anything else unsigned is refused.
        status, answer = await woo_post(http, stack, woo_order(datetime.now(UTC)), signature="")
        assert (status, answer["error"]["code"]) == (401, "bad_signature")
    assert await orders(stack) == []


async def test_woocommerce_order_by_meta_token_or_billing_email(stack: Stack) -> None:
    now = datetime.now(UTC)
    async with stack.database.session() as session:
        ben = await add_visitor(session, stack.site.id, "tok-ben")
        chat = await add_chat(session, stack.site.id, ben, now - timedelta(hours=3))
        email_visitor = await add_visitor(session, stack.site.id, "tok-other", email="ben@sofas.example")
        call = await add_call(session, stack.site.id, email_visitor, now - timedelta(hours=1))
    async with aiohttp.ClientSession() as http:
        status, answer = await woo_post(http, stack, woo_order(now))
        assert (status, answer["status"]) == (200, "created")
        # No token in the meta data: the billing e-mail finds the visitor.
        second = {**woo_order(now, meta_key="_something_else"), "id": 728, "number": "728"}
        status, answer = await woo_post(http, stack, second)
        assert (status, answer["status"]) == (200, "created")
        # order.updated for a known order, and a deletion, keep one row per order.
        status, answer = await woo_post(http, stack, woo_order(now), topic="order.updated")
        assert (status, answer["status"]) == (200, "updated")
        status, answer = await woo_post(http, stack, {"id": 728}, topic="order.deleted")
        assert (status, answer["status"]) == (200, "updated")
        status, answer = await woo_post(http, stack, {"id": 999}, topic="order.deleted")
        assert (status, answer["status"], answer["reason"]) == (200, "ignored", "unknown_order")
        status, answer = await woo_post(http, stack, {"id": 729, "total": "oops"})
        assert (status, answer["error"]["code"]) == (400, "invalid")
        assert answer["error"]["message"].startswith("total")
    first, by_email = await orders(stack)
    assert (first.order_id, first.source, str(first.total), first.visitor_token) == (
        "727",
        "woocommerce",
        "89.90",
        "tok-ben",
    )
    assert (first.channel, first.conversation_id, first.attributed_by) == ("chat", chat.id, "token")
    assert (by_email.channel, by_email.conversation_id, by_email.attributed_by) == ("call", call.id, "email")
    # A deleted order is kept, cancelled: it sold nothing.
    assert (first.status, by_email.status) == ("paid", "cancelled")
    assert abs(first.created_at - now.replace(microsecond=0)) < timedelta(seconds=1)


async def test_a_body_over_one_megabyte_is_refused(stack: Stack) -> None:
    payload = {**shopify_order(datetime.now(UTC)), "note": "x" * (1024 * 1024)}
    async with aiohttp.ClientSession() as http:
        status, answer = await shopify_post(http, stack, payload)
    assert (status, answer["error"]["code"]) == (413, "too_large")
    assert await orders(stack) == []


async def test_signed_but_hostile_bodies_are_coded_400s_on_both_hooks(stack: Stack) -> None:
    """A correctly signed body is still checked: nesting, times and totals that were once 500s."""
    now = datetime.now(UTC)
    shopify = shopify_order(now)
    woo = woo_order(now)
    hooks = [
        ("shopify", "X-Shopify-Hmac-Sha256", {"X-Shopify-Topic": "orders/create"}, shopify, "total_price"),
        ("woocommerce", "X-WC-Webhook-Signature", {"X-WC-Webhook-Topic": "order.created"}, woo, "total"),
    ]
    async with aiohttp.ClientSession() as http:
        for platform, header, topic, order, total in hooks:
            time_field = "created_at" if platform == "shopify" else "date_created_gmt"
            bodies = [
                b"[" * 5000 + b"]" * 5000,
                json.dumps({**order, "x": json.loads("[" * 40 + "]" * 40)}).encode(),  # over 32 deep
                b"{not json",
                b'{"id": ' + b"7" * 5000 + b"}",
                json.dumps({**order, total: "1e30"}).encode(),
                json.dumps({**order, total: "1e12"}).encode(),
                json.dumps({**order, time_field: "0001-01-01T00:00:00+01:00"}).encode(),
                json.dumps({**order, time_field: "9999-12-31T23:59:59"}).encode(),
            ]
            for body in bodies:
                headers = {header: sign(stack.site.secret, body), **topic}
                async with http.post(
                    f"{stack.url}/hooks/{platform}/{stack.site.key}/orders", data=body, headers=headers
                ) as response:
                    answer = await response.json()
                    assert response.status == 400, (platform, body[:60], answer)
                    assert answer["error"]["code"] in ("bad_json", "invalid"), answer
    async with stack.database.session() as session:
        assert list(await session.scalars(select(Order))) == []
