"""Beacons and the visitors board under abuse: views reported twice, a restart, a database away,
bodies no widget sends, and floods of fake visitors (real server, real sockets, SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from callserver.limits import NEW_VISITORS_BURST, NEW_VISITORS_RATE
from callserver.store.database import Database
from callserver.store.models import PageView
from callserver.visitors.board import MAX_ROWS
from callserver.visitors.journey import PageSeen, PageViewLog
from callserver.web.keys import SHOP_FLOOR
from tests.servers import postgres
from tests.stack import Stack, free_port, running_stack, settings_for
from tests.visitors_support import configure_site

FUZZ_EXAMPLES = 400


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'var' / 'callserver.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


async def post_beacon(
    session: aiohttp.ClientSession,
    stack: Stack,
    body: Any,
    *,
    site: str | None = None,
    origin: str | None = None,
    forwarded_for: str | None = None,
) -> aiohttp.ClientResponse:
    headers = {"Origin": origin or stack.shop_url, "Content-Type": "text/plain;charset=UTF-8"}
    if forwarded_for:
        headers["X-Forwarded-For"] = forwarded_for
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with session.post(
        f"{stack.url}/widget/beacon?site={site or stack.site.key}", data=data, headers=headers
    ) as response:
        await response.read()
        return response


def view(visitor: str, view_id: str, page: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "view", "visitor": visitor, "view": view_id, "page": page, **extra}


async def stored_views(database: Database, site_id: int) -> list[tuple[str, str]]:
    async with database.session() as session:
        rows = await session.execute(
            select(PageView.visitor_token, PageView.view_id)
            .where(PageView.site_id == site_id)
            .order_by(PageView.id)
        )
        return [(token, view_id) for token, view_id in rows]


async def until_stored(
    database: Database, site_id: int, wanted: set[tuple[str, str]], within: float = 15.0
) -> list[tuple[str, str]]:
    """The site's stored views once all of `wanted` are among them (written by the server's own writer)."""
    deadline = time.monotonic() + within
    while not wanted <= set(stored := await stored_views(database, site_id)):
        assert time.monotonic() < deadline, f"views {wanted - set(stored)} not stored; have {stored}"
        await asyncio.sleep(0.1)
    return stored


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    logged = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not logged, [f"{r.name}: {r.getMessage()}" for r in logged]


# 1. Page views stored however often they are reported -------------------------------------------


async def test_a_view_reported_again_is_stored_once_and_later_views_still_are(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with running_stack(settings_for(tmp_path, database_url=database_url)) as stack:
        shop = stack.shop_url
        async with aiohttp.ClientSession() as session:
            for view_id in ("A", "B", "A"):  # A again: the same page view, reported a second time
                answer = await post_beacon(
                    session, stack, view("visitor-aba-1", view_id, f"{shop}/{view_id}")
                )
                assert answer.status == 204
            stored = await until_stored(
                stack.database, stack.site.id, {("visitor-aba-1", "A"), ("visitor-aba-1", "B")}
            )
            assert sorted(stored) == [("visitor-aba-1", "A"), ("visitor-aba-1", "B")]
            # The writer goes on: views of this visitor and of others after it are stored too.
            await post_beacon(session, stack, view("visitor-aba-1", "C", f"{shop}/C"))
            await post_beacon(session, stack, view("visitor-aba-2", "A", f"{shop}/A"))
            stored = await until_stored(
                stack.database, stack.site.id, {("visitor-aba-1", "C"), ("visitor-aba-2", "A")}
            )
            assert len(stored) == 4
        assert stack.app[SHOP_FLOOR].journeys.dropped == 0
    no_tracebacks(caplog)


async def test_after_a_restart_views_sent_again_do_not_stall_new_ones(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    settings = settings_for(tmp_path, database_url=database_url)
    async with running_stack(settings) as first, aiohttp.ClientSession() as session:
        site, shop = first.site, first.shop_url
        for view_id in ("A", "B"):
            assert (
                await post_beacon(session, first, view("visitor-restart", view_id, f"{shop}/"))
            ).status == 204
    async with running_stack(settings) as second, aiohttp.ClientSession() as session:
        assert set(await stored_views(second.database, site.id)) == {
            ("visitor-restart", "A"),
            ("visitor-restart", "B"),
        }
        # The restarted server doesn't know the visitor: its heartbeat is told to report the page
        # again, and the widget re-sends view B, which the store has already.
        ping = {"kind": "ping", "visitor": "visitor-restart", "view": "B", "seconds": 20}
        answer = await post_beacon(session, second, ping, site=site.key, origin=shop)
        assert answer.headers.get("CB-Listen") == "again"
        again = view("visitor-restart", "B", f"{shop}/")
        assert (await post_beacon(session, second, again, site=site.key, origin=shop)).status == 204
        for view_id in ("C", "D"):
            fresh = view("visitor-restart", view_id, f"{shop}/{view_id}")
            assert (await post_beacon(session, second, fresh, site=site.key, origin=shop)).status == 204
        stored = await until_stored(
            second.database, site.id, {("visitor-restart", "C"), ("visitor-restart", "D")}
        )
        assert sorted(stored) == [("visitor-restart", v) for v in "ABCD"]
    no_tracebacks(caplog)


async def test_a_row_the_database_refuses_is_dropped_and_the_others_are_stored(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    journeys = stack.app[SHOP_FLOOR].journeys
    # A view of a site deleted meanwhile: the foreign key refuses it, in the middle of a batch.
    async with aiohttp.ClientSession() as session:
        await post_beacon(session, stack, view("visitor-good-1", "v1", f"{stack.shop_url}/"))
        journeys.viewed(999_999, "visitor-orphan", PageSeen("v1", "https://gone.example/"), datetime.now(UTC))
        await post_beacon(session, stack, view("visitor-good-2", "v1", f"{stack.shop_url}/"))
        await until_stored(
            stack.database, stack.site.id, {("visitor-good-1", "v1"), ("visitor-good-2", "v1")}
        )
        # Once dropped it is gone for good: later views are not held back by it.
        await post_beacon(session, stack, view("visitor-good-3", "v1", f"{stack.shop_url}/"))
        await until_stored(stack.database, stack.site.id, {("visitor-good-3", "v1")})
    assert journeys.dropped == 1 and journeys.pending == 0
    refused = [r for r in caplog.records if "refuses" in r.getMessage()]
    assert len(refused) == 1 and refused[0].exc_info is None
    no_tracebacks(caplog)


async def test_views_wait_for_a_database_that_is_away_and_their_number_is_bounded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    away = Database(f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none")  # nothing listens there
    journeys = PageViewLog(away, max_pending=5)
    try:
        for n in range(8):
            journeys.viewed(1, "visitor-waits", PageSeen(f"v{n}", "https://shop.example/"), datetime.now(UTC))
        assert (journeys.pending, journeys.dropped) == (5, 3)
        await journeys.flush()  # the database is away: they are kept for the next try, none lost
        await journeys.flush()
        assert (journeys.pending, journeys.dropped) == (5, 3)
        journeys.viewed(1, "visitor-waits", PageSeen("v8", "https://shop.example/"), datetime.now(UTC))
        assert (journeys.pending, journeys.dropped) == (5, 4)
        waiting = [r.getMessage() for r in caplog.records if "wait for the database" in r.getMessage()]
        assert len(waiting) == 1  # one warning per outage, not one a second
        dropping = [r for r in caplog.records if "dropped the oldest" in r.getMessage()]
        assert len(dropping) == 1
        no_tracebacks(caplog)
    finally:
        await journeys.close()
        await away.close()


async def test_views_still_waiting_are_written_when_the_server_stops(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    posted: list[tuple[str, str]] = []
    async with running_stack(settings) as stack, aiohttp.ClientSession() as session:
        site_id, journeys = stack.site.id, stack.app[SHOP_FLOOR].journeys
        # Post until a view is caught waiting for the writer (it writes once a second).
        while not journeys.pending:
            posted.append(("visitor-stops", f"v{len(posted)}"))
            await post_beacon(session, stack, view(*posted[-1], f"{stack.shop_url}/{len(posted)}"))
            assert len(posted) < 100
    database = Database(settings.effective_database_url)
    try:
        assert sorted(await stored_views(database, site_id)) == sorted(posted)
    finally:
        await database.close()


# 2. Bodies no widget sends ----------------------------------------------------------------------


async def test_json_nested_thousands_deep_gets_a_400_with_a_code(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    valid = json.dumps(view("visitor-deep-1", "v1", f"{stack.shop_url}/"))
    bodies = [
        b"[" * 4000 + b"]" * 4000,  # 8,000 bytes: within the size limit
        b'{"a":' * 1300 + b"1" + b"}" * 1300,
        (valid[:-1] + ', "extra": ' + "[" * 3000 + "]" * 3000 + "}").encode(),  # inside a valid beacon
        (valid[:-1] + ', "seconds": ' + "9" * 5000 + "}").encode(),  # more digits than Python converts
    ]
    async with aiohttp.ClientSession() as session:
        for body in bodies:
            answer = await post_beacon(session, stack, body)
            assert answer.status == 400, body[:60]
            assert (await answer.json())["error"]["code"] == "bad_json"
        assert (await post_beacon(session, stack, valid.encode())).status == 204  # and the server is fine
    no_tracebacks(caplog)


def json_values() -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
        max_leaves=20,
    )


FIELDS = ("kind", "visitor", "view", "page", "title", "referrer", "utm", "search", "product_price",
          "cart_value", "currency", "seconds", "returning", "dismissed")  # fmt: skip


@st.composite
def mutated_beacons(draw: st.DrawFn, shop: str) -> bytes:
    """A valid beacon with some fields dropped or replaced by any JSON, and keys added."""
    beacon: dict[str, Any] = {
        "kind": draw(st.sampled_from(["view", "ping", "leave", "dismiss"])),
        "visitor": draw(st.from_regex(r"\Afuzz-[a-z0-9]{4,12}\Z")),
        "view": draw(st.from_regex(r"\A[a-zA-Z0-9_-]{1,8}\Z")),
        "page": f"{shop}/{draw(st.text(max_size=20))}",
        "utm": {"source": draw(st.text(max_size=10))},
        "product_price": draw(st.floats(min_value=0, max_value=1e9)),
        "seconds": draw(st.integers(0, 1000)),
    }
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=4)):
        if draw(st.booleans()):
            beacon.pop(name, None)
        else:
            beacon[name] = draw(json_values())
    beacon.update(draw(st.dictionaries(st.text(max_size=8), json_values(), max_size=2)))
    text = json.dumps(beacon, allow_nan=True)
    if draw(st.booleans()):  # cut it short, or splice bytes in
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.text(max_size=5)) + text[at + draw(st.integers(0, 3)) :]
    return text.encode("utf-8", "surrogatepass")


def deep_bodies() -> st.SearchStrategy[bytes]:
    return st.builds(
        lambda depth, opener: opener * depth,
        st.integers(1, 4000),
        st.sampled_from([b"[", b'{"a":', b'[{"b":[']),
    )


class ServerThread:
    """A running stack on an event loop in a thread of its own, for a synchronous fuzzing test."""

    def __init__(self, tmp_path: Path) -> None:
        self._tmp_path = tmp_path
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.stack: Stack | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),))

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            settings = settings_for(self._tmp_path, trust_forwarded_for=True)
            async with running_stack(settings) as stack:
                self.stack = stack
                self._ready.set()
                await self._stop.wait()
        finally:
            self._ready.set()

    def __enter__(self) -> Stack:
        self._thread.start()
        self._ready.wait(60)
        assert self.stack is not None, "the server did not start"
        return self.stack

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self._loop.close()


def exchange(
    connection: http.client.HTTPConnection, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, bytes]:
    connection.request("POST", path, body=body, headers=headers)
    response = connection.getresponse()
    return response.status, response.read()


def test_no_body_makes_the_beacon_endpoint_fail(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Whatever the body: 204, or a 4xx JSON error with a code; never a 5xx (FUZZ_EXAMPLES bodies)."""
    caplog.set_level(logging.WARNING)
    with ServerThread(tmp_path) as stack:
        host, port = stack.url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        answers: dict[int, int] = {}

        @settings(
            max_examples=FUZZ_EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(
            body=st.binary(max_size=9000)
            | json_values().map(lambda v: json.dumps(v).encode())
            | mutated_beacons(stack.shop_url)
            | deep_bodies(),
            address=st.ip_addresses().map(str) | st.from_regex(r"\A[ -~]{0,30}\Z"),
        )
        def post(body: bytes, address: str) -> None:
            headers = {
                "Origin": stack.shop_url,
                "Content-Type": "text/plain;charset=UTF-8",
                "X-Forwarded-For": address,
            }
            try:
                status, data = exchange(connection, f"/widget/beacon?site={stack.site.key}", body, headers)
            except (http.client.RemoteDisconnected, ConnectionError):
                # The server may close a connection after refusing a body unread (413): a browser
                # opens a new one, and so do we.
                connection.close()
                status, data = exchange(connection, f"/widget/beacon?site={stack.site.key}", body, headers)
            answers[status] = answers.get(status, 0) + 1
            assert status < 500, (status, data[:200], body[:200])
            if status >= 400:
                error = json.loads(data)["error"]
                assert isinstance(error["code"], str) and error["code"], data
                assert isinstance(error["message"], str), data
            else:
                assert status == 204, (status, data[:200])

        try:
            post()
        finally:
            connection.close()
    assert answers.get(204, 0) > 0 and sum(answers.values()) >= FUZZ_EXAMPLES  # valid ones got through too
    no_tracebacks(caplog)


# 3. Floods of fake visitors ---------------------------------------------------------------------


@pytest.fixture
async def trusting_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """A server behind a (pretend) reverse proxy: the client's address is X-Forwarded-For."""
    async with running_stack(settings_for(tmp_path, trust_forwarded_for=True)) as running:
        yield running


async def test_a_flood_of_new_visitors_from_one_address_gets_no_further_than_its_burst(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    flood = int(NEW_VISITORS_BURST) + 40
    async with aiohttp.ClientSession() as session:
        phone = await stack.sockets.operator("anna@shop.example", "Anna")
        await phone.receive("visitors")
        started = time.monotonic()
        statuses = []
        for n in range(flood):
            answer = await post_beacon(
                session, stack, view(f"visitor-flood-{n:04d}", "v1", f"{stack.shop_url}/")
            )
            statuses.append(answer.status)
            if answer.status == 429:
                assert (await answer.json())["error"]["code"] == "too_many_visitors"
        refilled = (time.monotonic() - started) * NEW_VISITORS_RATE
        accepted = statuses.count(204)
        assert NEW_VISITORS_BURST <= accepted <= NEW_VISITORS_BURST + refilled + 1
        assert statuses.count(429) == flood - accepted
        # A visitor already on the board goes on: another page, a heartbeat.
        first = "visitor-flood-0000"
        assert (await post_beacon(session, stack, view(first, "v2", f"{stack.shop_url}/more"))).status == 204
        ping = {"kind": "ping", "visitor": first, "view": "v2", "seconds": 5}
        assert (await post_beacon(session, stack, ping)).status == 204
        # Someone on another address is not affected by the flood.
        other = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=other) as elsewhere:
            answer = await post_beacon(
                elsewhere, stack, view("visitor-elsewhere", "v1", f"{stack.shop_url}/")
            )
            assert answer.status == 204
        board = await phone.receive(
            "visitors", lambda f: any(row["id"] == "visitor-elsewhere" for row in f["visitors"])
        )
        assert board["total"] == accepted + 1
        assert {row["id"] for row in board["visitors"]} <= {
            *(f"visitor-flood-{n:04d}" for n in range(flood)),
            "visitor-elsewhere",
        }
        await phone.close()
    limited = [r for r in caplog.records if "too many new visitors" in r.getMessage()]
    assert len(limited) == 1  # one warning for the flood, not one per beacon
    no_tracebacks(caplog)


async def test_behind_a_trusted_proxy_the_forwarded_address_is_limited(trusting_stack: Stack) -> None:
    stack = trusting_stack
    async with aiohttp.ClientSession() as session:
        statuses = [
            (
                await post_beacon(
                    session,
                    stack,
                    view(f"visitor-xff-{n:04d}", "v1", stack.shop_url),
                    forwarded_for="203.0.113.7",
                )
            ).status
            for n in range(int(NEW_VISITORS_BURST) + 10)
        ]
        assert statuses.count(429) >= 5
        other = await post_beacon(
            session,
            stack,
            view("visitor-xff-other", "v1", stack.shop_url),
            forwarded_for="198.51.100.9, 10.0.0.1",
        )
        assert other.status == 204


async def test_a_board_push_carries_the_best_visitors_and_the_count_only_when_it_changed(
    trusting_stack: Stack,
) -> None:
    stack = trusting_stack
    await configure_site(stack, score_weights={"per_minute": 0})  # scores that don't tick with time
    visitors = 3 * MAX_ROWS
    async with aiohttp.ClientSession() as session:
        phone = await stack.sockets.operator("anna@shop.example", "Anna")
        await phone.receive("visitors")
        for n in range(visitors):
            # The first MAX_ROWS look at dear products, the rest at nothing with a price.
            price = 1000 + n if n < MAX_ROWS else None
            body = view(f"visitor-many-{n:04d}", "v1", f"{stack.shop_url}/p/{n}", product_price=price)
            answer = await post_beacon(session, stack, body, forwarded_for=f"10.1.{n // 250}.{n % 250}")
            assert answer.status == 204
        board = await phone.receive("visitors", lambda f: f["total"] == visitors, within=15)
        assert len(board["visitors"]) == MAX_ROWS
        assert {row["id"] for row in board["visitors"]} == {f"visitor-many-{n:04d}" for n in range(MAX_ROWS)}
        assert len(json.dumps(board)) < 1000 * MAX_ROWS  # bounded, however many visitors there are
        await asyncio.sleep(1.5)  # pushes that were already on their way
        phone.drain()

        # A visitor below the top rows sees another page: the board the operator sees is the same,
        # so nothing is pushed; one of the top rows changing is.
        low = view(f"visitor-many-{visitors - 1:04d}", "v2", f"{stack.shop_url}/p/again")
        assert (await post_beacon(session, stack, low, forwarded_for="10.9.9.9")).status == 204
        await phone.nothing("visitors", within=1.5)
        top = view("visitor-many-0000", "v2", f"{stack.shop_url}/p/again")
        assert (await post_beacon(session, stack, top, forwarded_for="10.9.9.9")).status == 204
        board = await phone.receive(
            "visitors",
            lambda f: any(r["id"] == "visitor-many-0000" and r["pages"] == 2 for r in f["visitors"]),
        )
        assert board["total"] == visitors and len(board["visitors"]) == MAX_ROWS
