"""The visitors board, invitations, sign-out and sign-in limits across two nodes (`callserver serve`
processes sharing PostgreSQL and Redis, tests/cluster.py): a visitor's beacons and stream on one node,
the operator's softphone on the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
import redis.asyncio as redis

from callserver import accounts
from callserver.cluster.board import MISSING_ROUNDS
from callserver.cluster.nodes import DEAD_AFTER, HEARTBEAT_EVERY
from callserver.visitors.board import SHARE_EVERY
from tests import cluster as clusters
from tests.cluster import SHOP, Cluster, Node, add_operator, operators_online
from tests.signing_in import PASSWORD, sign_in_form
from tests.sockets import Sockets

cluster = clusters.cluster
cluster_sockets = clusters.cluster_sockets


async def beacon(session: aiohttp.ClientSession, node: Node, body: dict[str, Any]) -> aiohttp.ClientResponse:
    async with session.post(
        f"{node.url}/widget/beacon?site={node.site.key}",
        data=json.dumps(body).encode(),
        headers={"Origin": SHOP, "Content-Type": "text/plain;charset=UTF-8"},
    ) as response:
        await response.read()
        assert response.status == 204, (response.status, await response.text())
        return response


def view(token: str, view_id: str, page: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "view", "visitor": token, "view": view_id, "page": f"{SHOP}{page}", **extra}


def row_of(token: str, want: dict[str, Any]) -> Any:
    """A `visitors` frame whose row for `token` has every value in `want`."""

    def where(frame: dict[str, Any]) -> bool:
        rows = [r for r in frame["visitors"] if r["id"] == token]
        return bool(rows) and all(rows[0][k] == v for k, v in want.items())

    return where


@asynccontextmanager
async def event_stream(session: aiohttp.ClientSession, node: Node, token: str) -> AsyncIterator[Any]:
    """The widget's invitation stream on `node`, open until the block ends."""
    response = await session.get(
        f"{node.url}/widget/events?site={node.site.key}&visitor={token}", headers={"Origin": SHOP}
    )
    try:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        yield response
    finally:
        response.close()


async def next_event(stream: aiohttp.ClientResponse, name: str, within: float = 10) -> dict[str, Any]:
    text = ""
    async with asyncio.timeout(within):
        while f"event: {name}\ndata: " not in text:
            text += (await stream.content.readany()).decode()
    data: dict[str, Any] = json.loads(text.split(f"event: {name}\ndata: ")[1].split("\n")[0])
    return data


