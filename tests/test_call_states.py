"""How calls end: missed, abandoned, declined, and bad input from operators (Python peers, no browser)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.stack import Stack, running_stack, settings_for


@pytest.fixture
async def quick(tmp_path: Path) -> AsyncIterator[Stack]:
    """A stack whose calls ring each operator for 1.5 s."""
    async with running_stack(settings_for(tmp_path, ring_timeout=1.5, presence_grace=0.5)) as running:
        yield running


async def test_nobody_answers_within_the_ring_timeout_and_the_call_is_missed(quick: Stack) -> None:
    softphone = await quick.sockets.operator("op@shop.example", online=True)
    shopper = await quick.sockets.shopper()
    call_id = await shopper.call()
    assert (await softphone.receive("call.incoming"))["call"]["id"] == call_id
    withdrawn = await softphone.receive("call.withdrawn")
    assert withdrawn["reason"] == "timeout"
    assert (await shopper.receive("call.ended"))["reason"] == "missed"
    record = await quick.call(call_id)
    assert (record.state, record.end_reason, record.operator_id) == ("ended", "missed", None)


async def test_a_call_with_nobody_online_is_missed_at_once(quick: Stack) -> None:
    shopper = await quick.sockets.shopper()
    call_id = await shopper.call()
    assert (await shopper.receive("call.ended", within=3))["reason"] == "missed"
    assert (await quick.call(call_id)).end_reason == "missed"


async def test_shopper_leaving_while_it_rings_is_abandoned(stack: Stack) -> None:
    softphone = await stack.sockets.operator("op@shop.example", online=True)
    shopper = await stack.sockets.shopper()
    call_id = await shopper.call()
    await softphone.receive("call.incoming")
    await shopper.send({"type": "call.hangup"})
    assert (await softphone.receive("call.withdrawn"))["call_id"] == call_id
    assert (await shopper.receive("call.ended"))["reason"] == "abandoned"
    assert (await stack.call(call_id)).end_reason == "abandoned"

    # Closing the page has the same effect as hanging up, once the resume window has passed (a
    # reloaded page could still resume the call).
    stack.switchboard.resume_window = 0.5
    second = await shopper.call()
    await softphone.receive("call.incoming")
    await shopper.close()
    assert (await softphone.receive("call.withdrawn"))["reason"] == "abandoned"
    assert (await stack.call(second)).end_reason == "abandoned"


async def test_the_only_operator_declines(stack: Stack) -> None:
    softphone = await stack.sockets.operator("op@shop.example", online=True)
    shopper = await stack.sockets.shopper()
    call_id = await shopper.call()
    await softphone.receive("call.incoming")
    await softphone.send({"type": "call.decline", "call_id": call_id})
    assert (await shopper.receive("call.ended"))["reason"] == "declined"
    assert (await stack.call(call_id)).end_reason == "declined"


async def test_operator_socket_requires_a_login(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"{stack.url}/ws/operator")
        message = await ws.receive(timeout=10)
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert (ws.close_code, message.extra) == (4401, "login_required")


async def test_bad_operator_input_is_refused_and_the_call_in_progress_goes_on(stack: Stack) -> None:
    anna = await stack.sockets.operator("anna@shop.example", online=True)
    ben = await stack.sockets.operator("ben@shop.example")
    shopper = await stack.sockets.shopper()

    # Out of order: answering a call that does not exist.
    await ben.send({"type": "call.accept", "call_id": "no-such-call", "sdp": "v=0"})
    assert (await ben.receive("error"))["code"] == "unknown_call"

    call_id = await shopper.call()
    await anna.receive("call.incoming")
    await anna.answer(call_id)
    assert (await shopper.receive("call.connected"))["operator"]["name"] == "anna"

    for frame, code in [
        ("{oops", "bad_json"),
        ('{"type": "presence.set", "status": "asleep"}', "bad_message"),
        ('{"type": "call.hold", "call_id": 7, "on": "yes"}', "bad_message"),
        ('{"type": "call.accept", "call_id": "x"}', "bad_message"),
    ]:
        await ben.ws.send_str(frame)
        assert (await ben.receive("error"))["code"] == code
    await ben.send({"type": "call.hangup", "call_id": call_id})  # someone else's call
    assert (await ben.receive("error"))["code"] == "not_your_call"
    await ben.send({"type": "call.accept", "call_id": call_id, "sdp": "v=0\r\nbroken"})
    assert (await ben.receive("error"))["code"] in {"not_online", "call_not_ringing"}
    await ben.ws.send_str("x" * 200_000)
    closing = await ben.closed(within=10)
    assert closing.type is aiohttp.WSMsgType.CLOSE and ben.ws.close_code == 1009

    # The call in progress is untouched: still answered, audio still flowing both ways.
    await asyncio.sleep(1.0)
    record = await stack.call(call_id)
    assert record.state == "answered"
    stats = [s for s in (await anna.pc.getStats()).values() if s.type == "inbound-rtp"]
    assert stats and stats[0].packetsReceived > 20
    await anna.send({"type": "call.hangup", "call_id": call_id})
    assert (await shopper.receive("call.ended"))["reason"] == "completed"


@pytest.mark.parametrize(("trusted", "country"), [(True, "GB"), (False, None)])
async def test_the_shopper_s_country_comes_from_their_address_offline(
    tmp_path: Path, trusted: bool, country: str | None
) -> None:
    settings = settings_for(tmp_path, trust_forwarded_for=trusted, ring_timeout=1)
    async with running_stack(settings) as stack:
        # A UK address as a reverse proxy reports it; untrusted, the loopback peer counts (no country).
        shopper = await stack.sockets.shopper(address="81.2.69.160, 10.0.0.1")
        call_id = await shopper.call()
        record = await stack.ended_call(call_id)
        assert record.visitor.country == country
