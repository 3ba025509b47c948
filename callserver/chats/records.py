"""Chat records: conversations, their messages, left messages and canned replies; one transaction each."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from callserver.calls.records import VisitorContext, visitor_row
from callserver.chats.models import CannedReply
from callserver.jsontypes import JsonObject
from callserver.store.database import Database
from callserver.store.models import Call, Chat, ChatMessage, LeftMessage, Site, User, Visitor
from callserver.wire import outbound as wire
from callserver.wire.vocabulary import MessageStatus


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class StoredMessage:
    """One chat message as it was written, with its delivery state."""

    id: int
    chat_id: str
    sender: str  # visitor, operator, system
    body: str
    at: datetime
    operator_name: str | None = None
    delivered: bool = False
    read: bool = False

    def wire(self) -> wire.Message:
        status = (
            MessageStatus.READ
            if self.read
            else MessageStatus.DELIVERED
            if self.delivered
            else MessageStatus.SENT
        )
        return wire.Message(
            self.id, self.chat_id, self.sender, self.body, self.at.isoformat(), status, self.operator_name
        )


@dataclass(frozen=True)
class OpenChat:
    """A chat a previous page (or a previous run of the server) left waiting or open."""

    id: str
    state: str
    operator_id: int | None
    call_id: str | None
    page: str | None
    context: JsonObject
    created_at: datetime


@dataclass(frozen=True)
class Left:
    """A message left in the offline form."""

    id: str
    site_id: int
    site_name: str
    created_at: datetime
    name: str | None
    email: str | None
    phone: str | None
    body: str
    page: str | None
    call_id: str | None
    status: str
    mailed: bool
    mail: MailState | None = None  # None: no mail goes out for it (no notification address or SMTP)

    def wire(self) -> wire.LeftMessage:
        return wire.LeftMessage(
            id=self.id,
            site=self.site_name,
            site_id=self.site_id,
            at=self.created_at.isoformat(),
            name=self.name,
            email=self.email,
            phone=self.phone,
            text=self.body,
            page=self.page,
            call_id=self.call_id,
            status=self.status,
            mailed=self.mailed,
            mail=self.mail.wire() if self.mail else None,
        )


@dataclass(frozen=True)
class MailState:
    """Where the mail of a left message is: `pending`, `sent`, `retrying` or `failed` (given up)."""

    state: str
    attempts: int = 0
    error: str | None = None
    next_at: datetime | None = None

    def wire(self) -> wire.MailState:
        return wire.MailState(
            self.state, self.attempts, self.error, self.next_at.isoformat() if self.next_at else None
        )


@dataclass(frozen=True)
class MailJob:
    """A left message claimed for one mail attempt, with what the mail needs."""

    left: Left
    notify_email: str | None
    attempts: int  # tries before this one


@dataclass(frozen=True)
class Canned:
    id: int
    site_id: int | None
    title: str
    body: str

    def wire(self) -> wire.CannedReply:
        return wire.CannedReply(self.id, self.site_id, self.title, self.body)


def _message(row: ChatMessage, names: dict[int, str]) -> StoredMessage:
    return StoredMessage(
        id=row.id,
        chat_id=row.chat_id,
        sender=row.sender,
        body=row.body,
        at=row.at,
        operator_name=names.get(row.operator_id) if row.operator_id else None,
        delivered=row.delivered_at is not None,
        read=row.read_at is not None,
    )


MAIL_TO_TRY = ("pending", "retrying")


def _left(row: LeftMessage, site_name: str) -> Left:
    mail = (
        MailState(row.mail_state, row.mail_attempts, row.mail_error, row.mail_next_at)
        if row.mail_state
        else None
    )
    return Left(
        row.id,
        row.site_id,
        site_name,
        row.created_at,
        row.name,
        row.email,
        row.phone,
        row.body,
        row.page,
        row.call_id,
        row.status,
        row.mailed_at is not None,
        mail,
    )


def _display_name(user: User) -> str:
    return user.name or user.email.split("@", 1)[0]


class ChatRecords:
    """Reads and writes the chat tables; every method is one transaction."""

    def __init__(self, database: Database) -> None:
        self._db = database

    # Chats ---------------------------------------------------------------------------------------

    async def open(
        self, site_id: int, visitor: VisitorContext, call_id: str | None, context: JsonObject
    ) -> tuple[str, str | None]:
        """Write a new chat in state `waiting`; returns its id and the call it continues (if theirs)."""
        chat_id = uuid.uuid4().hex
        async with self._db.session() as session:
            row = await visitor_row(session, site_id, visitor)
            call_id = await _visitors_call(session, site_id, row.id, call_id)
            session.add(
                Chat(
                    id=chat_id,
                    site_id=site_id,
                    visitor_id=row.id,
                    call_id=call_id,
                    state="waiting",
                    created_at=now(),
                    page=visitor.page,
                    context=context,
                    **visitor.touch_columns(),
                )
            )
        return chat_id, call_id

    async def find_open(self, site_id: int, token: str) -> OpenChat | None:
        async with self._db.session() as session:
            row = await session.scalar(
                select(Chat)
                .join(Visitor, Visitor.id == Chat.visitor_id)
                .where(Visitor.site_id == site_id, Visitor.token == token, Chat.state != "closed")
                .order_by(Chat.created_at.desc())
                .limit(1)
            )
            if row is None:
                return None
            return OpenChat(
                row.id, row.state, row.operator_id, row.call_id, row.page, dict(row.context), row.created_at
            )

    async def assign(self, chat_id: str, operator_id: int | None) -> None:
        """Give the chat to an operator (state `open`), or put it back in the queue (None: `waiting`)."""
        state = "open" if operator_id is not None else "waiting"
        async with self._db.session() as session:
            await session.execute(
                update(Chat).where(Chat.id == chat_id).values(state=state, operator_id=operator_id)
            )

    async def close(self, chat_id: str) -> None:
        async with self._db.session() as session:
            await session.execute(
                update(Chat)
                .where(Chat.id == chat_id, Chat.state != "closed")
                .values(state="closed", closed_at=now())
            )

    # Messages ------------------------------------------------------------------------------------

    async def add_message(
        self,
        chat_id: str,
        sender: str,
        body: str,
        operator_id: int | None = None,
        operator_name: str | None = None,
    ) -> StoredMessage:
        at = now()
        async with self._db.session() as session:
            row = ChatMessage(chat_id=chat_id, at=at, sender=sender, operator_id=operator_id, body=body)
            session.add(row)
            await session.flush()
            return StoredMessage(row.id, chat_id, sender, body, at, operator_name)

    async def messages(self, chat_id: str) -> list[StoredMessage]:
        async with self._db.session() as session:
            rows = list(
                await session.scalars(
                    select(ChatMessage).where(ChatMessage.chat_id == chat_id).order_by(ChatMessage.id)
                )
            )
            ids = {r.operator_id for r in rows if r.operator_id}
            names = {}
            if ids:
                names = {
                    u.id: _display_name(u)
                    for u in await session.scalars(select(User).where(User.id.in_(ids)))
                }
            return [_message(r, names) for r in rows]

    async def delivered(self, chat_id: str, senders: tuple[str, ...]) -> list[int]:
        """Mark what `senders` wrote in the chat as delivered; returns the ids that changed."""
        return await self._mark(chat_id, senders, ChatMessage.delivered_at, None)

    async def read(self, chat_id: str, senders: tuple[str, ...], up_to: int) -> list[int]:
        """Mark what `senders` wrote up to message `up_to` as read (and delivered); returns the ids."""
        await self._mark(chat_id, senders, ChatMessage.delivered_at, up_to)
        return await self._mark(chat_id, senders, ChatMessage.read_at, up_to)

    async def _mark(
        self,
        chat_id: str,
        senders: tuple[str, ...],
        column: InstrumentedAttribute[datetime | None],
        up_to: int | None,
    ) -> list[int]:
        where = [ChatMessage.chat_id == chat_id, ChatMessage.sender.in_(senders), column.is_(None)]
        if up_to is not None:
            where.append(ChatMessage.id <= up_to)
        async with self._db.session() as session:
            ids = list(await session.scalars(select(ChatMessage.id).where(*where)))
            if ids:
                await session.execute(
                    update(ChatMessage).where(ChatMessage.id.in_(ids)).values({column.key: now()})
                )
            return ids

    # Left messages -------------------------------------------------------------------------------

    async def leave_message(
        self,
        site_id: int,
        site_name: str,
        visitor: VisitorContext,
        name: str | None,
        email: str | None,
        phone: str | None,
        body: str,
        call_id: str | None,
        mail: bool = False,
    ) -> Left:
        """Store what the shopper left in the offline form; with `mail`, its mail is due at once."""
        message_id = uuid.uuid4().hex
        at = now()
        mail_state = MailState("pending", next_at=at) if mail else None
        async with self._db.session() as session:
            row = await visitor_row(session, site_id, visitor)
            call_id = await _visitors_call(session, site_id, row.id, call_id)
            session.add(
                LeftMessage(
                    id=message_id,
                    site_id=site_id,
                    visitor_id=row.id,
                    call_id=call_id,
                    created_at=at,
                    name=name,
                    email=email,
                    phone=phone,
                    body=body,
                    status="new",
                    page=visitor.page,
                    mail_state=mail_state.state if mail_state else None,
                    mail_attempts=0,
                    mail_next_at=at if mail_state else None,
                    **visitor.touch_columns(),
                )
            )
        return Left(
            message_id,
            site_id,
            site_name,
            at,
            name,
            email,
            phone,
            body,
            visitor.page,
            call_id,
            "new",
            False,
            mail_state,
        )

    async def mail_due(self, at: datetime, limit: int = 20) -> list[str]:
        """Ids of left messages whose mail should be tried by `at`, oldest first."""
        async with self._db.session() as session:
            return list(
                await session.scalars(
                    select(LeftMessage.id)
                    .where(LeftMessage.mail_state.in_(MAIL_TO_TRY), LeftMessage.mail_next_at <= at)
                    .order_by(LeftMessage.mail_next_at)
                    .limit(limit)
                )
            )

    async def next_mail_at(self) -> datetime | None:
        """When the next mail try is due (None: nothing to try)."""
        async with self._db.session() as session:
            due: datetime | None = await session.scalar(
                select(func.min(LeftMessage.mail_next_at)).where(LeftMessage.mail_state.in_(MAIL_TO_TRY))
            )
            return due

    async def claim_mail(self, message_id: str, at: datetime, until: datetime) -> MailJob | None:
        """Take a due mail for one try: it is not due again before `until` (None: not due, or taken).

        The claim is one conditional UPDATE, so of two processes sharing the database only one sends it.
        """
        async with self._db.session() as session:
            result = await session.execute(
                update(LeftMessage)
                .where(
                    LeftMessage.id == message_id,
                    LeftMessage.mail_state.in_(MAIL_TO_TRY),
                    LeftMessage.mail_next_at <= at,
                )
                .values(mail_next_at=until)
            )
            if not getattr(result, "rowcount", 0):
                return None
            found = (
                await session.execute(
                    select(LeftMessage, Site.name, Site.notify_email)
                    .join(Site, Site.id == LeftMessage.site_id)
                    .where(LeftMessage.id == message_id)
                )
            ).one()
            row, site_name, notify_email = found
            return MailJob(_left(row, site_name), notify_email, row.mail_attempts)

    async def mail_sent(self, message_id: str) -> Left | None:
        return await self._mail_outcome(
            message_id, mail_state="sent", mailed_at=now(), mail_error=None, mail_next_at=None
        )

    async def mail_failed(self, message_id: str, error: str, retry_at: datetime | None) -> Left | None:
        """Record a failed try: `retrying` at `retry_at`, or `failed` (given up) when it is None."""
        return await self._mail_outcome(
            message_id,
            mail_state="retrying" if retry_at else "failed",
            mail_error=error[:1000],
            mail_next_at=retry_at,
        )

    async def _mail_outcome(self, message_id: str, **values: object) -> Left | None:
        async with self._db.session() as session:
            await session.execute(
                update(LeftMessage)
                .where(LeftMessage.id == message_id)
                .values(mail_attempts=LeftMessage.mail_attempts + 1, **values)
            )
            found = (
                await session.execute(
                    select(LeftMessage, Site.name)
                    .join(Site, Site.id == LeftMessage.site_id)
                    .where(LeftMessage.id == message_id)
                )
            ).one_or_none()
            return _left(found[0], found[1]) if found else None

    async def handled(self, message_id: str, site_ids: tuple[int, ...]) -> bool:
        """Mark a left message as handled; `site_ids` empty means every site. False if not found."""
        async with self._db.session() as session:
            query = update(LeftMessage).where(LeftMessage.id == message_id)
            if site_ids:
                query = query.where(LeftMessage.site_id.in_(site_ids))
            result = await session.execute(query.values(status="handled"))
            return bool(getattr(result, "rowcount", 0))

    async def left_messages(self, site_ids: tuple[int, ...], limit: int = 50) -> list[Left]:
        """The newest messages still `new`, for the given sites (empty: every site)."""
        async with self._db.session() as session:
            query = (
                select(LeftMessage, Site.name)
                .join(Site, Site.id == LeftMessage.site_id)
                .where(LeftMessage.status == "new")
                .order_by(LeftMessage.created_at.desc())
                .limit(limit)
            )
            if site_ids:
                query = query.where(LeftMessage.site_id.in_(site_ids))
            return [_left(m, site_name) for m, site_name in (await session.execute(query)).all()]

    # Canned replies ------------------------------------------------------------------------------

    async def canned(self, site_ids: tuple[int, ...]) -> list[Canned]:
        async with self._db.session() as session:
            query = select(CannedReply).order_by(CannedReply.title, CannedReply.id)
            if site_ids:
                query = query.where(or_(CannedReply.site_id.is_(None), CannedReply.site_id.in_(site_ids)))
            return [Canned(r.id, r.site_id, r.title, r.body) for r in await session.scalars(query)]

    async def add_canned(self, site_id: int | None, title: str, body: str) -> Canned:
        async with self._db.session() as session:
            row = CannedReply(site_id=site_id, title=title, body=body, created_at=now())
            session.add(row)
            await session.flush()
            return Canned(row.id, row.site_id, row.title, row.body)

    async def remove_canned(self, reply_id: int, site_ids: tuple[int, ...]) -> bool:
        async with self._db.session() as session:
            query = delete(CannedReply).where(CannedReply.id == reply_id)
            if site_ids:
                query = query.where(CannedReply.site_id.in_(site_ids))
            result = await session.execute(query)
            return bool(getattr(result, "rowcount", 0))


async def _visitors_call(
    session: AsyncSession, site_id: int, visitor_id: int, call_id: str | None
) -> str | None:
    """`call_id` if it is a call of this visitor on this site, else None (the id comes from the page)."""
    if call_id is None:
        return None
    call = await session.get(Call, call_id)
    return call_id if call is not None and call.site_id == site_id and call.visitor_id == visitor_id else None
