"""Several nodes on one Redis: the registry, a node that dies, draining (drain order, SIGTERM), Redis back.

Real processes: a throwaway redis-server and `callserver serve` nodes on loopback sharing one SQLite
file (the registry and draining need no second writer of calls), driven by tests/sockets.py peers.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from callserver.cluster.nodes import DEAD_AFTER, HEARTBEAT_EVERY
from tests.servers import RedisServer, redis_server
from tests.sockets import Sockets
from tests.stack import PASSWORD, free_port

SHOP = "http://127.0.0.1:9"  # only its Origin matters here
OPERATOR = "op@shop.example"


@dataclass
class SiteKey:
    key: str


class Node:
    """One `callserver serve` process; `url`, `shop_url` and `site` make it a server for tests/sockets.py."""

    def __init__(self, env: dict[str, str], name: str, site: SiteKey) -> None:
        self.name, self.port, self.site, self.shop_url = name, free_port(), site, SHOP
        self.env = {**env, "CALLSERVER_NODE_NAME": name}
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "callserver", "serve", "--port", str(self.port),
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while (await self.ready())[0] != 200:
            assert self.process.returncode is None, f"node {self.name} exited ({self.process.returncode})"
            assert time.monotonic() < deadline, f"node {self.name} did not become ready"
            await asyncio.sleep(0.2)

    async def ready(self) -> tuple[int, dict[str, Any]]:
        """`/readyz`'s status and body (0 while nothing answers)."""
        try:
            async with aiohttp.ClientSession() as session, session.get(f"{self.url}/readyz") as response:
                return response.status, await response.json()
        except aiohttp.ClientError:
            return 0, {}

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def exited(self, within: float) -> int:
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), within)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


