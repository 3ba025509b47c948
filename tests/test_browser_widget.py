"""What the widget tells a shopper when a call cannot get through (real Chromium)."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import BrowserContext, Playwright, expect
from sqlalchemy import func, select

from callserver.store.models import Call
from tests.browsers import launch
from tests.sockets import Softphone
from tests.stack import running_stack, settings_for


async def close(context: BrowserContext) -> None:
    """Stop the browser process behind `context`."""
    assert context.browser is not None
    await context.browser.close()


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
        await close(browser)


async def test_nobody_answering_is_told_to_the_shopper(
    tmp_path: Path, playwright: Playwright, tones: dict[str, Path]
) -> None:
    async with running_stack(settings_for(tmp_path, ring_timeout=1)) as stack:
        await stack.sockets.operator("op@shop.example", online=True)  # online, but lets it ring out
        browser = await launch(playwright, tones["shopper"])
        page = await browser.new_page()
        await page.goto(stack.shop_url)
        await page.get_by_test_id("cb-launcher").click()
        await page.get_by_test_id("cb-call").click()
        await expect(page.get_by_test_id("cb-status")).to_contain_text("Nobody could answer", timeout=15_000)
        async with stack.database.session() as session:
            calls = list(await session.scalars(select(Call)))
        assert [(c.state, c.end_reason) for c in calls] == [("ended", "missed")]
        await close(browser)


async def _presence(phone: Softphone, status: str) -> None:
    await phone.send({"type": "presence.set", "status": status})
    await phone.receive("presence", lambda f: f["status"] == status)


async def test_with_nobody_online_the_launcher_says_so_and_opens_onto_the_message_form(
    tmp_path: Path, playwright: Playwright
) -> None:
    async with running_stack(settings_for(tmp_path)) as stack:
        await stack.add_user("op@shop.example")  # an operator exists, but is not online
        browser = await launch(playwright, None)
        try:
            page = await browser.new_page()
            await page.goto(stack.shop_url)
            launcher = page.get_by_test_id("cb-launcher")
            await expect(launcher).to_have_attribute("data-state", "offline")
            await expect(launcher).to_have_attribute("aria-label", "We're offline: leave us a message")
            await launcher.click()
            await expect(page.get_by_test_id("cb-offline-form")).to_be_visible()
            await expect(page.get_by_test_id("cb-status")).to_contain_text("Nobody is available")
            await expect(page.get_by_test_id("cb-call")).to_be_hidden()
            await expect(page.get_by_test_id("cb-chat-open")).to_be_hidden()
        finally:
            await close(browser)


async def test_the_open_panel_follows_operators_going_offline_and_online(
    tmp_path: Path, playwright: Playwright
) -> None:
    async with running_stack(settings_for(tmp_path)) as stack:
        op = await stack.sockets.operator("op@shop.example")
        await op.online()
        browser = await launch(playwright, None)
        try:
            page = await browser.new_page()
            await page.goto(stack.shop_url)
            launcher, form = page.get_by_test_id("cb-launcher"), page.get_by_test_id("cb-offline-form")
            call = page.get_by_test_id("cb-call")
            await expect(launcher).to_have_attribute("data-state", "online")
            await launcher.click()
            await expect(call).to_be_visible()
            await expect(form).to_be_hidden()

            await _presence(op, "offline")  # the last operator leaves while the panel is open
            await expect(form).to_be_visible()
            await expect(call).to_be_hidden()
            await expect(page.get_by_test_id("cb-chat-open")).to_be_hidden()
            await expect(launcher).to_have_attribute("data-state", "offline")

            await _presence(op, "online")  # back: calling is offered again
            await expect(call).to_be_visible()
            await expect(form).to_be_hidden()
            await expect(launcher).to_have_attribute("data-state", "online")

            # Someone typing in the form keeps it (and may call instead) when an operator returns.
            await _presence(op, "offline")
            await form.locator("textarea[name=message]").fill("Do you have it in walnut?")
            await _presence(op, "online")
            await expect(call).to_be_visible()
            await expect(form).to_be_visible()
            await expect(form.locator("textarea[name=message]")).to_have_value("Do you have it in walnut?")
        finally:
            await close(browser)


async def test_a_chat_in_progress_is_not_interrupted_when_the_operator_goes_offline(
    tmp_path: Path, playwright: Playwright
) -> None:
    async with running_stack(settings_for(tmp_path)) as stack:
        op = await stack.sockets.operator("op@shop.example")
        await op.online()
        browser = await launch(playwright, None)
        try:
            page = await browser.new_page()
            await page.goto(stack.shop_url)
            await expect(page.get_by_test_id("cb-launcher")).to_have_attribute("data-state", "online")
            await page.get_by_test_id("cb-launcher").click()
            await page.get_by_test_id("cb-chat-open").click()
            chat_id = (await op.receive("chat.assigned"))["chat"]["id"]
            await op.send({"type": "chat.send", "chat_id": chat_id, "text": "Hello, how can I help?"})
            log = page.get_by_test_id("cb-chat-log")
            await expect(log).to_contain_text("Hello, how can I help?")

            await _presence(op, "offline")
            await expect(page.get_by_test_id("cb-status")).to_contain_text("in the queue")
            await expect(log).to_contain_text("Hello, how can I help?")
            await expect(page.get_by_test_id("cb-chat-input")).to_be_visible()
            await expect(page.get_by_test_id("cb-offline-form")).to_be_hidden()
            await expect(page.get_by_test_id("cb-launcher")).to_have_attribute("data-state", "online")
        finally:
            await close(browser)
