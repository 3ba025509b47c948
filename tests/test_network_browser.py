"""Calls that survive the network, with the shopper's browser in a network namespace of its own.

The shopper's Chromium runs inside a namespace joined to this host by a veth pair (tests/netns.py); the
callserver and the demo shop listen on the host's end of it, the operator's Chromium stays in the root
namespace (on loopback). Taking the link down, or moving the browser to a new address, loses the network
the way a phone does; audio both ways is heard with AnalyserNodes (440 Hz shopper, 1000 Hz operator).
The figures (link back → audio both ways, link gone → call ended) are printed for the README.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import BrowserContext, Page, Playwright, async_playwright, expect
from sqlalchemy import func, select

from callserver import sites
from callserver.app import create_app
from callserver.demo import shop_app
from callserver.media.media_watch import NO_MEDIA_AFTER
from callserver.networks import DEFAULT_DENIED_NETWORKS
from callserver.store.models import Call
from callserver.web.keys import DATABASE, ROSTER
from tests.browsers import CHROMIUM_FLAGS, LISTEN, chromium_path, go_online, hears, launch, sign_in, tone_file
from tests.netns import Namespace, launch_inside, namespace, unavailable
from tests.stack import PASSWORD, Stack, free_port, settings_for
from tests.test_browser_call import place_call
from tests.test_call_resume import events_of
from tests.test_resume_browser import WATCH, seen

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(bool(why := unavailable()), reason=f"no network namespaces: {why}"),
]

# Seconds, counted from when the server noticed the side gone (its no-media watchdog, ~4 s): longer than
# a new address takes to come back (Chrome needs ~7 s to call the old path disconnected, a softphone or
# widget 3 s more to give up the socket left on the old address), short enough to wait out.
RESUME_WINDOW = 15.0
# Outages (and moves) per call, calls lost for good: 1 in the suite; NETWORK_TRIES=5 for the README's figures.
TRIES = int(os.environ.get("NETWORK_TRIES", "1"))
# Seconds from the link back (or the new address) to both hearing each other, from the link gone to ended.
FIGURES: dict[str, list[float]] = {
    "link_back_to_audio": [],
    "new_address_to_audio": [],
    "operator_new_address_to_audio": [],
    "lost_detected": [],
}


@dataclass
class Network:
    stack: Stack
    space: Namespace
    operator: Page
    operator_browser: BrowserContext
    shopper_browser: BrowserContext
    playwright: Playwright
    url: str  # the server on the veth's host end, as browsers inside the namespace reach it
    tones: dict[str, Path]


@pytest.fixture(scope="module")
def space() -> Iterator[Namespace]:
    with namespace() as made:
        yield made


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def network(space: Namespace, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Network]:
    """One server and shop on the veth's host end (and loopback), one operator, one shopper browser."""
    folder = tmp_path_factory.mktemp("network")
    # The shopper's addresses are private (10.203.X.0/24): the ICE policy must let the server check them.
    denied = [n for n in DEFAULT_DENIED_NETWORKS if not n.startswith("10.")]
    settings = settings_for(folder, ring_timeout=30, resume_window=RESUME_WINDOW, ice_denied_networks=denied)
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port, shop_port = free_port(), free_port()
    url, shop_url = f"http://{space.host}:{port}", f"http://{space.host}:{shop_port}"
    for host in (space.host, "127.0.0.1"):
        await web.TCPSite(runner, host, port).start()
    async with app[DATABASE].session() as session:
        site = await sites.create_site(session, "Test shop", [shop_url])
    shop_runner = web.AppRunner(shop_app(url, site.key), access_log=None)
    await shop_runner.setup()
    await web.TCPSite(shop_runner, space.host, shop_port).start()
    stack = Stack(app=app, url=f"http://127.0.0.1:{port}", shop_url=shop_url, site=site, settings=settings)
    shopper_tone = tone_file(folder / "shopper-440.wav", 440)
    operator_tone = tone_file(folder / "operator-1000.wav", 1000)
    async with async_playwright() as playwright:
        operator_browser = shopper_browser = None
        try:
            operator_browser = await launch(playwright, operator_tone)
            shopper_browser = await launch_inside(playwright, space, shopper_tone, [shop_url, url])
            await stack.add_user("anna@shop.example", name="Anna")
            operator = await operator_browser.new_page()
            await sign_in(operator, stack.url, "operator", "anna@shop.example", PASSWORD)
            await go_online(operator)
            tones = {"shopper": shopper_tone, "operator": operator_tone}
            yield Network(stack, space, operator, operator_browser, shopper_browser, playwright, url, tones)
        finally:
            for browser in (shopper_browser, operator_browser):
                if browser is not None:
                    await browser.browser.close()
            await stack.sockets.close()
            await shop_runner.cleanup()
            await runner.cleanup()
            print_figures()


