"""Python stand-ins for the widget and the softphone: one socket client, with real aiortc peer connections.

They speak docs/signaling.md like the browser code does, for tests where a browser adds nothing. Every
frame a socket receives is kept, in order, until the test takes it: `receive("chat.message")` takes the
first matching frame and leaves the others, `frames_of()` and `drain()` show what else came. `Sockets`
opens shoppers and operators on one server and closes them all, newest first, whether the test passed or
not (a `tests.stack.Stack` closes its own before the server stops).
"""

from __future__ import annotations

import asyncio
import fractions
import json
import math
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, suppress
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import aiohttp
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from av import AudioFrame

from tests.signing_in import PASSWORD, sign_in_form

Frame = dict[str, Any]
Where = Callable[[Frame], bool]
AddOperator = Callable[[str, str], Awaitable[object]]
"""Adds an operator account (email, display name) to the server's store."""

S = TypeVar("S", bound="Socket")

RATE = 48_000
SAMPLES = 960  # 20 ms, as browsers send Opus


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


class Tone(MediaStreamTrack):
    """A microphone that plays a sine tone, paced in real time."""

    kind = "audio"

    def __init__(self, hz: float) -> None:
        super().__init__()
        if not float(hz).is_integer():
            raise ValueError(f"a tone of {hz} Hz does not fit a whole number of periods in a second")
        self.hz = hz
        # One second holds a whole number of periods, so 20 ms frames are slices of it, computed once.
        self._second = b"".join(
            round(8000 * math.sin(2 * math.pi * hz * i / RATE)).to_bytes(2, "little", signed=True)
            for i in range(RATE)
        )
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
        at = self._pts % RATE * 2
        frame = AudioFrame(format="s16", layout="mono", samples=SAMPLES)
        frame.planes[0].update(self._second[at : at + SAMPLES * 2])
        frame.pts, frame.sample_rate, frame.time_base = self._pts, RATE, fractions.Fraction(1, RATE)
        return frame


def new_peer_connection() -> RTCPeerConnection:
    """A peer connection with host candidates only (`iceServers=None` would mean Google's STUN)."""
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def offer(pc: RTCPeerConnection, hz: float = 440) -> str:
    """The SDP offer of `pc` sending a tone of `hz`."""
    pc.addTrack(Tone(hz))
    await pc.setLocalDescription(await pc.createOffer())
    return str(pc.localDescription.sdp)


def _matches(frame: Frame, type: str, where: Where | None) -> bool:
    return frame.get("type") == type and (where is None or where(frame))


