"""Calls across two nodes: two `callserver serve` processes on loopback sharing PostgreSQL and Redis.

The operator's softphone is on one node, the shopper's widget on the other; presence, ringing, the
answer and the end of a dead node's calls travel through Redis (DESIGN, Scale).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select, update

from callserver.store.models import Call, Site
from tests import cluster as clusters
from tests.cluster import Cluster, add_operator, call_record, ended_call, operators_online
from tests.sockets import Socket, Sockets, Softphone
from tests.test_cluster_visitors import beacon, event_stream, next_event, row_of, view

# The fixtures (tests/cluster.py), bound here so pytest finds them.
cluster = clusters.cluster
cluster_sockets = clusters.cluster_sockets

WINDOW = 8  # seconds: the resume window of `short_window`


@pytest.fixture
async def short_window(tmp_path: Path) -> AsyncIterator[Cluster]:
    """Nodes A and B whose calls wait WINDOW seconds for a side that went away."""
    async with clusters.running_cluster(tmp_path, env={"CALLSERVER_RESUME_WINDOW": str(WINDOW)}) as running:
        yield running


async def refused(socket: Socket, frame: dict[str, Any]) -> str:
    await socket.send(frame)
    return str((await socket.receive("error"))["code"])


async def reoffered(socket: Socket, call_id: str, hz: float, before: Socket) -> None:
    """The new socket's peer connection offered for the call (`call.reoffer`), answered, and heard;
    then the one `before` had goes, as the browser drops the old one."""
    await socket.send({"type": "call.reoffer", "call_id": call_id, "sdp": await socket.offer(hz)})
    reanswer = await socket.receive("call.reanswer", lambda f: f["call_id"] == call_id)
    await socket.apply_answer(reanswer["sdp"])
    await before.pc.close()
    await socket.hears_audio()


async def test_a_shopper_and_an_operator_whose_sockets_come_back_through_the_other_node_resume_the_call(
    short_window: Cluster,
) -> None:
    cluster = short_window
    await add_operator(cluster, "anna@cluster.test")
    await add_operator(cluster, "ben@cluster.test")
    async with Sockets(cluster.a) as on_a, Sockets(cluster.b) as on_b:
        anna = await on_a.softphone("anna@cluster.test", online=True)
        assert await operators_online(cluster.b, 1) == 1
        shopper = await on_b.shopper("visitor-moves-1")  # the call's media lives on B
        await shopper.send({"type": "call.offer", "sdp": await shopper.offer(440), "context": {}})
        answer = await shopper.receive("call.answer")
        await shopper.apply_answer(answer["sdp"])
        call_id, shopper_token = answer["call_id"], answer["resume_token"]
        await anna.receive("call.incoming", lambda f: f["call"]["id"] == call_id)
        await anna.send({"type": "call.accept", "call_id": call_id, "sdp": await anna.offer(1000)})
        accepted = await anna.receive("call.answer", lambda f: f["call_id"] == call_id)
        operator_token = accepted["resume_token"]  # handed out by B, sent by A
        assert len(operator_token) >= 24
        await anna.apply_answer(accepted["sdp"])
        await anna.receive("call.connected")
        await shopper.receive("call.connected")

        # The page's socket drops; the balancer sends the new one to A.
        await shopper.ws.close()
        assert (await anna.receive("call.reconnecting"))["side"] == "shopper"
        page = await on_a.shopper("visitor-moves-1")
        resume = {"type": "call.resume", "call_id": call_id, "resume_token": shopper_token}
        assert await refused(page, {**resume, "resume_token": operator_token}) == "bad_resume_token"
        assert await refused(page, {**resume, "call_id": "0" * 32}) == "no_call"
        await page.send(resume)
        resumed = await page.receive("call.resumed")
        assert resumed == {
            "type": "call.resumed",
            "call_id": call_id,
            "state": "answered",
            "operator": {"name": "anna"},
            "held": False,
        }
        assert (await anna.receive("call.reconnected"))["side"] == "shopper"
        await reoffered(page, call_id, 880, shopper)  # offered through A, answered by B

        # Anna's softphone drops too, and comes back on A with a new socket; Ben may not take her call.
        await anna.ws.close()
        assert (await page.receive("call.reconnecting"))["side"] == "operator"  # from B, through A
        phone = await on_a.softphone("anna@cluster.test")
        assert phone.hello["active_call"] == call_id
        ben = await on_a.softphone("ben@cluster.test")
        taking = {"type": "call.resume", "call_id": call_id, "resume_token": operator_token}
        assert await refused(ben, taking) == "not_your_call"
        await phone.send(taking)
        resumed = await phone.receive("call.resumed")
        assert (resumed["state"], resumed["call"]["id"]) == ("answered", call_id)
        assert (await page.receive("call.reconnected"))["side"] == "operator"
        await reoffered(phone, call_id, 1200, anna)
        await page.hears_audio()

        # The page's socket on A drops and does not come back: B ends the call `lost` after the window.
        await page.ws.close()
        assert (await phone.receive("call.reconnecting"))["side"] == "shopper"
        ended = await phone.receive("call.ended", within=WINDOW + 10)
        assert ended["reason"] == "lost"
        record = await ended_call(cluster, call_id)
        assert (record.end_reason, record.operator_id) == ("lost", phone.account_id)
        assert record.quality is not None
        # Each side: its socket came back once, its media once (a re-offer counts as a return).
        assert (record.quality["shopper"]["reconnects"], record.quality["operator"]["reconnects"]) == (2, 2)
        async with cluster.database.session() as session:
            assert await session.scalar(select(func.count()).select_from(Call)) == 1  # one call, one record


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
    await shopper.send({"type": "call.offer", "sdp": await shopper.offer(440), "context": {}})
    answer = await shopper.receive("call.answer")
    await shopper.apply_answer(answer["sdp"])
    call_id = answer["call_id"]
    await anna.receive("call.incoming", lambda f: f["call"]["id"] == call_id)
    await anna.answer(call_id)
    await anna.hears_audio()
    # The page's socket has come back through A: the call's media is still on B.
    await shopper.ws.close()
    page = await on_a.shopper("visitor-cluster-3")
    await page.send({"type": "call.resume", "call_id": call_id, "resume_token": answer["resume_token"]})
    await page.receive("call.resumed")

    killed_at = time.monotonic()
    cluster.b.kill()
    ended = await anna.receive("call.ended", lambda f: f["call_id"] == call_id, within=20)
    told_after = time.monotonic() - killed_at
    assert ended["reason"] == "dropped"
    assert (await page.receive("call.ended", within=10))["reason"] == "dropped"  # A tells the page
    record = await call_record(cluster, call_id)
    assert (record.state, record.end_reason) == ("ended", "dropped")
    assert told_after < 10, f"the softphone heard of the dropped call {told_after:.1f}s after the kill"
    print(f"node killed → record dropped and softphone told: {told_after:.1f} s")
    # Anna is free again: a call placed through A now rings her.
    shopper_a = await on_a.shopper("visitor-cluster-4")
    second = await shopper_a.call()
    await anna.receive("call.incoming", lambda f: f["call"]["id"] == second)


async def test_a_visitor_on_b_declines_then_answers_the_ring_of_an_operator_on_a(
    cluster: Cluster, cluster_sockets: tuple[Sockets, Sockets]
) -> None:
    on_a, on_b = cluster_sockets
    await add_operator(cluster, "anna@cluster.test")
    anna = await on_a.softphone("anna@cluster.test", online=True)
    assert await operators_online(cluster.b, 1) == 1
    token = "visitor-rung-1"
    async with aiohttp.ClientSession() as session:
        await beacon(session, cluster.b, view(token, "r1", "/products/rug"))
        async with event_stream(session, cluster.b, token) as stream:  # the page's stream and socket: B
            await anna.receive("visitors", row_of(token, {"reachable": True}))
            shopper = await on_b.shopper(token)
            ring = {"type": "visitor.call", "visitor_id": token, "site_id": cluster.site.id}
            await anna.send(ring)  # the ring lives on A
            ringing = await anna.receive("visitor_call.state")
            rung = await next_event(stream, "visitor_call.ring")
            assert (rung["id"], rung["operator"]) == (ringing["id"], {"name": "anna"})
            await shopper.send({"type": "visitor_call.decline", "id": rung["id"]})
            declined = await anna.receive("visitor_call.state", lambda f: f["state"] != "ringing")
            assert (declined["id"], declined["state"]) == (rung["id"], "declined")
            await shopper.send({"type": "visitor_call.decline", "id": rung["id"]})
            assert (await shopper.receive("error"))["code"] == "no_visitor_call"

            # Rung again, the visitor answers on B: the call lives on B and rings only Anna, on A.
            await anna.send(ring)
            second = await next_event(stream, "visitor_call.ring")
            offer = {"type": "call.offer", "sdp": await shopper.offer(440), "invitation": second["id"]}
            await shopper.send({**offer, "context": {"page": "/products/rug"}})
            answer = await shopper.receive("call.answer")
            await shopper.apply_answer(answer["sdp"])
            incoming = (await anna.receive("call.incoming"))["call"]
            assert (incoming["id"], incoming["invitation"]) == (answer["call_id"], second["id"])
            await anna.receive(
                "visitor_call.state", lambda f: (f["id"], f["state"]) == (second["id"], "answered")
            )
            await anna.answer(answer["call_id"])
            await shopper.receive("call.connected")
            await shopper.hears_audio()
            await anna.hears_audio()
            late = await on_a.shopper("visitor-rung-2")  # a ring that is over, named on the other node
            await late.send({**offer, "sdp": await late.offer()})
            assert (await late.receive("error"))["code"] == "no_visitor_call"
