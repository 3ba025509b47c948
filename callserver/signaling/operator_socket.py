"""The softphone's socket (`/ws/operator`): presence, ringing, answering, hanging up, and chats."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from callserver.accounts import Account
from callserver.errors import InvalidInput
from callserver.operators.roster import Presence
from callserver.signaling.frames import answer_frame
from callserver.visitors.history import Past, VisitorHistory
from callserver.web.auth import current_account, watch_socket
from callserver.web.keys import (
    CHAT_DESK,
    CONVERSATIONS,
    DATABASE,
    OUTCOMES,
    ROSTER,
    SETTINGS,
    SHOP_FLOOR,
    SWITCHBOARD,
)
from callserver.wire.inbound import (
    CallAccept,
    CallbackDone,
    CallDecline,
    CallHold,
    CallReoffer,
    CallResume,
    CallTransfer,
    CannedAdd,
    CannedRemove,
    ChatOfferCall,
    ChatPick,
    ChatTransfer,
    MessageHandled,
    OperatorChatClose,
    OperatorChatSend,
    OperatorHangup,
    OperatorMessage,
    OperatorRead,
    OperatorTyping,
    OutcomeGet,
    OutcomeSave,
    Ping,
    PresenceSet,
    VisitorCall,
    VisitorCallCancel,
    VisitorHistoryGet,
    VisitorInvite,
    decode_operator,
    error,
)
from callserver.wire.outbound import (
    CallReanswer,
    Frame,
    HistoryEntry,
    OperatorCallResumed,
    OutcomeSaved,
)
from callserver.wire.outbound import VisitorHistory as VisitorHistoryFrame
from callserver.wire.vocabulary import CallSide

CLOSE_LOGIN_REQUIRED = 4401
CLOSE_FORBIDDEN = 4403


class OperatorConnection:
    """The switchboard's view of one open softphone."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        # `hello` is the first frame (docs/signaling.md): what others send this softphone while its `hello` is
        # being put together (it joined the roster first, so as to miss no ring) waits, in order.
        self._before_hello: list[Mapping[str, object]] | None = []

    async def send(self, message: Mapping[str, object]) -> None:
        if self._before_hello is not None:
            self._before_hello.append(message)
        elif not self.ws.closed:
            await self.ws.send_json(message)

    async def greet(self, hello: Mapping[str, object]) -> None:
        """Send `hello`, then what came for this softphone while it was being put together."""
        held, self._before_hello = self._before_hello or [], None
        for message in (hello, *held):
            if not self.ws.closed:
                await self.ws.send_json(message)

    async def incoming(self, call: dict[str, object]) -> None:
        await self.send({"type": "call.incoming", "call": call})

    async def withdrawn(self, call_id: str, reason: str) -> None:
        await self.send({"type": "call.withdrawn", "call_id": call_id, "reason": str(reason)})

    async def answer(self, call_id: str, sdp: str, resume_token: str | None = None) -> None:
        frame: dict[str, object] = {"type": "call.answer", "call_id": call_id, "sdp": sdp}
        if resume_token is not None:
            frame["resume_token"] = resume_token
        await self.send(frame)

    async def call_event(self, frame: Frame) -> None:
        await self.send(frame.encode())

    async def connected(self, call_id: str) -> None:
        await self.send({"type": "call.connected", "call_id": call_id})

    async def ended(self, call_id: str, reason: str) -> None:
        await self.send({"type": "call.ended", "call_id": call_id, "reason": str(reason)})

    async def presence(self, status: Presence) -> None:
        await self.send({"type": "presence", "status": str(status)})

    async def transferred(self, call_id: str, to_name: str) -> None:
        await self.send({"type": "call.transferred", "call_id": call_id, "to": {"name": to_name}})

    async def transfer_failed(self, call_id: str, reason: str) -> None:
        await self.send({"type": "call.transfer_failed", "call_id": call_id, "reason": reason})

    async def chat_event(self, frame: Frame) -> None:
        await self.send(frame.encode())