async def test_the_board_on_a_shows_a_visitor_of_b_and_an_invitation_goes_there_and_back(
    cluster: Cluster, cluster_sockets: tuple[Sockets, Sockets]
) -> None:
    on_a, on_b = cluster_sockets
    site_id = cluster.site.id
    await add_operator(cluster, "ben@cluster.test")
    await add_operator(cluster, "anna@cluster.test")
    ben = await on_b.softphone("ben@cluster.test", online=True)  # idle the longest: rung first, unless …
    anna = await on_a.softphone("anna@cluster.test", online=True)
    assert await operators_online(cluster.b, 2) == 2
    async with aiohttp.ClientSession() as session:
        # The visit's beacons go round robin: B, A, B. Anna's board on A follows the whole visit.
        await beacon(session, cluster.b, view("visitor-oak", "v1", "/", title="Home"))
        await anna.receive("visitors", row_of("visitor-oak", {"pages": 1}))
        await beacon(session, cluster.a, view("visitor-oak", "v2", "/products/oak", product_price=1290))
        ping = {"kind": "ping", "visitor": "visitor-oak", "view": "v2", "seconds": 12, "cart_value": 2000}
        listen = await beacon(session, cluster.b, ping)
        assert listen.headers.get("CB-Listen") == "1"  # B knows the visit A took and Anna online on A
        board = await anna.receive("visitors", row_of("visitor-oak", {"pages": 2, "value": 2000}))
        assert board["total"] == 1
        row = next(r for r in board["visitors"] if r["id"] == "visitor-oak")
        assert row["journey"][-1]["page"].endswith("/products/oak") and row["reachable"] is False
        await ben.receive("visitors", row_of("visitor-oak", {"pages": 2, "value": 2000}))

        async with event_stream(session, cluster.b, "visitor-oak") as stream:
            await anna.receive("visitors", row_of("visitor-oak", {"reachable": True}))
            await anna.send({"type": "visitor.invite", "visitor_id": "visitor-oak", "site_id": site_id})
            await anna.receive("visitor.invited")
            # Seen on A's board before the call: otherwise "invited" could go and come back within one
            # push of A's publisher, and the board Anna sees would not change (nothing is sent then).
            await anna.receive("visitors", row_of("visitor-oak", {"invited": True}))
            invitation = await next_event(stream, "invite")  # published on A, delivered by B
            assert invitation["operator"]["name"] == "anna"
            await ben.receive("visitors", row_of("visitor-oak", {"invited": True}))
            await ben.send({"type": "visitor.invite", "visitor_id": "visitor-oak", "site_id": site_id})
            assert (await ben.receive("error"))["code"] == "already_invited"  # B knows of Anna's

            # The visitor takes it up with a call from the widget on B: Anna, who invited, rings first.
            shopper = await on_b.shopper("visitor-oak")
            call_id = await shopper.call()
            incoming = await anna.receive("call.incoming", lambda f: f["call"]["id"] == call_id)
            assert incoming["call"]["site"] == "Cluster shop"
            await ben.nothing("call.incoming", within=0.5)
            await anna.receive("visitors", row_of("visitor-oak", {"invited": False}))

        # Another visitor says no thanks on B: the board on A hears it and A won't ask again.
        await beacon(session, cluster.a, view("visitor-lamp", "w1", "/products/lamp"))
        async with event_stream(session, cluster.b, "visitor-lamp") as stream:
            await anna.receive("visitors", row_of("visitor-lamp", {"reachable": True}))
            await anna.send({"type": "visitor.invite", "visitor_id": "visitor-lamp", "site_id": site_id})
            await next_event(stream, "invite")
            await beacon(session, cluster.b, {"kind": "dismiss", "visitor": "visitor-lamp", "view": "w1"})
            await anna.receive("visitors", row_of("visitor-lamp", {"dismissed": True, "invited": False}))
            await anna.send({"type": "visitor.invite", "visitor_id": "visitor-lamp", "site_id": site_id})
            assert (await anna.receive("error"))["code"] == "visitor_dismissed"


async def _signed_in(node: Node, email: str, area: str = "operator") -> aiohttp.ClientSession:
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    try:
        form = await sign_in_form(session, node.url, area, email)
        async with session.post(f"{node.url}/{area}/login", data=form, allow_redirects=False) as r:
            assert r.status == 302, await r.text()
    except BaseException:
        await session.close()
        raise
    return session


async def test_signing_out_on_a_closes_that_sessions_softphone_on_b(cluster: Cluster) -> None:
    await add_operator(cluster, "anna@cluster.test")
    async with AsyncExitStack() as opened:
        desk = await _signed_in(cluster.a, "anna@cluster.test")  # signed in through A …
        opened.push_async_callback(desk.close)
        laptop = await _signed_in(cluster.b, "anna@cluster.test")  # … and again, another session
        opened.push_async_callback(laptop.close)
        desk_ws = await desk.ws_connect(f"{cluster.b.url}/ws/operator")  # … whose softphone is on B
        laptop_ws = await laptop.ws_connect(f"{cluster.b.url}/ws/operator")
        for ws in (desk_ws, laptop_ws):
            assert (await ws.receive_json(timeout=10))["type"] == "hello"

        async with desk.get(f"{cluster.a.url}/operator/config") as r:
            token = (await r.json())["csrf"]
        async with desk.post(
            f"{cluster.a.url}/operator/logout", data={"csrf": token}, allow_redirects=False
        ) as r:
            assert r.status == 302
        while (message := await desk_ws.receive(timeout=10)).type is aiohttp.WSMsgType.TEXT:
            pass  # frames sent before the close
        assert message.type is aiohttp.WSMsgType.CLOSE, message
        assert (message.data, message.extra) == (4401, "session_revoked")
        # The other session's softphone on B goes on.
        await laptop_ws.send_json({"type": "presence.set", "status": "online"})
        while (frame := await laptop_ws.receive_json(timeout=10))["type"] != "presence":
            pass
        assert frame["status"] == "online"
        await laptop_ws.close()


