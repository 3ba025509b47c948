"""Wire messages (docs/signaling.md), validated into typed objects at the edge of the server."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

MAX_SDP = 20_000
MAX_TEXT = 2_000
# Chat text is checked against its real limit (4,000 characters) in the domain, which answers
# `message_too_long`; this bound only keeps absurd frames out.
MAX_CHAT_FRAME_TEXT = 32_000
EMAIL = r"^[^@\s]{1,200}@[^@\s]{1,200}$"


# Call, chat and message ids: what the server handed out, so never longer than this.
Id = Annotated[str, Field(max_length=64)]


class Incoming(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", strict=True)


class Ping(Incoming):
    type: Literal["ping"]


class Utm(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    source: str | None = Field(None, max_length=200)
    medium: str | None = Field(None, max_length=200)
    campaign: str | None = Field(None, max_length=200)
    term: str | None = Field(None, max_length=200)
    content: str | None = Field(None, max_length=200)


class VisitorIdentity(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str | None = Field(None, max_length=200)
    email: str | None = Field(None, max_length=320)
    phone: str | None = Field(None, max_length=50)


class CallContext(BaseModel):
    """What the widget knows of the shopper's visit when they call."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    page: str | None = Field(None, max_length=MAX_TEXT)
    title: str | None = Field(None, max_length=500)
    referrer: str | None = Field(None, max_length=MAX_TEXT)
    utm: Utm | None = None
    search: str | None = Field(None, max_length=500)
    cart_value: float | None = Field(None, ge=0)
    currency: str | None = Field(None, max_length=3)
    product_price: float | None = Field(None, ge=0)
    sku: str | None = Field(None, max_length=200)
    visitor: VisitorIdentity | None = None


class CallOffer(Incoming):
    type: Literal["call.offer"]
    sdp: str = Field(max_length=MAX_SDP)
    context: CallContext = CallContext()
    chat_id: str | None = Field(None, max_length=64)  # the chat whose operator offered this call


class ShopperHangup(Incoming):
    type: Literal["call.hangup"]


Fallback = Literal[
    "microphone_denied",
    "microphone_failed",
    "no_webrtc",
    "ice_failed",
    "no_answer",
    "all_busy",
    "declined",
    "failed",
]


class ChatStart(Incoming):
    type: Literal["chat.start"]
    context: CallContext = CallContext()
    fallback: Fallback | None = None  # why the shopper is chatting instead of talking
    call_id: str | None = Field(None, max_length=64)  # the call this chat continues


class VisitorChatSend(Incoming):
    type: Literal["chat.send"]
    text: str = Field(max_length=MAX_CHAT_FRAME_TEXT)
    client_id: str | None = Field(None, max_length=64)


class VisitorTyping(Incoming):
    type: Literal["chat.typing"]
    text: str = Field("", max_length=MAX_CHAT_FRAME_TEXT)


class VisitorRead(Incoming):
    type: Literal["chat.read"]
    up_to: int = Field(ge=0)


class VisitorChatClose(Incoming):
    type: Literal["chat.close"]


class TranscriptRequest(Incoming):
    type: Literal["chat.transcript"]
    email: str = Field(max_length=320, pattern=EMAIL)


class LeaveMessage(Incoming):
    type: Literal["message.leave"]
    name: str | None = Field(None, max_length=200)
    email: str | None = Field(None, max_length=320, pattern=EMAIL)
    phone: str | None = Field(None, max_length=50, pattern=r"^[0-9+()./\- ]{3,50}$")
    message: str = Field(max_length=MAX_CHAT_FRAME_TEXT)
    call_id: str | None = Field(None, max_length=64)
    context: CallContext = CallContext()


WidgetMessage = Annotated[
    CallOffer
    | ShopperHangup
    | ChatStart
    | VisitorChatSend
    | VisitorTyping
    | VisitorRead
    | VisitorChatClose
    | TranscriptRequest
    | LeaveMessage
    | Ping,
    Field(discriminator="type"),
]


class PresenceSet(Incoming):
    type: Literal["presence.set"]
    status: Literal["online", "away", "offline"]


class CallAccept(Incoming):
    type: Literal["call.accept"]
    call_id: Id
    sdp: str = Field(max_length=MAX_SDP)


class CallDecline(Incoming):
    type: Literal["call.decline"]
    call_id: Id


class OperatorHangup(Incoming):
    type: Literal["call.hangup"]
    call_id: Id


class CallHold(Incoming):
    type: Literal["call.hold"]
    call_id: Id
    on: bool


class CallTransfer(Incoming):
    type: Literal["call.transfer"]
    call_id: Id
    operator_id: int


class OperatorChatSend(Incoming):
    type: Literal["chat.send"]
    chat_id: Id
    text: str = Field(max_length=MAX_CHAT_FRAME_TEXT)
    client_id: str | None = Field(None, max_length=64)


