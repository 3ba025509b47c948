"""Call me back, and calling the visitor: what happens when nobody could answer, and after.

A shopper who could not get through leaves a phone number (and when suits them): the request is
stored, shown on the site's softphones (`callback.new`), mailed to the site (retried like a left
message's mail, see `callserver/chats/left_mail.py`) and published as `callback.requested`; an
operator records its outcome (`reached`, `no_answer`, `wrong_number`).

An operator may also ring a visitor who is on the site now (from a request or the visitors board):
the ring reaches the widget on its invitation stream, the widget shows an incoming call, and its
Answer sends an ordinary `call.offer` that names the ring — that call rings only that operator, whose
softphone takes it at once. A Decline, or no answer within `VISITOR_RING` seconds, tells the operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from sqlalchemy import func, select, update

from callserver import events
from callserver.accounts import Account
from callserver.background import BackgroundTasks
from callserver.chats.channels import to_seats
from callserver.chats.errors import RateLimited
from callserver.chats.left_mail import CLAIM, IDLE_LOOK, RETRY_STEPS, Outbox
from callserver.clock import Clock, Timer
from callserver.errors import CallserverError, InvalidInput, NotFound
from callserver.limits import RateLimiter
from callserver.mail import Mail
from callserver.operators.roster import Roster
from callserver.sites import Site, SiteDirectory
from callserver.store.database import Database
from callserver.store.models import CallbackRequest, User
from callserver.store.models import Site as SiteRow
from callserver.visitors.board import VisitorBoard
from callserver.visitors.invitations import Invitations, VisitorGone, VisitorUnreachable
from callserver.wire import outbound as wire

log = logging.getLogger(__name__)

Outcome = Literal["reached", "no_answer", "wrong_number"]
OUTCOMES: tuple[Outcome, ...] = ("reached", "no_answer", "wrong_number")
# A phone number as people write it: digits with spaces, dots, dashes, brackets, a leading +.
PHONE = re.compile(r"^\+?[0-9 ().\-/]{5,30}$")
MAX_WHEN = 200
# A visitor's page rings this long before the operator is told "no answer".
VISITOR_RING = 30.0
# Requests per visitor: three at once, then one a minute. Rings per operator: three, then one per 10 s;
# per visitor: two, then one a minute (a shopper is not pestered).
REQUESTS_BURST, REQUESTS_RATE = 3.0, 1 / 60
RINGS_BURST, RINGS_RATE = 3.0, 0.1
RINGS_PER_VISITOR_BURST, RINGS_PER_VISITOR_RATE = 2.0, 1 / 60


class BadPhone(CallserverError):
    code = "bad_phone"


class CallbacksOff(CallserverError):
    code = "callbacks_off"


class UnknownCallback(NotFound):
    code = "unknown_callback"


class OperatorBusy(CallserverError):
    code = "operator_busy"


class AlreadyRinging(CallserverError):
    code = "already_ringing"


class NoVisitorCall(CallserverError):
    code = "no_visitor_call"


def phone_number(value: str) -> str:
    """The number as given, trimmed; BadPhone unless it looks like one (5–20 digits)."""
    phone = value.strip()
    digits = sum(c.isdigit() for c in phone)
    if not PHONE.match(phone) or not 5 <= digits <= 20:
        raise BadPhone(f"{phone[:40]!r} is not a phone number: digits, spaces and + ( ) - . / only.")
    return phone


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Callback:
    """One request as softphones, the dashboard and mail see it."""

    id: str
    site_id: int
    site_name: str
    created_at: datetime
    phone: str
    when: str | None
    page: str | None
    visitor_token: str | None
    outcome: str | None
    handled_by: str | None
    handled_at: datetime | None
    mail_state: str | None

    def wire(self, on_site: bool = False) -> wire.CallbackEntry:
        return wire.CallbackEntry(
            id=self.id,
            site=self.site_name,
            site_id=self.site_id,
            at=self.created_at.isoformat(),
            phone=self.phone,
            when=self.when,
            page=self.page,
            visitor_id=self.visitor_token,
            on_site=on_site,
            outcome=self.outcome,
            handled_by=self.handled_by,
        )


def _callback(row: CallbackRequest, site_name: str, handler: str | None) -> Callback:
    return Callback(
        id=row.id,
        site_id=row.site_id,
        site_name=site_name,
        created_at=row.created_at,
        phone=row.phone,
        when=row.preferred_time,
        page=row.page,
        visitor_token=row.visitor_token,
        outcome=row.outcome,
        handled_by=handler,
        handled_at=row.handled_at,
        mail_state=row.mail_state,
    )


def callback_mail(callback: Callback, to: str) -> Mail:
    """The mail that asks the site to call a shopper back."""
    lines = [
        f"A visitor on {callback.site_name} asks to be called back.",
        "",
        f"Phone: {callback.phone}",
        f"When: {callback.when or 'any time'}",
        f"Page: {callback.page or '-'}",
    ]
    return Mail(to=to, subject=f"Call back {callback.phone} ({callback.site_name})", body="\n".join(lines))


MAIL_TO_TRY = ("pending", "retrying")


class CallbackRecords:
    """The stored requests, their outcome and their mail."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def add(
        self, site: Site, token: str, phone: str, when: str | None, page: str | None, mail: bool
    ) -> Callback:
        row = CallbackRequest(
            id=uuid.uuid4().hex,
            site_id=site.id,
            visitor_token=token,
            created_at=now(),
            phone=phone,
            preferred_time=when,
            page=page,
            mail_state="pending" if mail else None,
            mail_attempts=0,
            mail_next_at=now() if mail else None,
        )
        async with self._db.session() as session:
            session.add(row)
        return _callback(row, site.name, None)

    async def listed(
        self, site_ids: tuple[int, ...], open_only: bool = True, limit: int = 200
    ) -> list[Callback]:
        """Requests of these sites (empty: every site), newest first; only those without an outcome."""
        query = (
            select(CallbackRequest, SiteRow.name, User.name, User.email)
            .join(SiteRow, SiteRow.id == CallbackRequest.site_id)
            .outerjoin(User, User.id == CallbackRequest.handled_by)
            .order_by(CallbackRequest.created_at.desc())
            .limit(limit)
        )
        if site_ids:
            query = query.where(CallbackRequest.site_id.in_(site_ids))
        if open_only:
            query = query.where(CallbackRequest.outcome.is_(None))
        async with self._db.session() as session:
            rows = (await session.execute(query)).all()
        return [_callback(row, site, (name or email) if email else None) for row, site, name, email in rows]

    async def get(self, callback_id: str, site_ids: tuple[int, ...]) -> Callback | None:
        query = (
            select(CallbackRequest, SiteRow.name, User.name, User.email)
            .join(SiteRow, SiteRow.id == CallbackRequest.site_id)
            .outerjoin(User, User.id == CallbackRequest.handled_by)
            .where(CallbackRequest.id == callback_id)
        )
        if site_ids:
            query = query.where(CallbackRequest.site_id.in_(site_ids))
        async with self._db.session() as session:
            found = (await session.execute(query)).one_or_none()
        if found is None:
            return None
        row, site, name, email = found
        return _callback(row, site, (name or email) if email else None)

    async def done(self, callback_id: str, site_ids: tuple[int, ...], outcome: str, user_id: int) -> bool:
        query = update(CallbackRequest).where(CallbackRequest.id == callback_id)
        if site_ids:
            query = query.where(CallbackRequest.site_id.in_(site_ids))
        async with self._db.session() as session:
            result = await session.execute(
                query.values(outcome=outcome, handled_by=user_id, handled_at=now())
            )
            return bool(getattr(result, "rowcount", 0))

    # Mail ---------------------------------------------------------------------------------------

    async def mail_due(self, at: datetime, limit: int = 20) -> list[str]:
        async with self._db.session() as session:
            return list(
                await session.scalars(
                    select(CallbackRequest.id)
                    .where(CallbackRequest.mail_state.in_(MAIL_TO_TRY), CallbackRequest.mail_next_at <= at)
                    .order_by(CallbackRequest.mail_next_at)
                    .limit(limit)
                )
            )

    async def next_mail_at(self) -> datetime | None:
        async with self._db.session() as session:
            due: datetime | None = await session.scalar(
                select(func.min(CallbackRequest.mail_next_at)).where(
                    CallbackRequest.mail_state.in_(MAIL_TO_TRY)
                )
            )
            return due

    async def claim_mail(
        self, callback_id: str, at: datetime, until: datetime
    ) -> tuple[Callback, str | None, int] | None:
        """Take a due mail for one try (one conditional UPDATE: one process sends it); None if taken."""
        async with self._db.session() as session:
            result = await session.execute(
                update(CallbackRequest)
                .where(
                    CallbackRequest.id == callback_id,
                    CallbackRequest.mail_state.in_(MAIL_TO_TRY),
                    CallbackRequest.mail_next_at <= at,
                )
                .values(mail_next_at=until)
            )
            if not getattr(result, "rowcount", 0):
                return None
            row, name, notify = (
                await session.execute(
                    select(CallbackRequest, SiteRow.name, SiteRow.notify_email)
                    .join(SiteRow, SiteRow.id == CallbackRequest.site_id)
                    .where(CallbackRequest.id == callback_id)
                )
            ).one()
            return _callback(row, name, None), notify, row.mail_attempts

    async def mail_outcome(self, callback_id: str, **values: object) -> None:
        async with self._db.session() as session:
            await session.execute(
                update(CallbackRequest)
                .where(CallbackRequest.id == callback_id)
                .values(mail_attempts=CallbackRequest.mail_attempts + 1, **values)
            )


