"""Two nodes in real browsers: the operator's softphone on node A, the shop embedding the widget from B.

A chat goes both ways and a call connects with audio both ways (the shopper's 440 Hz microphone, the
operator's 1000 Hz), each side in a Chromium process of its own (the fake microphone is per process);
the visitors board on A follows a visit whose beacons go to B, and an invitation from A reaches it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import BrowserContext, Page, Playwright, expect

from callserver.demo import shop_app
from tests.browsers import go_online, hears, launch, sign_in
from tests.cluster import Cluster, add_operator, ended_call, operators_online, running_cluster
from tests.signing_in import PASSWORD
from tests.stack import free_port

pytestmark = pytest.mark.browser


@asynccontextmanager
async def shop_on_b(
    tmp_path: Path, playwright: Playwright, tones: dict[str, Path]
) -> AsyncIterator[tuple[Cluster, str, Page, Page]]:
    """A two-node cluster, the demo shop embedding the widget from B, Anna online in the softphone on A
    (her page, in a Chromium of its own) and a page of the shopper's Chromium."""
    shop_port = free_port()
    shop_url = f"http://127.0.0.1:{shop_port}"
    async with running_cluster(tmp_path, origins=[shop_url]) as cluster:
        shop_runner = web.AppRunner(shop_app(cluster.b.url, cluster.site.key), access_log=None)
        await shop_runner.setup()
        await web.TCPSite(shop_runner, "127.0.0.1", shop_port).start()
        browsers: list[BrowserContext] = []
        try:
            browsers.append(await launch(playwright, tones["operator"]))
            browsers.append(await launch(playwright, tones["shopper"]))
            await add_operator(cluster, "anna@cluster.test")
            operator = await browsers[0].new_page()
            await sign_in(operator, cluster.a.url, "operator", "anna@cluster.test", PASSWORD)
            await go_online(operator)
            assert await operators_online(cluster.b, 1) == 1
            yield cluster, shop_url, operator, await browsers[1].new_page()
        finally:
            for context in browsers:
                if context.browser is not None:
                    await context.browser.close()
            await shop_runner.cleanup()


async def test_a_shop_on_node_b_chats_and_talks_with_an_operator_on_node_a(
    tmp_path: Path, playwright: Playwright, tones: dict[str, Path]
) -> None:
    async with shop_on_b(tmp_path, playwright, tones) as (cluster, shop_url, operator, shop):
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


async def test_the_board_on_a_follows_a_visit_on_b_and_an_invitation_from_a_becomes_a_call(
    tmp_path: Path, playwright: Playwright, tones: dict[str, Path]
) -> None:
    async with shop_on_b(tmp_path, playwright, tones) as (cluster, shop_url, operator, shop):
        for seen, slug in enumerate(("brass-lamp", "oak-table"), start=1):
            await shop.goto(f"{shop_url}/products/{slug}")
            token = await shop.evaluate("CallButton.visitorToken()")
            row = operator.get_by_test_id("op-visitors").locator(f'[data-visitor-id="{token}"]')
            await expect(row).to_have_attribute("data-pages", str(seen), timeout=10_000)
        await expect(row).to_contain_text("Brass reading lamp")  # the journey, every beacon sent to B

        invite = row.get_by_test_id("op-invite")
        await expect(invite).to_be_enabled(timeout=10_000)  # the page's invitation stream is open on B
        await invite.click()
        bubble = shop.get_by_test_id("cb-invite")
        await expect(bubble).to_be_visible(timeout=10_000)
        await expect(bubble).to_contain_text("anna")
        await shop.get_by_test_id("cb-invite-call").click()

        incoming = operator.get_by_test_id("op-incoming")
        await expect(incoming).to_have_count(1, timeout=15_000)
        call_id = await incoming.get_attribute("data-call-id")
        assert call_id
        await incoming.get_by_test_id("op-answer").click()
        status = shop.get_by_test_id("cb-status")
        await expect(status).to_contain_text("anna", timeout=15_000)
        await hears(operator, 440)
        await hears(shop, 1000)
        await shop.get_by_test_id("cb-hangup").click()
        await expect(status).to_contain_text("Call ended", timeout=10_000)
        record = await ended_call(cluster, call_id)
        assert record.end_reason == "completed"
