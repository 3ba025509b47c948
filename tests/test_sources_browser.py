"""Where conversations come from, in a real browser: the widget keeps the landing's campaign and click id
across the shop's pages, a chat carries them, and the order placed later is reported under the campaign
(Sources page, API, Google Ads export); a later landing replaces the last touch but not the first."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from typing import Any

import aiohttp
from playwright.async_api import BrowserContext, Page, Playwright, expect

from callserver.store.models import Chat
from tests.browsers import launch, sign_in
from tests.dashboard_support import add_owner
from tests.sockets import Softphone
from tests.stack import PASSWORD, Stack

SPRING = "utm_source=newsletter&utm_medium=email&utm_campaign=spring&gclid=TeSt_123"
SUMMER = "utm_source=newsletter&utm_medium=email&utm_campaign=summer"


def bearer(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.site.secret}"}


async def kept_touches(shop: Page) -> dict[str, Any]:
    """What the widget keeps in the shop's localStorage."""
    raw = await shop.evaluate(
        "() => ({first: localStorage.getItem('callbutton.touch.first'),"
        " last: localStorage.getItem('callbutton.touch.last')})"
    )
    return {which: json.loads(value) if value else None for which, value in raw.items()}


async def chat_from(shop: Page, anna: Softphone, text: str) -> str:
    """The shopper opens a chat in the widget and writes; Anna (a Python softphone) is given it."""
    await shop.get_by_test_id("cb-launcher").click()
    await shop.get_by_test_id("cb-chat-open").click()
    await shop.get_by_test_id("cb-chat-input").fill(text)
    await shop.get_by_test_id("cb-chat-send").click()
    assigned = await anna.receive("chat.assigned")
    chat_id: str = assigned["chat"]["id"]
    await anna.receive("chat.message", lambda f: f["message"]["text"] == text)
    await expect(shop.get_by_test_id("cb-chat-log")).to_contain_text(text)
    return chat_id


async def post_order(http: aiohttp.ClientSession, stack: Stack, **body: Any) -> dict[str, Any]:
    async with http.post(f"{stack.url}/api/v1/orders", json=body, headers=bearer(stack)) as response:
        assert response.status in (200, 201), await response.text()
        reply: dict[str, Any] = await response.json()
        return reply


async def source_row(owner: Page, base: str, campaign: str, touch: str = "last") -> dict[str, str | None]:
    """The Sources page's row for `campaign`, as the owner's browser shows it."""
    today = datetime.now(UTC).date().isoformat()
    await owner.goto(f"{base}/dashboard/sources?from={today}&to={today}&touch={touch}")
    table = owner.get_by_test_id("dash-sources")
    await expect(table).to_have_attribute("data-touch", touch)
    row = table.locator(f'tr[data-campaign="{campaign}"]')
    await expect(row).to_have_count(1)
    names = ("source", "medium", "conversations", "orders", "revenue", "currency")
    return {name: await row.get_attribute(f"data-{name}") for name in names}


async def api_rows(http: aiohttp.ClientSession, stack: Stack, by: str) -> dict[str, dict[str, Any]]:
    today = datetime.now(UTC).date().isoformat()
    url = f"{stack.url}/api/v1/reports/revenue?from={today}&to={today}&by={by}"
    async with http.get(url, headers=bearer(stack)) as response:
        assert response.status == 200, await response.text()
        return {row["key"]: row for row in (await response.json())["rows"]}


async def google_ads_rows(owner: BrowserContext, base: str) -> list[list[str]]:
    """The export, fetched with the owner's browser session (the dashboard's cookie)."""
    today = datetime.now(UTC).date().isoformat()
    response = await owner.request.get(f"{base}/dashboard/export/google-ads.csv?from={today}&to={today}")
    assert response.status == 200, await response.text()
    return list(csv.reader(io.StringIO(await response.text())))


