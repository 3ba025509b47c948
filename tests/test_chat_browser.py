"""Chat in real browsers: a shopper whose microphone is refused chats instead, across pages of the shop."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from playwright.async_api import Playwright, WebSocket, WebSocketRoute, expect

from tests.browsers import go_online, launch, sign_in
from tests.inbox import Inbox, mail_text
from tests.stack import PASSWORD, Stack, running_stack, settings_for


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


async def test_a_late_delivered_never_takes_back_read_in_the_softphone(
    stack: Stack, playwright: Playwright
) -> None:
    """The server serves the operator's and the shopper's sockets concurrently: "✓ delivered" for a
    message can reach the softphone after "✓✓ read" for it (seen under load on two cores)."""
    await stack.add_user("anna@shop.example", name="Anna")
    shopper_browser = await launch(playwright, None)
    browser = shopper_browser.browser
    assert browser is not None
    try:
        operator = await (await browser.new_context()).new_page()
        late = "a late delivered went out"

        def reorder(ws: WebSocketRoute) -> None:
            # Pass the operator's socket through, and after every "read" repeat the race: the stale
            # "delivered" for the same messages, then a typing frame that tells the test it was seen.
            server = ws.connect_to_server()

            def from_server(message: str | bytes) -> None:
                ws.send(message)
                frame = json.loads(message)
                if frame.get("type") == "chat.status" and frame.get("status") == "read":
                    ws.send(json.dumps({**frame, "status": "delivered"}))
                    ws.send(json.dumps({"type": "chat.typing", "chat_id": frame["chat_id"], "text": late}))

            server.on_message(from_server)
            ws.on_message(server.send)

        await operator.route_web_socket(re.compile(r"/ws/operator$"), reorder)
        await sign_in(operator, stack.url, "operator", "anna@shop.example", PASSWORD)
        await go_online(operator)

        shop = await shopper_browser.new_page()
        await shop.goto(f"{stack.shop_url}/products/oak-table")
        await shop.get_by_test_id("cb-launcher").click()
        await shop.get_by_test_id("cb-chat-open").click()
        await shop.get_by_test_id("cb-chat-input").fill("Do you deliver on Saturdays?")
        await shop.get_by_test_id("cb-chat-send").click()
        log = operator.get_by_test_id("op-chat-log")
        await expect(log).to_contain_text("Do you deliver on Saturdays?", timeout=10_000)

        await operator.get_by_test_id("op-chat-input").fill("Yes, until noon.")
        await operator.get_by_test_id("op-chat-send").click()
        await expect(shop.get_by_test_id("cb-chat-log")).to_contain_text("Yes, until noon.")
        answer = log.locator("li.operator", has_text="Yes, until noon.")
        await expect(operator.get_by_test_id("op-chat-preview")).to_contain_text(late)
        await expect(answer).to_contain_text("✓✓ read")
        await expect(answer).not_to_contain_text("delivered")

        # What the store says agrees: the softphone opened afresh shows it read too.
        await operator.unroute_all()
        await operator.reload()
        await expect(log.locator("li.operator", has_text="Yes, until noon.")).to_contain_text("✓✓ read")
    finally:
        await browser.close()


async def test_in_a_chat_the_shopper_takes_the_call_the_operator_offers_and_mails_the_transcript(
    tmp_path: Path, playwright: Playwright, tones: dict[str, Path], smtp: tuple[Inbox, int]
) -> None:
    """The chat's extras (widget-after.js, loaded when the chat shows): the preview of what is typed,
    the operator's offer of a call, the transcript by mail."""
    inbox, port = smtp
    async with running_stack(settings_for(tmp_path, smtp_host="127.0.0.1", smtp_port=port)) as stack:
        olga = await stack.sockets.operator("olga@shop.example", name="Olga", online=True)
        browser = await launch(playwright, tones["shopper"])
        try:
            shop = await browser.new_page()
            sent: list[dict[str, Any]] = []

            def keep(ws: WebSocket) -> None:
                ws.on("framesent", lambda payload: sent.append(json.loads(payload)))

            shop.on("websocket", keep)
            await shop.goto(f"{stack.shop_url}/products/oak-table")
            await shop.get_by_test_id("cb-launcher").click()
            await shop.get_by_test_id("cb-chat-open").click()
            chat_id = (await olga.receive("chat.assigned"))["chat"]["id"]
            await shop.get_by_test_id("cb-chat-input").press_sequentially("Solid oak?")
            await olga.receive("chat.typing", lambda f: f.get("text") == "Solid oak?")
            await shop.get_by_test_id("cb-chat-send").click()
            await olga.receive("chat.message", lambda f: f["message"]["text"] == "Solid oak?")

            await olga.send({"type": "chat.offer_call", "chat_id": chat_id})
            accept = shop.get_by_test_id("cb-accept-call")
            await expect(accept).to_have_text("Call Olga now")
            await accept.click()
            await expect(accept).to_be_disabled()
            call_id = (await olga.receive("call.incoming", within=20))["call"]["id"]
            [offer] = [frame for frame in sent if frame["type"] == "call.offer"]
            assert offer["chat_id"] == chat_id
            await olga.answer(call_id)
            await expect(shop.get_by_test_id("cb-status")).to_contain_text("Olga", timeout=15_000)
            await shop.get_by_test_id("cb-hangup").click()
            assert (await stack.ended_call(call_id)).end_reason == "completed"

            mail = shop.locator(".mailme input")
            await mail.fill("mia@example.com")
            await mail.press("Enter")
            await expect(mail).to_have_attribute("placeholder", "Transcript sent")
            await expect(mail).to_have_value("")
            assert shop.url == f"{stack.shop_url}/products/oak-table"  # no form submitted the page
        finally:
            await browser.browser.close()
    [sent_mail] = inbox.messages
    assert sent_mail["X-Envelope-To"] == "mia@example.com"
    assert "You: Solid oak?" in mail_text(sent_mail)
