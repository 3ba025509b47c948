"""An order's whole life, end to end: Shopify and WooCommerce deliveries (real headers, real HMAC
signatures) and API reports move an order through paid, refunded and cancelled; the overview, the
per-operator figures, the orders CSV and the revenue report all follow, net of refunds, per currency."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from callserver.store.models import Order, User
from tests.conversations import add_call, add_visitor
from tests.dashboard_support import add_owner, csrf_token, signed_in
from tests.stack import Stack
from tests.test_webhooks import shopify_order, shopify_post, sign, woo_order, woo_post

SHOPIFY_ID = "820982911946154508"


def bearer(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.site.secret}"}


async def api_order(http: aiohttp.ClientSession, stack: Stack, order_id: str) -> dict[str, Any]:
    async with http.get(f"{stack.url}/api/v1/orders/{order_id}", headers=bearer(stack)) as response:
        assert response.status == 200
        answer: dict[str, Any] = await response.json()
        return answer


async def post_order(http: aiohttp.ClientSession, stack: Stack, body: dict[str, Any]) -> tuple[int, Any]:
    async with http.post(f"{stack.url}/api/v1/orders", json=body, headers=bearer(stack)) as response:
        return response.status, await response.json()


async def report(
    http: aiohttp.ClientSession, stack: Stack, by: str, start: datetime, end: datetime | None = None
) -> tuple[int, Any]:
    query = {"from": start.date().isoformat(), "to": (end or start).date().isoformat(), "by": by}
    async with http.get(f"{stack.url}/api/v1/reports/revenue", params=query, headers=bearer(stack)) as r:
        return r.status, await r.json()


def stamp(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds")


def refund_payload(refund_id: int, amount: str, at: datetime, status: str = "success") -> dict[str, Any]:
    """Shaped like Shopify's refunds/create body (trimmed)."""
    return {
        "id": refund_id,
        "order_id": int(SHOPIFY_ID),
        "created_at": stamp(at),
        "processed_at": stamp(at),
        "note": "Damaged on arrival",
        "restock": False,
        "user_id": 548380009,
        "admin_graphql_api_id": f"gid://shopify/Refund/{refund_id}",
        "refund_line_items": [],
        "transactions": [
            {
                "id": refund_id + 1,
                "order_id": int(SHOPIFY_ID),
                "kind": "refund",
                "gateway": "bogus",
                "status": status,
                "amount": amount,
                "currency": "EUR",
                "parent_id": 389404469,
            }
        ],
        "order_adjustments": [],
    }


def overview_figures(html: str) -> dict[str, list[str]]:
    """`dash-revenue`'s figures per channel, one per currency."""
    [revenue] = re.findall(r'<dl class="facts" data-testid="dash-revenue">(.*?)</dl>', html, re.S)
    figures: dict[str, list[str]] = {}
    for channel, text in re.findall(r'<dd[^>]*data-channel="(\w+)">([^<]*)</dd>', revenue):
        if text != "—":
            figures.setdefault(channel, []).append(text)
    return figures


def operator_figures(html: str, name: str) -> list[str]:
    [row] = re.findall(rf'<tr data-operator="{re.escape(name)}">(.*?)</tr>', html, re.S)
    return re.findall(r'<span data-currency="\w+">([^<]*)</span>', row)


async def overview(stack: Stack, owner: str, day: datetime) -> str:
    async with signed_in(stack, owner) as client:
        query = f"?from={day.date().isoformat()}&to={day.date().isoformat()}"
        async with client.get("/dashboard/" + query) as response:
            assert response.status == 200
            return await response.text()


@pytest.fixture
async def sold(stack: Stack) -> dict[str, Any]:
    """An operator's answered call by Anna (visitor token tok-anna) two days ago, and an owner."""
    owner = "boss@sofas.example"
    await add_owner(stack, owner)
    operator = await add_owner(stack, "mia@sofas.example", role="operator")
    async with stack.database.session() as session:
        user = await session.get(User, operator)
        assert user is not None
        user.name = "Mia"
        anna = await add_visitor(session, stack.site.id, "tok-anna")
        call = await add_call(
            session, stack.site.id, anna, datetime.now(UTC) - timedelta(days=2), operator_id=operator
        )
    return {"owner": owner, "call": call.id, "operator": "Mia", "operator_email": "mia@sofas.example"}


