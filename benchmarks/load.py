"""The benchmark's load generator: N synthetic calls through the real signaling, each with real Opus.

Run by `benchmarks.bridge` in a process of its own; it reads commands on stdin (one JSON object a
line) and answers on stdout:
- `{"calls": N, "window": seconds, "loss": fraction}` — ramp up to N calls held open, measure a window
  (with `loss`, that share of the packets each shopper sends is dropped before it leaves: loss on one leg);
- `{"churn": total, "concurrency": K, "hold": seconds, "every": 100}` — `total` short calls, K at a
  time, each hung up by the shopper after `hold` seconds; `{"progress": n}` after every `every` calls;
- `{"stop": true}`.

It is built to cost much less per call than the server: aiortc only negotiates ICE and DTLS for its
peers; an `SrtpTap` sends pre-encoded Opus (440 Hz from shoppers, 1000 Hz from operators) from one
20 ms ticker for all peers, and what comes back is only counted from the RTP header (sequence
numbers, arrival gaps) — a few packets per leg are kept and decoded at the end of a window to check
that each leg hears the other side's tone.

Delay through the bridge: every packet a peer sends carries its send time (`time.monotonic()`, one
clock for the whole host) in RTP padding (RFC 3550 section 5.1: the last octet counts the padding
octets). The forwarder relays the payload with its padding untouched, so the peer on the other leg
reads the stamp on arrival. The transcoding bridge decodes and re-encodes: no stamp survives, and no
delay is reported for it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import struct
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from callserver.media.srtp_tap import SrtpTap

RATE = 48_000
FRAME = 960
TICK = 0.02
SHOPPER_HZ, OPERATOR_HZ = 440.0, 1000.0
SAMPLE_PACKETS = 50  # packets per leg kept for the tone and dropout check (1 s)
STAMP = struct.Struct("!dB")  # send time, then the padding length (9) as RTP padding's last octet


def tone_packets(hz: float) -> list[bytes]:
    """One second of a sine tone as 50 Opus packets (whole cycles: it loops without a click)."""
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format, encoder.bit_rate = RATE, "mono", "s16", 32_000
    samples = (8000 * np.sin(2 * np.pi * hz * np.arange(RATE * 2) / RATE)).astype(np.int16)
    packets: list[bytes] = []
    for i in range(0, len(samples), FRAME):
        frame = av.AudioFrame.from_ndarray(samples[None, i : i + FRAME], format="s16", layout="mono")
        frame.sample_rate, frame.pts = RATE, i
        packets.extend(bytes(p) for p in encoder.encode(frame))
    return packets[50:100]  # the second second: past the encoder's start-up


def listen(payloads: list[bytes]) -> tuple[float | None, int]:
    """The dominant frequency of consecutive Opus payloads, and how many 20 ms frames are near silent.

    A bridge that falls behind may keep sending packets at the right pace but fill them with silence
    (the transcoding bridge does): loss counted from sequence numbers misses that; dropouts do not.
    """
    decoder = av.CodecContext.create("opus", "r")
    decoder.sample_rate, decoder.layout = RATE, "mono"
    pcm: list[np.ndarray[Any, Any]] = []
    for payload in payloads:
        for frame in decoder.decode(av.Packet(payload)):
            pcm.append(frame.to_ndarray().reshape(-1).astype(np.float32))
    if len(pcm) < 10:
        return None, len(payloads)
    frames = pcm[5:]  # past the decoder's start-up
    levels = np.array([float(np.sqrt(np.mean(f**2))) for f in frames])
    dropouts = int(np.sum(levels < 0.1 * float(np.median(levels))))
    samples = np.concatenate(frames)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum[1:]) + 1) * RATE / len(samples), dropouts


@dataclass
class LegCounter:
    """What one synthetic peer received, from RTP headers only."""

    received: int = 0
    first_seq: int | None = None
    max_seq: int = 0
    cycles: int = 0
    last_arrival: float | None = None
    gaps: list[float] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    sample: deque[bytes] = field(default_factory=lambda: deque(maxlen=SAMPLE_PACKETS))
    first_packet_at: float | None = None
    first_packet: asyncio.Event = field(default_factory=asyncio.Event)

    def window_start(self) -> None:
        self.received, self.first_seq, self.cycles, self.gaps, self.delays = 0, None, 0, [], []

    def packet(self, data: bytes, arrival: float) -> None:
        seq = (data[2] << 8) | data[3]
        if data[0] & 0x20 and data[-1] == STAMP.size and len(data) > 12 + STAMP.size:
            # Read the clock here, not the loop's cached time: uvloop's `time()` has 1 ms steps.
            self.delays.append(time.monotonic() - STAMP.unpack_from(data, len(data) - STAMP.size)[0])
        if self.first_packet_at is None:
            self.first_packet_at = time.monotonic()
            self.first_packet.set()
        if self.first_seq is None:
            self.first_seq = self.max_seq = seq
        elif 0 < (seq - self.max_seq) & 0xFFFF < 0x8000:
            if seq < self.max_seq:
                self.cycles += 1 << 16
            self.max_seq = seq
        self.received += 1
        if self.last_arrival is not None:
            self.gaps.append(arrival - self.last_arrival)
        self.last_arrival = arrival
        self.sample.append(data)

    @property
    def expected(self) -> int:
        return 0 if self.first_seq is None else self.cycles + self.max_seq - self.first_seq + 1


class SyntheticPeer:
    """A peer connection that sends one looping tone and counts what it gets back."""

    def __init__(self, tone: list[bytes]) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.tone = tone
        self.counter = LegCounter()
        self.tap = SrtpTap(self.pc, self.counter.packet, lambda data: None)
        self.seq = random.randrange(0x8000)
        self.ts = random.randrange(1 << 32)
        self.index = 0
        self.payload_type = 111
        self.loss = 0.0  # share of the packets dropped before they leave (loss injected on this leg)

    async def offer(self) -> str:
        transceiver = self.pc.addTransceiver("audio", direction="sendrecv")
        opus = [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"]
        transceiver.setCodecPreferences(opus)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self.tap.install(transceiver)
        return str(self.pc.localDescription.sdp)

    async def answered(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        assert self.tap.transceiver is not None
        self.payload_type = self.tap.transceiver._codecs[0].payloadType or 111

    def tick(self) -> None:
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + FRAME) & 0xFFFFFFFF
        payload = self.tone[self.index % len(self.tone)]
        self.index += 1
        if self.loss and random.random() < self.loss:
            return  # lost on the way: the sequence number moves on
        header = struct.pack("!BBHII", 0xA0, self.payload_type, self.seq, self.ts, self.tap.ssrc)
        self.tap.send_rtp(header + payload + STAMP.pack(time.monotonic(), STAMP.size))

    def heard(self) -> tuple[float | None, int]:
        payloads = []
        for packet in self.counter.sample:
            start = 12 + 4 * (packet[0] & 0x0F)
            if packet[0] & 0x10:
                start += 4 + 4 * int.from_bytes(packet[start + 2 : start + 4], "big")
            end = len(packet) - packet[-1] if packet[0] & 0x20 else len(packet)
            payloads.append(packet[start:end])
        return listen(payloads)

    async def close(self) -> None:
        self.tap.uninstall()
        await self.pc.close()
        self.tap.release()


@dataclass
class Call:
    shopper: SyntheticPeer
    operator: SyntheticPeer
    ws: aiohttp.ClientWebSocketResponse
    setup_seconds: float | None = None
    call_id: str | None = None
    ended: asyncio.Future[None] | None = None


class LoadGenerator:
    """Operators' softphones on `url`; shoppers' widgets on `url` too, or in turn on `shopper_urls` (the
    nodes of a cluster), their visitors numbered from `first_visitor` (each has its token and address)."""

    def __init__(
        self,
        url: str,
        site: str,
        origin: str,
        operator_cookies: list[str],
        shopper_urls: Sequence[str] = (),
        first_visitor: int = 0,
    ) -> None:
        self.url, self.site, self.origin = url, site, origin
        self.shopper_urls = list(shopper_urls) or [url]
        self.cookies = operator_cookies
        self.tones = {"shopper": tone_packets(SHOPPER_HZ), "operator": tone_packets(OPERATOR_HZ)}
        self.calls: list[Call] = []
        self.peers: list[SyntheticPeer] = []
        self.session: aiohttp.ClientSession | None = None
        self.operator_sockets: dict[int, aiohttp.ClientWebSocketResponse] = {}
        self.online = 0
        self.went_online = asyncio.Event()
        self.rung: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
        self.answers: dict[str, asyncio.Future[str]] = {}
        self.operator_tasks: list[asyncio.Task[None]] = []
        self.drains: list[asyncio.Task[None]] = []
        self.lags: list[float] = []
        self._ticker: asyncio.Task[None] | None = None
        self._lag_task: asyncio.Task[None] | None = None
        self.opened = first_visitor  # the next call's visitor: each has a token of its own
        self.loss = 0.0

    async def start(self) -> None:
        # No cap on connections: aiohttp's default connector holds at most 100 at once and makes the
        # next `ws_connect` wait for a free one, forever with WebSockets that stay open. With one
        # socket per operator and one per shopper, that stalled the ramp at 40 calls of the 60 step.
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self._ticker = asyncio.ensure_future(self._tick())
        self._lag_task = asyncio.ensure_future(self._measure_lag())

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += TICK
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_at = loop.time()
            for peer in self.peers:
                if peer.tap.connected:
                    peer.tick()

    async def _measure_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.01)
            self.lags.append(loop.time() - before - 0.01)

    async def _operator(self, index: int) -> None:
        """One softphone: goes online; the calls it is rung for are answered by `open_call`."""
        assert self.session is not None
        ws = await self.session.ws_connect(
            f"{self.url}/ws/operator", headers={"Cookie": f"callserver_session={self.cookies[index]}"}
        )
        self.operator_sockets[index] = ws
        await ws.send_json({"type": "presence.set", "status": "online"})
        async for message in ws:
            data = json.loads(message.data)
            if os.environ.get("BENCH_DEBUG"):
                print("operator", index, data["type"], file=sys.stderr)
            if data["type"] == "call.incoming":
                self.rung.put_nowait((index, data["call"]["id"]))
            elif data["type"] == "call.answer":
                self.answers[data["call_id"]].set_result(data["sdp"])
            elif data["type"] == "presence":
                self.online += 1
                self.went_online.set()

    async def open_operators(self, count: int) -> None:
        if count > len(self.cookies):
            raise RuntimeError(f"only {len(self.cookies)} operator accounts for {count} calls")
        while len(self.operator_tasks) < count:
            self.operator_tasks.append(asyncio.ensure_future(self._operator(len(self.operator_tasks))))
        while self.online < count:
            self.went_online.clear()
            await self.went_online.wait()

    async def open_call(self) -> Call:
        assert self.session is not None
        number = self.opened
        self.opened += 1
        started = time.monotonic()
        ws = await self.session.ws_connect(
            f"{self.shopper_urls[number % len(self.shopper_urls)]}/ws/widget"
            f"?site={self.site}&visitor=bench-{number:05d}-{os.getpid()}",
            # Each shopper from an address of its own (the server trusts X-Forwarded-For here): one
            # address would be held to a household's call attempts (callserver/limits.py).
            headers={"Origin": self.origin, "X-Forwarded-For": shopper_address(number)},
        )
        shopper = SyntheticPeer(self.tones["shopper"])
        shopper.loss = self.loss
        operator = SyntheticPeer(self.tones["operator"])
        self.peers += [shopper, operator]
        call = Call(shopper, operator, ws, ended=asyncio.get_running_loop().create_future())
        self.calls.append(call)
        await ws.send_json({"type": "call.offer", "sdp": await shopper.offer(), "context": {"page": "bench"}})
        async for message in ws:
            data = json.loads(message.data)
            if os.environ.get("BENCH_DEBUG"):
                print("shopper", number, data["type"], file=sys.stderr)
            if data["type"] == "call.answer":
                call.call_id = data["call_id"]
                await shopper.answered(data["sdp"])
                break
            if data["type"] in {"call.ended", "error"}:
                raise RuntimeError(f"call refused: {data}")
        # Keep reading: aiohttp answers the server's heartbeat pings only while the socket is read.
        self.drains.append(asyncio.ensure_future(self._drain(call)))
        # The router rings one free operator (longest idle); this call's operator peer answers the
        # next call rung anywhere (calls set up side by side may swap operators: all send the same tone).
        index, call_id = await self.rung.get()
        answer = self.answers[call_id] = asyncio.get_running_loop().create_future()
        await self.operator_sockets[index].send_json(
            {"type": "call.accept", "call_id": call_id, "sdp": await operator.offer()}
        )
        sdp = await answer
        del self.answers[call_id]
        await operator.answered(sdp)
        await shopper.counter.first_packet.wait()
        await operator.counter.first_packet.wait()
        assert operator.counter.first_packet_at is not None
        call.setup_seconds = operator.counter.first_packet_at - started
        return call

    async def _drain(self, call: Call) -> None:
        async for message in call.ws:
            if os.environ.get("BENCH_DEBUG"):
                print("shopper", message.data, file=sys.stderr)
            data = json.loads(message.data)
            if data.get("type") == "call.ended" and call.ended is not None and not call.ended.done():
                call.ended.set_result(None)

    async def hang_up(self, call: Call) -> None:
        """The shopper hangs up; once the server has ended the call (its operator is free), close it."""
        await call.ws.send_json({"type": "call.hangup"})
        assert call.ended is not None
        await asyncio.wait_for(call.ended, 30)
        self.calls.remove(call)
        for peer in (call.operator, call.shopper):
            self.peers.remove(peer)
            await peer.close()
        await call.ws.close()

    async def churn(self, total: int, concurrency: int, hold: float, every: int) -> dict[str, Any]:
        """`total` short calls, `concurrency` at a time, each held `hold` seconds then hung up."""
        await self.open_operators(concurrency)
        done = failed = 0
        started = time.monotonic()
        while done < total:
            wave: list[Call] = []
            for _ in range(min(concurrency, total - done)):
                wave.append(await self.open_call())
            await asyncio.sleep(hold)
            for call in wave:
                if min(call.shopper.counter.received, call.operator.counter.received) < 10:
                    failed += 1
                await self.hang_up(call)
                done += 1
                if done % every == 0:
                    print(json.dumps({"progress": done}), flush=True)
        return {"calls": done, "calls_without_audio": failed, "seconds": round(time.monotonic() - started, 1)}

    async def ramp(self, count: int) -> None:
        await self.open_operators(count)
        # One call at a time: the router rings the longest-idle operator, who must be free when rung.
        while len(self.calls) < count:
            await self.open_call()

    async def window(self, seconds: float, loss: float = 0.0) -> dict[str, Any]:
        self.loss = loss
        for call in self.calls:
            call.shopper.loss = loss
        for peer in self.peers:
            peer.counter.window_start()
        self.lags = []
        cpu_before = process_cpu(os.getpid())
        started = time.monotonic()
        print(json.dumps({"window": "start"}), flush=True)
        await asyncio.sleep(seconds)
        print(json.dumps({"window": "end"}), flush=True)
        elapsed = time.monotonic() - started
        cpu = process_cpu(os.getpid()) - cpu_before
        return self.summary(elapsed, cpu)

    def summary(self, elapsed: float, cpu: float) -> dict[str, Any]:
        received = expected = 0
        gaps: list[float] = []
        delays: list[float] = []
        wrong_tone = dropouts = 0
        per_leg_pps: list[float] = []
        for call in self.calls:
            for peer, should_hear in ((call.shopper, OPERATOR_HZ), (call.operator, SHOPPER_HZ)):
                counter = peer.counter
                received += counter.received
                expected += max(counter.expected, counter.received)
                gaps += counter.gaps
                delays += counter.delays
                per_leg_pps.append(counter.received / elapsed)
                heard, silent_frames = peer.heard()
                if heard is None or abs(heard - should_hear) > 25:
                    wrong_tone += 1
                if silent_frames > 1:
                    dropouts += 1
        setups = sorted(c.setup_seconds for c in self.calls if c.setup_seconds is not None)
        lags = sorted(self.lags)
        delays.sort()
        return {
            "calls": len(self.calls),
            "seconds": round(elapsed, 2),
            "packets_received": received,
            "loss_percent": round(100 * (expected - received) / expected, 3) if expected else 100.0,
            "p99_gap_ms": round(1000 * percentile(sorted(gaps), 0.99), 1) if gaps else None,
            "injected_loss_percent": round(100 * self.loss, 1),
            "delay_ms_p50": round(1000 * percentile(delays, 0.5), 2) if delays else None,
            "delay_ms_p99": round(1000 * percentile(delays, 0.99), 2) if delays else None,
            "delay_ms_max": round(1000 * delays[-1], 2) if delays else None,
            "pps_per_leg": round(sum(per_leg_pps) / len(per_leg_pps), 1) if per_leg_pps else 0,
            "min_pps_per_leg": round(min(per_leg_pps), 1) if per_leg_pps else 0,
            "legs_with_wrong_tone": wrong_tone,
            "legs_with_dropouts": dropouts,
            "setup_ms_median": round(1000 * percentile(setups, 0.5)) if setups else None,
            "setup_ms_max": round(1000 * setups[-1]) if setups else None,
            "loadgen_cpu_percent": round(100 * cpu / elapsed, 1),
            "loadgen_loop_lag_p99_ms": round(1000 * percentile(lags, 0.99), 1) if lags else None,
        }

    async def close(self) -> None:
        for task in (self._ticker, self._lag_task, *self.operator_tasks, *self.drains):
            if task is not None:
                task.cancel()
        for call in reversed(self.calls):
            await call.ws.close()
        for peer in reversed(self.peers):
            await peer.close()
        for ws in self.operator_sockets.values():
            await ws.close()
        if self.session is not None:
            await self.session.close()


def shopper_address(number: int) -> str:
    """A distinct address per call, in 198.18.0.0/15 (RFC 2544: set aside for benchmarks)."""
    return f"198.{18 + (number >> 16 & 1)}.{number >> 8 & 0xFF}.{number & 0xFF}"


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process used so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main(args: argparse.Namespace, cookies: list[str]) -> None:
    load = LoadGenerator(args.url, args.site, args.origin, cookies)
    await load.start()
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    try:
        while line := await reader.readline():
            command = json.loads(line)
            if command.get("stop"):
                break
            try:
                if "churn" in command:
                    result = await load.churn(
                        command["churn"], command["concurrency"], command["hold"], command.get("every", 100)
                    )
                else:
                    await asyncio.wait_for(load.ramp(command["calls"]), command.get("setup_timeout", 120))
                    await asyncio.sleep(command.get("settle", 2.0))
                    result = await load.window(command["window"], command.get("loss", 0.0))
            except Exception as e:
                result = {"calls": len(load.calls), "error": f"{type(e).__name__}: {e}"}
            print(json.dumps({"result": result}), flush=True)
    finally:
        await load.close()


if __name__ == "__main__":
    import uvloop

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--site", required=True)
    parser.add_argument("--origin", required=True)
    parser.add_argument("--cookies", required=True, help="file with one operator session cookie a line")
    arguments = parser.parse_args()
    with open(arguments.cookies) as f:
        session_cookies = [line.strip() for line in f if line.strip()]
    uvloop.run(main(arguments, session_cookies))
