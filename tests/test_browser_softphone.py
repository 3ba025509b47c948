"""The operator's softphone in real Chromium: sign-in, staying connected, and how a call rings."""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import WSCloseCode
from playwright.async_api import Page, Playwright, expect

from callserver import i18n
from callserver.web.keys import SOCKETS
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

    shopper = await stack.sockets.shopper()
    await shopper.call(page="https://shop.example/products/sofa")
    row = page.get_by_test_id("op-incoming")
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text("products/sofa")
    # Functions, not expressions: the page's CSP refuses the eval Playwright would use for those.
    await page.wait_for_function("() => document.title.includes('Incoming call')")
    await shopper.send({"type": "call.hangup"})
    await expect(row).to_have_count(0)
    await page.wait_for_function("() => !document.title.includes('Incoming call')")
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


# Every text on the softphone page: text nodes (hidden ones too: they show later), labels, placeholders
# and the title. A function, not an expression: the page's CSP refuses eval.
PAGE_TEXTS = """() => {
  const texts = [document.title];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) texts.push(node.textContent);
  for (const node of document.querySelectorAll('[aria-label], [placeholder], [title]')) {
    for (const name of ['aria-label', 'placeholder', 'title']) texts.push(node.getAttribute(name) || '');
  }
  return texts.map((text) => text.trim()).filter(Boolean);
}"""


def english_on(texts: list[str], language: str) -> list[str]:
    """The texts that are the English pack's where `language` says it otherwise (placeholders filled)."""
    english, own = i18n.pack("en")["softphone"], i18n.pack(language)["softphone"]
    patterns = [
        re.compile(".+".join(re.escape(part) for part in re.split(r"\{\w+\}", text)))
        for key, text in english.items()
        if text != own[key]
    ]
    return sorted({text for text in texts if any(p.fullmatch(text) for p in patterns)})


async def shows_no_english(page: Page, seen: list[str]) -> None:
    texts = await page.evaluate(PAGE_TEXTS)
    seen.extend(texts)
    assert english_on(texts, "de") == []


async def test_an_operator_whose_browser_speaks_german_gets_every_softphone_text_in_german(
    stack: Stack, playwright: Playwright, tones: dict[str, Path]
) -> None:
    await stack.add_user("olga@shop.example", name="Olga")
    browser = await launch(playwright, tones["operator"], locale="de-DE")
    process = browser.browser
    assert process is not None
    seen: list[str] = []
    try:
        page = await browser.new_page()
        await sign_in(page, stack.url, "operator", "olga@shop.example", PASSWORD)
        await go_online(page)
        await expect(page.locator("html")).to_have_attribute("lang", "de")
        await expect(page.get_by_role("button", name="Abmelden")).to_be_visible()
        await shows_no_english(page, seen)

        shopper = await stack.sockets.shopper("visitor-chat-de")
        # A chat: what the visitor types, the answer and its ticks.
        await shopper.send({"type": "chat.start", "context": {"page": f"{stack.shop_url}/products/sofa"}})
        await shopper.receive("chat.history")
        await shopper.send({"type": "chat.typing", "text": "Gibt es das Sofa"})
        preview = page.get_by_test_id("op-chat-preview")
        await expect(preview).to_have_text("Schreibt: Gibt es das Sofa", timeout=10_000)
        await shopper.send({"type": "chat.send", "text": "Gibt es das Sofa in Blau?", "client_id": "1"})
        await shopper.receive("chat.ack")
        await page.get_by_test_id("op-chat-input").fill("Ja, ab Lager.")
        await page.get_by_test_id("op-chat-send").click()
        answer = page.get_by_test_id("op-chat-log").locator("li.operator", has_text="Ja, ab Lager.")
        await expect(answer).to_contain_text("✓ zugestellt")
        said = await shopper.receive("chat.message", lambda f: f["message"]["sender"] == "operator")
        await shopper.send({"type": "chat.read", "up_to": said["message"]["id"]})
        await expect(answer).to_contain_text("✓✓ gelesen")
        await expect(page.get_by_test_id("op-chat-transfer-to")).to_contain_text("Sonst ist niemand online")
        await shows_no_english(page, seen)

        # A call: it rings, is answered, muted, held and hung up.
        caller = await stack.sockets.shopper("visitor-call-de")
        try:
            await caller.call(page=f"{stack.shop_url}/products/lamp")
            row = page.get_by_test_id("op-incoming")
            await expect(row.get_by_test_id("op-answer")).to_have_text("Annehmen")
            await expect(row.get_by_test_id("op-decline")).to_have_text("Ablehnen")
            await expect(row.get_by_test_id("op-answer")).to_have_attribute(
                "aria-label", "Anruf von Test shop annehmen"
            )
            await expect(row).to_contain_text("wartet seit")
            await expect(page.get_by_test_id("op-visitor")).to_contain_text("Seite")
            await page.wait_for_function("() => document.title.includes('Eingehender Anruf')")
            await shows_no_english(page, seen)

            await row.get_by_test_id("op-answer").click()
            status = page.locator("#active-status")
            await expect(status).to_have_text("Im Gespräch — Test shop", timeout=15_000)
            await page.get_by_test_id("op-mute").click()
            await expect(page.get_by_test_id("op-mute")).to_have_text("Ton an")
            await page.get_by_test_id("op-hold").click()
            await expect(page.get_by_test_id("op-hold")).to_have_text("Fortsetzen")
            await expect(status).to_have_text("Gehalten")
            await shows_no_english(page, seen)
            await page.get_by_test_id("op-hangup").click()
            await expect(status).to_have_text("Anruf beendet")
            await shows_no_english(page, seen)
        finally:
            await caller.close()
        await shopper.close()
        # The check itself can fail: the English page would not pass it.
        assert english_on(["Answer", "waiting 0:03", "✓✓ read"], "de") == [
            "Answer",
            "waiting 0:03",
            "✓✓ read",
        ]
        assert {"Annehmen", "✓✓ gelesen", "Anruf beendet"} <= set(seen)
    finally:
        await process.close()
