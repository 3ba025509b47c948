"""The operator's softphone in real Chromium: sign-in, staying connected, and how a call rings."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from aiohttp import WSCloseCode
from playwright.async_api import Playwright, expect

from callserver.web.keys import SOCKETS
from tests import peers
from tests.browsers import go_online, launch, sign_in
from tests.stack import PASSWORD, Stack


async def test_wrong_password_is_refused_with_a_message(stack: Stack, playwright: Playwright) -> None:
    await stack.add_user("op@shop.example")
    browser = await launch(playwright, None)
    page = await browser.new_page()
    await page.goto(f"{stack.url}/operator/")
    assert page.url.endswith("/operator/login")
    await page.fill("input[name=email]", "op@shop.example")
    await page.fill("input[name=password]", "not the password")
    await page.click("button[type=submit]")
    await expect(page.get_by_role("alert")).to_have_text("Wrong e-mail or password.")
    assert "callserver_session" not in {c["name"] for c in await browser.cookies()}
    await browser.browser.close()


async def test_softphone_reconnects_by_itself_and_rings_with_a_flashing_title(
    stack: Stack, playwright: Playwright, tones: dict[str, Path]
) -> None:
    await stack.add_user("op@shop.example")
    browser = await launch(playwright, tones["operator"])
    page = await browser.new_page()
    await sign_in(page, stack.url, "operator", "op@shop.example", PASSWORD)
    await go_online(page)
    cookie = next(c for c in await browser.cookies() if c["name"] == "callserver_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"

    # The connection drops (a proxy restart, a network blip): the softphone says so and comes back.
    for ws in list(stack.app[SOCKETS]):
        await ws.close(code=WSCloseCode.SERVICE_RESTART, message=b"restart")
    await expect(page.get_by_text("Reconnecting…")).to_be_visible()
    await expect(page.get_by_text("Reconnecting…")).to_be_hidden(timeout=10_000)
    await expect(page.get_by_test_id("op-presence")).to_have_value("online")
    await expect(page.get_by_test_id("op-presence")).to_be_enabled()

    async with aiohttp.ClientSession() as session:
        shopper = await peers.shopper(session, stack)
        await peers.call(shopper, page="https://shop.example/products/sofa")
        row = page.get_by_test_id("op-incoming")
        await expect(row).to_have_count(1)
        await expect(row).to_contain_text("products/sofa")
        # Functions, not expressions: the page's CSP refuses the eval Playwright would use for those.
        await page.wait_for_function("() => document.title.includes('Incoming call')")
        await shopper.send(type="call.hangup")
        await expect(row).to_have_count(0)
        await page.wait_for_function("() => !document.title.includes('Incoming call')")
        await shopper.close()
    await browser.browser.close()


async def test_signing_out_needs_the_page_s_own_form(stack: Stack, playwright: Playwright) -> None:
    await stack.add_user("op@shop.example")
    browser = await launch(playwright, None)
    page = await browser.new_page()
    await sign_in(page, stack.url, "operator", "op@shop.example", PASSWORD)
    # A form on another site posting to our sign-out is refused; the session stays.
    forged = await page.request.post(f"{stack.url}/operator/logout", form={"csrf": "forged"})
    assert forged.status == 403
    await page.reload()
    await expect(page.get_by_test_id("op-presence")).to_be_visible()
    await page.get_by_role("button", name="Log out").click()
    await page.wait_for_url(f"{stack.url}/operator/login")
    await page.goto(f"{stack.url}/operator/")
    assert page.url.endswith("/operator/login")
    await browser.browser.close()
