"""Media workers: calls spread over worker processes; a worker that dies ends only its own calls."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callserver.media.worker_pool import WorkerPoolEngine
from callserver.web.keys import MEDIA
from tests.sockets import Socket, Softphone, Widget
from tests.stack import Stack, running_stack, settings_for
from tests.test_media_forwarding import inbound_packets


@pytest.fixture
async def two_workers(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(settings_for(tmp_path, media_workers=2)) as running:
        yield running


async def flowing(peer: Socket, seconds: float = 1.0) -> int:
    """Packets `peer` received in the next `seconds`."""
    before = await inbound_packets(peer)
    await asyncio.sleep(seconds)
    return (await inbound_packets(peer)) - before


async def media_flows(peer: Socket, within: float = 15.0) -> None:
    """Waits until `peer` receives a steady stream (30 of the 50 packets a second); a leg just answered
    is still setting up its ICE and DTLS, which takes seconds on a loaded machine."""
    loop = asyncio.get_running_loop()
    deadline, seen = loop.time() + within, 0
    while loop.time() < deadline:
        if (seen := await flowing(peer, 0.5)) > 15:
            return
    raise AssertionError(f"no steady stream within {within} s (last {seen} packets in 0.5 s)")


async def place_call(stack: Stack, softphone: Softphone, token: str) -> tuple[Widget, str]:
    shopper = await stack.sockets.shopper(token)
    call_id = await shopper.call(hz=440)
    await softphone.receive("call.incoming", lambda f: f["call"]["id"] == call_id)
    await softphone.answer(call_id, hz=1000)
    return shopper, call_id


async def two_calls(stack: Stack) -> tuple[Softphone, Softphone, tuple[Widget, str], tuple[Widget, str]]:
    """Anna and Bob online, each in a call with a shopper of their own."""
    anna = await stack.sockets.operator("anna@shop.example", online=True)
    bob = await stack.sockets.operator("bob@shop.example", online=True)
    first = await place_call(stack, anna, "visitor-first-01")
    second = await place_call(stack, bob, "visitor-second-02")
    return anna, bob, first, second


async def test_a_worker_that_dies_ends_only_its_own_call_and_is_replaced(two_workers: Stack) -> None:
    stack = two_workers
    pool = stack.app[MEDIA]
    assert isinstance(pool, WorkerPoolEngine)
    anna, bob, (first, first_id), (second, second_id) = await two_calls(stack)

    # Least loaded first: the two calls are on the two workers, both legs of each in one.
    first_worker, second_worker = pool.worker_of(first_id), pool.worker_of(second_id)
    assert first_worker is not None and second_worker is not None
    assert first_worker is not second_worker
    await asyncio.gather(*(media_flows(peer) for peer in (first, anna, second, bob)))

    assert first_worker.pid is not None
    os.kill(first_worker.pid, signal.SIGKILL)

    # The call on the dead worker ends as failed, and both its sides are told.
    record = await stack.ended_call(first_id)
    assert record.end_reason == "failed"
    assert (await first.receive("call.ended"))["reason"] == "failed"
    assert (await anna.receive("call.ended"))["call_id"] == first_id
    # The other call goes on, audio flowing both ways.
    assert (await stack.call(second_id)).state == "answered"
    assert await flowing(second) > 40
    assert await flowing(bob) > 40

    # A replacement worker takes the next call (it is the least loaded one).
    for _ in range(200):
        if all(w.alive and w.ready.done() for w in pool.workers):
            break
        await asyncio.sleep(0.1)
    replacement = pool.workers[first_worker.slot]
    assert replacement is not first_worker and replacement.alive
    third, third_id = await place_call(stack, anna, "visitor-third-03")
    assert pool.worker_of(third_id) is replacement
    await asyncio.gather(media_flows(third), media_flows(anna))

    for call_id, softphone in ((second_id, bob), (third_id, anna)):
        await softphone.send({"type": "call.hangup", "call_id": call_id})
        assert (await stack.ended_call(call_id)).end_reason == "completed"


async def test_a_hung_worker_is_killed_and_its_call_fails_while_the_other_goes_on(two_workers: Stack) -> None:
    stack = two_workers
    pool = stack.app[MEDIA]
    assert isinstance(pool, WorkerPoolEngine)
    _anna, bob, (first, first_id), (second, second_id) = await two_calls(stack)
    hung = pool.worker_of(first_id)
    assert hung is not None and hung.pid is not None and hung is not pool.worker_of(second_id)

    # A worker that neither works nor exits (stopped, or stuck in a loop) is found out by its pings.
    os.kill(hung.pid, signal.SIGSTOP)
    record = await stack.ended_call(first_id, within=20)
    assert record.end_reason == "failed"
    assert (await first.receive("call.ended"))["reason"] == "failed"
    assert hung.process is not None and hung.process.returncode == -signal.SIGKILL
    assert (await stack.call(second_id)).state == "answered"
    assert await flowing(second) > 40

    await bob.send({"type": "call.hangup", "call_id": second_id})
    assert (await stack.ended_call(second_id)).end_reason == "completed"
