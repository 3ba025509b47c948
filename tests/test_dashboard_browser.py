"""An owner uses the dashboard in a real Chromium: signs in, filters the log, plays a recording."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from playwright.async_api import Playwright, expect

from tests.browsers import launch, sign_in
from tests.dashboard_support import NOW, add_call, add_order, opus_file
from tests.stack import PASSWORD, Stack

pytestmark = pytest.mark.browser


async def test_owner_filters_the_log_and_listens_to_a_recorded_call(
    stack: Stack, playwright: Playwright, tmp_path: Path
) -> None:
    await stack.add_user("boss@shop.example", role="owner")
    anna = await stack.add_user("anna@shop.example", role="operator", name="Anna")
    recording = opus_file(tmp_path / "recording.ogg", seconds=2.0)
    recorded = await add_call(
        stack,
        operator_id=anna.id,
        recording_path=str(recording),
        page="https://shop.example/products/oak-table",
        context={"utm": {"source": "newsletter"}, "cart_value": 450.0, "currency": "EUR"},
    )
    missed = await add_call(stack, created_at=NOW - timedelta(hours=1), end_reason="missed", answered_at=None)
    await add_order(stack, "W-1", "450.00", "call", recorded)

    context = await launch(playwright, microphone=None)
    page = await context.new_page()
    try:
        await sign_in(page, stack.url, "dashboard", "boss@shop.example", PASSWORD)
        await expect(page.get_by_test_id("dash-revenue").locator('[data-channel="call"]')).to_be_visible()

        await page.goto(f"{stack.url}/dashboard/calls")
        rows = page.get_by_test_id("dash-calls").locator("tbody tr[data-call-id]")
        await expect(rows).to_have_count(2)
        await page.get_by_label("End reason").select_option("missed")
        await page.get_by_test_id("dash-filter-apply").click()
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_have_attribute("data-call-id", missed)
        await expect(rows.first).to_have_attribute("data-end-reason", "missed")

        await page.get_by_label("End reason").select_option("completed")
        await page.get_by_label("Operator").select_option(str(anna.id))
        await page.get_by_test_id("dash-filter-apply").click()
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_have_attribute("data-state", "ended")
        await rows.first.get_by_role("link").click()
        await page.wait_for_url(f"**/dashboard/calls/{recorded}")
        await expect(page.get_by_text("newsletter")).to_be_visible()

        player = page.get_by_test_id("dash-recording")
        await expect(player).to_be_visible()
        await page.wait_for_function(
            "el => el.readyState >= 1 && Number.isFinite(el.duration) && el.duration > 0",
            arg=await player.element_handle(),
            timeout=15_000,
        )
        duration = await player.evaluate("el => el.duration")
        assert 1.5 < duration < 2.5
        assert await player.evaluate("el => el.error") is None
    finally:
        await context.browser.close()  # type: ignore[union-attr]
