"""The widget's socket refuses what it must and survives bad input (no browser needed)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from tests.stack import Stack


async def receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    message = await ws.receive(timeout=10)
    assert message.type is WSMsgType.TEXT, message
    data: dict[str, Any] = json.loads(message.data)
    return data


async def open_widget(
    session: aiohttp.ClientSession, stack: Stack, origin: str | None = None, key: str | None = None
) -> aiohttp.ClientWebSocketResponse:
    return await session.ws_connect(
        f"{stack.url}/ws/widget?site={key or stack.site.key}&visitor=test-visitor-1",
        origin=origin or stack.shop_url,
    )


async def test_unknown_site_and_foreign_origin_are_closed_with_a_reason(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        ws = await open_widget(session, stack, key="site_nope")
        message = await ws.receive(timeout=10)
        assert message.type is WSMsgType.CLOSE
        assert (ws.close_code, message.extra) == (4404, "unknown_site")

        ws = await open_widget(session, stack, origin="https://evil.example")
        message = await ws.receive(timeout=10)
        assert message.type is WSMsgType.CLOSE
        assert (ws.close_code, message.extra) == (4403, "origin_not_allowed")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "bad_json"),
        ("[1, 2]", "bad_message"),
        ('{"type": "call.teleport"}', "bad_message"),
        ('{"type": "call.offer", "sdp": 42}', "bad_message"),
        ('{"type": "call.offer", "sdp": "v=0\\r\\nthis is no sdp"}', "bad_offer"),
        ('{"type": "call.hangup"}', "no_call"),
    ],
)
async def test_bad_frames_get_an_error_and_the_socket_stays_open(stack: Stack, frame: str, code: str) -> None:
    async with aiohttp.ClientSession() as session:
        ws = await open_widget(session, stack)
        hello = await receive(ws)
        assert hello["type"] == "hello" and hello["visitor_token"] == "test-visitor-1"
        await ws.send_str(frame)
        reply = await receive(ws)
        assert reply["type"] == "error" and reply["code"] == code, reply
        assert reply["message"]
        await ws.send_json({"type": "ping"})
        assert (await receive(ws))["type"] == "pong"
        await ws.close()


async def test_oversized_frame_closes_the_socket_with_message_too_big(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        ws = await open_widget(session, stack)
        await receive(ws)
        await ws.send_str(json.dumps({"type": "call.offer", "sdp": "x" * 100_000}))
        message = await ws.receive(timeout=10)
        assert message.type is WSMsgType.CLOSE
        assert ws.close_code == 1009


async def test_widget_config_is_only_for_allowed_origins(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        url = f"{stack.url}/widget/config?site={stack.site.key}"
        async with session.get(url, headers={"Origin": stack.shop_url}) as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Origin"] == stack.shop_url
            body = await response.json()
            assert body["ice_servers"] == [] and body["site"]["name"] == "Test shop"
            # How long a call waits for a side that went away: the widget gives up on its own after it.
            assert body["resume_window"] == stack.switchboard.resume_window == 30
        async with session.get(url, headers={"Origin": "https://evil.example"}) as response:
            assert response.status == 403
            assert (await response.json())["error"]["code"] == "origin_not_allowed"
