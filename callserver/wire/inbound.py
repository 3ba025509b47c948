"""Inbound wire messages (docs/signaling.md), validated into typed objects at the edge of the server."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal, NoReturn, TypeVar

from pydantic import BaseModel, ConfigDict, Field, Strict, TypeAdapter, ValidationError

from callserver.jsontypes import JsonObject
from callserver.sites.site import VISITOR_TOKEN
from callserver.wire import outbound
from callserver.wire.vocabulary import Fallback

T = TypeVar("T")

MAX_SDP = 20_000
MAX_TEXT = 2_000
# Chat text is checked against its real limit (4,000 characters) in the domain, which answers
# `message_too_long`; this bound only keeps absurd frames out.
MAX_CHAT_FRAME_TEXT = 32_000
EMAIL = r"^[^@\s]{1,200}@[^@\s]{1,200}$"


# Call, chat and message ids: what the server handed out, so never longer than this.
Id = Annotated[str, Field(max_length=64)]
# Row ids (sites, operators, canned replies, chat messages) are INTEGER columns: 32 bits on PostgreSQL,
# so a larger number could never name a row, and would fail at the database instead of here.
RowId = Annotated[int, Field(ge=1, le=2**31 - 1)]
MessageNumber = Annotated[int, Field(ge=0, le=2**31 - 1)]
# Amounts from the page (cart value, product price): finite and below anything a shop sells.
Amount = Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)]
# Nothing we accept nests deeper than a few levels (`context.utm.source`); a frame nested thousands deep
# would exhaust the recursion of the JSON decoder and of pydantic, so it is refused before decoding.
MAX_DEPTH = 16


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


# A landing's campaign values and click ids are short ASCII-ish words; the widget cuts them to this.
TOUCH_VALUE = 200
TouchValue = Annotated[str, Strict(), Field(min_length=1, max_length=TOUCH_VALUE)]
# Click ids are URL-safe tokens (Google's gclid: base64url; msclkid: hex; fbclid: letters and `_-`).
ClickId = Annotated[str, Strict(), Field(pattern=r"^[A-Za-z0-9._~-]{1,200}$")]


class Touch(BaseModel):
    """One landing on the shop: campaign parameters, click ids, the referring site, the search words.

    Strict: a number or an object where a string belongs is refused, not turned into text.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    utm_source: TouchValue | None = None
    utm_medium: TouchValue | None = None
    utm_campaign: TouchValue | None = None
    utm_term: TouchValue | None = None
    utm_content: TouchValue | None = None
    gclid: ClickId | None = None
    gbraid: ClickId | None = None
    wbraid: ClickId | None = None
    fbclid: ClickId | None = None
    msclkid: ClickId | None = None
    # The referring site's host name only (RFC 1035 length), never its full address.
    referrer: Annotated[str, Strict(), Field(pattern=r"^[A-Za-z0-9.-]{1,253}$")] | None = None
    search: TouchValue | None = None
    at: Annotated[int, Strict(), Field(ge=0, le=2**42)] | None = None  # when it happened, Unix ms


class Touches(BaseModel):
    """The visitor's first and last touch, as the widget kept them (`context.touch`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    first: Touch | None = None
    last: Touch | None = None


class CallContext(BaseModel):
    """What the widget knows of the shopper's visit when they call."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    page: str | None = Field(None, max_length=MAX_TEXT)
    title: str | None = Field(None, max_length=500)
    referrer: str | None = Field(None, max_length=MAX_TEXT)
    utm: Utm | None = None
    search: str | None = Field(None, max_length=500)
    cart_value: Amount | None = None
    currency: str | None = Field(None, max_length=3)
    product_price: Amount | None = None
    sku: str | None = Field(None, max_length=200)
    visitor: VisitorIdentity | None = None
    touch: Touches | None = None


class CallOffer(Incoming):
    type: Literal["call.offer"]
    sdp: str = Field(max_length=MAX_SDP)
    context: CallContext = CallContext()
    chat_id: Id | None = None  # the chat whose operator offered this call
    invitation: Id | None = None  # the operator's ring this call answers (`visitor_call`)


# A call's resume token as the server handed it out (`secrets.token_urlsafe`).
ResumeToken = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class CallResume(Incoming):
    """A new socket takes over its side of a call in progress (both sockets)."""

    type: Literal["call.resume"]
    call_id: Id
    resume_token: ResumeToken


class CallReoffer(Incoming):
    """A fresh offer on a new peer connection for this side's leg of a call in progress (both sockets)."""

    type: Literal["call.reoffer"]
    call_id: Id
    sdp: str = Field(max_length=MAX_SDP)


class ShopperHangup(Incoming):
    type: Literal["call.hangup"]


class ChatStart(Incoming):
    type: Literal["chat.start"]
    context: CallContext = CallContext()
    # Why the shopper is chatting instead of talking; a plain string names the member (strict mode
    # would want an enum instance, which JSON cannot carry).
    fallback: Annotated[Fallback, Strict(False)] | None = None
    call_id: Id | None = None  # the call this chat continues


