"""A side that vanishes without closing anything (link down for good, a phone out of coverage) is
noticed by the no-media watchdog (callserver/media/media_watch.py) in seconds, not by ICE consent's
~30 s: the other side is told `call.reconnecting` at once and the call ends `lost` after
`resume_window`; packets flowing again on the same leg bring it back. Mute and hold never trigger it.

The shopper is a Python peer with a real aiortc peer connection whose SRTP, SRTCP and DTLS are cut
below it while its socket stays open and its ICE agent goes on answering the server's consent checks:
the server sees nothing but a leg that went quiet. Every engine: the forwarding one in the server's
process, in media workers, and the transcoding one.
"""

from __future__ import annotations

import asyncio
import fractions
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection
from av import AudioFrame

from callserver.media.media_watch import NO_MEDIA_AFTER
from tests.sockets import SAMPLES, Softphone, Widget
from tests.stack import Stack, running_stack, settings_for
from tests.test_call_reoffer import events_of
from tests.test_media_forwarding import Listener

# Waits for what the watchdog does: a few times its threshold, well short of ICE consent's ~30 s
# (RFC 7675), so that a watchdog that does nothing fails these tests rather than passing late.
NOTICED_WITHIN = 4 * NO_MEDIA_AFTER


@pytest.fixture(params=["forwarding", "workers", "transcoding"])
async def engine_stack(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    options: dict[str, Any] = {
        "forwarding": {},
        "workers": {"media_workers": 1},
        "transcoding": {"media_engine": "transcoding"},
    }[request.param]
    async with running_stack(settings_for(tmp_path, ring_timeout=30, **options)) as running:
        yield running


class Outage:
    """Cuts everything a Python peer's connection sends but ICE's own checks: no socket closes, the
    server's consent checks are still answered, the peer just goes quiet (as behind a dead link)."""

    def __init__(self, pc: RTCPeerConnection) -> None:
        self._connection = pc.getTransceivers()[0].sender.transport.transport._connection

    def begin(self) -> None:
        async def nothing(data: bytes, component: int) -> None:
            return None

        self._connection.sendto = nothing

    def end(self) -> None:
        del self._connection.sendto


class Muted(MediaStreamTrack):
    """A microphone muted as the widget and softphone mute (`track.enabled = false`): the browser
    goes on sending, silence (WebRTC 1.0, section 5.2)."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> AudioFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        else:
            self._pts += SAMPLES
            await asyncio.sleep(max(0.0, self._start + self._pts / 48_000 - loop.time()))
        frame = AudioFrame(format="s16", layout="mono", samples=SAMPLES)
        frame.planes[0].update(bytes(SAMPLES * 2))
        frame.pts, frame.sample_rate, frame.time_base = self._pts, 48_000, fractions.Fraction(1, 48_000)
        return frame


async def bridged(stack: Stack) -> tuple[Widget, Softphone, str, Listener]:
    """A call answered and heard both ways; returns what the operator hears too."""
    operator = await stack.sockets.operator("olga@shop.example", "Olga", online=True)
    shopper = await stack.sockets.shopper("visitor-gone-1")
    heard_by_operator = Listener(operator)
    call_id = await shopper.call(hz=440)
    await operator.receive("call.incoming")
    await operator.answer(call_id, hz=1000)
    await shopper.receive("call.connected")
    await asyncio.sleep(1.0)
    await heard_by_operator.hears(440)
    return shopper, operator, call_id, heard_by_operator


def shopper_side(frame: dict[str, Any]) -> bool:
    return frame.get("side") == "shopper"


async def test_a_shopper_gone_quiet_is_reported_reconnecting_then_the_call_ends_lost(
    engine_stack: Stack,
) -> None:
    stack = engine_stack
    stack.switchboard.resume_window = 2.0
    shopper, operator, call_id, _ = await bridged(stack)

    Outage(shopper.pc).begin()
    await operator.receive("call.reconnecting", shopper_side, within=NOTICED_WITHIN)
    # Nothing came back within the window: lost, told to both, though no socket ever closed.
    ended = await operator.receive("call.ended", lambda f: f["call_id"] == call_id, within=NOTICED_WITHIN)
    assert ended["reason"] == "lost"
    assert (await shopper.receive("call.ended"))["reason"] == "lost"
    record = await stack.ended_call(call_id)
    assert record.end_reason == "lost"
    events = await events_of(stack, call_id)
    reconnecting = dict(events)["call.reconnecting"]
    assert (reconnecting["side"], reconnecting["cause"]) == ("shopper", "media"), events
    assert "call.reconnected" not in [name for name, _ in events], events


async def test_a_shopper_whose_packets_flow_again_on_the_same_leg_is_back(engine_stack: Stack) -> None:
    stack = engine_stack
    shopper, operator, call_id, heard_by_operator = await bridged(stack)
    leg = shopper.pc

    outage = Outage(shopper.pc)
    outage.begin()
    await operator.receive("call.reconnecting", shopper_side, within=NOTICED_WITHIN)
    outage.end()  # consent never failed: the same leg carries on, no re-offer
    await operator.receive("call.reconnected", shopper_side, within=NOTICED_WITHIN)
    await asyncio.sleep(1.0)
    await heard_by_operator.hears(440)
    assert shopper.pc is leg and shopper.frames_of("call.ended") == []

    await operator.send({"type": "call.hangup", "call_id": call_id})
    record = await stack.ended_call(call_id)
    assert record.end_reason == "completed"
    assert record.quality["shopper"]["reconnects"] == 1
    assert record.quality["operator"]["reconnects"] == 0
    names = [name for name, _ in await events_of(stack, call_id)]
    assert names.count("call.reconnecting") == 1 and names.count("call.reconnected") == 1, names


async def test_mute_and_hold_are_not_a_side_gone(engine_stack: Stack) -> None:
    stack = engine_stack
    shopper, operator, call_id, _ = await bridged(stack)

    # Both mute and the operator holds, for longer than the watchdog's threshold, twice over.
    for peer in (shopper, operator):
        peer.pc.getSenders()[0].replaceTrack(Muted())
    await operator.send({"type": "call.hold", "call_id": call_id, "on": True})
    await asyncio.gather(
        operator.nothing("call.reconnecting", within=2 * NO_MEDIA_AFTER + 1),
        shopper.nothing("call.reconnecting", within=2 * NO_MEDIA_AFTER + 1),
    )
    await operator.send({"type": "call.hold", "call_id": call_id, "on": False})
    await operator.nothing("call.reconnecting", within=NO_MEDIA_AFTER / 2)

    # The watchdog was awake all along: the shopper going quiet now is noticed.
    Outage(shopper.pc).begin()
    await operator.receive("call.reconnecting", shopper_side, within=NOTICED_WITHIN)
    names = [name for name, _ in await events_of(stack, call_id)]
    assert names.count("call.reconnecting") == 1, names
