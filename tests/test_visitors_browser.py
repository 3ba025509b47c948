"""The salesperson's eye in real browsers: the journey on the board, invitations, rules, hours, languages,
and a widget that fits every page of a shop (size, hostile CSS, keyboard, phone screens)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from playwright.async_api import Page, Playwright, expect
from sqlalchemy import select

from callserver.store.models import Visitor
from tests.browsers import go_online, hears, launch, sign_in
from tests.stack import PASSWORD, Stack
from tests.visitors_support import configure_site

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
WIDGET_BUDGET = 12_000  # bytes, gzip -9


async def token_of(shop: Page) -> str:
    token: str = await shop.evaluate("CallButton.visitorToken()")
    return token


async def test_the_operator_sees_the_journey_invites_and_the_visitor_calls_back(
    stack: Stack, playwright: Playwright, tones: dict[str, Path]
) -> None:
    await stack.add_user("anna@shop.example", name="Anna")
    operator_browser = await launch(playwright, tones["operator"])
    shopper_browser = await launch(playwright, tones["shopper"])
    operator = await operator_browser.new_page()
    await sign_in(operator, stack.url, "operator", "anna@shop.example", PASSWORD)
    await go_online(operator)

    shop = await shopper_browser.new_page()
    for seen, slug in enumerate(("brass-lamp", "linen-chair", "oak-table"), start=1):
        await shop.goto(f"{stack.shop_url}/products/{slug}?utm_source=newsletter")
        # Each page is on the board before the shopper moves on, as a person reading it would.
        row = operator.get_by_test_id("op-visitors").locator(f'[data-visitor-id="{await token_of(shop)}"]')
        await expect(row).to_have_attribute("data-pages", str(seen), timeout=5_000)
    await expect(row).to_have_attribute("data-value", "1290")  # the dearest product seen (JSON-LD)
    await expect(row).to_contain_text("Solid oak dining table")
    await expect(row).to_contain_text("Brass reading lamp")  # the journey so far
    await expect(row).to_contain_text("newsletter")
    assert int(await row.get_attribute("data-score") or 0) >= 50
    ARTIFACTS.mkdir(exist_ok=True)
    await operator.set_viewport_size({"width": 1280, "height": 720})
    await operator.screenshot(path=ARTIFACTS / "softphone-board.png")

    invite = row.get_by_test_id("op-invite")
    await expect(invite).to_be_enabled()  # the page holds its invitation stream open
    await invite.click()
    bubble = shop.get_by_test_id("cb-invite")
    await expect(bubble).to_be_visible(timeout=2_000)  # operators expect well under 2 s
    await expect(bubble).to_contain_text("Anna")
    await shop.get_by_test_id("cb-invite-call").click()

    incoming = operator.get_by_test_id("op-incoming")
    await expect(incoming).to_have_count(1, timeout=15_000)
    await expect(incoming).to_contain_text("oak-table")
    await incoming.get_by_test_id("op-answer").click()
    await expect(shop.get_by_test_id("cb-status")).to_contain_text("Anna", timeout=15_000)
    await hears(operator, 440)
    await hears(shop, 1000)
    await shop.get_by_test_id("cb-hangup").click()
    await expect(shop.get_by_test_id("cb-status")).to_contain_text("Call ended", timeout=10_000)
    await shopper_browser.browser.close()
    await operator_browser.browser.close()


async def test_a_rule_invites_after_seconds_on_a_matching_page_and_a_dismissal_is_final(
    stack: Stack, playwright: Playwright
) -> None:
    await configure_site(
        stack, invite_rules=[{"pattern": "/products/oak-*", "seconds": 2, "max_per_visitor": 3}]
    )
    await stack.sockets.operator("op@shop.example", name="Olga", online=True)  # online and free
    browser = await launch(playwright, None)
    shop = await browser.new_page()
    bubble = shop.get_by_test_id("cb-invite")

    await shop.goto(f"{stack.shop_url}/products/brass-lamp")
    await shop.wait_for_timeout(3_500)
    await expect(bubble).to_be_hidden()  # not a matching page

    await shop.goto(f"{stack.shop_url}/products/oak-table")
    await expect(bubble).to_be_hidden()
    await expect(bubble).to_be_visible(timeout=5_000)
    await expect(bubble).to_contain_text("Olga")
    ARTIFACTS.mkdir(exist_ok=True)
    await shop.screenshot(path=ARTIFACTS / "widget-invitation.png")
    await shop.get_by_test_id("cb-invite-close").click()
    await expect(bubble).to_be_hidden()
    await expect(shop.get_by_test_id("cb-launcher")).to_be_visible()  # the launcher stays

    await shop.goto(f"{stack.shop_url}/products/linen-chair")
    await shop.goto(f"{stack.shop_url}/products/oak-table")
    await shop.wait_for_timeout(4_000)
    await expect(bubble).to_be_hidden()
    async with stack.database.session() as session:
        visitor = await session.scalar(select(Visitor).where(Visitor.token == await token_of(shop)))
    assert visitor is not None and visitor.invitations == 1 and visitor.invitation_dismissed_at is not None
    # Even with the widget's memory cleared, the server remembers.
    await shop.evaluate("localStorage.removeItem('callbutton.noinvite')")
    await shop.reload()
    await shop.wait_for_timeout(3_500)
    await expect(bubble).to_be_hidden()
    await browser.browser.close()


@pytest.fixture
async def operator_online(stack: Stack) -> AsyncIterator[None]:
    """Someone can answer, so the widget offers a call (with nobody online it opens onto the form)."""
    operator = await stack.sockets.operator("on-duty@shop.example", online=True)
    yield
    await operator.close()


async def test_closed_hours_offer_the_offline_form_with_the_opening_time_in_the_page_language(
    stack: Stack, playwright: Playwright, operator_online: None
) -> None:
    zone = ZoneInfo("Europe/Rome")
    in_two_days = (datetime.now(UTC).astimezone(zone) + timedelta(days=2)).date()
    day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[in_two_days.weekday()]
    await configure_site(stack, hours={"timezone": "Europe/Rome", "week": {day: "09:00-18:00"}})
    english = in_two_days.strftime("%A")  # C locale: English day names
    browser = await launch(playwright, None)
    shop = await browser.new_page()

    await shop.goto(f"{stack.shop_url}/products/oak-table")
    await shop.get_by_test_id("cb-launcher").click()
    await expect(shop.get_by_test_id("cb-offline-form")).to_be_visible()
    status = shop.get_by_test_id("cb-status")
    await expect(status).to_have_text(f"We're closed now — we open {english} at 09:00.")
    await expect(shop.get_by_test_id("cb-call")).to_be_hidden()

    await shop.goto(f"{stack.shop_url}/products/oak-table?lang=ru")
    await shop.get_by_test_id("cb-launcher").click()
    await expect(status).to_contain_text("Сейчас мы закрыты — откроемся")
    await expect(status).to_contain_text("в 09:00")
    await expect(shop.get_by_test_id("cb-offline-send")).to_have_text("Отправить сообщение")

    await configure_site(stack, hours=None)
    await shop.reload()
    await shop.get_by_test_id("cb-launcher").click()
    await expect(status).to_have_text("Поговорите с нами — бесплатно, прямо из браузера")
    await expect(shop.get_by_test_id("cb-call")).to_have_text("Позвонить")
    await expect(shop.get_by_test_id("cb-launcher")).to_have_attribute("aria-label", "Позвоните нам")
    await expect(shop.get_by_test_id("cb-offline-form")).to_be_hidden()
    await browser.browser.close()


async def test_the_widget_stays_within_its_size_budget(stack: Stack) -> None:
    """What a shop's page downloads: /widget.js as served, gzipped."""
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.get(f"{stack.url}/widget.js", headers={"Accept-Encoding": "gzip"}) as response,
    ):
        assert response.headers["Content-Encoding"] == "gzip"
        size = len(await response.read())
        etag = response.headers["ETag"]
    assert size <= WIDGET_BUDGET, f"widget.js is {size} bytes gzipped, over {WIDGET_BUDGET}"
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{stack.url}/widget.js", headers={"If-None-Match": etag}) as response,
    ):
        assert response.status == 304


