""" "How was it?" in a real browser: the shopper rates a call 5 with a comment and the owner's overview shows
it for that operator; a survey the shopper dismisses never comes back, not on the next page either.

One Chromium (the shopper's microphone plays 440 Hz) with two contexts, the shop and the owner's
dashboard; the operator is a softphone socket with a real aiortc peer connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from playwright.async_api import Page, Playwright, expect

from callserver.store.models import ConversationOutcome
from tests.browsers import launch, sign_in
from tests.dashboard_support import add_owner
from tests.sockets import Softphone
from tests.stack import PASSWORD, Stack


async def talk_and_hang_up(shop: Page, anna: Softphone) -> str:
    """The shopper calls from the widget, Anna answers and hangs up: the call ends completed."""
    await shop.get_by_test_id("cb-call").click()
    call_id = str((await anna.receive("call.incoming"))["call"]["id"])
    await anna.answer(call_id)
    await expect(shop.get_by_test_id("cb-status")).to_contain_text("Anna", timeout=15_000)
    await anna.send({"type": "call.hangup", "call_id": call_id})
    await anna.receive("call.ended", lambda f: f["call_id"] == call_id)
    return call_id


async def stored_outcome(
    stack: Stack, conversation_id: str, ready: Callable[[ConversationOutcome], bool], within: float = 10.0
) -> ConversationOutcome:
    """The conversation's outcome row once `ready` holds (the widget sends when its socket can)."""
    deadline = time.monotonic() + within
    while True:
        async with stack.database.session() as session:
            outcome = await session.get(ConversationOutcome, conversation_id)
        if outcome is not None and ready(outcome):
            return outcome
        assert time.monotonic() < deadline, f"conversation {conversation_id}: {outcome!r}"
        await asyncio.sleep(0.05)


async def api_get(stack: Stack, path: str) -> Any:
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {stack.site.secret}"}) as http,
        http.get(f"{stack.url}{path}") as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json()


async def test_a_rating_reaches_the_overview_and_a_dismissed_survey_never_returns(
    stack: Stack, playwright: Playwright, tones: dict[str, Path]
) -> None:
    anna = await stack.sockets.operator("anna@shop.example", "Anna", online=True)
    await add_owner(stack, "owner@shop.example")
    context = await launch(playwright, tones["shopper"])
    try:
        shop = await context.new_page()
        await shop.goto(f"{stack.shop_url}/products/oak-table")
        await shop.get_by_test_id("cb-launcher").click()

        rated = await talk_and_hang_up(shop, anna)
        card = shop.get_by_test_id("cb-csat")
        await expect(card).to_be_visible(timeout=10_000)
        await expect(card).to_contain_text("Anna")
        await shop.get_by_test_id("cb-csat-5").click()
        await shop.get_by_test_id("cb-csat-comment").fill("Anna found the right table for us.")
        await shop.get_by_test_id("cb-csat-send").click()
        # csat.thanks (stored) turns the card into a thank-you without its form.
        await expect(card.get_by_test_id("cb-csat-send")).to_have_count(0, timeout=10_000)
        assert (await api_get(stack, f"/api/v1/calls/{rated}"))["csat"] == {
            "score": 5,
            "comment": "Anna found the right table for us.",
        }

        # The owner's overview, in a context of its own in the same browser.
        owner = await context.browser.new_context()  # type: ignore[union-attr]
        try:
            dashboard = await owner.new_page()
            await sign_in(dashboard, stack.url, "dashboard", "owner@shop.example", PASSWORD)
            row = dashboard.get_by_test_id("dash-csat").locator('tr[data-operator="Anna"]')
            await expect(row).to_have_attribute("data-csat", "5.00")
            await expect(row).to_have_attribute("data-rated", "1")
        finally:
            await owner.close()

        # A second call: its survey, unanswered, is asked again on the next page...
        dismissed = await talk_and_hang_up(shop, anna)
        asking = card.filter(has=shop.get_by_test_id("cb-csat-close"))  # not the thank-you going away
        await expect(asking).to_be_visible(timeout=10_000)
        await shop.reload()
        await shop.get_by_test_id("cb-launcher").click()
        await expect(asking).to_be_visible(timeout=10_000)
        # ...until the shopper closes it: then never again.
        await shop.get_by_test_id("cb-csat-close").click()
        await expect(card).to_have_count(0)
        outcome = await stored_outcome(stack, dismissed, lambda o: o.csat_dismissed_at is not None)
        assert outcome.csat_score is None

        await shop.reload()
        await shop.get_by_test_id("cb-launcher").click()
        # The server asks right after its hello, before anything else on the socket: once Anna's chat
        # reply has reached this page, an ask would have too.
        await shop.get_by_test_id("cb-chat-open").click()
        await shop.get_by_test_id("cb-chat-input").fill("One more question")
        await shop.get_by_test_id("cb-chat-send").click()
        chat_id = str((await anna.receive("chat.assigned"))["chat"]["id"])
        await anna.send({"type": "chat.send", "chat_id": chat_id, "text": "Ask away!", "client_id": "a1"})
        await expect(shop.get_by_test_id("cb-chat-log")).to_contain_text("Ask away!", timeout=10_000)
        await expect(card).to_have_count(0)
    finally:
        await context.browser.close()  # type: ignore[union-attr]
