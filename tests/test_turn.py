"""Browsers get short-lived TURN credentials that a real coturn server accepts (TURN REST API)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Playwright

from tests.browsers import launch
from tests.servers import coturn
from tests.stack import running_stack, settings_for

SECRET = "turn-shared-secret"

# Gathers with TURN only, on the shop's page, with the ICE servers the widget's configuration hands out.
RELAY_CANDIDATES = """
async ([base, key]) => {
  const config = await (await fetch(`${base}/widget/config?site=${key}`)).json();
  const pc = new RTCPeerConnection({ iceServers: config.ice_servers, iceTransportPolicy: 'relay' });
  pc.createDataChannel('probe');
  const types = [];
  const done = new Promise((resolve) => {
    pc.onicecandidate = (e) => (e.candidate ? types.push(e.candidate.type) : resolve());
    setTimeout(resolve, 8000);
  });
  await pc.setLocalDescription(await pc.createOffer());
  await done;
  pc.close();
  return types;
}
"""


@pytest.fixture(scope="module")
def turn_url() -> Iterator[str]:
    with coturn(SECRET) as url:
        yield url


@pytest.mark.parametrize(("secret", "relayed"), [(SECRET, True), ("not-the-secret", False)])
async def test_a_browser_allocates_a_relay_with_the_credentials_it_is_given(
    tmp_path: Path, playwright: Playwright, turn_url: str, secret: str, relayed: bool
) -> None:
    settings = settings_for(tmp_path, turn_urls=[turn_url], turn_secret=secret, turn_ttl=600)
    async with running_stack(settings) as stack:
        browser = await launch(playwright, None)
        page = await browser.new_page()
        await page.goto(stack.shop_url)
        types = await page.evaluate(RELAY_CANDIDATES, [stack.url, stack.site.key])
        # With the server's secret coturn grants an allocation; with another one it refuses.
        assert ("relay" in types) is relayed, types
        await browser.browser.close()
