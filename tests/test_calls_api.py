"""`/api/v1/calls`: call records with filters, keyset pages, operators, visitor context and linked orders."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from yarl import URL

from tests.conversations import add_call, add_visitor
from tests.stack import Stack

START = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def get(
    http: aiohttp.ClientSession, stack: Stack, path: str, secret: str | None = None, **query: str
) -> tuple[int, Any]:
    async with http.get(
        f"{stack.url}/api/v1/{path}", params=query, headers=bearer(secret or stack.site.secret)
    ) as response:
        return response.status, await response.json()


async def test_one_call_with_operator_visitor_context_quality_and_orders(stack: Stack) -> None:
    operator = await stack.add_user("olga@sofas.example", name="Olga")
    async with stack.database.session() as session:
        anna = await add_visitor(session, stack.site.id, "tok-anna")
        call = await add_call(
            session,
            stack.site.id,
            anna,
            START,
            operator_id=operator.id,
            page="https://sofas.example/blue",
            title="Blue sofa",
            referrer="https://search.example/?q=sofa",
            context={"utm_source": "newsletter", "cart_value": 499},
            quality={"loss": 0.01, "jitter_ms": 4, "rtt_ms": 35, "relayed": False},
        )
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{stack.url}/api/v1/orders",
            json={
                "order_id": "1001",
                "total": "499.00",
                "currency": "EUR",
                "visitor_token": "tok-anna",
                "created_at": (START + timedelta(hours=2)).isoformat(),
            },
            headers=bearer(stack.site.secret),
        ) as response:
            assert response.status == 201
        status, record = await get(http, stack, f"calls/{call.id}")
    assert status == 200
    assert record == {
        "id": call.id,
        "state": "ended",
        "end_reason": "completed",
        "created_at": "2025-03-01T09:00:00Z",
        "answered_at": "2025-03-01T09:00:20Z",
        "ended_at": "2025-03-01T09:02:20Z",
        "ring_seconds": 20.0,
        "talk_seconds": 120.0,
        "operator": {"id": operator.id, "name": "Olga", "email": "olga@sofas.example"},
        "visitor": {
            "token": "tok-anna",
            "page": "https://sofas.example/blue",
            "title": "Blue sofa",
            "referrer": "https://search.example/?q=sofa",
            "context": {"utm_source": "newsletter", "cart_value": 499},
            "country": "DE",
            "device": None,
        },
        "quality": {"loss": 0.01, "jitter_ms": 4, "rtt_ms": 35, "relayed": False},
        "recorded": False,
        "orders": [
            {"order_id": "1001", "total": "499.00", "currency": "EUR", "created_at": "2025-03-01T11:00:00Z"}
        ],
        "csat": None,  # not rated (tests/test_after_conversation.py rates one)
    }


async def test_pages_filters_and_other_sites(stack: Stack) -> None:
    other = await stack.add_site("Other shop", ["https://other.example"])
    async with stack.database.session() as session:
        calls = [
            await add_call(session, stack.site.id, None, START + timedelta(minutes=i), answered=i % 2 == 0)
            for i in range(7)
        ]
        # Two calls in the same microsecond still page apart (the id breaks the tie).
        calls.append(await add_call(session, stack.site.id, None, START + timedelta(minutes=6)))
        foreign = await add_call(session, other.id, None, START)
    newest_first = sorted(calls, key=lambda c: (c.created_at, c.id), reverse=True)

    async with aiohttp.ClientSession() as http:
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            query = {"limit": "3", **({"cursor": cursor} if cursor else {})}
            status, page = await get(http, stack, "calls", **query)
            assert status == 200, page
            seen += [c["id"] for c in page["calls"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert (seen, pages) == ([c.id for c in newest_first], 3)

        status, missed = await get(http, stack, "calls", end_reason="missed")
        assert {c["id"] for c in missed["calls"]} == {c.id for c in calls if c.end_reason == "missed"}
        assert all(c["ring_seconds"] == 30.0 and c["talk_seconds"] is None for c in missed["calls"])

        status, window = await get(
            http,
            stack,
            "calls",
            since=(START + timedelta(minutes=1)).isoformat(),
            until="2025-03-01T11:03:00+02:00",  # 09:03 UTC
            state="ended",
        )
        assert [c["id"] for c in window["calls"]] == [calls[2].id, calls[1].id]

        # Another site's call is not found, and not listed.
        status, answer = await get(http, stack, f"calls/{foreign.id}")
        assert (status, answer["error"]["code"]) == (404, "not_found")
        status, theirs = await get(http, stack, "calls", secret=other.secret)
        assert [c["id"] for c in theirs["calls"]] == [foreign.id]


async def test_bad_queries_and_auth(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        for query, field in (
            ({"limit": "500"}, "limit"),
            ({"limit": "0"}, "limit"),
            ({"state": "exploded"}, "state"),
            ({"since": "last week"}, "since"),
            ({"cursor": "not-a-cursor"}, "cursor"),
        ):
            status, answer = await get(http, stack, "calls", **query)
            assert status == 400, query
            assert answer["error"]["code"] == "invalid"
            assert answer["error"]["message"].startswith(field), answer
        async with http.get(f"{stack.url}/api/v1/calls") as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await response.json())["error"]["code"] == "unauthorized"
        status, _ = await get(http, stack, "calls/nope", secret="sk_wrong")
        assert status == 401


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_crafted_cursors_and_times_are_400s(stack: Stack) -> None:
    """Any string as a cursor (these were 500s: deep JSON, times without a UTC Python can hold)."""
    cursors = [
        "!!!",
        "a",
        b64(b"\xff\xfe"),
        b64(b"{}"),
        b64(b"[1, 2]"),
        b64(b'["2024-01-01T00:00:00+00:00", 7]'),
        b64(b'["2024-01-01T00:00:00", "x"]'),  # no offset
        b64(b'["2024-01-01T00:00:00+00:00", "' + b"x" * 40 + b'"]'),
        b64(b'["9999-12-31T23:59:59-01:00", "x"]'),
        b64(b'["0001-01-01T00:00:00+01:00", "x"]'),
        b64(b"[" * 3000),
        b64(b"[" + b"9" * 5000 + b', "x"]'),
        "x" * 300,
    ]
    async with aiohttp.ClientSession() as http:
        for cursor in cursors:
            status, answer = await get(http, stack, "calls", cursor=cursor)
            assert status == 400, (cursor[:40], answer)
            assert answer["error"]["code"] == "invalid" and answer["error"]["message"].startswith("cursor")
        for field in ("since", "until"):
            for value in ("9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"):
                status, answer = await get(http, stack, "calls", **{field: value})
                assert status == 400 and answer["error"]["message"].startswith(field), answer
        for call_id in ("x" * 33, "%00", "%7B%7D"):
            url = URL(f"{stack.url}/api/v1/calls/{call_id}", encoded=True)
            async with http.get(url, headers=bearer(stack.site.secret)) as response:
                assert response.status == 404
                assert (await response.json())["error"]["code"] == "not_found"
