"""The forwarder's own Ogg/Opus pages and its SRTP fast path, with real Opus and real peer connections."""

from __future__ import annotations

import asyncio
import fractions
import os
import struct
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiortc import RTCPeerConnection, RTCRtpSender

from callserver.media.forwarding_bridge import SilentTrack
from callserver.media.recording import FRAME_SAMPLES, PAGE_PACKETS, LegRecording, decode_mono, ogg_crc
from callserver.media.srtp_tap import SrtpTap

RATE = 48_000


def opus_tone(hz: float, packets: int) -> list[bytes]:
    """`packets` 20 ms Opus packets of a sine tone, encoded by libopus."""
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format, encoder.bit_rate = RATE, "mono", "s16", 32_000
    samples = (8000 * np.sin(2 * np.pi * hz * np.arange(FRAME_SAMPLES * (packets + 10)) / RATE)).astype(
        np.int16
    )
    out: list[bytes] = []
    for i in range(0, len(samples), FRAME_SAMPLES):
        frame = av.AudioFrame.from_ndarray(samples[None, i : i + FRAME_SAMPLES], format="s16", layout="mono")
        frame.sample_rate, frame.pts = RATE, i
        out += [bytes(p) for p in encoder.encode(frame)]
    return out[:packets]


def dominant_hz(samples: np.ndarray[Any, Any]) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum[1:]) + 1) * RATE / len(samples)


def ogg_pages(data: bytes) -> list[bytes]:
    pages, pos = [], 0
    while pos < len(data):
        assert data[pos : pos + 4] == b"OggS"
        segments = data[pos + 26]
        size = 27 + segments + sum(data[pos + 27 : pos + 27 + segments])
        pages.append(data[pos : pos + size])
        pos += size
    return pages


