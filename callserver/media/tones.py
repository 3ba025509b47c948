"""The waiting tone and hold tone a shopper hears, as ready-made 20 ms frames of 48 kHz stereo PCM."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

SAMPLE_RATE = 48_000
FRAME_SAMPLES = 960  # 20 ms, Opus's usual frame
CHANNELS = 2
SILENCE = bytes(FRAME_SAMPLES * CHANNELS * 2)

# (frequency Hz or 0 for silence, seconds). The ring-back is the European 425 Hz, 1 s on 4 s off;
# the hold tone is a soft two-note chime every three seconds.
RINGBACK: Sequence[tuple[float, float]] = ((425.0, 1.0), (0.0, 4.0))
HOLD: Sequence[tuple[float, float]] = ((523.25, 0.3), (659.25, 0.3), (0.0, 2.4))


class TonePattern:
    """A looping pattern of tones, cut into frames once so that playing it costs nothing per call."""

    def __init__(self, pattern: Sequence[tuple[float, float]], volume: float = 0.2) -> None:
        samples: list[int] = []
        for frequency, seconds in pattern:
            count = round(seconds * SAMPLE_RATE)
            fade = min(480, count // 2)  # 10 ms ramps: no clicks at the edges
            for i in range(count):
                if frequency == 0:
                    value = 0
                else:
                    ramp = min(1.0, i / fade, (count - i) / fade) if fade else 1.0
                    sine = math.sin(2 * math.pi * frequency * i / SAMPLE_RATE)
                    value = round(32767 * volume * ramp * sine)
                samples.extend((value, value))
        data = struct.pack(f"<{len(samples)}h", *samples)
        size = FRAME_SAMPLES * CHANNELS * 2
        self.frames = [data[i : i + size].ljust(size, b"\0") for i in range(0, len(data), size)]

    def frame(self, index: int) -> bytes:
        """The PCM of frame `index` of the endless loop."""
        return self.frames[index % len(self.frames)]


def opus_packets(pcm_frames: Sequence[bytes], channels: int = CHANNELS, bitrate: int = 32_000) -> list[bytes]:
    """Encode 20 ms frames of s16 PCM into as many Opus packets, once (the forwarder sends them as-is).

    The encoder is flushed so that the list has one packet per frame and loops without a gap.
    """
    import av

    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = SAMPLE_RATE
    encoder.layout = "stereo" if channels == 2 else "mono"
    encoder.format = "s16"
    encoder.bit_rate = bitrate
    packets: list[bytes] = []
    for index, pcm in enumerate(pcm_frames):
        frame = av.AudioFrame(format="s16", layout=encoder.layout.name, samples=FRAME_SAMPLES)
        frame.planes[0].update(pcm)
        frame.sample_rate = SAMPLE_RATE
        frame.pts = index * FRAME_SAMPLES
        packets.extend(bytes(p) for p in encoder.encode(frame))
    packets.extend(bytes(p) for p in encoder.encode(None))
    return packets[: len(pcm_frames)]
