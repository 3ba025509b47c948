"""Call recordings: each leg's Opus packets written into Ogg as they arrive, mixed once after the call.

The live path never decodes: `LegRecording` puts the packets the forwarder relays into Ogg pages itself
(RFC 7845 encapsulation over RFC 3533 pages; `OggOpusWriter`), about one page a second, so a packet
costs the forwarder a list append — muxing each packet through PyAV/FFmpeg cost ~6 µs, a tenth of all
the forwarder did per packet. Ogg keeps no timestamps of its own between packets (the granule position
only counts samples), so lost packets and the time before a leg's first packet are filled with
one-byte Opus packets — a TOC byte with no frame, which decoders conceal as 20 ms (RFC 6716
section 3.2.1) — and both leg files start at the moment the call was bridged. `mix_playback` then
decodes both (PyAV), adds them and encodes the one playback file, and gives the memory it freed back to
the system (`give_back_free_memory`).
"""

from __future__ import annotations

import ctypes
import fractions
import functools
import logging
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import numpy.typing as npt

from callserver.media.tones import FRAME_SAMPLES, SAMPLE_RATE

log = logging.getLogger(__name__)
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
MAX_FILL = 10 * 60 * SAMPLE_RATE // FRAME_SAMPLES  # never fill a gap longer than ten minutes
FILL_TOC = 0xF8  # CELT fullband 20 ms, mono, one frame: used before a leg's first packet
PAGE_PACKETS = 50  # packets per Ogg page: one second of 20 ms packets (at most 255 segments a page)
PAGE_HEADER = struct.Struct("<4sBBqIII")  # capture pattern … page CRC, before the segment count
_BIT_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def ogg_crc(page: bytes) -> int:
    """The CRC of an Ogg page (RFC 3533 section 6: polynomial 0x04C11DB7, not reflected, no init or
    final XOR), computed by zlib's reflected CRC-32 on the bit-reversed bytes: the same polynomial
    read the other way round, so all the work is done in C."""
    reflected = zlib.crc32(page.translate(_BIT_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


class OggOpusWriter:
    """Opus packets into Ogg pages (RFC 7845): the identification and comment headers, then audio pages."""

    def __init__(self, file: BinaryIO, serial: int, channels: int = 1) -> None:
        self._file = file
        self._serial = serial
        self._sequence = 0
        # OpusHead: version 1, channels, no pre-skip (the packets are a browser's, mid-stream: there
        # is no encoder start-up to skip), 48 kHz, no gain, channel mapping family 0.
        head = b"OpusHead" + struct.pack("<BBHIhB", 1, channels, 0, SAMPLE_RATE, 0, 0)
        vendor = b"callserver"
        tags = b"OpusTags" + struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", 0)
        self._page([head], 0, 0x02)  # beginning of stream
        self._page([tags], 0, 0)

    def pages(self, packets: list[bytes], granule: int, last: bool = False) -> None:
        """`packets` (each under 255 × 255 bytes) on pages of their own; `granule`: the sample count at
        the end of the last one (RFC 7845 section 4)."""
        for start in range(0, max(len(packets), 1), PAGE_PACKETS):
            chunk = packets[start : start + PAGE_PACKETS]
            end = start + PAGE_PACKETS >= len(packets)
            # Only the last page knows its granule exactly; earlier ones count 20 ms per packet back.
            at = granule - FRAME_SAMPLES * (len(packets) - start - len(chunk))
            self._page(chunk, at, 0x04 if last and end else 0)

    def _page(self, packets: list[bytes], granule: int, flags: int) -> None:
        lacing = bytearray()
        for packet in packets:
            lacing += b"\xff" * (len(packet) // 255)
            lacing.append(len(packet) % 255)
        header = PAGE_HEADER.pack(b"OggS", 0, flags, granule, self._serial, self._sequence, 0)
        page = b"".join((header, bytes((len(lacing),)), lacing, *packets))
        self._sequence += 1
        self._file.write(page[:22] + ogg_crc(page).to_bytes(4, "little") + page[26:])


class LegRecording:
    """One leg's Opus packets into an Ogg/Opus file, without decoding them.

    `write` is on the forwarder's per-packet path: it places the packet on the timeline and keeps it;
    every `PAGE_PACKETS` packets (about once a second) the kept ones are written as one page.
    """

    def __init__(self, path: Path, started: float) -> None:
        self.path = path
        self._started = started
        self._file: BinaryIO | None = open(path, "wb")  # noqa: SIM115 (closed by `close`)
        self._ogg = OggOpusWriter(self._file, serial=zlib.crc32(path.name.encode()))
        self._pending: list[bytes] = []
        self._next_pts = 0  # in samples since the call was bridged
        self._ssrc: int | None = None
        self._last_ts = 0  # RTP timestamp and place on the timeline of the newest packet of the source
        self._last_pts = 0
        self._toc = FILL_TOC
        self.packets = 0

    def write(self, payload: bytes, ssrc: int, rtp_timestamp: int, arrival: float) -> None:
        """Add one received Opus payload; `arrival` is on the same clock as `started`."""
        if self._file is None or not payload:
            return
        if ssrc != self._ssrc:
            # First packet, or a new source (a transferred call): place it by its arrival time.
            self._ssrc, self._last_ts = ssrc, rtp_timestamp
            self._last_pts = max(self._next_pts, round((arrival - self._started) * SAMPLE_RATE))
        step = (rtp_timestamp - self._last_ts) & 0xFFFFFFFF
        if step >= 0x80000000:
            # Earlier than a packet already placed (reordered): modulo 2^32 it would read as ~12 hours
            # ahead, filled with ten minutes of silence (RFC 3550 section 5.1: timestamps wrap).
            return
        pts = self._last_pts + step
        self._last_ts, self._last_pts = rtp_timestamp, pts
        if pts < self._next_pts:
            return  # late or repeated: Ogg cannot go back in time
        missing = (pts - self._next_pts) // FRAME_SAMPLES
        if missing:
            filled = min(missing, MAX_FILL)
            self._pending += [bytes((self._toc,))] * filled
            self._next_pts += filled * FRAME_SAMPLES
            if missing > filled:
                self.flush()  # a page ends before the jump: each page's granule stays exact
        self._toc = payload[0] & 0xFC  # same mode and size, code 0: what the filler should claim
        self._pending.append(payload)
        self._next_pts = pts + FRAME_SAMPLES
        self.packets += 1
        if len(self._pending) >= PAGE_PACKETS:
            self.flush()

    def flush(self, last: bool = False) -> None:
        """Write the packets kept so far as Ogg pages (the last page of the file with `last`)."""
        if self._file is not None and (self._pending or last):
            pending, self._pending = self._pending, []
            self._ogg.pages(pending, self._next_pts, last)

    def close(self) -> None:
        """Finish the file; safe to call twice."""
        self.flush(last=True)
        file, self._file = self._file, None
        if file is not None:
            file.close()


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
    try:
        return _mix(legs, out)
    finally:
        give_back_free_memory()


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim  # glibc's; musl and macOS have none
    except (OSError, AttributeError):
        return None
    return trim


def give_back_free_memory() -> None:
    """Return the C heap's free pages to the system (glibc `malloc_trim`), where there is one.

    Why after each mix: a mix allocates whole-call PCM and codec buffers in a worker thread, and glibc
    keeps what is freed in that thread's arena; it also raises its mmap threshold after the first large
    free (up to 32 MB), so later calls' PCM lands in the arenas too. Measured across consecutive calls
    (benchmarks/bridge.py --mode rss), the memory in use stayed flat while the free memory glibc held grew
    by ~8 MB between the 100th and the 300th call: RSS that looked like a leak.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _mix(legs: list[Path], out: Path) -> Path:
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
