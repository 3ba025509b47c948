"""The microphone check before and during a call, and the softphone's live quality badge, in real Chromium.

One browser process, two contexts (shopper and operator), both on a fake microphone that is silent for
its first seconds and then plays a tone: each side is told it can't be heard, the warning goes when the
voice comes, the level meters follow it, and the softphone's badge shows the call's figures. Chromium's
fake devices list three audio inputs (the default one and "Fake Audio Input 1" and "2"), so the device
picker shows, and picking another microphone swaps the track on the same peer connection.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from playwright.async_api import Locator, Page, Playwright, expect

from tests.browsers import LISTEN, go_online, hears, launch, sign_in, tone_file
from tests.stack import PASSWORD, Stack

QUIET_S = 6.0  # the fake microphone's silence at its start: past the warning's 3 s
TONE_HZ = 440

# Keeps every peer connection a page makes, to see that a new microphone renegotiates nothing.
KEEP_PEER_CONNECTIONS = """
(() => {
  const Original = window.RTCPeerConnection;
  if (!Original) return;
  window.__pcs = [];
  window.RTCPeerConnection = class extends Original {
    constructor(...args) { super(...args); window.__pcs.push(this); }
  };
})();
"""


async def level(meter: Locator) -> int:
    return int(await meter.get_attribute("aria-valuenow") or 0)


async def rises(meter: Locator, above: int = 30, within: float = 15.0) -> int:
    """Waits until the level meter shows more than `above` (of 100); returns what it showed."""
    deadline = time.monotonic() + within
    shown = await level(meter)
    while shown <= above:
        assert time.monotonic() < deadline, f"the meter stayed at {shown}"
        await asyncio.sleep(0.1)
        shown = await level(meter)
    return shown


async def microphones_in_use(page: Page) -> list[list[str]]:
    """Per peer connection the page made: its state and the labels of the tracks it sends."""
    found: list[list[str]] = await page.evaluate(
        "() => window.__pcs.map((pc) => [pc.connectionState,"
        " ...pc.getSenders().map((s) => (s.track ? s.track.label : ''))])"
    )
    return found


async def test_a_silent_microphone_is_flagged_until_the_voice_comes_and_the_badge_shows_the_call(
    stack: Stack, playwright: Playwright, tmp_path: Path
) -> None:
    await stack.add_user("anna@shop.example", name="Anna")
    shopper = await launch(playwright, tone_file(tmp_path / "quiet-then-440.wav", TONE_HZ, quiet=QUIET_S))
    browser = shopper.browser
    assert browser is not None
    try:
        await shopper.add_init_script(KEEP_PEER_CONNECTIONS)
        # The operator: a second context of the same process, so the same fake microphone.
        softphone = await browser.new_context(permissions=["microphone"])
        await softphone.add_init_script(LISTEN)
        operator = await softphone.new_page()
        await sign_in(operator, stack.url, "operator", "anna@shop.example", PASSWORD)
        await go_online(operator)
        shop = await shopper.new_page()
        await shop.goto(f"{stack.shop_url}/products/oak-table")
        await shop.get_by_test_id("cb-launcher").click()
        await shop.get_by_test_id("cb-call").click()

        # The shopper's microphone is silent: the meter says so, and after 3 s so does the widget.
        shop_meter = shop.get_by_test_id("cb-mic-level")
        shop_warning = shop.get_by_test_id("cb-mic-warning")
        await expect(shop_meter).to_be_visible(timeout=10_000)
        await expect(shop_warning).to_be_visible(timeout=QUIET_S * 1000)
        await expect(shop_warning).to_have_text("We can't hear you — check your microphone")
        assert await level(shop_meter) == 0

        await operator.get_by_test_id("op-incoming").get_by_test_id("op-answer").click()
        await expect(shop.get_by_test_id("cb-status")).to_contain_text("Anna", timeout=15_000)
        op_meter = operator.get_by_test_id("op-mic-level")
        op_warning = operator.get_by_test_id("op-mic-warning")
        await expect(op_warning).to_be_visible(timeout=QUIET_S * 1000)
        assert await level(op_meter) == 0

        # The voice comes: the warnings go by themselves and the meters move.
        await expect(shop_warning).to_be_hidden(timeout=15_000)
        await rises(shop_meter)
        await expect(op_warning).to_be_hidden(timeout=15_000)
        await rises(op_meter)
        await hears(operator, TONE_HZ)

        # The badge: the figures of the call on loopback, good, not relayed.
        badge = operator.get_by_test_id("op-quality")
        await expect(badge).to_be_visible(timeout=10_000)
        await expect(badge).to_have_attribute("data-quality", "good")
        await expect(badge).to_have_attribute("data-relayed", "false")
        # The round trip comes from the server's RTCP receiver reports (remote-inbound-rtp).
        await expect(badge).to_have_attribute("data-rtt-from", "rtcp")
        await expect(badge).to_contain_text("RTT")
        assert float(await badge.get_attribute("data-loss") or "nan") < 5
        rtt = await badge.get_attribute("data-rtt")
        assert rtt and rtt != "–" and 0 <= float(rtt) < 1000, rtt
        await expect(operator.get_by_test_id("op-quality-warning")).to_be_hidden()

        # Three inputs listed: both sides offer a picker; the shopper picks another microphone.
        picker = shop.get_by_test_id("cb-mic-device")
        await expect(picker).to_be_visible()
        await expect(picker.locator("option")).to_have_count(3)
        await expect(operator.get_by_test_id("op-mic-device").locator("option")).to_have_count(3)
        assert await microphones_in_use(shop) == [["connected", "Fake Default Audio Input"]]
        await picker.select_option(label="Fake Audio Input 1")
        # The same peer connection sends the new track (replaceTrack, no new offer) ...
        deadline = time.monotonic() + 10
        while (used := await microphones_in_use(shop)) != [["connected", "Fake Audio Input 1"]]:
            assert time.monotonic() < deadline, used
            await asyncio.sleep(0.1)
        # ... which starts silent (the fake file afresh) and is checked afresh, then heard.
        await expect(shop_warning).to_be_visible(timeout=QUIET_S * 1000)
        await expect(shop_warning).to_be_hidden(timeout=15_000)
        await hears(operator, TONE_HZ)

        await shop.get_by_test_id("cb-hangup").click()
        await expect(shop.get_by_test_id("cb-status")).to_contain_text("Call ended", timeout=10_000)
        # The call's checks leave with it.
        await expect(shop_meter).to_have_count(0)
        await expect(badge).to_have_count(0, timeout=10_000)
        await expect(op_meter).to_have_count(0)
    finally:
        await browser.close()


class LossyLink:
    """Drops every `nth` RTP packet a Python shopper sends (this kernel has no netem: the loss is
    injected at the sender, as DESIGN's "Tests that are real" says)."""

    def __init__(self, transport: Any, nth: int = 4) -> None:
        self._transport = transport
        self._send = transport._send_rtp
        self._nth = nth
        self._count = 0
        self.dropped = 0

    async def _send_rtp(self, data: bytes) -> None:
        # RTCP (payload types 200-207 in the second byte) always passes: only audio is lost.
        if not 192 <= data[1] <= 223:
            self._count += 1
            if self._count % self._nth == 0:
                self.dropped += 1
                return
        await self._send(data)

    def __enter__(self) -> LossyLink:
        self._transport._send_rtp = self._send_rtp
        return self

    def __exit__(self, *exc: object) -> None:
        self._transport._send_rtp = self._send


async def test_the_badge_warns_while_the_shoppers_audio_arrives_with_loss(
    stack: Stack, playwright: Playwright, tones: dict[str, Path]
) -> None:
    """The shopper's leg loses a quarter of its packets: the forwarder keeps their sequence numbers, so
    the softphone sees the gaps, shows the loss and warns; the warning goes when the link heals."""
    await stack.add_user("anna@shop.example", name="Anna")
    context = await launch(playwright, tones["operator"])
    browser = context.browser
    assert browser is not None
    try:
        operator = await context.new_page()
        await sign_in(operator, stack.url, "operator", "anna@shop.example", PASSWORD)
        await go_online(operator)
        shopper = await stack.sockets.shopper()
        await shopper.call(440)
        await operator.get_by_test_id("op-incoming").get_by_test_id("op-answer").click()
        await expect(operator.get_by_test_id("op-call-state")).to_have_text("connected", timeout=15_000)
        await hears(operator, 440)
        badge = operator.get_by_test_id("op-quality")
        warning = operator.get_by_test_id("op-quality-warning")
        await expect(badge).to_have_attribute("data-quality", "good", timeout=10_000)
        await expect(warning).to_be_hidden()

        with LossyLink(shopper.pc.getSenders()[0].transport) as link:
            await expect(warning).to_be_visible(timeout=10_000)
            await expect(warning).to_have_text("The shopper's audio arrives poorly: they may sound choppy.")
            await expect(badge).to_have_attribute("data-quality", "poor")
            loss = float(await badge.get_attribute("data-loss") or "nan")
            assert 10 <= loss <= 40, loss
        assert link.dropped > 10
        await expect(warning).to_be_hidden(timeout=10_000)
        await expect(badge).to_have_attribute("data-quality", "good")
    finally:
        await browser.close()
