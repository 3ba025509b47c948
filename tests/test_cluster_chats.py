"""Chats across two nodes: the shopper's widget on one node, the operator's softphone on the other.

Two `callserver serve` processes on one PostgreSQL and one Redis (tests/cluster.py). The chat lives
on the node of the widget's socket; the operator's frames come through the relay, their actions go
back as relay requests (DESIGN, Scale).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as redis
from sqlalchemy import func, select

from callserver.cluster.nodes import DEAD_AFTER, HEARTBEAT_EVERY
from callserver.store.models import Chat, ChatMessage
from tests import cluster as clusters
from tests.cluster import Cluster, Node, add_operator, operators_online, running_cluster
from tests.sockets import Sockets, Widget

# The fixtures (tests/cluster.py), bound here so pytest finds them.
cluster = clusters.cluster
cluster_sockets = clusters.cluster_sockets

MAX_CHATS = 3


async def _chats_in_progress(node: Node) -> float:
    """`callserver_chats_in_progress` in the node's /metrics (read from loopback, so no token)."""
    async with aiohttp.ClientSession() as session, session.get(f"{node.url}/metrics") as response:
        assert response.status == 200, await response.text()
        for line in (await response.text()).splitlines():
            if line.startswith("callserver_chats_in_progress "):
                return float(line.split()[1])
    raise AssertionError("no callserver_chats_in_progress in /metrics")


async def test_a_chat_started_through_b_reaches_the_operator_on_a_and_back(
    cluster: Cluster, cluster_sockets: tuple[Sockets, Sockets]
) -> None:
    on_a, on_b = cluster_sockets
    await add_operator(cluster, "anna@cluster.test")
    anna = await on_a.softphone("anna@cluster.test", online=True)
    second_tab = await on_a.softphone("anna@cluster.test")  # another softphone of hers, also on A
    assert await operators_online(cluster.b, 1) == 1
    shopper = await on_b.shopper("visitor-chat-1")
    await shopper.send({"type": "chat.start", "context": {"page": "https://shop.example/p/7"}})

    assigned = await anna.receive("chat.assigned")  # routed on B, told through the relay
    chat_id = assigned["chat"]["id"]
    assert assigned["chat"]["page"] == "https://shop.example/p/7"
    assert (await shopper.receive("chat.history"))["chat"]["operator"] == {"name": "anna"}

    await shopper.send({"type": "chat.typing", "text": "Do you"})
    assert (await anna.receive("chat.typing"))["text"] == "Do you"
    await shopper.send({"type": "chat.send", "text": "Do you ship to Oslo?", "client_id": "v1"})
    asked = (await shopper.receive("chat.ack"))["message"]
    assert (await anna.receive("chat.message"))["message"]["id"] == asked["id"]
    assert (await shopper.receive("chat.status"))["status"] == "delivered"

    # Anna's actions, sent on A, run on B where the chat lives; the ack comes back through the relay.
    await anna.send({"type": "chat.read", "chat_id": chat_id, "up_to": asked["id"]})
    read = await shopper.receive("chat.status", lambda f: f["status"] == "read")
    assert read["ids"] == [asked["id"]]
    await anna.send({"type": "chat.typing", "chat_id": chat_id})
    assert (await shopper.receive("chat.typing"))["active"] is True
    await anna.send({"type": "chat.send", "chat_id": chat_id, "text": "Yes, in 3 days.", "client_id": "a1"})
    ack = await anna.receive("chat.ack")
    assert ack["client_id"] == "a1" and ack["message"]["text"] == "Yes, in 3 days."
    told = await shopper.receive("chat.message")
    assert told["message"]["id"] == ack["message"]["id"] and told["message"]["operator"] == {"name": "anna"}
    await second_tab.receive("chat.message", lambda f: f["message"]["id"] == ack["message"]["id"])
    await anna.nothing("chat.message", where=lambda f: f["message"]["id"] == ack["message"]["id"])
    assert (await anna.receive("chat.status"))["ids"] == [ack["message"]["id"]]  # delivered to the widget
    await shopper.send({"type": "chat.read", "up_to": ack["message"]["id"]})
    assert (await anna.receive("chat.status", lambda f: f["status"] == "read"))["ids"] == [
        ack["message"]["id"]
    ]

    # A coded error from B comes back to A: too long a message, with its client_id.
    await anna.send({"type": "chat.send", "chat_id": chat_id, "text": "z" * 4001, "client_id": "big"})
    refused = await anna.receive("error")
    assert (refused["code"], refused["client_id"]) == ("message_too_long", "big")
    await anna.send({"type": "chat.send", "chat_id": "no-such-chat", "text": "hi"})
    assert (await anna.receive("error"))["code"] == "unknown_chat"

    # A softphone opened later on A lists the chat held on B, with its messages.
    third_tab = await on_a.softphone("anna@cluster.test")
    hello = third_tab.hello
    [entry] = [c for c in hello["chats"] if c["chat"]["id"] == chat_id]
    assert [m["text"] for m in entry["messages"]] == ["Do you ship to Oslo?", "Yes, in 3 days."]

    # The shopper's next page opens its socket on A (no sticky sessions): the chat moves there.
    await shopper.close()
    next_page = await on_a.shopper("visitor-chat-1")
    history = await next_page.receive("chat.history")
    assert history["chat"] == {"id": chat_id, "state": "open", "operator": {"name": "anna"}}
    assert [m["text"] for m in history["messages"]] == ["Do you ship to Oslo?", "Yes, in 3 days."]
    await next_page.send({"type": "chat.send", "text": "And to Bergen?", "client_id": "v2"})
    await anna.receive("chat.message", lambda f: f["message"]["text"] == "And to Bergen?")
    await anna.send({"type": "chat.send", "chat_id": chat_id, "text": "Also.", "client_id": "a2"})
    await anna.receive("chat.ack", lambda f: f["client_id"] == "a2")
    await next_page.receive("chat.message", lambda f: f["message"]["text"] == "Also.")

    assert (await _chats_in_progress(cluster.a), await _chats_in_progress(cluster.b)) == (1, 0)

    await anna.send({"type": "chat.close", "chat_id": chat_id})
    closed = await next_page.receive("chat.state", lambda f: f["chat"]["state"] == "closed")
    assert closed["chat"]["id"] == chat_id
    await anna.receive("chat.closed", lambda f: f["chat_id"] == chat_id and f["reason"] == "operator")
    async with cluster.database.session() as session:
        chat = await session.get(Chat, chat_id)
        assert chat is not None and chat.state == "closed"
        texts = list(await session.scalars(select(ChatMessage.body).where(ChatMessage.chat_id == chat_id)))
    assert texts == ["Do you ship to Oslo?", "Yes, in 3 days.", "And to Bergen?", "Also."]


