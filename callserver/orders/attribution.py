"""Which conversation sold an order: the visitor's last call, chat or left message before it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import ColumnElement, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.selectable import ScalarSelect

from callserver.errors import InvalidInput, NotFound
from callserver.store.models import (
    AuditEntry,
    Call,
    Chat,
    ChatMessage,
    ConversationOutcome,
    LeftMessage,
    Order,
    Site,
    Visitor,
)

DEFAULT_WINDOW_DAYS = 7
# Fewer digits than this are no phone number worth matching people on ("1", "0000").
MIN_PHONE_DIGITS = 7


class Channel(StrEnum):
    CALL = "call"
    CHAT = "chat"
    MESSAGE = "message"


class AttributedBy(StrEnum):
    TOKEN = "token"
    EMAIL = "email"
    PHONE = "phone"
    MANUAL = "manual"


@dataclass(frozen=True)
class Conversation:
    """A call, chat or left message, and when it began."""

    channel: Channel
    id: str
    started_at: datetime


@dataclass(frozen=True)
class Attribution:
    """The conversation an order is credited to; all None when it is credited to none."""

    channel: Channel | None = None
    conversation_id: str | None = None
    attributed_by: AttributedBy | None = None

    @classmethod
    def of(cls, order: Order) -> Attribution:
        """The attribution stored on an order."""
        return cls(
            Channel(order.channel) if order.channel else None,
            order.conversation_id,
            AttributedBy(order.attributed_by) if order.attributed_by else None,
        )


def order_ref(number: str | None) -> str | None:
    """`" #1001 "` → `1001`: an order number as an operator types it and as orders are matched to it."""
    ref = (number or "").strip().lstrip("#").strip().lower()
    return ref or None


async def claimed_by_operator(
    session: AsyncSession, site_id: int, order: Order
) -> ConversationOutcome | None:
    """The conversation whose operator wrote down this order's number (the softphone, outcomes.py)."""
    refs = {ref for ref in (order_ref(order.order_id), order_ref(order.number)) if ref}
    if not refs:
        return None
    found: ConversationOutcome | None = await session.scalar(
        select(ConversationOutcome)
        .where(ConversationOutcome.site_id == site_id, ConversationOutcome.order_ref.in_(refs))
        .order_by(ConversationOutcome.updated_at.desc())
        .limit(1)
    )
    return found


def phone_digits(phone: str | None) -> str:
    """`+49 (30) 123-45` → `493012345`: people write one number many ways."""
    return re.sub(r"\D", "", phone or "")


async def attribute_order(session: AsyncSession, site: Site, order: Order) -> Attribution:
    """Credit the order to the visitor's last conversation in the site's window before it; store that.

    A conversation is something a shopper actually had with the shop: a call an operator
    answered (a missed, declined or abandoned call reached nobody, so it sold nothing), a chat
    in which the visitor wrote at least one message, or a message left in the offline form.
    Its time is when it began; it counts when that lies within `site.attribution_days`
    (default 7) before the order's `created_at`. The visitor is found by the order's visitor
    token first, else by e-mail (case-insensitive), else by phone (digits only); the first of
    these that finds any conversation decides, and within it the latest conversation wins.
    A manual attribution is never overwritten.
    """
    if order.attributed_by == AttributedBy.MANUAL:
        return Attribution.of(order)
    # The operator took this order in a conversation and wrote its number down: theirs, by hand.
    claimed = await claimed_by_operator(session, site.id, order)
    if claimed is not None:
        return await set_attribution(
            session, order, claimed.channel, claimed.conversation_id, claimed.updated_by
        )
    found = await find_conversation(
        session, site, order.created_at, order.visitor_token, order.email, order.phone
    )
    attribution = found or Attribution()
    order.channel = attribution.channel
    order.conversation_id = attribution.conversation_id
    order.attributed_by = attribution.attributed_by
    order.attributed_by_user_id = None
    return attribution


async def find_conversation(
    session: AsyncSession,
    site: Site,
    before: datetime,
    visitor_token: str | None,
    email: str | None,
    phone: str | None,
) -> Attribution | None:
    """The attribution `attribute_order` would store, without storing it."""
    before = before.astimezone(UTC)  # SQLite compares stored UTC times as text
    days = site.attribution_days if site.attribution_days is not None else DEFAULT_WINDOW_DAYS
    window = (before - timedelta(days=days), before)

    if visitor_token:
        visitors = select(Visitor.id).where(Visitor.site_id == site.id, Visitor.token == visitor_token)
        last = await _last_conversation(session, site.id, window, visitors.scalar_subquery(), None)
        if last:
            return Attribution(last.channel, last.id, AttributedBy.TOKEN)

    address = (email or "").strip().lower()
    if address:
        visitors = select(Visitor.id).where(Visitor.site_id == site.id, func.lower(Visitor.email) == address)
        last = await _last_conversation(
            session, site.id, window, visitors.scalar_subquery(), func.lower(LeftMessage.email) == address
        )
        if last:
            return Attribution(last.channel, last.id, AttributedBy.EMAIL)

    digits = phone_digits(phone)
    if len(digits) >= MIN_PHONE_DIGITS:
        # Digits only cannot be compared in portable SQL: narrow in SQL, compare here.
        rows = await session.execute(
            select(Visitor.id, Visitor.phone).where(Visitor.site_id == site.id, Visitor.phone.is_not(None))
        )
        visitor_ids = [row.id for row in rows if phone_digits(row.phone) == digits]
        rows = await session.execute(
            select(LeftMessage.id, LeftMessage.phone).where(
                LeftMessage.site_id == site.id,
                LeftMessage.phone.is_not(None),
                LeftMessage.created_at.between(*window),
            )
        )
        message_ids = [row.id for row in rows if phone_digits(row.phone) == digits]
        last = await _last_conversation(
            session, site.id, window, visitor_ids, LeftMessage.id.in_(message_ids) if message_ids else None
        )
        if last:
            return Attribution(last.channel, last.id, AttributedBy.PHONE)
    return None


