"""After the conversation, in the dashboard: a chat's page, the note/tags/rating on call and chat pages,
and the log filtered by tag (its pages and its CSV exports too), over real HTTP through the app factory."""

from __future__ import annotations

import csv
import html as markup
import io
import re
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from callserver.dashboard import queries
from callserver.store.models import (
    ChatMessage,
    ConversationOutcome,
    ConversationTag,
    Order,
    PageView,
    Visitor,
)
from tests.dashboard_support import (
    NOW,
    add_call,
    add_chat,
    add_left_message,
    add_order,
    add_owner,
    add_visitor,
    signed_in,
)
from tests.servers import postgres
from tests.stack import Stack, running_stack, settings_for


async def _outcome(
    stack: Stack,
    conversation_id: str,
    channel: str,
    tags: Sequence[str] = (),
    site_id: int | None = None,
    **fields: object,
) -> None:
    """The note, order number and rating as the softphone and the widget store them, and the tags."""
    site = site_id or stack.site.id
    async with stack.database.session() as session:
        if fields:
            session.add(
                ConversationOutcome(conversation_id=conversation_id, site_id=site, channel=channel, **fields)
            )
        for tag in tags:
            session.add(ConversationTag(conversation_id=conversation_id, tag=tag, site_id=site))


def _tr(html: str, testid: str) -> list[dict[str, str]]:
    """The data-* attributes of each row of the table with this test id."""
    table = html.split(f'data-testid="{testid}"', 1)[1].split("</table>", 1)[0]
    return [dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', tr)) for tr in re.findall(r"<tr data-[^>]*>", table)]


def _log_ids(html: str) -> list[str]:
    return re.findall(r'<tr data-channel="[a-z]+" data-(?:call|chat|message)-id="([0-9a-f]+)"', html)


def _next_url(html: str) -> str | None:
    match = re.search(r'<a href="([^"]+)" rel="next"', html)
    return markup.unescape(match.group(1)) if match else None


async def test_a_chat_page_shows_transcript_timeline_journey_orders_and_outcome(stack: Stack) -> None:
    await stack.add_user("boss@shop.example", role="owner")
    anna = await stack.add_user("anna@shop.example", role="operator", name="Anna")
    ben = await stack.add_user("ben@shop.example", role="operator", name="Ben")
    visitor_id = await add_visitor(stack, stack.site.id, name="Maria Jones", email="maria@example.com")
    call_id = await add_call(
        stack, state="ended", end_reason="missed", answered_at=None, visitor_id=visitor_id
    )
    chat_id = await add_chat(
        stack,
        visitor_id=visitor_id,
        call_id=call_id,
        operator_id=ben.id,
        page="https://shop.example/products/oak-table",
        created_at=NOW,
        closed_at=NOW + timedelta(minutes=5),
    )
    async with stack.database.session() as session:
        token = (await session.get(Visitor, visitor_id)).token  # type: ignore[union-attr]
        lines = [
            ("visitor", None, "Is the oak table solid?", True),
            ("operator", anna.id, "Yes, solid oak <b>throughout</b>.", True),
            ("system", None, "Anna passed the chat to Ben.", False),
            ("operator", ben.id, "I can hold one for you.", False),
        ]
        for i, (sender, operator_id, body, read) in enumerate(lines):
            at = NOW + timedelta(seconds=10 * (i + 1))
            session.add(
                ChatMessage(
                    chat_id=chat_id,
                    at=at,
                    sender=sender,
                    operator_id=operator_id,
                    body=body,
                    delivered_at=at,
                    read_at=at if read else None,
                )
            )
        for i, (page, title) in enumerate(
            [("https://shop.example/", "Home"), ("/products/oak-table", "Oak")]
        ):
            session.add(
                PageView(
                    site_id=stack.site.id,
                    visitor_token=token,
                    view_id=f"v{i}",
                    at=NOW - timedelta(minutes=3 - i),
                    page=page,
                    title=title,
                    seconds=42.0,
                )
            )
        # A page seen after the chat closed is not part of its journey.
        session.add(
            PageView(
                site_id=stack.site.id,
                visitor_token=token,
                view_id="later",
                at=NOW + timedelta(hours=2),
                page="https://shop.example/checkout-later",
                seconds=0.0,
            )
        )
    await _outcome(
        stack,
        chat_id,
        "chat",
        tags=["oak", "vip"],
        note="Holding one table\nuntil Friday",
        order_ref="w-77",
        csat_score=4,
        csat_comment="Quick & kind",
        csat_at=NOW + timedelta(minutes=6),
        updated_by=ben.id,
        updated_at=NOW + timedelta(minutes=5),
    )
    await add_order(stack, "W-77", "899.00", "chat", chat_id)
    async with (
        stack.database.session() as session
    ):  # attributed by hand, as the softphone's order number does
        await session.execute(
            update(Order)
            .where(Order.order_id == "W-77")
            .values(attributed_by="manual", attributed_by_user_id=ben.id)
        )
    await add_order(stack, "W-99", "10.00", "call", call_id)  # the call's, not the chat's

    async with signed_in(stack, "boss@shop.example") as owner:
        log = await (await owner.get("/dashboard/calls")).text()
        assert f'<a href="/dashboard/chats/{chat_id}">' in log
        async with owner.get(f"/dashboard/chats/{chat_id}") as response:
            assert response.status == 200
            page = await response.text()

    assert f'data-testid="dash-chat" data-chat-id="{chat_id}" data-state="closed"' in page
    transcript = _tr(page, "dash-transcript")
    assert [(r["data-sender"], r["data-status"]) for r in transcript] == [
        ("visitor", "read"),
        ("operator", "read"),
        ("system", "delivered"),
        ("operator", "delivered"),
    ]
    for text in ("Maria Jones", "Anna", "Ben", "Is the oak table solid?", "Anna passed the chat to Ben."):
        assert text in page, text
    assert "Yes, solid oak &lt;b&gt;throughout&lt;/b&gt;." in page  # what a visitor wrote is text

    timeline = [r["data-event"] for r in _tr(page, "dash-timeline")]
    assert timeline == [
        "chat.started",
        "chat.replied",
        "chat.note",
        "chat.replied",
        "chat.closed",
        "csat.received",
    ]

    assert [r["data-page"] for r in _tr(page, "dash-journey")] == [
        "https://shop.example/",
        "/products/oak-table",
    ]
    assert "checkout-later" not in page

    orders = _tr(page, "dash-chat-orders")
    assert [(o["data-order-id"], o["data-by"]) for o in orders] == [("W-77", "manual")]
    assert "W-99" not in page and "by ben@shop.example" in page

    assert 'data-testid="dash-rating" data-score="4"' in page
    assert "Quick &amp; kind" in page
    assert "Holding one table\nuntil Friday" in page
    assert re.findall(r'data-tag="([^"]+)"', page) == ["oak", "vip"]
    assert '<dd data-testid="dash-order-ref">w-77</dd>' in page
    assert f'<a href="/dashboard/calls/{call_id}">' in page.split('data-testid="dash-linked-call"', 1)[1]


async def test_the_call_page_shows_note_tags_rating_and_reconnects(stack: Stack) -> None:
    await stack.add_user("boss@shop.example", role="owner")
    rated = await add_call(
        stack,
        quality={
            "shopper": {"packets_lost": 1, "jitter_ms": 2.0, "rtt_ms": 20, "relayed": False, "reconnects": 2},
            "operator": {"packets_lost": 0, "jitter_ms": 1.0, "rtt_ms": 3, "relayed": False, "reconnects": 0},
        },
    )
    await _outcome(
        stack,
        rated,
        "call",
        tags=["delivery"],
        note="Wants delivery on Saturday",
        order_ref="1042",
        csat_score=5,
        csat_comment="Very helpful",
        csat_at=NOW + timedelta(minutes=3),
    )
    dismissed = await add_call(stack, created_at=NOW - timedelta(hours=1))
    await _outcome(stack, dismissed, "call", csat_dismissed_at=NOW)
    async with signed_in(stack, "boss@shop.example") as owner:
        page = await (await owner.get(f"/dashboard/calls/{rated}")).text()
        other = await (await owner.get(f"/dashboard/calls/{dismissed}")).text()
    assert 'data-testid="dash-rating" data-score="5"' in page and "Very helpful" in page
    assert "Wants delivery on Saturday" in page
    assert re.findall(r'data-tag="([^"]+)"', page) == ["delivery"]
    assert '<dd data-testid="dash-order-ref">1042</dd>' in page
    assert re.findall(r'data-reconnects="([^"]*)"', page) == ["2", "0"]
    # Nothing written down, and a survey closed unanswered, read as such rather than as blanks.
    assert 'data-testid="dash-rating" data-score=""' in other and "closed the survey without rating" in other
    assert '<dd data-testid="dash-order-ref">—</dd>' in other and "data-tag=" not in other


async def test_another_sites_owner_gets_404_and_operators_403(stack: Stack) -> None:
    other = await stack.add_site("Other shop", ["https://other.example"])
    await add_owner(stack, "mine@shop.example", [stack.site.id])
    await stack.add_user("op@shop.example", role="operator")
    theirs = await add_chat(stack, other.id, messages=["their secret"])
    mine = await add_chat(stack, messages=["my question"])
    async with signed_in(stack, "mine@shop.example") as owner:
        async with owner.get(f"/dashboard/chats/{theirs}") as response:
            assert response.status == 404
            assert "their secret" not in await response.text()
        async with owner.get("/dashboard/chats/no-such-chat") as response:
            assert response.status == 404
        async with owner.get(f"/dashboard/chats/{mine}") as response:
            assert response.status == 200 and "my question" in await response.text()
    async with (
        signed_in(stack, "op@shop.example") as operator,
        operator.get(f"/dashboard/chats/{mine}", allow_redirects=False) as response,
    ):
        assert response.status == 403


@pytest.mark.parametrize("few_tagged", [queries.FEW_TAGGED, 0], ids=["from-the-tags", "along-the-log"])
async def test_the_tag_filter_narrows_the_log_its_pages_and_the_csv(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, few_tagged: int
) -> None:
    # Both ways the log finds a tag's conversations: from the tag's index (a rare tag) and along the
    # log's order (a common one).
    monkeypatch.setattr(queries, "FEW_TAGGED", few_tagged)
    await stack.add_user("boss@shop.example", role="owner")
    other = await stack.add_site("Other shop", ["https://other.example"])
    # 52 calls tagged "vip": more than one page of the log (50), so the next page must keep the tag.
    vip_calls = [await add_call(stack, created_at=NOW - timedelta(minutes=i)) for i in range(52)]
    for call_id in vip_calls:
        await _outcome(stack, call_id, "call", tags=["vip"])
    vip_chat = await add_chat(stack, created_at=NOW - timedelta(seconds=30))
    await _outcome(stack, vip_chat, "chat", tags=["vip", "oak"])
    plain_call = await add_call(stack, created_at=NOW - timedelta(seconds=10))
    await _outcome(stack, plain_call, "call", tags=["oak"])
    untagged = await add_call(stack, created_at=NOW - timedelta(seconds=20))
    message = await add_left_message(stack, created_at=NOW - timedelta(seconds=5))
    theirs = await add_call(stack, other.id, created_at=NOW - timedelta(seconds=15))
    await _outcome(stack, theirs, "call", tags=["wholesale"], site_id=other.id)
    await add_order(stack, "V-1", "100.00", "call", vip_calls[0])
    await add_order(stack, "V-2", "50.00", "chat", vip_chat)
    await add_order(stack, "P-1", "20.00", "call", plain_call)
    await add_order(stack, "N-1", "5.00", None, None)

    async with signed_in(stack, "boss@shop.example") as owner:
        everything = await (await owner.get("/dashboard/calls?site=" + str(stack.site.id))).text()
        select = everything.split('data-testid="dash-filter-tag"', 1)[1].split("</select>", 1)[0]
        # The tags of every site this owner sees, most used first.
        assert re.findall(r'<option value="([^"]*)"', select) == ["", "vip", "oak", "wholesale"]

        first = await (await owner.get(f"/dashboard/calls?tag=VIP&site={stack.site.id}")).text()
        assert "selected>vip</option>" in first
        next_url = _next_url(first)
        assert next_url is not None and "tag=VIP" in next_url
        second = await (await owner.get(next_url)).text()
        shown = _log_ids(first) + _log_ids(second)
        assert len(_log_ids(first)) == 50
        assert sorted(shown) == sorted([*vip_calls, vip_chat])
        assert plain_call not in shown and untagged not in shown and message not in shown

        # Combined with the channel filter: only the tagged chat.
        chats = await (await owner.get("/dashboard/calls?tag=vip&channel=chat")).text()
        assert _log_ids(chats) == [vip_chat]
        oak = await (await owner.get("/dashboard/calls?tag=oak")).text()
        assert _log_ids(oak) == [plain_call, vip_chat]
        assert _log_ids(await (await owner.get("/dashboard/calls?tag=wholesale")).text()) == [theirs]

        export_links = re.findall(r'href="(/dashboard/export/[a-z]+\.csv\?[^"]*)"', oak)
        assert len(export_links) == 2 and all("tag=oak" in markup.unescape(link) for link in export_links)
        calls_csv = list(
            csv.DictReader(io.StringIO(await (await owner.get("/dashboard/export/calls.csv?tag=oak")).text()))
        )
        assert [r["id"] for r in calls_csv] == [plain_call]
        orders_csv = await (await owner.get("/dashboard/export/orders.csv?tag=vip")).text()
        assert sorted(r["order_id"] for r in csv.DictReader(io.StringIO(orders_csv))) == ["V-1", "V-2"]
        all_orders = await (await owner.get("/dashboard/export/orders.csv")).text()
        assert len(list(csv.DictReader(io.StringIO(all_orders)))) == 4

        for bad in ("%3Cscript%3E", "x" * 300):
            for path in ("/dashboard/calls", "/dashboard/export/calls.csv"):
                async with owner.get(f"{path}?tag={bad}") as response:
                    assert response.status == 400, (path, bad)
                    assert response.content_type == "text/html" and "tag" in (await response.text()).lower()

    # An owner of this site alone neither is offered the other site's tag nor finds its call by it.
    await add_owner(stack, "mine@shop.example", [stack.site.id])
    async with signed_in(stack, "mine@shop.example") as mine:
        log = await (await mine.get("/dashboard/calls")).text()
        assert 'value="wholesale"' not in log and 'value="vip"' in log
        assert _log_ids(await (await mine.get("/dashboard/calls?tag=wholesale")).text()) == []
        exported = await (await mine.get("/dashboard/export/calls.csv?tag=wholesale")).text()
        assert theirs not in exported


async def test_the_tagged_log_on_postgresql(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same on PostgreSQL, which refused the log's UNION of untyped NULLs (a 500 for every log page)."""
    with postgres() as url:
        async with running_stack(settings_for(tmp_path, database_url=url, ring_timeout=30)) as stack:
            await test_the_tag_filter_narrows_the_log_its_pages_and_the_csv(
                stack, monkeypatch, queries.FEW_TAGGED
            )
