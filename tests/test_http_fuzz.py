"""Property-based fuzzing of every JSON endpoint and dashboard query string, over a running server.

The property, for whatever hypothesis sends: no 5xx; every 4xx of the API and the hooks is a JSON
error with a code; nothing is logged with a traceback; and what was stored before (an order, its
attribution) is exactly as it was afterwards. The server runs on its own event loop in a thread,
because hypothesis drives plain functions; every request goes over a real socket.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import hashlib
import hmac
import io
import json
import logging
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from yarl import URL

from callserver.store.models import Order
from tests.conversations import add_call, add_visitor
from tests.dashboard_support import add_owner, signed_in
from tests.stack import Stack, running_stack, settings_for

T = TypeVar("T")
KEPT_ORDER = "kept-1"
OWNER = "owner@fuzz.example"
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,  # nothing written into the work tree; a failure prints its example and seed
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


@dataclass
class Server:
    """A running stack on a loop in another thread, a client on that loop, and a count of requests."""

    loop: asyncio.AbstractEventLoop
    stack: Stack
    http: aiohttp.ClientSession
    owner: aiohttp.ClientSession
    call_id: str
    requests: int = 0
    seen: dict[int, int] = field(default_factory=dict)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def request(
        self,
        method: str,
        url: str | URL,
        client: aiohttp.ClientSession | None = None,
        **kwargs: Any,
    ) -> tuple[int, str, bytes]:
        async def send() -> tuple[int, str, bytes]:
            async with (client or self.http).request(method, url, allow_redirects=False, **kwargs) as r:
                return r.status, r.content_type, await r.read()

        self.requests += 1
        status, content_type, body = self.run(send())
        self.seen[status] = self.seen.get(status, 0) + 1
        return status, content_type, body

    def check_json(self, status: int, content_type: str, body: bytes) -> None:
        """No 5xx; a 4xx is `{"error": {"code": str, "message": str}}`."""
        assert status < 500, body[:500]
        if status >= 400:
            assert content_type == "application/json", (status, body[:200])
            error = json.loads(body)["error"]
            assert isinstance(error["code"], str) and error["code"], body
            assert isinstance(error["message"], str), body

    def kept_order(self) -> tuple[Any, ...]:
        async def read() -> tuple[Any, ...]:
            async with self.stack.database.session() as session:
                order = await session.scalar(select(Order).where(Order.order_id == KEPT_ORDER))
                assert order is not None
                return (order.total, order.currency, order.channel, order.conversation_id, order.created_at)

        return self.run(read())


@pytest.fixture
def server(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Server]:
    """The stack with an owner, a call and an order attributed to it; stopped however the test ends."""
    caplog.set_level(logging.INFO)
    loop = asyncio.new_event_loop()
    ready: asyncio.Future[Server] = loop.create_future()
    stop = asyncio.Event()

    async def serve() -> None:
        try:
            async with running_stack(settings_for(tmp_path)) as stack:
                await add_owner(stack, OWNER)
                async with stack.database.session() as session:
                    visitor = await add_visitor(session, stack.site.id, "tok-kept")
                    call = await add_call(
                        session, stack.site.id, visitor, datetime.now(UTC) - timedelta(hours=1)
                    )
                async with aiohttp.ClientSession() as http, signed_in(stack, OWNER) as owner:
                    body = {
                        "order_id": KEPT_ORDER,
                        "total": "123.45",
                        "currency": "EUR",
                        "visitor_token": "tok-kept",
                    }
                    async with http.post(
                        f"{stack.url}/api/v1/orders",
                        json=body,
                        headers={"Authorization": f"Bearer {stack.site.secret}"},
                    ) as response:
                        assert response.status == 201, await response.text()
                    ready.set_result(Server(loop, stack, http, owner, call.id))
                    await stop.wait()
        except BaseException as e:
            if not ready.done():
                ready.set_exception(e)
            raise

    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True)
    thread.start()
    try:
        running = asyncio.run_coroutine_threadsafe(asyncio.wait_for(asyncio.shield(ready), 60), loop).result()
        before = running.kept_order()
        assert before[2] == "call"
        yield running
        # What was stored before the fuzzing is untouched by it.
        assert running.kept_order() == before
        tracebacks = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
        assert not tracebacks, [r.getMessage() for r in tracebacks[:3]]
        print(f"\n{running.requests} requests, by status: {dict(sorted(running.seen.items()))}")
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=60)
        loop.close()


# ---- what to send ----

# Times a shop's system, or an attacker, might write: any year, any offset, any precision.
offsets = st.one_of(
    st.none(),
    st.just(UTC),
    st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m))),
)
times = st.builds(
    lambda moment, tz: moment.replace(tzinfo=tz).isoformat(),
    st.one_of(
        st.datetimes(
            min_value=datetime(2020, 1, 1), max_value=datetime.now()
        ),  # naive on purpose: taken as UTC
        st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    ),
    offsets,
)
amounts = st.decimals(min_value=0, max_value=10**6, places=3).map(str)
numbers = st.one_of(
    amounts,
    amounts,
    amounts,
    st.integers(),
    st.integers(min_value=10**20, max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    st.sampled_from(["1e28", "1e12", "999999999999.995", "-0.001", "1E+999999", "1e-999999", "NaN", "sNaN"]),
)
texts = st.one_of(
    st.text(max_size=30), st.text(max_size=400), st.sampled_from(["", " ", "\x00", "=1+1", "\t=x"])
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts, times)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
)


def nested(depth: int, key: str | None = None) -> bytes:
    open_, close = (b'{"%s":' % key.encode(), b"}") if key else (b"[", b"]")
    return open_ * depth + b"1" + close * depth


raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.integers(1, 50_000).map(nested),
    st.integers(1, 5_000).map(lambda d: nested(d, "a")),
    st.integers(30, 40).map(
        lambda d: b'{"order_id":"d","total":"1","currency":"EUR","x":' + nested(d) + b"}"
    ),
    st.just(b'{"total": ' + b"9" * 5000 + b"}"),
)


def order_like(
    fields: dict[str, st.SearchStrategy[Any]], required: tuple[str, ...] = ()
) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts of these fields: either plausible values with every required field (many of these
    pass validation and reach the store), or any subset of the fields holding anything at all."""
    complete = st.fixed_dictionaries(
        {name: fields[name] for name in required},
        optional={name: plausible for name, plausible in fields.items() if name not in required},
    )
    anything = st.fixed_dictionaries(
        {}, optional={name: st.one_of(plausible, json_values) for name, plausible in fields.items()}
    )
    return complete | anything