class VisitorChatSend(Incoming):
    type: Literal["chat.send"]
    text: str = Field(max_length=MAX_CHAT_FRAME_TEXT)
    client_id: str | None = Field(None, max_length=64)


class VisitorTyping(Incoming):
    type: Literal["chat.typing"]
    text: str = Field("", max_length=MAX_CHAT_FRAME_TEXT)


class VisitorRead(Incoming):
    type: Literal["chat.read"]
    up_to: MessageNumber


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
    call_id: Id | None = None
    context: CallContext = CallContext()


class CallbackRequestFrame(Incoming):
    """Call me back: a phone number (checked by the domain: `bad_phone`) and when suits the shopper."""

    type: Literal["callback.request"]
    phone: str = Field(max_length=64)
    when: str | None = Field(None, max_length=200)
    call_id: Id | None = None
    context: CallContext = CallContext()


class VisitorCallDecline(Incoming):
    """The shopper declines the operator's ring (`cb-incoming-decline`)."""

    type: Literal["visitor_call.decline"]
    id: Id


class CsatRate(Incoming):
    """The shopper's rating of their conversation; the score's range is the domain's (`bad_score`)."""

    type: Literal["csat.rate"]
    conversation_id: Id
    score: Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
    comment: str | None = Field(None, max_length=4000)


class CsatDismiss(Incoming):
    """The shopper closed the "how was it?" card unanswered."""

    type: Literal["csat.dismiss"]
    conversation_id: Id


