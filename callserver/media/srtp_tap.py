"""A tap below aiortc: one leg's SRTP packets in and out, once aiortc has done ICE and DTLS.

aiortc still negotiates the leg (SDP, ICE, DTLS-SRTP keys), but its RTP sender and receiver are
kept idle: the tap takes every RTP packet as it comes off the socket, unprotects it with the leg's
own SRTP session (RFC 3711) and hands the plain packet on; what the owner sends is protected with the
leg's outbound session and written straight to the selected ICE pair.

Hooks (all on instances, all removed by `uninstall()`):
- aioice `StunProtocol.datagram_received` of each local candidate, once the SRTP keys exist: the fast
  path, straight from the event loop's datagram callback. aioice would first try to parse every
  datagram as STUN (and fail, raising ValueError: ~2 µs a packet); SRTP is told apart by its first
  byte (RFC 7983), and everything else still takes aioice's way.
- aioice `Connection.data_received`: SRTP that came in before the keys, before aioice's queue and the
  DTLS task.
- `RTCDtlsTransport._handle_rtp_data` / `_handle_rtcp_data`: the packets that reached the queue before
  the keys were there (the DTLS peer may send SRTP right after its Finished), and all RTCP.
- `RTCRtpSender.send` and `RTCRtpReceiver.receive` become no-ops: aiortc must never send RTP or RTCP
  on the SSRC the tap owns (its sequence numbers would jump back and browsers drop them as replays),
  and its receiver would otherwise start a decoder thread and a jitter buffer for nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pylibsrtp
from aiortc import RTCPeerConnection, RTCRtpTransceiver
from aiortc.rtp import is_rtcp
from pylibsrtp._binding import ffi, lib

log = logging.getLogger(__name__)

OnRtp = Callable[[bytes, float], None]
"""Called with a plain RTP packet and its arrival time (seconds, `loop.time()`)."""
OnRtcp = Callable[[bytes], None]
"""Called with a plain compound RTCP packet."""


MAX_PACKET = 1500  # bytes of RTP the fast calls take, as pylibsrtp's own buffer (no browser sends more)
Crypt = Callable[[bytes], bytes]


def _srtp_call(session: pylibsrtp.Session, func: Any) -> Crypt:
    """`session.protect` or `.unprotect` (by `func`, libsrtp's), without pylibsrtp's per-call work.

    pylibsrtp allocates a length cell and copies through cffi buffer slices on every packet: ~2 µs of
    each of the forwarder's two SRTP calls a packet on this host, a quarter of what libsrtp itself
    takes. Here the buffer and the length cell are allocated once per leg and direction, and the
    result is read back with `ffi.unpack`. Raises `pylibsrtp.Error` as pylibsrtp does (and for a
    packet too long for the buffer).
    """
    srtp = session._srtp  # the session's own cell: holding it keeps libsrtp's session alive
    buffer = ffi.new("char[]", MAX_PACKET + pylibsrtp.SRTP_MAX_TRAILER_LEN)
    length = ffi.new("int *")
    memmove, unpack = ffi.memmove, ffi.unpack

    def crypt(data: bytes) -> bytes:
        size = len(data)
        if size > MAX_PACKET:
            raise pylibsrtp.Error("packet is too long")
        memmove(buffer, data, size)
        length[0] = size
        status = func(srtp[0], buffer, length)
        if status:
            pylibsrtp._srtp_assert(status)  # type: ignore[no-untyped-call]
        result: bytes = unpack(buffer, length[0])
        return result

    return crypt


async def _idle(*args: object, **kwargs: object) -> None:
    """Stands in for aiortc's `RTCRtpSender.send` and `RTCRtpReceiver.receive`."""


class SrtpTap:
    """Raw SRTP access to the audio transceiver of one peer connection."""

    def __init__(self, pc: RTCPeerConnection, on_rtp: OnRtp, on_rtcp: OnRtcp) -> None:
        self.pc = pc
        self._on_rtp = on_rtp
        self._on_rtcp = on_rtcp
        self.transceiver: RTCRtpTransceiver | None = None
        self._dtls: Any = None
        self._connection: Any = None
        self._loop_time: Callable[[], float] = lambda: 0.0
        # The SRTP sessions are kept here once the keys exist, so that they stay alive while in use
        # even if aiortc drops its own references while closing.
        self._rx: pylibsrtp.Session | None = None
        self._tx: pylibsrtp.Session | None = None
        self._unprotect: Crypt | None = None  # the fast calls on those sessions (`_srtp_call`)
        self._protect: Crypt | None = None
        self._protocols: list[Any] = []  # aioice protocols whose datagrams come the fast way
        # Where packets go, looked up again only when aioice nominates another pair.
        self._pair: Any = None
        self._sendto: Callable[[bytes, Any], None] | None = None
        self._remote: Any = None
        self._relayed: bool | None = None  # whether the pair last sent on goes through TURN
        self.packets_sent = 0
        self.bytes_sent = 0
        self.unprotect_failures = 0

    def install(self, transceiver: RTCRtpTransceiver) -> None:
        """Hook in; call after `setRemoteDescription`, before ICE can deliver the first packet."""
        import asyncio

        self._loop_time = asyncio.get_running_loop().time
        self.transceiver = transceiver
        self._dtls = transceiver.receiver.transport
        self._connection = self._dtls.transport._connection
        self._connection.data_received = self._datagram
        self._dtls._handle_rtp_data = self._queued_rtp
        self._dtls._handle_rtcp_data = self._queued_rtcp
        transceiver.sender.send = _idle  # type: ignore[method-assign]
        transceiver.receiver.receive = _idle  # type: ignore[method-assign]

    def uninstall(self) -> None:
        """Give the transports back to aiortc (before it closes them); safe to call twice."""
        for owner, name in (
            (self._connection, "data_received"),
            (self._dtls, "_handle_rtp_data"),
            (self._dtls, "_handle_rtcp_data"),
        ):
            if owner is not None and name in vars(owner):
                delattr(owner, name)
        for protocol in self._protocols:
            if "datagram_received" in vars(protocol):
                del protocol.datagram_received
        self._protocols = []
        self._on_rtp = self._on_rtcp = _drop
        self._connection = None
        self._pair = self._sendto = self._remote = None

    def release(self) -> None:
        """Once aiortc has closed the peer connection: let go of its DTLS connection and SRTP sessions.

        An aiortc peer connection is a web of reference cycles that only Python's full collection
        frees, and that runs when such garbage reaches a quarter of the long-lived heap: with it waited
        the C memory under each leg (OpenSSL's DTLS connection, libsrtp's two sessions), ~100 KB a leg,
        so the RSS of a server whose calls come and go climbed until that point. Dropped here, that
        memory goes back as the call ends.
        """
        dtls = self._dtls
        if dtls is not None:
            dtls._rx_srtp = dtls._tx_srtp = dtls._ssl = None
        self._rx = self._tx = self._dtls = None
        self._protect = self._unprotect = None

    @property
    def ssrc(self) -> int:
        """The SSRC aiortc announced in its answer for what this leg sends; the tap owns it."""
        assert self.transceiver is not None
        ssrc: int = self.transceiver.sender._ssrc
        return ssrc

    @property
    def connected(self) -> bool:
        return self._keys() and self._connection is not None

    def _keys(self) -> bool:
        if self._tx is None and self._dtls is not None and self._dtls._tx_srtp is not None:
            self._rx, self._tx = self._dtls._rx_srtp, self._dtls._tx_srtp
            self._unprotect = _srtp_call(self._rx, lib.srtp_unprotect)
            self._protect = _srtp_call(self._tx, lib.srtp_protect)
            self._fast_path()
        return self._tx is not None

    def _fast_path(self) -> None:
        """Take SRTP datagrams straight from each local candidate's protocol (TURN's too)."""
        if self._connection is None:
            return
        for protocol in self._connection._protocols:
            if "datagram_received" not in vars(protocol):
                protocol.datagram_received = self._fast_datagram(protocol)
                self._protocols.append(protocol)

    def _fast_datagram(self, protocol: Any) -> Callable[[bytes, Any], None]:
        aioice_way = type(protocol).datagram_received.__get__(protocol)
        unprotect, clock = self._unprotect, self._loop_time
        assert unprotect is not None

        def datagram_received(data: bytes, addr: Any) -> None:
            # SRTP: first byte 128..191 (RFC 7983); SRTCP: second byte 192..223 (RFC 5761 section 4).
            if len(data) > 1 and 127 < data[0] < 192 and not 191 < data[1] < 224:
                try:
                    plain = unprotect(data)
                except pylibsrtp.Error:
                    self.unprotect_failures += 1
                    return
                self._on_rtp(plain, clock())
            else:
                aioice_way(data, addr)

        return datagram_received

    # Inbound -------------------------------------------------------------------------------------

    def _datagram(self, data: bytes, component: int) -> None:
        # SRTP and SRTCP start with 0b10 (RFC 7983 demultiplexing: 128..191); DTLS and anything else
        # take aioice's queue to the DTLS transport as usual.
        first = data[0]
        if 127 < first < 192 and not is_rtcp(data) and (self._unprotect is not None or self._keys()):
            assert self._unprotect is not None
            try:
                plain = self._unprotect(data)
            except pylibsrtp.Error:
                self.unprotect_failures += 1
                return
            self._on_rtp(plain, self._loop_time())
            return
        type(self._connection).data_received(self._connection, data, component)

    async def _queued_rtp(self, data: bytes, arrival_time_ms: int) -> None:
        self._on_rtp(data, self._loop_time())

    async def _queued_rtcp(self, data: bytes) -> None:
        self._on_rtcp(data)

    # Outbound ------------------------------------------------------------------------------------

    def send_rtp(self, packet: bytes) -> bool:
        """Protect and send one plain RTP packet; False while the leg is not connected."""
        protect = self._protect
        if protect is None:
            if not self._keys():
                return False
            protect = self._protect
        return self._send(protect(packet))  # type: ignore[misc]

    def send_rtcp(self, packet: bytes) -> bool:
        if self._tx is None and not self._keys():
            return False
        return self._send(self._tx.protect_rtcp(packet))  # type: ignore[union-attr]

    def _send(self, data: bytes) -> bool:
        connection = self._connection
        if connection is None:
            return False
        pair = connection._nominated.get(1)
        if pair is not self._pair:
            if pair is None:
                return False
            self._pair, self._sendto, self._remote = pair, pair.protocol.transport.sendto, pair.remote_addr
            self._relayed = _through_turn(pair)
        # aioice's own `send_data` is a coroutine around exactly this call.
        self._sendto(data, self._remote)  # type: ignore[misc]
        self.packets_sent += 1
        self.bytes_sent += len(data)
        return True

    def relayed(self) -> bool | None:
        """Whether the selected ICE pair goes through TURN."""
        connection = self._connection
        if connection is not None:
            for pair in connection._nominated.values():
                return _through_turn(pair)
        # The browser's hang-up may close ICE before the call's figures are read: the last pair sent on.
        return self._relayed


def _through_turn(pair: Any) -> bool:
    return "relay" in (pair.local_candidate.type, pair.remote_candidate.type)


def _drop(*args: object) -> None:
    """What a tap's callbacks become once it is uninstalled."""
