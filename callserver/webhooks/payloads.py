"""An event's `data`, as DESIGN names it: the call and the order exactly as the API serialises them.

The domain publishes the id of what changed; the body is rendered here, once, when the event is
queued, so every retry sends the same bytes. Chats and left messages have no API of their own
yet: their models are here, built from the same pieces as the call's (operator, visitor).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callserver import events
from callserver.calls.records import call_of_site
from callserver.errors import NotFound
from callserver.orders.intake import order_of_site
from callserver.store.models import Chat, ChatMessage, LeftMessage, Order, User, Visitor
from callserver.web.api import CallOut, OperatorOut, OrderOut, VisitorOut

JsonObject = dict[str, object]


class ChatLine(BaseModel):
    sender: str = Field(description="visitor, operator or system")
    text: str
    at: datetime
    operator: str | None = Field(description="The operator's name on their lines.")


class ChatOut(BaseModel):
    """A chat as `chat.closed` carries it: who, where from, and the whole conversation."""

    id: str
    state: str
    created_at: datetime
    closed_at: datetime | None
    call_id: str | None = Field(description="The call this chat fell back from.")
    operator: OperatorOut | None
    visitor: VisitorOut
    messages: list[ChatLine]


class LeftMessageOut(BaseModel):
    """A message left in the offline form, as `message.left` carries it."""

    id: str
    created_at: datetime
    name: str | None
    email: str | None
    phone: str | None
    text: str
    page: str | None
    call_id: str | None = Field(description="The call that nobody could take first.")
    visitor_token: str | None


def _operator(user: User | None) -> OperatorOut | None:
    return OperatorOut(id=user.id, name=user.name, email=user.email) if user else None


def _visitor(row: Visitor | None, page: str | None, context: Mapping[str, object]) -> VisitorOut:
    return VisitorOut(
        token=row.token if row else None,
        page=page,
        title=None,
        referrer=None,
        context=dict(context),
        country=row.country if row else None,
        device=row.device if row else None,
    )


async def _call(session: AsyncSession, site_id: int, call_id: str) -> JsonObject:
    call, orders = await call_of_site(session, site_id, call_id)
    return CallOut.of(call, orders).model_dump(mode="json")


async def _chat(session: AsyncSession, site_id: int, chat_id: str) -> JsonObject:
    chat = await session.get(Chat, chat_id)
    if chat is None or chat.site_id != site_id:
        raise NotFound(f"There is no chat {chat_id!r}.")
    lines = list(
        await session.execute(
            select(ChatMessage, User.name)
            .outerjoin(User, User.id == ChatMessage.operator_id)
            .where(ChatMessage.chat_id == chat_id)
            .order_by(ChatMessage.id)
        )
    )
    visitor = await session.get(Visitor, chat.visitor_id) if chat.visitor_id else None
    operator = await session.get(User, chat.operator_id) if chat.operator_id else None
    return ChatOut(
        id=chat.id,
        state=chat.state,
        created_at=chat.created_at,
        closed_at=chat.closed_at,
        call_id=chat.call_id,
        operator=_operator(operator),
        visitor=_visitor(visitor, chat.page, chat.context or {}),
        messages=[ChatLine(sender=m.sender, text=m.body, at=m.at, operator=name) for m, name in lines],
    ).model_dump(mode="json")


async def _left(session: AsyncSession, site_id: int, message_id: str) -> JsonObject:
    left = await session.get(LeftMessage, message_id)
    if left is None or left.site_id != site_id:
        raise NotFound(f"There is no left message {message_id!r}.")
    visitor = await session.get(Visitor, left.visitor_id) if left.visitor_id else None
    return LeftMessageOut(
        id=left.id,
        created_at=left.created_at,
        name=left.name,
        email=left.email,
        phone=left.phone,
        text=left.body,
        page=left.page,
        call_id=left.call_id,
        visitor_token=visitor.token if visitor else None,
    ).model_dump(mode="json")


async def _order(session: AsyncSession, site_id: int, order_id: str) -> JsonObject:
    order: Order = await order_of_site(session, site_id, order_id)
    return OrderOut.of(order).model_dump(mode="json")


# The events whose subject is a stored record: rendered from it. The others carry their data as given.
RENDERERS: Mapping[str, Callable[[AsyncSession, int, str], Awaitable[JsonObject]]] = {
    events.CALL_ENDED: _call,
    events.CHAT_CLOSED: _chat,
    events.MESSAGE_LEFT: _left,
    events.ORDER_ATTRIBUTED: _order,
}


async def event_data(
    session: AsyncSession, site_id: int, type: str, subject: Mapping[str, object]
) -> JsonObject:
    """The event's `data`: the record the subject names, serialised as the API does, or the subject."""
    render = RENDERERS.get(type)
    if render is None:
        return dict(subject)
    return await render(session, site_id, str(subject["id"]))
