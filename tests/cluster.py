"""Two `callserver serve` nodes on loopback sharing a throwaway PostgreSQL and Redis (tests/servers.py).

`cluster` (a fixture) gives a test the two running nodes, `a` and `b`, one site they both serve and the
shared database; `cluster_sockets` opens tests/sockets.py peers on each node and closes them before the
nodes stop. A test file binds them with `cluster = clusters.cluster` (after `from tests import cluster
as clusters`; a plain import would be redefined by the tests' arguments); `running_cluster(folder, ...)`
gives other origins or settings. Everything started here is stopped at
teardown, even when an assertion fails.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from callserver import accounts, sites
from callserver.store.database import Database
from callserver.store.models import Call
from tests.servers import RedisServer, postgres, redis_server
from tests.signing_in import PASSWORD
from tests.sockets import Sockets
from tests.stack import free_port

__all__ = [
    "SHOP",
    "Cluster",
    "Node",
    "add_operator",
    "call_record",
    "cluster",
    "cluster_sockets",
    "ended_call",
    "operators_online",
    "running_cluster",
]

SHOP = "http://shop.cluster.test"
"""The site's origin: only the widget's `Origin` header carries it (no page is served there)."""


@dataclass
class Node:
    """One `callserver serve` process; `url`, `shop_url` and `site` make it a tests.sockets.Server."""

    name: str
    url: str
    site: sites.NewSite
    process: subprocess.Popen[bytes]
    log: Path
    shop_url: str = SHOP

    def kill(self) -> None:
        """SIGKILL: the node dies without draining (its heartbeats stop)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def tail(self) -> str:
        """The end of the node's log, for assertion messages."""
        return _tail(self.log)


@dataclass
class Cluster:
    database: Database
    site: sites.NewSite
    a: Node
    b: Node
    database_url: str = ""
    redis_url: str = ""
    nodes: list[Node] = field(default_factory=list)
    redis: RedisServer | None = None  # to stop and start it under the running nodes


def start_node(name: str, folder: Path, env: Mapping[str, str]) -> tuple[subprocess.Popen[bytes], str, Path]:
    """Start `callserver serve` as node `name` (its own port and var dir under `folder`); not yet ready."""
    port = free_port()
    log = folder / f"{name}.log"
    node_env = {
        **os.environ,
        **env,
        "CALLSERVER_NODE_NAME": name,
        "CALLSERVER_PORT": str(port),
        "CALLSERVER_VAR_DIR": str(folder / name),
        "CALLSERVER_MEDIA_WORKERS": env.get("CALLSERVER_MEDIA_WORKERS", "0"),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "callserver", "serve"], env=node_env, stdout=out, stderr=subprocess.STDOUT
        )
    return process, f"http://127.0.0.1:{port}", log


def _tail(log: Path) -> str:
    return log.read_text()[-3000:]


async def node_ready(url: str, process: subprocess.Popen[bytes], log: Path, within: float = 60) -> None:
    """Wait until the node's `/readyz` answers 200 (fails with its log if it exits or never does)."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while True:
            assert process.poll() is None, f"the node exited: {await asyncio.to_thread(_tail, log)}"
            assert time.monotonic() < deadline, (
                f"the node did not start: {await asyncio.to_thread(_tail, log)}"
            )
            try:
                async with session.get(f"{url}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)


def _stop(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    # SIGTERM drains (test_cluster_nodes covers that); a test's teardown gives the nodes a few
    # seconds together, then SIGKILL (their media workers exit when their stdin closes).
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + 5
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@asynccontextmanager
async def running_cluster(
    folder: Path, origins: Sequence[str] = (SHOP,), env: Mapping[str, str] | None = None
) -> AsyncIterator[Cluster]:
    """PostgreSQL, Redis and nodes A and B (started together), one site allowing `origins`.

    `env` adds settings (CALLSERVER_*) to both nodes. Nodes are stopped (SIGTERM, then SIGKILL after
    5 s), then the servers, on every path.
    """
    with postgres() as database_url, redis_server() as redis:
        node_env = {"CALLSERVER_DATABASE_URL": database_url, "CALLSERVER_REDIS_URL": redis.url, **(env or {})}
        processes: list[subprocess.Popen[bytes]] = []
        database = Database(database_url)
        try:
            # Both at once, as an install starts its nodes: one migrates the new database, the other
            # waits for it (Database.upgrade holds an advisory lock) and finds nothing left to do.
            started = [start_node(name, folder, node_env) for name in ("node-a", "node-b")]
            processes.extend(process for process, _, _ in started)
            await asyncio.gather(*(node_ready(url, process, log) for process, url, log in started))
            async with database.session() as session:
                site = await sites.create_site(session, "Cluster shop", list(origins))
            a, b = (
                Node(n, url, site, p, log, shop_url=origins[0])
                for n, (p, url, log) in zip(("a", "b"), started, strict=True)
            )
            yield Cluster(database, site, a, b, database_url, redis.url, [a, b], redis)
        finally:
            await asyncio.to_thread(_stop, processes)
            await database.close()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """Nodes A and B on one PostgreSQL and one Redis, serving the site of origin `SHOP`."""
    async with running_cluster(tmp_path) as running:
        yield running


@pytest.fixture
async def cluster_sockets(cluster: Cluster) -> AsyncIterator[tuple[Sockets, Sockets]]:
    """Shoppers' and operators' sockets on A and on B, closed before the nodes stop."""
    async with AsyncExitStack() as opened:
        on_a = await opened.enter_async_context(Sockets(cluster.a))
        on_b = await opened.enter_async_context(Sockets(cluster.b))
        yield on_a, on_b


async def add_operator(cluster: Cluster, email: str) -> accounts.Account:
    """An operator account (password tests.signing_in.PASSWORD, named after the address's local part)."""
    async with cluster.database.session() as session:
        return await accounts.create_user(session, email, PASSWORD, "operator", name=email.split("@")[0])


async def operators_online(node: Node, want: int, within: float = 10) -> int:
    """The count the widget's config on `node` gives, once it is `want` (or the last one seen)."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while True:
            url = f"{node.url}/widget/config?site={node.site.key}"
            async with session.get(url, headers={"Origin": node.shop_url}) as response:
                assert response.status == 200, await response.text()
                seen = int((await response.json())["operators_online"])
            if seen == want or time.monotonic() > deadline:
                return seen
            await asyncio.sleep(0.1)


async def call_record(cluster: Cluster, call_id: str) -> Call:
    """The call's row in the shared database."""
    async with cluster.database.session() as session:
        call = await session.get(Call, call_id)
        assert call is not None
        return call


async def ended_call(cluster: Cluster, call_id: str, within: float = 10) -> Call:
    """The call's row once it has ended (a page may show the end before the node wrote it)."""
    deadline = time.monotonic() + within
    while (call := await call_record(cluster, call_id)).state != "ended":
        assert time.monotonic() < deadline, f"call {call_id} is still {call.state}"
        await asyncio.sleep(0.1)
    return call
