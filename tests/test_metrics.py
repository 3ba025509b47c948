"""Operating a node: /metrics (token or loopback), admission control, JSON log lines with the call id."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from callserver.logs import JsonLines
from tests.stack import Stack, running_stack, settings_for


async def scrape(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics", headers=headers) as response:
        return response.status, await response.text()


def samples(text: str) -> dict[str, float]:
    """`name{labels}` → value, from Prometheus' text format."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


async def test_metrics_answer_on_loopback_without_a_token_but_not_through_a_proxy(stack: Stack) -> None:
    status, text = await scrape(stack.url)
    assert status == 200
    figures = samples(text)
    assert figures["callserver_calls_in_progress"] == 0
    assert figures["callserver_draining"] == 0
    status, text = await scrape(stack.url, {"X-Forwarded-For": "203.0.113.9"})
    assert status == 403
    assert json.loads(text)["error"]["code"] == "forbidden"


async def test_metrics_need_the_token_when_one_is_set(tmp_path: Path) -> None:
    async with running_stack(settings_for(tmp_path, metrics_token="s3cret-token")) as stack:
        for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
            status, text = await scrape(stack.url, headers)
            assert status == 401
            assert json.loads(text)["error"]["code"] == "unauthorized"
        status, text = await scrape(stack.url, {"Authorization": "Bearer s3cret-token"})
        assert status == 200 and "callserver_calls_in_progress" in text


async def test_a_call_shows_in_the_metrics_and_two_apps_keep_their_own(tmp_path: Path, stack: Stack) -> None:
    async with running_stack(settings_for(tmp_path / "other")) as other:  # a second app, same process
        softphone = await stack.sockets.operator("op@shop.example", online=True)
        shopper = await stack.sockets.shopper()
        call_id = await shopper.call()
        await softphone.receive("call.incoming")
        ringing = samples((await scrape(stack.url))[1])
        assert ringing["callserver_calls_in_progress"] == 1
        assert ringing["callserver_queue_depth{queue=calls}"] == 1
        assert ringing["callserver_call_setup_seconds_count"] == 1
        assert ringing["callserver_sockets{kind=operator}"] == 1
        assert ringing["callserver_sockets{kind=visitor}"] == 1
        await softphone.answer(call_id)
        await shopper.hears_audio()
        answered = samples((await scrape(stack.url))[1])
        assert answered["callserver_call_answer_seconds_count"] == 1
        assert answered["callserver_queue_depth{queue=calls}"] == 0
        await shopper.send({"type": "call.hangup"})
        await stack.ended_call(call_id)
        ended = samples((await scrape(stack.url))[1])
        assert ended["callserver_calls_in_progress"] == 0
        assert ended["callserver_packets_forwarded_total"] > 0
        untouched = samples((await scrape(other.url))[1])
        assert untouched["callserver_calls_started_total"] == 0
        assert ended["callserver_calls_started_total"] == 1


async def test_a_full_node_gives_the_third_call_the_all_busy_fallback(tmp_path: Path) -> None:
    async with running_stack(settings_for(tmp_path, max_calls_per_worker=2)) as stack:
        softphone = await stack.sockets.operator("op@shop.example", online=True)
        first = await stack.sockets.shopper("visitor-0001")
        second = await stack.sockets.shopper("visitor-0002")
        third = await stack.sockets.shopper("visitor-0003")
        first_id = await first.call()
        second_id = await second.call()
        await third.send(
            {"type": "call.offer", "sdp": await third.offer(), "context": {"page": "https://x/"}}
        )
        refused = await third.receive("error")
        assert refused["code"] == "all_busy"
        # The two calls admitted go on as if nothing happened: the first is answered and heard.
        await softphone.receive("call.incoming", lambda f: f["call"]["id"] == first_id)
        await softphone.answer(first_id)
        await first.hears_audio()
        assert (await stack.call(second_id)).state == "ringing"
        await first.nothing("call.ended", within=0.5)
        assert samples((await scrape(stack.url))[1])["callserver_calls_refused_total"] == 1
        # Room again once a call ends.
        await first.send({"type": "call.hangup"})
        await stack.ended_call(first_id)
        assert await third.call()


async def test_json_log_lines_carry_the_call_id(stack: Stack) -> None:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(JsonLines())
    logger = logging.getLogger("callserver")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        softphone = await stack.sockets.operator("op@shop.example", online=True)
        shopper = await stack.sockets.shopper()
        call_id = await shopper.call()
        await softphone.receive("call.incoming")
        await shopper.send({"type": "call.hangup"})
        await stack.ended_call(call_id)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    records = [json.loads(line) for line in lines]
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    ended = [r for r in records if r["message"].startswith(f"call {call_id} ended")]
    assert ended and ended[0]["call_id"] == call_id
