"""Reporting queries for the owner dashboard: the conversation log, a call's and a chat's file, the overview.

Every query is scoped to a list of site ids the caller may see; the views work that list out from
the logged-in owner. Nothing here knows about HTTP.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    String,
    Subquery,
    and_,
    case,
    distinct,
    exists,
    false,
    func,
    literal,
    not_,
    null,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import Label, SQLCoreOperations
from sqlalchemy.types import TypeEngine

from callserver import events
from callserver.dashboard import daily
from callserver.dashboard.csat_days import csat_counts
from callserver.dashboard.daily import CallDay
from callserver.errors import InvalidInput
from callserver.orders.revenue import CANCELLED, cents, net_revenue
from callserver.outcomes import tags_of
from callserver.store.models import (
    Call,
    CallEvent,
    Chat,
    ChatMessage,
    ConversationOutcome,
    ConversationTag,
    LeftMessage,
    Order,
    PageView,
    Site,
    User,
    Visitor,
)

CHANNELS = ("call", "chat", "message")
PAGE_SIZE = 50


# ---------------------------------------------------------------------------------------------- scope


async def visible_site_ids(session: AsyncSession, linked: Sequence[int]) -> list[int]:
    """The sites an owner sees: the ones linked to them, or every site when they are linked to none."""
    if linked:
        return sorted(linked)
    return list(await session.scalars(select(Site.id).order_by(Site.id)))


def in_sites(
    column: SQLCoreOperations[int] | SQLCoreOperations[int | None], site_ids: Sequence[int]
) -> ColumnElement[bool]:
    # One site (the usual case) as equality: SQLite then walks (site_id, created_at) in order.
    if not site_ids:
        return false()
    if len(site_ids) == 1:
        return column == site_ids[0]
    return column.in_(site_ids)


def seconds_between(
    later: SQLCoreOperations[datetime | None], earlier: SQLCoreOperations[datetime | None], dialect: str
) -> ColumnElement[Any]:
    """`later - earlier` in seconds, in the SQL of the dialect at hand."""
    if dialect == "sqlite":
        return (func.julianday(later) - func.julianday(earlier)) * 86400.0
    return func.extract("epoch", later - earlier)


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def _as_date(value: object) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


# ------------------------------------------------------------------------------------------------ log


@dataclass(frozen=True)
class Cursor:
    """Where a log page ends: the (created_at, id) of its last row (keyset pagination)."""

    created_at: datetime
    id: str

    def encode(self) -> str:
        raw = f"{self.created_at.isoformat()}|{self.id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> Cursor:
        damaged = InvalidInput("This page link is damaged; start again from the first page.")
        if len(value) > 200:  # what `encode` hands out is under 100 characters
            raise damaged
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
            stamp, row_id = raw.split("|", 1)
            created_at = datetime.fromisoformat(stamp)
            if created_at.tzinfo is None or len(row_id) > 64 or "\x00" in row_id:
                raise damaged
            # OverflowError: a year-1 or year-9999 time with an offset has no UTC Python can hold.
            return cls(created_at.astimezone(UTC), row_id)
        except (ValueError, OverflowError) as e:  # binascii.Error and UnicodeDecodeError included
            raise damaged from e


@dataclass(frozen=True)
class LogFilters:
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive
    site_id: int | None = None
    operator_id: int | None = None
    state: str | None = None  # a call state: ringing, answered, ended
    end_reason: str | None = None
    channel: str | None = None  # call, chat, message
    orders: str | None = None  # with, without
    tag: str | None = None  # as stored (`outcomes.clean_tags`): calls and chats the operator tagged so

    @property
    def only_calls(self) -> bool:
        # States and end reasons are those of calls: chats and messages have none of them.
        return bool(self.state or self.end_reason)


@dataclass
class LogRow:
    channel: str
    id: str
    site_id: int
    created_at: datetime
    state: str
    end_reason: str | None
    operator: str | None
    visitor: str | None
    page: str | None
    answered_at: datetime | None
    ended_at: datetime | None
    revenue: list[tuple[str, Decimal]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)

    @property
    def talk_seconds(self) -> float | None:
        if self.channel != "call" or self.answered_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.answered_at).total_seconds()


@dataclass
class LogPage:
    rows: list[LogRow]
    next_cursor: Cursor | None


def _no(kind: TypeEngine[Any], name: str) -> Label[Any]:
    # A typed NULL: PostgreSQL takes a bare NULL in a subquery for text, and then refuses to UNION it
    # with the other branches' timestamps and integers.
    return sql_cast(null(), kind).label(name)


def _branch(
    channel: str,
    site_ids: Sequence[int],
    filters: LogFilters,
    cursor: Cursor | None,
    limit: int,
    few_tagged: bool = False,
) -> Subquery | None:
    """One table's share of a log page, newest first, already cut to `limit` rows."""
    if filters.channel and filters.channel != channel:
        return None
    if filters.only_calls and channel != "call":
        return None
    if (filters.operator_id is not None or filters.tag) and channel == "message":
        return None  # a left message has no operator and no tags
    table: Any
    if channel == "call":
        table = Call
        columns = [
            Call.state.label("state"),
            Call.end_reason.label("end_reason"),
            Call.operator_id.label("operator_id"),
            Call.answered_at.label("answered_at"),
            Call.ended_at.label("ended_at"),
            _no(LeftMessage.name.type, "name"),
        ]
    elif channel == "chat":
        table = Chat
        columns = [
            Chat.state.label("state"),
            _no(Call.end_reason.type, "end_reason"),
            Chat.operator_id.label("operator_id"),
            _no(Call.answered_at.type, "answered_at"),
            Chat.closed_at.label("ended_at"),
            _no(LeftMessage.name.type, "name"),
        ]
    else:
        table = LeftMessage
        columns = [
            LeftMessage.status.label("state"),
            _no(Call.end_reason.type, "end_reason"),
            _no(Call.operator_id.type, "operator_id"),
            _no(Call.answered_at.type, "answered_at"),
            _no(Call.ended_at.type, "ended_at"),
            LeftMessage.name.label("name"),
        ]
    stmt = select(
        literal(channel, String).label("channel"),
        table.id.label("id"),
        table.site_id.label("site_id"),
        table.created_at.label("created_at"),
        table.visitor_id.label("visitor_id"),
        table.page.label("page"),
        *columns,
    )
    site_filter = [filters.site_id] if filters.site_id is not None else site_ids
    if filters.site_id is not None and filters.site_id not in site_ids:
        site_filter = []
    conditions: list[ColumnElement[bool]] = [in_sites(table.site_id, site_filter)]
    if filters.start is not None:
        conditions.append(table.created_at >= filters.start)
    if filters.end is not None:
        conditions.append(table.created_at < filters.end)
    if filters.operator_id is not None:
        conditions.append(table.operator_id == filters.operator_id)
    if filters.state:
        conditions.append(Call.state == filters.state)
    if filters.end_reason:
        conditions.append(Call.end_reason == filters.end_reason)
    if filters.orders in ("with", "without"):
        sold = exists().where(Order.channel == channel, Order.conversation_id == table.id)
        conditions.append(sold if filters.orders == "with" else not_(sold))
    if filters.tag and few_tagged:
        # From the tag's index to its few rows, sorted after: walking the log's order and testing
        # each row would go through every conversation of the site for a rare tag (or an unused one).
        # `site_id + 0` keeps SQLite from walking (site_id, created_at) instead.
        conditions[0] = in_sites(table.site_id + 0, site_filter)
        tagged = select(ConversationTag.conversation_id).where(
            ConversationTag.tag == filters.tag, in_sites(ConversationTag.site_id, site_filter)
        )
        conditions.append(table.id.in_(tagged))
    elif filters.tag:
        # A tag on many conversations: the newest page of them is found soon along the log's order.
        conditions.append(_tagged(table.id, filters.tag))
    if cursor is not None:
        # `<=` first so the database can range-scan (site_id, created_at); ties broken by id.
        conditions.append(table.created_at <= cursor.created_at)
        conditions.append(or_(table.created_at < cursor.created_at, table.id < cursor.id))
    ordered = table.created_at.desc(), table.id.desc()
    return stmt.where(*conditions).order_by(*ordered).limit(limit).subquery()


