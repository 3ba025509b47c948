"""Call records: written before a call is answered, updated at every step, never left open."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from callserver import events
from callserver.calls.states import CallState, EndReason
from callserver.errors import UnknownCall
from callserver.jsontypes import JsonObject
from callserver.orders.attribution import Channel
from callserver.orders.sources import touch_columns
from callserver.store.database import Database
from callserver.store.models import Base, Call, CallEvent, Order, Visitor

# Ids are uuid4().hex (`Call.id`: String(32)).
CALL_ID_LENGTH = 32


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class VisitorContext:
    """What the widget and the request say about the shopper who calls."""

    token: str
    page: str | None = None
    title: str | None = None
    referrer: str | None = None
    country: str | None = None
    device: str | None = None
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    extra: JsonObject = field(default_factory=dict)  # utm, search, cart value, product …

    def card(self) -> JsonObject:
        """What operators see of the visitor beside a ringing call or a chat."""
        return {
            "page": self.page,
            "title": self.title,
            "referrer": self.referrer,
            "visitor": {
                "token": self.token,
                "country": self.country,
                "device": self.device,
                "name": self.name,
                "email": self.email,
                "phone": self.phone,
            },
            "context": self.extra,
        }

    def touch_columns(self) -> dict[str, object]:
        """Where this visitor came from (first and last touch), as a conversation's columns store it."""
        touches = self.extra.get("touch")
        return touch_columns(touches if isinstance(touches, dict) else None)


async def visitor_row(session: AsyncSession, site_id: int, visitor: VisitorContext) -> Visitor:
    """The site's row for this visitor token (created on first contact), updated with what we learnt.

    Race-free: two sockets of a brand-new visitor may get here at once (a chat and a left message);
    the insert does nothing when the other one's row is there already, and both use that one row.
    """
    at = now()
    where = (Visitor.site_id == site_id, Visitor.token == visitor.token)
    row = await session.scalar(select(Visitor).where(*where))
    if row is None:
        await session.execute(
            insert_or_ignore(session, Visitor).values(
                site_id=site_id, token=visitor.token, created_at=at, last_seen_at=at, invitations=0
            )
        )
        row = await session.scalar(select(Visitor).where(*where).execution_options(populate_existing=True))
        assert row is not None, "the visitor row exists once inserted"
    row.last_seen_at = at
    for name in ("name", "email", "phone", "country", "device"):
        value = getattr(visitor, name)
        if value:
            setattr(row, name, value)
    await session.flush()
    return row


def insert_or_ignore(session: AsyncSession, table: type[Base]) -> postgresql.Insert | sqlite.Insert:
    """`INSERT … ON CONFLICT DO NOTHING` for this session's database (SQLite or PostgreSQL): a row
    another transaction inserted first is left as it is, instead of failing on the unique key."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    return insert(table).on_conflict_do_nothing()


class CallRecords:
    """Reads and writes call records; every method is one transaction."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def open(self, site_id: int, visitor: VisitorContext) -> str:
        """Write a new call in state `ringing` and return its id."""
        call_id = uuid.uuid4().hex
        at = now()
        async with self._db.session() as session:
            row = await visitor_row(session, site_id, visitor)
            session.add(
                Call(
                    id=call_id,
                    site_id=site_id,
                    visitor_id=row.id,
                    state=CallState.RINGING,
                    created_at=at,
                    page=visitor.page,
                    title=visitor.title,
                    referrer=visitor.referrer,
                    context=visitor.extra,
                    **visitor.touch_columns(),
                )
            )
            session.add(CallEvent(call_id=call_id, at=at, name=events.CALL_RINGING, detail={}))
        return call_id

    async def event(self, call_id: str, name: str, operator_id: int | None = None, **detail: object) -> None:
        async with self._db.session() as session:
            session.add(
                CallEvent(call_id=call_id, at=now(), name=name, operator_id=operator_id, detail=detail)
            )

    async def answered(self, call_id: str, operator_id: int) -> None:
        at = now()
        async with self._db.session() as session:
            await session.execute(
                update(Call)
                .where(Call.id == call_id)
                .values(state=CallState.ANSWERED, operator_id=operator_id, answered_at=at)
            )
            session.add(CallEvent(call_id=call_id, at=at, name=events.CALL_ANSWERED, operator_id=operator_id))

    async def transferred(self, call_id: str, from_operator_id: int, to_operator_id: int) -> None:
        """The call now belongs to `to_operator_id` (the first operator's leg was replaced)."""
        async with self._db.session() as session:
            await session.execute(update(Call).where(Call.id == call_id).values(operator_id=to_operator_id))
            session.add(
                CallEvent(
                    call_id=call_id,
                    at=now(),
                    name=events.CALL_TRANSFERRED,
                    operator_id=to_operator_id,
                    detail={"from_operator": from_operator_id},
                )
            )

    async def ended(
        self, call_id: str, reason: EndReason, quality: dict[str, object] | None = None, **detail: object
    ) -> None:
        at = now()
        async with self._db.session() as session:
            await session.execute(
                update(Call)
                .where(Call.id == call_id, Call.state != CallState.ENDED)
                .values(state=CallState.ENDED, end_reason=reason, ended_at=at, quality=quality)
            )
            session.add(
                CallEvent(call_id=call_id, at=at, name=events.CALL_ENDED, detail={"reason": reason, **detail})
            )

    async def end_leftovers(self, sink: events.EventSink | None = None) -> int:
        """End as `dropped` every call a previous run left ringing or answered; returns how many.

        Each is published as `call.ended` to `sink`, as a call that ends while the server runs is.
        """
        at = now()
        async with self._db.session() as session:
            left = list(
                await session.execute(
                    select(Call.id, Call.site_id).where(
                        Call.state.in_([CallState.RINGING, CallState.ANSWERED])
                    )
                )
            )
            ids = [call_id for call_id, _site_id in left]
            if not ids:
                return 0
            await session.execute(
                update(Call)
                .where(Call.id.in_(ids))
                .values(state=CallState.ENDED, end_reason=EndReason.DROPPED, ended_at=at)
            )
            session.add_all(
                CallEvent(call_id=i, at=at, name=events.CALL_ENDED, detail={"reason": EndReason.DROPPED})
                for i in ids
            )
        # Published once the calls are stored as ended: the webhook's data is the call as the API reads it.
        for call_id, site_id in left:
            await (sink or events.NoEvents()).publish(site_id, events.CALL_ENDED, {"id": call_id})
        return len(ids)

    async def get(self, call_id: str) -> Call | None:
        async with self._db.session() as session:
            return await session.get(Call, call_id)


