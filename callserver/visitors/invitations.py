"""Inviting a visitor to talk: by an operator from the board, or by a site's proactive rules.

The invitation reaches the widget through a small event stream the widget holds open only while
someone can answer (see `callserver/web/visitors.py` for why a stream and not a WebSocket). A visitor
who closes the bubble is never invited again (remembered on the visitor's record and in the widget),
and rules invite at most `max_per_visitor` times.

With several nodes the operator's softphone and the visitor's stream may be on different nodes: the
board's `BoardShare` says whether another node holds a stream of the visitor and takes events there;
who invited whom travels on the visitor's card, so a call or chat started on any node finds the inviter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from callserver.accounts import Account
from callserver.background import BackgroundTasks
from callserver.errors import CallserverError
from callserver.operators.roster import Roster, Seat
from callserver.sites import Site
from callserver.sites.rules import InviteRule, rules_of
from callserver.store.database import Database
from callserver.store.models import Visitor
from callserver.visitors.board import BoardShare, LiveVisitor, LocalShare, VisitorBoard

# The rules are a site setting (callserver/sites/rules.py); the dashboard's site form imports them here.
__all__ = ["Invitations", "InviteRule", "rules_of"]

log = logging.getLogger(__name__)
# An invitation showing for longer than this no longer stands (the operator may invite again).
INVITATION_STANDS = 300.0


class VisitorGone(CallserverError):
    code = "visitor_gone"


class VisitorUnreachable(CallserverError):
    code = "visitor_unreachable"


class VisitorDismissed(CallserverError):
    code = "visitor_dismissed"


class AlreadyInvited(CallserverError):
    code = "already_invited"


class VisitorStream(Protocol):
    """A widget's open event stream."""

    async def invite(self, invitation: dict[str, object]) -> None: ...
    def end(self) -> None:
        """Close the stream (the server is stopping)."""


