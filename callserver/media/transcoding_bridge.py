"""The plain aiortc bridge: each leg is decoded to PCM and re-encoded for the other.

It is the simple and robust engine (and the benchmark's baseline). Each leg is one
RTCPeerConnection; a pump task reads what a leg receives and queues it for the other leg's
outgoing track, which is paced at 20 ms and fills gaps with the waiting tone, hold tone or silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiortc import MediaStreamTrack, RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import SessionDescription
from av import AudioFrame

from callserver.errors import BadOffer
from callserver.media.engine import LegBack, LegFailed
from callserver.media.media_watch import NO_MEDIA_AFTER, WATCH_EVERY, MediaWatch
from callserver.media.tones import FRAME_SAMPLES, HOLD, RINGBACK, SAMPLE_RATE, SILENCE, TonePattern
from callserver.settings import IceServer

log = logging.getLogger(__name__)
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)


class OutgoingAudio(MediaStreamTrack):
    """What one leg hears: the other leg's voice when bridged, otherwise a tone or silence."""

    kind = "audio"

    def __init__(self, idle: TonePattern | None) -> None:
        super().__init__()
        self.idle = idle  # played while nothing is bridged; None → silence
        self.bridged = False
        # Three frames (60 ms) at most: beyond that, old audio is dropped rather than delayed.
        self._queue: deque[AudioFrame] = deque(maxlen=3)
        self._start: float | None = None
        self._pts = 0
        self._tone_index = 0

    def push(self, frame: AudioFrame) -> None:
        if self.bridged:
            self._queue.append(frame)

    def play(self, idle: TonePattern | None, bridged: bool) -> None:
        self.idle, self.bridged = idle, bridged
        self._tone_index = 0
        self._queue.clear()

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += FRAME_SAMPLES
            delay = self._start + self._pts / SAMPLE_RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        if self.bridged and self._queue:
            frame = self._queue.popleft()
        else:
            frame = AudioFrame(format="s16", layout="stereo", samples=FRAME_SAMPLES)
            pcm = SILENCE
            if self.idle is not None and not self.bridged:
                pcm = self.idle.frame(self._tone_index)
                self._tone_index += 1
            frame.planes[0].update(pcm)
        frame.pts = self._pts
        frame.sample_rate = SAMPLE_RATE
        frame.time_base = TIME_BASE
        return frame


class Leg:
    """One browser's peer connection and the audio it sends."""

    def __init__(self, name: str, ice_servers: list[IceServer], idle: TonePattern | None) -> None:
        self.name = name
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[RTCIceServer(s.urls, s.username, s.credential) for s in ice_servers])
        )
        self.outgoing = OutgoingAudio(idle)
        self.pump: asyncio.Task[None] | None = None
        self.peer: Leg | None = None  # the leg that hears this one; replaced when a call is transferred
        self.watch = MediaWatch()  # polled with `packets_received()` (media_watch)

    async def answer(self, offer_sdp: str, other: Leg) -> str:
        self.peer = other

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio" and self.pump is None:
                self.pump = asyncio.ensure_future(self._forward(track))

        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        self.pc.addTrack(self.outgoing)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return str(self.pc.localDescription.sdp)

    async def _forward(self, track: MediaStreamTrack) -> None:
        # Always drain the received track, bridged or not: aiortc queues every decoded frame.
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                assert isinstance(frame, AudioFrame)
                if self.peer is not None:
                    self.peer.outgoing.push(frame)

    async def packets_received(self) -> int:
        """Datagrams that reached this leg's DTLS transport so far: SRTP, SRTCP (and DTLS at first)."""
        for transceiver in self.pc.getTransceivers():
            for stats in (await transceiver.receiver.getStats()).values():
                if stats.type == "transport":
                    return int(stats.packetsReceived)
        return 0

    async def quality(self) -> dict[str, Any]:
        figures: dict[str, Any] = {}
        for stats in (await self.pc.getStats()).values():
            if stats.type == "inbound-rtp" and stats.kind == "audio":
                figures.update(
                    packets_received=stats.packetsReceived,
                    packets_lost=stats.packetsLost,
                    jitter_ms=round(stats.jitter / SAMPLE_RATE * 1000, 1),
                )
            elif stats.type == "remote-inbound-rtp" and stats.kind == "audio":
                # No round trip yet on a leg that has had no receiver report (a leg just replaced).
                rtt = stats.roundTripTime
                figures.update(rtt_ms=round(rtt * 1000, 1) if rtt is not None else None)
                figures.update(fraction_lost=stats.fractionLost)
        figures["relayed"] = _relayed(self.pc)
        return figures

    async def close(self) -> None:
        self.outgoing.stop()
        if self.pump is not None:
            self.pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.pump
        await self.pc.close()


