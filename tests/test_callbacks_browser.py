"""Call me back, and an operator calling a visitor, in real browsers: the shopper's Chromium with a 440 Hz
microphone, the operator's with 1000 Hz, each checking by AnalyserNode that it hears the other."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import pytest
from playwright.async_api import Page, Playwright, expect
from sqlalchemy import select

from callserver.store.models import Call, CallbackRequest
from tests.browsers import go_online, hears, launch, sign_in
from tests.inbox import Inbox, mail_text
from tests.stack import PASSWORD, Stack

RING_TIMES: list[float] = []  # click → the visitor's incoming card, seconds (printed for the README)


@pytest.fixture
def stack(mailing_stack: Stack) -> Stack:
    return mailing_stack


async def ring_from(operator: Page, button: str, shop: Page) -> None:
    """Click the operator's button and time how long the shopper's incoming card takes to show."""
    clicked = time.monotonic()
    await operator.get_by_test_id(button).first.click()
    await expect(shop.get_by_test_id("cb-incoming")).to_be_visible(timeout=10_000)
    RING_TIMES.append(time.monotonic() - clicked)
    await expect(shop.get_by_test_id("cb-incoming")).to_contain_text("Anna")


async def talk(stack: Stack, shop: Page, operator: Page) -> str:
    """The shopper answers the ring: the call connects, both hear each other; returns the call's id."""
    await shop.get_by_test_id("cb-incoming-answer").click()
    await expect(shop.get_by_test_id("cb-status")).to_contain_text("Anna", timeout=15_000)
    await expect(operator.get_by_test_id("op-hangup")).to_be_enabled(timeout=15_000)
    await hears(operator, 440)
    await hears(shop, 1000)
    await expect(shop.get_by_test_id("cb-incoming")).to_have_count(0)
    await operator.get_by_test_id("op-hangup").click()
    await expect(shop.get_by_test_id("cb-status")).to_contain_text("Call ended", timeout=10_000)
    async with stack.database.session() as session:
        call = await session.scalar(select(Call).order_by(Call.created_at.desc()))
    assert call is not None
    record = await stack.ended_call(call.id)
    assert record.end_reason == "completed" and record.answered_at is not None
    return str(call.id)


async def test_offline_a_call_back_is_asked_mailed_listed_and_the_operator_calls_in_the_browser(
    stack: Stack, smtp: tuple[Inbox, int], playwright: Playwright, tones: dict[str, Path]
) -> None:
    inbox, _ = smtp
    account = await stack.add_user("anna@shop.example", name="Anna")
    operator_browser = await launch(playwright, tones["operator"])
    shopper_browser = await launch(playwright, tones["shopper"])
    try:
        operator = await operator_browser.new_page()
        await sign_in(operator, stack.url, "operator", "anna@shop.example", PASSWORD)  # signed in, offline
        shop = await shopper_browser.new_page()
        await shop.goto(f"{stack.shop_url}/products/oak-table")
        await shop.get_by_test_id("cb-launcher").click()

        # Nobody online: the message form and the call-back form show at once.
        await expect(shop.get_by_test_id("cb-offline-form")).to_be_visible()
        callback_form = shop.get_by_test_id("cb-callback")
        await expect(callback_form).to_be_visible(timeout=10_000)
        await callback_form.locator("input[name=phone]").fill("call me maybe")
        await shop.get_by_test_id("cb-callback-send").click()
        await expect(shop.get_by_test_id("cb-status")).to_contain_text("not a phone number")
        await callback_form.locator("input[name=phone]").fill("+49 30 1234 5678")
        await callback_form.locator("input[name=when]").fill("this afternoon")
        await shop.get_by_test_id("cb-callback-send").click()
        await expect(callback_form).to_contain_text("call you back")

        row = operator.get_by_test_id("op-callbacks").locator("li[data-callback-id]")
        await expect(row).to_have_count(1)
        await expect(row).to_contain_text("+49 30 1234 5678")
        await expect(row).to_contain_text("this afternoon")
        callback_id = await row.get_attribute("data-callback-id")
        deadline = time.monotonic() + 10
        while not inbox.messages:
            assert time.monotonic() < deadline, "no mail"
            await asyncio.sleep(0.05)
        assert "+49 30 1234 5678" in mail_text(inbox.messages[0])

        # The operator comes online while the shopper is still on the page: they call in the browser.
        await go_online(operator)
        call_button = row.get_by_test_id("op-callback-call")
        await expect(call_button).to_be_enabled(timeout=10_000)
        await ring_from(operator, "op-callback-call", shop)
        await talk(stack, shop, operator)

        await row.get_by_test_id("op-callback-done").locator("select[name=outcome]").select_option("reached")
        await row.get_by_test_id("op-callback-done").locator("button").click()
        await expect(operator.get_by_test_id("op-callbacks").locator("li")).to_have_count(0)
        async with stack.database.session() as session:
            stored = await session.get(CallbackRequest, callback_id)
        assert stored is not None and stored.outcome == "reached" and stored.handled_by == account.id
    finally:
        await shopper_browser.browser.close()
        await operator_browser.browser.close()


