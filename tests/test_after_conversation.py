"""After a conversation, over the real sockets and HTTP: the shopper's rating (asked once), the operator's
note, tags and order number, and the order posted later attributed to that conversation by hand."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import aiohttp
from sqlalchemy import select

from callserver.store.models import AuditEntry, ConversationOutcome, ConversationTag, Order
from tests.dashboard_support import NOW, add_call, add_chat, add_owner, signed_in
from tests.sockets import Softphone, Widget
from tests.stack import Stack


async def chat_with(stack: Stack, anna: Softphone, token: str) -> tuple[Widget, str]:
    """A shopper's chat that Anna takes and the shopper writes in."""
    shopper = await stack.sockets.shopper(token)
    await shopper.send({"type": "chat.start", "context": {"page": "https://shop.example/p/1"}})
    chat_id = str((await anna.receive("chat.assigned"))["chat"]["id"])
    await shopper.send({"type": "chat.send", "text": "Is the blue one in stock?", "client_id": "c1"})
    await shopper.receive("chat.ack")
    return shopper, chat_id


async def test_a_closed_chat_is_rated_once_by_its_own_visitor(stack: Stack) -> None:
    anna = await stack.sockets.operator("anna@shop.example", "Anna", online=True)
    shopper, chat_id = await chat_with(stack, anna, "visitor-csat-1")
    await anna.send({"type": "chat.close", "chat_id": chat_id})
    ask = await shopper.receive("csat.ask")
    assert ask == {
        "type": "csat.ask",
        "conversation_id": chat_id,
        "channel": "chat",
        "operator": {"name": "Anna"},
    }

    for score in (0, 6, -1):
        await shopper.send({"type": "csat.rate", "conversation_id": chat_id, "score": score})
        assert (await shopper.receive("error"))["code"] == "bad_score"
    await shopper.send({"type": "csat.rate", "conversation_id": chat_id, "score": "5"})
    assert (await shopper.receive("error"))["code"] == "bad_message"
    # Someone else's page cannot rate it.
    stranger = await stack.sockets.shopper("visitor-csat-other")
    await stranger.send({"type": "csat.rate", "conversation_id": chat_id, "score": 1})
    assert (await stranger.receive("error"))["code"] == "not_your_conversation"
    await stranger.send({"type": "csat.rate", "conversation_id": "no-such-chat", "score": 1})
    assert (await stranger.receive("error"))["code"] == "not_found"

    await shopper.send({"type": "csat.rate", "conversation_id": chat_id, "score": 5, "comment": "  Quick! "})
    assert (await shopper.receive("csat.thanks"))["conversation_id"] == chat_id
    await shopper.send({"type": "csat.rate", "conversation_id": chat_id, "score": 1})
    assert (await shopper.receive("error"))["code"] == "already_rated"
    async with stack.database.session() as session:
        outcome = await session.get(ConversationOutcome, chat_id)
        assert outcome is not None
        assert (outcome.channel, outcome.csat_score, outcome.csat_comment) == ("chat", 5, "Quick!")
    # Rated: the next page of the shop does not ask again.
    next_page = await stack.sockets.shopper("visitor-csat-1")
    await next_page.nothing("csat.ask", within=1.0)


async def test_an_unanswered_survey_is_asked_on_the_next_page_and_a_dismissed_one_never(stack: Stack) -> None:
    anna = await stack.sockets.operator("anna@shop.example", "Anna", online=True)
    shopper, chat_id = await chat_with(stack, anna, "visitor-csat-2")
    await anna.send({"type": "chat.close", "chat_id": chat_id})
    await shopper.receive("csat.ask")
    await shopper.close()
    # Not answered yet: a new page asks again.
    second = await stack.sockets.shopper("visitor-csat-2")
    assert (await second.receive("csat.ask"))["conversation_id"] == chat_id
    await second.send({"type": "csat.dismiss", "conversation_id": chat_id})
    await second.send({"type": "ping"})
    await second.receive("pong")
    async with stack.database.session() as session:
        outcome = await session.get(ConversationOutcome, chat_id)
        assert outcome is not None and outcome.csat_dismissed_at is not None and outcome.csat_score is None
    third = await stack.sockets.shopper("visitor-csat-2")
    await third.nothing("csat.ask", within=1.0)


