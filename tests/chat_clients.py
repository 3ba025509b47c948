"""Clients for the fast chat and routing tests: softphone and widget sockets, aiortc peers, an SMTP inbox."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from email import message_from_bytes
from email.message import Message
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack

from tests.stack import Stack, sign_in_form

Frame = dict[str, Any]


class Socket:
    """A WebSocket whose frames are read in the background and waited for by type."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.inbox: list[Frame] = []
        self._arrived = asyncio.Condition()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type is aiohttp.WSMsgType.TEXT:
                async with self._arrived:
                    self.inbox.append(json.loads(message.data))
                    self._arrived.notify_all()

    async def send(self, frame: Frame) -> None:
        await self.ws.send_json(frame)

    def _take(self, type: str, where: Callable[[Frame], bool]) -> Frame | None:
        for i, frame in enumerate(self.inbox):
            if frame.get("type") == type and where(frame):
                return self.inbox.pop(i)
        return None

    async def next(
        self, type: str, where: Callable[[Frame], bool] = lambda f: True, within: float = 10
    ) -> Frame:
        """The first frame of `type` (that `where` accepts) received so far or within `within` seconds."""
        deadline = time.monotonic() + within
        async with self._arrived:
            while (found := self._take(type, where)) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    kinds = [f.get("type") for f in self.inbox]
                    raise AssertionError(f"no {type!r} frame within {within}s; got {kinds}")
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), left)
            return found

    async def nothing(
        self, type: str, within: float = 0.5, where: Callable[[Frame], bool] = lambda f: True
    ) -> None:
        """Assert that no `type` frame arrives within `within` seconds."""
        await asyncio.sleep(within)
        assert self._take(type, where) is None, f"unexpected {type!r} frame"

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()


class Softphone(Socket):
    hello: Frame
    account_id: int

    async def online(self) -> None:
        await self.send({"type": "presence.set", "status": "online"})
        await self.next("presence", lambda f: f["status"] == "online")


class Widget(Socket):
    hello: Frame


@asynccontextmanager
async def softphone(stack: Stack, email: str, name: str = "") -> AsyncIterator[Softphone]:
    """A signed-in operator's softphone socket (the account is created here)."""
    account = await stack.add_user(email, name=name)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        form = await sign_in_form(session, stack.url, "operator", email)
        async with session.post(f"{stack.url}/operator/login", data=form, allow_redirects=False) as response:
            assert response.status == 302, await response.text()
        ws = await session.ws_connect(f"{stack.url}/ws/operator")
        phone = Softphone(ws)
        phone.account_id = account.id
        phone.hello = await phone.next("hello")
        try:
            yield phone
        finally:
            await phone.close()


@asynccontextmanager
async def widget(stack: Stack, token: str, address: str | None = None) -> AsyncIterator[Widget]:
    """A shopper's widget socket on the shop's origin; `address` comes as X-Forwarded-For (for a stack
    with `trust_forwarded_for`, a shopper at that address)."""
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(
            f"{stack.url}/ws/widget?site={stack.site.key}&visitor={token}",
            origin=stack.shop_url,
            headers={"X-Forwarded-For": address} if address else None,
        )
        page = Widget(ws)
        page.hello = await page.next("hello")
        try:
            yield page
        finally:
            await page.close()


class Peer:
    """A real aiortc peer connection sending a silent audio track (a browser stand-in)."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection()
        self.pc.addTrack(AudioStreamTrack())
        self.received: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            if not self.received.done():
                self.received.set_result(track)

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    async def hears_audio(self, within: float = 15) -> None:
        """Wait until audio frames arrive from the server."""
        track = await asyncio.wait_for(self.received, within)
        for _ in range(5):
            await asyncio.wait_for(track.recv(), within)

    async def close(self) -> None:
        await self.pc.close()


@asynccontextmanager
async def peers() -> AsyncIterator[Callable[[], Peer]]:
    made: list[Peer] = []

    def make() -> Peer:
        peer = Peer()
        made.append(peer)
        return peer

    try:
        yield make
    finally:
        for peer in reversed(made):
            await peer.close()


class Inbox:
    """An aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content)
        message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 Message accepted for delivery"


def mail_text(mail: Message) -> str:
    payload = mail.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()