async def test_a_shopify_order_through_paid_refund_and_cancellation(
    stack: Stack, sold: dict[str, Any]
) -> None:
    created = datetime.now(UTC) - timedelta(hours=5)
    placed = {**shopify_order(created), "financial_status": "pending", "updated_at": stamp(created)}
    async with aiohttp.ClientSession() as http:
        status, answer = await shopify_post(http, stack, placed, topic="orders/create")
        assert (status, answer["status"]) == (200, "created")
        order = await api_order(http, stack, SHOPIFY_ID)
        assert (order["status"], order["refunded_total"]) == ("pending", "0.00")

        paid_at = created + timedelta(minutes=10)
        paid = {**placed, "financial_status": "paid", "updated_at": stamp(paid_at)}
        status, answer = await shopify_post(http, stack, paid, topic="orders/paid")
        assert (status, answer["status"]) == (200, "updated")

        # A refund of 49.00 (Shopify's refunds/create), delivered twice with the same webhook id,
        # and then again under another id: it counts once.
        refund_at = created + timedelta(hours=1)
        for webhook_id in ("wh-refund-1", "wh-refund-1", "wh-refund-2"):
            status, answer = await shopify_post(
                http,
                stack,
                refund_payload(1001, "49.00", refund_at),
                topic="refunds/create",
                webhook_id=webhook_id,
            )
            assert status == 200 and answer["status"] in ("updated", "duplicate"), answer
        order = await api_order(http, stack, SHOPIFY_ID)
        assert (order["status"], order["refunded_total"]) == ("partially_refunded", "49.00")
        assert order["updated_at"].startswith(refund_at.strftime("%Y-%m-%dT%H:%M:%S"))
        # A refund whose transaction failed returned no money.
        status, _ = await shopify_post(
            http, stack, refund_payload(1002, "20.00", refund_at, status="failure"), topic="refunds/create"
        )
        assert (await api_order(http, stack, SHOPIFY_ID))["refunded_total"] == "49.00"

        html = await overview(stack, sold["owner"], created)
        assert overview_figures(html) == {"call": ["150.00 EUR"]}
        assert operator_figures(html, sold["operator"]) == ["150.00 EUR"]
        status, body = await report(http, stack, "operator", created)
        assert status == 200
        assert body["rows"] == [
            {
                "key": sold["operator_email"],
                "conversations": 0,  # the call was two days before the order's day
                "orders": 1,
                "revenue": "150.00",
                "refunded": "49.00",
                "currency": "EUR",
            }
        ]

        # An orders/updated from before the refund, delivered late: nothing changes.
        stale = {**paid, "total_price": "1.00", "updated_at": stamp(created + timedelta(minutes=30))}
        status, answer = await shopify_post(http, stack, stale, topic="orders/updated")
        assert (status, answer["status"], answer["reason"]) == (200, "ignored", "stale")
        order = await api_order(http, stack, SHOPIFY_ID)
        assert (order["total"], order["refunded_total"]) == ("199.00", "49.00")

        # Cancelled: the order counts 0 everywhere, and is still there.
        cancelled_at = created + timedelta(hours=2)
        cancelled = {
            **paid,
            "cancelled_at": stamp(cancelled_at),
            "cancel_reason": "customer",
            "financial_status": "partially_refunded",
            "updated_at": stamp(cancelled_at),
            "refunds": [refund_payload(1001, "49.00", refund_at)],
        }
        status, answer = await shopify_post(http, stack, cancelled, topic="orders/cancelled")
        assert (status, answer["status"]) == (200, "updated")
        order = await api_order(http, stack, SHOPIFY_ID)
        assert (order["status"], order["refunded_total"]) == ("cancelled", "49.00")
        html = await overview(stack, sold["owner"], created)
        assert overview_figures(html) == {"call": ["0.00 EUR"]}
        assert operator_figures(html, sold["operator"]) == ["0.00 EUR"]
        status, body = await report(http, stack, "channel", created)
        call_row = next(r for r in body["rows"] if r["key"] == "call")
        assert (call_row["orders"], call_row["revenue"], call_row["refunded"]) == (0, "0.00", "0.00")