class InvitationRecords:
    """How often a visitor was invited, and whether they said no: kept on the visitor's record."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def history(self, site_id: int, token: str) -> tuple[int, bool]:
        async with self._database.session() as session:
            row = await session.scalar(
                select(Visitor).where(Visitor.site_id == site_id, Visitor.token == token)
            )
            if row is None:
                return 0, False
            return row.invitations, row.invitation_dismissed_at is not None

    async def note(self, site_id: int, token: str, *, sent: bool = False, dismissed: bool = False) -> None:
        try:
            await self._note(site_id, token, sent, dismissed)
        except IntegrityError:
            # Another node (or request) wrote the visitor's first record meanwhile: note it on that one.
            await self._note(site_id, token, sent, dismissed)

    async def _note(self, site_id: int, token: str, sent: bool, dismissed: bool) -> None:
        now = datetime.now(UTC)
        async with self._database.session() as session:
            row = await session.scalar(
                select(Visitor).where(Visitor.site_id == site_id, Visitor.token == token)
            )
            if row is None:
                row = Visitor(site_id=site_id, token=token, created_at=now, last_seen_at=now, invitations=0)
                session.add(row)
            if sent:
                row.invitations = (row.invitations or 0) + 1
            if dismissed and row.invitation_dismissed_at is None:
                row.invitation_dismissed_at = now
            row.last_seen_at = now


class Invitations:
    """Open streams to widgets, pending rule timers, and invitations in flight; `close()` is idempotent."""

    def __init__(
        self,
        board: VisitorBoard,
        records: InvitationRecords,
        seats: Roster,
        clock: Callable[[], float] = time.time,
        share: BoardShare | None = None,
    ) -> None:
        self._board = board
        self._records = records
        self._seats = seats
        self._clock = clock
        self._share: BoardShare = share or LocalShare()
        self._streams: dict[tuple[int, str], list[VisitorStream]] = {}
        self._timers: dict[tuple[int, str], list[asyncio.TimerHandle]] = {}
        self._background = BackgroundTasks("invitations")

    # Streams -----------------------------------------------------------------------------------

    def listen(self, site_id: int, token: str, stream: VisitorStream) -> Callable[[], None]:
        """Register a widget's event stream; returns the function that unregisters it."""
        key = (site_id, token)
        self._streams.setdefault(key, []).append(stream)
        if len(self._streams[key]) == 1:
            self._share.listening(site_id, token, True)
        self._board.changed(site_id)

        def stop() -> None:
            streams = self._streams.get(key, [])
            if stream in streams:
                streams.remove(stream)
            if not streams and self._streams.pop(key, None) is not None:
                self._share.listening(site_id, token, False)
            self._board.changed(site_id)

        return stop

    def reachable(self, site_id: int, token: str) -> bool:
        """Whether the visitor holds an open event stream, on this node or another."""
        return bool(self._streams.get((site_id, token))) or self._share.listening_elsewhere(site_id, token)

    async def tell(self, site_id: int, token: str, event: dict[str, object]) -> bool:
        """Push an event (`{"event": NAME, ...}`) to the visitor's open streams, on every node that holds
        one; whether one was open."""
        here = await self.tell_here(site_id, token, event)
        elsewhere = await self._share.tell_elsewhere(site_id, token, event)
        return here or elsewhere

    async def tell_here(self, site_id: int, token: str, event: dict[str, object]) -> bool:
        """Push an event to the visitor's streams on this node; whether one was open."""
        streams = list(self._streams.get((site_id, token), []))
        for stream in streams:
            await stream.invite(dict(event))  # each stream takes its own copy (the name is popped)
        return bool(streams)

    def listeners(self) -> int:
        return sum(len(s) for s in self._streams.values())

    # Operators ---------------------------------------------------------------------------------

    def _free_operator(self, site_id: int, free_only: bool) -> Seat | None:
        seats = [
            s
            for s in self._seats.seats()
            if s.account.works_for(site_id) and (s.free if free_only else s.reachable)
        ]
        return min(seats, key=lambda s: (s.idle_since, s.account.id), default=None)

    def inviter_of(self, site_id: int, token: str) -> int | None:
        """The operator whose invitation this visitor is answering (rung first when they call)."""
        visitor = self._board.visitor(site_id, token)
        if visitor is None or visitor.invited_at is None:
            return None
        if self._clock() - visitor.invited_at > INVITATION_STANDS:
            return None
        return visitor.inviter_id

    async def invite(self, profile: Site, token: str, operator: Account) -> None:
        """An operator invites a visitor from the board."""
        profile.check_open()
        visitor = self._board.visitor(profile.id, token)
        if visitor is None or not self._board.is_active(visitor):
            raise VisitorGone("This visitor has left the site.")
        if visitor.dismissed:
            raise VisitorDismissed("This visitor said no thanks to an invitation; they are not asked again.")
        if visitor.invited_at is not None and self._clock() - visitor.invited_at < INVITATION_STANDS:
            raise AlreadyInvited(f"{visitor.invited_by} has invited this visitor already.")
        if not self.reachable(profile.id, token):
            raise VisitorUnreachable("This visitor's page can't receive invitations right now.")
        await self._deliver(profile, visitor, operator.display_name, operator.id, None, limit=None)

    async def _deliver(
        self,
        profile: Site,
        visitor: LiveVisitor,
        name: str,
        operator_id: int,
        message: str | None,
        limit: int | None,
    ) -> bool:
        count, dismissed = await self._records.history(profile.id, visitor.token)
        if dismissed:
            visitor.dismissed = True
            self._board.changed(profile.id, visitor)
            raise VisitorDismissed("This visitor said no thanks to an invitation; they are not asked again.")
        if limit is not None and max(count, visitor.invitations) >= limit:
            return False
        invitation: dict[str, object] = {
            "id": secrets.token_hex(6),
            "operator": {"name": name},
            "site": profile.name,
        }
        if message:
            invitation["text"] = message
        # The card first, then the widget: a visitor who answers at once (on another node, maybe) must
        # find the invitation on the card, and their "no thanks" must not be overwritten by it.
        visitor.invited_by, visitor.inviter_id, visitor.invited_at = name, operator_id, self._clock()
        visitor.invitations = max(count, visitor.invitations) + 1
        self._board.changed(profile.id, visitor)
        await self._share.flush()  # on the shared channel before the invitation itself
        await self.tell(profile.id, visitor.token, invitation)
        await self._records.note(profile.id, visitor.token, sent=True)
        log.info("invited visitor %s of %s (%s)", visitor.token[:8], profile.name, name)
        return True

    async def dismissed(self, site_id: int, token: str) -> None:
        """The visitor closed the bubble: remember it, and never invite them again."""
        visitor = self._board.visitor(site_id, token)
        if visitor is not None:
            visitor.dismissed = True
            visitor.invited_by = visitor.invited_at = None
            self._cancel(site_id, token)
            self._board.changed(site_id, visitor)
        await self._records.note(site_id, token, dismissed=True)

    def answered(self, site_id: int, token: str) -> None:
        """The visitor took the invitation up (a call or a chat): it no longer shows."""
        visitor = self._board.visitor(site_id, token)
        if visitor is not None and visitor.invited_by is not None:
            visitor.invited_by = None
            self._board.changed(site_id, visitor)

    # Proactive rules ---------------------------------------------------------------------------

    def page_viewed(self, profile: Site, visitor: LiveVisitor, dismissed_in_widget: bool) -> None:
        """Arm the site's rules that match the visitor's new page (and disarm those of the last one)."""
        self._cancel(profile.id, visitor.token)
        if dismissed_in_widget and not visitor.dismissed:
            visitor.dismissed = True
            self._board.touched(visitor)
            self._background.spawn(self._records.note(profile.id, visitor.token, dismissed=True))
        current = visitor.current
        if visitor.dismissed or current is None:
            return
        loop = asyncio.get_running_loop()
        timers = []
        for rule in profile.rules:
            if rule.matches(current.page):
                timers.append(
                    loop.call_later(rule.seconds, self._fire, profile, visitor, current.view_id, rule)
                )
        if timers:
            self._timers[(profile.id, visitor.token)] = timers

    def _fire(self, profile: Site, visitor: LiveVisitor, view_id: str, rule: InviteRule) -> None:
        self._background.spawn(self._rule_due(profile, visitor, view_id, rule))

    async def _rule_due(self, profile: Site, visitor: LiveVisitor, view_id: str, rule: InviteRule) -> None:
        current = visitor.current
        if (
            current is None
            or current.view_id != view_id
            or visitor.dismissed
            or not self._board.is_active(visitor)
            or visitor.invitations >= rule.max_per_visitor
            or (visitor.invited_at is not None and self._clock() - visitor.invited_at < INVITATION_STANDS)
            or not self.reachable(profile.id, visitor.token)
            or not profile.is_open()
        ):
            return
        now = self._board.now()
        if rule.min_score is not None and visitor.score(profile.weights, now) < rule.min_score:
            return
        if rule.min_value is not None and visitor.value < rule.min_value:
            return
        seat = self._free_operator(profile.id, rule.only_when_free)
        if seat is None:
            return
        name, operator_id = seat.account.display_name, seat.account.id
        with contextlib.suppress(VisitorDismissed):  # they said no meanwhile, in another tab
            await self._deliver(profile, visitor, name, operator_id, rule.message, rule.max_per_visitor)

    def forget(self, site_id: int, token: str) -> None:
        """The board forgot this visitor: their rules no longer fire."""
        self._cancel(site_id, token)

    def _cancel(self, site_id: int, token: str) -> None:
        for timer in self._timers.pop((site_id, token), []):
            timer.cancel()

    async def close(self) -> None:
        """Disarm every rule and wait for invitations in flight; safe to call twice."""
        for key in list(self._timers):
            self._cancel(*key)
        await self._background.close()
