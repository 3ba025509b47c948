"""Media renegotiation: a side whose network changed re-offers on a new peer connection (`call.reoffer`);
the server replaces that leg while the other one keeps playing, and the other browser's stream goes on
(sequence numbers and timestamps never jump back).

Python peers with real aiortc peer connections, through the forwarding engine in the server's process,
in media workers, and through the transcoding engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiortc.rtp import RtpPacket
from sqlalchemy import select

from callserver.store.models import CallEvent
from tests.sockets import Socket, Softphone, Widget
from tests.stack import Stack, running_stack, settings_for
from tests.test_media_forwarding import Listener


@pytest.fixture(params=["forwarding", "workers", "transcoding"])
async def engine_stack(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    options: dict[str, Any] = {
        "forwarding": {},
        "workers": {"media_workers": 2},
        "transcoding": {"media_engine": "transcoding"},
    }[request.param]
    async with running_stack(settings_for(tmp_path, ring_timeout=30, **options)) as running:
        yield running


class SeenPackets:
    """The RTP headers a peer receives on its current peer connection, as they arrive."""

    def __init__(self, peer: Socket) -> None:
        self.packets: list[tuple[float, int, int, int]] = []  # (arrival, ssrc, sequence, timestamp)
        self._swap = 0
        receiver = peer.pc.getReceivers()[0]
        handle = receiver._handle_rtp_packet

        async def seen(packet: RtpPacket, arrival_time_ms: int) -> None:
            now = asyncio.get_running_loop().time()
            self.packets.append((now, packet.ssrc, packet.sequence_number, packet.timestamp))
            await handle(packet, arrival_time_ms)

        receiver._handle_rtp_packet = seen  # type: ignore[method-assign]

    def check_one_stream_going_forward(self) -> None:
        """One SSRC; each packet's sequence number and timestamp ahead of the one before (mod 2^16, 2^32)."""
        assert len({ssrc for _, ssrc, _, _ in self.packets}) == 1
        for (_, _, seq0, ts0), (_, _, seq1, ts1) in zip(self.packets, self.packets[1:], strict=False):
            assert 0 < (seq1 - seq0) & 0xFFFF < 0x8000, (seq0, seq1)
            assert 0 <= (ts1 - ts0) & 0xFFFFFFFF < 0x80000000, (ts0, ts1)

    def swapping(self) -> None:
        """The other side's leg is about to be replaced: what comes from now on is "after the swap"."""
        self._swap = len(self.packets)

    def clock_drift(self) -> float:
        """Seconds the stream's timestamps (48 kHz) moved ahead of the wall clock across the swap
        (negative: behind it).

        Each packet's arrival minus its timestamp is the path's delay plus a constant; the least of it
        before and after the swap is what the path takes when nothing waits. A process of this test that
        is late to read a packet (two shared cores, other tests running) only makes one packet's delay
        longer, so it does not count, as comparing the first packet with the last would.
        """
        t0, ts0 = self.packets[0][0], self.packets[0][3]

        def least_delay(packets: list[tuple[float, int, int, int]]) -> float:
            return min((t - t0) - ((ts - ts0) & 0xFFFFFFFF) / 48_000 for t, _, _, ts in packets)

        before, after = self.packets[: self._swap], self.packets[self._swap :]
        assert before and after, (len(before), len(after))
        return least_delay(before) - least_delay(after)


async def bridged(stack: Stack) -> tuple[Widget, Softphone, str]:
    operator = await stack.sockets.operator("olga@shop.example", "Olga", online=True)
    shopper = await stack.sockets.shopper("visitor-reoffer-1")
    call_id = await shopper.call(hz=440)
    await operator.receive("call.incoming")
    await operator.answer(call_id, hz=1000)
    await shopper.receive("call.connected")
    return shopper, operator, call_id


async def reoffer(peer: Socket, call_id: str, hz: float) -> Listener:
    """A new peer connection sending `hz`, offered for the call; returns what it hears."""
    sdp = await peer.offer(hz)  # closes the old peer connection, as a browser that lost its network
    listener = Listener(peer)
    await peer.send({"type": "call.reoffer", "call_id": call_id, "sdp": sdp})
    reanswer = await peer.receive("call.reanswer")
    assert reanswer["call_id"] == call_id
    await peer.apply_answer(reanswer["sdp"])
    return listener


async def events_of(stack: Stack, call_id: str) -> list[tuple[str, dict[str, Any]]]:
    async with stack.database.session() as db:
        rows = await db.scalars(select(CallEvent).where(CallEvent.call_id == call_id).order_by(CallEvent.id))
        return [(e.name, dict(e.detail or {})) for e in rows]


