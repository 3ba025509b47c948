"""`/api/v1/orders` and the OpenAPI document, over HTTP against a real server."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from openapi_spec_validator import validate as validate_openapi
from sqlalchemy import func, select
from yarl import URL

from callserver.store.models import Order
from tests.conversations import add_call, add_visitor
from tests.stack import Stack


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def order_count(stack: Stack) -> int:
    async with stack.database.session() as session:
        return await session.scalar(select(func.count()).select_from(Order)) or 0


async def post(
    http: aiohttp.ClientSession, stack: Stack, body: Any, secret: str | None = None
) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    async with http.post(
        f"{stack.url}/api/v1/orders",
        data=data,
        headers={**bearer(secret or stack.site.secret), "Content-Type": "application/json"},
    ) as response:
        return response.status, await response.json()


async def test_an_order_is_stored_once_and_attributed_to_the_call(stack: Stack) -> None:
    now = datetime.now(UTC)
    async with stack.database.session() as session:
        anna = await add_visitor(session, stack.site.id, "tok-anna")
        call = await add_call(session, stack.site.id, anna, now - timedelta(days=1))
    order = {
        "order_id": 1001,
        "total": 249.9,
        "currency": "eur",
        "visitor_token": "tok-anna",
        "created_at": now.isoformat(),
    }
    async with aiohttp.ClientSession() as http:
        status, created = await post(http, stack, order)
        assert status == 201, created
        assert created["order_id"] == "1001"
        assert (created["total"], created["currency"]) == ("249.90", "EUR")
        assert created["attribution"] == {
            "channel": "call",
            "conversation_id": call.id,
            "attributed_by": "token",
            "by": "visitor_token",
            "by_user": None,
        }

        # The same order again (a retry, or a corrected total): 200, still one order.
        status, again = await post(http, stack, {**order, "total": "259.90"})
        assert status == 200
        assert again["total"] == "259.90" and again["attribution"]["conversation_id"] == call.id

        async with http.get(f"{stack.url}/api/v1/orders/1001", headers=bearer(stack.site.secret)) as response:
            assert response.status == 200
            stored = await response.json()
    assert stored == again
    assert await order_count(stack) == 1


async def test_an_order_without_a_conversation_has_a_null_attribution(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        status, created = await post(http, stack, {"order_id": "A-7", "total": "12", "currency": "USD"})
    assert status == 201
    assert created["total"] == "12.00"
    assert created["attribution"] == {
        "channel": None,
        "conversation_id": None,
        "attributed_by": None,
        "by": None,
        "by_user": None,
    }


async def test_auth_errors(stack: Stack) -> None:
    order = {"order_id": "1", "total": "1.00", "currency": "EUR"}
    async with aiohttp.ClientSession() as http:
        for headers in (
            {},
            {"Authorization": "Bearer sk_wrong"},
            {"Authorization": f"Basic {stack.site.secret}"},
        ):
            async with http.post(f"{stack.url}/api/v1/orders", json=order, headers=headers) as response:
                assert response.status == 401
                assert (await response.json())["error"]["code"] == "unauthorized"
            async with http.get(f"{stack.url}/api/v1/orders/1", headers=headers) as response:
                assert response.status == 401
    assert await order_count(stack) == 0


async def test_another_sites_order_is_not_found(stack: Stack) -> None:
    other = await stack.add_site("Other shop", ["https://other.example"])
    async with aiohttp.ClientSession() as http:
        status, _ = await post(http, stack, {"order_id": "1", "total": "1.00", "currency": "EUR"})
        assert status == 201
        async with http.get(f"{stack.url}/api/v1/orders/1", headers=bearer(other.secret)) as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "not_found"
        # The other site may use the same order id for its own order.
        status, _ = await post(
            http, stack, {"order_id": "1", "total": "5.00", "currency": "EUR"}, other.secret
        )
        assert status == 201
    assert await order_count(stack) == 2


async def test_bad_bodies_are_refused_naming_the_field_and_nothing_is_stored(stack: Stack) -> None:
    cases: list[tuple[Any, str, str]] = [
        ("{not json", "bad_json", ""),
        ([1, 2], "invalid", "body"),
        ({"order_id": "1", "currency": "EUR"}, "invalid", "total"),
        ({"order_id": "1", "total": "-3", "currency": "EUR"}, "invalid", "total"),
        ({"order_id": "1", "total": "abc", "currency": "EUR"}, "invalid", "total"),
        ({"order_id": "1", "total": "1", "currency": "EURO"}, "invalid", "currency"),
        ({"order_id": "", "total": "1", "currency": "EUR"}, "invalid", "order_id"),
        (
            {"order_id": "1", "total": "1", "currency": "EUR", "created_at": "yesterday"},
            "invalid",
            "created_at",
        ),
        (
            {"order_id": "1", "total": "1", "currency": "EUR", "visitor_token": "x" * 65},
            "invalid",
            "visitor_token",
        ),
        ({"order_id": "1", "total": "1", "currency": "EUR", "totl": "1"}, "invalid", "totl"),
    ]
    async with aiohttp.ClientSession() as http:
        for body, code, field in cases:
            status, answer = await post(http, stack, body)
            assert status == 400, body
            assert answer["error"]["code"] == code, answer
            assert answer["error"]["message"].startswith(field), answer
    assert await order_count(stack) == 0


async def test_a_body_over_one_megabyte_is_refused(stack: Stack) -> None:
    body = json.dumps({"order_id": "1", "total": "1", "currency": "EUR", "email": "x" * (1024 * 1024)})
    async with aiohttp.ClientSession() as http:
        status, answer = await post(http, stack, body)
    assert status == 413 and answer["error"]["code"] == "too_large"
    assert await order_count(stack) == 0


async def test_the_openapi_document_describes_the_api(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{stack.url}/api/v1/openapi.json") as response:
        assert response.status == 200
        document = await response.json()
    assert document["openapi"].startswith("3.1")
    validate_openapi(document)  # raises when the document breaks the OpenAPI 3.1 schema
    assert {
        "/api/v1/orders",
        "/api/v1/orders/{order_id}",
        "/api/v1/calls",
        "/api/v1/calls/{call_id}",
        "/hooks/shopify/{site_key}/orders",
        "/hooks/woocommerce/{site_key}/orders",
    } <= set(document["paths"])
    schemas = document["components"]["schemas"]
    assert {"order_id", "total", "currency", "visitor_token", "email", "phone", "created_at"} <= set(
        schemas["OrderIn"]["properties"]
    )
    assert schemas["OrderOut"]["properties"]["total"]["type"] == "string"
    filters = {p["name"] for p in document["paths"]["/api/v1/calls"]["get"]["parameters"]}
    assert filters == {"state", "end_reason", "since", "until", "limit", "cursor"}
    # Every reference points at a schema the document holds.
    text = json.dumps(document)
    for name in {part.split('"')[0] for part in text.split('"#/components/schemas/')[1:]}:
        assert name in schemas, name


def deep(depth: int) -> bytes:
    return b'{"order_id": "1", "total": "1", "currency": "EUR", "x": ' + b"[" * depth + b"]" * depth + b"}"


async def test_hostile_bodies_are_coded_400s_and_change_nothing_stored(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """Each of these was a 500 once: deep nesting, times Python cannot hold, totals over the column."""
    caplog.set_level(logging.INFO)
    order = {"order_id": "1", "total": "1", "currency": "EUR"}
    cases: list[tuple[Any, str, str]] = [
        (deep(5000), "bad_json", "The body nests"),
        (deep(40), "bad_json", "The body nests"),
        (b"[" * 100_000, "bad_json", ""),
        (b'{"order_id": "1", "total": ' + b"9" * 5000 + b', "currency": "EUR"}', "bad_json", ""),
        (b'{"order_id": "1", "total": NaN, "currency": "EUR"}', "bad_json", ""),
        ({**order, "created_at": "0001-01-01T00:00:00+01:00"}, "invalid", "created_at"),
        ({**order, "created_at": "9999-12-31T23:59:59-01:00"}, "invalid", "created_at"),
        ({**order, "created_at": "0001-01-02T00:00:00Z"}, "invalid", "created_at"),
        ({**order, "created_at": "9999-12-31T23:59:59Z"}, "invalid", "created_at"),
        ({**order, "created_at": 1e300}, "invalid", "created_at"),
        ({**order, "total": "1e28"}, "invalid", "total"),
        ({**order, "total": "1e12"}, "invalid", "total"),
        ({**order, "total": 10**30}, "invalid", "total"),
        ({**order, "number": "  "}, "", ""),  # blank optional text is none (this was a TypeError)
        ({**order, "order_id": "a\nb"}, "invalid", "order_id"),
        ({**order, "order_id": "x\x00"}, "invalid", "order_id"),
    ]
    async with aiohttp.ClientSession() as http:
        status, _ = await post(http, stack, {"order_id": "kept", "total": "10.00", "currency": "EUR"})
        assert status == 201
        for body, code, message in cases:
            status, answer = await post(http, stack, body)
            if not code:
                assert status == 201, answer
                continue
            assert status == 400, (body[:80], answer)
            assert answer["error"]["code"] == code, answer
            assert answer["error"]["message"].startswith(message), answer
        async with http.get(f"{stack.url}/api/v1/orders/kept", headers=bearer(stack.site.secret)) as response:
            assert (await response.json())["total"] == "10.00"
    assert await order_count(stack) == 2
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    refusals = [r for r in caplog.records if r.name == "callserver.web.errors"]
    assert len(refusals) == len(cases) - 1 and "refused: 400" in refusals[0].getMessage()


async def test_an_order_id_of_any_text_comes_back_by_its_location(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{stack.url}/api/v1/orders",
            json={"order_id": "{#1/ä?}", "total": "1", "currency": "EUR"},
            headers=bearer(stack.site.secret),
        ) as response:
            assert response.status == 201
            location = response.headers["Location"]
        assert location == "/api/v1/orders/%7B%231%2F%C3%A4%3F%7D"
        url = URL(stack.url + location, encoded=True)
        async with http.get(url, headers=bearer(stack.site.secret)) as response:
            assert response.status == 200 and (await response.json())["order_id"] == "{#1/ä?}"
        for unknown in ("%7Bx%7D", "x" * 101, "%00"):
            url = URL(f"{stack.url}/api/v1/orders/{unknown}", encoded=True)
            async with http.get(url, headers=bearer(stack.site.secret)) as response:
                assert response.status == 404
                assert (await response.json())["error"]["code"] == "not_found"