async def _attempt(node: Node, email: str, password: str) -> int:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        form = await sign_in_form(session, node.url, "operator", email, password)
        async with session.post(f"{node.url}/operator/login", data=form, allow_redirects=False) as r:
            return r.status


async def test_forty_wrong_passwords_spread_over_two_nodes_get_ten_checks_in_all(cluster: Cluster) -> None:
    await add_operator(cluster, "anna@cluster.test")
    nodes = [cluster.a, cluster.b] * 20
    statuses = await asyncio.gather(*(_attempt(n, "anna@cluster.test", "guess") for n in nodes))
    assert set(statuses) <= {401, 429}, statuses
    checked = statuses.count(401)  # a 401 is an attempt that reached the password check
    assert checked <= 10, f"{checked} of 40 guesses were checked"
    assert checked >= 1 and statuses.count(429) == 40 - checked
    # Counted together: the right password is refused on either node now (no attempts left).
    assert await _attempt(cluster.b, "anna@cluster.test", PASSWORD) == 429
    print(f"40 parallel guesses over two nodes: {checked} reached the check")


async def _closed_by_server(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    while (message := await ws.receive(timeout=10)).type is aiohttp.WSMsgType.TEXT:
        pass  # frames sent before the close
    return message


async def test_disabling_an_operator_or_a_new_password_on_one_node_cuts_them_off_on_the_other(
    cluster: Cluster,
) -> None:
    anna = await add_operator(cluster, "anna@cluster.test")
    async with cluster.database.session() as session:
        await accounts.create_user(session, "owner@cluster.test", PASSWORD, "owner")
    async with AsyncExitStack() as opened:
        owner_on_a = await _signed_in(cluster.a, "owner@cluster.test", area="dashboard")
        opened.push_async_callback(owner_on_a.close)
        owner_on_b = await _signed_in(cluster.b, "owner@cluster.test", area="dashboard")
        opened.push_async_callback(owner_on_b.close)

        async def owner_posts(owner: aiohttp.ClientSession, node: Node, what: str, value: str) -> None:
            async with owner.get(f"{node.url}/dashboard/operators") as r:
                token = re.search(r'name="csrf" value="([0-9a-f]+)"', await r.text())[1]  # type: ignore[index]
            field = "disabled" if what == "disabled" else "password"
            async with owner.post(
                f"{node.url}/dashboard/operators/{anna.id}/{what}",
                data={"csrf": token, field: value},
                allow_redirects=False,
            ) as r:
                assert r.status in (302, 303), await r.text()

        # Disabled through A while her softphone is on B: the socket closes, the cookie is refused on B.
        laptop = await _signed_in(cluster.a, "anna@cluster.test")
        opened.push_async_callback(laptop.close)
        ws = await laptop.ws_connect(f"{cluster.b.url}/ws/operator")
        assert (await ws.receive_json(timeout=10))["type"] == "hello"
        await owner_posts(owner_on_a, cluster.a, "disabled", "1")
        message = await _closed_by_server(ws)
        assert (message.type, message.data, message.extra) == (
            aiohttp.WSMsgType.CLOSE,
            4401,
            "session_revoked",
        )
        async with laptop.get(f"{cluster.b.url}/operator/config") as r:
            assert r.status == 401
        assert await _attempt(cluster.b, "anna@cluster.test", PASSWORD) == 401  # disabled: no sign-in

        # Enabled again, signed in through B, softphone on A; a new password set through B cuts it off.
        await owner_posts(owner_on_b, cluster.b, "disabled", "0")
        phone = await _signed_in(cluster.b, "anna@cluster.test")
        opened.push_async_callback(phone.close)
        ws = await phone.ws_connect(f"{cluster.a.url}/ws/operator")
        assert (await ws.receive_json(timeout=10))["type"] == "hello"
        await owner_posts(owner_on_b, cluster.b, "password", "a brand new password")
        message = await _closed_by_server(ws)
        assert (message.type, message.data, message.extra) == (
            aiohttp.WSMsgType.CLOSE,
            4401,
            "session_revoked",
        )
        async with phone.get(f"{cluster.a.url}/operator/config") as r:
            assert r.status == 401
        assert await _attempt(cluster.a, "anna@cluster.test", PASSWORD) == 401
        assert await _attempt(cluster.a, "anna@cluster.test", "a brand new password") == 302


async def test_a_burst_of_heartbeats_is_shared_a_bounded_number_of_times_and_a_change_at_once(
    cluster: Cluster, cluster_sockets: tuple[Sockets, Sockets]
) -> None:
    on_a, _ = cluster_sockets
    await add_operator(cluster, "anna@cluster.test")
    anna = await on_a.softphone("anna@cluster.test", online=True)
    shared: list[dict[str, Any]] = []  # the visitor's cards as they went out on the board's channel
    listener = redis.Redis.from_url(cluster.redis_url, decode_responses=True)
    pubsub = listener.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe("callserver:board")

    async def listen() -> None:
        async for message in pubsub.listen():
            body = json.loads(message["data"])["body"]
            shared.extend(c for c in body.get("cards", []) if c["token"] == "visitor-ping")

    listening = asyncio.create_task(listen())
    try:
        async with aiohttp.ClientSession() as session:
            await beacon(session, cluster.b, view("visitor-ping", "p1", "/products/chair", product_price=80))
            await anna.receive("visitors", row_of("visitor-ping", {"pages": 1}))
            started, before = time.monotonic(), len(shared)
            for n in range(30):  # a heartbeat a second for half a minute, squeezed; round robin
                node = cluster.b if n % 2 else cluster.a
                ping = {"kind": "ping", "visitor": "visitor-ping", "view": "p1", "seconds": n + 1}
                await beacon(session, node, ping)
            # A change the board shows goes out at once, whichever node takes it.
            cart = {"kind": "ping", "visitor": "visitor-ping", "view": "p1", "seconds": 31, "cart_value": 350}
            await beacon(session, cluster.b, cart)
            await anna.receive("visitors", row_of("visitor-ping", {"value": 350, "cart_value": 350}))
            elapsed = time.monotonic() - started
        # Each node may say "still here" once every SHARE_EVERY seconds; the cart is one more card.
        bound = 1 + 2 * (1 + int(elapsed // SHARE_EVERY))
        sent = len(shared) - before
        assert 1 <= sent <= bound, f"{sent} cards for 31 heartbeats in {elapsed:.1f} s (at most {bound})"
        assert shared[-1]["cart_value"] == 350
        print(f"31 heartbeats over two nodes: {sent} card(s) shared")
    finally:
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await listener.aclose()


async def test_a_killed_nodes_streams_stop_counting_once_the_registry_drops_it(
    cluster: Cluster, cluster_sockets: tuple[Sockets, Sockets]
) -> None:
    on_a, _ = cluster_sockets
    await add_operator(cluster, "anna@cluster.test")
    anna = await on_a.softphone("anna@cluster.test", online=True)
    async with aiohttp.ClientSession() as session:
        await beacon(session, cluster.a, view("visitor-elm", "e1", "/products/elm"))
        async with event_stream(session, cluster.b, "visitor-elm"):
            await anna.receive("visitors", row_of("visitor-elm", {"reachable": True}))
            anna.drain()  # the boards before the stream (not reachable yet) are not the news awaited
            await asyncio.to_thread(cluster.b.kill)  # SIGKILL: no goodbye on the board's channel
            # Dead after DEAD_AFTER s without a heartbeat, then a few checks: as when a stream ends.
            within = DEAD_AFTER + (MISSING_ROUNDS + 2) * HEARTBEAT_EVERY + 10
            await anna.receive("visitors", row_of("visitor-elm", {"reachable": False}), within=within)
        # A still serves the visitor: a new stream there counts again.
        async with event_stream(session, cluster.a, "visitor-elm"):
            await anna.receive("visitors", row_of("visitor-elm", {"reachable": True}))
