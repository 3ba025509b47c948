"""Calls that survive the network, in real browsers: the widget's socket is cut mid-call and comes back
by itself; the operator's softphone renegotiates its media on a new peer connection (the page's own
`online` handler) while the shopper keeps talking. Audio both ways is heard with AnalyserNodes."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Page, Playwright, WebSocketRoute, expect

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


@asynccontextmanager
async def in_a_call(
    stack: Stack, playwright: Playwright, tones: dict[str, Path]
) -> AsyncIterator[tuple[Page, Page, str]]:
    """Anna online in her softphone, a shopper's call answered and heard both ways: (shop, operator,
    call id). Both browsers are closed after."""
    await stack.add_user("anna@shop.example", name="Anna")
    operator_browser = await launch(playwright, tones["operator"])
    shopper_browser = await launch(playwright, tones["shopper"])
    try:
        operator = await operator_browser.new_page()
        await sign_in(operator, stack.url, "operator", "anna@shop.example", PASSWORD)
        await go_online(operator)
        shop = await shopper_browser.new_page()
        await shop.goto(f"{stack.shop_url}/products/oak-table")
        call_id = await place_call(shop, operator)
        await operator.get_by_test_id("op-incoming").get_by_test_id("op-answer").click()
        await expect(shop.get_by_test_id("cb-status")).to_contain_text("Anna", timeout=15_000)
        await expect(operator.get_by_test_id("op-call-state")).to_have_text("connected", timeout=15_000)
        await hears(operator, 440)
        await hears(shop, 1000)
        yield shop, operator, call_id
    finally:
        await shopper_browser.browser.close()
        await operator_browser.browser.close()


async def test_the_widgets_socket_cut_mid_call_comes_back_and_the_call_goes_on(
    stack: Stack, playwright: Playwright, tones: dict[str, Path]
) -> None:
    async with in_a_call(stack, playwright, tones) as (shop, operator, call_id):
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


@pytest.mark.parametrize("side", ["operator", "shopper"])
async def test_a_side_on_a_new_network_renegotiates_while_the_other_talks(
    stack: Stack, playwright: Playwright, tones: dict[str, Path], side: str
) -> None:
    async with in_a_call(stack, playwright, tones) as (shop, operator, call_id):
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


GIVE_UP_WINDOW = 3.0  # the server's resume_window in the next test: the widget gives up 5 s after it


@pytest.fixture
async def short_window(tmp_path: Path) -> AsyncIterator[Stack]:
    settings = settings_for(tmp_path, ring_timeout=30, resume_window=GIVE_UP_WINDOW)
    async with running_stack(settings) as running:
        yield running


async def test_a_widget_that_cannot_come_back_gives_up_after_the_servers_resume_window(
    short_window: Stack, playwright: Playwright, tones: dict[str, Path]
) -> None:
    """The widget's socket goes and every new one is refused (as behind a network that lets nothing
    through): the widget gives up by itself `resume_window` + 5 s later, as /widget/config says, not
    after an older server's 30 + 5 s, and the shopper is told; the server ends the call `lost`."""
    stack = short_window
    tries: list[float] = []

    async def refuse(ws: WebSocketRoute) -> None:
        tries.append(time.monotonic())
        await ws.close(code=1011, reason="refused by the test")

    async with in_a_call(stack, playwright, tones) as (shop, _, call_id):
        await shop.evaluate(WATCH, "cb-status")
        await shop.context.route_web_socket(re.compile(r"/ws/widget"), refuse)
        for ws in [ws for ws in stack.app[SOCKETS] if ws not in stack.app[OPERATOR_SOCKETS]]:
            await ws.close()
        cut = time.monotonic()

        record = await stack.ended_call(call_id, within=GIVE_UP_WINDOW + 10)
        assert record.end_reason == "lost"
        await expect(shop.get_by_test_id("cb-status")).to_contain_text(
            "interrupted", timeout=int((GIVE_UP_WINDOW + 5 + 10) * 1000)
        )
        gave_up = time.monotonic() - cut
        assert tries, "the widget tried to come back"
        texts = await seen(shop, "cb-status")
        assert texts.index("Reconnecting…") < texts.index("The call was interrupted."), texts
        # It waited out the server's window (it would have resumed meanwhile), and not the default 35 s.
        assert GIVE_UP_WINDOW + 5 <= gave_up < 30, gave_up
        await expect(shop.get_by_test_id("cb-hangup")).to_be_hidden()