WidgetMessage = Annotated[
    CallbackRequestFrame
    | VisitorCallDecline
    | CallOffer
    | CallResume
    | CallReoffer
    | ShopperHangup
    | ChatStart
    | VisitorChatSend
    | VisitorTyping
    | VisitorRead
    | VisitorChatClose
    | TranscriptRequest
    | LeaveMessage
    | CsatRate
    | CsatDismiss
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
    operator_id: RowId


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
    up_to: MessageNumber


class ChatPick(Incoming):
    type: Literal["chat.pick"]
    chat_id: Id


class ChatTransfer(Incoming):
    type: Literal["chat.transfer"]
    chat_id: Id
    operator_id: RowId


class OperatorChatClose(Incoming):
    type: Literal["chat.close"]
    chat_id: Id


class ChatOfferCall(Incoming):
    type: Literal["chat.offer_call"]
    chat_id: Id


class MessageHandled(Incoming):
    type: Literal["message.handled"]
    id: Id


class OutcomeSave(Incoming):
    """The operator's note, tags and the order number taken in a call or chat (`op-outcome-save`)."""

    type: Literal["outcome.save"]
    conversation_id: Id
    note: str = Field("", max_length=4000)
    tags: list[Annotated[str, Field(max_length=50)]] = Field(default_factory=list, max_length=20)
    order: str = Field("", max_length=100)


class OutcomeGet(Incoming):
    """What is stored for a conversation, and the tags used on its site (the suggestions)."""

    type: Literal["outcome.get"]
    conversation_id: Id


class VisitorHistoryGet(Incoming):
    """The history of a conversation's visitor (the incoming card, the visitor panel), or of a visitor
    on the board (`visitor_id` and `site_id`)."""

    type: Literal["visitor.history"]
    conversation_id: Id | None = None
    visitor_id: Annotated[str, Field(pattern=VISITOR_TOKEN.pattern)] | None = None
    site_id: RowId | None = None


class CannedAdd(Incoming):
    type: Literal["canned.add"]
    site_id: RowId | None = None
    title: str = Field("", max_length=100)
    text: str = Field(max_length=MAX_CHAT_FRAME_TEXT)


class CannedRemove(Incoming):
    type: Literal["canned.remove"]
    id: RowId


class VisitorInvite(Incoming):
    """The operator invites a visitor from the board (`op-invite`)."""

    type: Literal["visitor.invite"]
    visitor_id: Id
    site_id: RowId


class VisitorCall(Incoming):
    """The operator rings a visitor on the site now (`op-call-visitor`, `op-callback-call`)."""

    type: Literal["visitor.call"]
    visitor_id: Id
    site_id: RowId
    callback_id: Id | None = None


class VisitorCallCancel(Incoming):
    type: Literal["visitor_call.cancel"]
    id: Id


class CallbackDone(Incoming):
    """What came of a call-back request (`op-callback-done`)."""

    type: Literal["callback.done"]
    id: Id
    outcome: Literal["reached", "no_answer", "wrong_number"]


OperatorMessage = Annotated[
    VisitorCall
    | VisitorCallCancel
    | CallbackDone
    | PresenceSet
    | CallAccept
    | CallDecline
    | OperatorHangup
    | CallHold
    | CallTransfer
    | CallResume
    | CallReoffer
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
    | OutcomeSave
    | OutcomeGet
    | VisitorHistoryGet
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


# A JSON string (escapes included), and the brackets that remain once strings are taken out.
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")
# Escapes that decode to text no store can keep: NUL (PostgreSQL refuses it) and lone UTF-16
# surrogates (not encodable as UTF-8, so neither storable nor sendable back).
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


def _too_deep(text: str) -> bool:
    depth = 0
    for bracket in _BRACKETS.findall(_JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_DEPTH:
            return True
    return False


def _unstorable(value: object) -> bool:
    """Whether a decoded value holds a string with NUL or a lone surrogate (depth is bounded already)."""
    if isinstance(value, str):
        return "\x00" in value or (not value.isascii() and _has_surrogate(value))
    if isinstance(value, dict):
        return any(_unstorable(k) or _unstorable(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_unstorable(v) for v in value)
    return False


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def load_json(text: str | bytes, what: str = "message") -> Any:
    """Parse a frame's JSON with bounded depth, finite numbers and storable strings, or raise BadMessage."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadMessage("bad_json", f"The {what} is not UTF-8 text.") from e
    if _too_deep(text):
        raise BadMessage("bad_json", f"The {what} is nested more than {MAX_DEPTH} levels deep.")
    try:
        raw = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise BadMessage("bad_json", f"The {what} is not valid JSON: {e.msg}.") from e
    except (ValueError, RecursionError) as e:
        # Numbers of more than 4,300 digits (Python's limit for int conversion), NaN and Infinity.
        raise BadMessage("bad_json", f"The {what} holds a number we do not accept.") from e
    if _SUSPECT_ESCAPE.search(text) and _unstorable(raw):
        raise BadMessage("bad_json", f"The {what} holds a NUL character or a lone surrogate.")
    return raw


def _problems(e: ValidationError, skip: int, whole: str) -> str:
    """The first few problems, each named by its field (`whole` when it is the value itself)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc'][skip:]) or whole}: {err['msg']}" for err in e.errors()[:3]
    )


def _decode(adapter: TypeAdapter[T], text: str) -> T:
    raw = load_json(text)
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise BadMessage("bad_message", "A message is a JSON object with a string `type`.")
    try:
        return adapter.validate_python(raw)
    except ValidationError as e:
        kind = raw["type"] if len(raw["type"]) <= 40 else raw["type"][:40] + "…"
        raise BadMessage("bad_message", f"Invalid {kind!r} message: {_problems(e, 1, 'type')}.") from e


def decode_widget(text: str) -> WidgetMessage:
    result: WidgetMessage = _decode(_widget_messages, text)
    return result


def decode_operator(text: str) -> OperatorMessage:
    result: OperatorMessage = _decode(_operator_messages, text)
    return result


def error(code: str, message: str, client_id: str | None = None) -> JsonObject:
    """The answer to a message refused (`wire/outbound.py`'s `Error` frame, as JSON)."""
    return outbound.Error(code, message, client_id).encode()


def internal_error(client_id: str | None = None) -> JsonObject:
    """The answer to a message that failed on the server's side (the socket stays open)."""
    return outbound.internal_error(client_id).encode()


# Beacons (`POST /widget/beacon`): page views and heartbeats, sent without a socket ----------------

MAX_BEACON_BYTES = 8 * 1024


class Beacon(BaseModel):
    """What the widget reports of a visit: `view` (a page opened), `ping` (still there), `leave`
    (the page is going away), `dismiss` (the visitor closed an invitation)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: Literal["view", "ping", "leave", "dismiss"]
    visitor: str = Field(pattern=VISITOR_TOKEN.pattern)
    view: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")
    page: str | None = Field(None, max_length=MAX_TEXT)
    title: str | None = Field(None, max_length=500)
    referrer: str | None = Field(None, max_length=MAX_TEXT)
    utm: Utm | None = None
    search: str | None = Field(None, max_length=200)
    product_name: str | None = Field(None, max_length=300)
    product_price: float | None = Field(None, ge=0, le=1e9, allow_inf_nan=False)
    sku: str | None = Field(None, max_length=200)
    currency: str | None = Field(None, max_length=3)
    cart_value: float | None = Field(None, ge=0, le=1e9, allow_inf_nan=False)
    seconds: float = Field(0.0, ge=0, le=7 * 24 * 3600, allow_inf_nan=False)
    returning: bool = False
    dismissed: bool = False  # the widget remembers an earlier "no thanks" (localStorage)


_beacons: TypeAdapter[Beacon] = TypeAdapter(Beacon)


def decode_beacon(body: bytes) -> Beacon:
    """A beacon's body (JSON sent as text/plain, so browsers send it without a CORS preflight)."""
    if len(body) > MAX_BEACON_BYTES:
        raise BadMessage("too_large", f"A beacon is at most {MAX_BEACON_BYTES} bytes.")
    raw = load_json(body, "beacon")
    try:
        return _beacons.validate_python(raw)
    except ValidationError as e:
        raise BadMessage("bad_message", f"Invalid beacon: {_problems(e, 0, 'body')}.") from e
