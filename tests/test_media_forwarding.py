"""The forwarding engine with Python peers: two-way audio, loss on one leg, recordings (no browser)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from sqlalchemy import update

from callserver.media.forwarding_bridge import ForwardingEngine
from callserver.media.recording import decode_mono
from callserver.media.worker_pool import WorkerPoolEngine
from callserver.store.models import Site
from callserver.web.keys import MEDIA
from tests.sockets import Socket, Softphone, Widget
from tests.stack import Stack, running_stack, settings_for


def dominant_hz(samples: np.ndarray[Any, Any], rate: int = 48_000) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum[1:]) + 1) * rate / len(samples)


def peaks(samples: np.ndarray[Any, Any], rate: int = 48_000) -> dict[int, float]:
    """Spectrum energy around a few frequencies of interest, relative to the strongest bin."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    top = spectrum.max()
    per_hz = len(samples) / rate
    return {
        hz: float(spectrum[int((hz - 20) * per_hz) : int((hz + 20) * per_hz)].max() / top)
        for hz in (440, 1000)
    }


class Listener:
    """Keeps the audio a Python peer receives (decoded by its own aiortc receiver)."""

    def __init__(self, peer: Socket) -> None:
        self.frames: list[np.ndarray[Any, Any]] = []
        self._task: asyncio.Task[None] | None = None

        @peer.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._task = asyncio.ensure_future(self._drain(track))

    async def _drain(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
                self.frames.append(pcm.astype(np.float32))
        except MediaStreamError:
            return

    def last(self, seconds: float = 0.5) -> np.ndarray[Any, Any]:
        needed = int(seconds * 50)
        assert len(self.frames) >= needed, f"only {len(self.frames)} frames received"
        return np.concatenate(self.frames[-needed:])

    async def hears(self, hz: float, within: float = 15.0, seconds: float = 0.5) -> None:
        """Waits until the last `seconds` of audio are dominated by `hz`: a leg still setting up (its
        ICE and DTLS take seconds on a loaded machine) is waited for, a wrong tone fails."""
        loop = asyncio.get_running_loop()
        deadline, heard = loop.time() + within, "nothing"
        while loop.time() < deadline:
            if len(self.frames) >= int(seconds * 50):
                found = dominant_hz(self.last(seconds))
                if abs(found - hz) < 15:
                    return
                heard = f"{found:.0f} Hz"
            await asyncio.sleep(0.1)
        raise AssertionError(f"expected {hz} Hz within {within} s, heard {heard} ({len(self.frames)} frames)")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


async def inbound_packets(peer: Socket) -> int:
    """Packets this peer received, counted as they arrive (before any jitter buffer)."""
    for stats in (await peer.pc.getStats()).values():
        if stats.type == "inbound-rtp":
            return int(stats.packetsReceived)
    return 0


@pytest.fixture(params=[0, 2], ids=["in-process", "two-workers"])
async def recording_stack(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    """The forwarding engine (in the main process, or in media workers: the default), with the test
    site recording calls and the leg files kept."""
    settings = settings_for(tmp_path, ring_timeout=30, keep_leg_recordings=True, media_workers=request.param)
    async with running_stack(settings) as running:
        async with running.database.session() as session:
            await session.execute(update(Site).where(Site.key == running.site.key).values(records_calls=True))
        yield running


async def bridged_call(stack: Stack) -> tuple[Widget, Softphone, str]:
    softphone = await stack.sockets.operator("anna@shop.example", online=True)
    shopper = await stack.sockets.shopper()
    call_id = await shopper.call(hz=440)
    await softphone.receive("call.incoming")
    await softphone.answer(call_id, hz=1000)
    return shopper, softphone, call_id


async def test_the_default_engine_forwards_and_records_both_voices(recording_stack: Stack) -> None:
    stack = recording_stack
    assert isinstance(stack.app[MEDIA], ForwardingEngine | WorkerPoolEngine)
    softphone = await stack.sockets.operator("anna@shop.example", online=True)
    shopper = await stack.sockets.shopper()
    heard_by_shopper, heard_by_operator = Listener(shopper), Listener(softphone)
    call_id = await shopper.call(hz=440)
    await softphone.receive("call.incoming")
    # While it rings, the shopper hears the 425 Hz ring-back from the forwarder.
    await heard_by_shopper.hears(425, seconds=0.4)
    await softphone.answer(call_id, hz=1000)
    await heard_by_operator.hears(440)
    await heard_by_shopper.hears(1000)
    await asyncio.sleep(2.0)  # two seconds of talk, for the recordings checked below

    await softphone.send({"type": "call.hangup", "call_id": call_id})
    assert (await shopper.receive("call.ended"))["reason"] == "completed"
    heard_by_shopper.stop()
    heard_by_operator.stop()
    await stack.app[MEDIA].recordings_done()  # type: ignore[attr-defined]

    record = await stack.call(call_id)
    quality = record.quality
    for leg in ("shopper", "operator"):
        assert quality[leg]["packets_received"] > 50
        assert quality[leg]["packets_sent"] > 50
        assert quality[leg]["relayed"] is False
    assert record.recording_path is not None
    playback = stack.settings.var_dir / record.recording_path
    folder = playback.parent
    for leg, hz in (("shopper", 440), ("operator", 1000)):
        voice = decode_mono(folder / f"{call_id}.{leg}.ogg")
        assert len(voice) > 48_000
        assert abs(dominant_hz(voice[-24_000:]) - hz) < 15
    mixed = decode_mono(playback)
    both = peaks(mixed[-48_000:])
    assert both[440] > 0.3 and both[1000] > 0.3, both


async def test_loss_on_the_shoppers_leg_does_not_stall_the_operators(stack: Stack) -> None:
    shopper, softphone, call_id = await bridged_call(stack)
    heard_by_shopper = Listener(shopper)
    # The shopper's uplink loses 30 % of its packets from now on (SRTP packets dropped on send).
    ice = shopper.pc.getTransceivers()[0].sender.transport.transport
    send = ice._send

    async def lossy(data: bytes) -> None:
        if 127 < data[0] < 192 and not 192 <= data[1] <= 208 and random.random() < 0.3:
            return
        await send(data)

    ice._send = lossy
    await asyncio.sleep(0.5)
    before_operator = await inbound_packets(softphone)
    before_shopper = await inbound_packets(shopper)
    await asyncio.sleep(3.0)
    # The operator still gets the 70 % that arrive, at once; the shopper's downlink is untouched.
    operator_got = (await inbound_packets(softphone)) - before_operator
    shopper_got = (await inbound_packets(shopper)) - before_shopper
    assert 0.5 * 150 < operator_got < 0.9 * 150, operator_got
    assert shopper_got > 0.9 * 150, shopper_got
    heard_by_shopper.stop()
    await softphone.send({"type": "call.hangup", "call_id": call_id})
    await shopper.receive("call.ended")
    quality = (await stack.call(call_id)).quality
    assert quality["shopper"]["packets_lost"] > 20
    assert quality["operator"]["packets_lost"] < 5