async def _last_conversation(
    session: AsyncSession,
    site_id: int,
    window: tuple[datetime, datetime],
    visitor_ids: ScalarSelect[int] | list[int],
    left_message_match: ColumnElement[bool] | None,
) -> Conversation | None:
    """The latest conversation in the window of these visitors (or left messages matching)."""
    calls = select(Call.id, Call.created_at).where(
        Call.site_id == site_id,
        Call.visitor_id.in_(visitor_ids),
        Call.answered_at.is_not(None),
        Call.created_at.between(*window),
    )
    visitor_wrote = exists().where(ChatMessage.chat_id == Chat.id, ChatMessage.sender == "visitor")
    chats = select(Chat.id, Chat.created_at).where(
        Chat.site_id == site_id,
        Chat.visitor_id.in_(visitor_ids),
        visitor_wrote,
        Chat.created_at.between(*window),
    )
    by_visitor = LeftMessage.visitor_id.in_(visitor_ids)
    messages = select(LeftMessage.id, LeftMessage.created_at).where(
        LeftMessage.site_id == site_id,
        or_(by_visitor, left_message_match) if left_message_match is not None else by_visitor,
        LeftMessage.created_at.between(*window),
    )
    candidates: list[Conversation] = []
    for channel, query, started in (
        (Channel.CALL, calls, Call.created_at),
        (Channel.CHAT, chats, Chat.created_at),
        (Channel.MESSAGE, messages, LeftMessage.created_at),
    ):
        row = (await session.execute(query.order_by(started.desc()).limit(1))).first()
        if row is not None:
            candidates.append(Conversation(channel, row[0], row[1]))
    # On an exact tie the earlier channel in the list (call, chat, message) wins: max keeps the first.
    return max(candidates, key=lambda c: c.started_at, default=None)


async def conversation(
    session: AsyncSession, site_id: int, channel: Channel, conversation_id: str
) -> Conversation:
    """One of the site's conversations; raises NotFound when the site has no such one."""
    row: Call | Chat | LeftMessage | None
    if channel is Channel.CALL:
        row = await session.get(Call, conversation_id)
    elif channel is Channel.CHAT:
        row = await session.get(Chat, conversation_id)
    else:
        row = await session.get(LeftMessage, conversation_id)
    if row is None or row.site_id != site_id:
        raise NotFound(f"This site has no {channel.value} {conversation_id!r}.")
    return Conversation(channel, row.id, row.created_at)


async def set_attribution(
    session: AsyncSession,
    order: Order,
    channel: Channel | str | None,
    conversation_id: str | None,
    actor_id: int | None,
) -> Attribution:
    """Credit an order to a conversation by hand (or to none with `channel=None`); audited.

    Raises InvalidInput for an unknown channel or a channel without a conversation id, and
    NotFound when the order's site has no such conversation.
    """
    if channel is None:
        attribution = Attribution(None, None, AttributedBy.MANUAL)
    else:
        try:
            channel = Channel(channel)
        except ValueError as e:
            raise InvalidInput(f"Channel must be call, chat or message, not {channel!r}.") from e
        if not conversation_id:
            raise InvalidInput(f"Attributing an order to a {channel.value} needs the conversation's id.")
        found = await conversation(session, order.site_id, channel, conversation_id)
        attribution = Attribution(found.channel, found.id, AttributedBy.MANUAL)
    before = Attribution.of(order)
    order.channel = attribution.channel
    order.conversation_id = attribution.conversation_id
    order.attributed_by = attribution.attributed_by
    order.attributed_by_user_id = actor_id
    session.add(
        AuditEntry(
            at=datetime.now(UTC),
            site_id=order.site_id,
            actor_id=actor_id,
            action="order.attributed",
            detail={
                "order_id": order.order_id,
                "from": {"channel": before.channel, "conversation_id": before.conversation_id},
                "to": {"channel": attribution.channel, "conversation_id": attribution.conversation_id},
            },
        )
    )
    await session.flush()
    return attribution