async def test_woocommerce_order_updates_refunds_and_deletion(stack: Stack, sold: dict[str, Any]) -> None:
    created = (datetime.now(UTC) - timedelta(hours=3)).replace(microsecond=0)
    anna = {**woo_order(created), "id": 900, "number": "900"}
    anna["meta_data"] = [{"id": 1, "key": "_callbutton_visitor", "value": "tok-anna"}]
    anna["date_modified_gmt"] = created.strftime("%Y-%m-%dT%H:%M:%S")
    async with aiohttp.ClientSession() as http:
        status, answer = await woo_post(http, stack, anna, topic="order.created")
        assert (status, answer["status"]) == (200, "created")
        # A partial refund: WooCommerce keeps the status and lists the refund with a negative total.
        later = created + timedelta(minutes=20)
        refunded = {
            **anna,
            "status": "completed",
            "date_modified_gmt": later.strftime("%Y-%m-%dT%H:%M:%S"),
            "refunds": [{"id": 901, "reason": "", "total": "-9.90"}],
        }
        for _ in range(2):  # WooCommerce's redelivery has a new delivery id: the state, not a delta, counts
            status, answer = await woo_post(http, stack, refunded, topic="order.updated")
            assert (status, answer["status"]) == (200, "updated")
        order = await api_order(http, stack, "900")
        assert (order["status"], order["refunded_total"]) == ("partially_refunded", "9.90")
        assert order["attribution"]["by"] == "visitor_token"
        status, body = await report(http, stack, "channel", created)
        [call_row] = [r for r in body["rows"] if r["key"] == "call"]
        assert (call_row["revenue"], call_row["refunded"], call_row["currency"]) == ("80.00", "9.90", "EUR")

        # The older `processing` state, arriving last, is stale.
        status, answer = await woo_post(http, stack, {**anna, "total": "5.00"}, topic="order.updated")
        assert (status, answer["status"], answer["reason"]) == (200, "ignored", "stale")
        # Fully refunded, then deleted: kept, cancelled, counted 0.
        refunded_all = {
            **refunded,
            "status": "refunded",
            "date_modified_gmt": (later + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S"),
            "refunds": [{"id": 901, "total": "-9.90"}, {"id": 902, "total": "-80.00"}],
        }
        status, answer = await woo_post(http, stack, refunded_all, topic="order.updated")
        assert (await api_order(http, stack, "900"))["status"] == "refunded"
        status, answer = await woo_post(http, stack, {"id": 900}, topic="order.deleted")
        assert (status, answer["status"]) == (200, "updated")
        order = await api_order(http, stack, "900")
        assert (order["status"], order["refunded_total"]) == ("cancelled", "89.90")
    html = await overview(stack, sold["owner"], created)
    assert overview_figures(html) == {"call": ["0.00 EUR"]}


async def test_two_currencies_stay_apart_and_a_refund_shows_in_the_csv(
    stack: Stack, sold: dict[str, Any]
) -> None:
    at = datetime.now(UTC) - timedelta(hours=1)
    async with aiohttp.ClientSession() as http:
        for order_id, total, currency in (("E-1", "100.00", "EUR"), ("U-1", "50.00", "USD")):
            status, _ = await post_order(
                http,
                stack,
                {
                    "order_id": order_id,
                    "total": total,
                    "currency": currency,
                    "visitor_token": "tok-anna",
                    "created_at": stamp(at),
                },
            )
            assert status == 201
        status, answer = await post_order(
            http,
            stack,
            {
                "order_id": "U-1",
                "total": "50.00",
                "currency": "USD",
                "refunded_total": "20.00",
                "updated_at": stamp(at + timedelta(minutes=5)),
            },
        )
        assert (status, answer["status"], answer["refunded_total"]) == (200, "partially_refunded", "20.00")
        assert "ignored" not in answer
        # The same update again, older: the stored order comes back, marked stale.
        status, answer = await post_order(
            http,
            stack,
            {"order_id": "U-1", "total": "1.00", "currency": "USD", "updated_at": stamp(at)},
        )
        assert (status, answer["ignored"], answer["total"]) == (200, "stale", "50.00")
        status, body = await report(http, stack, "channel", at)
        rows = [r for r in body["rows"] if r["key"] == "call"]
        assert rows == [
            {
                "key": "call",
                "conversations": 0,
                "orders": 1,
                "revenue": "100.00",
                "refunded": "0.00",
                "currency": "EUR",
            },
            {
                "key": "call",
                "conversations": 0,
                "orders": 1,
                "revenue": "30.00",
                "refunded": "20.00",
                "currency": "USD",
            },
        ]
    html = await overview(stack, sold["owner"], at)
    assert overview_figures(html) == {"call": ["100.00 EUR", "30.00 USD"]}
    assert operator_figures(html, sold["operator"]) == ["100.00 EUR", "30.00 USD"]
    async with (
        signed_in(stack, sold["owner"]) as owner,
        owner.get("/dashboard/export/orders.csv") as response,
    ):
        exported = {r["order_id"]: r for r in csv.DictReader(io.StringIO(await response.text()))}
    assert (exported["U-1"]["status"], exported["U-1"]["refunded_total"], exported["U-1"]["revenue"]) == (
        "partially_refunded",
        "20.00",
        "30.00",
    )


async def test_a_refund_weeks_later_changes_a_settled_day(stack: Stack, sold: dict[str, Any]) -> None:
    """The overview keeps finished days' call figures; revenue is never kept, so a late refund shows."""
    day = datetime.now(UTC) - timedelta(days=20)
    async with stack.database.session() as session:
        visitor = await add_visitor(session, stack.site.id, "tok-old")
        await add_call(session, stack.site.id, visitor, day - timedelta(hours=1))
    async with aiohttp.ClientSession() as http:
        body = {"order_id": "OLD-1", "total": "80.00", "currency": "EUR", "visitor_token": "tok-old"}
        status, _ = await post_order(http, stack, {**body, "created_at": stamp(day)})
        assert status == 201
        assert overview_figures(await overview(stack, sold["owner"], day)) == {"call": ["80.00 EUR"]}
        status, _ = await post_order(http, stack, {**body, "refunded_total": "80.00"})
        assert status == 200
    assert overview_figures(await overview(stack, sold["owner"], day)) == {"call": ["0.00 EUR"]}


async def test_unknown_topics_are_acknowledged_ignored_and_logged_once(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="callserver.web.hooks")
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            status, answer = await shopify_post(http, stack, {"id": 1}, topic="customers/create")
            assert (status, answer["status"]) == (200, "ignored")
            status, answer = await woo_post(http, stack, {"id": 1}, topic="coupon.created")
            assert (status, answer["status"]) == (200, "ignored")
    logged = [r.getMessage() for r in caplog.records if "is not handled" in r.getMessage()]
    assert len(logged) == 2, logged
    async with stack.database.session() as session:
        assert list(await session.scalars(select(Order))) == []


async def test_bad_life_reports_are_coded_400s_and_change_nothing(stack: Stack) -> None:
    at = datetime.now(UTC) - timedelta(hours=2)
    async with aiohttp.ClientSession() as http:
        status, _ = await post_order(
            http, stack, {"order_id": "K-1", "total": "100", "currency": "EUR", "created_at": stamp(at)}
        )
        assert status == 201
        kept = await api_order(http, stack, "K-1")
        refused = [
            {"refunded_total": "100.01"},  # more than the total
            {"refunded_total": "-1"},
            {"refunded_total": "1e30"},
            {"status": "shipped"},
            {"updated_at": "1970-01-01T00:00:00Z"},
            {"updated_at": "9999-01-01T00:00:00Z"},
            {"updated_at": stamp(at - timedelta(days=1)), "created_at": stamp(at)},  # before its creation
        ]
        for change in refused:
            status, answer = await post_order(
                http, stack, {"order_id": "K-1", "total": "100", "currency": "EUR", **change}
            )
            assert status == 400, (change, answer)
            assert answer["error"]["code"] == "invalid", answer
        # Signed platform bodies that are wrong: a refund over the total, a refund without its order,
        # a WooCommerce refund with a positive total, a deletion without an id.
        await shopify_post(http, stack, shopify_order(at), topic="orders/create")
        shopify_kept = await api_order(http, stack, SHOPIFY_ID)
        for payload in (refund_payload(7, "500.00", at), {**refund_payload(8, "1.00", at), "order_id": None}):
            status, answer = await shopify_post(http, stack, payload, topic="refunds/create")
            assert (status, answer["error"]["code"]) == (400, "invalid"), answer
        wrong_woo = {**woo_order(at), "refunds": [{"id": 1, "total": "5.00"}]}
        status, answer = await woo_post(http, stack, wrong_woo, topic="order.updated")
        assert (status, answer["error"]["code"]) == (400, "invalid"), answer
        status, answer = await woo_post(http, stack, {"number": "1"}, topic="order.deleted")
        assert (status, answer["error"]["code"]) == (400, "invalid"), answer
        # A refunds/create signed with another secret is refused before anything is read.
        body = json.dumps(refund_payload(9, "1.00", at)).encode()
        async with http.post(
            f"{stack.url}/hooks/shopify/{stack.site.key}/orders",
            data=body,
            headers={"X-Shopify-Topic": "refunds/create", "X-Shopify-Hmac-Sha256": sign("nope", body)},
        ) as response:
            assert response.status == 401
        assert await api_order(http, stack, "K-1") == kept
        assert await api_order(http, stack, SHOPIFY_ID) == shopify_kept
    async with stack.database.session() as session:
        assert [o.order_id for o in await session.scalars(select(Order).order_by(Order.id))] == [
            "K-1",
            SHOPIFY_ID,
        ]


async def test_the_revenue_report_refuses_unknown_groupings_and_bad_dates(stack: Stack) -> None:
    today = datetime.now(UTC)
    async with aiohttp.ClientSession() as http:
        status, body = await report(http, stack, "weather", today)
        assert (status, body["error"]["code"]) == (400, "unknown_grouping")
        status, body = await report(http, stack, "channel", today, today - timedelta(days=1))
        assert (status, body["error"]["code"]) == (400, "invalid")
        async with http.get(
            f"{stack.url}/api/v1/reports/revenue",
            params={"from": "2024-02-30", "to": "2024-03-01"},
            headers=bearer(stack),
        ) as response:
            assert (response.status, (await response.json())["error"]["code"]) == (400, "invalid")
        async with http.get(f"{stack.url}/api/v1/reports/revenue?from=2024-01-01&to=2024-01-02") as response:
            assert response.status == 401
        async with http.get(f"{stack.url}/api/v1/openapi.json") as response:
            document = await response.json()
    operation = document["paths"]["/api/v1/reports/revenue"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"from", "to", "by"}
    assert "ignored" in document["components"]["schemas"]["OrderAnswer"]["properties"]
    assert set(document["components"]["schemas"]["OrderOut"]["properties"]) >= {
        "status",
        "refunded_total",
        "updated_at",
        "attribution",
    }


async def test_a_manual_attribution_says_by_whom(stack: Stack, sold: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as http:
        status, _ = await post_order(http, stack, {"order_id": "M-1", "total": "10", "currency": "EUR"})
        assert status == 201
        assert (await api_order(http, stack, "M-1"))["attribution"]["by"] is None
    async with signed_in(stack, sold["owner"]) as owner:
        page = await (await owner.get(f"/dashboard/calls/{sold['call']}")).text()
        form = {"csrf": csrf_token(page), "order_id": "M-1", "action": "link"}
        async with owner.post(
            f"/dashboard/calls/{sold['call']}/attribution", data=form, allow_redirects=False
        ) as response:
            assert response.status in (302, 303)
        page = await (await owner.get(f"/dashboard/calls/{sold['call']}")).text()
    assert f"Attributed by hand by {sold['owner']}" in page
    assert 'data-by="manual"' in page
    async with aiohttp.ClientSession() as http:
        attribution = (await api_order(http, stack, "M-1"))["attribution"]
    assert attribution["by"] == "manual" and attribution["conversation_id"] == sold["call"]
    assert attribution["by_user"]["email"] == sold["owner"]
