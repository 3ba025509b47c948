"""Python stand-ins for the widget and the softphone: real sockets and real aiortc peer connections.

They speak docs/signaling.md like the browser code does, for tests where a browser adds nothing.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import math
import time
from typing import Any, Protocol

import aiohttp
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from av import AudioFrame

from tests.stack import sign_in_form


class SiteKey(Protocol):
    @property
    def key(self) -> str: ...


class Server(Protocol):
    """Where a callserver runs: in the test's process (tests.stack.Stack) or in a subprocess."""

    @property
    def url(self) -> str: ...
    @property
    def shop_url(self) -> str: ...
    @property
    def site(self) -> SiteKey: ...


RATE = 48_000
SAMPLES = 960


class Tone(MediaStreamTrack):
    """A microphone that plays a sine tone, paced in real time."""

    kind = "audio"

    def __init__(self, hz: float) -> None:
        super().__init__()
        self.hz = hz
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += SAMPLES
            delay = self._start + self._pts / RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        samples = [
            round(8000 * math.sin(2 * math.pi * self.hz * (self._pts + i) / RATE)) for i in range(SAMPLES)
        ]
        frame = AudioFrame(format="s16", layout="mono", samples=SAMPLES)
        frame.planes[0].update(b"".join(s.to_bytes(2, "little", signed=True) for s in samples))
        frame.pts, frame.sample_rate, frame.time_base = self._pts, RATE, fractions.Fraction(1, RATE)
        return frame


async def offer(pc: RTCPeerConnection, hz: float) -> str:
    pc.addTrack(Tone(hz))
    await pc.setLocalDescription(await pc.createOffer())
    return str(pc.localDescription.sdp)


class Peer:
    """One socket (widget or operator) with the frames it received."""

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, session: aiohttp.ClientSession | None = None
    ) -> None:
        self.ws = ws
        self.session = session  # closed with the peer when it is the peer's own
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))

    async def receive(self, kind: str, within: float = 15) -> dict[str, Any]:
        """The next frame of type `kind`, skipping others."""
        deadline = time.monotonic() + within
        while True:
            message = await self.ws.receive(timeout=max(0.1, deadline - time.monotonic()))
            if message.type is not aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"socket closed while waiting for {kind}: {message}")
            data: dict[str, Any] = json.loads(message.data)
            if data["type"] == kind:
                return data

    async def fresh_connection(self) -> RTCPeerConnection:
        """A new peer connection for the next call, as the widget and softphone make one per call."""
        if self.pc.getTransceivers():
            await self.pc.close()
            self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        return self.pc

    async def send(self, **message: Any) -> None:
        await self.ws.send_json(message)

    async def close(self) -> None:
        await self.pc.close()
        await self.ws.close()
        if self.session is not None:
            await self.session.close()


async def shopper(
    session: aiohttp.ClientSession, stack: Server, token: str = "visitor-0001", address: str | None = None
) -> Peer:
    """A widget socket; `address` comes as X-Forwarded-For (a shopper there, if the server trusts it)."""
    ws = await session.ws_connect(
        f"{stack.url}/ws/widget?site={stack.site.key}&visitor={token}",
        origin=stack.shop_url,
        headers={"X-Forwarded-For": address} if address else None,
    )
    peer = Peer(ws)
    await peer.receive("hello")
    return peer


async def call(peer: Peer, hz: float = 440, page: str = "https://shop.example/p/1") -> str:
    """Place a call; returns its id once the server answered the offer."""
    await peer.send(
        type="call.offer", sdp=await offer(await peer.fresh_connection(), hz), context={"page": page}
    )
    answer = await peer.receive("call.answer")
    await peer.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    return str(answer["call_id"])


async def operator(stack: Server, email: str, online: bool = True) -> Peer:
    """A signed-in softphone (with a session and cookie jar of its own), optionally set online."""
    own = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    form = await sign_in_form(own, stack.url, "operator", email)
    async with own.post(f"{stack.url}/operator/login", data=form, allow_redirects=False) as response:
        assert response.status == 302, await response.text()
    ws = await own.ws_connect(f"{stack.url}/ws/operator")
    peer = Peer(ws, own)
    await peer.receive("hello")
    if online:
        await peer.send(type="presence.set", status="online")
        await peer.receive("presence")
    return peer


async def answer(peer: Peer, call_id: str, hz: float = 1000) -> None:
    await peer.send(type="call.accept", call_id=call_id, sdp=await offer(await peer.fresh_connection(), hz))
    reply = await peer.receive("call.answer")
    await peer.pc.setRemoteDescription(RTCSessionDescription(sdp=reply["sdp"], type="answer"))
    await peer.receive("call.connected")