async def post_order(stack: Stack, body: dict[str, Any]) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{stack.url}/api/v1/orders",
            data=json.dumps(body),
            headers={"Authorization": f"Bearer {stack.site.secret}", "Content-Type": "application/json"},
        ) as response,
    ):
        assert response.status in (200, 201), await response.text()
        result: dict[str, Any] = await response.json()
        return result


async def test_the_operators_order_number_attributes_the_order_posted_later_by_hand(stack: Stack) -> None:
    anna = await stack.sockets.operator("anna@shop.example", "Anna", online=True)
    _shopper, chat_id = await chat_with(stack, anna, "visitor-outcome-1")
    await anna.send({"type": "outcome.save", "conversation_id": chat_id, "tags": ["Bad tag!"], "note": "x"})
    assert (await anna.receive("error"))["code"] == "invalid"
    await anna.send(
        {
            "type": "outcome.save",
            "conversation_id": chat_id,
            "note": "Wants the blue one, delivery Friday.",
            "tags": ["Delivery", " blue  sofa ", "delivery"],
            "order": " #2001 ",
        }
    )
    saved = (await anna.receive("outcome.saved"))["outcome"]
    assert saved["tags"] == ["delivery", "blue sofa"] and saved["order"] == "2001"
    assert saved["note"] == "Wants the blue one, delivery Friday."
    assert set(saved["suggested_tags"]) == {"delivery", "blue sofa"}

    # The order arrives later with nothing that matches the visitor: the operator's number decides.
    created = await post_order(stack, {"order_id": "2001", "total": 899, "currency": "EUR"})
    assert created["attribution"]["channel"] == "chat"
    assert created["attribution"]["conversation_id"] == chat_id
    async with stack.database.session() as session:
        order = await session.scalar(select(Order).where(Order.order_id == "2001"))
        assert order is not None and order.attributed_by == "manual"
        assert order.attributed_by_user_id == anna.account_id
        audit = (
            await session.scalars(select(AuditEntry).where(AuditEntry.action == "order.attributed"))
        ).all()
        assert [a.actor_id for a in audit] == [anna.account_id]
        tags = (await session.scalars(select(ConversationTag.tag).order_by(ConversationTag.tag))).all()
        assert tags == ["blue sofa", "delivery"]

    # An order known already is attributed when the number is saved.
    await post_order(stack, {"order_id": "2002", "number": "#A-2002", "total": 10, "currency": "EUR"})
    await anna.send({"type": "outcome.save", "conversation_id": chat_id, "order": "a-2002"})
    assert (await anna.receive("outcome.saved"))["outcome"]["order"] == "a-2002"
    async with stack.database.session() as session:
        order = await session.scalar(select(Order).where(Order.order_id == "2002"))
        assert order is not None and (order.conversation_id, order.attributed_by) == (chat_id, "manual")
    await anna.send({"type": "outcome.get", "conversation_id": chat_id})
    got = await anna.receive("outcome")
    assert got["outcome"]["tags"] == [] and got["outcome"]["note"] == ""


async def api_get(stack: Stack, path: str) -> Any:
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {stack.site.secret}"}) as http,
        http.get(f"{stack.url}{path}") as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json()


