"""The node registry: each node's entry in Redis, renewed every 2 s, and the drain order it watches.

Shaped after LiveKit's `RedisRouter` (pkg/routing/redisrouter.go), which keeps every node in one Redis
hash, re-registers it with fresh stats every 2 s, marks it SHUTTING_DOWN when it drains and deletes it
when it stops; readers judge a node by the age of its stats. A hash field cannot expire, so here each
node has its own key written with `PX` (a node that stops renewing disappears by itself after 10 s)
and a sorted set keeps every name with the time of its last heartbeat, so `callserver nodes` can still
show a node that died (state `dead`) for a minute before forgetting it. A dead node is never listed as
`serving`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import cast

from redis.asyncio import Redis

from callserver.background import stop_task
from callserver.cluster.redis import RedisLink, RedisUnavailable
from callserver.jsontypes import JsonObject

log = logging.getLogger(__name__)

HEARTBEAT_EVERY = 2.0  # seconds between renewals (DESIGN)
DEAD_AFTER = 10.0  # seconds without a renewal: the node is dead (DESIGN)
FORGET_AFTER = 60.0  # seconds a dead node is still listed as `dead`
DRAIN_ORDER_TTL = 24 * 3600  # seconds a drain order waits for a node that is not running now

NODES = "callserver:nodes"  # sorted set: node name → last heartbeat (Unix ms)


def node_key(name: str) -> str:
    return f"callserver:node:{name}"


def drain_key(name: str) -> str:
    return f"callserver:drain:{name}"


class NodeState(StrEnum):
    SERVING = "serving"
    DRAINING = "draining"
    DEAD = "dead"  # listed only: no heartbeat for DEAD_AFTER seconds


@dataclass(frozen=True)
class WorkerLoad:
    """One media worker (or the main process when media runs there)."""

    pid: int | None
    calls: int
    cpu: float | None = None  # share of one core since the last heartbeat, when known


@dataclass(frozen=True)
class NodeLoad:
    """What a node carries now."""

    calls: int = 0
    chats: int = 0
    operators: int = 0  # operators' sockets (softphones)
    visitors: int = 0  # visitors' sockets (widgets)
    workers: tuple[WorkerLoad, ...] = ()


@dataclass(frozen=True)
class NodeEntry:
    """A node as the registry holds it."""

    name: str
    address: str
    state: NodeState
    started_at: float
    heartbeat_at: float
    load: NodeLoad = field(default_factory=NodeLoad)

    def encode(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def decode(cls, text: str) -> NodeEntry:
        data = json.loads(text)
        load = data.get("load") or {}
        workers = tuple(WorkerLoad(**w) for w in load.get("workers") or ())
        return cls(
            name=str(data["name"]),
            address=str(data["address"]),
            state=NodeState(data["state"]),
            started_at=float(data["started_at"]),
            heartbeat_at=float(data["heartbeat_at"]),
            load=NodeLoad(**{**load, "workers": workers}),
        )

    def listing(self, now: float) -> JsonObject:
        """The node as `callserver nodes --json` lists it (DESIGN, Commands)."""
        age = max(0.0, now - self.heartbeat_at)
        return {
            "name": self.name,
            "address": self.address,
            "state": str(NodeState.DEAD if age > DEAD_AFTER else self.state),
            "calls": self.load.calls,
            "sockets": {"operators": self.load.operators, "visitors": self.load.visitors},
            "heartbeat_age_s": round(age, 1),
            "chats": self.load.chats,
            "workers": [asdict(w) for w in self.load.workers],
            "started_at": self.started_at,
        }


async def list_nodes(client: Redis, now: float | None = None) -> list[JsonObject]:
    """Every node seen in the last minute, by name; one whose entry expired is `dead`."""
    now = time.time() if now is None else now
    seen = cast(
        list[tuple[str, float]],
        await client.zrangebyscore(NODES, (now - FORGET_AFTER) * 1000, "+inf", withscores=True),
    )
    if not seen:
        return []
    entries = cast(list[str | None], await client.mget([node_key(name) for name, _ in seen]))
    nodes: list[JsonObject] = []
    for (name, beat_ms), raw in zip(seen, entries, strict=True):
        if raw is not None:
            nodes.append(NodeEntry.decode(raw).listing(now))
        else:
            nodes.append(
                {
                    "name": name,
                    "address": None,
                    "state": str(NodeState.DEAD),
                    "calls": 0,
                    "sockets": {"operators": 0, "visitors": 0},
                    "heartbeat_age_s": round(max(0.0, now - beat_ms / 1000), 1),
                }
            )
    return sorted(nodes, key=lambda n: str(n["name"]))


async def order_drain(client: Redis, name: str) -> bool:
    """Tell node `name` to drain (it reads the order at its next heartbeat); False if no such node runs."""
    if not await client.exists(node_key(name)):
        return False
    await client.set(drain_key(name), str(time.time()), ex=DRAIN_ORDER_TTL)
    return True


class NodeRegistry:
    """This node's entry, renewed every HEARTBEAT_EVERY seconds; `close()` removes it, safe to call twice."""

    def __init__(
        self,
        link: RedisLink,
        name: str,
        address: str,
        load: Callable[[], NodeLoad],
        draining: Callable[[], bool],
        on_drain_order: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._link = link
        self.name = name
        self.address = address
        self._load = load
        self._draining = draining
        self._on_drain_order = on_drain_order
        self._clock = clock
        self.started_at = clock()
        self._task: asyncio.Task[None] | None = None
        self._now = asyncio.Event()
        self._closed = False

    def entry(self) -> NodeEntry:
        state = NodeState.DRAINING if self._draining() else NodeState.SERVING
        return NodeEntry(self.name, self.address, state, self.started_at, self._clock(), self._load())

    async def start(self) -> None:
        """Clear an old drain order for this name, register, and renew from now on.

        Redis being away at start-up is not fatal: the node registers once it answers.
        """
        with contextlib.suppress(RedisUnavailable):
            await self._link.run("clearing the drain order", lambda r: r.delete(drain_key(self.name)))
            await self.beat()
        self._task = asyncio.get_running_loop().create_task(self._renew(), name=f"heartbeat {self.name}")

    async def beat(self) -> None:
        """Write this node's entry (with its TTL) and its heartbeat; obey a drain order."""
        entry = self.entry()

        async def write(r: Redis) -> list[object]:
            async with r.pipeline(transaction=True) as pipe:
                pipe.set(node_key(self.name), entry.encode(), px=int(DEAD_AFTER * 1000))
                pipe.zadd(NODES, {self.name: entry.heartbeat_at * 1000})
                pipe.zremrangebyscore(NODES, "-inf", (entry.heartbeat_at - FORGET_AFTER) * 1000)
                pipe.get(drain_key(self.name))
                return await pipe.execute()

        *_, order = await self._link.run("the heartbeat", write)
        if order is not None and not self._draining():
            log.warning("node %s: drain ordered through Redis", self.name)
            self._on_drain_order()

    def beat_soon(self) -> None:
        """Renew now rather than at the next tick (the node's state changed)."""
        self._now.set()

    async def _renew(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._now.wait(), HEARTBEAT_EVERY)
            self._now.clear()
            try:
                await self.beat()
            except RedisUnavailable:
                pass  # logged once by the link; the next beat re-registers
            except Exception:
                log.exception("node %s: the heartbeat failed", self.name)

    async def close(self) -> None:
        """Stop renewing and leave the registry (LiveKit's UnregisterNode)."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            await stop_task(self._task)

        async def leave(r: Redis) -> list[object]:
            async with r.pipeline(transaction=True) as pipe:
                pipe.delete(node_key(self.name))
                pipe.zrem(NODES, self.name)
                return await pipe.execute()

        with contextlib.suppress(RedisUnavailable):
            await self._link.run("leaving the registry", leave)
