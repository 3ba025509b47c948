"""Orders are credited to the visitor's last real conversation in the window (the domain, on real SQLite)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from callserver import sites
from callserver.errors import InvalidInput, NotFound
from callserver.orders.attribution import AttributedBy, Attribution, Channel, set_attribution
from callserver.orders.intake import OrderReport, Source, record_order
from callserver.store.database import Database
from callserver.store.models import AuditEntry, Order, Site
from tests.conversations import add_call, add_chat, add_left_message, add_visitor

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'callserver.db'}")
    await database.upgrade()
    yield database
    await database.close()


async def make_site(database: Database, name: str = "Sofa shop") -> Site:
    async with database.session() as session:
        new = await sites.create_site(session, name, ["https://sofas.example"])
        site = await session.get(Site, new.id)
        assert site is not None
        return site


@pytest.fixture
async def site(database: Database) -> Site:
    return await make_site(database)


async def order_for(
    database: Database,
    site: Site,
    order_id: str = "1001",
    token: str | None = None,
    email: str | None = None,
    phone: str | None = None,
    total: str = "249.90",
) -> Attribution:
    async with database.session() as session:
        report = OrderReport(
            order_id, Decimal(total), "EUR", NOW, visitor_token=token, email=email, phone=phone
        )
        intake = await record_order(session, site, report, Source.API)
        return Attribution.of(intake.order)


async def test_by_visitor_token(database: Database, site: Site) -> None:
    async with database.session() as session:
        anna = await add_visitor(session, site.id, "tok-anna")
        call = await add_call(session, site.id, anna, days_ago(2))
    assert await order_for(database, site, token="tok-anna") == Attribution(
        Channel.CALL, call.id, AttributedBy.TOKEN
    )


async def test_by_email_any_case_via_chat_or_left_message(database: Database, site: Site) -> None:
    async with database.session() as session:
        anna = await add_visitor(session, site.id, "tok-anna", email="Anna@Sofas.example")
        chat = await add_chat(session, site.id, anna, days_ago(1))
        message = await add_left_message(session, site.id, days_ago(3), email="BEN@sofas.example")
    assert await order_for(database, site, "1", token="unknown", email="anna@sofas.EXAMPLE") == Attribution(
        Channel.CHAT, chat.id, AttributedBy.EMAIL
    )
    assert await order_for(database, site, "2", email=" ben@Sofas.example ") == Attribution(
        Channel.MESSAGE, message.id, AttributedBy.EMAIL
    )


async def test_by_phone_digits_only(database: Database, site: Site) -> None:
    async with database.session() as session:
        carl = await add_visitor(session, site.id, "tok-carl", phone="+49 30 1234567")
        call = await add_call(session, site.id, carl, days_ago(1))
        message = await add_left_message(session, site.id, days_ago(2), phone="0171/555 66 77")
    assert await order_for(database, site, "1", phone="+49 (30) 123-4567") == Attribution(
        Channel.CALL, call.id, AttributedBy.PHONE
    )
    assert await order_for(database, site, "2", phone="0171 5556677") == Attribution(
        Channel.MESSAGE, message.id, AttributedBy.PHONE
    )
    # A few digits in common are no match.
    assert await order_for(database, site, "3", phone="4567") == Attribution()


async def test_only_conversations_within_the_window_before_the_order(database: Database, site: Site) -> None:
    async with database.session() as session:
        anna = await add_visitor(session, site.id, "tok-anna")
        await add_call(session, site.id, anna, days_ago(8))  # too long ago for 7 days
        await add_call(session, site.id, anna, NOW + timedelta(minutes=5))  # after the order
    assert await order_for(database, site, "1", token="tok-anna") == Attribution()

    async with database.session() as session:
        row = await session.get(Site, site.id)
        assert row is not None
        row.attribution_days = 30
        site = row
    assert (await order_for(database, site, "2", token="tok-anna")).channel is Channel.CALL


async def test_the_last_conversation_wins(database: Database, site: Site) -> None:
    async with database.session() as session:
        anna = await add_visitor(session, site.id, "tok-anna", email="anna@sofas.example")
        await add_call(session, site.id, anna, days_ago(3))
        chat = await add_chat(session, site.id, anna, days_ago(2))
        message = await add_left_message(session, site.id, days_ago(2.5), visitor=anna)
    assert await order_for(database, site, "1", token="tok-anna") == Attribution(
        Channel.CHAT, chat.id, AttributedBy.TOKEN
    )
    async with database.session() as session:
        call = await add_call(session, site.id, anna, days_ago(1))
    assert await order_for(database, site, "2", token="tok-anna") == Attribution(
        Channel.CALL, call.id, AttributedBy.TOKEN
    )
    assert message.id  # older than the chat: it loses


async def test_unanswered_calls_and_silent_chats_sold_nothing(database: Database, site: Site) -> None:
    async with database.session() as session:
        anna = await add_visitor(session, site.id, "tok-anna")
        await add_call(session, site.id, anna, days_ago(1), answered=False)
        await add_chat(session, site.id, anna, days_ago(1), visitor_wrote=False)
    assert await order_for(database, site, token="tok-anna") == Attribution()


async def test_token_first_then_email(database: Database, site: Site) -> None:
    async with database.session() as session:
        device = await add_visitor(session, site.id, "tok-laptop")
        phone = await add_visitor(session, site.id, "tok-phone", email="anna@sofas.example")
        call = await add_call(session, site.id, device, days_ago(3))
        await add_chat(session, site.id, phone, days_ago(1))  # later, but found only by e-mail
    assert await order_for(database, site, token="tok-laptop", email="anna@sofas.example") == Attribution(
        Channel.CALL, call.id, AttributedBy.TOKEN
    )


async def test_another_sites_conversations_do_not_count(database: Database, site: Site) -> None:
    other = await make_site(database, "Other shop")
    async with database.session() as session:
        theirs = await add_visitor(session, other.id, "tok-anna", email="anna@sofas.example")
        await add_call(session, other.id, theirs, days_ago(1))
        await add_left_message(session, other.id, days_ago(1), email="anna@sofas.example", phone="0301234567")
    found = await order_for(database, site, token="tok-anna", email="anna@sofas.example", phone="0301234567")
    assert found == Attribution()


async def test_reporting_again_updates_the_total_and_keeps_one_order(database: Database, site: Site) -> None:
    async with database.session() as session:
        anna = await add_visitor(session, site.id, "tok-anna")
        call = await add_call(session, site.id, anna, days_ago(1))
    assert (await order_for(database, site, "1001", total="10.00")).channel is None
    # The shop learns the visitor token later (an orders/updated webhook): now it is attributed.
    assert await order_for(database, site, "1001", token="tok-anna", total="12.50") == Attribution(
        Channel.CALL, call.id, AttributedBy.TOKEN
    )
    async with database.session() as session:
        orders = list(await session.scalars(select(Order)))
    assert [(o.order_id, o.total, o.visitor_token) for o in orders] == [
        ("1001", Decimal("12.50"), "tok-anna")
    ]


async def test_manual_attribution_is_audited_and_kept(database: Database, site: Site) -> None:
    other = await make_site(database, "Other shop")
    async with database.session() as session:
        anna = await add_visitor(session, site.id, "tok-anna")
        call = await add_call(session, site.id, anna, days_ago(1))
        chat = await add_chat(session, site.id, None, days_ago(2))
        foreign = await add_call(session, other.id, None, days_ago(1))
    await order_for(database, site, token="tok-anna")

    async with database.session() as session:
        order = await session.scalar(select(Order).where(Order.order_id == "1001"))
        assert order is not None
        with pytest.raises(NotFound):
            await set_attribution(session, order, "call", foreign.id, actor_id=None)
        with pytest.raises(InvalidInput):
            await set_attribution(session, order, "fax", "x", actor_id=None)
        manual = await set_attribution(session, order, "chat", chat.id, actor_id=None)
    assert manual == Attribution(Channel.CHAT, chat.id, AttributedBy.MANUAL)

    # The same order reported again does not undo what the owner decided.
    assert await order_for(database, site, token="tok-anna") == manual
    async with database.session() as session:
        entries = list(await session.scalars(select(AuditEntry)))
        assert await session.scalar(select(func.count()).select_from(Order)) == 1
    assert [(e.action, e.site_id, e.detail) for e in entries] == [
        (
            "order.attributed",
            site.id,
            {
                "order_id": "1001",
                "from": {"channel": "call", "conversation_id": call.id},
                "to": {"channel": "chat", "conversation_id": chat.id},
            },
        )
    ]