def print_figures() -> None:
    for name, values in FIGURES.items():
        if values:
            print(
                f"\n[network figures] {name}: median {statistics.median(values):.2f} s, "
                f"max {max(values):.2f} s over {len(values)} ({', '.join(f'{v:.2f}' for v in values)})"
            )


async def calls_in_store(stack: Stack) -> int:
    async with stack.database.session() as db:
        return int(await db.scalar(select(func.count()).select_from(Call)) or 0)


async def answered_call(net: Network) -> tuple[Page, str]:
    """A fresh shop page in the namespace's browser calls; the operator answers; both hear the other."""
    shop = await net.shopper_browser.new_page()
    await shop.goto(f"{net.stack.shop_url}/products/oak-table")
    before = await calls_in_store(net.stack)
    call_id = await place_call(shop, net.operator)
    await net.operator.get_by_test_id("op-incoming").get_by_test_id("op-answer").click()
    await expect(shop.get_by_test_id("cb-status")).to_contain_text("Anna", timeout=15_000)
    await expect(net.operator.get_by_test_id("op-call-state")).to_have_text("connected", timeout=15_000)
    await hears(net.operator, 440)
    await hears(shop, 1000)
    assert await calls_in_store(net.stack) == before + 1
    await shop.evaluate(WATCH, "cb-status")
    await net.operator.evaluate(WATCH, "op-call-state")
    return shop, call_id


async def hear_each_other_again(net: Network, shop: Page, legs: int, since: float, figure: str) -> None:
    """Both sides hear the other's tone on the shopper's new leg; records how long it took from `since`."""
    await shop.wait_for_function("(n) => window.__tracks.length >= n", arg=legs, timeout=30_000)
    await asyncio.gather(hears(net.operator, 440, within=30), hears(shop, 1000, within=30))
    FIGURES[figure].append(time.monotonic() - since)


async def hang_up_one_call(net: Network, shop: Page, call_id: str, calls_before: int) -> None:
    """The operator hangs up: still one call record, completed, the shopper's reconnects, its events."""
    await expect(net.operator.get_by_test_id("op-call-state")).to_have_text("connected", timeout=15_000)
    await expect(shop.get_by_test_id("cb-status")).to_contain_text("Anna", timeout=15_000)
    # Nobody clicked: the shopper was told, the operator saw the shopper's leg come back.
    assert "Reconnecting…" in await seen(shop, "cb-status")
    assert "reconnecting" in await seen(net.operator, "op-call-state")
    await net.operator.get_by_test_id("op-hangup").click()
    record = await net.stack.ended_call(call_id)
    assert await calls_in_store(net.stack) == calls_before
    assert record.end_reason == "completed"
    assert record.quality["shopper"]["reconnects"] >= TRIES
    assert record.quality["operator"]["reconnects"] == 0
    names = [name for name, _ in await events_of(net.stack, call_id)]
    assert names.count("call.connected") == 1, names
    assert "call.reconnected" in names, names
    await shop.close()


async def test_the_shoppers_link_down_for_5_s_and_back_both_hear_each_other_again(network: Network) -> None:
    net = network
    shop, call_id = await answered_call(net)
    calls = await calls_in_store(net.stack)
    for attempt in range(TRIES):
        net.space.link_down()
        try:
            await asyncio.sleep(5)  # the outage itself: what the test is about, not a wait for a condition
        finally:
            net.space.link_up()
        await hear_each_other_again(net, shop, attempt + 2, time.monotonic(), "link_back_to_audio")
    await hang_up_one_call(net, shop, call_id, calls)


