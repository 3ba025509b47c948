"""Fuzzing the sockets: whatever a client sends, it gets a coded answer and its socket lives on.

Two layers. The decoders (`decode_widget`, `decode_operator`, `decode_beacon`) get arbitrary JSON-ish
values, arbitrary text and bytes, and mutations of valid messages: nothing but `BadMessage` may come out.
Then a running server gets a few hundred such frames over real `/ws/widget` and `/ws/operator`
sockets: every answer is an error frame with a code, or a normal frame; never `internal_error`, never a
closed socket, never an error logged; and a valid message afterwards still works.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from callserver.signaling import widget_socket
from callserver.wire.inbound import (
    MAX_DEPTH,
    BadMessage,
    decode_beacon,
    decode_operator,
    decode_widget,
)
from tests.sockets import Socket, Softphone, Widget
from tests.stack import Stack, running_stack, settings_for

T = TypeVar("T")

# How many examples each property tries (the live ones send one fuzzed frame and one ping per example).
DECODE_EXAMPLES = 400
LIVE_EXAMPLES = 150

# Valid messages of each socket, as the widget and the softphone send them (docs/signaling.md).
WIDGET_MESSAGES: list[dict[str, Any]] = [
    {"type": "ping"},
    {"type": "call.offer", "sdp": "v=0\r\n", "context": {"page": "https://shop.example/p/1"}},
    {"type": "call.hangup"},
    {
        "type": "chat.start",
        "context": {"page": "https://shop.example/", "utm": {"source": "news"}, "cart_value": 12.5},
        "fallback": "no_answer",
    },
    {"type": "chat.send", "text": "Hello", "client_id": "c-1"},
    {"type": "chat.typing", "text": "Hel"},
    {"type": "chat.read", "up_to": 3},
    {"type": "chat.close"},
    {"type": "chat.transcript", "email": "me@example.com"},
    {
        "type": "message.leave",
        "name": "Ann",
        "email": "ann@example.com",
        "phone": "+44 20 7946 0000",
        "message": "Call me back",
        "context": {"visitor": {"name": "Ann"}},
    },
]
OPERATOR_MESSAGES: list[dict[str, Any]] = [
    {"type": "ping"},
    {"type": "presence.set", "status": "online"},
    {"type": "call.accept", "call_id": "c0ffee", "sdp": "v=0\r\n"},
    {"type": "call.decline", "call_id": "c0ffee"},
    {"type": "call.hangup", "call_id": "c0ffee"},
    {"type": "call.hold", "call_id": "c0ffee", "on": True},
    {"type": "call.transfer", "call_id": "c0ffee", "operator_id": 2},
    {"type": "chat.send", "chat_id": "abc", "text": "Hi", "client_id": "o-1"},
    {"type": "chat.typing", "chat_id": "abc", "active": False},
    {"type": "chat.read", "chat_id": "abc", "up_to": 7},
    {"type": "chat.pick", "chat_id": "abc"},
    {"type": "chat.transfer", "chat_id": "abc", "operator_id": 2},
    {"type": "chat.close", "chat_id": "abc"},
    {"type": "chat.offer_call", "chat_id": "abc"},
    {"type": "message.handled", "id": "abc"},
    {"type": "canned.add", "site_id": 1, "title": "Hours", "text": "We open at 9."},
    {"type": "canned.remove", "id": 1},
    {"type": "visitor.invite", "visitor_id": "visitor-0001", "site_id": 1},
]
BEACON = {
    "kind": "view",
    "visitor": "visitor-0001",
    "view": "v1",
    "page": "https://shop.example/p/1",
    "utm": {"source": "news"},
    "product_price": 19.9,
    "seconds": 3.5,
}

# Numbers at the edges: past every integer column (2^31, 2^63), past JSON's safe integers (2^53), and
# past what Python converts from text at all (4,300 digits).
EDGE_INTEGERS = st.sampled_from([0, -1, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1])
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | EDGE_INTEGERS
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["\x00", "\ud800", "\udfff", "a\ud83d", "\U0001f600"])
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def nested(depth: int, inner: Any) -> Any:
    for _ in range(depth):
        inner = [inner]
    return inner


@st.composite
def mutated(draw: st.DrawFn, valid: list[dict[str, Any]]) -> dict[str, Any]:
    """A valid message with one to three of its fields replaced, removed, added or buried deep."""
    message = dict(draw(st.sampled_from(valid)))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from([*sorted(message), "extra"]))
        change = draw(st.sampled_from(["replace", "remove", "add", "bury"]))
        if change == "replace":
            message[key] = draw(json_values)
        elif change == "remove":
            message.pop(key, None)
        elif change == "add":
            message[draw(st.text(max_size=12))] = draw(json_values)
        else:
            message[key] = nested(draw(st.integers(1, 3 * MAX_DEPTH)), message.get(key))
    return message


def dumps(value: Any) -> str:
    # allow_nan: NaN and Infinity are what a hostile client sends, not what JSON allows.
    return json.dumps(value, allow_nan=True)


@st.composite
def frames(draw: st.DrawFn, valid: list[dict[str, Any]]) -> str:
    """Any frame a client might send: mutated messages, arbitrary values, cut or spliced text."""
    kind = draw(st.sampled_from(["mutated", "value", "text", "cut", "deep"]))
    if kind == "mutated":
        return dumps(draw(mutated(valid)))
    if kind == "value":
        return dumps(draw(json_values))
    if kind == "text":
        return draw(st.text(max_size=200))
    if kind == "cut":
        text = dumps(draw(mutated(valid)))
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(st.text(max_size=5)) + text[at + draw(st.integers(0, 3)) :]
    # Written as text: json.dumps itself cannot nest thousands deep.
    depth = draw(st.integers(MAX_DEPTH - 2, 6000))
    opening, closing = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    deep = opening * depth + "1" + closing * depth
    return dumps(draw(st.sampled_from(valid)))[:-1] + ', "context": ' + deep + "}"


def decodes_or_refuses(decode: Callable[[str], Any], frame: str) -> None:
    try:
        decode(frame)
    except BadMessage as e:
        assert e.code in {"bad_json", "bad_message"}, e.code
        assert e.message


def big_frames() -> list[str]:
    """The frames that killed sockets before (issue 9): deep nesting, ids past 64 bits, huge numbers."""
    return [
        "[" * 5000 + "]" * 5000,
        '{"type": "chat.send", "text": "x", "chat_id": "a", "x": ' + "[" * 5000 + "]" * 5000 + "}",
        '{"type": "chat.read", "chat_id": "a", "up_to": ' + str(2**63) + "}",
        '{"type": "canned.remove", "id": ' + str(2**64) + "}",
        '{"type": "ping", "x": ' + "9" * 5000 + "}",
        '{"type": "chat.send", "text": "\\ud800", "chat_id": "a"}',
    ]


@pytest.mark.parametrize("frame", big_frames())
def test_the_frames_that_killed_sockets_are_refused_with_a_code(frame: str) -> None:
    for decode in (decode_widget, decode_operator):
        with pytest.raises(BadMessage) as refused:
            decode(frame)
        assert refused.value.code in {"bad_json", "bad_message"}


def test_valid_messages_still_decode() -> None:
    for message in WIDGET_MESSAGES:
        assert decode_widget(json.dumps(message)).type == message["type"]
    for message in OPERATOR_MESSAGES:
        assert decode_operator(json.dumps(message)).type == message["type"]
    assert decode_beacon(json.dumps(BEACON).encode()).kind == "view"
    # Characters outside the BMP arrive as surrogate pairs in JSON escapes: those are fine.
    assert decode_widget('{"type": "chat.send", "text": "\\ud83d\\ude00"}').text == "\U0001f600"  # type: ignore[union-attr]


@settings(max_examples=DECODE_EXAMPLES, deadline=None)
@given(frames(WIDGET_MESSAGES))
def test_widget_decoding_refuses_anything_with_bad_message(frame: str) -> None:
    decodes_or_refuses(decode_widget, frame)


@settings(max_examples=DECODE_EXAMPLES, deadline=None)
@given(frames(OPERATOR_MESSAGES))
def test_operator_decoding_refuses_anything_with_bad_message(frame: str) -> None:
    decodes_or_refuses(decode_operator, frame)


@settings(max_examples=DECODE_EXAMPLES, deadline=None)
@given(st.one_of(frames([BEACON]).map(str.encode), st.binary(max_size=300)))
@example(b"\xff\xfe")
@example(("[" * 4000 + "]" * 4000).encode())
def test_beacon_decoding_refuses_anything_with_bad_message(body: bytes) -> None:
    try:
        beacon = decode_beacon(body)
    except BadMessage as e:
        assert e.code in {"bad_json", "bad_message", "too_large"}, e.code
    else:
        assert math.isfinite(beacon.seconds)


# Live sockets ------------------------------------------------------------------------------------
#
# Hypothesis drives synchronous tests, so the server and its sockets run on an event loop in a thread
# of their own, and each example hands its frame over to that loop.


class Errors(logging.Handler):
    """Keeps every record logged at ERROR or above, or with a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)


