"""A shopper calls from a shop page and talks to an operator, both in real Chromium processes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from playwright.async_api import Page, Playwright, expect

from tests.browsers import go_online, hears, launch, sign_in
from tests.stack import PASSWORD, Stack


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
