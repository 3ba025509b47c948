"""Truthful RTCP for a leg whose RTP the forwarder terminates (RFC 3550 sections 6.4 and A.1–A.8).

Each leg has its own reports: the forwarder is the receiver of what the browser sends (it reports the
loss and jitter it saw) and the sender of what the browser hears (packet and octet counts of what it
really sent), so browsers adapt to the hop they are on and RTT is measured per leg.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiortc.rtp import (
    RtcpPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
)

RTP_CLOCK = 48_000  # Opus always uses a 48 kHz RTP clock (RFC 7587 section 4.1)
NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900 to 1970


def ntp_now() -> int:
    """The 64-bit NTP timestamp of now (RFC 3550 section 4)."""
    now = time.time() + NTP_EPOCH_OFFSET
    return (int(now) << 32) | int((now % 1) * (1 << 32))


class ReceiveStats:
    """What arrives from one browser: RFC 3550 A.1 sequence bookkeeping and A.8 interarrival jitter."""

    def __init__(self) -> None:
        self.ssrc: int | None = None
        self.received = 0
        self.octets = 0
        self._base_seq = 0
        self._max_seq = 0
        self._cycles = 0
        self._jitter = 0.0  # in RTP clock units
        self._transit: float | None = None
        self._expected_prior = 0
        self._received_prior = 0
        # From the browser's last sender report, for LSR/DLSR (RFC 3550 section 6.4.1).
        self._last_sr = 0
        self._last_sr_at = 0.0

    def packet(self, ssrc: int, seq: int, timestamp: int, arrival: float, size: int) -> None:
        if self.ssrc != ssrc:
            # A new source (first packet, or the browser restarted its stream): start over.
            self.ssrc, self._base_seq, self._max_seq, self._cycles = ssrc, seq, seq, 0
            self._transit, self._expected_prior, self._received_prior = None, 0, 0
            self.received = 0
        delta = (seq - self._max_seq) & 0xFFFF
        if 0 < delta < 0x8000:
            if seq < self._max_seq:
                self._cycles += 1 << 16
            self._max_seq = seq
        self.received += 1
        self.octets += size
        transit = arrival * RTP_CLOCK - timestamp
        if self._transit is not None:
            d = abs(transit - self._transit)
            self._jitter += (d - self._jitter) / 16
        self._transit = transit

    @property
    def expected(self) -> int:
        return 0 if self.ssrc is None else self._cycles + self._max_seq - self._base_seq + 1

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.received)

    @property
    def jitter_ms(self) -> float:
        return self._jitter / RTP_CLOCK * 1000

    def sender_report(self, ntp: int, at: float) -> None:
        self._last_sr, self._last_sr_at = (ntp >> 16) & 0xFFFFFFFF, at

    def report_block(self, at: float) -> RtcpReceiverInfo | None:
        """The report block about this source, or None before its first packet (RFC 3550 A.3)."""
        if self.ssrc is None:
            return None
        expected = self.expected
        expected_interval = expected - self._expected_prior
        received_interval = self.received - self._received_prior
        self._expected_prior, self._received_prior = expected, self.received
        lost_interval = expected_interval - received_interval
        fraction = (
            0 if expected_interval <= 0 or lost_interval <= 0 else (lost_interval << 8) // expected_interval
        )
        dlsr = int((at - self._last_sr_at) * 65536) if self._last_sr else 0
        return RtcpReceiverInfo(
            ssrc=self.ssrc,
            fraction_lost=min(fraction, 255),
            packets_lost=min(self.lost, 0x7FFFFF),
            highest_sequence=(self._cycles + self._max_seq) & 0xFFFFFFFF,
            jitter=int(self._jitter),
            lsr=self._last_sr,
            dlsr=dlsr,
        )


@dataclass
class RemoteView:
    """What the browser reports about the stream the forwarder sends it."""

    fraction_lost: float | None = None
    packets_lost: int | None = None
    jitter_ms: float | None = None
    rtt_ms: float | None = None


def compound_report(
    ssrc: int, cname: bytes, sent: tuple[int, int, int] | None, block: RtcpReceiverInfo | None
) -> bytes:
    """SR (or RR when nothing was sent yet) plus SDES CNAME, as RFC 3550 section 6.1 requires.

    `sent` is (RTP timestamp that corresponds to now, packet count, octet count).
    """
    reports = [block] if block is not None else []
    first: RtcpSrPacket | RtcpRrPacket
    if sent is None:
        first = RtcpRrPacket(ssrc=ssrc, reports=reports)
    else:
        rtp_timestamp, packets, octets = sent
        info = RtcpSenderInfo(
            ntp_timestamp=ntp_now(),
            rtp_timestamp=rtp_timestamp & 0xFFFFFFFF,
            packet_count=packets & 0xFFFFFFFF,
            octet_count=octets & 0xFFFFFFFF,
        )
        first = RtcpSrPacket(ssrc=ssrc, sender_info=info, reports=reports)
    sdes = RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=ssrc, items=[(1, cname)])])
    return bytes(first) + bytes(sdes)


def read_reports(data: bytes, own_ssrc: int, stats: ReceiveStats, remote: RemoteView, at: float) -> None:
    """Take in a browser's compound RTCP: its SR (for our LSR/DLSR) and its blocks about our stream."""
    try:
        packets = RtcpPacket.parse(data)
    except ValueError:
        return
    now_mid = (ntp_now() >> 16) & 0xFFFFFFFF
    for packet in packets:
        if isinstance(packet, RtcpSrPacket):
            stats.sender_report(packet.sender_info.ntp_timestamp, at)
        if isinstance(packet, RtcpSrPacket | RtcpRrPacket):
            for block in packet.reports:
                if block.ssrc != own_ssrc:
                    continue
                remote.fraction_lost = round(block.fraction_lost / 256, 4)
                remote.packets_lost = block.packets_lost
                remote.jitter_ms = round(block.jitter / RTP_CLOCK * 1000, 1)
                if block.lsr:
                    # RTT = arrival - LSR - DLSR, in 1/65536 s (RFC 3550 section 6.4.1).
                    rtt = ((now_mid - block.lsr - block.dlsr) & 0xFFFFFFFF) / 65536
                    if rtt < 60:
                        remote.rtt_ms = round(rtt * 1000, 1)
