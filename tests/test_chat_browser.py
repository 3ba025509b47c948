"""Chat in real browsers: a shopper whose microphone is refused chats instead, across pages of the shop."""

from __future__ import annotations

from playwright.async_api import Playwright, expect

from tests.browsers import go_online, launch, sign_in
from tests.stack import PASSWORD, Stack


async def test_a_shopper_without_a_microphone_chats_and_the_chat_follows_them_to_another_page(
    stack: Stack, playwright: Playwright
) -> None:
    await stack.add_user("anna@shop.example", name="Anna")
    # One browser process that refuses the microphone; the operator gets a context of their own.
    shopper_browser = await launch(playwright, None)
    browser = shopper_browser.browser
    assert browser is not None
    operator_browser = await browser.new_context()
    operator = await operator_browser.new_page()
    await sign_in(operator, stack.url, "operator", "anna@shop.example", PASSWORD)
    await go_online(operator)

    shop = await shopper_browser.new_page()
    await shop.goto(f"{stack.shop_url}/products/oak-table")
    await shop.get_by_test_id("cb-launcher").click()
    await shop.get_by_test_id("cb-call").click()
    status = shop.get_by_test_id("cb-status")
    await expect(status).to_contain_text("Microphone access was blocked", timeout=15_000)
    await expect(status).to_contain_text("chat with us instead")
    await shop.get_by_test_id("cb-chat-open").click()

    # The operator is given the chat, and sees that this visitor tried to call.
    log = operator.get_by_test_id("op-chat-log")
    await expect(log).to_contain_text("microphone was blocked", timeout=10_000)
    await expect(operator.get_by_test_id("op-chats").locator("button")).to_have_count(1)
    await expect(status).to_contain_text("Chatting with Anna")

    # What the shopper types reaches the operator before it is sent.
    question = "Is the <b>oak</b> table in stock? <script>alert(1)</script>"
    await shop.get_by_test_id("cb-chat-input").press_sequentially(question, delay=15)
    await expect(operator.get_by_test_id("op-chat-preview")).to_contain_text(question)
    await expect(log).not_to_contain_text("Is the <b>oak</b>")
    await shop.get_by_test_id("cb-chat-send").click()
    await expect(log).to_contain_text(question)
    await expect(log.locator("b, script")).to_have_count(0)  # HTML is shown as text

    await operator.get_by_test_id("op-chat-input").fill("Yes, three are in stock.")
    await operator.get_by_test_id("op-chat-send").click()
    shop_log = shop.get_by_test_id("cb-chat-log")
    await expect(shop_log).to_contain_text("Yes, three are in stock.")
    await expect(shop_log).to_contain_text("✓✓ read")  # the operator has the chat open
    await expect(log).to_contain_text("✓✓ read")  # and the shopper has read the answer

    # Another page of the shop: the conversation is still there, and goes on in the same chat.
    await shop.goto(f"{stack.shop_url}/products/linen-chair")
    await expect(shop_log).to_contain_text(question, timeout=10_000)
    await expect(shop_log).to_contain_text("Yes, three are in stock.")
    await shop.get_by_test_id("cb-chat-input").fill("And the linen chair?")
    await shop.get_by_test_id("cb-chat-send").click()
    await expect(log).to_contain_text("And the linen chair?")
    await expect(operator.get_by_test_id("op-chats").locator("button")).to_have_count(1)

    await browser.close()