def _same_origin(request: web.Request) -> bool:
    # Browsers send cookies with cross-site WebSocket handshakes in some setups; refuse other pages.
    origin = request.headers.get("Origin")
    return origin is None or urlsplit(origin).netloc == request.host


async def operator_socket(request: web.Request) -> web.WebSocketResponse:
    settings = request.app[SETTINGS]
    switchboard = request.app[SWITCHBOARD]
    ws = web.WebSocketResponse(max_msg_size=settings.max_frame_bytes, heartbeat=25)
    await ws.prepare(request)
    if not _same_origin(request):
        await ws.close(code=CLOSE_FORBIDDEN, message=b"origin_not_allowed")
        return ws
    account = await current_account(request)
    if account is None:
        await ws.close(code=CLOSE_LOGIN_REQUIRED, message=b"login_required")
        return ws

    unwatch = watch_socket(request, account, ws)  # signing out (or being disabled) closes this socket
    desk, roster = request.app[CHAT_DESK], request.app[ROSTER]
    softphone = OperatorConnection(ws)
    leave = switchboard.operator_joined(account, softphone)
    stop_watching = None
    try:
        await softphone.greet(
            {
                "type": "hello",
                "operator": {"id": account.id, "email": account.email, "name": account.display_name},
                "presence": str(roster.presence_of(account.id)),
                "incoming": switchboard.ringing_for(account.id),
                "active_call": switchboard.active_call_of(account.id),
                **await desk.operator_state(roster.seat(account)),
                "callbacks": await _callbacks_of(request, account),
            }
        )
        await desk.operator_joined(roster.seat(account))
        # The live visitors board: now, then on every change (throttled by the publisher).
        floor = request.app[SHOP_FLOOR]
        stop_watching = floor.publisher.watch(account, softphone)
        await floor.publisher.snapshot(account, softphone)
        handle = functools.partial(_handle, request, account, softphone)
        async for frame in ws:
            if frame.type is WSMsgType.TEXT:
                await answer_frame("operator", frame.data, decode_operator, handle, softphone.send)
            elif frame.type is WSMsgType.BINARY:
                await softphone.send(error("bad_message", "Binary frames are not accepted."))
    finally:
        if stop_watching is not None:
            stop_watching()
        leave()
        unwatch()
    return ws


async def _callbacks_of(request: web.Request, account: Account) -> list[object]:
    """The open call-back requests of the operator's sites, as `hello` lists them."""
    callbacks = request.app[CONVERSATIONS].callbacks
    return [c.encode() for c in await callbacks.listed(account)] if callbacks is not None else []


