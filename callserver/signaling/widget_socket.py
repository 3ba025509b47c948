"""The widget's socket (`/ws/widget`): a shopper's call from offer to hang-up, their chat, left messages."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping

from aiohttp import WSMsgType, web

from callserver.calls.records import VisitorContext
from callserver.calls.states import EndReason
from callserver.chats.errors import RateLimited
from callserver.errors import CallInProgress, NoCall, OriginNotAllowed, UnknownSite
from callserver.limits import TokenBucket
from callserver.signaling.frames import answer_frame
from callserver.sites import is_visitor_token
from callserver.web.clients import client_address
from callserver.web.keys import (
    ADDRESS_LIMITS,
    CHAT_DESK,
    CONVERSATIONS,
    COUNTRIES,
    ROSTER,
    SATISFACTION,
    SETTINGS,
    SITES,
    SWITCHBOARD,
)
from callserver.wire.inbound import (
    CallbackRequestFrame,
    CallContext,
    CallOffer,
    CallReoffer,
    CallResume,
    ChatStart,
    CsatDismiss,
    CsatRate,
    LeaveMessage,
    Ping,
    ShopperHangup,
    TranscriptRequest,
    VisitorCallDecline,
    VisitorChatClose,
    VisitorChatSend,
    VisitorRead,
    VisitorTyping,
    WidgetMessage,
    decode_widget,
    error,
)
from callserver.wire.outbound import (
    CallDetached,
    CallReanswer,
    ChatHistory,
    ChatStateChanged,
    CsatAsk,
    CsatThanks,
    Frame,
    Name,
    ShopperCallResumed,
)
from callserver.wire.vocabulary import ChatState

log = logging.getLogger(__name__)
CLOSE_NOT_ALLOWED = 4403
CLOSE_UNKNOWN_SITE = 4404
CLOSE_TOO_MANY = 4429  # too many sockets, or too many new visitors, from this client address
# Per socket, every frame: typing previews every 300 ms fit easily, a script hammering the socket does not.
SOCKET_RATE = 10.0
SOCKET_BURST = 40.0


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
        # Who talked with the shopper, for "how was your conversation with NAME?" after it.
        self.operator_names: dict[str, str] = {}

    async def send(self, message: Mapping[str, object]) -> None:
        if not self.ws.closed:
            await self.ws.send_json(message)

    async def answer(self, call_id: str, sdp: str, resume_token: str | None = None) -> None:
        self.call_id = call_id
        frame: dict[str, object] = {"type": "call.answer", "call_id": call_id, "sdp": sdp}
        if resume_token is not None:
            frame["resume_token"] = resume_token
        await self.send(frame)

    async def call_event(self, frame: Frame) -> None:
        await self.send(frame.encode())

    async def detached(self, call_id: str) -> None:
        if self.call_id == call_id:
            self.call_id = None  # closing this socket no longer touches the call
        await self.send(CallDetached(call_id).encode())

    async def ringing(self, call_id: str) -> None:
        await self.send({"type": "call.ringing", "call_id": call_id})

    async def connected(self, call_id: str, operator_name: str) -> None:
        self.operator_names[call_id] = operator_name
        await self.send({"type": "call.connected", "call_id": call_id, "operator": {"name": operator_name}})

    async def ended(self, call_id: str, reason: EndReason, why: str | None = None) -> None:
        if self.call_id == call_id:
            self.call_id = None
        frame = {"type": "call.ended", "call_id": call_id, "reason": str(reason)}
        if why:
            frame["why"] = why
        await self.send(frame)
        if reason is EndReason.COMPLETED:
            await self.ask_rating(call_id, "call")

    async def ask_rating(self, conversation_id: str, channel: str) -> None:
        """After a conversation with an operator: how was it? (asked once, callserver/csat.py)"""
        name = self.operator_names.pop(conversation_id, None)
        await self.send(CsatAsk(conversation_id, channel, Name(name) if name else None).encode())

    async def chat_event(self, frame: Frame) -> None:
        await self.send(frame.encode())
        if isinstance(frame, ChatStateChanged | ChatHistory):
            chat = frame.chat
            if chat.operator_name is not None:
                self.operator_names[chat.id] = chat.operator_name
            if chat.state is ChatState.CLOSED and chat.id in self.operator_names:
                await self.ask_rating(chat.id, "chat")


def visitor_context(request: web.Request, token: str, context: CallContext) -> VisitorContext:
    """What the page and the request tell about the shopper."""
    identity = context.visitor
    return VisitorContext(
        token=token,
        page=context.page,
        title=context.title,
        referrer=context.referrer,
        device=device_of(request.headers.get("User-Agent", "")),
        country=request.app[COUNTRIES].country_of(client_address(request)),
        name=identity.name if identity else None,
        email=identity.email if identity else None,
        phone=identity.phone if identity else None,
        extra=context.model_dump(exclude={"page", "title", "referrer", "visitor"}, exclude_none=True),
    )


async def widget_socket(request: web.Request) -> web.WebSocketResponse:
    settings = request.app[SETTINGS]
    limits = request.app[ADDRESS_LIMITS]
    address = client_address(request) or ""
    ws = web.WebSocketResponse(max_msg_size=settings.max_frame_bytes, heartbeat=25)
    await ws.prepare(request)
    # Counted before anything costs a database query: a refused socket costs the handshake only.
    uncount = limits.open_socket(address)
    if uncount is None:
        log.debug("refused a widget socket from %s: %d open already", address, limits.max_sockets)
        await ws.close(code=CLOSE_TOO_MANY, message=b"too_many_connections")
        return ws
    try:
        return await _serve(request, ws, address)
    finally:
        uncount()


async def _serve(request: web.Request, ws: web.WebSocketResponse, address: str) -> web.WebSocketResponse:
    app = request.app
    switchboard, desk, conversations = app[SWITCHBOARD], app[CHAT_DESK], app[CONVERSATIONS]
    limits = app[ADDRESS_LIMITS]
    site_key = request.query.get("site", "")
    token = request.query.get("visitor", "")
    if not is_visitor_token(token):
        token = secrets.token_urlsafe(16)
    # Before the site is looked up: a flood of fresh tokens costs no database query.
    if not limits.visitor_arrives(address, (site_key, token)):
        log.debug("refused a widget socket from %s: too many new visitors", address)
        await ws.close(code=CLOSE_TOO_MANY, message=b"too_many_visitors")
        return ws
    try:
        # Read afresh (once per page): the socket follows settings saved a moment ago.
        site = await app[SITES].by_key(site_key, fresh=True)
        site.check_origin(request.headers.get("Origin"))
    except UnknownSite:
        await ws.close(code=CLOSE_UNKNOWN_SITE, message=b"unknown_site")
        return ws
    except OriginNotAllowed:
        await ws.close(code=CLOSE_NOT_ALLOWED, message=b"origin_not_allowed")
        return ws

    shopper = ShopperConnection(ws)
    told_online = app[ROSTER].operators_online(site.id)
    await shopper.send(
        {
            "type": "hello",
            "visitor_token": token,
            "site": {"name": site.name, "records_calls": site.records_calls},
            "operators_online": told_online,
        }
    )
    bucket = TokenBucket(rate=SOCKET_RATE, burst=SOCKET_BURST)

    def decode_limited(data: str) -> WidgetMessage:
        """A frame counts against the socket's rate limit before it is read, garbage too."""
        if not bucket.take():
            raise RateLimited("Too many messages on this connection: slow down.")
        return decode_widget(data)

    satisfaction = app[SATISFACTION]
    # A conversation ended on the last page and not rated yet: asked on this one (shown when the panel opens).
    pending = await satisfaction.pending(site.id, token)
    if pending is not None:
        name = Name(pending.operator_name) if pending.operator_name else None
        await shopper.send(CsatAsk(pending.conversation_id, pending.channel, name).encode())

    async def handle(message: WidgetMessage) -> None:
        if isinstance(message, Ping):
            await shopper.send({"type": "pong"})
        elif isinstance(message, CallOffer):
            if shopper.call_id is not None:
                raise CallInProgress("This page already has a call in progress.")
            visitor = visitor_context(request, token, message.context)
            await conversations.start_call(
                site, visitor, message.sdp, shopper, address, message.chat_id, message.invitation
            )
        elif isinstance(message, CallResume):
            # A new socket of the page (reloaded, or back on another network) takes its call over.
            if shopper.call_id is not None and shopper.call_id != message.call_id:
                raise CallInProgress("This page already has another call in progress.")
            call = await switchboard.resume_shopper(site.id, message.call_id, message.resume_token, shopper)
            shopper.call_id = call.id
            if call.operator_name is not None:  # "how was your call with NAME?" after it, on this socket too
                shopper.operator_names[call.id] = call.operator_name
            name = Name(call.operator_name) if call.operator_name is not None else None
            await shopper.send(ShopperCallResumed(call.id, str(call.state), name, call.held).encode())
        elif isinstance(message, CallReoffer):
            if shopper.call_id != message.call_id:
                raise NoCall("This page has no such call in progress.")
            answer = await switchboard.reoffer_shopper(message.call_id, message.sdp, shopper)
            await shopper.send(CallReanswer(message.call_id, answer).encode())
        elif isinstance(message, ShopperHangup):
            if shopper.call_id is None:
                raise NoCall("There is no call to hang up.")
            await switchboard.shopper_hangup(shopper.call_id)
        elif isinstance(message, ChatStart):
            visitor = visitor_context(request, token, message.context)
            await conversations.start_chat(site, visitor, message.fallback, message.call_id)
        elif isinstance(message, VisitorChatSend):
            await desk.post_visitor(site.id, token, message.text, message.client_id, shopper)
        elif isinstance(message, VisitorTyping):
            await desk.visitor_typing(site.id, token, message.text)
        elif isinstance(message, VisitorRead):
            await desk.visitor_read(site.id, token, message.up_to)
        elif isinstance(message, VisitorChatClose):
            await desk.visitor_close(site.id, token)
        elif isinstance(message, TranscriptRequest):
            await desk.send_transcript(site.id, token, message.email)
            await shopper.send({"type": "chat.transcript", "status": "sending"})
        elif isinstance(message, LeaveMessage):
            visitor = visitor_context(request, token, message.context)
            left_id = await conversations.leave_message(
                site,
                visitor,
                message.name,
                message.email,
                message.phone,
                message.message,
                message.call_id,
            )
            await shopper.send({"type": "message.left", "id": left_id})
        elif isinstance(message, CsatRate):
            await satisfaction.rate(site.id, token, message.conversation_id, message.score, message.comment)
            await shopper.send(CsatThanks(message.conversation_id).encode())
        elif isinstance(message, CsatDismiss):
            await satisfaction.dismiss(site.id, token, message.conversation_id)
        elif isinstance(message, CallbackRequestFrame):
            visitor = visitor_context(request, token, message.context)
            callback_id = await conversations.request_callback(site, visitor, message.phone, message.when)
            await shopper.send({"type": "callback.requested", "id": callback_id})
        elif isinstance(message, VisitorCallDecline):
            await conversations.decline_visitor_call(site, token, message.id)

    leave_chat = await desk.visitor_joined(site, token, shopper, told_online)
    try:
        async for frame in ws:
            if frame.type is WSMsgType.TEXT:
                await answer_frame("widget", frame.data, decode_limited, handle, shopper.send)
            elif frame.type is WSMsgType.BINARY:
                await shopper.send(error("bad_message", "Binary frames are not accepted."))
    finally:
        leave_chat()
        # The socket went away without hanging up: the call waits `resume_window` for a `call.resume`.
        if shopper.call_id is not None:
            await switchboard.shopper_gone(shopper.call_id, shopper)
    return ws