class LiveServer:
    """A running stack with one widget and one softphone socket, on an event loop in its own thread."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="live-server", daemon=True)
        self.exits = AsyncExitStack()
        self.frames_sent = 0

    def run(self, work: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout)

    async def _start(self) -> None:
        self.stack: Stack = await self.exits.enter_async_context(running_stack(settings_for(self.tmp)))
        self.softphone: Softphone = await self.stack.sockets.operator("op@fuzz.example", online=True)
        self.widget: Widget = await self.stack.sockets.shopper("visitor-fuzz-01")

    async def exchange(self, socket: Socket, frame: str) -> list[dict[str, Any]]:
        """Send `frame`, then a ping; every frame that arrived until the pong."""
        await socket.ws.send_str(frame)
        await socket.send({"type": "ping"})
        self.frames_sent += 1
        await socket.receive("pong", within=20)
        return socket.drain()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("fuzz"))
    errors = Errors()
    logging.getLogger().addHandler(errors)
    # The per-socket flood limit (40 frames, then 10 a second) would answer most fuzzed frames with
    # `rate_limited` before they reach the decoder and the handlers; raised here so they do reach them.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(widget_socket, "SOCKET_RATE", 10_000.0)
        patch.setattr(widget_socket, "SOCKET_BURST", 10_000.0)
        server.thread.start()
        try:
            server.run(server._start())
            server.errors = errors  # type: ignore[attr-defined]
            yield server
        finally:
            try:
                server.run(server.exits.aclose())
            finally:
                server.loop.call_soon_threadsafe(server.loop.stop)
                server.thread.join(10)
                server.loop.close()
                logging.getLogger().removeHandler(errors)
                print(f"\nlive fuzz: {server.frames_sent} frames sent over real sockets")


def check_answers(answers: list[dict[str, Any]], socket: Socket, errors: Errors) -> None:
    assert not socket.ws.closed, f"socket closed: {socket.ws.close_code}"
    for answer in answers:
        assert isinstance(answer.get("type"), str), answer
        if answer["type"] == "error":
            assert isinstance(answer.get("code"), str) and answer["code"] != "internal_error", answer
            assert isinstance(answer.get("message"), str) and answer["message"], answer
    assert not errors.records, [r.getMessage() for r in errors.records]


@settings(
    max_examples=LIVE_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frame=frames(WIDGET_MESSAGES))
def test_the_widget_socket_answers_every_fuzzed_frame_and_stays_open(live: LiveServer, frame: str) -> None:
    answers = live.run(live.exchange(live.widget, frame))
    check_answers(answers, live.widget, live.errors)  # type: ignore[attr-defined]


@settings(
    max_examples=LIVE_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frame=frames(OPERATOR_MESSAGES))
def test_the_operator_socket_answers_every_fuzzed_frame_and_stays_open(live: LiveServer, frame: str) -> None:
    answers = live.run(live.exchange(live.softphone, frame))
    check_answers(answers, live.softphone, live.errors)  # type: ignore[attr-defined]


def test_after_the_fuzz_both_sockets_still_serve_a_chat(live: LiveServer) -> None:
    async def chat() -> None:
        phone = live.softphone
        await phone.send({"type": "presence.set", "status": "online"})
        await phone.receive("presence", lambda f: f["status"] == "online")
        # The fuzzed widget's own chat limits may be spent (they are per visitor): it still answers,
        # and the fuzzed softphone takes a chat with a new visitor from start to reply.
        await live.widget.send({"type": "ping"})
        await live.widget.receive("pong")
        page = await live.stack.sockets.shopper("visitor-after-01")
        await page.send({"type": "chat.start", "context": {"page": "https://shop.example/after"}})
        chat_id = (
            await phone.receive("chat.assigned", lambda f: (f["chat"].get("page") or "").endswith("/after"))
        )["chat"]["id"]
        await page.send({"type": "chat.send", "text": "still there?", "client_id": "after-1"})
        said = await phone.receive("chat.message", lambda f: f["message"]["text"] == "still there?")
        assert said["chat_id"] == chat_id
        await phone.send({"type": "chat.send", "chat_id": chat_id, "text": "yes", "client_id": "r"})
        await page.receive("chat.message", lambda f: f["message"]["text"] == "yes")

    live.run(chat())
    assert not live.errors.records  # type: ignore[attr-defined]
