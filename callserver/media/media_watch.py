"""The no-media watchdog: a leg from which nothing arrives any more is reported gone in seconds.

A browser whose network vanished (link down for good, a phone out of coverage) closes nothing: ICE
consent freshness (RFC 7675) fails its peer connection only after ~30 s, and meanwhile the other side
would hear silence without being told. So each engine polls, about once a second, a counter of what
arrived on each leg (the RTP octets the forwarder counts anyway plus its RTCP packets, about one a
second; the DTLS transport's datagram count in the transcoding engine) — nothing is added per RTP
packet — and a leg whose counter stood still for `NO_MEDIA_AFTER` seconds is reported gone
(`LegFailed`: the call waits `resume_window` for it); when the counter moves again on that same leg
(ICE consent recovered before any re-offer), it is reported back (`LegBack`).

Why 4 s is safe with mute and hold: both browsers keep sending RTP 50 times a second in both. Mute in
the widget and the softphone is `track.enabled = false`: a disabled track renders silence (Media Capture
and Streams), which the browser goes on encoding and sending; Opus DTX — a packet only every 400 ms in
silence — is not negotiated (aiortc's answer carries no `usedtx=1`), and even with it 400 ms is far
below 4 s. Hold is the server's doing (the hold tone towards the shopper, silence towards the
operator): neither browser changes what it sends. tests/test_network_browser.py holds and mutes both
Chromiums for twice this long and checks that nobody was reported gone. Something that stops a
sender on purpose (`replaceTrack(null)`, direction `inactive`) would leave only RTCP, which Chrome sends
for audio every 2.5–7.5 s (5 s × 0.5–1.5): whoever adds such a thing must raise this above 7.5 s.
"""

from __future__ import annotations

NO_MEDIA_AFTER = 4.0  # seconds without a single packet from a leg that had sent some (see above)
WATCH_EVERY = 1.0  # seconds between polls of the counters


class MediaWatch:
    """Whether packets still arrive on one leg, judged from a counter of them polled now and then.

    A leg is watched from its first packet on: one still connecting (or never answered) is not gone.
    """

    def __init__(self, quiet_after: float = NO_MEDIA_AFTER) -> None:
        self.quiet_after = quiet_after
        self.gone = False
        self._count = 0
        self._moved_at: float | None = None  # when the counter last moved; None before the first packet

    def poll(self, count: int, now: float) -> bool | None:
        """Take the counter's value at `now` (loop time, seconds).

        False when the leg has just gone quiet, True when packets arrive again on a leg that was
        reported quiet, None when nothing changed.
        """
        if count != self._count:
            self._count, self._moved_at = count, now
            if self.gone:
                self.gone = False
                return True
            return None
        if not self.gone and self._moved_at is not None and now - self._moved_at >= self.quiet_after:
            self.gone = True
            return False
        return None
