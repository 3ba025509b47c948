"""A returning visitor's history, for the operator: a salesperson's memory of this shopper.

Their earlier calls, chats, left messages and orders on the site, newest first and at most `LIMIT`,
each with what the operator would ask first — when, who talked to them, how it ended or how long it
took, the note and tags written down, the rating, an order's total — and the dashboard page it has.
A visitor is known by their token, which is the site's own (tokens never cross sites), and only an
operator who works for that site may read it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from callserver.accounts import Account
from callserver.csat import conversation_of
from callserver.outcomes import NotYourSite, tags_of
from callserver.store.database import Database
from callserver.store.models import Call, Chat, ConversationOutcome, LeftMessage, Order, User, Visitor
from callserver.wire.vocabulary import HistoryChannel

# What fits on an incoming card and in the visitor panel; older things are on the dashboard.
LIMIT = 10
NOTE_SHOWN = 200  # characters of an operator's note shown beside an entry


@dataclass(frozen=True)
class Past:
    """One thing the visitor did before: a call, a chat, a left message or an order."""

    channel: HistoryChannel
    id: str
    at: datetime
    operator: str | None = None  # who answered the call or took the chat
    outcome: str | None = None  # a call's end reason, a chat's or message's state, an order's status
    duration_s: int | None = None  # a call from its answer to its end; a chat from its start to its close
    note: str | None = None
    tags: tuple[str, ...] = ()
    csat: int | None = None
    total: str | None = None  # an order's total ("129.00") and currency
    currency: str | None = None
    conversation_id: str | None = None  # the conversation an order is attributed to
    page: str | None = None  # its page in the dashboard


def dashboard_page(channel: HistoryChannel | str, conversation_id: str) -> str:
    """The dashboard's page of a call, a chat or a left message."""
    if channel == HistoryChannel.CALL:
        return f"/dashboard/calls/{conversation_id}"
    if channel == HistoryChannel.CHAT:
        return f"/dashboard/chats/{conversation_id}"
    return "/dashboard/messages"


def _seconds(start: datetime | None, end: datetime | None) -> int | None:
    if start is None or end is None:
        return None
    return max(0, round((_aware(end) - _aware(start)).total_seconds()))


def _aware(at: datetime) -> datetime:
    # SQLite hands back naive datetimes for what was stored in UTC.
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _money(total: Decimal) -> str:
    return f"{total:.2f}"


