"""Two real Chromium processes talk through the forwarding engine in media workers (the default)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Playwright, expect

from callserver.media.worker_pool import WorkerPoolEngine
from callserver.web.keys import MEDIA
from tests.browsers import go_online, hears, launch, sign_in
from tests.stack import PASSWORD, Stack, running_stack, settings_for
from tests.test_browser_call import place_call


@pytest.fixture
async def worker_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """A server as it runs by default on a two-core machine: the forwarding engine in two workers."""
    async with running_stack(settings_for(tmp_path, media_workers=2)) as running:
        yield running


async def test_browsers_hear_each_other_through_the_forwarding_engine(
    worker_stack: Stack, playwright: Playwright, tones: dict[str, Path]
) -> None:
    stack = worker_stack
    assert isinstance(stack.app[MEDIA], WorkerPoolEngine)
    await stack.add_user("anna@shop.example", name="Anna")
    operator_browser = await launch(playwright, tones["operator"])
    shopper_browser = await launch(playwright, tones["shopper"])
    operator = await operator_browser.new_page()
    await sign_in(operator, stack.url, "operator", "anna@shop.example", PASSWORD)
    await go_online(operator)
    shop = await shopper_browser.new_page()
    await shop.goto(f"{stack.shop_url}/products/oak-table")

    call_id = await place_call(shop, operator)
    # Ringing: the shopper hears the forwarder's pre-encoded 425 Hz ring-back.
    await hears(shop, 425, tolerance=15)
    await operator.get_by_test_id("op-incoming").get_by_test_id("op-answer").click()
    await expect(shop.get_by_test_id("cb-status")).to_contain_text("Anna", timeout=15_000)
    await hears(operator, 440)
    await hears(shop, 1000)
    # Browsers keep hearing each other (no stall once the stream switched from the tone to the voice).
    await operator.wait_for_timeout(2000)
    await hears(operator, 440)
    await hears(shop, 1000)

    await operator.get_by_test_id("op-hangup").click()
    await expect(shop.get_by_test_id("cb-status")).to_contain_text("Call ended", timeout=10_000)
    record = await stack.call(call_id)
    assert record.end_reason == "completed"
    for leg in ("shopper", "operator"):
        figures = record.quality[leg]
        assert figures["packets_received"] > 50 and figures["packets_sent"] > 50
        assert figures["relayed"] is False
        # The browsers' receiver reports about the forwarder's stream came back (RTT from LSR/DLSR).
        assert figures["rtt_ms"] is not None
    await shopper_browser.browser.close()
    await operator_browser.browser.close()
