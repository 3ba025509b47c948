"""The forwarding bridge: Opus packets go from one leg to the other without being decoded.

aiortc answers each leg and runs ICE and DTLS; below it an `SrtpTap` takes each SRTP packet off the
socket. A packet from one leg is unprotected with that leg's session, given the SSRC, sequence number
and timestamp of the stream the forwarder owns towards the other leg, stripped of header extensions
(their ids are negotiated per leg, RFC 8285) and protected with the other leg's session (RFC 3711).
There is no jitter buffer on the way: a packet lost on one leg is a gap in the other, never a stall.

The waiting tone, the hold tone and silence are Opus packets encoded once per engine and sent on the
same owned stream by a 20 ms ticker, which also sends each leg's RTCP reports (`callserver.media.rtcp`).

A leg can be replaced in the middle of a call (a re-offer after the browser's network changed, or a
transfer): the new leg is hooked into the same forwarder, and the stream the other browser hears goes
on — silence packets while the new leg connects, then its voice, with the same SSRC, the sequence
number continuing +1 and the timestamp advanced by the wall-clock gap — so that browser sees one
stream that paused, never a jump backwards (which it would drop as replays, RFC 3711 section 3.3.2).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import SessionDescription

from callserver.errors import BadOffer
from callserver.media.engine import LegBack, LegFailed, RecordingStore
from callserver.media.media_watch import WATCH_EVERY, MediaWatch
from callserver.media.recording import LegRecording, mix_playback
from callserver.media.rtcp import ReceiveStats, RemoteView, compound_report, read_reports
from callserver.media.srtp_tap import SrtpTap
from callserver.media.tones import (
    FRAME_SAMPLES,
    HOLD,
    RINGBACK,
    SAMPLE_RATE,
    SILENCE,
    TonePattern,
    opus_packets,
)
from callserver.media.transcoding_bridge import check_audio_offer
from callserver.settings import IceServer

log = logging.getLogger(__name__)

TICK = FRAME_SAMPLES / SAMPLE_RATE  # 20 ms
RTCP_INTERVAL = 1.0  # seconds, randomised ×0.5–1.5 (RFC 3550 section 6.3.1)
HEADER = struct.Struct("!BBHII")


class Tones:
    """The pre-encoded Opus packets every forwarded call plays from."""

    def __init__(self) -> None:
        self.ringback = opus_packets(TonePattern(RINGBACK).frames)
        self.hold = opus_packets(TonePattern(HOLD).frames)
        self.silence = opus_packets([SILENCE] * 3)[-1:]

    @staticmethod
    @functools.cache
    def shared() -> Tones:
        """One set per process: making it takes half a CPU-second, which every engine started in
        the process (a media worker's, a test's) paid again; the packets are never changed."""
        return Tones()


class SilentTrack(MediaStreamTrack):
    """The track aiortc announces for a forwarded leg; its sender never runs (the tap owns the SSRC)."""

    kind = "audio"

    async def recv(self) -> Any:
        raise MediaStreamError


class OutgoingStream:
    """What one browser hears: one RTP stream (SSRC, sequence numbers, timestamps) the forwarder owns."""

    def __init__(self, tap: SrtpTap) -> None:
        self.tap = tap
        self.ssrc = 0  # the tap's, once the leg is answered (`ForwardedLeg.answer`)
        self.payload_type = 111
        # Random starting points (RFC 3550 section 5.1), in the lower half for the sequence number so
        # that the SRTP rollover counter cannot be guessed wrong early on (as aiortc does).
        self.seq = random.randrange(0x8000)
        self.ts = random.randrange(1 << 32)
        self.last_sent: float | None = None
        self.packets = 0
        self.octets = 0
        self.tone: list[bytes] | None = None
        self.forwarding = False
        # Sent while forwarding from a leg that is being replaced (or lost its connection), until the
        # first packet of its successor: the browser hears silence, not a stalled stream.
        self.filler: list[bytes] | None = None
        self._tone_index = 0
        self._rebase = True
        self._source_ssrc: int | None = None
        self._seq_offset = 0
        self._ts_offset = 0

    def play(self, tone: list[bytes] | None, forwarding: bool) -> None:
        """Switch the source: a looping tone, the other leg (`forwarding`), or nothing."""
        self.tone, self.forwarding = tone, forwarding
        self._tone_index = 0
        self._rebase = True

    def _step(self, now: float) -> int:
        """Timestamp increment for a new source: the wall-clock time since the last packet sent."""
        if self.last_sent is None:
            return FRAME_SAMPLES
        frames = max(1, round((now - self.last_sent) / TICK))
        return frames * FRAME_SAMPLES

    def send_tone(self, now: float) -> None:
        tone = self.filler if self.forwarding else self.tone
        if tone is None:
            return
        marker = 0x80 if self._tone_index == 0 else 0
        step = self._step(now) if self._rebase else FRAME_SAMPLES
        # After a filler packet the next forwarded one continues from it (`forward` rebases).
        self._rebase = self.forwarding
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + step) & 0xFFFFFFFF
        payload = tone[self._tone_index % len(tone)]
        self._tone_index += 1
        self._emit(HEADER.pack(0x80, marker | self.payload_type, self.seq, self.ts, self.ssrc) + payload, now)

    def forward(
        self, padding: int, marker: int, ssrc: int, seq: int, ts: int, payload: bytes, now: float
    ) -> None:
        if self.filler is not None:
            self.filler, self._tone_index = None, 0
        if self._rebase or ssrc != self._source_ssrc:
            # A new source continues our stream where it stands, so the browser sees one stream.
            self._seq_offset = (self.seq + 1 - seq) & 0xFFFF
            self._ts_offset = (self.ts + self._step(now) - ts) & 0xFFFFFFFF
            self._source_ssrc, self._rebase = ssrc, False
            marker = 0x80  # first packet of a talkspurt (RFC 3551 section 4.1)
        out_seq = (seq + self._seq_offset) & 0xFFFF
        out_ts = (ts + self._ts_offset) & 0xFFFFFFFF
        if (out_seq - self.seq) & 0xFFFF < 0x8000:  # newer than anything sent (reordered ones pass as-is)
            self.seq, self.ts = out_seq, out_ts
        self._emit(
            HEADER.pack(0x80 | padding, marker | self.payload_type, out_seq, out_ts, self.ssrc) + payload, now
        )

    def _emit(self, packet: bytes, now: float) -> None:
        if self.tap.send_rtp(packet):
            self.last_sent = now
            self.packets += 1
            self.octets += len(packet) - 12

    def sent_now(self, now: float) -> tuple[int, int, int] | None:
        """(RTP timestamp of now, packets, octets) for a sender report, or None before the first packet."""
        if self.last_sent is None:
            return None
        return (self.ts + round((now - self.last_sent) * SAMPLE_RATE), self.packets, self.octets)


class ForwardedLeg:
    """One browser's peer connection, tapped below aiortc."""

    def __init__(self, name: str, ice_servers: list[IceServer]) -> None:
        self.name = name
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[RTCIceServer(s.urls, s.username, s.credential) for s in ice_servers])
        )
        self.tap = SrtpTap(self.pc, self._rtp, self._rtcp)
        self.out = OutgoingStream(self.tap)
        self.stats = ReceiveStats()
        self.remote = RemoteView()
        self.opus_pt = 111
        self.peer: OutgoingStream | None = None  # where what this leg says goes
        self.recording: LegRecording | None = None
        self.next_rtcp = 0.0
        self._cname = os.urandom(8).hex().encode()
        self.rtcp_received = 0
        self.watch = MediaWatch()  # polled with stats.octets + rtcp_received, never per packet

    async def answer(self, offer_sdp: str) -> str:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        transceiver = next(t for t in self.pc.getTransceivers() if t.kind == "audio")
        opus = [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"]
        transceiver.setCodecPreferences(opus)
        self.pc.addTrack(SilentTrack())
        # Hooked before ICE can deliver anything: packets that reached aiortc's receiver would pile up.
        self.tap.install(transceiver)
        self.out.ssrc = self.tap.ssrc
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        codec = transceiver._codecs[0] if transceiver._codecs else None
        if codec is None or codec.mimeType.lower() != "audio/opus" or codec.payloadType is None:
            raise BadOffer("The offer has no Opus audio.")
        # One payload type per m-line serves both directions (RFC 3264 section 6.1).
        self.opus_pt = self.out.payload_type = codec.payloadType
        return str(self.pc.localDescription.sdp)

    def _rtp(self, packet: bytes, arrival: float) -> None:
        """One plain RTP packet from this leg's browser: count it, record it, forward it."""
        if len(packet) < 12:
            return
        first, second = packet[0], packet[1]
        if second & 0x7F != self.opus_pt or first >> 6 != 2:
            return  # comfort noise or DTMF events are not forwarded
        _, _, seq, ts, ssrc = HEADER.unpack_from(packet)
        self.stats.packet(ssrc, seq, ts, arrival, len(packet))
        start = 12 + 4 * (first & 0x0F)
        if first & 0x10:  # header extension (RFC 3550 section 5.3.1): ids are per leg, so drop it
            if len(packet) < start + 4:
                return
            start += 4 + 4 * int.from_bytes(packet[start + 2 : start + 4], "big")
        payload = packet[start:]
        if not payload:
            return
        recording = self.recording
        if recording is not None:
            audio = payload[: len(payload) - payload[-1]] if first & 0x20 else payload
            recording.write(audio, ssrc, ts, arrival)
        peer = self.peer
        if peer is not None and peer.forwarding:
            peer.forward(first & 0x20, second & 0x80, ssrc, seq, ts, payload, arrival)

    def _rtcp(self, data: bytes) -> None:
        self.rtcp_received += 1
        read_reports(data, self.tap.ssrc, self.stats, self.remote, asyncio.get_running_loop().time())

    def send_rtcp(self, now: float) -> None:
        report = compound_report(
            self.tap.ssrc, self._cname, self.out.sent_now(now), self.stats.report_block(now)
        )
        self.tap.send_rtcp(report)
        self.next_rtcp = now + RTCP_INTERVAL * (0.5 + random.random())

    def quality(self) -> dict[str, Any]:
        return {
            "packets_received": self.stats.received,
            "packets_lost": self.stats.lost,
            "jitter_ms": round(self.stats.jitter_ms, 1),
            "packets_sent": self.out.packets,
            "rtt_ms": self.remote.rtt_ms,
            "fraction_lost": self.remote.fraction_lost,
            "relayed": self.tap.relayed(),
        }

    async def close(self) -> None:
        self.peer = None
        self.out.play(None, forwarding=False)
        self.tap.uninstall()  # before aiortc closes the transports under it
        await self.pc.close()
        self.tap.release()


class ForwardingCall:
    """Both legs of one call, bridged by forwarding Opus packets."""

    def __init__(
        self,
        call_id: str,
        engine: ForwardingEngine,
        on_failed: LegFailed,
        recording_dir: Path | None,
        on_back: LegBack | None = None,
    ) -> None:
        self.call_id = call_id
        self._engine = engine
        self.shopper = ForwardedLeg("shopper", engine.ice_servers)
        self.operator = ForwardedLeg("operator", engine.ice_servers)
        self.shopper.peer = self.operator.out
        self.operator.peer = self.shopper.out
        self._on_failed = on_failed
        self._on_back = on_back
        self._recording_dir = recording_dir
        self._recordings: list[LegRecording] = []
        self._closed = False
        self._mode = "waiting"  # waiting (the shopper hears the ring-back), bridged, held
        self._earlier: dict[str, list[dict[str, Any]]] = {"shopper": [], "operator": []}  # replaced legs
        self._watch(self.shopper)
        self._watch(self.operator)
        self.shopper.out.play(engine.tones.ringback, forwarding=False)

    @property
    def legs(self) -> tuple[ForwardedLeg, ForwardedLeg]:
        return self.shopper, self.operator

    def _watch(self, leg: ForwardedLeg) -> None:
        @leg.pc.on("connectionstatechange")
        def on_state() -> None:
            current = leg is self.shopper or leg is self.operator  # not a leg replaced by a transfer
            if leg.pc.connectionState == "failed" and current and not self._closed:
                log.info("call %s: %s leg failed", self.call_id, leg.name)
                self._leg_gone(leg)

    def _leg_gone(self, leg: ForwardedLeg) -> None:
        other = self.operator if leg is self.shopper else self.shopper
        if other.out.forwarding:
            other.out.filler = self._engine.tones.silence
        self._on_failed(leg.name)

    def watch_media(self, now: float) -> None:
        """About once a second: a leg that sent nothing for a while is gone, one that sends again is back."""
        if self._closed:
            return
        for leg in self.legs:
            news = leg.watch.poll(leg.stats.octets + leg.rtcp_received, now)
            if news is False:
                log.info(
                    "call %s: nothing from the %s for %.0f s", self.call_id, leg.name, leg.watch.quiet_after
                )
                self._leg_gone(leg)
            elif news is True and self._on_back is not None:
                log.info("call %s: the %s's packets are back", self.call_id, leg.name)
                self._on_back(leg.name)

    async def answer_shopper(self, offer_sdp: str) -> str:
        return await self.shopper.answer(offer_sdp)

    async def answer_operator(self, offer_sdp: str) -> str:
        answer = await self.operator.answer(offer_sdp)
        if self._recording_dir is None and self._engine.recordings is not None:
            self._recording_dir = await self._engine.recordings.directory_for(self.call_id)
        return answer

    async def replace_operator(self, offer_sdp: str) -> str:
        """A transfer: the colleague's leg replaces the operator's, and the call is bridged (unheld)."""
        answer = await self.replace_leg("operator", offer_sdp)
        self.connect()
        return answer

    async def replace_leg(self, side: str, offer_sdp: str) -> str:
        """A new peer connection for `side` in place of its leg; the other leg is untouched.

        aiortc has no ICE restart (it cannot take new ICE credentials on a live connection, and
        `createOffer(iceRestart)` does not exist there), so a browser whose network changed comes back
        with a fresh offer on a new peer connection, and the server answers it with a new leg.
        """
        if side not in ("shopper", "operator"):
            raise ValueError(f'A call has no "{side}" leg.')
        new = ForwardedLeg(side, self._engine.ice_servers)
        try:
            answer = await new.answer(offer_sdp)
            if self._closed:
                raise RuntimeError(f'Cannot replace a leg of call {self.call_id} in state "closed".')
        except Exception:
            await new.close()
            raise
        old = self.shopper if side == "shopper" else self.operator
        other = self.operator if side == "shopper" else self.shopper
        if side == "shopper":
            self.shopper = new
        else:
            self.operator = new
        self._watch(new)
        new.peer, other.peer = other.out, new.out
        # This side's part of the recording goes on in the same file (re-anchored on the new SSRC).
        new.recording, old.recording = old.recording, None
        tones = self._engine.tones
        if self._mode == "bridged":
            new.out.play(None, forwarding=True)
            other.out.filler = tones.silence  # until the new leg's first packet
        elif self._mode == "held":
            new.out.play(tones.hold if side == "shopper" else tones.silence, forwarding=False)
        elif side == "shopper":
            new.out.play(tones.ringback, forwarding=False)
        self._earlier[side].append(old.quality())
        await old.close()
        return answer

    def connect(self) -> None:
        if self._recording_dir is not None and not self._recordings:
            self._start_recording(self._recording_dir)
        self._mode = "bridged"
        self.shopper.out.play(None, forwarding=True)
        self.operator.out.play(None, forwarding=True)

    def _start_recording(self, directory: Path) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            started = asyncio.get_running_loop().time()
            for leg in self.legs:
                leg.recording = LegRecording(directory / f"{self.call_id}.{leg.name}.ogg", started)
                self._recordings.append(leg.recording)
        except Exception:
            log.exception("call %s: cannot record", self.call_id)
            self._stop_recording()

    def _stop_recording(self) -> None:
        for leg in reversed(self.legs):
            leg.recording = None
        for recording in reversed(self._recordings):
            recording.close()

    def hold(self, on: bool) -> None:
        if on:
            self._mode = "held"
            self.shopper.out.play(self._engine.tones.hold, forwarding=False)
            self.operator.out.play(self._engine.tones.silence, forwarding=False)
        else:
            self.connect()

    async def quality(self) -> dict[str, Any]:
        """Each side's figures; a side whose leg was replaced counts the packets of all its legs."""
        figures = {"shopper": self.shopper.quality(), "operator": self.operator.quality()}
        for side, earlier in self._earlier.items():
            for old in earlier:
                for name in ("packets_received", "packets_lost", "packets_sent"):
                    figures[side][name] += old[name]
            figures[side]["legs"] = 1 + len(earlier)
        return figures

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._engine.forget(self)
        self._stop_recording()
        # Reverse order of creation: the operator leg came last.
        await self.operator.close()
        await self.shopper.close()
        if self._recordings and self._recording_dir is not None:
            legs = [r.path for r in self._recordings if r.packets]
            self._engine.mix_later(self.call_id, legs, self._recording_dir / f"{self.call_id}.ogg")


def check_opus_offer(sdp: str) -> None:
    """Raise BadOffer unless `sdp` is an offer with Opus audio (all the forwarder can relay)."""
    check_audio_offer(sdp)
    description = SessionDescription.parse(sdp)
    if not any(
        codec.mimeType.lower() == "audio/opus"
        for media in description.media
        if media.kind == "audio"
        for codec in media.rtp.codecs
    ):
        raise BadOffer("The SDP offer has no Opus audio.")


class ForwardingEngine:
    """MediaEngine that forwards Opus between the legs below aiortc, and records without re-encoding."""

    def __init__(
        self,
        ice_servers: list[IceServer],
        recordings: RecordingStore | None = None,
        keep_leg_recordings: bool = False,
    ) -> None:
        self.ice_servers = ice_servers
        self.recordings = recordings
        self.keep_leg_recordings = keep_leg_recordings
        self.tones = Tones.shared()
        self._calls: dict[str, ForwardingCall] = {}
        self._mixing: set[asyncio.Task[None]] = set()
        # One thread mixes the recordings, one after the other: mixes side by side in the default
        # executor's threads held the GIL against the forwarding loop, and each thread's malloc arena
        # kept its peak (see recording.give_back_free_memory).
        self._mixer: ThreadPoolExecutor | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self._next_tick = 0.0
        self._next_watch = 0.0

    def check_offer(self, sdp: str) -> None:
        check_opus_offer(sdp)

    def open_call(
        self,
        call_id: str,
        on_leg_failed: LegFailed,
        recording_dir: Path | None = None,
        on_leg_back: LegBack | None = None,
    ) -> ForwardingCall:
        call = ForwardingCall(call_id, self, on_leg_failed, recording_dir, on_leg_back)
        self._calls[call_id] = call
        if self._ticker is None:
            loop = asyncio.get_running_loop()
            self._next_tick = loop.time() + TICK
            self._ticker = loop.call_at(self._next_tick, self._tick)
        return call

    def forget(self, call: ForwardingCall) -> None:
        if self._calls.get(call.call_id) is call:
            del self._calls[call.call_id]

    def _tick(self) -> None:
        """Every 20 ms: the next tone packet of every leg that hears one, and RTCP that is due."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for call in self._calls.values():
            for leg in (call.shopper, call.operator):
                out = leg.out
                # A bridged leg hears the other's packets, not a tone: most ticks have nothing to do.
                tone = out.filler if out.forwarding else out.tone
                if (tone is None and now < leg.next_rtcp) or not leg.tap.connected:
                    continue
                if tone is not None:
                    out.send_tone(now)
                if now >= leg.next_rtcp:
                    leg.send_rtcp(now)
        if now >= self._next_watch:  # the no-media watchdog, once a second (media_watch)
            self._next_watch = now + WATCH_EVERY
            for call in list(self._calls.values()):
                call.watch_media(now)
        if not self._calls:
            self._ticker = None
            return
        self._next_tick += TICK
        if self._next_tick < now:  # the loop was late: skip ahead rather than send a burst
            self._next_tick = now + TICK
        self._ticker = loop.call_at(self._next_tick, self._tick)

    def mix_later(self, call_id: str, legs: list[Path], out: Path) -> None:
        """Mix the playback file in a thread after the call, then tell the store where it is."""

        async def mix() -> None:
            if self._mixer is None:
                self._mixer = ThreadPoolExecutor(1, thread_name_prefix="recording-mix")
            try:
                path = await asyncio.get_running_loop().run_in_executor(self._mixer, mix_playback, legs, out)
            except Exception:
                log.exception("call %s: mixing the recording failed", call_id)
                return
            if not self.keep_leg_recordings:
                for leg in legs:
                    with contextlib.suppress(OSError):
                        leg.unlink()
            if self.recordings is not None:
                await self.recordings.saved(call_id, path)
            log.info("call %s: recording saved to %s", call_id, path)

        if not legs:
            return
        task = asyncio.get_running_loop().create_task(mix())
        self._mixing.add(task)
        task.add_done_callback(self._mixing.discard)

    async def recordings_done(self) -> None:
        """Wait for the playback files being mixed."""
        while self._mixing:
            await asyncio.gather(*list(self._mixing), return_exceptions=True)

    async def close(self) -> None:
        for call in list(self._calls.values()):
            await call.close()
        self._calls.clear()
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        await self.recordings_done()
        if self._mixer is not None:
            self._mixer.shutdown()
            self._mixer = None