def cli(env: dict[str, str], *args: str) -> Any:
    out = subprocess.run(
        [sys.executable, "-m", "callserver", *args, "--json"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


async def nodes(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    listed = await asyncio.to_thread(cli, env, "nodes")
    return {n["name"]: n for n in listed["nodes"]}


async def until(check: Any, within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while not (result := await check()):
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        await asyncio.sleep(0.2)
    return result


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture
def env(tmp_path: Path, redis: RedisServer) -> dict[str, str]:
    return {
        **os.environ,
        "CALLSERVER_VAR_DIR": str(tmp_path / "var"),
        "CALLSERVER_HOST": "127.0.0.1",
        "CALLSERVER_REDIS_URL": redis.url,
        "CALLSERVER_MEDIA_WORKERS": "0",  # media in each node's process: worker start-up costs CPU here
    }


@pytest.fixture
async def cluster(env: dict[str, str]) -> AsyncIterator[tuple[SiteKey, AsyncExitStack]]:
    site = SiteKey(cli(env, "site", "add", "--name", "Shop", "--origin", SHOP)["key"])
    cli(env, "user", "add", "--email", OPERATOR, "--password", PASSWORD, "--role", "operator")
    async with AsyncExitStack() as stack:
        yield site, stack


async def started(env: dict[str, str], cluster: tuple[SiteKey, AsyncExitStack], name: str) -> Node:
    site, stack = cluster
    node = Node(env, name, site)
    stack.push_async_callback(node.stop)
    await node.start()
    return node


async def test_both_nodes_are_listed_and_a_killed_one_stops_serving_within_ten_seconds(
    env: dict[str, str], cluster: tuple[SiteKey, AsyncExitStack]
) -> None:
    a, b = await asyncio.gather(started(env, cluster, "node-a"), started(env, cluster, "node-b"))
    listed = await nodes(env)
    assert {"node-a", "node-b"} <= listed.keys()
    for node in (a, b):
        entry = listed[node.name]
        assert entry["state"] == "serving"
        assert entry["address"] == node.url
        assert entry["heartbeat_age_s"] <= DEAD_AFTER
        assert entry["calls"] == 0 and entry["sockets"] == {"operators": 0, "visitors": 0}

    async with Sockets(a) as sockets:  # a's load shows in its entry at the next heartbeat
        await sockets.softphone(OPERATOR)
        await sockets.shopper()
        await until(
            lambda: _load_is(env, "node-a", {"operators": 1, "visitors": 1}),
            4 * HEARTBEAT_EVERY,
            "a's sockets",
        )

    b.signal(signal.SIGKILL)
    killed = time.monotonic()
    await until(lambda: _not_serving(env, "node-b"), DEAD_AFTER + 3 * HEARTBEAT_EVERY, "b not serving")
    print(f"node-b not listed as serving {time.monotonic() - killed:.1f} s after SIGKILL")
    assert (await nodes(env))["node-a"]["state"] == "serving"


async def _state_is(env: dict[str, str], name: str, state: str) -> bool:
    return bool((await nodes(env))[name]["state"] == state)


async def _load_is(env: dict[str, str], name: str, sockets: dict[str, int]) -> bool:
    return bool((await nodes(env))[name]["sockets"] == sockets)


async def _not_serving(env: dict[str, str], name: str) -> bool:
    entry = (await nodes(env)).get(name)
    return entry is None or entry["state"] != "serving"


async def test_a_drain_order_takes_the_node_out_and_refuses_new_calls_with_the_fallback(
    env: dict[str, str], cluster: tuple[SiteKey, AsyncExitStack]
) -> None:
    a, b = await asyncio.gather(started(env, cluster, "node-a"), started(env, cluster, "node-b"))
    async with Sockets(a) as sockets:
        # A call in progress keeps the draining node up (it exits once its calls ended).
        softphone = await sockets.softphone(OPERATOR, online=True)
        talking = await sockets.shopper()
        call_id = await talking.call()
        await softphone.receive("call.incoming")
        await softphone.answer(call_id)
        assert await asyncio.to_thread(cli, env, "nodes", "drain", "node-a") == {
            "name": "node-a",
            "state": "draining",
        }
        status, body = await until(lambda: _unready(a), 4 * HEARTBEAT_EVERY, "a's /readyz 503")
        assert status == 503 and body["status"] == "draining"
        assert (await b.ready())[0] == 200
        assert (await nodes(env))["node-a"]["state"] == "draining"
        shopper = await sockets.shopper("visitor-0002")
        await shopper.send({"type": "call.offer", "sdp": await shopper.offer(), "context": {"page": SHOP}})
        assert (await shopper.receive("error"))["code"] == "all_busy"  # the widget offers a chat
        await shopper.send({"type": "chat.start", "context": {"page": SHOP}, "fallback": "all_busy"})
        assert (await shopper.receive("error"))["code"] == "nobody_online"  # and then the offline form
        await talking.send({"type": "call.hangup"})
        assert (await talking.receive("call.ended"))["reason"] == "completed"
        assert await a.exited(within=30) == 0
    listed = await nodes(env)
    assert "node-a" not in listed and listed["node-b"]["state"] == "serving"


async def _unready(node: Node) -> tuple[int, dict[str, Any]] | None:
    status, body = await node.ready()
    return (status, body) if status == 503 else None


async def test_sigterm_drains_a_call_in_progress_to_its_end_then_the_node_exits(
    env: dict[str, str], cluster: tuple[SiteKey, AsyncExitStack]
) -> None:
    a = await started(env, cluster, "node-a")
    async with Sockets(a) as sockets:
        softphone = await sockets.softphone(OPERATOR, online=True)
        shopper = await sockets.shopper()
        call_id = await shopper.call()
        await softphone.receive("call.incoming")
        await softphone.answer(call_id)
        a.signal(signal.SIGTERM)
        _, body = await until(lambda: _unready(a), 2.0, "/readyz 503 after SIGTERM")
        assert body["draining"] is True
        await until(lambda: _state_is(env, "node-a", "draining"), HEARTBEAT_EVERY, "listed as draining")
        # The call goes on: the shopper still hears the operator, and nothing ended it.
        await shopper.hears_audio()
        await shopper.nothing("call.ended", within=1.0)
        assert a.process is not None and a.process.returncode is None
        late = await sockets.shopper("visitor-0002")
        await late.send({"type": "call.offer", "sdp": await late.offer(), "context": {"page": SHOP}})
        assert (await late.receive("error"))["code"] == "all_busy"
        await shopper.send({"type": "call.hangup"})
        ended = await shopper.receive("call.ended")
        assert ended["reason"] == "completed"
        assert await a.exited(within=30) == 0
    assert _call_row(env, call_id) == ("ended", "completed")


async def test_sigterm_on_a_node_with_nothing_in_progress_exits_without_being_killed(
    env: dict[str, str], cluster: tuple[SiteKey, AsyncExitStack]
) -> None:
    # The heartbeat the drain sends the moment it starts was still waiting on Redis when the node
    # closed its registry: the cancel was lost (Python 3.11's wait_for) and the node never exited.
    a = await started(env, cluster, "node-a")
    a.signal(signal.SIGTERM)
    assert await a.exited(within=10) == 0


def _call_row(env: dict[str, str], call_id: str) -> tuple[str, str | None]:
    import sqlite3

    with sqlite3.connect(Path(env["CALLSERVER_VAR_DIR"]) / "callserver.db") as db:
        row = db.execute("SELECT state, end_reason FROM calls WHERE id = ?", (call_id,)).fetchone()
    return row[0], row[1]


async def test_a_node_reconnects_and_registers_again_after_redis_restarts(
    env: dict[str, str], cluster: tuple[SiteKey, AsyncExitStack], redis: RedisServer
) -> None:
    a = await started(env, cluster, "node-a")
    assert (await nodes(env))["node-a"]["state"] == "serving"
    await asyncio.to_thread(redis.stop)
    _, body = await until(lambda: _unready(a), 10, "/readyz 503 without Redis")
    assert body["checks"]["redis"] is False and body["checks"]["database"] is True
    await asyncio.to_thread(redis.start)  # the same port, empty: nothing was saved
    await until(lambda: _ready(a), 10, "/readyz 200 once Redis is back")
    entry = await until(lambda: _listed(env, "node-a"), 4 * HEARTBEAT_EVERY, "node-a registered again")
    assert entry["state"] == "serving"
    assert a.process is not None and a.process.returncode is None  # no restart


async def _ready(node: Node) -> bool:
    return (await node.ready())[0] == 200


async def _listed(env: dict[str, str], name: str) -> dict[str, Any] | None:
    return (await nodes(env)).get(name)
