"""Two nodes in real browsers: the operator's softphone on node A, the shop embedding the widget from B.

A chat goes both ways and a call connects with audio both ways (the shopper's 440 Hz microphone, the
operator's 1000 Hz), each side in a Chromium process of its own (the fake microphone is per process).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Playwright, expect

from callserver.demo import shop_app
from tests.browsers import go_online, hears, launch, sign_in
from tests.cluster import add_operator, ended_call, operators_online, running_cluster
from tests.signing_in import PASSWORD
from tests.stack import free_port

pytestmark = pytest.mark.browser


async def test_a_shop_on_node_b_chats_and_talks_with_an_operator_on_node_a(
    tmp_path: Path, playwright: Playwright, tones: dict[str, Path]
) -> None:
    shop_port = free_port()
    shop_url = f"http://127.0.0.1:{shop_port}"
    async with running_cluster(tmp_path, origins=[shop_url]) as cluster:
        await add_operator(cluster, "anna@cluster.test")
        shop_runner = web.AppRunner(shop_app(cluster.b.url, cluster.site.key), access_log=None)
        await shop_runner.setup()
        await web.TCPSite(shop_runner, "127.0.0.1", shop_port).start()
        operator_browser = shopper_browser = None
        try:
            operator_browser = await launch(playwright, tones["operator"])
            shopper_browser = await launch(playwright, tones["shopper"])
            operator = await operator_browser.new_page()
            await sign_in(operator, cluster.a.url, "operator", "anna@cluster.test", PASSWORD)
            await go_online(operator)
            assert await operators_online(cluster.b, 1) == 1

            shop = await shopper_browser.new_page()
            await shop.goto(f"{shop_url}/products/oak-table")
            await shop.get_by_test_id("cb-launcher").click()
            await shop.get_by_test_id("cb-chat-open").click()
            status = shop.get_by_test_id("cb-status")
            await expect(status).to_contain_text("Chatting with anna", timeout=15_000)
            await shop.get_by_test_id("cb-chat-input").fill("Is the oak table in stock?")
            await shop.get_by_test_id("cb-chat-send").click()
            log = operator.get_by_test_id("op-chat-log")
            await expect(log).to_contain_text("Is the oak table in stock?", timeout=10_000)
            await operator.get_by_test_id("op-chat-input").fill("Yes, three are.")
            await operator.get_by_test_id("op-chat-send").click()
            await expect(shop.get_by_test_id("cb-chat-log")).to_contain_text("Yes, three are.")
            await expect(log).to_contain_text("✓✓ read")  # the widget on B read it: receipts came back

            await shop.get_by_test_id("cb-call").click()
            incoming = operator.get_by_test_id("op-incoming")
            await expect(incoming).to_have_count(1, timeout=15_000)
            call_id = await incoming.get_attribute("data-call-id")
            assert call_id
            await incoming.get_by_test_id("op-answer").click()
            await expect(status).to_contain_text("anna", timeout=15_000)
            await hears(operator, 440)  # the media lives on B; the softphone on A connects to it
            await hears(shop, 1000)
            await operator.get_by_test_id("op-hangup").click()
            await expect(status).to_contain_text("Call ended", timeout=10_000)
            record = await ended_call(cluster, call_id)
            assert record.end_reason == "completed"
        finally:
            for context in (shopper_browser, operator_browser):
                if context is not None and context.browser is not None:
                    await context.browser.close()
            await shop_runner.cleanup()