ids = st.one_of(st.integers(min_value=-(10**30), max_value=10**30), st.text(min_size=1, max_size=120))
currencies = st.one_of(st.sampled_from(["EUR", "usd", "XXX"]), st.sampled_from(["GBP"]), st.text(max_size=4))
api_orders = order_like(
    {
        "order_id": ids,
        "number": texts,
        "total": numbers,
        "currency": currencies,
        "visitor_token": st.sampled_from(["tok-kept", ""]) | texts,
        "email": texts,
        "phone": texts,
        "created_at": times,
    },
    required=("order_id", "total", "currency"),
)
# Orders a shop would really send (with odd but valid text): these reach the store and attribution.
recent = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2025, 1, 1), timezones=st.just(UTC))
valid_api_orders = st.fixed_dictionaries(
    {
        "order_id": st.text(st.characters(min_codepoint=0x20), min_size=1, max_size=100).filter(str.strip),
        "total": amounts,
        "currency": st.sampled_from(["EUR", "usd"]),
    },
    optional={
        "number": st.text(max_size=100),
        "visitor_token": st.sampled_from(["tok-kept", "tok-other"]),
        "email": st.text(max_size=50),
        "phone": st.text(max_size=20),
        "created_at": recent.map(datetime.isoformat),
    },
)
attributes = st.lists(st.fixed_dictionaries({"name": json_values, "value": json_values}), max_size=3)
shopify_orders = order_like(
    {
        "id": ids,
        "name": texts,
        "total_price": numbers,
        "currency": currencies,
        "email": texts,
        "created_at": times,
        "note_attributes": attributes,
        "customer": order_like({"email": texts, "phone": texts}),
    },
    required=("id", "total_price", "currency"),
)
woo_orders = order_like(
    {
        "id": ids,
        "number": ids,
        "status": st.sampled_from(["processing", "checkout-draft"]) | texts,
        "total": numbers,
        "currency": currencies,
        "date_created_gmt": times,
        "billing": order_like({"email": texts, "phone": texts}),
        "meta_data": st.lists(st.fixed_dictionaries({"key": json_values, "value": json_values}), max_size=3),
    },
    required=("id", "total", "currency"),
)


def encoded(value: Any) -> bytes:
    return json.dumps(value, default=str).encode()