class OperatorTyping(Incoming):
    type: Literal["chat.typing"]
    chat_id: Id
    active: bool = True


class OperatorRead(Incoming):
    type: Literal["chat.read"]
    chat_id: Id
    up_to: int = Field(ge=0)


class ChatPick(Incoming):
    type: Literal["chat.pick"]
    chat_id: Id


class ChatTransfer(Incoming):
    type: Literal["chat.transfer"]
    chat_id: Id
    operator_id: int


class OperatorChatClose(Incoming):
    type: Literal["chat.close"]
    chat_id: Id


class ChatOfferCall(Incoming):
    type: Literal["chat.offer_call"]
    chat_id: Id


class MessageHandled(Incoming):
    type: Literal["message.handled"]
    id: Id


class CannedAdd(Incoming):
    type: Literal["canned.add"]
    site_id: int | None = None
    title: str = Field("", max_length=100)
    text: str = Field(max_length=MAX_CHAT_FRAME_TEXT)


class CannedRemove(Incoming):
    type: Literal["canned.remove"]
    id: int


class VisitorInvite(Incoming):
    """The operator invites a visitor from the board (`op-invite`)."""

    type: Literal["visitor.invite"]
    visitor_id: Id
    site_id: int


OperatorMessage = Annotated[
    PresenceSet
    | CallAccept
    | CallDecline
    | OperatorHangup
    | CallHold
    | CallTransfer
    | OperatorChatSend
    | OperatorTyping
    | OperatorRead
    | ChatPick
    | ChatTransfer
    | OperatorChatClose
    | ChatOfferCall
    | MessageHandled
    | CannedAdd
    | CannedRemove
    | VisitorInvite
    | Ping,
    Field(discriminator="type"),
]

_widget_messages: TypeAdapter[WidgetMessage] = TypeAdapter(WidgetMessage)
_operator_messages: TypeAdapter[OperatorMessage] = TypeAdapter(OperatorMessage)


class BadMessage(Exception):
    """A frame that is not a message we accept; `code` is `bad_json` or `bad_message`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _decode(adapter: TypeAdapter[Any], text: str) -> Any:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadMessage("bad_json", f"The message is not valid JSON: {e.msg}.") from e
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise BadMessage("bad_message", "A message is a JSON object with a string `type`.")
    try:
        return adapter.validate_python(raw)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'][1:]) or 'type'}: {err['msg']}" for err in e.errors()[:3]
        )
        raise BadMessage("bad_message", f"Invalid {raw['type']!r} message: {problems}.") from e


def decode_widget(text: str) -> WidgetMessage:
    result: WidgetMessage = _decode(_widget_messages, text)
    return result


def decode_operator(text: str) -> OperatorMessage:
    result: OperatorMessage = _decode(_operator_messages, text)
    return result


def error(code: str, message: str, client_id: str | None = None) -> dict[str, Any]:
    """An error frame; `client_id` names the chat message it refuses, when there is one."""
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if client_id is not None:
        frame["client_id"] = client_id
    return frame


# Beacons (`POST /widget/beacon`): page views and heartbeats, sent without a socket ----------------

MAX_BEACON_BYTES = 8 * 1024


class Beacon(BaseModel):
    """What the widget reports of a visit: `view` (a page opened), `ping` (still there), `leave`
    (the page is going away), `dismiss` (the visitor closed an invitation)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: Literal["view", "ping", "leave", "dismiss"]
    visitor: str = Field(pattern=r"^[A-Za-z0-9_-]{8,64}$")
    view: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")
    page: str | None = Field(None, max_length=MAX_TEXT)
    title: str | None = Field(None, max_length=500)
    referrer: str | None = Field(None, max_length=MAX_TEXT)
    utm: Utm | None = None
    search: str | None = Field(None, max_length=200)
    product_name: str | None = Field(None, max_length=300)
    product_price: float | None = Field(None, ge=0, le=1e9)
    sku: str | None = Field(None, max_length=200)
    currency: str | None = Field(None, max_length=3)
    cart_value: float | None = Field(None, ge=0, le=1e9)
    seconds: float = Field(0.0, ge=0, le=7 * 24 * 3600)
    returning: bool = False
    dismissed: bool = False  # the widget remembers an earlier "no thanks" (localStorage)


_beacons: TypeAdapter[Beacon] = TypeAdapter(Beacon)


def decode_beacon(body: bytes) -> Beacon:
    """A beacon's body (JSON sent as text/plain, so browsers send it without a CORS preflight)."""
    if len(body) > MAX_BEACON_BYTES:
        raise BadMessage("too_large", f"A beacon is at most {MAX_BEACON_BYTES} bytes.")
    try:
        raw = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadMessage("bad_json", "The beacon is not valid JSON.") from e
    try:
        return _beacons.validate_python(raw)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in e.errors()[:3]
        )
        raise BadMessage("bad_message", f"Invalid beacon: {problems}.") from e
