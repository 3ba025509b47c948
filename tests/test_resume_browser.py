"""Calls that survive the network, in real browsers: the widget's socket is cut mid-call and comes back
by itself; the operator's softphone renegotiates its media on a new peer connection (the page's own
`online` handler) while the shopper keeps talking. Audio both ways is heard with AnalyserNodes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Page, Playwright, expect

from callserver.web.keys import OPERATOR_SOCKETS, SOCKETS
from tests.browsers import go_online, hears, launch, sign_in
from tests.stack import PASSWORD, Stack, running_stack, settings_for
from tests.test_browser_call import place_call
from tests.test_call_resume import answered_call as socket_call
from tests.test_call_resume import events_of

# Keeps every text a test id shows (in the page or in the widget's open shadow root), so a state that
# lasts well under a second is still seen.
WATCH = """
(testId) => {
  const find = () => {
    const direct = document.querySelector(`[data-testid="${testId}"]`);
    if (direct) return direct;
    for (const node of document.querySelectorAll('*')) {
      const found = node.shadowRoot && node.shadowRoot.querySelector(`[data-testid="${testId}"]`);
      if (found) return found;
    }
    return null;
  };
  const element = find();
  const seen = window.__seen = window.__seen || {};
  const texts = seen[testId] = [element.textContent];
  new MutationObserver(() => texts.push(element.textContent))
    .observe(element, { childList: true, characterData: true, subtree: true });
}
"""


async def seen(page: Page, test_id: str) -> list[str]:
    texts: list[str] = await page.evaluate("(id) => window.__seen[id]", test_id)
    return texts


async def answered_call(stack: Stack, shop: Page, operator: Page) -> str:
    await shop.goto(f"{stack.shop_url}/products/oak-table")
    call_id = await place_call(shop, operator)
    await operator.get_by_test_id("op-incoming").get_by_test_id("op-answer").click()
    await expect(shop.get_by_test_id("cb-status")).to_contain_text("Anna", timeout=15_000)
    await expect(operator.get_by_test_id("op-call-state")).to_have_text("connected", timeout=15_000)
    await hears(operator, 440)
    await hears(shop, 1000)
    return call_id


async def test_the_widgets_socket_cut_mid_call_comes_back_and_the_call_goes_on(
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
        call_id = await answered_call(stack, shop, operator)
        await shop.evaluate(WATCH, "cb-status")
        await operator.evaluate(WATCH, "op-call-state")

        # The server closes the widget's socket (media untouched); the operator's stays.
        widget_sockets = [ws for ws in stack.app[SOCKETS] if ws not in stack.app[OPERATOR_SOCKETS]]
        assert widget_sockets
        for ws in widget_sockets:
            await ws.close()

        await expect(operator.get_by_test_id("op-call-state")).to_have_text("reconnecting", timeout=10_000)
        await expect(operator.get_by_test_id("op-call-state")).to_have_text("connected", timeout=15_000)
        await expect(shop.get_by_test_id("cb-status")).to_contain_text("Anna", timeout=15_000)
        assert "Reconnecting…" in await seen(shop, "cb-status")
        states = await seen(operator, "op-call-state")
        assert states.index("reconnecting") < len(states) - 1 and states[-1] == "connected", states
        # A new socket carries the call.
        assert any(not ws.closed for ws in stack.app[SOCKETS] if ws not in stack.app[OPERATOR_SOCKETS])

        await hears(operator, 440)
        await hears(shop, 1000)
        record = await stack.call(call_id)
        assert record.state == "answered"
        names = [name for name, _ in await events_of(stack, call_id)]
        assert names.count("call.reconnecting") == 1 and names.count("call.reconnected") == 1

        await shop.get_by_test_id("cb-hangup").click()
        record = await stack.ended_call(call_id)
        assert record.end_reason == "completed"
        assert record.quality["shopper"]["reconnects"] == 1
    finally:
        await shopper_browser.browser.close()
        await operator_browser.browser.close()


@pytest.mark.parametrize("side", ["operator", "shopper"])
async def test_a_side_on_a_new_network_renegotiates_while_the_other_talks(
    stack: Stack, playwright: Playwright, tones: dict[str, Path], side: str
) -> None:
    await stack.add_user("anna@shop.example", name="Anna")
    operator_browser = await launch(playwright, tones["operator"])
    shopper_browser = await launch(playwright, tones["shopper"])
    try:
        operator = await operator_browser.new_page()
        await sign_in(operator, stack.url, "operator", "anna@shop.example", PASSWORD)
        await go_online(operator)
        shop = await shopper_browser.new_page()
        call_id = await answered_call(stack, shop, operator)
        await operator.evaluate(WATCH, "op-call-state")
        moving = operator if side == "operator" else shop
        assert await moving.evaluate("window.__tracks.length") == 1

        # The browser says the network came back (a new one): that page offers a new leg.
        await moving.evaluate("window.dispatchEvent(new Event('online'))")
        await moving.wait_for_function(
            "() => window.__tracks.length === 2 && window.__tracks[0].readyState === 'ended'", timeout=15_000
        )
        await expect(operator.get_by_test_id("op-call-state")).to_have_text("connected", timeout=15_000)
        assert "reconnecting" in await seen(operator, "op-call-state")
        # Both hear the other on the new leg (the old one's track has ended).
        await hears(operator, 440)
        await hears(shop, 1000)
        await expect(shop.get_by_test_id("cb-status")).to_contain_text("Anna")

        await operator.get_by_test_id("op-hangup").click()
        record = await stack.ended_call(call_id)
        assert record.end_reason == "completed"
        assert record.quality[side]["reconnects"] == 1
        assert record.quality[side]["legs"] == 2
        other = "shopper" if side == "operator" else "operator"
        assert record.quality[other]["reconnects"] == 0
        causes = [
            detail.get("cause")
            for name, detail in await events_of(stack, call_id)
            if name == "call.reconnecting"
        ]
        assert causes == ["reoffer"], causes
    finally:
        await shopper_browser.browser.close()
        await operator_browser.browser.close()


@pytest.fixture
async def one_line(tmp_path: Path) -> AsyncIterator[Stack]:
    """A node with room for one call: the next is refused `all_busy` (as a full or draining node does)."""
    async with running_stack(settings_for(tmp_path, ring_timeout=30, max_calls_per_worker=1)) as running:
        yield running


async def test_a_call_refused_all_busy_falls_back_to_a_chat(
    one_line: Stack, playwright: Playwright, tones: dict[str, Path]
) -> None:
    stack = one_line
    _, olga, _, _ = await socket_call(stack)  # the node's one line is taken
    shopper_browser = await launch(playwright, tones["shopper"])
    try:
        shop = await shopper_browser.new_page()
        await shop.goto(f"{stack.shop_url}/products/oak-table")
        await shop.get_by_test_id("cb-launcher").click()
        await shop.get_by_test_id("cb-call").click()
        await expect(shop.get_by_test_id("cb-status")).to_contain_text("chat", timeout=15_000)
        await shop.get_by_test_id("cb-chat-open").click()
        assigned = await olga.receive("chat.assigned")
        assert assigned["chat"]["fallback"] == "all_busy"
    finally:
        await shopper_browser.browser.close()