def _relayed(pc: RTCPeerConnection) -> bool | None:
    """Whether the selected ICE pair goes through TURN (aiortc exposes no selected pair: read aioice's)."""
    for transceiver in pc.getTransceivers():
        connection = getattr(transceiver.receiver.transport.transport, "_connection", None)
        for pair in getattr(connection, "_nominated", {}).values():
            return "relay" in (pair.local_candidate.type, pair.remote_candidate.type)
    return None


class TranscodingCall:
    """Both legs of one call, bridged by decoding and re-encoding."""

    def __init__(
        self,
        call_id: str,
        ice_servers: list[IceServer],
        tones: dict[str, TonePattern],
        on_failed: LegFailed,
        on_closed: Callable[[], None],
        on_back: LegBack | None = None,
    ) -> None:
        self.call_id = call_id
        self._tones = tones
        self._ice_servers = ice_servers
        self.shopper = Leg("shopper", ice_servers, tones["ringback"])
        self.operator = Leg("operator", ice_servers, None)
        self._on_failed = on_failed
        self._on_closed = on_closed
        self._on_back = on_back
        self._closed = False
        self._mode = "waiting"  # waiting (the shopper hears the ring-back), bridged, held
        self._watch(self.shopper)
        self._watch(self.operator)
        self._watching = asyncio.get_running_loop().create_task(self._watch_media())

    def _watch(self, leg: Leg) -> None:
        @leg.pc.on("connectionstatechange")
        def on_state() -> None:
            current = leg is self.shopper or leg is self.operator  # not a leg replaced by a transfer
            if leg.pc.connectionState == "failed" and current and not self._closed:
                log.info("call %s: %s leg failed", self.call_id, leg.name)
                self._on_failed(leg.name)

    async def _watch_media(self) -> None:
        """Once a second: a leg that sent nothing for a while is gone, one that sends again is back."""
        loop = asyncio.get_running_loop()
        while not self._closed:
            await asyncio.sleep(WATCH_EVERY)
            for leg in (self.shopper, self.operator):
                try:
                    news = leg.watch.poll(await leg.packets_received(), loop.time())
                except Exception:  # e.g. a leg closed or replaced while asked: the next poll goes on
                    log.exception("call %s: could not read the %s's packets", self.call_id, leg.name)
                    continue
                if self._closed or not (leg is self.shopper or leg is self.operator):
                    continue  # closed, or replaced while we asked
                if news is False:
                    log.info(
                        "call %s: nothing from the %s for %.0f s", self.call_id, leg.name, NO_MEDIA_AFTER
                    )
                    self._on_failed(leg.name)
                elif news is True and self._on_back is not None:
                    log.info("call %s: the %s's packets are back", self.call_id, leg.name)
                    self._on_back(leg.name)

    async def answer_shopper(self, offer_sdp: str) -> str:
        return await self.shopper.answer(offer_sdp, self.operator)

    async def answer_operator(self, offer_sdp: str) -> str:
        return await self.operator.answer(offer_sdp, self.shopper)

    async def replace_operator(self, offer_sdp: str) -> str:
        """A transfer: the colleague's leg replaces the operator's, and the call is bridged (unheld)."""
        answer = await self.replace_leg("operator", offer_sdp)
        self.connect()
        return answer

    async def replace_leg(self, side: str, offer_sdp: str) -> str:
        """A new peer connection for `side` in place of its leg; the other leg's track goes on (aiortc
        keeps its sequence numbers and timestamps) and plays silence until the new leg's audio comes.

        aiortc has no ICE restart, so a browser whose network changed sends a fresh offer on a new peer
        connection and gets a new leg.
        """
        if side not in ("shopper", "operator"):
            raise ValueError(f'A call has no "{side}" leg.')
        other = self.operator if side == "shopper" else self.shopper
        new = Leg(side, self._ice_servers, self._tones["ringback"] if side == "shopper" else None)
        try:
            answer = await new.answer(offer_sdp, other)
            if self._closed:
                raise RuntimeError(f'Cannot replace a leg of call {self.call_id} in state "closed".')
        except Exception:
            await new.close()
            raise
        old = self.shopper if side == "shopper" else self.operator
        if side == "shopper":
            self.shopper = new
        else:
            self.operator = new
        self._watch(new)
        other.peer = new
        if self._mode == "bridged":
            new.outgoing.play(None, bridged=True)
        elif self._mode == "held":
            new.outgoing.play(self._tones["hold"] if side == "shopper" else None, bridged=False)
        await old.close()
        return answer

    def connect(self) -> None:
        self._mode = "bridged"
        self.shopper.outgoing.play(None, bridged=True)
        self.operator.outgoing.play(None, bridged=True)

    def hold(self, on: bool) -> None:
        if on:
            self._mode = "held"
            self.shopper.outgoing.play(self._tones["hold"], bridged=False)
            self.operator.outgoing.play(None, bridged=False)
        else:
            self.connect()

    async def quality(self) -> dict[str, Any]:
        return {"shopper": await self.shopper.quality(), "operator": await self.operator.quality()}

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watching
        # Reverse order of creation: the operator leg came last.
        await self.operator.close()
        await self.shopper.close()
        self._on_closed()