# ---- reading a site's calls (the calls API) ----


@dataclass(frozen=True)
class CallFilter:
    """Which of a site's calls to list; None: any."""

    state: CallState | None = None
    end_reason: EndReason | None = None
    since: datetime | None = None  # created at or after
    until: datetime | None = None  # created before


@dataclass(frozen=True)
class Keyset:
    """Where a page of calls ends: the (created_at, id) of its last call."""

    created_at: datetime
    id: str


@dataclass(frozen=True)
class CallsPage:
    """Calls newest first, the orders attributed to each, and where the next page starts (None: last)."""

    calls: list[Call]
    orders: dict[str, list[Order]]
    next: Keyset | None


async def orders_of_calls(session: AsyncSession, site_id: int, call_ids: list[str]) -> dict[str, list[Order]]:
    """The orders attributed to each of these calls, oldest first."""
    linked: dict[str, list[Order]] = {call_id: [] for call_id in call_ids}
    if call_ids:
        orders = await session.scalars(
            select(Order)
            .where(
                Order.site_id == site_id,
                Order.channel == Channel.CALL.value,
                Order.conversation_id.in_(call_ids),
            )
            .order_by(Order.created_at)
        )
        for order in orders:
            linked[order.conversation_id or ""].append(order)
    return linked


async def calls_of_site(
    session: AsyncSession, site_id: int, filters: CallFilter, after: Keyset | None, limit: int
) -> CallsPage:
    """One page of the site's calls, newest first, after `after` (keyset pagination: stable while new
    calls arrive, and as fast on page 1000 as on page 1)."""
    statement = select(Call).where(Call.site_id == site_id)
    if filters.state:
        statement = statement.where(Call.state == filters.state.value)
    if filters.end_reason:
        statement = statement.where(Call.end_reason == filters.end_reason.value)
    if filters.since:
        statement = statement.where(Call.created_at >= filters.since)
    if filters.until:
        statement = statement.where(Call.created_at < filters.until)
    if after:
        statement = statement.where(
            or_(
                Call.created_at < after.created_at,
                and_(Call.created_at == after.created_at, Call.id < after.id),
            )
        )
    statement = statement.order_by(Call.created_at.desc(), Call.id.desc()).limit(limit + 1)
    calls = list(await session.scalars(statement))
    more = len(calls) > limit
    calls = calls[:limit]
    return CallsPage(
        calls=calls,
        orders=await orders_of_calls(session, site_id, [c.id for c in calls]),
        next=Keyset(calls[-1].created_at, calls[-1].id) if more else None,
    )


async def call_of_site(session: AsyncSession, site_id: int, call_id: str) -> tuple[Call, list[Order]]:
    """The site's call with this id and its orders; raises UnknownCall (another site's call too)."""
    # No stored id is longer or holds a NUL (which PostgreSQL would refuse to compare).
    plausible = len(call_id) <= CALL_ID_LENGTH and "\x00" not in call_id
    call = await session.get(Call, call_id) if plausible else None
    if call is None or call.site_id != site_id:
        raise UnknownCall(f"This site has no call {call_id[:100]!r}.")
    return call, (await orders_of_calls(session, site_id, [call.id]))[call.id]
