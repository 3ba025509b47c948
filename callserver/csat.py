"""Satisfaction (CSAT): the shopper's "how was it?" after a call or chat, asked once per conversation.

A conversation worth asking about is a call an operator answered or a chat an operator took. The
answer (1–5 and an optional comment) or a dismissal is stored with the conversation, so it is never
asked again — not on the next page, not in another tab; `csat.received` goes to the shop's webhooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callserver.errors import CallserverError, NotFound
from callserver.events import CSAT_RECEIVED, EventSink, NoEvents
from callserver.store.database import Database
from callserver.store.models import Call, Chat, ConversationOutcome, User, Visitor

MAX_COMMENT = 1000
# A conversation that ended longer ago than this is not asked about on a new page any more.
ASK_AGAIN_WITHIN = timedelta(minutes=30)


class BadScore(CallserverError):
    code = "bad_score"


class NotYourConversation(CallserverError):
    code = "not_your_conversation"


class AlreadyRated(CallserverError):
    code = "already_rated"


@dataclass(frozen=True)
class Ask:
    """The question to put to a shopper about one of their conversations."""

    conversation_id: str
    channel: str  # call, chat
    operator_name: str | None


async def conversation_of(
    session: AsyncSession, site_id: int | None, conversation_id: str
) -> tuple[str, Call | Chat]:
    """The call or chat with this id (of this site, when one is given), and which it is; else NotFound."""
    call = await session.get(Call, conversation_id)
    if call is not None and site_id in (None, call.site_id):
        return "call", call
    chat = await session.get(Chat, conversation_id)
    if chat is not None and site_id in (None, chat.site_id):
        return "chat", chat
    raise NotFound(f"There is no call or chat {conversation_id!r}.")


async def outcome_of(
    session: AsyncSession, site_id: int, channel: str, conversation_id: str
) -> ConversationOutcome:
    """The conversation's outcome row, made (unsaved fields empty) when it has none yet."""
    outcome = await session.get(ConversationOutcome, conversation_id)
    if outcome is None:
        outcome = ConversationOutcome(conversation_id=conversation_id, site_id=site_id, channel=channel)
        session.add(outcome)
    return outcome


class Satisfaction:
    """Takes shoppers' ratings and dismissals, and tells which conversation still waits for one."""

    def __init__(self, db: Database, sink: EventSink | None = None) -> None:
        self._db = db
        self._sink = sink or NoEvents()

    async def rate(
        self, site_id: int, visitor_token: str, conversation_id: str, score: int, comment: str | None
    ) -> None:
        """Store the shopper's rating of their own conversation; publishes `csat.received`."""
        if not 1 <= score <= 5:
            raise BadScore(f"A rating is 1 to 5, not {score}.")
        comment = (comment or "").strip()[:MAX_COMMENT] or None
        async with self._db.session() as session:
            channel, _ = await self._own(session, site_id, visitor_token, conversation_id)
            outcome = await outcome_of(session, site_id, channel, conversation_id)
            if outcome.csat_score is not None:
                raise AlreadyRated("This conversation has been rated already.")
            outcome.csat_score = score
            outcome.csat_comment = comment
            outcome.csat_at = datetime.now(UTC)
        data = {"conversation_id": conversation_id, "channel": channel, "score": score, "comment": comment}
        await self._sink.publish(site_id, CSAT_RECEIVED, data)

    async def dismiss(self, site_id: int, visitor_token: str, conversation_id: str) -> None:
        """The shopper closed the question unanswered: it is not asked again for this conversation."""
        async with self._db.session() as session:
            channel, _ = await self._own(session, site_id, visitor_token, conversation_id)
            outcome = await outcome_of(session, site_id, channel, conversation_id)
            if outcome.csat_score is None and outcome.csat_dismissed_at is None:
                outcome.csat_dismissed_at = datetime.now(UTC)

    async def pending(self, site_id: int, visitor_token: str) -> Ask | None:
        """The visitor's latest conversation, ended a moment ago, neither rated nor dismissed."""
        since = datetime.now(UTC) - ASK_AGAIN_WITHIN
        async with self._db.session() as session:
            visitor = select(Visitor.id).where(Visitor.site_id == site_id, Visitor.token == visitor_token)
            call = (
                await session.execute(
                    select(Call)
                    .where(
                        Call.site_id == site_id,
                        Call.visitor_id.in_(visitor.scalar_subquery()),
                        Call.answered_at.is_not(None),
                        Call.ended_at >= since,
                    )
                    .order_by(Call.ended_at.desc())
                    .limit(1)
                )
            ).scalar_one_or_none()
            chat = (
                await session.execute(
                    select(Chat)
                    .where(
                        Chat.site_id == site_id,
                        Chat.visitor_id.in_(visitor.scalar_subquery()),
                        Chat.operator_id.is_not(None),
                        Chat.state == "closed",
                        Chat.closed_at >= since,
                    )
                    .order_by(Chat.closed_at.desc())
                    .limit(1)
                )
            ).scalar_one_or_none()
            latest: tuple[str, Call | Chat, datetime] | None = None
            if call is not None and call.ended_at is not None:
                latest = ("call", call, call.ended_at)
            if (
                chat is not None
                and chat.closed_at is not None
                and (latest is None or chat.closed_at > latest[2])
            ):
                latest = ("chat", chat, chat.closed_at)
            if latest is None:
                return None
            channel, row, _ = latest
            outcome = await session.get(ConversationOutcome, row.id)
            if outcome is not None and (
                outcome.csat_score is not None or outcome.csat_dismissed_at is not None
            ):
                return None
            name = None
            if row.operator_id is not None:
                user = await session.get(User, row.operator_id)
                name = (user.name or None) if user is not None else None
            return Ask(row.id, channel, name)

    async def _own(
        self, session: AsyncSession, site_id: int, visitor_token: str, conversation_id: str
    ) -> tuple[str, Call | Chat]:
        channel, row = await conversation_of(session, site_id, conversation_id)
        owner = await session.get(Visitor, row.visitor_id) if row.visitor_id is not None else None
        if owner is None or owner.token != visitor_token:
            raise NotYourConversation("That conversation is another visitor's.")
        return channel, row
