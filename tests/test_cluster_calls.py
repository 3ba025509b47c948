"""Calls across two nodes: two `callserver serve` processes on loopback sharing PostgreSQL and Redis.

The operator's softphone is on one node, the shopper's widget on the other; presence, ringing, the
answer and the end of a dead node's calls travel through Redis (DESIGN, Scale).
"""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import update

from callserver.store.models import Site
from tests import cluster as clusters
from tests.cluster import Cluster, add_operator, call_record, operators_online
from tests.sockets import Sockets, Softphone

# The fixtures (tests/cluster.py), bound here so pytest finds them.
cluster = clusters.cluster
cluster_sockets = clusters.cluster_sockets


async def test_a_call_on_one_node_rings_answers_and_talks_with_an_operator_on_the_other(
    cluster: Cluster, cluster_sockets: tuple[Sockets, Sockets]
) -> None:
    on_a, on_b = cluster_sockets
    await add_operator(cluster, "anna@cluster.test")
    assert await operators_online(cluster.b, 0) == 0
    anna = await on_a.softphone("anna@cluster.test", online=True)
    assert await operators_online(cluster.b, 1) == 1  # signed in on A, seen by the widget on B

    shopper = await on_b.shopper("visitor-cluster-1")
    call_id = await shopper.call(hz=440)
    incoming = await anna.receive("call.incoming", lambda f: f["call"]["id"] == call_id)
    assert incoming["call"]["site"] == "Cluster shop"
    await anna.answer(call_id, hz=1000)  # call.accept on A, the answer SDP from B
    await shopper.receive("call.connected", lambda f: f["call_id"] == call_id)
    await shopper.hears_audio()
    await anna.hears_audio()
    assert (await call_record(cluster, call_id)).state == "answered"

    await anna.send({"type": "call.hangup", "call_id": call_id})
    await shopper.receive("call.ended", lambda f: f["call_id"] == call_id)
    await anna.receive("call.ended", lambda f: f["call_id"] == call_id)
    record = await call_record(cluster, call_id)
    assert (record.state, record.end_reason) == ("ended", "completed")
    assert await operators_online(cluster.b, 1) == 1  # free again, still online


async def test_two_operators_on_two_nodes_answer_at_once_and_exactly_one_wins(
    cluster: Cluster, cluster_sockets: tuple[Sockets, Sockets]
) -> None:
    on_a, on_b = cluster_sockets
    async with cluster.database.session() as session:
        await session.execute(update(Site).where(Site.id == cluster.site.id).values(ring_strategy="ring_all"))
    await add_operator(cluster, "anna@cluster.test")
    await add_operator(cluster, "ben@cluster.test")
    anna = await on_a.softphone("anna@cluster.test", online=True)
    ben = await on_b.softphone("ben@cluster.test", online=True)
    assert await operators_online(cluster.b, 2) == 2
    assert await operators_online(cluster.a, 2) == 2

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
    assert (await call_record(cluster, call_id)).operator_id == winner.account_id


async def test_the_node_holding_a_call_is_killed_and_the_call_ends_dropped(
    cluster: Cluster, cluster_sockets: tuple[Sockets, Sockets]
) -> None:
    on_a, on_b = cluster_sockets
    await add_operator(cluster, "anna@cluster.test")
    anna = await on_a.softphone("anna@cluster.test", online=True)
    assert await operators_online(cluster.b, 1) == 1
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
    record = await call_record(cluster, call_id)
    assert (record.state, record.end_reason) == ("ended", "dropped")
    assert told_after < 10, f"the softphone heard of the dropped call {told_after:.1f}s after the kill"
    print(f"node killed → record dropped and softphone told: {told_after:.1f} s")
    # Anna is free again: a call placed through A now rings her.
    shopper_a = await on_a.shopper("visitor-cluster-4")
    second = await shopper_a.call()
    await anna.receive("call.incoming", lambda f: f["call"]["id"] == second)
