"""Calls that survive a lost socket: a page (or softphone) whose socket drops mid-call resumes it on a new
socket with its resume token; one that does not come back within `resume_window` ends the call `lost`.

Python peers with real aiortc peer connections; the media of the peers is left untouched when their
socket is closed, as when a phone's signaling connection breaks and its audio does not.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from callserver.store.models import CallEvent
from tests.clocks import ManualClock
from tests.signing_in import sign_in_form
from tests.sockets import Socket, Softphone, Widget
from tests.stack import Stack, running_stack, settings_for
from tests.test_media_forwarding import Listener, dominant_hz


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def held(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Stack]:
    """A server whose resume window (30 s, the default) runs on a clock the test moves."""
    async with running_stack(settings_for(tmp_path, ring_timeout=30), clock) as running:
        yield running


async def answered_call(stack: Stack, token: str = "visitor-resume-01") -> tuple[Widget, Softphone, str, Any]:
    operator = await stack.sockets.operator("olga@shop.example", "Olga", online=True)
    shopper = await stack.sockets.shopper(token)
    await shopper.send({"type": "call.offer", "sdp": await shopper.offer(440), "context": {}})
    answer = await shopper.receive("call.answer")
    await shopper.apply_answer(answer["sdp"])
    call_id = str(answer["call_id"])
    await operator.receive("call.incoming")
    await operator.send({"type": "call.accept", "call_id": call_id, "sdp": await operator.offer(1000)})
    accepted = await operator.receive("call.answer", lambda f: f["call_id"] == call_id)
    await operator.apply_answer(accepted["sdp"])
    await operator.receive("call.connected")
    await shopper.receive("call.connected")
    return shopper, operator, call_id, (answer["resume_token"], accepted["resume_token"])


async def events_of(stack: Stack, call_id: str) -> list[tuple[str, dict[str, Any]]]:
    async with stack.database.session() as db:
        rows = await db.scalars(select(CallEvent).where(CallEvent.call_id == call_id).order_by(CallEvent.id))
        return [(e.name, dict(e.detail or {})) for e in rows]


def keeps_hearing(listener: Listener, hz: float) -> None:
    assert abs(dominant_hz(listener.last()) - hz) < 15, dominant_hz(listener.last())


async def test_a_shopper_whose_socket_drops_resumes_the_call_on_a_new_socket(
    held: Stack, clock: ManualClock
) -> None:
    stack = held
    operator = await stack.sockets.operator("olga@shop.example", "Olga", online=True)
    shopper = await stack.sockets.shopper("visitor-resume-01")
    heard_by_shopper, heard_by_operator = Listener(shopper), Listener(operator)
    await shopper.send({"type": "call.offer", "sdp": await shopper.offer(440), "context": {}})
    answer = await shopper.receive("call.answer")
    assert len(answer["resume_token"]) >= 24
    await shopper.apply_answer(answer["sdp"])
    call_id = answer["call_id"]
    await operator.receive("call.incoming")
    await operator.answer(call_id, hz=1000)
    await heard_by_operator.hears(440)
    await heard_by_shopper.hears(1000)

    # The socket goes (the peer connection stays: media untouched): the call is held, not ended.
    await shopper.ws.close()
    reconnecting = await operator.receive("call.reconnecting")
    assert reconnecting == {"type": "call.reconnecting", "call_id": call_id, "side": "shopper"}
    await operator.nothing("call.ended", within=0.3)

    # Another socket of the page (a new one, as after a network change) shows the token and takes over.
    page = await stack.sockets.shopper("visitor-resume-01")
    await page.send({"type": "call.resume", "call_id": call_id, "resume_token": answer["resume_token"]})
    resumed = await page.receive("call.resumed")
    assert resumed == {
        "type": "call.resumed",
        "call_id": call_id,
        "state": "answered",
        "operator": {"name": "Olga"},
        "held": False,
    }
    assert (await operator.receive("call.reconnected"))["side"] == "shopper"
    await asyncio.sleep(1.0)
    keeps_hearing(heard_by_operator, 440)
    keeps_hearing(heard_by_shopper, 1000)

    # The window passing changes nothing for a side that came back.
    clock.advance(60)
    await operator.nothing("call.ended", within=0.3)

    # The new socket owns the call: it hangs up, and the call is one record, completed.
    await page.send({"type": "call.hangup"})
    assert (await operator.receive("call.ended"))["reason"] == "completed"
    record = await stack.ended_call(call_id)
    assert record.end_reason == "completed"
    names = [name for name, _ in await events_of(stack, call_id)]
    assert names.count("call.reconnecting") == 1 and names.count("call.reconnected") == 1
    assert names.index("call.reconnecting") < names.index("call.reconnected") < names.index("call.ended")
    assert record.quality["shopper"]["reconnects"] == 1
    assert record.quality["operator"]["reconnects"] == 0
    heard_by_shopper.stop()
    heard_by_operator.stop()

    # The dashboard's call page shows both events in its timeline.
    await stack.add_user("owner@shop.example", role="owner")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        form = await sign_in_form(session, stack.url, "dashboard", "owner@shop.example")
        async with session.post(f"{stack.url}/dashboard/login", data=form, allow_redirects=False) as response:
            assert response.status == 302
        async with session.get(f"{stack.url}/dashboard/calls/{call_id}") as response:
            assert response.status == 200
            html = await response.text()
    assert 'data-event="call.reconnecting"' in html and 'data-event="call.reconnected"' in html


async def test_a_side_that_does_not_come_back_within_the_window_ends_the_call_lost(
    held: Stack, clock: ManualClock
) -> None:
    stack = held
    shopper, operator, call_id, _ = await answered_call(stack)
    await shopper.ws.close()
    await operator.receive("call.reconnecting")
    clock.advance(29)
    await operator.nothing("call.ended", within=0.3)
    clock.advance(2)
    ended = await operator.receive("call.ended")
    assert ended["reason"] == "lost"
    record = await stack.ended_call(call_id)
    assert record.end_reason == "lost"
    detail = dict(await events_of(stack, call_id))["call.ended"]
    assert (detail["by"], detail["why"]) == ("shopper", "connection_lost")
    # Olga is free for the next call.
    assert stack.switchboard.active_call_of(record.operator_id) is None


async def test_an_operator_whose_softphone_drops_resumes_or_the_shopper_hears_lost(
    held: Stack, clock: ManualClock
) -> None:
    stack = held
    shopper, operator, call_id, (_, operator_token) = await answered_call(stack)
    await operator.ws.close()
    assert (await shopper.receive("call.reconnecting"))["side"] == "operator"
    # The softphone reloads: its hello names the call in progress, and the token takes it back.
    phone = await stack.sockets.softphone("olga@shop.example")
    assert phone.hello["active_call"] == call_id
    await phone.send({"type": "call.resume", "call_id": call_id, "resume_token": operator_token})
    resumed = await phone.receive("call.resumed")
    assert (resumed["state"], resumed["held"], resumed["call"]["id"]) == ("answered", False, call_id)
    assert (await shopper.receive("call.reconnected"))["side"] == "operator"
    clock.advance(31)
    await shopper.nothing("call.ended", within=0.3)
    # It goes again and stays away: the shopper is told the call was lost.
    await phone.ws.close()
    await shopper.receive("call.reconnecting")
    clock.advance(31)
    ended = await shopper.receive("call.ended")
    assert (ended["reason"], ended["why"]) == ("lost", "connection_lost")
    record = await stack.ended_call(call_id)
    assert record.end_reason == "lost"
    assert record.quality["operator"]["reconnects"] == 1


async def test_a_ringing_call_whose_shopper_page_is_gone_is_abandoned_once_the_window_passes(
    held: Stack, clock: ManualClock
) -> None:
    stack = held
    operator = await stack.sockets.operator("olga@shop.example", online=True)
    shopper = await stack.sockets.shopper("visitor-resume-02")
    call_id = await shopper.call()
    await operator.receive("call.incoming")
    await shopper.ws.close()
    await operator.nothing("call.withdrawn", within=0.3)  # it may come back: still ringing
    clock.advance(20)  # less than the ring timeout, less than the window
    await operator.nothing("call.withdrawn", within=0.2)
    clock.advance(11)
    withdrawn = await operator.receive("call.withdrawn")
    assert withdrawn["reason"] == "abandoned"
    assert (await stack.ended_call(call_id)).end_reason == "abandoned"


async def test_a_ringing_call_resumed_on_a_reloaded_page_is_answered_as_usual(held: Stack) -> None:
    stack = held
    operator = await stack.sockets.operator("olga@shop.example", "Olga", online=True)
    shopper = await stack.sockets.shopper("visitor-resume-03")
    await shopper.send({"type": "call.offer", "sdp": await shopper.offer(440), "context": {}})
    answer = await shopper.receive("call.answer")
    await shopper.apply_answer(answer["sdp"])
    call_id = answer["call_id"]
    await operator.receive("call.incoming")
    await shopper.ws.close()
    page = await stack.sockets.shopper("visitor-resume-03")
    await page.send({"type": "call.resume", "call_id": call_id, "resume_token": answer["resume_token"]})
    resumed = await page.receive("call.resumed")
    assert (resumed["state"], resumed["operator"]) == ("ringing", None)
    await operator.answer(call_id)
    assert (await page.receive("call.connected"))["operator"] == {"name": "Olga"}
    await page.send({"type": "call.hangup"})
    assert (await stack.ended_call(call_id)).end_reason == "completed"


async def test_a_half_open_old_socket_is_detached_when_another_resumes(held: Stack) -> None:
    stack = held
    shopper, operator, call_id, (token, _) = await answered_call(stack)
    page = await stack.sockets.shopper("visitor-resume-01")
    await page.send({"type": "call.resume", "call_id": call_id, "resume_token": token})
    await page.receive("call.resumed")
    assert (await shopper.receive("call.detached"))["call_id"] == call_id
    # The old socket closing now is nothing to the call, and its hang-up is refused.
    await shopper.send({"type": "call.hangup"})
    assert (await shopper.receive("error"))["code"] == "no_call"
    await shopper.ws.close()
    await operator.nothing("call.reconnecting", within=0.5)
    await operator.nothing("call.ended", within=0.1)
    await page.send({"type": "call.hangup"})
    assert (await operator.receive("call.ended"))["reason"] == "completed"


async def test_bad_resumes_get_coded_errors_and_the_call_goes_on(held: Stack) -> None:
    stack = held
    shopper, operator, call_id, (shopper_token, operator_token) = await answered_call(stack)
    stranger = await stack.sockets.shopper("visitor-stranger-1")

    async def refused(socket: Socket, frame: dict[str, Any]) -> str:
        await socket.send(frame)
        return str((await socket.receive("error"))["code"])

    resume = {"type": "call.resume", "call_id": call_id}
    assert await refused(stranger, {**resume, "resume_token": "x" * 32}) == "bad_resume_token"
    assert await refused(stranger, {**resume, "resume_token": operator_token}) == "bad_resume_token"
    unknown = {**resume, "call_id": "0" * 32, "resume_token": shopper_token}
    assert await refused(stranger, unknown) == "no_call"
    assert await refused(stranger, {**resume, "resume_token": "not a token!"}) == "bad_message"
    assert await refused(stranger, {"type": "call.resume", "call_id": call_id}) == "bad_message"
    # Another operator, with the operator's token even, cannot take Olga's call.
    other = await stack.sockets.operator("ivan@shop.example", online=True)
    assert await refused(other, {**resume, "resume_token": operator_token}) == "not_your_call"
    assert await refused(other, {**resume, "resume_token": shopper_token}) == "bad_resume_token"
    assert await refused(operator, {**resume, "resume_token": shopper_token}) == "bad_resume_token"
    # Nothing of it reached the call: no side was detached or told anything, and it still hangs up.
    await asyncio.sleep(0.3)
    for socket in (shopper, operator):
        assert not socket.frames_of("call.detached") + socket.frames_of("call.reconnecting")
    await shopper.send({"type": "call.hangup"})
    assert (await operator.receive("call.ended"))["reason"] == "completed"
    names = [name for name, _ in await events_of(stack, call_id)]
    assert "call.reconnecting" not in names