async def conversation_log(
    session: AsyncSession,
    site_ids: Sequence[int],
    filters: LogFilters,
    cursor: Cursor | None = None,
    limit: int = PAGE_SIZE,
) -> LogPage:
    """One page of calls, chats and left messages, newest first, after `cursor`."""
    few = bool(filters.tag) and await _few_tagged(session, site_ids, filters)
    branches = [
        b for c in CHANNELS if (b := _branch(c, site_ids, filters, cursor, limit + 1, few)) is not None
    ]
    if not branches:
        return LogPage([], None)
    # Each branch is cut to one page on its own index before the merge, so a page costs the same
    # on the millionth call as on the first.
    merged = branches[0] if len(branches) == 1 else union_all(*(select(b) for b in branches)).subquery()
    rows = (
        await session.execute(
            select(merged).order_by(merged.c.created_at.desc(), merged.c.id.desc()).limit(limit + 1)
        )
    ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    operators = await _operator_names(session, {r.operator_id for r in rows if r.operator_id})
    visitors = await _visitor_names(session, {r.visitor_id for r in rows if r.visitor_id})
    revenue = await revenue_by_conversation(session, [r.id for r in rows])
    tags = await tags_of(session, [r.id for r in rows if r.channel != "message"])
    page = [
        LogRow(
            channel=r.channel,
            id=r.id,
            site_id=r.site_id,
            created_at=_aware(r.created_at),
            state=r.state,
            end_reason=r.end_reason,
            operator=operators.get(r.operator_id) if r.operator_id else None,
            visitor=r.name or (visitors.get(r.visitor_id) if r.visitor_id else None),
            page=r.page,
            answered_at=_aware(r.answered_at) if r.answered_at else None,
            ended_at=_aware(r.ended_at) if r.ended_at else None,
            revenue=revenue.get((r.channel, r.id), []),
            tags=tags.get(r.id, []) if r.channel != "message" else [],
        )
        for r in rows
    ]
    last = page[-1] if page and more else None
    return LogPage(page, Cursor(last.created_at, last.id) if last else None)


# Up to this many conversations with the log's tag, the log starts from the tag's index (each one
# looked up and sorted: ~15 ms a thousand on SQLite); past it, along the log's order, where a tag that
# common finds a page within a few thousand rows. With 220,000 conversations on SQLite a page tagged
# by 0.1 % of them took ~470 ms along the log (an unused tag ~1.5 s), ~60 ms from the index.
FEW_TAGGED = 2000


async def _few_tagged(session: AsyncSession, site_ids: Sequence[int], filters: LogFilters) -> bool:
    sites = [filters.site_id] if filters.site_id is not None else site_ids
    counted = (
        select(ConversationTag.conversation_id)
        .where(ConversationTag.tag == filters.tag, in_sites(ConversationTag.site_id, sites))
        .limit(FEW_TAGGED + 1)  # counting stops there: a common tag costs no more than a rare one
        .subquery()
    )
    return int(await session.scalar(select(func.count()).select_from(counted)) or 0) <= FEW_TAGGED


def _aware(value: object) -> datetime:
    # Columns of a UNION come back through the first branch's type; make sure they are UTC-aware.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def _operator_names(session: AsyncSession, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = await session.execute(select(User.id, User.name, User.email).where(User.id.in_(ids)))
    return {r.id: r.name or r.email for r in rows}


async def _visitor_names(session: AsyncSession, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = await session.execute(
        select(Visitor.id, Visitor.name, Visitor.email, Visitor.phone).where(Visitor.id.in_(ids))
    )
    return {r.id: r.name or r.email or r.phone or "" for r in rows}


async def revenue_by_conversation(
    session: AsyncSession, conversation_ids: Sequence[str]
) -> dict[tuple[str, str], list[tuple[str, Decimal]]]:
    """Attributed revenue (net of refunds, cancelled 0) per (channel, conversation id), per currency."""
    if not conversation_ids:
        return {}
    rows = await session.execute(
        select(Order.channel, Order.conversation_id, Order.currency, func.sum(net_revenue()))
        # Both columns of ix_orders_conversation constrained, so each id is one index probe.
        .where(Order.channel.in_(CHANNELS), Order.conversation_id.in_(conversation_ids))
        .group_by(Order.channel, Order.conversation_id, Order.currency)
    )
    result: dict[tuple[str, str], list[tuple[str, Decimal]]] = defaultdict(list)
    for channel, conversation_id, currency, total in rows:
        result[(str(channel), str(conversation_id))].append((currency, cents(total)))
    return result


async def operators_of(session: AsyncSession, site_ids: Sequence[int]) -> list[User]:
    """Operators who work for any of these sites (an operator linked to no site works for all)."""
    users = await session.scalars(select(User).where(User.role == "operator").order_by(User.name, User.email))
    return [u for u in users if not u.sites or any(s.id in site_ids for s in u.sites)]


# ------------------------------------------------------------------------------ one conversation

# The journey on a conversation's page: the last pages the visitor opened before it ended.
JOURNEY_PAGES = 30


@dataclass
class Outcome:
    """What came of a conversation: the operator's note, tags and order number, the shopper's rating."""

    note: str | None = None
    tags: list[str] = field(default_factory=list)
    order_ref: str | None = None  # the order number the operator took by hand
    csat_score: int | None = None
    csat_comment: str | None = None
    csat_at: datetime | None = None
    csat_dismissed_at: datetime | None = None
    updated_by: str | None = None  # who wrote the note (their name or e-mail)
    updated_at: datetime | None = None


async def outcome_file(session: AsyncSession, conversation_id: str) -> Outcome:
    """The conversation's outcome and tags; an empty Outcome when nobody wrote one down."""
    tags = (await tags_of(session, [conversation_id])).get(conversation_id, [])
    row = await session.get(ConversationOutcome, conversation_id)
    if row is None:
        return Outcome(tags=tags)
    writer = None
    if row.updated_by is not None:
        writer = (await _operator_names(session, {row.updated_by})).get(row.updated_by)
    return Outcome(
        note=row.note,
        tags=tags,
        order_ref=row.order_ref,
        csat_score=row.csat_score,
        csat_comment=row.csat_comment,
        csat_at=_aware(row.csat_at) if row.csat_at else None,
        csat_dismissed_at=_aware(row.csat_dismissed_at) if row.csat_dismissed_at else None,
        updated_by=writer,
        updated_at=_aware(row.updated_at) if row.updated_at else None,
    )


async def journey_of(
    session: AsyncSession, site_id: int, visitor_id: int | None, until: datetime | None
) -> list[PageView]:
    """The pages the visitor opened up to `until` (`visitors/journey.py` writes them), oldest first."""
    if visitor_id is None:
        return []
    token = await session.scalar(select(Visitor.token).where(Visitor.id == visitor_id))
    if token is None:
        return []
    # (site_id, visitor_token, view_id) is unique, so its index finds the visitor's views.
    stmt = select(PageView).where(PageView.site_id == site_id, PageView.visitor_token == token)
    if until is not None:
        stmt = stmt.where(PageView.at <= until)
    views = list(
        await session.scalars(stmt.order_by(PageView.at.desc(), PageView.id.desc()).limit(JOURNEY_PAGES))
    )
    return views[::-1]


async def attributed_orders(
    session: AsyncSession, site_id: int, channel: str, conversation_id: str
) -> tuple[list[Order], dict[int, str]]:
    """The orders attributed to a conversation, and the accounts that attributed any by hand (e-mail)."""
    orders = list(
        await session.scalars(
            select(Order)
            .where(
                Order.channel == channel, Order.conversation_id == conversation_id, Order.site_id == site_id
            )
            .order_by(Order.created_at)
        )
    )
    user_ids = {o.attributed_by_user_id for o in orders if o.attributed_by_user_id is not None}
    users: dict[int, str] = {}
    if user_ids:
        accounts = await session.execute(select(User.id, User.email).where(User.id.in_(user_ids)))
        users = {user_id: email for user_id, email in accounts}
    return orders, users


@dataclass
class CallFile:
    call: Call
    site: Site
    events: list[tuple[CallEvent, str | None]]  # event and the operator's name
    chat: Chat | None
    transcript: list[ChatMessage]
    orders: list[Order]
    # The accounts that attributed an order by hand, by id (their e-mail).
    attributed_by_users: dict[int, str] = field(default_factory=dict)
    attribution_days: int = 7
    outcome: Outcome = field(default_factory=Outcome)
    journey: list[PageView] = field(default_factory=list)


async def call_file(session: AsyncSession, site_ids: Sequence[int], call_id: str) -> CallFile | None:
    """Everything about one call, or None when it does not exist or belongs to a site not in scope."""
    call = await session.get(Call, call_id)
    if call is None or call.site_id not in site_ids:
        return None
    site = await session.get(Site, call.site_id)
    assert site is not None
    rows = await session.execute(
        select(CallEvent, User.name, User.email)
        .outerjoin(User, User.id == CallEvent.operator_id)
        .where(CallEvent.call_id == call_id)
        .order_by(CallEvent.at, CallEvent.id)
    )
    timeline: list[tuple[CallEvent, str | None]] = [(event, name or email) for event, name, email in rows]
    chat = await session.scalar(
        select(Chat).where(Chat.call_id == call_id).order_by(Chat.created_at).limit(1)
    )
    transcript: list[ChatMessage] = []
    if chat is not None:
        transcript = list(
            await session.scalars(
                select(ChatMessage)
                .where(ChatMessage.chat_id == chat.id)
                .order_by(ChatMessage.at, ChatMessage.id)
            )
        )
    orders, users = await attributed_orders(session, call.site_id, "call", call_id)
    days = site.attribution_days if site.attribution_days is not None else 7
    return CallFile(
        call,
        site,
        timeline,
        chat,
        transcript,
        orders,
        users,
        days,
        outcome=await outcome_file(session, call_id),
        journey=await journey_of(session, call.site_id, call.visitor_id, call.ended_at),
    )


@dataclass(frozen=True)
class ChatLine:
    """One line of a chat's transcript, with who wrote it and how far it got (sent, delivered, read)."""

    message: ChatMessage
    who: str

    @property
    def status(self) -> str:
        if self.message.read_at is not None:
            return "read"
        return "delivered" if self.message.delivered_at is not None else "sent"


@dataclass(frozen=True)
class ChatMoment:
    """A step of a chat's life as its records hold it: started, an operator's first reply, a system
    line (a transfer, a call offered), rated, closed."""

    at: datetime
    name: str  # chat.started, chat.replied, chat.note, csat.received, chat.closed
    who: str | None = None
    detail: str = ""


@dataclass
class ChatFile:
    chat: Chat
    site: Site
    visitor: Visitor | None
    operator: str | None  # who has (or last had) the chat
    transcript: list[ChatLine]
    timeline: list[ChatMoment]
    journey: list[PageView]
    orders: list[Order]
    attributed_by_users: dict[int, str]
    outcome: Outcome
    call: Call | None  # the call this chat continues, when it fell back from one
    attribution_days: int = 7


async def chat_file(session: AsyncSession, site_ids: Sequence[int], chat_id: str) -> ChatFile | None:
    """Everything about one chat, or None when it does not exist or belongs to a site not in scope."""
    chat = await session.get(Chat, chat_id)
    if chat is None or chat.site_id not in site_ids:
        return None
    site = await session.get(Site, chat.site_id)
    assert site is not None
    visitor = await session.get(Visitor, chat.visitor_id) if chat.visitor_id is not None else None
    messages = list(
        await session.scalars(
            select(ChatMessage).where(ChatMessage.chat_id == chat_id).order_by(ChatMessage.at, ChatMessage.id)
        )
    )
    operator_ids = {m.operator_id for m in messages if m.operator_id is not None}
    if chat.operator_id is not None:
        operator_ids.add(chat.operator_id)
    names = await _operator_names(session, operator_ids)
    visitor_name = (visitor.name or visitor.email or visitor.phone) if visitor else None

    def who(message: ChatMessage) -> str:
        if message.sender == "visitor":
            return visitor_name or "Visitor"
        if message.sender == "operator":
            return names.get(message.operator_id or 0) or "Operator"
        return "System"

    transcript = [ChatLine(m, who(m)) for m in messages]
    outcome = await outcome_file(session, chat_id)
    timeline = [ChatMoment(_aware(chat.created_at), "chat.started", visitor_name, chat.page or "")]
    replied: set[int | None] = set()
    for line in transcript:
        m = line.message
        if m.sender == "system":
            timeline.append(ChatMoment(_aware(m.at), "chat.note", None, m.body))
        elif m.sender == "operator" and m.operator_id not in replied:
            replied.add(m.operator_id)  # the first reply of each operator: who took it, and when
            timeline.append(ChatMoment(_aware(m.at), "chat.replied", line.who))
    if outcome.csat_at is not None:
        timeline.append(ChatMoment(outcome.csat_at, "csat.received", visitor_name, f"{outcome.csat_score}/5"))
    if chat.closed_at is not None:
        timeline.append(ChatMoment(_aware(chat.closed_at), "chat.closed"))
    timeline.sort(key=lambda moment: moment.at)
    call = await session.get(Call, chat.call_id) if chat.call_id else None
    if call is not None and call.site_id != chat.site_id:
        call = None
    orders, users = await attributed_orders(session, chat.site_id, "chat", chat_id)
    return ChatFile(
        chat=chat,
        site=site,
        visitor=visitor,
        operator=names.get(chat.operator_id) if chat.operator_id else None,
        transcript=transcript,
        timeline=timeline,
        journey=await journey_of(session, chat.site_id, chat.visitor_id, chat.closed_at),
        orders=orders,
        attributed_by_users=users,
        outcome=outcome,
        call=call,
        attribution_days=site.attribution_days if site.attribution_days is not None else 7,
    )


# ------------------------------------------------------------------------------------------ overview


@dataclass
class Day:
    day: date
    calls: int = 0
    chats: int = 0
    messages: int = 0


@dataclass
class Csat:
    """Ratings of the conversations worth asking about (an answered call, a chat an operator took)."""

    name: str
    asked: int = 0  # conversations a shopper could rate
    rated: int = 0
    score_sum: int = 0

    @property
    def mean(self) -> float | None:
        return self.score_sum / self.rated if self.rated else None

    @property
    def response_rate(self) -> float | None:
        return self.rated / self.asked if self.asked else None


async def csat_figures(
    session: AsyncSession, site_ids: Sequence[int], since: datetime, until: datetime
) -> tuple[list[Csat], list[Csat]]:
    """CSAT per operator and per site for conversations started in [since, until), by name."""
    by_operator: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    by_site: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    # Past days' counts are kept (dashboard/csat_days.py), today's and yesterday's counted live.
    for site_id, operator_id, asked, rated, score_sum in await csat_counts(session, site_ids, since, until):
        for key, into in ((operator_id, by_operator), (site_id, by_site)):
            if key is not None:
                figures = into[key]
                figures[0] += asked
                figures[1] += rated
                figures[2] += int(score_sum)
    operator_names = await _operator_names(session, set(by_operator))
    site_names: dict[int, str] = {}
    if by_site:
        rows = await session.execute(select(Site.id, Site.name).where(Site.id.in_(set(by_site))))
        site_names = {r.id: r.name for r in rows}

    def listed(figures: dict[int, list[int]], names: dict[int, str]) -> list[Csat]:
        out = [Csat(names.get(key, f"#{key}"), *values) for key, values in figures.items()]
        return sorted(out, key=lambda c: c.name.lower())

    return listed(by_operator, operator_names), listed(by_site, site_names)


@dataclass
class Overview:
    start: date
    end: date  # inclusive
    days: list[Day]
    calls: int
    answered: int
    missed: int
    abandoned: int
    mean_answer_seconds: float | None
    talk_seconds: float
    chats: int
    messages: int
    revenue_by_channel: dict[str, list[tuple[str, Decimal]]]
    revenue_by_operator: list[tuple[str, list[tuple[str, Decimal]]]]
    converted: int  # conversations with at least one attributed order
    # The shoppers' ratings of the period's conversations: per operator (by name) and per site.
    csat_by_operator: list[Csat] = field(default_factory=list)
    csat_by_site: list[Csat] = field(default_factory=list)

    @property
    def answer_rate(self) -> float | None:
        return self.answered / self.calls if self.calls else None

    @property
    def conversations(self) -> int:
        return self.calls + self.chats + self.messages

    @property
    def conversion_rate(self) -> float | None:
        return self.converted / self.conversations if self.conversations else None


def day_bounds(start: date, end: date) -> tuple[datetime, datetime]:
    """[start 00:00, end+1 00:00) in UTC."""
    return (
        datetime(start.year, start.month, start.day, tzinfo=UTC),
        datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1),
    )


async def overview(session: AsyncSession, site_ids: Sequence[int], start: date, end: date) -> Overview:
    """Calls, chats, answer figures and attributed revenue for the days start..end (UTC)."""
    since, until = day_bounds(start, end)
    days = {start + timedelta(days=i): Day(start + timedelta(days=i)) for i in range((end - start).days + 1)}

    totals = CallDay()
    for day, figures in (await daily.call_days(session, site_ids, start, end)).items():
        if day in days:
            days[day].calls = figures.calls
        totals.add(figures)

    chats = messages = 0
    for table, attr in ((Chat, "chats"), (LeftMessage, "messages")):
        rows = await session.execute(
            select(func.date(table.created_at), func.count())
            .where(in_sites(table.site_id, site_ids), table.created_at >= since, table.created_at < until)
            .group_by(func.date(table.created_at))
        )
        for day_value, count in rows:
            d = days.get(_as_date(day_value))
            if d is not None:
                setattr(d, attr, count)
            if attr == "chats":
                chats += count
            else:
                messages += count

    # Revenue is counted live, never from the day cache (`daily.py` keeps call figures only): an order
    # refunded or cancelled weeks later changes the figures of the day it was placed on.
    revenue_by_channel: dict[str, list[tuple[str, Decimal]]] = {c: [] for c in CHANNELS}
    rows = await session.execute(
        select(Order.channel, Order.currency, func.sum(net_revenue()))
        .where(
            in_sites(Order.site_id, site_ids),
            Order.created_at >= since,
            Order.created_at < until,
            Order.channel.is_not(None),
        )
        .group_by(Order.channel, Order.currency)
        .order_by(Order.channel, Order.currency)
    )
    for channel, currency, total in rows:
        revenue_by_channel.setdefault(channel, []).append((currency, cents(total)))

    by_operator: dict[int, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    operator_tables: tuple[tuple[Any, str], ...] = ((Call, "call"), (Chat, "chat"))
    for table, channel in operator_tables:
        rows = await session.execute(
            select(table.operator_id, Order.currency, func.sum(net_revenue()))
            .join(table, and_(Order.channel == channel, table.id == Order.conversation_id))
            .where(
                in_sites(Order.site_id, site_ids),
                Order.created_at >= since,
                Order.created_at < until,
                table.operator_id.is_not(None),
            )
            .group_by(table.operator_id, Order.currency)
        )
        for operator_id, currency, total in rows:
            by_operator[operator_id][currency] += cents(total)
    names = await _operator_names(session, set(by_operator))
    revenue_by_operator = sorted(
        ((names.get(op, f"#{op}"), sorted(amounts.items())) for op, amounts in by_operator.items()),
        # By name: ranking by amount would add up amounts in different currencies.
        key=lambda item: item[0].lower(),
    )

    converted = 0
    conversation_tables: tuple[tuple[Any, str], ...] = (
        (Call, "call"),
        (Chat, "chat"),
        (LeftMessage, "message"),
    )
    for table, channel in conversation_tables:
        converted += int(
            await session.scalar(
                select(func.count(distinct(Order.conversation_id)))
                .join(table, and_(Order.channel == channel, table.id == Order.conversation_id))
                .where(
                    in_sites(table.site_id, site_ids),
                    table.created_at >= since,
                    table.created_at < until,
                    # Redundant (an order comes after its conversation), but it lets the database
                    # start from the period's orders rather than from every attributed order.
                    in_sites(Order.site_id, site_ids),
                    Order.created_at >= since,
                    Order.status != CANCELLED,  # a cancelled order sold nothing
                )
            )
            or 0
        )

    csat_by_operator, csat_by_site = await csat_figures(session, site_ids, since, until)
    return Overview(
        start=start,
        end=end,
        days=list(days.values()),
        calls=totals.calls,
        answered=totals.answered,
        missed=totals.missed,
        abandoned=totals.abandoned,
        mean_answer_seconds=totals.wait_seconds / totals.answered if totals.answered else None,
        talk_seconds=totals.talk_seconds,
        chats=chats,
        messages=messages,
        revenue_by_channel=revenue_by_channel,
        revenue_by_operator=revenue_by_operator,
        converted=converted,
        csat_by_operator=csat_by_operator,
        csat_by_site=csat_by_site,
    )


# ------------------------------------------------------------------------------------ operators


@dataclass
class OperatorActivity:
    id: int
    name: str
    email: str
    disabled: bool
    rung: int = 0
    answered: int = 0
    missed: int = 0  # rung, and the ring timed out
    declined: int = 0
    talk_seconds: float = 0.0


async def operator_activity(
    session: AsyncSession, site_ids: Sequence[int], start: date, end: date
) -> list[OperatorActivity]:
    """Per operator: calls rung, answered, missed (ring timed out) and declined; talk time."""
    since, until = day_bounds(start, end)
    dialect = _dialect(session)
    people = {
        u.id: OperatorActivity(u.id, u.name or u.email, u.email, u.disabled)
        for u in await operators_of(session, site_ids)
    }
    in_range = and_(in_sites(Call.site_id, site_ids), Call.created_at >= since, Call.created_at < until)
    rows = await session.execute(
        select(CallEvent.operator_id, CallEvent.name, func.count())
        .join(Call, Call.id == CallEvent.call_id)
        .where(
            in_range,
            CallEvent.operator_id.is_not(None),
            CallEvent.name.in_([events.CALL_RANG, events.CALL_RING_TIMEOUT, events.CALL_DECLINED]),
        )
        .group_by(CallEvent.operator_id, CallEvent.name)
    )
    field_of = {
        events.CALL_RANG: "rung",
        events.CALL_RING_TIMEOUT: "missed",
        events.CALL_DECLINED: "declined",
    }
    for event_operator, name, count in rows:
        person = people.get(event_operator or 0)
        if person is not None:
            setattr(person, field_of[name], count)
    answered_rows = await session.execute(
        select(
            Call.operator_id,
            func.count(),
            func.sum(
                case((Call.ended_at.is_not(None), seconds_between(Call.ended_at, Call.answered_at, dialect)))
            ),
        )
        .where(in_range, Call.answered_at.is_not(None), Call.operator_id.is_not(None))
        .group_by(Call.operator_id)
    )
    for operator_id, count, talk in answered_rows:
        person = people.get(operator_id or 0)
        if person is not None:
            person.answered = count
            person.talk_seconds = float(talk or 0)
    return sorted(people.values(), key=lambda p: (-p.answered, p.name))


# ------------------------------------------------------------------------------------------ exports


CALL_COLUMNS = [
    "id",
    "site",
    "created_at",
    "state",
    "end_reason",
    "operator",
    "answered_at",
    "ended_at",
    "talk_seconds",
    "page",
    "referrer",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "search",
    "cart_value",
    "has_recording",
]


def _tagged(column: SQLCoreOperations[str] | SQLCoreOperations[str | None], tag: str) -> ColumnElement[bool]:
    return exists().where(ConversationTag.conversation_id == column, ConversationTag.tag == tag)


async def export_calls(
    session: AsyncSession,
    site_ids: Sequence[int],
    start: datetime | None,
    end: datetime | None,
    tag: str | None = None,
) -> AsyncIterator[list[str]]:
    """Rows of the calls CSV (header first), streamed from the database in chunks; with `tag`, only the
    calls tagged so (the log's filter)."""
    yield CALL_COLUMNS
    stmt = (
        select(Call, Site.name, User.name, User.email)
        .join(Site, Site.id == Call.site_id)
        .outerjoin(User, User.id == Call.operator_id)
        .where(in_sites(Call.site_id, site_ids))
        .order_by(Call.created_at, Call.id)
        .execution_options(yield_per=1000)
    )
    if start is not None:
        stmt = stmt.where(Call.created_at >= start)
    if end is not None:
        stmt = stmt.where(Call.created_at < end)
    if tag:
        stmt = stmt.where(_tagged(Call.id, tag))
    result = await session.stream(stmt)
    async for call, site_name, op_name, op_email in result:
        utm = cast("dict[str, object]", call.context.get("utm") or {})
        talk = (
            f"{(call.ended_at - call.answered_at).total_seconds():.1f}"
            if call.answered_at and call.ended_at
            else ""
        )
        yield [
            call.id,
            site_name,
            call.created_at.isoformat(),
            call.state,
            call.end_reason or "",
            op_name or op_email or "",
            call.answered_at.isoformat() if call.answered_at else "",
            call.ended_at.isoformat() if call.ended_at else "",
            talk,
            call.page or "",
            call.referrer or "",
            str(utm.get("source") or ""),
            str(utm.get("medium") or ""),
            str(utm.get("campaign") or ""),
            str(call.context.get("search") or ""),
            str(call.context.get("cart_value") or ""),
            "yes" if call.recording_path else "no",
        ]


ORDER_COLUMNS = [
    "order_id",
    "site",
    "created_at",
    "total",
    "currency",
    "source",
    "channel",
    "conversation_id",
    "attributed_by",
    "status",
    "refunded_total",
    "revenue",
]


async def export_orders(
    session: AsyncSession,
    site_ids: Sequence[int],
    start: datetime | None,
    end: datetime | None,
    tag: str | None = None,
) -> AsyncIterator[list[str]]:
    """Rows of the orders CSV (header first), with their attribution, life and revenue (net of refunds,
    0 when cancelled; in the order's own currency, so amounts in different currencies are never added);
    with `tag`, only the orders attributed to a call or chat tagged so."""
    yield ORDER_COLUMNS
    stmt = (
        select(Order, Site.name)
        .join(Site, Site.id == Order.site_id)
        .where(in_sites(Order.site_id, site_ids))
        .order_by(Order.created_at, Order.id)
        .execution_options(yield_per=1000)
    )
    if start is not None:
        stmt = stmt.where(Order.created_at >= start)
    if end is not None:
        stmt = stmt.where(Order.created_at < end)
    if tag:
        stmt = stmt.where(Order.channel.in_(("call", "chat")), _tagged(Order.conversation_id, tag))
    result = await session.stream(stmt)
    async for order, site_name in result:
        yield [
            order.order_id,
            site_name,
            order.created_at.isoformat(),
            f"{order.total:.2f}",
            order.currency,
            order.source,
            order.channel or "",
            order.conversation_id or "",
            order.attributed_by or "",
            order.status,
            f"{order.refunded_total:.2f}",
            f"{order_revenue(order):.2f}",
        ]


def order_revenue(order: Order) -> Decimal:
    """What an order sold: its total less refunds, 0 when cancelled (as `net_revenue()` in SQL)."""
    return Decimal(0) if order.status == "cancelled" else order.total - order.refunded_total


# --------------------------------------------------------------------------------- left messages


async def left_messages(
    session: AsyncSession, site_ids: Sequence[int], status: str | None, limit: int = 200
) -> list[LeftMessage]:
    stmt = select(LeftMessage).where(in_sites(LeftMessage.site_id, site_ids))
    if status:
        stmt = stmt.where(LeftMessage.status == status)
    return list(await session.scalars(stmt.order_by(LeftMessage.created_at.desc()).limit(limit)))


async def reopen_left_message(session: AsyncSession, site_ids: Sequence[int], message_id: str) -> bool:
    """Mark a left message of these sites `new` again; False when there is no such message."""
    result = await session.execute(
        update(LeftMessage)
        .where(LeftMessage.id == message_id, in_sites(LeftMessage.site_id, site_ids))
        .values(status="new")
    )
    return bool(getattr(result, "rowcount", 0))
