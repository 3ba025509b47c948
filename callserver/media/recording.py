"""Call recordings: each leg's Opus packets written into Ogg as they arrive, mixed once after the call.

The live path never decodes: `LegRecording` muxes the packets the forwarder relays (RFC 7845 Ogg
encapsulation, done by PyAV/FFmpeg). Ogg keeps no timestamps of its own between packets (the granule
position only counts samples), so lost packets and the time before a leg's first packet are filled with
one-byte Opus packets — a TOC byte with no frame, which decoders conceal as 20 ms (RFC 6716
section 3.2.1) — and both leg files start at the moment the call was bridged. `mix_playback` then
decodes both, adds them and encodes the one playback file.
"""

from __future__ import annotations

import fractions
import logging
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from callserver.media.tones import FRAME_SAMPLES, SAMPLE_RATE

log = logging.getLogger(__name__)
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
MAX_FILL = 10 * 60 * SAMPLE_RATE // FRAME_SAMPLES  # never fill a gap longer than ten minutes
FILL_TOC = 0xF8  # CELT fullband 20 ms, mono, one frame: used before a leg's first packet


class LegRecording:
    """One leg's Opus packets into an Ogg/Opus file, without decoding them."""

    def __init__(self, path: Path, started: float) -> None:
        self.path = path
        self._started = started
        self._container: Any = av.open(str(path), "w", format="ogg")
        self._stream = self._container.add_stream("libopus", rate=SAMPLE_RATE, layout="mono")
        self._stream.time_base = TIME_BASE
        self._next_pts = 0  # in samples since the call was bridged
        self._ssrc: int | None = None
        self._first_ts = 0
        self._anchor = 0
        self._toc = FILL_TOC
        self.packets = 0

    def write(self, payload: bytes, ssrc: int, rtp_timestamp: int, arrival: float) -> None:
        """Add one received Opus payload; `arrival` is on the same clock as `started`."""
        if self._container is None or not payload:
            return
        if ssrc != self._ssrc:
            # First packet, or a new source (a transferred call): place it by its arrival time.
            self._ssrc, self._first_ts = ssrc, rtp_timestamp
            self._anchor = max(self._next_pts, round((arrival - self._started) * SAMPLE_RATE))
        pts = self._anchor + ((rtp_timestamp - self._first_ts) & 0xFFFFFFFF)
        if pts < self._next_pts:
            return  # late or repeated: Ogg cannot go back in time
        missing = min((pts - self._next_pts) // FRAME_SAMPLES, MAX_FILL)
        for _ in range(missing):
            self._mux(bytes((self._toc,)), self._next_pts)
        self._toc = payload[0] & 0xFC  # same mode and size, code 0: what the filler should claim
        self._mux(payload, pts)
        self.packets += 1

    def _mux(self, data: bytes, pts: int) -> None:
        packet = av.Packet(data)
        packet.stream = self._stream
        packet.pts = packet.dts = pts
        packet.time_base = TIME_BASE
        self._container.mux(packet)
        self._next_pts = pts + FRAME_SAMPLES

    def close(self) -> None:
        """Finish the file; safe to call twice."""
        container, self._container = self._container, None
        if container is not None:
            container.close()


def decode_mono(path: Path) -> npt.NDArray[np.float32]:
    """All of an audio file, decoded to 48 kHz mono float samples."""
    chunks: list[npt.NDArray[np.float32]] = []
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1).astype(np.float32, copy=False))
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)


def mix_playback(legs: list[Path], out: Path) -> Path:
    """Decode the legs, add them sample by sample (they share one timeline) and encode one Ogg/Opus file."""
    tracks = [decode_mono(path) for path in legs if path.exists() and path.stat().st_size]
    length = max((len(t) for t in tracks), default=0)
    mixed = np.zeros(length, dtype=np.float32)
    for track in tracks:
        mixed[: len(track)] += track
    np.clip(mixed, -1.0, 1.0, out=mixed)
    pcm = (mixed * 32767).astype(np.int16)
    partial = out.with_suffix(".partial")
    with av.open(str(partial), "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=SAMPLE_RATE, layout="mono")
        stream.bit_rate = 48_000
        for start in range(0, len(pcm), FRAME_SAMPLES):
            chunk = pcm[start : start + FRAME_SAMPLES]
            if len(chunk) < FRAME_SAMPLES:
                chunk = np.pad(chunk, (0, FRAME_SAMPLES - len(chunk)))
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = start
            frame.time_base = TIME_BASE
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    partial.replace(out)
    return out