def test_the_page_crc_is_the_one_ffmpeg_writes(tmp_path: Path) -> None:
    path = tmp_path / "ffmpeg.ogg"
    with av.open(str(path), "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=RATE, layout="mono")
        for i, payload in enumerate(opus_tone(440, 120)):
            packet = av.Packet(payload)
            packet.stream, packet.pts, packet.dts = stream, i * FRAME_SAMPLES, i * FRAME_SAMPLES
            packet.time_base = fractions.Fraction(1, RATE)
            container.mux(packet)
    pages = ogg_pages(path.read_bytes())
    assert len(pages) >= 3
    for page in pages:
        (stored,) = struct.unpack_from("<I", page, 22)
        assert ogg_crc(page[:22] + bytes(4) + page[26:]) == stored


def test_a_leg_recording_keeps_the_timeline_through_loss_and_a_late_start(tmp_path: Path) -> None:
    """Packets from 0.5 s after the bridge, 3 lost, one late and one repeated: the file decodes to the
    tone, as long as the leg was bridged, with the loss and the start filled by concealed silence."""
    tone = opus_tone(440, 150)
    path = tmp_path / "call.shopper.ogg"
    recording = LegRecording(path, started=10.0)
    for i, payload in enumerate(tone):
        if i in (60, 61, 62):
            continue  # lost
        recording.write(payload, 0x1234, 7_000 + i * FRAME_SAMPLES, 10.5 + i * 0.02)
        if i == 100:
            recording.write(tone[99], 0x1234, 7_000 + 99 * FRAME_SAMPLES, 12.5)  # late: dropped
            recording.write(payload, 0x1234, 7_000 + i * FRAME_SAMPLES, 12.5)  # repeated: dropped
    recording.close()
    recording.close()  # safe twice
    assert recording.packets == 147
    pages = ogg_pages(path.read_bytes())
    assert pages[0][5] == 0x02 and pages[0][28:36] == b"OpusHead"  # beginning of stream
    assert pages[1][28:36] == b"OpusTags"
    assert pages[-1][5] == 0x04  # end of stream
    # Each page's granule: the samples up to the end of its last packet (RFC 7845 section 4).
    (last_granule,) = struct.unpack_from("<q", pages[-1], 6)
    assert last_granule == RATE // 2 + 150 * FRAME_SAMPLES
    assert len(pages) == 2 + -(-(25 + 150) // PAGE_PACKETS)  # one page per PAGE_PACKETS packets
    voice = decode_mono(path)
    assert len(voice) == RATE // 2 + 150 * FRAME_SAMPLES
    assert np.abs(voice[: RATE // 2 - 2 * FRAME_SAMPLES]).max() < 0.01  # before the first packet
    assert abs(dominant_hz(voice[-RATE // 2 :]) - 440) < 15


def test_a_packet_reordered_behind_the_first_is_dropped_not_read_as_hours_ahead(tmp_path: Path) -> None:
    """The second packet of a source arrives first: without modulo-2^32 care it would be ~12 h ahead."""
    path = tmp_path / "call.shopper.ogg"
    recording = LegRecording(path, started=0.0)
    tone = opus_tone(440, 50)
    recording.write(tone[1], 5, 2**32 - 100 + FRAME_SAMPLES, 0.02)  # the second, first
    recording.write(tone[0], 5, 2**32 - 100, 0.021)  # the first, late: dropped
    for i, payload in enumerate(tone[2:], start=2):  # and on across the timestamp's wrap
        recording.write(payload, 5, (2**32 - 100 + i * FRAME_SAMPLES) & 0xFFFFFFFF, i * 0.02)
    recording.close()
    assert recording.packets == 49
    assert len(decode_mono(path)) == 50 * FRAME_SAMPLES  # one second, not ten minutes


def test_a_new_source_goes_on_where_the_last_one_stopped(tmp_path: Path) -> None:
    """A transferred call: the new leg's SSRC and timestamps start elsewhere; it is placed by arrival."""
    path = tmp_path / "call.operator.ogg"
    recording = LegRecording(path, started=0.0)
    first, second = opus_tone(440, 50), opus_tone(1000, 50)
    for i, payload in enumerate(first):
        recording.write(payload, 1, 1_000 + i * FRAME_SAMPLES, i * 0.02)
    for i, payload in enumerate(second):  # one second later, another source
        recording.write(payload, 2, 4_000_000_000 + i * FRAME_SAMPLES, 2.0 + i * 0.02)
    recording.close()
    voice = decode_mono(path)
    assert len(voice) == 3 * RATE
    assert abs(dominant_hz(voice[RATE // 2 : RATE]) - 440) < 15
    assert np.abs(voice[RATE + FRAME_SAMPLES : 2 * RATE - FRAME_SAMPLES]).max() < 0.01  # the gap
    assert abs(dominant_hz(voice[-RATE // 2 :]) - 1000) < 15


async def test_srtp_comes_the_fast_way_and_srtcp_still_reaches_aiortc() -> None:
    """Two real peer connections with taps: RTP arrives intact straight from the socket's callback,
    RTCP (told apart by its second byte) through aiortc, bad SRTP is counted and dropped, and
    `uninstall` gives aioice its protocols back."""
    caller, callee = RTCPeerConnection(), RTCPeerConnection()
    got_rtp: list[bytes] = []
    got_rtcp: list[bytes] = []
    tap_a = SrtpTap(caller, lambda packet, arrival: None, lambda data: None)
    tap_b = SrtpTap(callee, lambda packet, arrival: got_rtp.append(packet), got_rtcp.append)
    try:
        transceiver = caller.addTransceiver("audio", direction="sendrecv")
        await caller.setLocalDescription(await caller.createOffer())
        tap_a.install(transceiver)
        await callee.setRemoteDescription(caller.localDescription)
        answering = next(t for t in callee.getTransceivers() if t.kind == "audio")
        opus = [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"]
        answering.setCodecPreferences(opus)
        callee.addTrack(SilentTrack())
        tap_b.install(answering)
        await callee.setLocalDescription(await callee.createAnswer())
        await caller.setRemoteDescription(callee.localDescription)
        for _ in range(200):
            if tap_a.connected and tap_b.connected:
                break
            await asyncio.sleep(0.05)
        assert tap_a.connected and tap_b.connected

        sent = [
            struct.pack("!BBHII", 0x80, 111, seq, seq * FRAME_SAMPLES, tap_a.ssrc) + os.urandom(60)
            for seq in range(1, 21)
        ]
        for packet in sent:
            assert tap_a.send_rtp(packet)
        # A sender report (PT 200): SRTCP's first byte looks like SRTP's, its second does not.
        report = struct.pack("!BBHIIIIII", 0x80, 200, 6, tap_a.ssrc, 1, 2, 3, 4, 5)
        assert tap_a.send_rtcp(report)
        # Something that looks like SRTP but is not: counted and dropped.
        assert tap_a._send(b"\x80\x6f" + os.urandom(40))
        for _ in range(100):
            if len(got_rtp) == len(sent) and got_rtcp and tap_b.unprotect_failures:
                break
            await asyncio.sleep(0.02)
        assert got_rtp == sent
        assert got_rtcp == [report]
        assert tap_b.unprotect_failures == 1

        protocols = list(callee.getTransceivers()[0].receiver.transport.transport._connection._protocols)
        assert any("datagram_received" in vars(p) for p in protocols)
        tap_b.uninstall()
        tap_b.uninstall()  # safe twice
        assert not any("datagram_received" in vars(p) for p in protocols)

        # Closed: the tap lets go of the DTLS connection and the SRTP sessions at once.
        tap_a.uninstall()
        await caller.close()
        dtls = transceiver.receiver.transport
        tap_a.release()
        assert dtls._ssl is None and dtls._tx_srtp is None and dtls._rx_srtp is None
        assert not tap_a.connected
        assert not tap_a.send_rtp(sent[0])
    finally:
        tap_a.uninstall()
        tap_b.uninstall()
        await caller.close()
        await callee.close()
