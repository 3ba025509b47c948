"""The widget's socket (`/ws/widget`): a shopper's call from offer to hang-up."""

from __future__ import annotations

import logging
import re
import secrets
from typing import Any

from aiohttp import WSMsgType, web

from callserver import sites
from callserver.calls.records import VisitorContext
from callserver.calls.states import EndReason, RingStrategy
from callserver.calls.switchboard import SiteRouting
from callserver.errors import CallInProgress, CallserverError, NoCall, OriginNotAllowed, UnknownSite
from callserver.signaling.messages import BadMessage, CallOffer, Ping, ShopperHangup, decode_widget, error
from callserver.web.keys import DATABASE, SETTINGS, SWITCHBOARD

log = logging.getLogger(__name__)
TOKEN = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
CLOSE_NOT_ALLOWED = 4403
CLOSE_UNKNOWN_SITE = 4404


def device_of(user_agent: str) -> str:
    """`mobile`, `tablet` or `desktop`, from the User-Agent header."""
    ua = user_agent.lower()
    if "ipad" in ua or "tablet" in ua or ("android" in ua and "mobile" not in ua):
        return "tablet"
    if "mobi" in ua or "iphone" in ua:
        return "mobile"
    return "desktop"


class ShopperConnection:
    """The switchboard's view of one widget socket."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.call_id: str | None = None

    async def send(self, message: dict[str, Any]) -> None:
        if not self.ws.closed:
            await self.ws.send_json(message)

    async def ringing(self, call_id: str) -> None:
        await self.send({"type": "call.ringing", "call_id": call_id})

    async def connected(self, call_id: str, operator_name: str) -> None:
        await self.send({"type": "call.connected", "call_id": call_id, "operator": {"name": operator_name}})

    async def ended(self, call_id: str, reason: EndReason) -> None:
        if self.call_id == call_id:
            self.call_id = None
        await self.send({"type": "call.ended", "call_id": call_id, "reason": str(reason)})


async def widget_socket(request: web.Request) -> web.WebSocketResponse:
    settings = request.app[SETTINGS]
    switchboard = request.app[SWITCHBOARD]
    ws = web.WebSocketResponse(max_msg_size=settings.max_frame_bytes, heartbeat=25)
    await ws.prepare(request)
    try:
        async with request.app[DATABASE].session() as session:
            site = await sites.site_by_key(session, request.query.get("site", ""))
        sites.check_origin(site, request.headers.get("Origin"))
    except UnknownSite:
        await ws.close(code=CLOSE_UNKNOWN_SITE, message=b"unknown_site")
        return ws
    except OriginNotAllowed:
        await ws.close(code=CLOSE_NOT_ALLOWED, message=b"origin_not_allowed")
        return ws

    token = request.query.get("visitor", "")
    if not TOKEN.match(token):
        token = secrets.token_urlsafe(16)
    routing = SiteRouting(
        id=site.id,
        name=site.name,
        strategy=RingStrategy(site.ring_strategy),
        ring_timeout=site.ring_timeout or settings.ring_timeout,
    )
    shopper = ShopperConnection(ws)
    await shopper.send(
        {
            "type": "hello",
            "visitor_token": token,
            "site": {"name": site.name, "records_calls": site.records_calls},
            "operators_online": switchboard.operators_online(site.id),
        }
    )

    async def handle(message: CallOffer | ShopperHangup | Ping) -> None:
        if isinstance(message, Ping):
            await shopper.send({"type": "pong"})
        elif isinstance(message, CallOffer):
            if shopper.call_id is not None:
                raise CallInProgress("This page already has a call in progress.")
            context = message.context
            identity = context.visitor
            visitor = VisitorContext(
                token=token,
                page=context.page,
                title=context.title,
                referrer=context.referrer,
                device=device_of(request.headers.get("User-Agent", "")),
                name=identity.name if identity else None,
                email=identity.email if identity else None,
                phone=identity.phone if identity else None,
                extra=context.model_dump(exclude={"page", "title", "referrer", "visitor"}, exclude_none=True),
            )
            call_id, answer = await switchboard.start_call(routing, visitor, message.sdp, shopper)
            shopper.call_id = call_id
            await shopper.send({"type": "call.answer", "call_id": call_id, "sdp": answer})
            switchboard.ring(call_id)
        elif isinstance(message, ShopperHangup):
            if shopper.call_id is None:
                raise NoCall("There is no call to hang up.")
            await switchboard.shopper_hangup(shopper.call_id)

    try:
        async for frame in ws:
            if frame.type is WSMsgType.TEXT:
                try:
                    await handle(decode_widget(frame.data))
                except BadMessage as e:
                    await shopper.send(error(e.code, e.message))
                except CallserverError as e:
                    await shopper.send(error(e.code, e.message))
            elif frame.type is WSMsgType.BINARY:
                await shopper.send(error("bad_message", "Binary frames are not accepted."))
    finally:
        # The page went away: a ringing call is abandoned, a call in progress is over.
        if shopper.call_id is not None:
            await switchboard.shopper_hangup(shopper.call_id)
    return ws
