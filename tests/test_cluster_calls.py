"""Calls across two nodes: two `callserver serve` processes on loopback sharing PostgreSQL and Redis.

The operator's softphone is on one node, the shopper's widget on the other; presence, ringing, the
answer and the end of a dead node's calls travel through Redis (DESIGN, Scale).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import update

from callserver import accounts, sites
from callserver.store.database import Database
from callserver.store.models import Call, Site
from tests.servers import postgres, redis_server
from tests.signing_in import PASSWORD
from tests.sockets import Sockets, Softphone
from tests.stack import free_port

SHOP = "http://shop.cluster.test"


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
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


@dataclass
class Cluster:
    database: Database
    site: sites.NewSite
    a: Node
    b: Node


def _start_node(name: str, folder: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    log = folder / f"{name}.log"
    node_env = {
        **os.environ,
        **env,
        "CALLSERVER_NODE_NAME": name,
        "CALLSERVER_PORT": str(port),
        "CALLSERVER_VAR_DIR": str(folder / name),
        "CALLSERVER_MEDIA_WORKERS": "0",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "callserver", "serve"], env=node_env, stdout=out, stderr=subprocess.STDOUT
        )
    return process, f"http://127.0.0.1:{port}", log


def _tail(log: Path) -> str:
    return log.read_text()[-3000:]


async def _ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while True:
            assert process.poll() is None, f"the node exited: {_tail(log)}"
            assert time.monotonic() < deadline, f"the node did not start: {_tail(log)}"
            try:
                async with session.get(f"{url}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)


@contextmanager
def _servers() -> Iterator[tuple[str, str]]:
    with postgres() as database_url, redis_server() as redis:
        yield database_url, redis.url


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    with _servers() as (database_url, redis_url):
        env = {"CALLSERVER_DATABASE_URL": database_url, "CALLSERVER_REDIS_URL": redis_url}
        processes: list[subprocess.Popen[bytes]] = []
        database = Database(database_url)
        try:
            started = []
            for name in ("node-a", "node-b"):  # one after the other: both would migrate the schema at once
                process, url, log = _start_node(name, tmp_path, env)
                processes.append(process)
                await _ready(url, process, log)
                started.append((process, url, log))
            async with database.session() as session:
                site = await sites.create_site(session, "Cluster shop", [SHOP])
            a, b = (Node(n, url, site, p, log) for n, (p, url, log) in zip(("a", "b"), started, strict=True))
            yield Cluster(database, site, a, b)
        finally:
            for process in processes:
                if process.poll() is None:
                    process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            await database.close()


async def _add_operator(cluster: Cluster, email: str) -> None:
    async with cluster.database.session() as session:
        await accounts.create_user(session, email, PASSWORD, "operator", name=email.split("@")[0])


async def _operators_online(node: Node, want: int, within: float = 10) -> int:
    """The count the widget's config on `node` gives, once it is `want` (or the last one seen)."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while True:
            url = f"{node.url}/widget/config?site={node.site.key}"
            async with session.get(url, headers={"Origin": SHOP}) as response:
                assert response.status == 200, await response.text()
                seen = int((await response.json())["operators_online"])
            if seen == want or time.monotonic() > deadline:
                return seen
            await asyncio.sleep(0.1)


async def _record(cluster: Cluster, call_id: str) -> Call:
    async with cluster.database.session() as session:
        call = await session.get(Call, call_id)
        assert call is not None
        return call


@pytest.fixture
async def sockets(cluster: Cluster) -> AsyncIterator[tuple[Sockets, Sockets]]:
    async with AsyncExitStack() as opened:
        on_a = await opened.enter_async_context(Sockets(cluster.a))
        on_b = await opened.enter_async_context(Sockets(cluster.b))
        yield on_a, on_b


async def test_a_call_on_one_node_rings_answers_and_talks_with_an_operator_on_the_other(
    cluster: Cluster, sockets: tuple[Sockets, Sockets]
) -> None:
    on_a, on_b = sockets
    await _add_operator(cluster, "anna@cluster.test")
    assert await _operators_online(cluster.b, 0) == 0
    anna = await on_a.softphone("anna@cluster.test", online=True)
    assert await _operators_online(cluster.b, 1) == 1  # signed in on A, seen by the widget on B

    shopper = await on_b.shopper("visitor-cluster-1")
    call_id = await shopper.call(hz=440)
    incoming = await anna.receive("call.incoming", lambda f: f["call"]["id"] == call_id)
    assert incoming["call"]["site"] == "Cluster shop"
    await anna.answer(call_id, hz=1000)  # call.accept on A, the answer SDP from B
    await shopper.receive("call.connected", lambda f: f["call_id"] == call_id)
    await shopper.hears_audio()
    await anna.hears_audio()
    assert (await _record(cluster, call_id)).state == "answered"

    await anna.send({"type": "call.hangup", "call_id": call_id})
    await shopper.receive("call.ended", lambda f: f["call_id"] == call_id)
    await anna.receive("call.ended", lambda f: f["call_id"] == call_id)
    record = await _record(cluster, call_id)
    assert (record.state, record.end_reason) == ("ended", "completed")
    assert await _operators_online(cluster.b, 1) == 1  # free again, still online


