"""A shopper calls from a shop page and talks to an operator, both in real Chromium processes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from playwright.async_api import Page, Playwright, WebSocket, expect

from tests.browsers import go_online, hears, launch, sign_in
from tests.stack import PASSWORD, Stack
from tests.test_mic_and_quality_browser import rises


async def place_call(shop: Page, operator: Page) -> str:
    if not await shop.get_by_test_id("cb-call").is_visible():
        await shop.get_by_test_id("cb-launcher").click()
    await shop.get_by_test_id("cb-call").click()
    incoming = operator.get_by_test_id("op-incoming")
    await expect(incoming).to_have_count(1, timeout=15_000)
    call_id = await incoming.get_attribute("data-call-id")
    assert call_id
    return call_id


async def test_shopper_and_operator_hear_each_other_and_either_can_hang_up(
    stack: Stack, playwright: Playwright, tones: dict[str, Path]
) -> None:
    operator_account = await stack.add_user("anna@shop.example", name="Anna")
    operator_browser = await launch(playwright, tones["operator"])
    shopper_browser = await launch(playwright, tones["shopper"])
    operator = await operator_browser.new_page()
    await sign_in(operator, stack.url, "operator", "anna@shop.example", PASSWORD)
    await go_online(operator)
    shop = await shopper_browser.new_page()
    await shop.goto(f"{stack.shop_url}/products/oak-table?utm_source=newsletter")

    for hangs_up in ("shopper", "operator"):
        call_id = await place_call(shop, operator)
        # While it rings, the shopper hears the 425 Hz ring-back tone from the server.
        await hears(shop, 425)
        row = operator.get_by_test_id("op-incoming")
        await expect(row).to_contain_text("oak-table")
        await row.get_by_test_id("op-answer").click()
        await expect(shop.get_by_test_id("cb-status")).to_contain_text("Anna", timeout=15_000)

        # The operator hears the shopper's 440 Hz microphone; the shopper hears the operator's 1000 Hz.
        await hears(operator, 440)
        await hears(shop, 1000)
        await expect(operator.get_by_test_id("op-visitor")).to_contain_text("newsletter")
        # Both microphones' meters follow the tones, and neither side is told it can't be heard.
        for page, side in ((shop, "cb"), (operator, "op")):
            await rises(page.get_by_test_id(f"{side}-mic-level"))
            await expect(page.get_by_test_id(f"{side}-mic-warning")).to_be_attached()
            await expect(page.get_by_test_id(f"{side}-mic-warning")).to_be_hidden()

        if hangs_up == "shopper":
            await shop.get_by_test_id("cb-hangup").click()
        else:
            await operator.get_by_test_id("op-hangup").click()
        await expect(shop.get_by_test_id("cb-status")).to_contain_text("Call ended", timeout=10_000)

        record = await stack.ended_call(call_id)
        assert record.end_reason == "completed"
        assert record.operator_id == operator_account.id
        assert record.page.endswith("/products/oak-table?utm_source=newsletter")
        assert record.context["utm"] == {"source": "newsletter"}
        assert record.answered_at is not None and record.ended_at is not None
        talk = record.ended_at - record.answered_at
        assert timedelta(seconds=0.2) < talk < timedelta(seconds=60)
        assert record.quality["shopper"]["packets_received"] > 10
        assert record.quality["operator"]["packets_received"] > 10

    await shopper_browser.browser.close()
    await operator_browser.browser.close()


async def test_a_chat_and_the_call_placed_from_it_share_one_socket(
    stack: Stack, playwright: Playwright, tones: dict[str, Path]
) -> None:
    """One `/ws/widget` per page: the chat opens it, the call goes over it, the chat goes on meanwhile."""
    olga = await stack.sockets.operator("olga@shop.example", name="Olga", online=True)
    shopper_browser = await launch(playwright, tones["shopper"])
    try:
        shop = await shopper_browser.new_page()
        sockets: list[WebSocket] = []
        shop.on("websocket", lambda ws: sockets.append(ws) if "/ws/widget" in ws.url else None)
        await shop.goto(f"{stack.shop_url}/products/oak-table")
        await shop.get_by_test_id("cb-launcher").click()
        await shop.get_by_test_id("cb-chat-open").click()
        chat_id = (await olga.receive("chat.assigned"))["chat"]["id"]
        await olga.send({"type": "chat.send", "chat_id": chat_id, "text": "Hello, how can I help?"})
        await expect(shop.get_by_test_id("cb-chat-log")).to_contain_text("Hello, how can I help?")

        await shop.get_by_test_id("cb-call").click()
        call_id = (await olga.receive("call.incoming", within=20))["call"]["id"]
        await olga.answer(call_id)
        status = shop.get_by_test_id("cb-status")
        await expect(status).to_contain_text("Olga", timeout=15_000)
        await shop.get_by_test_id("cb-chat-input").fill("Can you hear me?")
        await shop.get_by_test_id("cb-chat-send").click()
        await olga.receive("chat.message", lambda f: f["message"]["text"] == "Can you hear me?")
        await shop.get_by_test_id("cb-hangup").click()
        await expect(status).to_contain_text("Call ended", timeout=10_000)
        assert (await stack.ended_call(call_id)).end_reason == "completed"

        assert [ws.is_closed() for ws in sockets] == [False]
    finally:
        await shopper_browser.browser.close()
