"""Beacons, the value score, the board over the operator's socket, invitations, hours and languages
(real server, Python clients; the browser side is in test_visitors_browser.py)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import aiohttp
from sqlalchemy import select

from callserver import i18n
from callserver.hours import WorkingHours
from callserver.store.models import PageView, Visitor
from callserver.visitors.invitations import InviteRule
from callserver.visitors.score import ScoreWeights, VisitFacts, value_score
from callserver.web.keys import SHOP_FLOOR
from tests.stack import Stack
from tests.visitors_support import configure_site

TOKEN = "visitor-beacon-1"


async def post_beacon(
    session: aiohttp.ClientSession, stack: Stack, body: Any, origin: str | None = None
) -> aiohttp.ClientResponse:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with session.post(
        f"{stack.url}/widget/beacon?site={stack.site.key}",
        data=data,
        headers={"Origin": origin or stack.shop_url, "Content-Type": "text/plain;charset=UTF-8"},
    ) as response:
        await response.read()
        return response


def view(view_id: str, page: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "view", "visitor": TOKEN, "view": view_id, "page": page, **extra}


def test_the_value_score_follows_the_documented_formula() -> None:
    weights = ScoreWeights()
    table = VisitFacts(1290, 3, 120, has_cart=False, returning=False, searched=False, campaign=False)
    lamp = VisitFacts(89, 1, 0, has_cart=False, returning=False, searched=False, campaign=False)
    assert value_score(table, weights) == 63  # 50 (capped) + 9 + 4, the docstring's example
    assert value_score(lamp, weights) == 11
    assert value_score(table, ScoreWeights.for_site({"value_cap": 10, "per_page": 0})) == 14
    assert ScoreWeights.for_site({"per_page": -5}) == ScoreWeights()  # unusable: the defaults


def test_rules_match_globs_on_the_path_or_text_in_the_url() -> None:
    assert InviteRule(pattern="/products/*").matches("https://shop.example/products/oak?x=1")
    assert not InviteRule(pattern="/products/*").matches("https://shop.example/cart")
    assert InviteRule(pattern="oak").matches("https://shop.example/products/oak-table")
    assert not InviteRule(pattern="oak").matches("https://shop.example/products/lamp")


def test_working_hours_and_the_opening_time_in_each_language() -> None:
    hours = WorkingHours(
        timezone="Europe/Warsaw", week={"mon": "09:00-17:00", "tue": "09:00-17:00"}, closed_dates=[]
    )
    sunday_evening = datetime(2026, 3, 1, 20, 0, tzinfo=UTC)  # 21:00 in Warsaw, Sunday
    monday_morning = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)  # 10:30 in Warsaw
    assert not hours.is_open(sunday_evening)
    assert hours.is_open(monday_morning)
    opens = hours.next_opening(sunday_evening)
    assert opens is not None and opens.isoformat() == "2026-03-02T09:00:00+01:00"
    assert (
        i18n.opening_text("en", opens, sunday_evening, None)
        == "We're closed now — we open tomorrow at 09:00."
    )
    saturday = datetime(2026, 2, 28, 12, 0, tzinfo=UTC)
    assert i18n.opening_text("en", opens, saturday, None) == "We're closed now — we open Monday at 09:00."
    assert (
        i18n.opening_text("ru", opens, saturday, None)
        == "Сейчас мы закрыты — откроемся в понедельник в 09:00."
    )
    assert "w poniedziałek o 09:00" in i18n.opening_text("pl", opens, saturday, None)
    assert "lunedì alle 09:00" in i18n.opening_text("it", opens, saturday, None)
    assert "am Montag um 09:00" in i18n.opening_text("de", opens, saturday, None)
    assert "el lunes a las 09:00" in i18n.opening_text("es", opens, saturday, None)
    closed_monday = hours.model_copy(update={"closed_dates": [opens.date()]})
    assert closed_monday.next_opening(sunday_evening) == opens.replace(day=3)


async def test_beacons_are_checked_and_page_views_reach_the_board_and_the_store(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        phone = await stack.sockets.operator("anna@shop.example", "Anna")
        first = await phone.receive("visitors")
        assert first["visitors"] == []

        refused = await post_beacon(
            session, stack, view("v1", "https://x.example/"), origin="https://evil.example"
        )
        assert refused.status == 403
        assert (await refused.json())["error"]["code"] == "origin_not_allowed"
        bad = await post_beacon(session, stack, b"{not json")
        assert (bad.status, (await bad.json())["error"]["code"]) == (400, "bad_json")
        huge = await post_beacon(session, stack, view("v1", "https://x.example/" + "a" * 9000))
        assert huge.status == 413
        wrong = await post_beacon(session, stack, {**view("v1", "/"), "cart_value": "lots"})
        assert (wrong.status, (await wrong.json())["error"]["code"]) == (400, "bad_message")

        shop = stack.shop_url
        google = "https://www.google.com/search?q=oak+table"
        ok = await post_beacon(session, stack, view("v1", f"{shop}/", referrer=google, title="Home"))
        assert ok.status == 204
        assert ok.headers["Access-Control-Allow-Origin"] == shop
        await post_beacon(
            session, stack, view("v2", f"{shop}/products/oak-table", product_price=1290, currency="EUR")
        )
        board = await phone.receive(
            "visitors", lambda f: bool(f["visitors"]) and f["visitors"][0]["pages"] == 2
        )
        row = board["visitors"][0]
        assert row["id"] == TOKEN and row["value"] == 1290 and row["source"] == "google.com"
        assert row["search"] == "oak table" and row["returning"] is False
        assert row["journey"][-1]["page"].endswith("/products/oak-table")
        assert row["score"] == ScoreWeights().value_cap + 2 * 3 + ScoreWeights().searched

        ping = {"kind": "ping", "visitor": TOKEN, "view": "v2", "seconds": 12, "cart_value": 2000}
        assert (await post_beacon(session, stack, ping)).status == 204
        board = await phone.receive(
            "visitors", lambda f: bool(f["visitors"]) and f["visitors"][0]["value"] == 2000
        )
        assert board["visitors"][0]["cart_value"] == 2000

        await stack.app[SHOP_FLOOR].journeys.flush()
        async with stack.database.session() as s:
            views = list(await s.scalars(select(PageView).order_by(PageView.id)))
        assert [(v.view_id, v.product_price) for v in views] == [("v1", None), ("v2", 1290)]
        assert views[0].referrer == google and views[0].seconds >= 0


async def test_an_operator_invites_over_the_stream_and_a_dismissal_is_remembered(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        phone = await stack.sockets.operator("anna@shop.example", "Anna")
        await phone.send({"type": "presence.set", "status": "online"})
        await phone.receive("presence")
        answer = await post_beacon(session, stack, view("v1", f"{stack.shop_url}/products/oak-table"))
        assert answer.headers.get("CB-Listen") == "1"  # someone could answer: hold the stream open
        site_id = stack.site.id

        await phone.send({"type": "visitor.invite", "visitor_id": TOKEN, "site_id": site_id})
        assert (await phone.receive("error"))["code"] == "visitor_unreachable"

        events = await session.get(
            f"{stack.url}/widget/events?site={stack.site.key}&visitor={TOKEN}",
            headers={"Origin": stack.shop_url},
        )
        assert events.headers["Content-Type"].startswith("text/event-stream")
        await phone.receive("visitors", lambda f: bool(f["visitors"]) and f["visitors"][0]["reachable"])
        await phone.send({"type": "visitor.invite", "visitor_id": TOKEN, "site_id": site_id})
        await phone.receive("visitor.invited")
        text = ""
        while "event: invite" not in text:
            text += (await asyncio.wait_for(events.content.readany(), 2)).decode()
        data = json.loads(text.split("event: invite\ndata: ")[1].split("\n")[0])
        assert data["operator"]["name"] == "Anna"

        await phone.send({"type": "visitor.invite", "visitor_id": TOKEN, "site_id": site_id})
        assert (await phone.receive("error"))["code"] == "already_invited"
        dismiss = {"kind": "dismiss", "visitor": TOKEN, "view": "v1"}
        answer = await post_beacon(session, stack, dismiss)
        assert "CB-Listen" not in answer.headers
        board = await phone.receive(
            "visitors", lambda f: bool(f["visitors"]) and f["visitors"][0]["dismissed"]
        )
        assert board["visitors"][0]["invited"] is False
        await phone.send({"type": "visitor.invite", "visitor_id": TOKEN, "site_id": site_id})
        assert (await phone.receive("error"))["code"] == "visitor_dismissed"
        async with stack.database.session() as s:
            record = await s.scalar(select(Visitor).where(Visitor.token == TOKEN))
        assert record is not None and record.invitations == 1 and record.invitation_dismissed_at is not None
        events.close()


async def test_outside_working_hours_calls_and_chats_are_refused_with_closed(stack: Stack) -> None:
    await configure_site(stack, hours={"timezone": "UTC", "week": {}})  # never open
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{stack.url}/widget/config?site={stack.site.key}&lang=de", headers={"Origin": stack.shop_url}
        ) as response:
            config = await response.json()
        assert config["open"] is False and config["lang"] == "de"
        assert config["closed_text"] == config["texts"]["closed_plain"]
    phone = await stack.sockets.operator("anna@shop.example")
    page = await stack.sockets.shopper("visitor-closed-1")
    await phone.send({"type": "presence.set", "status": "online"})
    await phone.receive("presence")
    await page.send({"type": "chat.start"})
    assert (await page.receive("error"))["code"] == "closed"
    await page.send({"type": "call.offer", "sdp": "v=0"})
    assert (await page.receive("error"))["code"] == "closed"
    await page.send({"type": "message.leave", "email": "a@b.example", "message": "Call me tomorrow"})
    await page.receive("message.left")  # the offline form still works


async def test_owners_set_rules_hours_weights_language_and_texts_in_the_site_form(stack: Stack) -> None:
    from tests.dashboard_support import csrf_token, signed_in

    await stack.add_user("boss@shop.example", role="owner")
    base = {"origins": stack.shop_url, "ring_strategy": "longest_idle", "attribution_days": "7"}
    async with signed_in(stack, "boss@shop.example") as owner:
        page = await (await owner.get("/dashboard/sites")).text()
        assert "Proactive invitations" in page and "Working hours" in page
        form = {
            **base,
            "csrf": csrf_token(page),
            "rule_pattern_0": "/products/*",
            "rule_seconds_0": "20",
            "rule_value_0": "500",
            "rule_free_0": "on",
            "rule_max_0": "2",
            "hours_on": "on",
            "timezone": "Europe/Warsaw",
            "hours_mon": "09:00-17:00",
            "hours_sat": "10:00-14:00",
            "closed_dates": "2026-12-25\n2026-12-26",
            "language": "pl",
            "texts": "greeting = Hello there!\nru.call = Звоните",
            "weight_per_page": "5",
        }
        async with owner.post(f"/dashboard/sites/{stack.site.id}", data=form) as response:
            assert "Saved the settings" in await response.text()
        for field, bad, message in [
            ("hours_mon", "9-5", "09:00-18:00"),
            ("timezone", "Mars/Olympus", "unknown time zone"),
            ("texts", "nonsense", "greeting = Hello!"),
            ("rule_seconds_0", "soon", "must be a number"),
        ]:
            async with owner.post(f"/dashboard/sites/{stack.site.id}", data={**form, field: bad}) as response:
                assert message in await response.text(), field
        page = await (await owner.get("/dashboard/sites")).text()
        assert 'value="/products/*"' in page and "ru.call = Звоните" in page

        async with owner.get(
            f"{stack.url}/widget/config?site={stack.site.key}&lang=ru", headers={"Origin": stack.shop_url}
        ) as response:
            config = await response.json()
    assert config["lang"] == "pl"  # the site's language wins over the page's
    assert config["texts"]["greeting"] == "Hello there!"
    assert config["texts"]["call"] == "Zadzwoń teraz"  # the Russian override doesn't apply to Polish
    from callserver.store.models import Site

    async with stack.database.session() as session:
        site = await session.get(Site, stack.site.id)
        assert site is not None
        assert site.invite_rules == [
            {
                "pattern": "/products/*",
                "seconds": 20,
                "min_value": 500.0,
                "only_when_free": True,
                "max_per_visitor": 2,
            }
        ]
        assert site.hours == {
            "timezone": "Europe/Warsaw",
            "week": {"mon": "09:00-17:00", "sat": "10:00-14:00"},
            "closed_dates": ["2026-12-25", "2026-12-26"],
        }
        assert site.score_weights == {"per_page": 5.0}
