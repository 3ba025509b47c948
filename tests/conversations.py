"""Visitors, calls, chats and left messages written straight into the store, for order attribution tests."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from callserver.store.models import Call, Chat, ChatMessage, LeftMessage, Visitor


def new_id() -> str:
    return uuid.uuid4().hex


async def add_visitor(
    session: AsyncSession, site_id: int, token: str, email: str | None = None, phone: str | None = None
) -> Visitor:
    at = datetime.now().astimezone()
    visitor = Visitor(
        site_id=site_id, token=token, email=email, phone=phone, created_at=at, last_seen_at=at, country="DE"
    )
    session.add(visitor)
    await session.flush()
    return visitor


async def add_call(
    session: AsyncSession,
    site_id: int,
    visitor: Visitor | None,
    at: datetime,
    answered: bool = True,
    operator_id: int | None = None,
    **fields: Any,
) -> Call:
    """An ended call: completed after 20 s of ringing and 2 minutes of talk, or missed after 30 s."""
    call = Call(
        id=new_id(),
        site_id=site_id,
        visitor_id=visitor.id if visitor else None,
        state="ended",
        end_reason="completed" if answered else "missed",
        operator_id=operator_id if answered else None,
        created_at=at,
        answered_at=at + timedelta(seconds=20) if answered else None,
        ended_at=at + timedelta(seconds=140) if answered else at + timedelta(seconds=30),
        **fields,
    )
    session.add(call)
    await session.flush()
    return call


async def add_chat(
    session: AsyncSession, site_id: int, visitor: Visitor | None, at: datetime, visitor_wrote: bool = True
) -> Chat:
    chat = Chat(
        id=new_id(),
        site_id=site_id,
        visitor_id=visitor.id if visitor else None,
        state="closed",
        created_at=at,
    )
    session.add(chat)
    await session.flush()
    session.add(ChatMessage(chat_id=chat.id, at=at, sender="operator", body="Hello, how can I help?"))
    if visitor_wrote:
        session.add(ChatMessage(chat_id=chat.id, at=at, sender="visitor", body="Is the blue one in stock?"))
    await session.flush()
    return chat


async def add_left_message(
    session: AsyncSession,
    site_id: int,
    at: datetime,
    visitor: Visitor | None = None,
    email: str | None = None,
    phone: str | None = None,
) -> LeftMessage:
    message = LeftMessage(
        id=new_id(),
        site_id=site_id,
        visitor_id=visitor.id if visitor else None,
        created_at=at,
        email=email,
        phone=phone,
        body="Please call me back about the sofa.",
    )
    session.add(message)
    await session.flush()
    return message