async def test_a_chat_queued_on_b_goes_to_the_operator_who_comes_online_on_a(
    cluster: Cluster, cluster_sockets: tuple[Sockets, Sockets]
) -> None:
    on_a, on_b = cluster_sockets
    await add_operator(cluster, "anna@cluster.test")
    await add_operator(cluster, "ben@cluster.test")
    ben = await on_b.softphone("ben@cluster.test", online=True)
    # Ben (on B) is full: the sixth visitor waits in B's queue.
    first = await on_b.shopper("visitor-queue-1")
    await first.send({"type": "chat.start"})
    ben_chat = (await ben.receive("chat.assigned"))["chat"]["id"]
    for n in range(4):  # Ben's other four seats (max_chats is 5)
        extra = await on_b.shopper(f"visitor-fill-{n}")
        await extra.send({"type": "chat.start"})
        await extra.receive("chat.history", lambda f: f["chat"]["state"] == "open")
    anna = await on_a.softphone("anna@cluster.test")  # open on A, offline: she takes no chats yet
    waiting = await on_b.shopper("visitor-queue-2")
    await waiting.send({"type": "chat.start"})
    state = await waiting.receive("chat.history")
    assert state["chat"]["state"] == "waiting"
    queued_id = state["chat"]["id"]
    # Anna, on A, sees B's queue (she works for the site, though away).
    queue = await anna.receive("chat.queue", lambda f: any(c["id"] == queued_id for c in f["chats"]))
    assert [c["state"] for c in queue["chats"] if c["id"] == queued_id] == ["waiting"]

    await anna.send({"type": "presence.set", "status": "online"})
    assigned = await anna.receive("chat.assigned", lambda f: f["chat"]["id"] == queued_id)
    assert assigned["chat"]["state"] == "open"
    assert (await waiting.receive("chat.state", lambda f: f["chat"]["state"] == "open"))["chat"][
        "operator"
    ] == {"name": "anna"}
    await waiting.send({"type": "chat.send", "text": "Finally!", "client_id": "w1"})
    assert (await anna.receive("chat.message"))["message"]["text"] == "Finally!"
    async with cluster.database.session() as session:
        chat = await session.get(Chat, queued_id)
        assert chat is not None and chat.operator_id == anna.account_id
    assert ben_chat != queued_id


@pytest.fixture
async def tight_cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """Nodes A and B where an operator handles at most MAX_CHATS chats at once."""
    async with running_cluster(tmp_path, env={"CALLSERVER_MAX_CHATS": str(MAX_CHATS)}) as running:
        yield running


class Shoppers:
    """Widgets on both nodes, and what each was last told of its chat (`chat.history` / `chat.state`)."""

    def __init__(self) -> None:
        self.widgets: dict[str, Widget] = {}
        self.last: dict[str, dict[str, Any]] = {}

    def told(self) -> dict[str, dict[str, Any]]:
        for token, widget in self.widgets.items():
            for frame in widget.drain():
                if frame["type"] in ("chat.history", "chat.state"):
                    self.last[token] = frame["chat"]
        return self.last

    async def settled(self, want: Callable[[dict[str, dict[str, Any]]], bool], within: float = 20) -> None:
        """Wait until what the widgets were last told satisfies `want` (fails with what they were told)."""
        deadline = time.monotonic() + within
        while not want(self.told()):
            assert time.monotonic() < deadline, f"the widgets were told {json.dumps(self.last, indent=1)}"
            await asyncio.sleep(0.1)