async def test_two_operators_on_two_nodes_answer_at_once_and_exactly_one_wins(
    cluster: Cluster, sockets: tuple[Sockets, Sockets]
) -> None:
    on_a, on_b = sockets
    async with cluster.database.session() as session:
        await session.execute(update(Site).where(Site.id == cluster.site.id).values(ring_strategy="ring_all"))
    await _add_operator(cluster, "anna@cluster.test")
    await _add_operator(cluster, "ben@cluster.test")
    anna = await on_a.softphone("anna@cluster.test", online=True)
    ben = await on_b.softphone("ben@cluster.test", online=True)
    assert await _operators_online(cluster.b, 2) == 2
    assert await _operators_online(cluster.a, 2) == 2

    shopper = await on_b.shopper("visitor-cluster-2")
    call_id = await shopper.call()
    for phone in (anna, ben):
        await phone.receive("call.incoming", lambda f: f["call"]["id"] == call_id)
    offers = await asyncio.gather(anna.offer(1000), ben.offer(880))
    await asyncio.gather(
        *(
            phone.send({"type": "call.accept", "call_id": call_id, "sdp": sdp})
            for phone, sdp in zip((anna, ben), offers, strict=True)
        )
    )

    async def outcome(phone: Softphone) -> str:
        for _ in range(150):
            if phone.frames_of("call.answer"):
                return "won"
            taken = [f for f in phone.frames_of("call.withdrawn") if f["reason"] == "answered_elsewhere"]
            refused = [f for f in phone.frames_of("error") if f["code"] == "call_not_ringing"]
            if taken or refused:
                return "taken"
            await asyncio.sleep(0.1)
        return "nothing"

    results = await asyncio.gather(outcome(anna), outcome(ben))
    assert sorted(results) == ["taken", "won"], results
    winner = (anna, ben)[results.index("won")]
    loser = (anna, ben)[results.index("taken")]
    await loser.receive("call.withdrawn", lambda f: f["reason"] == "answered_elsewhere")
    answer = await winner.receive("call.answer", lambda f: f["call_id"] == call_id)
    await winner.apply_answer(answer["sdp"])
    await winner.receive("call.connected", lambda f: f["call_id"] == call_id)
    await shopper.hears_audio()
    await winner.hears_audio()
    await loser.nothing("call.answer", within=0.5)
    assert (await _record(cluster, call_id)).operator_id == winner.account_id


async def test_the_node_holding_a_call_is_killed_and_the_call_ends_dropped(
    cluster: Cluster, sockets: tuple[Sockets, Sockets]
) -> None:
    on_a, on_b = sockets
    await _add_operator(cluster, "anna@cluster.test")
    anna = await on_a.softphone("anna@cluster.test", online=True)
    assert await _operators_online(cluster.b, 1) == 1
    shopper = await on_b.shopper("visitor-cluster-3")
    call_id = await shopper.call()
    await anna.receive("call.incoming", lambda f: f["call"]["id"] == call_id)
    await anna.answer(call_id)
    await anna.hears_audio()

    killed_at = time.monotonic()
    cluster.b.kill()
    ended = await anna.receive("call.ended", lambda f: f["call_id"] == call_id, within=20)
    told_after = time.monotonic() - killed_at
    assert ended["reason"] == "dropped"
    record = await _record(cluster, call_id)
    assert (record.state, record.end_reason) == ("ended", "dropped")
    assert told_after < 10, f"the softphone heard of the dropped call {told_after:.1f}s after the kill"
    print(f"node killed → record dropped and softphone told: {told_after:.1f} s")
    # Anna is free again: a call placed through A now rings her.
    shopper_a = await on_a.shopper("visitor-cluster-4")
    second = await shopper_a.call()
    await anna.receive("call.incoming", lambda f: f["call"]["id"] == second)