async def test_the_shopper_moves_to_a_new_address_both_hear_each_other_again(network: Network) -> None:
    net = network
    shop, call_id = await answered_call(net)
    calls = await calls_in_store(net.stack)
    for attempt in range(TRIES):
        old = net.space.address
        moved_at = time.monotonic()
        new = net.space.move(host_byte=66 if old.endswith(".2") else 2)
        assert new != old
        await hear_each_other_again(net, shop, attempt + 2, moved_at, "new_address_to_audio")
    await hang_up_one_call(net, shop, call_id, calls)


async def only_anna_online(net: Network, within: float = 15) -> None:
    """Wait until the server counts Anna alone online (Bea's going offline has reached it)."""
    roster = net.stack.app[ROSTER]
    deadline = time.monotonic() + within
    while roster.operators_online(net.stack.site.id) != 1:
        assert time.monotonic() < deadline, f"{roster.operators_online(net.stack.site.id)} operators online"
        await asyncio.sleep(0.05)


async def launch_outside(
    playwright: Playwright, microphone: Path, secure_origins: list[str]
) -> BrowserContext:
    """A Chromium in this host's namespace for pages served on the veth's host end (plain http there
    is no secure context either)."""
    args = [
        *CHROMIUM_FLAGS,
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}",
        f"--unsafely-treat-insecure-origin-as-secure={','.join(secure_origins)}",
    ]
    browser = await playwright.chromium.launch(executable_path=chromium_path(), args=args, headless=True)
    context = await browser.new_context(permissions=["microphone"])
    await context.add_init_script(LISTEN)
    return context


async def test_the_operator_moves_to_a_new_address_both_hear_each_other_again(network: Network) -> None:
    """The softphone in the namespace, the shopper outside. On a new address its socket is left on the
    old one (no close comes): a re-offer with no answer in 3 s lets it go, a new socket resumes the
    call and the softphone offers again."""
    net = network
    await net.stack.add_user("bea@shop.example", name="Bea")
    # Anna (outside) steps away: the call rings Bea, whose softphone runs inside the namespace.
    await net.operator.get_by_test_id("op-presence").select_option("offline")
    await expect(net.operator.get_by_test_id("op-presence")).to_have_value("offline")
    bea_browser = await launch_inside(net.playwright, net.space, net.tones["operator"], [net.url])
    shopper_browser = await launch_outside(
        net.playwright, net.tones["shopper"], [net.stack.shop_url, net.url]
    )
    try:
        bea = await bea_browser.new_page()
        await sign_in(bea, net.url, "operator", "bea@shop.example", PASSWORD)
        await go_online(bea)
        shop = await shopper_browser.new_page()
        await shop.goto(f"{net.stack.shop_url}/products/oak-table")
        calls = await calls_in_store(net.stack) + 1
        call_id = await place_call(shop, bea)
        await bea.get_by_test_id("op-incoming").get_by_test_id("op-answer").click()
        await expect(bea.get_by_test_id("op-call-state")).to_have_text("connected", timeout=15_000)
        await asyncio.gather(hears(bea, 440), hears(shop, 1000))
        await shop.evaluate(WATCH, "cb-status")
        await bea.evaluate(WATCH, "op-call-state")
        legs = await bea.evaluate("window.__tracks.length")
        for attempt in range(TRIES):
            moved_at = time.monotonic()
            old = net.space.address
            assert net.space.move(host_byte=66 if old.endswith(".2") else 2) != old
            await bea.wait_for_function(
                "(n) => window.__tracks.length >= n", arg=legs + attempt + 1, timeout=30_000
            )
            await asyncio.gather(hears(bea, 440, within=30), hears(shop, 1000, within=30))
            FIGURES["operator_new_address_to_audio"].append(time.monotonic() - moved_at)
        await expect(bea.get_by_test_id("op-call-state")).to_have_text("connected", timeout=15_000)
        assert "reconnecting" in await seen(bea, "op-call-state")
        assert "Reconnecting…" in await seen(shop, "cb-status")
        await bea.get_by_test_id("op-hangup").click()
        record = await net.stack.ended_call(call_id)
        assert record.end_reason == "completed"
        assert await calls_in_store(net.stack) == calls
        assert record.quality["operator"]["reconnects"] >= TRIES
        names = [name for name, _ in await events_of(net.stack, call_id)]
        assert names.count("call.connected") == 1 and "call.reconnected" in names, names
        # Offline before her browser goes: a softphone gone without a word stays ringable for the
        # presence grace, and the next tests' calls are Anna's.
        await bea.get_by_test_id("op-presence").select_option("offline")
        await expect(bea.get_by_test_id("op-presence")).to_have_value("offline")
    finally:
        for browser in (shopper_browser, bea_browser):
            await browser.browser.close()
        await go_online(net.operator)
        await only_anna_online(net)