async def test_a_rated_call_carries_its_rating_in_the_calls_api(stack: Stack) -> None:
    anna = await stack.sockets.operator("anna@shop.example", "Anna", online=True)
    shopper = await stack.sockets.shopper("visitor-csat-call")
    call_id = await shopper.call()
    await anna.receive("call.incoming")
    await anna.answer(call_id)
    await shopper.receive("call.connected")
    await shopper.send({"type": "call.hangup", "call_id": call_id})
    assert (await shopper.receive("csat.ask"))["conversation_id"] == call_id
    await stack.ended_call(call_id)
    # Not rated yet: null, in the call and in the list.
    assert (await api_get(stack, f"/api/v1/calls/{call_id}"))["csat"] is None
    assert [c["csat"] for c in (await api_get(stack, "/api/v1/calls"))["calls"]] == [None]

    await shopper.send({"type": "csat.rate", "conversation_id": call_id, "score": 4, "comment": "Helpful "})
    await shopper.receive("csat.thanks")
    rating = {"score": 4, "comment": "Helpful"}
    assert (await api_get(stack, f"/api/v1/calls/{call_id}"))["csat"] == rating
    assert [c["csat"] for c in (await api_get(stack, "/api/v1/calls"))["calls"]] == [rating]
    document = await api_get(stack, "/api/v1/openapi.json")
    call_schema = json.dumps(document["components"]["schemas"]["CallOut"])
    assert "csat" in call_schema and "CsatOut" in json.dumps(document["components"]["schemas"])


async def rate(
    stack: Stack, conversation_id: str, channel: str, score: int, site_id: int | None = None
) -> None:
    async with stack.database.session() as session:
        session.add(
            ConversationOutcome(
                conversation_id=conversation_id,
                site_id=site_id or stack.site.id,
                channel=channel,
                csat_score=score,
            )
        )


def csat_row(html: str, attr: str, name: str) -> dict[str, str]:
    """The data-* of the dash-csat row for this operator or site."""
    section = html.split('data-testid="dash-csat"', 1)[1].split("</section>", 1)[0]
    row = re.search(rf'<tr {attr}="{re.escape(name)}"([^>]*)>', section)
    assert row is not None, f"no {attr}={name!r} row in {section}"
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', row.group(1)))


async def test_the_overview_shows_csat_per_operator_and_site_with_the_response_rate(stack: Stack) -> None:
    await add_owner(stack, "boss@shop.example", [stack.site.id])
    anna = await stack.add_user("anna@shop.example", role="operator", name="Anna")
    bob = await stack.add_user("bob@shop.example", role="operator", name="Bob")
    day = NOW.date().isoformat()
    async with signed_in(stack, "boss@shop.example") as owner:
        empty = await (await owner.get(f"/dashboard/?from={day}&to={day}")).text()
    assert 'data-testid="dash-csat"' in empty and "No answered calls or chats" in empty

    for score in (5, 3):
        await rate(stack, await add_call(stack, operator_id=anna.id), "call", score)
    await add_call(stack, operator_id=anna.id)  # answered, not rated
    await add_call(stack, end_reason="missed", answered_at=None, ended_at=NOW)  # nothing to rate
    await rate(stack, await add_chat(stack, operator_id=bob.id), "chat", 4)
    # The day before: outside the period.
    await rate(
        stack, await add_call(stack, operator_id=bob.id, created_at=NOW - timedelta(days=1)), "call", 1
    )
    # Another shop's rated call is not this owner's.
    other = await stack.add_site("Other shop", ["https://other.example"])
    await rate(stack, await add_call(stack, site_id=other.id, operator_id=bob.id), "call", 2, other.id)

    async with signed_in(stack, "boss@shop.example") as owner:
        response = await owner.get(f"/dashboard/?from={day}&to={day}")
        assert response.status == 200
        html = await response.text()
    assert csat_row(html, "data-operator", "Anna") == {
        "csat": "4.00",
        "rated": "2",
        "asked": "3",
    }
    assert csat_row(html, "data-operator", "Bob") == {
        "csat": "4.00",
        "rated": "1",
        "asked": "1",
    }
    site = csat_row(html, "data-site", stack.site.name)
    assert (site["csat"], site["rated"], site["asked"]) == ("4.00", "3", "4")
    assert 'data-response-rate="0.750"' in html and "75.0 %" in html
    assert 'data-site="Other shop"' not in html