def places(told: dict[str, dict[str, Any]]) -> list[int]:
    return sorted(c["position"] for c in told.values() if c["state"] == "waiting")


def opened(told: dict[str, dict[str, Any]]) -> list[str]:
    return sorted(t for t, c in told.items() if c["state"] == "open")


async def assigned_to(cluster: Cluster, operator_id: int) -> int:
    async with cluster.database.session() as session:
        count = await session.scalar(
            select(func.count()).where(Chat.operator_id == operator_id, Chat.state != "closed")
        )
        return int(count or 0)


async def test_chats_started_at_once_on_two_nodes_fill_max_chats_exactly_and_queue_in_one_order(
    tight_cluster: Cluster,
) -> None:
    cluster = tight_cluster
    await add_operator(cluster, "ben@cluster.test")
    async with Sockets(cluster.a) as on_a, Sockets(cluster.b) as on_b:
        ben = await on_a.softphone("ben@cluster.test", online=True)
        assert await operators_online(cluster.b, 1) == 1
        shoppers = Shoppers()
        for n in range(8):  # half the widgets on each node
            token = f"visitor-rush-{n}"
            shoppers.widgets[token] = await (on_a if n % 2 else on_b).shopper(token)
        await asyncio.gather(*(w.send({"type": "chat.start"}) for w in shoppers.widgets.values()))

        # Exactly MAX_CHATS go to Ben, whichever node gave them; the rest wait, their places
        # counted over both nodes' queues: 1 … 5, each once.
        waiting = 8 - MAX_CHATS
        await shoppers.settled(lambda t: len(t) == 8 and places(t) == list(range(1, waiting + 1)))
        assert len(opened(shoppers.last)) == MAX_CHATS
        assert await assigned_to(cluster, ben.account_id) == MAX_CHATS
        mine = [(await ben.receive("chat.assigned"))["chat"]["id"] for _ in range(MAX_CHATS)]
        assert len(set(mine)) == MAX_CHATS
        await ben.nothing("chat.assigned", within=0.2)
        closed: set[str] = set()

        # Ben closes his chats one by one: each time the visitor first in the queue, on either node,
        # takes the seat, and every place left moves up, on both nodes.
        for left in range(waiting - 1, -1, -1):
            first = next(t for t, c in shoppers.last.items() if c.get("position") == 1)
            closing = next(c for c in mine if c not in closed)
            await ben.send({"type": "chat.close", "chat_id": closing})
            closed.add(closing)
            await shoppers.settled(lambda t, left=left: places(t) == list(range(1, left + 1)))
            assert first in opened(shoppers.last), f"{first} was first in the queue, not served next"
            assert len(opened(shoppers.last)) == MAX_CHATS
            assert await assigned_to(cluster, ben.account_id) == MAX_CHATS
            mine.append((await ben.receive("chat.assigned"))["chat"]["id"])


async def test_max_chats_is_counted_again_after_redis_restarts_and_a_dead_nodes_seats_free_up(
    tight_cluster: Cluster,
) -> None:
    cluster = tight_cluster
    assert cluster.redis is not None
    await add_operator(cluster, "ben@cluster.test")
    async with Sockets(cluster.a) as on_a, Sockets(cluster.b) as on_b:
        ben = await on_a.softphone("ben@cluster.test", online=True)
        assert await operators_online(cluster.b, 1) == 1
        shoppers = Shoppers()
        for n in range(MAX_CHATS):  # Ben's seats, filled by chats B holds
            token = f"visitor-seat-{n}"
            shoppers.widgets[token] = widget = await on_b.shopper(token)
            await widget.send({"type": "chat.start"})
            await ben.receive("chat.assigned")
        await shoppers.settled(lambda t: len(opened(t)) == MAX_CHATS)

        # Redis restarts empty: the nodes count Ben's chats again, and the next chat waits.
        await asyncio.to_thread(cluster.redis.stop)
        await asyncio.to_thread(cluster.redis.start)
        client = redis.Redis.from_url(cluster.redis_url, decode_responses=True)
        try:
            deadline = time.monotonic() + 20
            key = f"callserver:seat_chats:{ben.account_id}"
            while await client.zcard(key) != MAX_CHATS:  # the chats' node renews its claims each beat
                assert time.monotonic() < deadline, "Ben's chats were not counted again in Redis"
                await asyncio.sleep(0.2)
        finally:
            await client.aclose()
        await ben.nothing("chat.assigned", within=0.1)
        late = shoppers.widgets["visitor-late"] = await on_a.shopper("visitor-late")
        await late.send({"type": "chat.start"})
        await shoppers.settled(lambda t: t.get("visitor-late", {}).get("state") == "waiting")
        assert await assigned_to(cluster, ben.account_id) == MAX_CHATS

        # B dies with Ben's chats: their claims expire, and the chat waiting on A gets a seat.
        await asyncio.to_thread(cluster.b.kill)
        within = DEAD_AFTER + 4 * HEARTBEAT_EVERY + 10
        await shoppers.settled(lambda t: t["visitor-late"]["state"] == "open", within=within)
        assert (await ben.receive("chat.assigned", within=5))["chat"]["state"] == "open"