async def test_an_operator_calls_a_visitor_from_the_board_who_declines_then_answers(
    stack: Stack, playwright: Playwright, tones: dict[str, Path]
) -> None:
    await stack.add_user("anna@shop.example", name="Anna")
    operator_browser = await launch(playwright, tones["operator"])
    shopper_browser = await launch(playwright, tones["shopper"])
    try:
        operator = await operator_browser.new_page()
        await sign_in(operator, stack.url, "operator", "anna@shop.example", PASSWORD)
        await go_online(operator)
        shop = await shopper_browser.new_page()
        await shop.goto(f"{stack.shop_url}/products/oak-table")
        await shop.mouse.click(5, 5)  # a user gesture: the ring may sound

        board_row = operator.get_by_test_id("op-visitors").locator("tr[data-visitor-id]")
        await expect(board_row).to_have_count(1, timeout=10_000)
        await expect(board_row.get_by_test_id("op-call-visitor")).to_be_enabled(timeout=10_000)
        await ring_from(operator, "op-call-visitor", shop)
        await shop.get_by_test_id("cb-incoming-decline").click()
        await expect(shop.get_by_test_id("cb-incoming")).to_have_count(0)
        status = operator.get_by_test_id("op-visitor-call-status")
        await expect(status).to_have_attribute("data-state", "declined", timeout=10_000)

        await ring_from(operator, "op-call-visitor", shop)
        await talk(stack, shop, operator)
        print(
            f"\nclick → incoming card: {[round(s * 1000) for s in RING_TIMES]} ms, "
            f"median {statistics.median(RING_TIMES) * 1000:.0f} ms"
        )
    finally:
        await shopper_browser.browser.close()
        await operator_browser.browser.close()


async def test_a_call_nobody_takes_offers_a_call_back(
    stack: Stack, playwright: Playwright, tones: dict[str, Path]
) -> None:
    anna = await stack.sockets.operator("anna@shop.example", "Anna", online=True)
    shopper_browser = await launch(playwright, tones["shopper"])
    try:
        shop = await shopper_browser.new_page()
        await shop.goto(f"{stack.shop_url}/products/oak-table")
        await shop.get_by_test_id("cb-launcher").click()
        await expect(shop.get_by_test_id("cb-callback")).to_have_count(0)
        await shop.get_by_test_id("cb-call").click()
        incoming = (await anna.receive("call.incoming"))["call"]
        await anna.send({"type": "call.decline", "call_id": incoming["id"]})
        form = shop.get_by_test_id("cb-callback")
        await expect(form).to_be_visible(timeout=10_000)
        await form.locator("input[name=phone]").fill("+44 20 7946 0000")
        await shop.get_by_test_id("cb-callback-send").click()
        await expect(form).to_contain_text("call you back")
        entry = (await anna.receive("callback.new"))["callback"]
        assert entry["phone"] == "+44 20 7946 0000"
    finally:
        await shopper_browser.browser.close()
