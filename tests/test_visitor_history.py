"""A returning visitor's history for the operator (`visitor.history`): over the real operator socket,
earlier calls, chats, left messages and orders, newest first, bounded, and only of the operator's sites;
in a real browser, on the ringing call's card and in the visitor panel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from playwright.async_api import Playwright, expect

from callserver.store.models import ConversationOutcome, ConversationTag, Order
from tests.browsers import go_online, launch, sign_in
from tests.conversations import add_call, add_chat, add_left_message, add_visitor
from tests.dashboard_support import add_owner
from tests.sockets import Softphone
from tests.stack import PASSWORD, Stack

TOKEN = "visitor-history-1"


def order(site_id: int, order_id: str, total: str, at: datetime, **fields: object) -> Order:
    return Order(
        site_id=site_id,
        order_id=order_id,
        total=Decimal(total),
        currency="EUR",
        created_at=at,
        received_at=at,
        source="api",
        **fields,
    )


async def history_of(anna: Softphone, frame: dict[str, object]) -> dict[str, object]:
    await anna.send({"type": "visitor.history", **frame})
    return await anna.receive("visitor.history")


async def test_a_returning_visitors_calls_chats_messages_and_orders_come_newest_first(stack: Stack) -> None:
    anna = await stack.sockets.operator("anna@shop.example", "Anna", online=True)
    other_site = await stack.add_site("Other shop", ["https://other.example"])
    now = datetime.now(UTC)
    async with stack.database.session() as session:
        visitor = await add_visitor(session, stack.site.id, TOKEN)
        call = await add_call(
            session, stack.site.id, visitor, now - timedelta(days=3), operator_id=anna.account_id
        )
        missed = await add_call(session, stack.site.id, visitor, now - timedelta(days=2), answered=False)
        chat = await add_chat(session, stack.site.id, visitor, now - timedelta(days=1))
        chat.operator_id = anna.account_id
        chat.closed_at = chat.created_at + timedelta(minutes=5)
        message = await add_left_message(session, stack.site.id, now - timedelta(hours=5), visitor)
        session.add(
            order(
                stack.site.id,
                "A-1",
                "129.5",
                now - timedelta(days=3) + timedelta(hours=1),
                channel="call",
                conversation_id=call.id,
                attributed_by="token",
            )
        )
        session.add(order(stack.site.id, "A-2", "20", now - timedelta(hours=2), visitor_token=TOKEN))
        session.add(
            ConversationOutcome(
                conversation_id=chat.id,
                site_id=stack.site.id,
                channel="chat",
                note="Wants the oak table on Friday.",
                csat_score=5,
            )
        )
        session.add(ConversationTag(conversation_id=chat.id, tag="delivery", site_id=stack.site.id))
        # Someone else's, and the same token on another site (tokens are each site's own): not listed.
        stranger = await add_visitor(session, stack.site.id, "visitor-history-stranger")
        await add_call(session, stack.site.id, stranger, now - timedelta(hours=1))
        elsewhere = await add_visitor(session, other_site.id, TOKEN)
        await add_call(session, other_site.id, elsewhere, now - timedelta(hours=1))
        session.add(
            order(
                stack.site.id,
                "B-1",
                "999",
                now - timedelta(hours=1),
                visitor_token="visitor-history-stranger",
            )
        )

    shopper = await stack.sockets.shopper(TOKEN)
    await shopper.send({"type": "chat.start", "context": {"page": "https://shop.example/p/1"}})
    live = str((await anna.receive("chat.assigned"))["chat"]["id"])

    reply = await history_of(anna, {"conversation_id": live})
    assert (reply["conversation_id"], reply["site_id"], reply["visitor_id"]) == (live, stack.site.id, TOKEN)
    entries = reply["entries"]
    assert isinstance(entries, list)
    # The chat going on now is not its own history.
    assert [(e["channel"], e["id"]) for e in entries] == [
        ("order", "A-2"),
        ("message", message.id),
        ("chat", chat.id),
        ("call", missed.id),
        ("order", "A-1"),
        ("call", call.id),
    ]
    by_id = {e["id"]: e for e in entries}
    assert by_id[call.id] | {"at": None} == {
        "channel": "call",
        "id": call.id,
        "at": None,
        "operator": "Anna",
        "outcome": "completed",
        "duration_s": 120,
        "note": None,
        "tags": [],
        "csat": None,
        "total": None,
        "currency": None,
        "conversation_id": None,
        "page": f"/dashboard/calls/{call.id}",
    }
    assert datetime.fromisoformat(str(by_id[call.id]["at"])) == call.created_at
    assert (by_id[missed.id]["outcome"], by_id[missed.id]["operator"], by_id[missed.id]["duration_s"]) == (
        "missed",
        None,
        None,
    )
    assert {k: by_id[chat.id][k] for k in ("operator", "duration_s", "note", "tags", "csat", "page")} == {
        "operator": "Anna",
        "duration_s": 300,
        "note": "Wants the oak table on Friday.",
        "tags": ["delivery"],
        "csat": 5,
        "page": f"/dashboard/chats/{chat.id}",
    }
    assert (by_id[message.id]["outcome"], by_id[message.id]["page"]) == ("new", "/dashboard/messages")
    assert {k: by_id["A-1"][k] for k in ("total", "currency", "conversation_id", "page")} == {
        "total": "129.50",
        "currency": "EUR",
        "conversation_id": call.id,
        "page": f"/dashboard/calls/{call.id}",
    }
    assert (by_id["A-2"]["total"], by_id["A-2"]["conversation_id"], by_id["A-2"]["page"]) == (
        "20.00",
        None,
        None,
    )

    # The same history by the visitor's token (a board row); the live chat is in it then.
    by_token = await history_of(anna, {"visitor_id": TOKEN, "site_id": stack.site.id})
    assert by_token["conversation_id"] is None
    entries = by_token["entries"]
    assert isinstance(entries, list) and entries[0]["id"] == live


async def test_the_history_is_bounded_to_the_latest_ten(stack: Stack) -> None:
    anna = await stack.sockets.operator("anna@shop.example", "Anna", online=True)
    now = datetime.now(UTC)
    async with stack.database.session() as session:
        visitor = await add_visitor(session, stack.site.id, TOKEN)
        calls = [
            await add_call(session, stack.site.id, visitor, now - timedelta(hours=h)) for h in range(1, 15)
        ]
        for h in range(1, 15):
            session.add(
                order(
                    stack.site.id, f"O-{h}", "10", now - timedelta(hours=h, minutes=30), visitor_token=TOKEN
                )
            )
    reply = await history_of(anna, {"visitor_id": TOKEN, "site_id": stack.site.id})
    entries = reply["entries"]
    assert isinstance(entries, list) and len(entries) == 10
    expected = [x for h in range(1, 6) for x in (calls[h - 1].id, f"O-{h}")]
    assert [e["id"] for e in entries] == expected


async def test_only_the_operators_own_sites_and_coded_errors_for_the_rest(stack: Stack) -> None:
    other_site = await stack.add_site("Other shop", ["https://other.example"])
    await add_owner(stack, "olga@other.example", [other_site.id], role="operator")
    olga = await stack.sockets.softphone("olga@other.example")
    now = datetime.now(UTC)
    async with stack.database.session() as session:
        visitor = await add_visitor(session, stack.site.id, TOKEN)
        call = await add_call(session, stack.site.id, visitor, now - timedelta(days=1))

    for asked, code in (
        ({"conversation_id": call.id}, "not_your_site"),
        ({"visitor_id": TOKEN, "site_id": stack.site.id}, "not_your_site"),
        ({"conversation_id": "no-such-call"}, "not_found"),
        ({}, "invalid"),
        ({"visitor_id": TOKEN}, "invalid"),
        ({"visitor_id": "<script>", "site_id": other_site.id}, "bad_message"),
        ({"conversation_id": 12}, "bad_message"),
        ({"visitor_id": TOKEN, "site_id": 2**40}, "bad_message"),
    ):
        await olga.send({"type": "visitor.history", **asked})
        assert (await olga.receive("error"))["code"] == code, asked
    assert olga.frames_of("visitor.history") == []

    # Her own site's visitor with that token has no history there: an empty list, not an error.
    reply = await history_of(olga, {"visitor_id": TOKEN, "site_id": other_site.id})
    assert reply["entries"] == []


async def test_a_returning_visitors_history_is_on_the_incoming_card_and_in_the_visitor_panel(
    stack: Stack, playwright: Playwright
) -> None:
    anna = await stack.add_user("anna@shop.example", name="Anna")
    now = datetime.now(UTC)
    async with stack.database.session() as session:
        visitor = await add_visitor(session, stack.site.id, TOKEN)
        call = await add_call(session, stack.site.id, visitor, now - timedelta(days=6), operator_id=anna.id)
        chat = await add_chat(session, stack.site.id, visitor, now - timedelta(days=4))
        await add_left_message(session, stack.site.id, now - timedelta(days=3), visitor)
        await add_left_message(session, stack.site.id, now - timedelta(days=2), visitor)
        session.add(
            order(
                stack.site.id,
                "T-1001",
                "1290",
                now - timedelta(days=1),
                channel="call",
                conversation_id=call.id,
                attributed_by="token",
            )
        )
    context = await launch(playwright, None)
    try:
        operator = await context.new_page()
        await sign_in(operator, stack.url, "operator", "anna@shop.example", PASSWORD)
        await go_online(operator)
        shopper = await stack.sockets.shopper(TOKEN)
        await shopper.call()

        card = operator.get_by_test_id("op-incoming").get_by_test_id("op-incoming-history")
        await expect(card).to_be_visible(timeout=10_000)
        await expect(card).to_contain_text("Returning visitor: 5 earlier")
        # The three latest on the card, newest first: the order (with its total), two left messages.
        entries = card.locator("li.history-entry")
        await expect(entries).to_have_count(3)
        assert [await e.get_attribute("data-channel") for e in await entries.all()] == [
            "order",
            "message",
            "message",
        ]
        await expect(entries.first).to_contain_text("1290.00 EUR")
        await expect(entries.first.locator("a")).to_have_attribute("href", f"/dashboard/calls/{call.id}")
        await expect(card).to_contain_text("2 more in the visitor panel")

        # The visitor panel lists all five, each linked to its dashboard page.
        panel = operator.get_by_test_id("op-visitor").get_by_test_id("op-visitor-history")
        await expect(panel.locator("li.history-entry")).to_have_count(5)
        earlier_call = panel.locator(f'li[data-id="{call.id}"]')
        await expect(earlier_call).to_contain_text("Anna")
        await expect(earlier_call).to_contain_text("2:00")  # two minutes of talk
        await expect(earlier_call.locator("a")).to_have_attribute("href", f"/dashboard/calls/{call.id}")
        await expect(panel.locator(f'li[data-id="{chat.id}"] a')).to_have_attribute(
            "href", f"/dashboard/chats/{chat.id}"
        )
    finally:
        await context.browser.close()  # type: ignore[union-attr]
