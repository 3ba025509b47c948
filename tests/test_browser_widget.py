"""What the widget tells a shopper when a call cannot get through (real Chromium)."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Playwright, expect
from sqlalchemy import func, select

from callserver.store.models import Call
from tests import peers
from tests.browsers import launch
from tests.stack import running_stack, settings_for


async def test_a_page_on_an_origin_the_site_does_not_allow_gets_no_call_and_says_why(
    tmp_path: Path, playwright: Playwright, tones: dict[str, Path]
) -> None:
    async with running_stack(settings_for(tmp_path)) as stack:
        browser = await launch(playwright, tones["shopper"])
        page = await browser.new_page()
        # The site allows http://127.0.0.1:PORT; the same shop reached as localhost is another origin.
        await page.goto(stack.shop_url.replace("127.0.0.1", "localhost"))
        await page.get_by_test_id("cb-launcher").click()
        await page.get_by_test_id("cb-call").click()
        await expect(page.get_by_test_id("cb-status")).to_contain_text("aren't enabled for this website")
        async with stack.database.session() as session:
            assert await session.scalar(select(func.count()).select_from(Call)) == 0
        await browser.browser.close()


async def test_nobody_answering_is_told_to_the_shopper(
    tmp_path: Path, playwright: Playwright, tones: dict[str, Path]
) -> None:
    async with running_stack(settings_for(tmp_path, ring_timeout=1)) as stack:
        await stack.add_user("op@shop.example")
        softphone = await peers.operator(stack, "op@shop.example")  # online, but lets it ring out
        browser = await launch(playwright, tones["shopper"])
        page = await browser.new_page()
        await page.goto(stack.shop_url)
        await page.get_by_test_id("cb-launcher").click()
        await page.get_by_test_id("cb-call").click()
        await expect(page.get_by_test_id("cb-status")).to_contain_text("Nobody could answer", timeout=15_000)
        async with stack.database.session() as session:
            calls = list(await session.scalars(select(Call)))
        assert [(c.state, c.end_reason) for c in calls] == [("ended", "missed")]
        await browser.browser.close()
        await softphone.close()