async def test_a_visitor_from_the_spring_newsletter_who_chats_and_orders_is_reported_under_spring(
    stack: Stack, playwright: Playwright
) -> None:
    await add_owner(stack, "owner@shop.example")
    anna = await stack.sockets.operator("anna@shop.example", "Anna", online=True)
    shopper = await launch(playwright, None)
    browser = shopper.browser
    assert browser is not None
    try:
        # Lands from the newsletter, then moves on to another page of the shop (no parameters there).
        shop = await shopper.new_page()
        await shop.goto(f"{stack.shop_url}/?{SPRING}")
        await expect(shop.get_by_test_id("cb-launcher")).to_be_visible()
        landed = await kept_touches(shop)
        spring = {
            "utm_source": "newsletter",
            "utm_medium": "email",
            "utm_campaign": "spring",
            "gclid": "TeSt_123",
        }
        assert landed["last"] is not None and landed["first"] == landed["last"]
        assert {key: landed["last"].get(key) for key in spring} == spring
        await shop.locator('a[href="/products/oak-table"]').click()
        await shop.wait_for_url(f"{stack.shop_url}/products/oak-table")
        await expect(shop.get_by_test_id("cb-launcher")).to_be_visible()
        # The shop's own page referred it: not a touch.
        assert (await shop.evaluate("document.referrer")).startswith(stack.shop_url)
        assert await kept_touches(shop) == landed

        chat_id = await chat_from(shop, anna, "Does the oak table come in 180 cm?")
        token = await shop.evaluate("CallButton.visitorToken()")
        async with stack.database.session() as session:
            chat = await session.get(Chat, chat_id)
            assert chat is not None
            assert (chat.source, chat.medium, chat.campaign, chat.gclid) == (
                "newsletter",
                "email",
                "spring",
                "TeSt_123",
            )
            assert chat.touches == landed

        # Later the order arrives with the visitor's token, and is partly refunded.
        async with aiohttp.ClientSession() as http:
            order = await post_order(
                http, stack, order_id="S-1", total=320.00, currency="EUR", visitor_token=token
            )
            assert order["attribution"]["conversation_id"] == chat_id, order
            await post_order(
                http,
                stack,
                order_id="S-1",
                total=320.00,
                currency="EUR",
                visitor_token=token,
                status="partially_refunded",
                refunded_total=20.00,
                updated_at=datetime.now(UTC).isoformat(),
            )

            owner_context = await browser.new_context()
            owner = await owner_context.new_page()
            await sign_in(owner, stack.url, "dashboard", "owner@shop.example", PASSWORD)
            assert await source_row(owner, stack.url, "spring") == {
                "source": "newsletter",
                "medium": "email",
                "conversations": "1",
                "orders": "1",
                "revenue": "300.00",
                "currency": "EUR",
            }
            found = (await api_rows(http, stack, "campaign"))["spring"]
            assert (found["conversations"], found["orders"], found["revenue"], found["refunded"]) == (
                1,
                1,
                "300.00",
                "20.00",
            )
            ads = await google_ads_rows(owner_context, stack.url)
            assert [row for row in ads[2:] if row[0] == "TeSt_123"] == [
                ["TeSt_123", "callserver conversation order", ads[2][2], "300.00", "EUR"]
            ]

            # A later landing from the summer issue: the last touch is replaced, the first stays.
            await anna.send({"type": "chat.close", "chat_id": chat_id})
            await anna.receive("chat.closed", lambda f: f["chat_id"] == chat_id)
            await expect(shop.get_by_test_id("cb-status")).to_contain_text("ended", ignore_case=True)
            # Opened from the webmail's page: another site, so its domain is kept with the touch.
            await shop.goto(
                f"{stack.shop_url}/products/linen-chair?{SUMMER}", referer="https://www.mail.example/inbox"
            )
            await expect(shop.get_by_test_id("cb-launcher")).to_be_visible()
            kept = await kept_touches(shop)
            assert kept["first"] == landed["first"]
            assert kept["last"]["utm_campaign"] == "summer" and "gclid" not in kept["last"]
            assert kept["last"]["referrer"] == "www.mail.example"
            await shop.goto(f"{stack.shop_url}/")
            assert await kept_touches(shop) == kept

            second = await chat_from(shop, anna, "And the linen chair?")
            assert second != chat_id
            await post_order(http, stack, order_id="S-2", total=80.00, currency="EUR", visitor_token=token)
            assert (await source_row(owner, stack.url, "summer"))["revenue"] == "80.00"
            assert (await source_row(owner, stack.url, "spring"))["revenue"] == "300.00"
            # By first touch both conversations came from the spring newsletter.
            first = await source_row(owner, stack.url, "spring", touch="first")
            assert (first["conversations"], first["orders"], first["revenue"]) == ("2", "2", "380.00")
            campaigns = await api_rows(http, stack, "campaign")
            assert campaigns["summer"]["revenue"] == "80.00" and campaigns["spring"]["revenue"] == "300.00"
            # The summer landing had no click id: the conversion still goes to the spring click, as
            # Google's own tag would keep it (an upload may credit a click up to 90 days back).
            async with stack.database.session() as session:
                later = await session.get(Chat, second)
                assert later is not None and (later.campaign, later.gclid) == ("summer", "TeSt_123")
                assert later.touches == kept
            ads = await google_ads_rows(owner_context, stack.url)
            assert [(row[0], row[3]) for row in ads[2:]] == [("TeSt_123", "300.00"), ("TeSt_123", "80.00")]
    finally:
        await browser.close()
