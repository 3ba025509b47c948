"""Who rings and who gets a chat: real server, softphone and widget sockets, aiortc peers for audio."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import update

from callserver.store.models import Site
from callserver.web.keys import ROSTER
from tests.clocks import ManualClock
from tests.stack import Stack, running_stack, settings_for


@pytest.fixture
async def fast_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(settings_for(tmp_path, ring_timeout=1.5, max_chats=1)) as running:
        yield running


RING_TIMEOUT = 1.5


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def clocked_stack(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Stack]:
    """A stack whose ring timeouts run on `clock`: the test rings out by moving it, not by sleeping."""
    settings = settings_for(tmp_path, ring_timeout=RING_TIMEOUT, max_chats=1)
    async with running_stack(settings, clock) as running:
        yield running


async def ring_out(clock: ManualClock) -> None:
    """Let the ring that is armed now time out (waits, briefly, for the switchboard to arm it)."""
    for _ in range(200):
        if clock.pending():
            break
        await asyncio.sleep(0.01)
    clock.advance(RING_TIMEOUT)


async def set_strategy(stack: Stack, strategy: str) -> None:
    async with stack.database.session() as session:
        await session.execute(update(Site).where(Site.id == stack.site.id).values(ring_strategy=strategy))


@pytest.mark.parametrize("first_does", ["decline", "time_out"])
async def test_the_second_operator_rings_when_the_first_declines_or_times_out(
    clocked_stack: Stack, clock: ManualClock, first_does: str
) -> None:
    stack = clocked_stack
    anna = await stack.sockets.operator("anna@shop.example", "Anna")
    ben = await stack.sockets.operator("ben@shop.example", "Ben")
    shopper = await stack.sockets.shopper("visitor-calls-1")
    await anna.online()  # online first: idle longest, rung first
    await ben.online()
    await shopper.send({"type": "call.offer", "sdp": await shopper.offer()})
    call_id = (await shopper.receive("call.answer"))["call_id"]
    await anna.receive("call.incoming", lambda f: f["call"]["id"] == call_id)
    await ben.nothing("call.incoming", within=0.3)
    if first_does == "decline":
        await anna.send({"type": "call.decline", "call_id": call_id})
        await anna.receive("call.withdrawn", lambda f: f["reason"] == "declined")
    else:
        await ring_out(clock)
        await anna.receive("call.withdrawn", lambda f: f["reason"] == "timeout", within=5)
    await ben.receive("call.incoming", lambda f: f["call"]["id"] == call_id)

    # Ben lets it ring out too: the call ends missed and the widget learns why.
    await ring_out(clock)
    ended = await shopper.receive("call.ended", within=5)
    assert ended["reason"] == "missed"
    assert ended["why"] == "no_answer"
    record = await stack.call(call_id)
    assert (record.state, record.end_reason) == ("ended", "missed")

    # The call falls back to a chat in the same conversation; the operator sees it was a call.
    await shopper.send({"type": "chat.start", "fallback": "no_answer", "call_id": call_id})
    assigned = await anna.receive("chat.assigned", within=5)
    assert assigned["chat"]["call_id"] == call_id and assigned["chat"]["fallback"] == "no_answer"
    assert "nobody answered" in assigned["messages"][0]["text"]


async def test_ring_all_rings_everyone_and_the_first_answer_wins(fast_stack: Stack) -> None:
    stack = fast_stack
    await set_strategy(stack, "ring_all")
    anna = await stack.sockets.operator("anna@shop.example", "Anna")
    ben = await stack.sockets.operator("ben@shop.example", "Ben")
    shopper = await stack.sockets.shopper("visitor-calls-2")
    await anna.online()
    await ben.online()
    await shopper.send({"type": "call.offer", "sdp": await shopper.offer()})
    answer = await shopper.receive("call.answer")
    await shopper.apply_answer(answer["sdp"])
    call_id = answer["call_id"]
    await anna.receive("call.incoming")
    await ben.receive("call.incoming")
    await ben.send({"type": "call.accept", "call_id": call_id, "sdp": await ben.offer()})
    await ben.apply_answer((await ben.receive("call.answer"))["sdp"])
    await ben.receive("call.connected")
    await anna.receive("call.withdrawn", lambda f: f["reason"] == "answered_elsewhere")
    connected = await shopper.receive("call.connected")
    assert connected["operator"]["name"] == "Ben"
    await shopper.send({"type": "call.hangup"})
    await ben.receive("call.ended")


async def test_nobody_free_ends_the_call_at_once_with_the_reason(fast_stack: Stack) -> None:
    stack = fast_stack
    shopper = await stack.sockets.shopper("visitor-calls-3")
    await shopper.send({"type": "call.offer", "sdp": await shopper.offer()})
    ended = await shopper.receive("call.ended")
    assert (ended["reason"], ended["why"]) == ("missed", "nobody_online")
    await shopper.send({"type": "chat.start", "fallback": "no_answer"})
    assert (await shopper.receive("error"))["code"] == "nobody_online"


async def test_an_operator_at_the_chat_limit_gets_no_new_chat_and_the_queue_drains(fast_stack: Stack) -> None:
    stack = fast_stack  # max_chats=1
    anna = await stack.sockets.operator("anna@shop.example", "Anna")
    first = await stack.sockets.shopper("visitor-chat-1")
    second = await stack.sockets.shopper("visitor-chat-2")
    third = await stack.sockets.shopper("visitor-chat-3")
    await anna.online()
    await first.send({"type": "chat.start"})
    chat_1 = (await anna.receive("chat.assigned"))["chat"]["id"]
    state = await first.receive("chat.history")
    assert state["chat"]["state"] == "open" and state["chat"]["operator"]["name"] == "Anna"

    await second.send({"type": "chat.start"})
    waiting = await second.receive("chat.history")
    assert waiting["chat"] == {"id": waiting["chat"]["id"], "state": "waiting", "position": 1}
    await third.send({"type": "chat.start"})
    assert (await third.receive("chat.history"))["chat"]["position"] == 2
    await anna.nothing("chat.assigned", within=0.3)
    queue = await anna.receive("chat.queue", lambda f: len(f["chats"]) == 2)
    chat_2 = queue["chats"][0]["id"]

    await anna.send({"type": "chat.pick", "chat_id": chat_2})
    assert (await anna.receive("error"))["code"] == "chat_limit"

    # Closing her chat frees Anna: the oldest waiting chat comes to her, the next moves up.
    await anna.send({"type": "chat.close", "chat_id": chat_1})
    await anna.receive("chat.closed", lambda f: f["chat_id"] == chat_1)
    assert await first.receive("chat.state", lambda f: f["chat"]["state"] == "closed")
    assigned = await anna.receive("chat.assigned")
    assert assigned["chat"]["id"] == chat_2
    await second.receive("chat.state", lambda f: f["chat"]["state"] == "open")
    await third.receive("chat.state", lambda f: f["chat"].get("position") == 1)

    # A colleague coming online takes the rest of the queue.
    ben = await stack.sockets.operator("ben@shop.example", "Ben")
    await ben.online()
    await ben.receive("chat.assigned")
    opened = await third.receive("chat.state", lambda f: f["chat"]["state"] == "open")
    assert opened["chat"]["operator"]["name"] == "Ben"


async def test_new_chats_go_to_the_least_loaded_operator(tmp_path: Path) -> None:
    async with running_stack(settings_for(tmp_path, max_chats=5)) as stack:
        anna = await stack.sockets.operator("anna@shop.example", "Anna")
        ben = await stack.sockets.operator("ben@shop.example", "Ben")
        one = await stack.sockets.shopper("visitor-load-1")
        two = await stack.sockets.shopper("visitor-load-2")
        three = await stack.sockets.shopper("visitor-load-3")
        await anna.online()
        await ben.online()
        owners = []
        for shopper in (one, two, three):
            await shopper.send({"type": "chat.start"})
            owners.append((await shopper.receive("chat.history"))["chat"]["operator"]["name"])
        assert sorted(owners[:2]) == ["Anna", "Ben"]
        loads = sorted(len(stack.app[ROSTER].seat_of(p.account_id).chats) for p in (anna, ben))
        assert loads == [1, 2]


async def test_a_chat_is_transferred_with_its_history(fast_stack: Stack) -> None:
    stack = fast_stack
    anna = await stack.sockets.operator("anna@shop.example", "Anna")
    ben = await stack.sockets.operator("ben@shop.example", "Ben")
    shopper = await stack.sockets.shopper("visitor-transfer-1")
    await anna.online()
    await shopper.send({"type": "chat.start"})
    chat_id = (await anna.receive("chat.assigned"))["chat"]["id"]
    await shopper.send({"type": "chat.send", "text": "Do you deliver to Norway?", "client_id": "c1"})
    await anna.receive("chat.message")
    await ben.online()
    await anna.send({"type": "chat.transfer", "chat_id": chat_id, "operator_id": ben.account_id})
    closed = await anna.receive("chat.closed")
    assert closed == {"type": "chat.closed", "chat_id": chat_id, "reason": "transferred"}
    assigned = await ben.receive("chat.assigned")
    texts = [m["text"] for m in assigned["messages"]]
    assert "Do you deliver to Norway?" in texts and any("passed the chat to Ben" in t for t in texts)
    state = await shopper.receive("chat.state", lambda f: f["chat"].get("operator", {}).get("name") == "Ben")
    assert state["chat"]["state"] == "open"
    await ben.send({"type": "chat.send", "chat_id": chat_id, "text": "Yes, we do.", "client_id": "b1"})
    assert (await shopper.receive("chat.message", lambda f: f["message"]["sender"] == "operator"))["message"][
        "operator"
    ]["name"] == "Ben"


async def test_a_call_is_transferred_and_the_new_leg_replaces_the_first(fast_stack: Stack) -> None:
    stack = fast_stack
    anna = await stack.sockets.operator("anna@shop.example", "Anna")
    ben = await stack.sockets.operator("ben@shop.example", "Ben")
    shopper = await stack.sockets.shopper("visitor-transfer-2")
    await anna.online()
    await shopper.send({"type": "call.offer", "sdp": await shopper.offer()})
    answer = await shopper.receive("call.answer")
    await shopper.apply_answer(answer["sdp"])
    call_id = answer["call_id"]
    await anna.receive("call.incoming")
    await anna.send({"type": "call.accept", "call_id": call_id, "sdp": await anna.offer()})
    await anna.apply_answer((await anna.receive("call.answer"))["sdp"])
    await anna.receive("call.connected")
    await shopper.receive("call.connected")
    await ben.online()

    await anna.send({"type": "call.transfer", "call_id": call_id, "operator_id": ben.account_id})
    incoming = await ben.receive("call.incoming")
    assert incoming["call"]["id"] == call_id and incoming["call"]["transfer_from"]["name"] == "Anna"
    await ben.send({"type": "call.accept", "call_id": call_id, "sdp": await ben.offer()})
    await ben.apply_answer((await ben.receive("call.answer"))["sdp"])
    await ben.receive("call.connected")
    assert (await anna.receive("call.transferred"))["to"]["name"] == "Ben"
    assert (await shopper.receive("call.connected"))["operator"]["name"] == "Ben"
    await ben.hears_audio()  # the shopper's leg is bridged to Ben's new leg

    record = await stack.call(call_id)
    assert record.state == "answered" and record.operator_id == ben.account_id
    assert stack.switchboard.active_call_of(anna.account_id) is None
    await ben.send({"type": "call.hangup", "call_id": call_id})
    assert (await shopper.receive("call.ended"))["reason"] == "completed"