def _short(frame: Frame, limit: int = 160) -> str:
    text = json.dumps(frame, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Socket:
    """One signaling socket; every frame it receives is kept, in order, until the test takes it.

    `pc` is the peer connection of its current call (a new one per call, as the browser code makes).
    """

    hello: Frame

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, session: aiohttp.ClientSession) -> None:
        self.ws = ws
        self.session = session  # the socket's own, closed with it
        self.pc = self._new_peer_connection()
        self.ending: aiohttp.WSMessage | None = None  # the message that ended the socket
        self._frames: list[Frame] = []
        self._arrived = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())
        self._closed = False

    async def _read(self) -> None:
        try:
            while self.ending is None:
                message = await self.ws.receive()
                async with self._arrived:
                    if message.type is aiohttp.WSMsgType.TEXT:
                        self._frames.append(json.loads(message.data))
                    elif message.type is not aiohttp.WSMsgType.BINARY:  # close, closing, closed, error
                        self.ending = message
                    self._arrived.notify_all()
        finally:
            if self.ending is None:  # the reader failed: wake waiters, they report it
                self.ending = aiohttp.WSMessage(aiohttp.WSMsgType.ERROR, None, "the reader stopped")
                async with self._arrived:
                    self._arrived.notify_all()

    async def send(self, frame: Frame) -> None:
        await self.ws.send_json(frame)

    async def receive(self, type: str, where: Where | None = None, within: float = 15) -> Frame:
        """Take the first frame of `type` (that `where` accepts), received so far or within `within` seconds.

        The frames before and after it stay; the AssertionError on a timeout lists them.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        async with self._arrived:
            while (found := self._take(type, where)) is None:
                left = deadline - loop.time()
                if left <= 0 or self.ending is not None:
                    raise AssertionError(self._missing(type, within))
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), left)
            return found

    async def nothing(self, type: str, within: float = 0.5, where: Where | None = None) -> None:
        """Assert that no frame of `type` (that `where` accepts) arrives within `within` seconds."""
        await asyncio.sleep(within)
        unexpected = [f for f in self._frames if _matches(f, type, where)]
        assert not unexpected, f"unexpected {type!r} frame: {_short(unexpected[0])}"

    def frames_of(self, type: str) -> list[Frame]:
        """The frames of `type` received and not yet taken, oldest first; they stay."""
        return [f for f in self._frames if f.get("type") == type]

    def drain(self) -> list[Frame]:
        """Take every frame received so far, oldest first."""
        frames, self._frames = self._frames, []
        return frames

    async def closed(self, within: float = 10) -> aiohttp.WSMessage:
        """The message that ended the socket once the server closed it (its code is in `ws.close_code`)."""
        await asyncio.wait_for(asyncio.shield(self._reader), within)
        assert self.ending is not None
        return self.ending

    async def offer(self, hz: float = 440) -> str:
        """An offer from a new peer connection sending a tone (the browser code makes one per call)."""
        if self.pc.getTransceivers():
            await self.pc.close()
            self.pc = self._new_peer_connection()
        return await offer(self.pc, hz)

    async def apply_answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    async def hears_audio(self, within: float = 15) -> None:
        """Wait until audio frames arrive from the server on the current call's peer connection."""
        track = await asyncio.wait_for(asyncio.shield(self._track), within)
        for _ in range(5):
            await asyncio.wait_for(track.recv(), within)

    async def close(self) -> None:
        """Close the peer connection, the socket and its session; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await self.pc.close()
        await self.ws.close()
        self._reader.cancel()
        with suppress(asyncio.CancelledError):
            await self._reader
        await self.session.close()

    def _new_peer_connection(self) -> RTCPeerConnection:
        pc = new_peer_connection()
        track: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
        self._track = track

        @pc.on("track")
        def on_track(received: MediaStreamTrack) -> None:
            if not track.done():
                track.set_result(received)

        return pc

    def _take(self, type: str, where: Where | None) -> Frame | None:
        for i, frame in enumerate(self._frames):
            if _matches(frame, type, where):
                return self._frames.pop(i)
        return None

    def _missing(self, type: str, within: float) -> str:
        if self.ending is None:
            why = f"no {type!r} frame within {within}s"
        else:
            why = f"no {type!r} frame before the socket ended ({self.ws.close_code}, {self.ending.extra!r})"
        seen = "\n  ".join(_short(f) for f in self._frames[-20:]) or "none"
        return f"{why}; frames received and not taken ({len(self._frames)}):\n  {seen}"


class Widget(Socket):
    """A shopper's widget socket on the shop's origin."""

    async def call(self, hz: float = 440, page: str = "https://shop.example/p/1") -> str:
        """Place a call; returns its id once the server answered the offer."""
        await self.send({"type": "call.offer", "sdp": await self.offer(hz), "context": {"page": page}})
        answer = await self.receive("call.answer")
        await self.apply_answer(answer["sdp"])
        return str(answer["call_id"])


class Softphone(Socket):
    """A signed-in operator's (or owner's) softphone socket."""

    @property
    def account_id(self) -> int:
        account_id: int = self.hello["operator"]["id"]
        return account_id

    async def online(self) -> None:
        await self.send({"type": "presence.set", "status": "online"})
        await self.receive("presence", lambda f: f["status"] == "online")

    async def answer(self, call_id: str, hz: float = 1000) -> None:
        """Accept a ringing call and wait until both legs are connected."""
        await self.send({"type": "call.accept", "call_id": call_id, "sdp": await self.offer(hz)})
        reply = await self.receive("call.answer", lambda f: f["call_id"] == call_id)
        await self.apply_answer(reply["sdp"])
        await self.receive("call.connected", lambda f: f["call_id"] == call_id)


class Sockets:
    """Opens shoppers' and operators' sockets on one server; `close()` closes them all, newest first."""

    def __init__(self, server: Server, add_operator: AddOperator | None = None) -> None:
        self.server = server
        self._add_operator = add_operator
        self._opened = AsyncExitStack()

    async def shopper(self, token: str = "visitor-0001", address: str | None = None) -> Widget:
        """A widget socket; `address` comes as X-Forwarded-For (a shopper there, if the server trusts it)."""
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(
                f"{self.server.url}/ws/widget?site={self.server.site.key}&visitor={token}",
                origin=self.server.shop_url,
                headers={"X-Forwarded-For": address} if address else None,
            )
        except BaseException:
            await session.close()
            raise
        return await self._opening(Widget(ws, session))

    async def softphone(self, email: str, password: str = PASSWORD, online: bool = False) -> Softphone:
        """The softphone of an existing account (signed in with its own cookie jar), optionally online."""
        session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        try:
            form = await sign_in_form(session, self.server.url, "operator", email, password)
            login = f"{self.server.url}/operator/login"
            async with session.post(login, data=form, allow_redirects=False) as response:
                assert response.status == 302, await response.text()
            ws = await session.ws_connect(f"{self.server.url}/ws/operator")
        except BaseException:
            await session.close()
            raise
        phone = await self._opening(Softphone(ws, session))
        if online:
            await phone.online()
        return phone

    async def operator(self, email: str, name: str = "", online: bool = False) -> Softphone:
        """A new operator account (for every site) and its softphone."""
        if self._add_operator is None:
            raise TypeError("this server's accounts are out of the test's reach: use softphone(email)")
        await self._add_operator(email, name)
        return await self.softphone(email, online=online)

    async def close(self) -> None:
        """Close every socket opened here, newest first; safe to call twice."""
        await self._opened.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _opening(self, socket: S) -> S:
        self._opened.push_async_callback(socket.close)
        socket.hello = await socket.receive("hello")
        return socket
