"""Outbound wire frames (docs/signaling.md): each a frozen dataclass whose `encode()` is the JSON sent.

The domain builds these and hands them to its channels; the sockets only `send_json(frame.encode())`.
Field names and values are exactly what browsers and tests read, so a frame's shape is changed here or
nowhere. Pieces that several frames carry (MESSAGE, CHAT, LEFT, ...) are dataclasses too.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from typing import ClassVar

from callserver.jsontypes import Json as Json
from callserver.jsontypes import JsonObject as JsonObject
from callserver.wire.vocabulary import (
    CallEndWhy,
    CallSide,
    ChatClosedReason,
    ChatState,
    HistoryChannel,
    MessageStatus,
)


class Piece:
    """A part of a frame: its fields, in order, as JSON (override `encode` to leave some out)."""

    def encode(self) -> JsonObject:
        return {f.name: _json(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


def _json(value: object) -> Json:
    if isinstance(value, Piece):
        return value.encode()
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, tuple | list):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"{type(value).__name__} has no JSON form on the wire")


class Frame(Piece):
    """One JSON object sent on a socket: `{"type": TYPE, ...fields}`."""

    TYPE: ClassVar[str]

    def encode(self) -> JsonObject:
        return {"type": self.TYPE, **super().encode()}


# Pieces -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Name(Piece):
    """`{"name": N}`: who answers, as the shopper sees them."""

    name: str


@dataclass(frozen=True)
class OperatorRef(Piece):
    id: int
    name: str


@dataclass(frozen=True)
class Message(Piece):
    """MESSAGE: one stored chat message with its receipt (`operator` on operators' messages only)."""

    id: int
    chat_id: str
    sender: str  # visitor, operator, system
    text: str
    at: str  # ISO 8601
    status: MessageStatus
    operator_name: str | None = None

    def encode(self) -> JsonObject:
        message: JsonObject = {
            "id": self.id,
            "chat_id": self.chat_id,
            "sender": self.sender,
            "text": self.text,
            "at": self.at,
            "status": self.status.value,
        }
        if self.operator_name:
            message["operator"] = {"name": self.operator_name}
        return message


@dataclass(frozen=True)
class VisitorChat(Piece):
    """CHAT as the widget sees it: waiting with its `position`, open with its operator, or closed."""

    id: str
    state: ChatState
    operator_name: str | None = None
    position: int | None = None

    def encode(self) -> JsonObject:
        chat: JsonObject = {"id": self.id, "state": self.state.value}
        if self.operator_name is not None:
            chat["operator"] = {"name": self.operator_name}
        elif self.position is not None:
            chat["position"] = self.position
        return chat


@dataclass(frozen=True)
class OperatorChat(Piece):
    """CHAT as operators see it: the chat's card (site, visitor, page, context, fallback, call) and state."""

    card: JsonObject
    state: ChatState
    operator: OperatorRef | None

    def encode(self) -> JsonObject:
        return {**self.card, "state": self.state.value, "operator": _json(self.operator)}


@dataclass(frozen=True)
class Colleague(Piece):
    id: int
    name: str
    presence: str
    in_call: bool
    chats: int


@dataclass(frozen=True)
class CannedReply(Piece):
    id: int
    site_id: int | None
    title: str
    text: str


@dataclass(frozen=True)
class MailState(Piece):
    """MAIL: where the mail of a left message is."""

    state: str  # pending, sent, retrying, failed
    attempts: int
    error: str | None
    next_at: str | None  # ISO 8601


@dataclass(frozen=True)
class LeftMessage(Piece):
    """LEFT: a message left in the offline form (`mail` None: no mail goes out for it)."""

    id: str
    site: str
    site_id: int
    at: str
    name: str | None
    email: str | None
    phone: str | None
    text: str
    page: str | None
    call_id: str | None
    status: str
    mailed: bool
    mail: MailState | None


@dataclass(frozen=True)
class OperatorChatEntry(Piece):
    """One of an operator's chats in `hello`: the chat and its messages."""

    chat: OperatorChat
    messages: tuple[Message, ...]


# Both sockets -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pong(Frame):
    TYPE = "pong"


@dataclass(frozen=True)
class Error(Frame):
    """A frame the server could not accept; `client_id` names the chat message it refuses, if any."""

    TYPE = "error"
    code: str
    message: str
    client_id: str | None = None

    def encode(self) -> JsonObject:
        frame: JsonObject = {"type": self.TYPE, "code": self.code, "message": self.message}
        if self.client_id is not None:
            frame["client_id"] = self.client_id
        return frame


def internal_error(client_id: str | None = None) -> Error:
    """The frame for a message that failed on the server's side (the socket stays open)."""
    return Error("internal_error", "Something went wrong on our side; please try again.", client_id)


@dataclass(frozen=True)
class CallAnswer(Frame):
    TYPE = "call.answer"
    call_id: str
    sdp: str


@dataclass(frozen=True)
class CallReanswer(Frame):
    """The answer to a `call.reoffer`: the side's new peer connection applies it."""

    TYPE = "call.reanswer"
    call_id: str
    sdp: str


@dataclass(frozen=True)
class CallReconnecting(Frame):
    """The other side's socket or media went away; the call waits `resume_window` for it."""

    TYPE = "call.reconnecting"
    call_id: str
    side: CallSide


@dataclass(frozen=True)
class CallReconnected(Frame):
    """The other side is back (its socket resumed, or its leg was replaced)."""

    TYPE = "call.reconnected"
    call_id: str
    side: CallSide


@dataclass(frozen=True)
class CallDetached(Frame):
    """Another socket resumed this socket's side of the call: this one no longer carries it."""

    TYPE = "call.detached"
    call_id: str


@dataclass(frozen=True)
class ShopperCallResumed(Frame):
    """The widget's `call.resume` was taken: the call as it stands, for a reloaded page to rebuild."""

    TYPE = "call.resumed"
    call_id: str
    state: str  # ringing, answered
    operator: Name | None
    held: bool


@dataclass(frozen=True)
class OperatorCallResumed(Frame):
    """The softphone's `call.resume` was taken: the call as it stands, with what it showed when it rang."""

    TYPE = "call.resumed"
    call_id: str
    state: str
    held: bool
    call: dict[str, object]  # CALL, as in `call.incoming`


# Widget socket ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SiteCard(Piece):
    name: str
    records_calls: bool


@dataclass(frozen=True)
class WidgetHello(Frame):
    TYPE = "hello"
    visitor_token: str
    site: SiteCard
    operators_online: int


@dataclass(frozen=True)
class CallRinging(Frame):
    TYPE = "call.ringing"
    call_id: str


@dataclass(frozen=True)
class ShopperCallConnected(Frame):
    TYPE = "call.connected"
    call_id: str
    operator: Name


@dataclass(frozen=True)
class ShopperCallEnded(Frame):
    TYPE = "call.ended"
    call_id: str
    reason: str
    why: CallEndWhy | str | None = None

    def encode(self) -> JsonObject:
        frame: JsonObject = {"type": self.TYPE, "call_id": self.call_id, "reason": str(self.reason)}
        if self.why:
            frame["why"] = str(self.why)
        return frame


@dataclass(frozen=True)
class MessageLeft(Frame):
    """The offline form was stored."""

    TYPE = "message.left"
    id: str


@dataclass(frozen=True)
class SiteStatus(Frame):
    """Whether someone can answer changed (`open`: within working hours)."""

    TYPE = "site.status"
    open: bool
    operators_online: int


@dataclass(frozen=True)
class ChatHistory(Frame):
    TYPE = "chat.history"
    chat: VisitorChat
    messages: tuple[Message, ...]


@dataclass(frozen=True)
class ChatStateChanged(Frame):
    """The chat was assigned, moved in the queue, or closed."""

    TYPE = "chat.state"
    chat: VisitorChat


@dataclass(frozen=True)
class OperatorTyping(Frame):
    """The operator is typing (false after a send)."""

    TYPE = "chat.typing"
    chat_id: str
    active: bool


@dataclass(frozen=True)
class CallOffered(Frame):
    TYPE = "chat.call_offered"
    chat_id: str
    operator: Name


@dataclass(frozen=True)
class Transcript(Frame):
    """How mailing the transcript went: `sending` (no chat id), then `sent` or `failed`."""

    TYPE = "chat.transcript"
    status: str
    chat_id: str | None = None

    def encode(self) -> JsonObject:
        if self.chat_id is None:
            return {"type": self.TYPE, "status": self.status}
        return {"type": self.TYPE, "chat_id": self.chat_id, "status": self.status}


# Both sides of a chat -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatAck(Frame):
    """The message was stored (MESSAGE carries its stored id)."""

    TYPE = "chat.ack"
    chat_id: str
    client_id: str | None
    message: Message


@dataclass(frozen=True)
class ChatMessage(Frame):
    TYPE = "chat.message"
    chat_id: str
    message: Message


@dataclass(frozen=True)
class ChatReceipt(Frame):
    """Messages reached the other side's screen (`delivered`) or were read there."""

    TYPE = "chat.status"
    chat_id: str
    ids: tuple[int, ...]
    status: MessageStatus


# Operator socket ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VisitorTyping(Frame):
    """The visitor's unsent text (empty: cleared)."""

    TYPE = "chat.typing"
    chat_id: str
    text: str


@dataclass(frozen=True)
class ChatAssigned(Frame):
    TYPE = "chat.assigned"
    chat: OperatorChat
    messages: tuple[Message, ...]
    preview: str


@dataclass(frozen=True)
class ChatQueue(Frame):
    TYPE = "chat.queue"
    chats: tuple[OperatorChat, ...]


@dataclass(frozen=True)
class ChatClosed(Frame):
    """The chat left this softphone."""

    TYPE = "chat.closed"
    chat_id: str
    reason: ChatClosedReason


@dataclass(frozen=True)
class Operators(Frame):
    """Colleagues who share a site with this operator, for transfers."""

    TYPE = "operators"
    operators: tuple[Colleague, ...]


@dataclass(frozen=True)
class CannedReplies(Frame):
    TYPE = "canned"
    replies: tuple[CannedReply, ...]


@dataclass(frozen=True)
class MessageNew(Frame):
    TYPE = "message.new"
    message: LeftMessage


@dataclass(frozen=True)
class MessageMail(Frame):
    """A try to mail a left message ended."""

    TYPE = "message.mail"
    id: str
    mail: MailState | None


@dataclass(frozen=True)
class CallbackEntry(Piece):
    """A call-me-back request on the softphone's list (`on_site`: the shopper's page is open now)."""

    id: str
    site: str
    site_id: int
    at: str
    phone: str
    when: str | None
    page: str | None
    visitor_id: str | None
    on_site: bool
    outcome: str | None
    handled_by: str | None


@dataclass(frozen=True)
class CallbackNew(Frame):
    TYPE = "callback.new"
    callback: CallbackEntry


@dataclass(frozen=True)
class CallbackDone(Frame):
    """A request got its outcome: it leaves the list."""

    TYPE = "callback.done"
    id: str
    outcome: str
    by: str


@dataclass(frozen=True)
class VisitorCallState(Frame):
    """The operator's ring of a visitor's page: ringing, answered, declined, no_answer or cancelled."""

    TYPE = "visitor_call.state"
    id: str
    site_id: int
    visitor_id: str
    state: str
    callback_id: str | None


@dataclass(frozen=True)
class MessageHandled(Frame):
    TYPE = "message.handled"
    id: str


@dataclass(frozen=True)
class Presence(Frame):
    TYPE = "presence"
    status: str


@dataclass(frozen=True)
class CallIncoming(Frame):
    TYPE = "call.incoming"
    call: JsonObject


@dataclass(frozen=True)
class CallWithdrawn(Frame):
    TYPE = "call.withdrawn"
    call_id: str
    reason: str


@dataclass(frozen=True)
class OperatorCallConnected(Frame):
    TYPE = "call.connected"
    call_id: str


@dataclass(frozen=True)
class OperatorCallEnded(Frame):
    TYPE = "call.ended"
    call_id: str
    reason: str


@dataclass(frozen=True)
class CallTransferred(Frame):
    TYPE = "call.transferred"
    call_id: str
    to: Name


@dataclass(frozen=True)
class CallTransferFailed(Frame):
    TYPE = "call.transfer_failed"
    call_id: str
    reason: str


@dataclass(frozen=True)
class VisitorInvited(Frame):
    TYPE = "visitor.invited"
    visitor_id: str
    site_id: int


@dataclass(frozen=True)
class VisitorsBoard(Frame):
    """The live visitors board: `{"visitors": [ROW...], "total": N}` as the board builds it."""

    TYPE = "visitors"
    board: JsonObject

    def encode(self) -> JsonObject:
        return {"type": self.TYPE, **self.board}


# After a conversation (callserver/csat.py, callserver/outcomes.py) --------------------------------


@dataclass(frozen=True)
class CsatAsk(Frame):
    """To the shopper: how was the call or chat with `operator`? (widget-after.js shows the card)"""

    TYPE = "csat.ask"
    conversation_id: str
    channel: str  # call, chat
    operator: Name | None = None


@dataclass(frozen=True)
class CsatThanks(Frame):
    """To the shopper: their rating is stored."""

    TYPE = "csat.thanks"
    conversation_id: str


@dataclass(frozen=True)
class OutcomeSaved(Frame):
    """To the operator: the note, tags and order number of a conversation as stored."""

    TYPE = "outcome.saved"
    outcome: JsonObject


@dataclass(frozen=True)
class HistoryEntry(Piece):
    """ENTRY: one earlier call, chat, left message or order of a visitor (callserver/visitors/history.py)."""

    channel: HistoryChannel
    id: str
    at: str  # ISO 8601
    operator: str | None
    outcome: str | None
    duration_s: int | None
    note: str | None
    tags: tuple[str, ...]
    csat: int | None
    total: str | None
    currency: str | None
    conversation_id: str | None
    page: str | None


@dataclass(frozen=True)
class VisitorHistory(Frame):
    """To the operator: a visitor's history, newest first (`conversation_id`: the one it was asked for)."""

    TYPE = "visitor.history"
    conversation_id: str | None
    site_id: int
    visitor_id: str
    entries: tuple[HistoryEntry, ...]