class TranscodingEngine:
    """MediaEngine that decodes and re-encodes (the plain aiortc bridge)."""

    def __init__(self, ice_servers: list[IceServer]) -> None:
        self._ice_servers = ice_servers
        self._tones = {"ringback": TonePattern(RINGBACK), "hold": TonePattern(HOLD)}
        self._calls: dict[str, TranscodingCall] = {}

    def check_offer(self, sdp: str) -> None:
        check_audio_offer(sdp)

    def open_call(
        self,
        call_id: str,
        on_leg_failed: LegFailed,
        recording_dir: Path | None = None,
        on_leg_back: LegBack | None = None,
    ) -> TranscodingCall:
        if recording_dir is not None:
            log.warning("call %s: the transcoding engine does not record; use the forwarding one", call_id)
        call = TranscodingCall(
            call_id, self._ice_servers, self._tones, on_leg_failed, lambda: self._forget(call_id), on_leg_back
        )
        self._calls[call_id] = call
        return call

    def _forget(self, call_id: str) -> None:
        self._calls.pop(call_id, None)

    async def close(self) -> None:
        for call in list(self._calls.values()):
            await call.close()
        self._calls.clear()


def check_audio_offer(sdp: str) -> None:
    """Raise BadOffer unless `sdp` parses and offers audio."""
    try:
        description = SessionDescription.parse(sdp)
    except Exception as e:
        raise BadOffer(f"The SDP offer cannot be parsed: {e}") from e
    if not any(m.kind == "audio" and m.port for m in description.media):
        raise BadOffer("The SDP offer has no audio.")
    if not any(m.dtls and m.dtls.fingerprints for m in description.media):
        raise BadOffer("The SDP offer has no DTLS fingerprint.")