async def test_mute_and_hold_in_the_browsers_are_not_a_side_gone(network: Network) -> None:
    """Chromium goes on sending while its microphone is muted (`track.enabled = false`) and while the
    call is held: the no-media watchdog (callserver/media/media_watch.py) says nothing."""
    net = network
    shop, call_id = await answered_call(net)
    operator = net.operator
    await shop.get_by_test_id("cb-mute").click()
    await operator.get_by_test_id("op-mute").click()
    await operator.get_by_test_id("op-hold").click()
    await expect(operator.get_by_test_id("op-call-state")).to_have_text("held", timeout=10_000)
    await asyncio.sleep(2 * NO_MEDIA_AFTER + 1)  # muted and held for twice the watchdog's threshold
    await operator.get_by_test_id("op-hold").click()
    await operator.get_by_test_id("op-mute").click()
    await shop.get_by_test_id("cb-mute").click()
    await expect(operator.get_by_test_id("op-call-state")).to_have_text("connected", timeout=10_000)
    await asyncio.gather(hears(operator, 440), hears(shop, 1000))
    assert "reconnecting" not in await seen(operator, "op-call-state")
    assert "Reconnecting…" not in await seen(shop, "cb-status")
    await operator.get_by_test_id("op-hangup").click()
    record = await net.stack.ended_call(call_id)
    assert record.end_reason == "completed"
    assert record.quality["shopper"]["reconnects"] == record.quality["operator"]["reconnects"] == 0
    names = [name for name, _ in await events_of(net.stack, call_id)]
    assert "call.reconnecting" not in names, names
    await shop.close()


async def test_the_shoppers_link_down_past_the_resume_window_ends_the_call_lost(network: Network) -> None:
    for _ in range(TRIES):
        await one_call_lost(network)


async def one_call_lost(net: Network) -> None:
    shop, call_id = await answered_call(net)
    net.space.link_down()
    gone_at = time.monotonic()
    try:
        # The server notices the silence itself (no packet for NO_MEDIA_AFTER), long before ICE
        # consent (RFC 7675, ~30 s) or the widget's socket heartbeat would: the operator is told.
        await expect(net.operator.get_by_test_id("op-call-state")).to_have_text(
            "reconnecting", timeout=int(4 * NO_MEDIA_AFTER * 1000)
        )
        await expect(shop.get_by_test_id("cb-status")).to_have_text("Reconnecting…", timeout=15_000)
        record = await net.stack.ended_call(call_id, within=RESUME_WINDOW + 4 * NO_MEDIA_AFTER)
        FIGURES["lost_detected"].append(time.monotonic() - gone_at)
        assert record.end_reason == "lost"
        assert time.monotonic() - gone_at >= RESUME_WINDOW
        events = await events_of(net.stack, call_id)
        first = next(detail for name, detail in events if name == "call.reconnecting")
        assert (first["side"], first["cause"]) == ("shopper", "media"), events
        status = net.operator.locator("#active-status")
        await expect(status).to_contain_text("connection lost", timeout=10_000)
        await expect(net.operator.get_by_test_id("op-call-state")).to_be_hidden()
        # Still offline, the widget hears nothing of the end: it gives up by itself, resume_window + 5 s
        # after the browser said it was offline.
        await expect(shop.get_by_test_id("cb-status")).to_contain_text(
            "interrupted", timeout=int((RESUME_WINDOW + 5) * 1000)
        )
        assert not await shop.evaluate("navigator.onLine")
    finally:
        net.space.link_up()
    names = [name for name, _ in await events_of(net.stack, call_id)]
    assert names.count("call.reconnecting") >= 1 and "call.reconnected" not in names, names
    await shop.close()