class CallbackMail:
    """Sends the due mail of requests in the background, retried as left messages' mail is."""

    def __init__(self, records: CallbackRecords, outbox: Outbox, retry_after: float = 60.0) -> None:
        self._records = records
        self._outbox = outbox
        self._gaps = [timedelta(seconds=retry_after * step) for step in RETRY_STEPS]
        self._wake = asyncio.Event()
        self._background = BackgroundTasks("call-back mail")
        self._started = self._closed = False

    def start(self) -> None:
        if not self._started and not self._closed:
            self._started = True
            self._background.spawn(self._run())

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while not self._closed:
            self._wake.clear()
            try:
                await self.send_due()
                due = await self._records.next_mail_at()
                wait = IDLE_LOOK if due is None else min(IDLE_LOOK, max(0.0, (due - now()).total_seconds()))
            except Exception:
                log.exception("call-back mail: the store could not be read; trying again later")
                wait = self._gaps[0].total_seconds()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)

    async def send_due(self) -> None:
        at = now()
        for callback_id in await self._records.mail_due(at):
            if self._closed:
                return
            job = await self._records.claim_mail(callback_id, at, at + CLAIM)
            if job is None:
                continue
            callback, notify, attempts = job
            try:
                if not notify:
                    raise LookupError(f"{callback.site_name} has no notification address any more.")
                await self._outbox.send(callback_mail(callback, notify))
            except Exception as e:
                tried = attempts + 1
                retry_at = now() + self._gaps[tried - 1] if tried <= len(self._gaps) else None
                log.warning("call-back request %s was not mailed (try %d): %s", callback_id, tried, e)
                await self._records.mail_outcome(
                    callback_id,
                    mail_state="retrying" if retry_at else "failed",
                    mail_error=(str(e) or type(e).__name__)[:1000],
                    mail_next_at=retry_at,
                )
            else:
                await self._records.mail_outcome(
                    callback_id, mail_state="sent", mail_error=None, mail_next_at=None
                )

    async def close(self, grace: float = 10.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        await self._background.close(grace=grace)


class Callbacks:
    """Call-back requests: taken from the widget, listed for operators, closed with an outcome."""

    def __init__(
        self,
        records: CallbackRecords,
        roster: Roster,
        outbox: Outbox,
        invitations: Invitations,
        sink: events.EventSink | None = None,
        mail_retry_after: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._records = records
        self._roster = roster
        self._outbox = outbox
        self._invitations = invitations
        self._sink = sink or events.NoEvents()
        self._mail = CallbackMail(records, outbox, mail_retry_after)
        self._limits = RateLimiter(REQUESTS_RATE, REQUESTS_BURST, clock)

    def start_mailing(self) -> None:
        self._mail.start()

    async def request(self, site: Site, token: str, phone: str, when: str | None, page: str | None) -> str:
        """Store a shopper's request, show it to the site's operators, mail and publish it; its id."""
        if not site.callbacks:
            raise CallbacksOff("This shop does not take call-back requests: leave a message instead.")
        number = phone_number(phone)
        when = (when or "").strip()[:MAX_WHEN] or None
        if not self._limits.take((site.id, token)):
            raise RateLimited("Too many requests: please wait a moment and try again.")
        mail = bool(site.notify_email and self._outbox.configured)
        callback = await self._records.add(site, token, number, when, page, mail)
        await self._tell_site(site.id, wire.CallbackNew(callback.wire(self.on_site(callback))))
        await self._sink.publish(
            site.id,
            events.CALLBACK_REQUESTED,
            {"id": callback.id, "phone": number, "when": when, "visitor_token": token},
        )
        if mail:
            self._mail.wake()
        log.info("call-back request %s on %s", callback.id[:8], site.name)
        return callback.id

    def on_site(self, callback: Callback) -> bool:
        """Whether the shopper who asked has a page of the site open now (so the operator can ring it)."""
        token = callback.visitor_token
        return token is not None and self._invitations.reachable(callback.site_id, token)

    async def listed(self, account: Account) -> list[wire.CallbackEntry]:
        """The open requests of the account's sites, newest first."""
        return [c.wire(self.on_site(c)) for c in await self._records.listed(account.site_ids)]

    async def get(self, account: Account, callback_id: str) -> Callback:
        found = await self._records.get(callback_id, account.site_ids)
        if found is None:
            raise UnknownCallback(f"There is no call-back request {callback_id!r} on your sites.")
        return found

    async def done(self, account: Account, callback_id: str, outcome: str) -> None:
        """Record what came of a request and by whom; it leaves every softphone's list."""
        if outcome not in OUTCOMES:
            raise InvalidInput(f"The outcome is one of {', '.join(OUTCOMES)}, not {outcome!r}.")
        callback = await self.get(account, callback_id)
        await self._records.done(callback_id, account.site_ids, outcome, account.id)
        await self._tell_site(callback.site_id, wire.CallbackDone(callback_id, outcome, account.display_name))

    async def _tell_site(self, site_id: int, frame: wire.Frame) -> None:
        await to_seats((s for s in self._roster.seats() if s.account.works_for(site_id)), frame)

    async def close(self, mail_wait: float = 10.0) -> None:
        await self._mail.close(grace=mail_wait)


@dataclass(eq=False)
class VisitorCall:
    """An operator ringing a visitor's page; the visitor has not answered yet."""

    id: str
    site_id: int
    token: str
    operator_id: int
    operator_name: str
    callback_id: str | None
    timer: Timer | None = None
    rang_at: float = field(default_factory=time.monotonic)


class RingsElsewhere(Protocol):
    """The rings of visitors held by the other nodes of a cluster (`cluster/visitor_calls.py`).

    A ring lives on the node of the operator who rang; the visitor's answer or Decline may come to any
    node, which hands it to the ring's node."""

    async def ringing(self, ring_id: str, seconds: float) -> None:
        """This node rings `ring_id` for up to `seconds`."""

    async def answered(self, site_id: int, token: str, ring_id: str) -> int:
        """The ring's node takes the visitor's answer; the operator who rang. NoVisitorCall if none."""

    async def declined(self, site_id: int, token: str, ring_id: str) -> None: ...


class VisitorCalls:
    """Operators ringing visitors who are on the site now; `close()` is safe to call twice."""

    def __init__(
        self,
        sites: SiteDirectory,
        board: VisitorBoard,
        invitations: Invitations,
        roster: Roster,
        clock: Clock,
        ring_for: float = VISITOR_RING,
        rate_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sites = sites
        self._board = board
        self._invitations = invitations
        self._roster = roster
        self._clock = clock
        self._ring_for = ring_for
        self._ringing: dict[str, VisitorCall] = {}
        self._per_operator = RateLimiter(RINGS_RATE, RINGS_BURST, rate_clock)
        self._per_visitor = RateLimiter(RINGS_PER_VISITOR_RATE, RINGS_PER_VISITOR_BURST, rate_clock)
        self._background = BackgroundTasks("visitor calls")
        self.elsewhere: RingsElsewhere | None = None  # in a cluster: rings held by the other nodes

    async def ring(self, operator: Account, site_id: int, token: str, callback_id: str | None = None) -> str:
        """Ring a visitor's open page on behalf of an operator of their site; the ring's id."""
        site = self._sites.by_id(site_id)
        if site is None or not operator.works_for(site_id):
            raise VisitorGone("There is no such visitor on your sites.")
        visitor = self._board.visitor(site_id, token)
        if visitor is None or not self._board.is_active(visitor):
            raise VisitorGone("This visitor has left the site.")
        if not self._invitations.reachable(site_id, token):
            raise VisitorUnreachable("This visitor's page can't be rung right now.")
        seat = self._roster.seat_of(operator.id)
        if seat is None or not seat.free:
            raise OperatorBusy("Be online and out of any call to ring a visitor.")
        if any(r.site_id == site_id and r.token == token for r in self._ringing.values()):
            raise AlreadyRinging("This visitor's page is ringing already.")
        if not self._per_operator.take(operator.id) or not self._per_visitor.take((site_id, token)):
            raise RateLimited("Too many calls to visitors: wait a moment before ringing again.")
        ring = VisitorCall(
            id=secrets.token_hex(8),
            site_id=site_id,
            token=token,
            operator_id=operator.id,
            operator_name=operator.display_name,
            callback_id=callback_id,
        )
        self._ringing[ring.id] = ring
        ring.timer = self._clock.call_later(self._ring_for, lambda: self._no_answer(ring))
        if self.elsewhere is not None:  # the visitor's answer may come through another node
            await self.elsewhere.ringing(ring.id, self._ring_for)
        await self._tell_operator(ring, "ringing")
        await self._invitations.tell(
            site_id,
            token,
            {
                "event": "visitor_call.ring",
                "id": ring.id,
                "operator": {"name": ring.operator_name},
                "site": site.name,
            },
        )
        log.info("operator %d rings visitor %s of %s", operator.id, token[:8], site.name)
        return ring.id

    async def answered(self, site_id: int, token: str, ring_id: str) -> int:
        """The visitor answered (their `call.offer` names the ring); the operator who rang takes the call."""
        if ring_id not in self._ringing and self.elsewhere is not None:
            return await self.elsewhere.answered(site_id, token, ring_id)
        return self.answered_here(site_id, token, ring_id).operator_id

    def answered_here(self, site_id: int, token: str, ring_id: str) -> VisitorCall:
        """`answered` for a ring of this node."""
        ring = self._ringing.get(ring_id)
        if ring is None or ring.site_id != site_id or ring.token != token:
            raise NoVisitorCall("That call is over: the operator stopped ringing.")
        self._finish(ring)
        self._background.spawn(self._tell_operator(ring, "answered"))
        return ring

    async def declined(self, site_id: int, token: str, ring_id: str) -> None:
        """The visitor pressed Decline."""
        if ring_id not in self._ringing and self.elsewhere is not None:
            await self.elsewhere.declined(site_id, token, ring_id)
            return
        await self.declined_here(site_id, token, ring_id)

    async def declined_here(self, site_id: int, token: str, ring_id: str) -> None:
        """`declined` for a ring of this node."""
        ring = self._ringing.get(ring_id)
        if ring is None or ring.site_id != site_id or ring.token != token:
            raise NoVisitorCall("That call is over already.")
        await self._over(ring, "declined")

    async def cancel(self, operator: Account, ring_id: str) -> None:
        """The operator stops ringing."""
        ring = self._ringing.get(ring_id)
        if ring is None or ring.operator_id != operator.id:
            raise NoVisitorCall("You are not ringing that visitor.")
        await self._over(ring, "cancelled")

    def _no_answer(self, ring: VisitorCall) -> None:
        self._background.spawn(self._over(ring, "no_answer"))

    async def _over(self, ring: VisitorCall, state: str) -> None:
        if self._ringing.get(ring.id) is not ring:
            return
        self._finish(ring)
        await self._tell_operator(ring, state)
        # The card on the visitor's page goes (a no-answer, or the operator gave up).
        await self._invitations.tell(ring.site_id, ring.token, {"event": "visitor_call.over", "id": ring.id})

    def _finish(self, ring: VisitorCall) -> None:
        self._ringing.pop(ring.id, None)
        if ring.timer is not None:
            ring.timer.cancel()

    async def _tell_operator(self, ring: VisitorCall, state: str) -> None:
        frame = wire.VisitorCallState(ring.id, ring.site_id, ring.token, state, ring.callback_id)
        await to_seats([self._roster.seat_of(ring.operator_id)], frame)

    async def close(self) -> None:
        for ring in list(self._ringing.values()):
            self._finish(ring)
        await self._background.close()
