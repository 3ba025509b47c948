"""Where conversations come from, over real sockets and HTTP: the touches a conversation stores, the
Sources page and its CSV, and the Google Ads offline-conversion export (net of refunds)."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from typing import Any

import aiohttp
from sqlalchemy import func, select

from callserver.store.models import Chat, LeftMessage, Site
from tests.dashboard_support import add_owner, csrf_token, signed_in
from tests.sockets import Widget
from tests.stack import Stack

TODAY = datetime.now(UTC).date().isoformat()
LAST = {
    "utm_source": "google",
    "utm_medium": "cpc",
    "utm_campaign": "spring-sofas",
    "gclid": "Cj0KCQ-abc_123",
}
FIRST = {"referrer": "blog.example", "at": 1_700_000_000_000}


def bearer(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.site.secret}"}


async def chat_with(stack: Stack, token: str, touch: dict[str, Any]) -> tuple[Widget, str]:
    """A visitor who chats (and writes, so the chat can be credited) with the given `context.touch`."""
    anna = await stack.sockets.operator("anna@shop.example", "Anna", online=True)
    shopper = await stack.sockets.shopper(token)
    await shopper.send({"type": "chat.start", "context": {"page": "https://shop.example/", "touch": touch}})
    chat_id = (await anna.receive("chat.assigned"))["chat"]["id"]
    await shopper.send({"type": "chat.send", "text": "Is the green sofa in stock?", "client_id": "c1"})
    await shopper.receive("chat.ack")
    return shopper, chat_id


async def post_order(http: aiohttp.ClientSession, stack: Stack, **body: Any) -> None:
    async with http.post(f"{stack.url}/api/v1/orders", json=body, headers=bearer(stack)) as response:
        assert response.status in (200, 201), await response.text()


def source_rows(html: str) -> list[dict[str, str]]:
    rows = re.findall(r"<tr (data-source=[^>]*)>", html)
    return [dict(re.findall(r'data-([a-z]+)="([^"]*)"', row)) for row in rows]


async def test_a_chat_keeps_both_touches_and_its_order_counts_under_the_campaign(stack: Stack) -> None:
    _shopper, chat_id = await chat_with(stack, "visitor-src-1", {"first": FIRST, "last": LAST})
    async with stack.database.session() as session:
        chat = await session.get(Chat, chat_id)
        assert chat is not None
        assert chat.touches == {"first": FIRST, "last": LAST}
        assert (chat.source, chat.medium, chat.campaign, chat.gclid) == (
            "google",
            "cpc",
            "spring-sofas",
            LAST["gclid"],
        )
        assert (chat.first_source, chat.first_medium, chat.first_campaign) == (
            "blog.example",
            "referral",
            "(not set)",
        )

    await add_owner(stack, "owner@shop.example")
    async with aiohttp.ClientSession() as http, signed_in(stack, "owner@shop.example") as owner:
        await post_order(
            http, stack, order_id="A-1", total=250.00, currency="EUR", visitor_token="visitor-src-1"
        )
        page = await (await owner.get(f"/dashboard/sources?from={TODAY}&to={TODAY}")).text()
        assert 'data-testid="dash-sources"' in page
        [row] = [r for r in source_rows(page) if r["campaign"] == "spring-sofas"]
        assert row == {
            "source": "google",
            "medium": "cpc",
            "campaign": "spring-sofas",
            "conversations": "1",
            "orders": "1",
            "revenue": "250.00",
            "currency": "EUR",
        }
        first = source_rows(
            await (await owner.get(f"/dashboard/sources?from={TODAY}&to={TODAY}&touch=first")).text()
        )
        assert [(r["source"], r["revenue"]) for r in first] == [("blog.example", "250.00")]

        ads = await (await owner.get(f"/dashboard/export/google-ads.csv?from={TODAY}&to={TODAY}")).text()
        lines = list(csv.reader(io.StringIO(ads)))
        assert lines[0] == ["Parameters:TimeZone=+0000"]
        assert lines[1] == [
            "Google Click ID",
            "Conversion Name",
            "Conversion Time",
            "Conversion Value",
            "Conversion Currency",
        ]
        [(gclid, name, at, value, currency)] = lines[2:]
        assert (gclid, name, value, currency) == (
            LAST["gclid"],
            "callserver conversation order",
            "250.00",
            "EUR",
        )
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", at)

        # A refund reduces the revenue on the page and the conversion's value.
        await post_order(
            http,
            stack,
            order_id="A-1",
            total=250.00,
            currency="EUR",
            visitor_token="visitor-src-1",
            status="partially_refunded",
            refunded_total=100.00,
            updated_at=datetime.now(UTC).isoformat(),
        )
        page = await (await owner.get(f"/dashboard/sources?from={TODAY}&to={TODAY}")).text()
        [row] = [r for r in source_rows(page) if r["campaign"] == "spring-sofas"]
        assert row["revenue"] == "150.00"
        ads = await (await owner.get(f"/dashboard/export/google-ads.csv?from={TODAY}&to={TODAY}")).text()
        assert list(csv.reader(io.StringIO(ads)))[2][3] == "150.00"

        for by, key in (("campaign", "spring-sofas"), ("source", "google")):
            url = f"{stack.url}/api/v1/reports/revenue?from={TODAY}&to={TODAY}&by={by}"
            async with http.get(url, headers=bearer(stack)) as response:
                assert response.status == 200, await response.text()
                [found] = [r for r in (await response.json())["rows"] if r["key"] == key]
            assert found == {
                "key": key,
                "conversations": 1,
                "orders": 1,
                "revenue": "150.00",
                "refunded": "100.00",
                "currency": "EUR",
            }
        async with http.get(f"{stack.url}/api/v1/openapi.json") as response:
            document = await response.text()
        assert '"source"' in document and '"campaign"' in document

        exported = await (await owner.get(f"/dashboard/export/sources.csv?from={TODAY}&to={TODAY}")).text()
        table = list(csv.reader(io.StringIO(exported)))
        assert table[0][:3] == ["source", "medium", "campaign"]
        assert ["google", "cpc", "spring-sofas", "1", "1", "150.00", "100.00", "EUR"] in table


async def test_a_conversation_without_touches_is_direct(stack: Stack) -> None:
    _shopper, chat_id = await chat_with(stack, "visitor-src-2", {})
    async with stack.database.session() as session:
        chat = await session.get(Chat, chat_id)
        assert chat is not None and chat.touches is None and chat.gclid is None
        assert (chat.source, chat.medium, chat.campaign) == ("(direct)", "(none)", "(not set)")


async def test_bad_touches_are_refused_with_a_code_and_nothing_is_stored(stack: Stack) -> None:
    await stack.sockets.operator("anna@shop.example", "Anna", online=True)
    shopper = await stack.sockets.shopper("visitor-src-3")
    bad: list[Any] = [
        {"last": {"utm_campaign": "x" * 201}},
        {"last": {"utm_source": 42}},
        {"last": {"gclid": ["a"]}},
        {"last": {"gclid": "has spaces"}},
        {"last": {"referrer": "https://blog.example/post"}},
        {"first": {"utm_source": {"nested": "object"}}},
        {"last": {"unknown_field": "x"}},
        "not an object",
    ]
    for touch in bad:
        await shopper.send({"type": "chat.start", "context": {"touch": touch}})
        error = await shopper.receive("error")
        assert error["code"] == "bad_message", (touch, error)
        assert "touch" in error["message"]
    await shopper.send(
        {"type": "message.leave", "message": "call me", "email": "a@b.example", "context": {"touch": bad[0]}}
    )
    assert (await shopper.receive("error"))["code"] == "bad_message"
    async with stack.database.session() as session:
        assert await session.scalar(select(func.count()).select_from(Chat)) == 0
        assert await session.scalar(select(func.count()).select_from(LeftMessage)) == 0
    # The same socket still works with a touch that fits.
    await shopper.send({"type": "chat.start", "context": {"touch": {"last": LAST}}})
    await shopper.receive("chat.state")


async def test_bad_periods_and_touch_choices_are_refused(stack: Stack) -> None:
    await add_owner(stack, "owner@shop.example")
    async with signed_in(stack, "owner@shop.example") as owner:
        for query in ("touch=middle", "from=2025-13-01", "from=2025-02-01&to=2025-01-01"):
            async with owner.get(f"/dashboard/sources?{query}") as response:
                assert response.status == 400, query
        async with owner.get("/dashboard/export/google-ads.csv?from=yesterday") as response:
            assert response.status == 400


async def test_the_owner_names_the_google_ads_conversion_in_the_site_form(stack: Stack) -> None:
    await chat_with(stack, "visitor-src-4", {"last": LAST})
    await add_owner(stack, "owner@shop.example")
    export = f"/dashboard/export/google-ads.csv?from={TODAY}&to={TODAY}"
    async with aiohttp.ClientSession() as http, signed_in(stack, "owner@shop.example") as owner:
        await post_order(
            http, stack, order_id="G-1", total=99.50, currency="EUR", visitor_token="visitor-src-4"
        )
        form_page = await (await owner.get("/dashboard/sites")).text()
        assert 'name="google_ads_conversion"' in form_page
        assert "empty: callserver conversation order" in form_page

        def site_form(name: str) -> dict[str, str]:
            return {
                "csrf": csrf_token(form_page),
                "origins": stack.shop_url,
                "ring_strategy": "ring_all",
                "attribution_days": "30",
                "google_ads_conversion": name,
            }

        async with owner.post(
            f"/dashboard/sites/{stack.site.id}", data=site_form("  Calls & chats → order  ")
        ) as r:
            assert "Saved the settings" in await r.text()
        assert 'value="Calls &amp; chats → order"' in await (await owner.get("/dashboard/sites")).text()
        rows = list(csv.reader(io.StringIO(await (await owner.get(export)).text())))
        assert rows[2][:2] == [LAST["gclid"], "Calls & chats → order"]

        refused = {
            "x" * 101: "at most 100 characters",
            '=HYPERLINK("http://evil.example")': "may not start with",
            "-orders": "may not start with",
            "two\nlines": "control characters",
        }
        for name, why in refused.items():
            async with owner.post(f"/dashboard/sites/{stack.site.id}", data=site_form(name)) as r:
                assert why in await r.text(), name
        async with stack.database.session() as session:
            site = await session.get(Site, stack.site.id)
            assert site is not None and site.google_ads_conversion == "Calls & chats → order"

        # Emptied, the export uses the default name again.
        async with owner.post(f"/dashboard/sites/{stack.site.id}", data=site_form("")) as r:
            assert "Saved the settings" in await r.text()
        rows = list(csv.reader(io.StringIO(await (await owner.get(export)).text())))
        assert rows[2][1] == "callserver conversation order"
