"""The softphone's outcome card in a real browser: the operator's note, tags and order number of a chat,
kept after the chat ends until the next one, with the site's tags suggested."""

from __future__ import annotations

from playwright.async_api import Playwright, expect
from sqlalchemy import select

from callserver.store.models import ConversationOutcome, ConversationTag
from tests.browsers import go_online, launch, sign_in
from tests.stack import PASSWORD, Stack


async def test_the_operator_notes_tags_and_an_order_number_on_a_chat(
    stack: Stack, playwright: Playwright
) -> None:
    await stack.add_user("anna@shop.example", name="Anna")
    context = await launch(playwright, None)
    try:
        operator = await context.new_page()
        await sign_in(operator, stack.url, "operator", "anna@shop.example", PASSWORD)
        await go_online(operator)
        card = operator.get_by_test_id("op-outcome")
        await expect(card).to_have_count(0)  # nothing to note before a conversation

        shopper = await stack.sockets.shopper("visitor-outcome-browser")
        await shopper.send({"type": "chat.start", "context": {"page": "https://shop.example/p/1"}})
        assert (await shopper.receive("chat.state"))["chat"]["id"]
        await expect(card).to_be_visible(timeout=10_000)
        chat_id = await card.get_attribute("data-conversation-id")
        assert chat_id

        await operator.get_by_test_id("op-note").fill("Wants the oak table delivered on Friday.")
        await operator.get_by_test_id("op-tags").fill("Delivery,  oak table ,")
        await operator.get_by_test_id("op-order").fill("#3001")
        await operator.get_by_test_id("op-outcome-save").click()
        await expect(operator.get_by_test_id("op-outcome-status")).to_have_text("Saved.")
        await expect(operator.get_by_test_id("op-tags")).to_have_value("delivery, oak table")
        await expect(operator.get_by_test_id("op-order")).to_have_value("3001")
        async with stack.database.session() as session:
            outcome = await session.get(ConversationOutcome, chat_id)
            assert outcome is not None
            assert (outcome.note, outcome.order_ref) == ("Wants the oak table delivered on Friday.", "3001")
            tags = (await session.scalars(select(ConversationTag.tag).order_by(ConversationTag.tag))).all()
            assert tags == ["delivery", "oak table"]

        # The chat ends: the card stays, with what was saved, until the next conversation.
        await operator.get_by_test_id("op-chat-close").click()
        assert (await shopper.receive("csat.ask"))["conversation_id"] == chat_id
        await expect(card).to_be_visible()
        await expect(operator.get_by_test_id("op-note")).to_have_value(
            "Wants the oak table delivered on Friday."
        )

        second = await stack.sockets.shopper("visitor-outcome-browser-2")
        await second.send({"type": "chat.start", "context": {"page": "https://shop.example/p/2"}})
        await second.receive("chat.state")
        await expect(card).not_to_have_attribute("data-conversation-id", chat_id)
        await expect(operator.get_by_test_id("op-note")).to_have_value("")
        # The site's tags are suggested for the new conversation.
        options = operator.locator("#outcome-tag-list option")
        await expect(options).to_have_count(2)
        assert sorted([await o.get_attribute("value") or "" for o in await options.all()]) == [
            "delivery",
            "oak table",
        ]
    finally:
        await context.close()