async def test_the_shopper_reoffers_and_both_hear_each_other_again(engine_stack: Stack) -> None:
    stack = engine_stack
    operator = await stack.sockets.operator("olga@shop.example", "Olga", online=True)
    shopper = await stack.sockets.shopper("visitor-reoffer-1")
    heard_by_operator = Listener(operator)
    call_id = await shopper.call(hz=440)
    await operator.receive("call.incoming")
    await operator.answer(call_id, hz=1000)
    operators_leg = operator.pc
    seen = SeenPackets(operator)
    await asyncio.sleep(1.5)
    await heard_by_operator.hears(440)

    # The shopper's network changes: a new peer connection (with another tone, to tell them apart).
    seen.swapping()
    heard_by_shopper = await reoffer(shopper, call_id, hz=880)
    assert (await operator.receive("call.reconnecting"))["side"] == "shopper"
    assert (await operator.receive("call.reconnected"))["side"] == "shopper"
    await asyncio.sleep(2.0)
    await heard_by_operator.hears(880)
    await heard_by_shopper.hears(1000)

    # The operator's leg was not touched, and what it received is one stream going forward.
    assert operator.pc is operators_leg and operators_leg.connectionState == "connected"
    seen.check_one_stream_going_forward()
    # Across the swap the timestamps went on with the wall clock (48 kHz): no jump either way.
    assert abs(seen.clock_drift()) < 0.25, seen.clock_drift()

    await operator.send({"type": "call.hangup", "call_id": call_id})
    assert (await shopper.receive("call.ended"))["reason"] == "completed"
    heard_by_operator.stop()
    heard_by_shopper.stop()
    record = await stack.ended_call(call_id)
    assert record.end_reason == "completed"
    assert record.quality["shopper"]["reconnects"] == 1
    names = [name for name, _ in await events_of(stack, call_id)]
    assert names.count("call.reconnecting") == names.count("call.reconnected") == 1
    assert dict(await events_of(stack, call_id))["call.reconnecting"]["side"] == "shopper"


async def test_the_operator_reoffers_while_the_shopper_keeps_talking(stack: Stack) -> None:
    shopper, operator, call_id = await bridged(stack)
    seen = SeenPackets(shopper)
    await asyncio.sleep(1.0)
    heard_by_operator = await reoffer(operator, call_id, hz=1200)
    assert (await shopper.receive("call.reconnecting"))["side"] == "operator"
    assert (await shopper.receive("call.reconnected"))["side"] == "operator"
    await asyncio.sleep(2.0)
    await heard_by_operator.hears(440)
    seen.check_one_stream_going_forward()
    packets_after = [p for p in seen.packets if p[0] > seen.packets[-1][0] - 1.0]
    assert len(packets_after) > 30  # the shopper hears the operator's new leg
    # The new softphone leg is the call's: hold and hang-up work on it.
    await operator.send({"type": "call.hold", "call_id": call_id, "on": True})
    await operator.send({"type": "call.hangup", "call_id": call_id})
    assert (await shopper.receive("call.ended"))["reason"] == "completed"
    heard_by_operator.stop()
    assert (await stack.ended_call(call_id)).quality["operator"]["reconnects"] == 1


async def test_bad_reoffers_get_coded_errors_and_the_call_goes_on(stack: Stack) -> None:
    shopper, operator, call_id = await bridged(stack)
    seen = SeenPackets(operator)
    stranger = await stack.sockets.shopper("visitor-stranger-2")
    colleague = await stack.sockets.operator("ivan@shop.example", online=True)
    valid = await stranger.offer(440)

    async def refused(socket: Socket, frame: dict[str, Any]) -> str:
        await socket.send(frame)
        return str((await socket.receive("error"))["code"])

    reoffer_frame = {"type": "call.reoffer", "call_id": call_id}
    assert await refused(stranger, {**reoffer_frame, "sdp": valid}) == "no_call"
    assert await refused(colleague, {**reoffer_frame, "sdp": valid}) == "not_your_call"
    assert await refused(operator, {**reoffer_frame, "call_id": "0" * 32, "sdp": valid}) == "unknown_call"
    assert await refused(shopper, {**reoffer_frame, "call_id": "0" * 32, "sdp": valid}) == "no_call"
    assert await refused(shopper, {**reoffer_frame, "sdp": "v=0\r\nnot an offer"}) == "bad_offer"
    without_opus = valid.replace("opus", "speex")
    assert await refused(operator, {**reoffer_frame, "sdp": without_opus}) == "bad_offer"
    assert await refused(operator, {"type": "call.reoffer", "call_id": call_id}) == "bad_message"
    # The call was not touched: nobody was told of a reconnection, and the operator still hears.
    await asyncio.sleep(1.0)
    for socket in (shopper, operator):
        assert not socket.frames_of("call.reconnecting") + socket.frames_of("call.ended")
    recent = [p for p in seen.packets if p[0] > seen.packets[-1][0] - 0.5]
    assert len(recent) > 15
    seen.check_one_stream_going_forward()
    await shopper.send({"type": "call.hangup"})
    assert (await operator.receive("call.ended"))["reason"] == "completed"
    assert "call.reconnecting" not in [name for name, _ in await events_of(stack, call_id)]