HOSTILE = (
    "* { all: unset; font-size: 40px !important } button { display: none !important } div { display: none }"
)


async def test_the_widget_survives_hostile_css_works_by_keyboard_and_fits_a_phone(
    stack: Stack, playwright: Playwright, operator_online: None
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    browser = await launch(playwright, None)
    assert browser.browser is not None
    desktop_context = await browser.browser.new_context(viewport={"width": 1280, "height": 800})
    desktop = await desktop_context.new_page()
    await desktop.goto(f"{stack.shop_url}/products/oak-table")
    await desktop.add_style_tag(content=HOSTILE)
    launcher = desktop.get_by_test_id("cb-launcher")
    await expect(launcher).to_be_visible()
    box = await launcher.bounding_box()
    assert box is not None and 55 <= box["width"] <= 65 and box["x"] > 1100  # our size, bottom right
    # Our styles don't leak out either: the shop's own header keeps the shop's font.
    font = await desktop.evaluate("getComputedStyle(document.querySelector('header span')).fontFamily")
    assert "system-ui" not in font

    # Keyboard: focus the launcher, open with Enter, Escape closes and gives the focus back.
    await launcher.focus()
    await desktop.keyboard.press("Enter")
    call = desktop.get_by_test_id("cb-call")
    await expect(call).to_be_visible()
    await expect(call).to_be_focused()
    await expect(call).to_have_text("Call now")
    await expect(call).to_have_css("font-size", "15px")
    await desktop.screenshot(path=ARTIFACTS / "widget-desktop.png")
    await desktop.keyboard.press("Escape")
    await expect(call).to_be_hidden()
    await expect(launcher).to_be_focused()
    await expect(launcher).to_have_attribute("aria-expanded", "false")

    phone_context = await browser.browser.new_context(
        viewport={"width": 360, "height": 740}, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    phone = await phone_context.new_page()
    await phone.goto(f"{stack.shop_url}/products/oak-table")
    await phone.get_by_test_id("cb-launcher").click()
    panel_box = await phone.get_by_test_id("cb-status").bounding_box()
    assert panel_box is not None and panel_box["width"] >= 300  # the panel spans the narrow screen
    assert panel_box["x"] + panel_box["width"] <= 360
    await phone.screenshot(path=ARTIFACTS / "widget-phone.png")
    await browser.browser.close()
