"""The sockets under abuse: frames that used to kill a socket, floods from one address, races on first
contact, and sockets that go away in the middle of a call."""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiortc import RTCConfiguration, RTCPeerConnection
from sqlalchemy import func, select

from callserver import limits
from callserver.store.models import Call, CallEvent, Chat, LeftMessage, Visitor
from callserver.web.keys import CHAT_DESK, ROSTER
from tests.clocks import ManualClock
from tests.servers import postgres
from tests.sockets import Softphone, Widget, offer
from tests.stack import Stack, running_stack, settings_for

FLOODER = "198.51.100.66"  # documentation addresses (RFC 5737), sent as X-Forwarded-For
BYSTANDER = "203.0.113.7"


@pytest.fixture
async def proxied(tmp_path: Path) -> AsyncIterator[Stack]:
    """A server behind a trusted proxy: X-Forwarded-For says which address each shopper is at."""
    async with running_stack(settings_for(tmp_path, trust_forwarded_for=True)) as running:
        yield running


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def offer_sdp() -> str:
    """One real aiortc offer; the server answers each offer on a peer connection of its own, so one
    SDP serves many calls (what a flooding script would do: it costs the script nothing)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        return await offer(pc, 440)
    finally:
        await pc.close()


# 1. Frames that killed the sender's socket ---------------------------------------------------------


async def test_deep_json_and_huge_ids_get_a_coded_error_and_the_sockets_live_on(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    deep = '{"type": "chat.send", "text": "x", "context": ' + "[" * 5000 + "]" * 5000 + "}"
    anna = await stack.sockets.operator("anna@shop.example")
    page = await stack.sockets.shopper("visitor-abuse-01")
    await anna.online()
    await page.send({"type": "chat.start"})
    chat_id = (await anna.receive("chat.assigned"))["chat"]["id"]

    await page.ws.send_str(deep)
    assert (await page.receive("error"))["code"] == "bad_json"
    await page.send({"type": "chat.read", "up_to": 2**63})
    assert (await page.receive("error"))["code"] == "bad_message"
    await page.ws.send_str('{"type": "chat.send", "text": "\\ud800"}')
    assert (await page.receive("error"))["code"] == "bad_json"

    await anna.ws.send_str(deep.replace('"text"', '"chat_id": "x", "text"'))
    assert (await anna.receive("error"))["code"] == "bad_json"
    for frame in (
        {"type": "canned.remove", "id": 2**63},
        {"type": "chat.read", "chat_id": chat_id, "up_to": 2**64},
        {"type": "canned.add", "site_id": 2**63, "text": "hi"},
        {"type": "chat.transfer", "chat_id": chat_id, "operator_id": 2**70},
    ):
        await anna.send(frame)
        refused = await anna.receive("error")
        assert refused["code"] == "bad_message" and frame["type"] in refused["message"], refused

    # Both sockets still work: a chat message each way, and a read receipt with a sane number.
    await page.send({"type": "chat.send", "text": "still here", "client_id": "c1"})
    message_id = (await page.receive("chat.ack"))["message"]["id"]
    assert (await anna.receive("chat.message"))["message"]["text"] == "still here"
    await anna.send({"type": "chat.read", "chat_id": chat_id, "up_to": message_id})
    assert (await page.receive("chat.status", lambda f: f["status"] == "read"))["ids"] == [message_id]
    await anna.send({"type": "canned.remove", "id": 2**31 - 1})
    assert (await anna.receive("error"))["code"] == "unknown_chat"
    await page.close()
    await anna.close()
    assert not tracebacks(caplog)


async def test_a_bug_in_a_handler_answers_internal_error_and_logs_one_line(
    stack: Stack, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any) -> None:
        raise RuntimeError("a bug")

    # A stand-in for whatever bug a handler may still hide: the socket must outlive it.
    monkeypatch.setattr(stack.app[CHAT_DESK], "visitor_typing", broken)
    monkeypatch.setattr(stack.app[ROSTER], "set_presence", broken)
    anna = await stack.sockets.operator("anna@shop.example")
    page = await stack.sockets.shopper("visitor-abuse-02")
    await page.send({"type": "chat.typing", "text": "Hel"})
    assert (await page.receive("error"))["code"] == "internal_error"
    await anna.send({"type": "presence.set", "status": "online"})
    assert (await anna.receive("error"))["code"] == "internal_error"
    await page.send({"type": "ping"})
    await page.receive("pong")
    await anna.send({"type": "ping"})
    await anna.receive("pong")
    await page.close()
    await anna.close()
    failures = [r for r in caplog.records if "a bug" in r.getMessage()]
    assert len(failures) == 2 and not any(r.exc_info for r in failures)
    assert not any(r.exc_info for r in caplog.records)


# 3. Floods from one address --------------------------------------------------------------------------


async def test_widget_sockets_are_capped_per_address_and_others_still_connect(proxied: Stack) -> None:
    cap = proxied.settings.widget_sockets_per_address
    assert cap == 20  # the default
    url = f"{proxied.url}/ws/widget?site={proxied.site.key}&visitor="
    async with aiohttp.ClientSession() as session:
        opened: list[aiohttp.ClientWebSocketResponse] = []
        try:
            for i in range(cap):
                ws = await session.ws_connect(
                    f"{url}capped-{i:04}", origin=proxied.shop_url, headers={"X-Forwarded-For": FLOODER}
                )
                opened.append(ws)
                assert json.loads((await ws.receive(timeout=10)).data)["type"] == "hello"
            refused = await session.ws_connect(
                f"{url}capped-last", origin=proxied.shop_url, headers={"X-Forwarded-For": FLOODER}
            )
            message = await refused.receive(timeout=10)
            assert message.type is WSMsgType.CLOSE
            assert (refused.close_code, message.extra) == (4429, "too_many_connections")

            other = await proxied.sockets.shopper("someone-else-01", BYSTANDER)
            assert other.hello["type"] == "hello"
            await other.close()

            # One closes: room for one more from the same address (once the server has seen it go).
            await opened.pop().close()
            for _ in range(100):
                again = await session.ws_connect(
                    f"{url}capped-0000", origin=proxied.shop_url, headers={"X-Forwarded-For": FLOODER}
                )
                message = await again.receive(timeout=10)
                if message.type is WSMsgType.TEXT:
                    opened.append(again)
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the closed socket was never uncounted")
        finally:
            for ws in opened:
                await ws.close()


async def test_new_visitor_tokens_are_limited_per_address_but_known_ones_come_back(proxied: Stack) -> None:
    url = f"{proxied.url}/ws/widget?site={proxied.site.key}&visitor="
    burst = int(limits.NEW_VISITORS_BURST)
    async with aiohttp.ClientSession() as session:

        async def connect(token: str, address: str) -> aiohttp.WSMessage:
            ws = await session.ws_connect(
                f"{url}{token}", origin=proxied.shop_url, headers={"X-Forwarded-For": address}
            )
            try:
                return await ws.receive(timeout=10)
            finally:
                await ws.close()

        for i in range(burst):
            assert (await connect(f"fresh-{i:04}", FLOODER)).type is WSMsgType.TEXT
        refused = await connect("fresh-one-more", FLOODER)
        assert (refused.type, refused.extra) == (WSMsgType.CLOSE, "too_many_visitors")
        # No token at all is a new visitor too (the server makes one up): refused the same way.
        no_token = await connect("", FLOODER)
        assert (no_token.type, no_token.extra) == (WSMsgType.CLOSE, "too_many_visitors")
        # A visitor the address brought before is no new visitor; other addresses are not affected.
        assert (await connect("fresh-0000", FLOODER)).type is WSMsgType.TEXT
        assert (await connect("fresh-0000", BYSTANDER)).type is WSMsgType.TEXT


async def test_a_visitor_rings_one_call_at_a_time(proxied: Stack) -> None:
    sdp = await offer_sdp()
    anna = await proxied.sockets.operator("anna@shop.example")
    first = await proxied.sockets.shopper("one-call-visitor", BYSTANDER)
    second = await proxied.sockets.shopper("one-call-visitor", BYSTANDER)
    await anna.online()
    await first.send({"type": "call.offer", "sdp": sdp})
    call_id = (await first.receive("call.answer"))["call_id"]
    await anna.receive("call.incoming")
    # The same visitor on another page (or a script reusing the token) while that call rings.
    await second.send({"type": "call.offer", "sdp": sdp})
    assert (await second.receive("error"))["code"] == "call_in_progress"
    await anna.nothing("call.incoming", within=0.5)
    await first.send({"type": "call.hangup"})
    assert (await first.receive("call.ended"))["reason"] == "abandoned"
    # Once it stopped ringing, the visitor may call again.
    await second.send({"type": "call.offer", "sdp": sdp})
    assert (await second.receive("call.answer"))["call_id"] != call_id
    await second.send({"type": "call.hangup"})
    await second.receive("call.ended")


async def chat_round_trip(page: Widget, phone: Softphone, chat_id: str, n: int) -> float:
    """Seconds from the shopper's message to the operator's reply reaching the shopper."""
    started = time.perf_counter()
    await page.send({"type": "chat.send", "text": f"question {n}", "client_id": f"q{n}"})
    await phone.receive("chat.message", lambda f: f["message"]["text"] == f"question {n}", within=30)
    await phone.send({"type": "chat.send", "chat_id": chat_id, "text": f"answer {n}", "client_id": f"a{n}"})
    await page.receive("chat.message", lambda f: f["message"]["text"] == f"answer {n}", within=30)
    return time.perf_counter() - started


class Flood:
    """Call offers from one address, each on a new socket with a fresh visitor token, paced to
    `offers` in `seconds`; answered calls are kept ringing (their sockets stay open) until `close`."""

    def __init__(self, url: str, site_key: str, origin: str, sdp: str, offers: int, seconds: float) -> None:
        self.url, self.site_key, self.origin = url, site_key, origin
        self.sdp, self.offers, self.seconds = sdp, offers, seconds
        self.outcomes: dict[str, int] = {}
        self.ringing: list[aiohttp.ClientWebSocketResponse] = []

    def _count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    async def _one(self, session: aiohttp.ClientSession, i: int) -> None:
        ws = await session.ws_connect(
            f"{self.url}/ws/widget?site={self.site_key}&visitor=flood-{i:06}",
            origin=self.origin,
            headers={"X-Forwarded-For": FLOODER},
        )
        keep = False
        try:
            first = await ws.receive(timeout=30)
            if first.type is not WSMsgType.TEXT:
                self._count(f"closed:{first.extra}")
                return
            await ws.send_json({"type": "call.offer", "sdp": self.sdp})
            while True:
                reply = await ws.receive(timeout=30)
                if reply.type is not WSMsgType.TEXT:
                    self._count(f"closed:{reply.extra}")
                    return
                frame = json.loads(reply.data)
                if frame["type"] == "call.answer":
                    self._count("answered")
                    keep = True
                    self.ringing.append(ws)
                    return
                if frame["type"] == "error":
                    self._count(f"error:{frame['code']}")
                    return
        finally:
            if not keep:
                await ws.close()

    async def run(self, session: aiohttp.ClientSession) -> None:
        gap = self.seconds / self.offers
        attempts = []
        for i in range(self.offers):
            attempts.append(asyncio.ensure_future(self._one(session, i)))
            await asyncio.sleep(gap)
        for outcome in await asyncio.gather(*attempts, return_exceptions=True):
            if isinstance(outcome, BaseException):
                self._count(f"failed:{type(outcome).__name__}")

    async def close(self) -> None:
        for ws in self.ringing:
            await ws.close()


async def _flood_main(url: str, site_key: str, origin: str, sdp_file: str, offers: str, seconds: str) -> None:
    """The flooding script (run as a child process): prints its outcomes as one JSON line, then holds
    its ringing calls until its stdin closes."""
    sdp = await asyncio.to_thread(Path(sdp_file).read_text)
    flood = Flood(url, site_key, origin, sdp, int(offers), float(seconds))
    async with aiohttp.ClientSession() as session:
        try:
            print("flooding", flush=True)
            await flood.run(session)
            print(json.dumps(flood.outcomes), flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        finally:
            await flood.close()


class FloodProcess:
    """The flood in a process of its own, so that the bystander's figures measure the server's load,
    not the flooding client's (a real flood comes from another machine)."""

    def __init__(self, stack: Stack, sdp_file: Path, offers: int, seconds: float) -> None:
        self.root = Path(__file__).resolve().parents[1]
        self.args = [stack.url, stack.site.key, stack.shop_url, str(sdp_file), str(offers), str(seconds)]
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.test_socket_abuse", *self.args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            cwd=self.root,
        )  # fmt: skip
        assert self.process.stdout is not None
        # Started (imports take a few seconds): from here on the offers come.
        assert await asyncio.wait_for(self.process.stdout.readline(), 60) == b"flooding\n"

    async def outcomes(self) -> dict[str, int]:
        """Once every offer had its answer: what became of them."""
        assert self.process is not None and self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 120)
        assert line, "the flooding process ended without its outcomes"
        outcomes: dict[str, int] = json.loads(line)
        return outcomes

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 15)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def test_a_call_flood_with_fresh_tokens_rings_a_few_calls_and_the_bystander_still_chats_and_calls(
    proxied: Stack, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    sdp = await offer_sdp()
    sdp_file = tmp_path / "offer.sdp"
    sdp_file.write_text(sdp)
    offers = 500
    flood = FloodProcess(proxied, sdp_file, offers=offers, seconds=10)
    anna = await proxied.sockets.operator("anna@shop.example")
    bystander = await proxied.sockets.shopper("bystander-0001", BYSTANDER)
    await anna.online()
    await bystander.send({"type": "chat.start", "context": {"page": "https://shop.example/p/9"}})
    chat_id = (await anna.receive("chat.assigned"))["chat"]["id"]
    idle = [await chat_round_trip(bystander, anna, chat_id, n) for n in range(6)]

    await flood.start()
    started = time.monotonic()
    try:
        flooded = []
        for n in range(6, 14):
            await asyncio.sleep(1.1)  # spread over the flood (and within the visitor's own limit)
            flooded.append(await chat_round_trip(bystander, anna, chat_id, n))
        outcomes = await flood.outcomes()
        elapsed = time.monotonic() - started

        # While the flood's calls still ring, the bystander can call, and Anna is rung for it.
        await bystander.send({"type": "call.offer", "sdp": sdp})
        own_call = (await bystander.receive("call.answer", within=30))["call_id"]
        await anna.receive("call.incoming", lambda f: f["call"]["id"] == own_call, within=30)
        incoming = anna.frames_of("call.incoming")
        async with proxied.database.session() as db:
            flood_calls = await db.scalar(
                select(func.count(Call.id))
                .join(Visitor, Visitor.id == Call.visitor_id)
                .where(Visitor.token.like("flood-%"))
            )
    finally:
        await flood.stop()
    await bystander.send({"type": "call.hangup"})
    await bystander.close()
    await anna.close()

    # At most the address's call burst, plus what refilled while the flood lasted.
    most = int(limits.CALLS_BURST + elapsed * limits.CALLS_RATE) + 1
    print(f"\nflood of {offers} offers in {elapsed:.1f} s from one address: {outcomes}")
    print(f"calls recorded from the flood: {flood_calls} (at most {most}); incoming cards: {len(incoming)}")
    idle_ms, flooded_ms = statistics.median(idle) * 1000, statistics.median(flooded) * 1000
    print(f"bystander's chat round trip: idle {idle_ms:.1f} ms, during the flood {flooded_ms:.1f} ms")
    assert flood_calls is not None and outcomes.get("answered", 0) == flood_calls <= most
    assert len(incoming) <= most
    assert sum(outcomes.values()) == offers
    # The bystander's chat stays responsive; before the limits it took 1.7 s (some 100 times idle).
    assert flooded_ms < 10 * idle_ms
    assert not tracebacks(caplog)


# 4. Two sockets of a brand-new visitor at once ---------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
async def any_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else ""
    async with running_stack(settings_for(tmp_path, database_url=url)) as running:
        yield running


async def test_two_sockets_of_a_new_visitor_writing_at_once_both_store(any_database: Stack) -> None:
    stack = any_database
    anna = await stack.sockets.operator("anna@shop.example")
    await anna.online()
    for round in range(5):
        token = f"brand-new-{round:04}-{stack.database.url[:6]}"
        page = await stack.sockets.shopper(token)
        other_page = await stack.sockets.shopper(token)
        await asyncio.gather(
            page.send({"type": "message.leave", "email": "ann@example.com", "message": f"left {round}"}),
            other_page.send({"type": "chat.start", "context": {"page": "https://shop.example/"}}),
        )
        left = await page.receive("message.left")
        chat_id = (await anna.receive("chat.assigned"))["chat"]["id"]
        assert not page.frames_of("error") + other_page.frames_of("error")
        await other_page.send({"type": "chat.close"})
        await anna.receive("chat.closed")
        await other_page.close()
        await page.close()
        async with stack.database.session() as db:
            visitors = list(await db.scalars(select(Visitor).where(Visitor.token == token)))
            assert len(visitors) == 1
            message = await db.get(LeftMessage, left["id"])
            chat = await db.get(Chat, chat_id)
            assert message is not None and message.body == f"left {round}"
            assert chat is not None
            assert message.visitor_id == chat.visitor_id == visitors[0].id


# 5. Sockets that go away in the middle of a call ------------------------------------------------------


async def answered_call(stack: Stack) -> tuple[Widget, Softphone, str]:
    operator = await stack.sockets.operator("olga@shop.example", online=True)
    shopper = await stack.sockets.shopper("visitor-drops-01")
    call_id = await shopper.call()
    await operator.receive("call.incoming")
    await operator.answer(call_id)
    await shopper.receive("call.connected")
    return shopper, operator, call_id


async def ended_event(stack: Stack, call_id: str) -> dict[str, Any]:
    async with stack.database.session() as db:
        event = await db.scalar(
            select(CallEvent).where(CallEvent.call_id == call_id, CallEvent.name == "call.ended")
        )
        assert event is not None
        return dict(event.detail)


@pytest.fixture
async def clocked(tmp_path: Path) -> AsyncIterator[tuple[Stack, ManualClock]]:
    """A server whose resume window runs on a clock the test moves."""
    clock = ManualClock()
    async with running_stack(settings_for(tmp_path, ring_timeout=30), clock) as running:
        yield running, clock


async def test_a_shopper_whose_page_goes_away_mid_call_is_not_recorded_as_completed(
    clocked: tuple[Stack, ManualClock],
) -> None:
    stack, clock = clocked
    shopper, operator, call_id = await answered_call(stack)
    await shopper.ws.close()  # no call.hangup: the tab was closed or the network went
    # The call waits for the page to come back (`call.resume`); past the resume window it is lost.
    assert (await operator.receive("call.reconnecting"))["side"] == "shopper"
    clock.advance(stack.settings.resume_window + 1)
    ended = await operator.receive("call.ended")
    assert (ended["call_id"], ended["reason"]) == (call_id, "lost")
    record = await stack.ended_call(call_id)
    assert record.end_reason == "lost"
    detail = await ended_event(stack, call_id)
    assert (detail["why"], detail["by"]) == ("connection_lost", "shopper")
    # Olga is free for the next call.
    assert stack.switchboard.active_call_of(record.operator_id) is None


async def test_an_operator_whose_softphone_goes_away_mid_call_ends_it_and_the_shopper_is_told(
    clocked: tuple[Stack, ManualClock],
) -> None:
    stack, clock = clocked
    shopper, operator, call_id = await answered_call(stack)
    await operator.ws.close()
    assert (await shopper.receive("call.reconnecting"))["side"] == "operator"
    clock.advance(stack.settings.resume_window + 1)
    ended = await shopper.receive("call.ended")
    assert (ended["reason"], ended["why"]) == ("lost", "connection_lost")
    assert (await stack.ended_call(call_id)).end_reason == "lost"
    assert (await ended_event(stack, call_id))["by"] == "operator"


if __name__ == "__main__":
    asyncio.run(_flood_main(*sys.argv[1:]))