def spares_kept_order(body: bytes) -> bool:
    """False for a body reporting the kept order's id, which would rightly change it."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return True
    return not (isinstance(data, dict) and str(data.get("order_id", data.get("id"))).strip() == KEPT_ORDER)


# Header values: what aiohttp lets a client send (no CR, LF or NUL).
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


# ---- the properties ----


def test_orders_api_under_fuzz(server: Server) -> None:
    url = f"{server.stack.url}/api/v1/orders"
    headers = {"Authorization": f"Bearer {server.stack.site.secret}", "Content-Type": "application/json"}

    @FUZZ
    @given(
        st.one_of(
            valid_api_orders.map(encoded), api_orders.map(encoded), json_values.map(encoded), raw_bodies
        )
    )
    def post(body: bytes) -> None:
        assume(spares_kept_order(body))
        server.check_json(*server.request("POST", url, data=body, headers=headers))

    @FUZZ
    @given(ids.map(str))
    def get(order_id: str) -> None:
        assume(order_id.strip() and order_id not in (".", ".."))
        target = URL(f"{url}/{quote(order_id, safe='')}", encoded=True)
        server.check_json(*server.request("GET", target, headers=headers))

    post()
    get()


@pytest.mark.parametrize(
    ("platform", "signature", "topic_header", "topics", "orders"),
    [
        (
            "shopify",
            "X-Shopify-Hmac-Sha256",
            "X-Shopify-Topic",
            ["orders/create", "orders/updated", "orders/paid"],
            shopify_orders,
        ),
        (
            "woocommerce",
            "X-WC-Webhook-Signature",
            "X-WC-Webhook-Topic",
            ["order.created", "order.updated"],
            woo_orders,
        ),
    ],
)
def test_signed_webhooks_under_fuzz(
    server: Server,
    platform: str,
    signature: str,
    topic_header: str,
    topics: list[str],
    orders: st.SearchStrategy[dict[str, Any]],
) -> None:
    url = f"{server.stack.url}/hooks/{platform}/{server.stack.site.key}/orders"
    secret = server.stack.site.secret.encode()

    @FUZZ
    @given(
        st.one_of(orders.map(encoded), json_values.map(encoded), raw_bodies),
        st.one_of(st.sampled_from(topics), header_text),
        st.none() | header_text,
    )
    def deliver(body: bytes, topic: str, delivery: str | None) -> None:
        assume(spares_kept_order(body))
        headers = {
            signature: base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest()).decode(),
            topic_header: topic,
        }
        if delivery:
            headers["X-Shopify-Webhook-Id"] = delivery
        server.check_json(*server.request("POST", url, data=body, headers=headers))

    deliver()


cursors = st.one_of(
    texts,
    st.binary(max_size=80).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
    json_values.map(lambda v: base64.urlsafe_b64encode(encoded(v)).decode()),
    st.tuples(times, texts).map(lambda t: base64.urlsafe_b64encode(encoded(list(t))).decode()),
)
call_queries = st.fixed_dictionaries(
    {},
    optional={
        "cursor": cursors,
        "limit": st.one_of(st.integers(-(10**30), 10**30).map(str), texts),
        "state": st.sampled_from(["ringing", "answered", "ended"]) | texts,
        "end_reason": st.sampled_from(["completed", "missed"]) | texts,
        "since": times | texts,
        "until": times | texts,
    },
)


def test_calls_api_under_fuzz(server: Server) -> None:
    url = f"{server.stack.url}/api/v1/calls"
    headers = {"Authorization": f"Bearer {server.stack.site.secret}"}

    @FUZZ
    @given(call_queries)
    def listing(query: dict[str, str]) -> None:
        server.check_json(*server.request("GET", url, params=query, headers=headers))

    @FUZZ
    @given(st.one_of(texts, st.just(server.call_id), st.text(min_size=33, max_size=40)))
    def one(call_id: str) -> None:
        assume(call_id.strip() and call_id not in (".", ".."))
        target = URL(f"{url}/{quote(call_id, safe='')}", encoded=True)
        server.check_json(*server.request("GET", target, headers=headers))

    listing()
    one()


days = st.one_of(
    st.dates().map(str),
    st.sampled_from(["9999-12-31", "0001-01-01", "2024-02-30", "2024-13-01", "20240531", "2024-W01-1"]),
    texts,
)
dashboard_ids = st.one_of(st.integers(-(2**70), 2**70).map(str), texts)
dashboard_queries = st.fixed_dictionaries(
    {},
    optional={
        "from": days,
        "to": days,
        "site": dashboard_ids,
        "operator": dashboard_ids,
        "channel": st.sampled_from(["call", "chat", "message"]) | texts,
        "state": st.sampled_from(["ended", "ringing"]) | texts,
        "end_reason": st.sampled_from(["missed", "lost"]) | texts,
        "orders": st.sampled_from(["with", "without"]) | texts,
        "after": cursors,
        "status": st.sampled_from(["new", "handled"]) | texts,
        "tag": st.sampled_from(["vip", " VIP ", "a" * 51]) | texts,
    },
)
PAGES = [
    "/dashboard/",
    "/dashboard/calls",
    "/dashboard/operators",
    "/dashboard/messages",
    "/dashboard/export/calls.csv",
    "/dashboard/export/orders.csv",
]


def test_dashboard_query_strings_under_fuzz(server: Server) -> None:
    @FUZZ
    @given(st.sampled_from(PAGES), dashboard_queries)
    def page(path: str, query: dict[str, str]) -> None:
        status, content_type, body = server.request(
            "GET", server.stack.url + path, client=server.owner, params=query
        )
        assert status in (200, 400), (status, body[:300])
        if status == 400:
            assert content_type == "text/html" and b"<h1>" in body

    page()

    # Whatever the fuzzing stored, the exports are safe to open in a spreadsheet.
    for export in PAGES[-2:]:
        status, _type, body = server.request("GET", server.stack.url + export, client=server.owner)
        assert status == 200
        for row in csv.reader(io.StringIO(body.decode())):
            assert not any(cell.lstrip()[:1] in ("=", "+", "-", "@") for cell in row), row