async def visitor_history(
    session: AsyncSession, site_id: int, token: str, exclude: Collection[str] = (), limit: int = LIMIT
) -> list[Past]:
    """The visitor's latest calls, chats, left messages and orders on the site, newest first.

    `exclude` names conversations not to list (the one ringing now). Orders are the visitor's own (by
    their token) and those attributed to their conversations.
    """
    visitor = await session.scalar(select(Visitor).where(Visitor.site_id == site_id, Visitor.token == token))
    if visitor is None:
        return []
    skip = list(exclude)
    calls = (
        await session.scalars(
            select(Call)
            .where(Call.site_id == site_id, Call.visitor_id == visitor.id, Call.id.not_in(skip))
            .order_by(Call.created_at.desc())
            .limit(limit)
        )
    ).all()
    chats = (
        await session.scalars(
            select(Chat)
            .where(Chat.site_id == site_id, Chat.visitor_id == visitor.id, Chat.id.not_in(skip))
            .order_by(Chat.created_at.desc())
            .limit(limit)
        )
    ).all()
    messages = (
        await session.scalars(
            select(LeftMessage)
            .where(LeftMessage.site_id == site_id, LeftMessage.visitor_id == visitor.id)
            .order_by(LeftMessage.created_at.desc())
            .limit(limit)
        )
    ).all()
    conversations = [c.id for c in calls] + [c.id for c in chats] + [m.id for m in messages]
    orders = (
        await session.scalars(
            select(Order)
            .where(
                Order.site_id == site_id,
                or_(Order.visitor_token == token, Order.conversation_id.in_(conversations)),
            )
            .order_by(Order.created_at.desc())
            .limit(limit)
        )
    ).all()
    talked = [c.id for c in calls] + [c.id for c in chats]
    outcomes = {
        o.conversation_id: o
        for o in await session.scalars(
            select(ConversationOutcome).where(ConversationOutcome.conversation_id.in_(talked))
        )
    }
    tags = await tags_of(session, talked)
    chat_operators = {c.operator_id for c in chats if c.operator_id is not None}
    names = {
        user.id: user.name or user.email.split("@", 1)[0]
        for user in (
            await session.scalars(select(User).where(User.id.in_(chat_operators))) if chat_operators else []
        )
    }

    def written(conversation_id: str) -> tuple[str | None, tuple[str, ...], int | None]:
        """The operator's note and tags, and the shopper's rating."""
        outcome = outcomes.get(conversation_id)
        note = outcome.note[:NOTE_SHOWN] if outcome and outcome.note else None
        return note, tuple(tags.get(conversation_id, ())), outcome.csat_score if outcome else None

    found: list[Past] = []
    for call in calls:
        operator = call.operator
        note, tagged, csat = written(call.id)
        found.append(
            Past(
                HistoryChannel.CALL,
                call.id,
                _aware(call.created_at),
                operator=(operator.name or operator.email.split("@", 1)[0]) if operator else None,
                outcome=call.end_reason or call.state,
                duration_s=_seconds(call.answered_at, call.ended_at),
                note=note,
                tags=tagged,
                csat=csat,
                page=dashboard_page(HistoryChannel.CALL, call.id),
            )
        )
    for chat in chats:
        note, tagged, csat = written(chat.id)
        found.append(
            Past(
                HistoryChannel.CHAT,
                chat.id,
                _aware(chat.created_at),
                operator=names.get(chat.operator_id) if chat.operator_id is not None else None,
                outcome=chat.state,
                duration_s=_seconds(chat.created_at, chat.closed_at),
                note=note,
                tags=tagged,
                csat=csat,
                page=dashboard_page(HistoryChannel.CHAT, chat.id),
            )
        )
    for message in messages:
        found.append(
            Past(
                HistoryChannel.MESSAGE,
                message.id,
                _aware(message.created_at),
                outcome=message.status,
                page=dashboard_page(HistoryChannel.MESSAGE, message.id),
            )
        )
    for order in orders:
        attributed = order.conversation_id if order.channel else None
        found.append(
            Past(
                HistoryChannel.ORDER,
                order.order_id,
                _aware(order.created_at),
                outcome=order.status,
                total=_money(order.total),
                currency=order.currency,
                conversation_id=attributed,
                page=dashboard_page(order.channel, attributed) if order.channel and attributed else None,
            )
        )
    found.sort(key=lambda past: past.at, reverse=True)
    return found[:limit]


class VisitorHistory:
    """What the softphone asks: the history of the visitor of a conversation, or of a visitor by token."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def of_conversation(self, account: Account, conversation_id: str) -> tuple[int, str, list[Past]]:
        """(site, visitor token, their history besides this call or chat); NotFound, NotYourSite."""
        async with self._db.session() as session:
            _, row = await conversation_of(session, None, conversation_id)
            if not account.works_for(row.site_id):
                raise NotYourSite("That conversation is on a site you do not work for.")
            visitor = await session.get(Visitor, row.visitor_id) if row.visitor_id is not None else None
            if visitor is None:
                return row.site_id, "", []
            return (
                row.site_id,
                visitor.token,
                await visitor_history(
                    session, row.site_id, visitor.token, exclude=_also(conversation_id, row)
                ),
            )

    async def of_visitor(self, account: Account, site_id: int, token: str) -> list[Past]:
        """The history of the site's visitor with this token (a board row); NotYourSite."""
        if not account.works_for(site_id):
            raise NotYourSite("That visitor is on a site you do not work for.")
        async with self._db.session() as session:
            return await visitor_history(session, site_id, token)


def _also(conversation_id: str, row: Call | Chat) -> Sequence[str]:
    """The conversation itself and the call a chat continues (the same conversation to the shopper)."""
    continued = getattr(row, "call_id", None)
    return [conversation_id, continued] if isinstance(continued, str) else [conversation_id]