async def _handle(
    request: web.Request, account: Account, softphone: OperatorConnection, message: OperatorMessage
) -> None:
    switchboard = request.app[SWITCHBOARD]
    desk = request.app[CHAT_DESK]
    roster = request.app[ROSTER]
    seat = roster.seat(account)
    match message:
        case Ping():
            await softphone.send({"type": "pong"})
        case PresenceSet(status=status):
            await roster.set_presence(account.id, Presence(status))
        case CallAccept(call_id=call_id, sdp=sdp):
            answer = await switchboard.accept(account.id, call_id, sdp, softphone)
            await softphone.answer(call_id, answer, switchboard.resume_token(call_id, CallSide.OPERATOR))
            await switchboard.operator_connected(account.id, call_id)
        case CallResume(call_id=call_id, resume_token=token):
            call = await switchboard.resume_operator(account.id, call_id, token, softphone)
            await softphone.send(OperatorCallResumed(call.id, str(call.state), call.held, call.view).encode())
        case CallReoffer(call_id=call_id, sdp=sdp):
            answer = await switchboard.reoffer_operator(account.id, call_id, sdp, softphone)
            await softphone.send(CallReanswer(call_id, answer).encode())
        case CallDecline(call_id=call_id):
            await switchboard.decline(account.id, call_id)
        case OperatorHangup(call_id=call_id):
            await switchboard.hangup(account.id, call_id)
        case CallHold(call_id=call_id, on=on):
            await switchboard.hold(account.id, call_id, on)
        case CallTransfer(call_id=call_id, operator_id=to):
            await switchboard.transfer(account.id, call_id, to)
        case OperatorChatSend(chat_id=chat_id, text=text, client_id=client_id):
            await desk.post_operator(seat, chat_id, text, client_id, softphone)
        case OperatorTyping(chat_id=chat_id, active=active):
            await desk.operator_typing(seat, chat_id, active)
        case OperatorRead(chat_id=chat_id, up_to=up_to):
            await desk.operator_read(seat, chat_id, up_to)
        case ChatPick(chat_id=chat_id):
            await desk.pick(seat, chat_id)
        case ChatTransfer(chat_id=chat_id, operator_id=to):
            await desk.transfer(seat, chat_id, to)
        case OperatorChatClose(chat_id=chat_id):
            await desk.operator_close(seat, chat_id)
        case ChatOfferCall(chat_id=chat_id):
            await desk.offer_call(seat, chat_id)
        case MessageHandled(id=message_id):
            await desk.left_messages.mark_handled(seat.account, message_id)
        case CannedAdd(site_id=site_id, title=title, text=text):
            await desk.canned.add(seat.account, site_id, title, text)
        case CannedRemove(id=reply_id):
            await desk.canned.remove(seat.account, reply_id)
        case OutcomeGet(conversation_id=conversation_id):
            outcome = await request.app[OUTCOMES].get(account, conversation_id)
            await softphone.send(OutcomeSaved(outcome).encode() | {"type": "outcome"})
        case OutcomeSave(conversation_id=conversation_id, note=note, tags=tags, order=order):
            outcome = await request.app[OUTCOMES].save(account, conversation_id, note, tags, order)
            await softphone.send(OutcomeSaved(outcome).encode())
        case VisitorHistoryGet():
            await softphone.send((await _history(request, account, message)).encode())
        case VisitorInvite(visitor_id=token, site_id=site_id):
            await request.app[CONVERSATIONS].invite(account, site_id, token)
            await softphone.send({"type": "visitor.invited", "visitor_id": token, "site_id": site_id})
        case VisitorCall(visitor_id=token, site_id=site_id, callback_id=callback_id):
            await request.app[CONVERSATIONS].call_visitor(account, site_id, token, callback_id)
        case VisitorCallCancel(id=ring_id):
            visitor_calls = request.app[CONVERSATIONS].visitor_calls
            if visitor_calls is not None:
                await visitor_calls.cancel(account, ring_id)
        case CallbackDone(id=callback_id, outcome=outcome):
            callbacks = request.app[CONVERSATIONS].callbacks
            if callbacks is not None:
                await callbacks.done(account, callback_id, outcome)


async def _history(request: web.Request, account: Account, asked: VisitorHistoryGet) -> VisitorHistoryFrame:
    """`visitor.history`: of a conversation's visitor, or of a site's visitor by token."""
    history = VisitorHistory(request.app[DATABASE])
    if asked.conversation_id is not None:
        site_id, token, pasts = await history.of_conversation(account, asked.conversation_id)
    elif asked.visitor_id is not None and asked.site_id is not None:
        site_id, token = asked.site_id, asked.visitor_id
        pasts = await history.of_visitor(account, site_id, token)
    else:
        raise InvalidInput("Name a conversation_id, or a visitor_id with its site_id.")
    return VisitorHistoryFrame(asked.conversation_id, site_id, token, tuple(_entry(p) for p in pasts))


def _entry(past: Past) -> HistoryEntry:
    return HistoryEntry(
        channel=past.channel,
        id=past.id,
        at=past.at.isoformat(),
        operator=past.operator,
        outcome=past.outcome,
        duration_s=past.duration_s,
        note=past.note,
        tags=past.tags,
        csat=past.csat,
        total=past.total,
        currency=past.currency,
        conversation_id=past.conversation_id,
        page=past.page,
    )
