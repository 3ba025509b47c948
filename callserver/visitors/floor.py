"""The shop floor: the live board, the journey log, invitations and the board's publisher, together.

Beacons come in through `page_view`, `heartbeat` and `left`; softphones watch the board; widgets
listen for invitations. Nothing here knows about HTTP: `callserver/web/visitors.py` adapts it, nor
about Redis: with several nodes the board's `BoardShare` (`callserver/cluster/board.py`) carries cards
and invitations between them.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
from collections.abc import Hashable
from datetime import UTC, datetime

from sqlalchemy import select

from callserver.accounts import Account
from callserver.errors import CallserverError, UnknownSite
from callserver.jsontypes import Json, JsonObject
from callserver.limits import NEW_VISITORS_BURST, NEW_VISITORS_RATE, RateLimiter
from callserver.operators.roster import Roster
from callserver.sites import Site, SiteDirectory
from callserver.store import models
from callserver.store.database import Database
from callserver.visitors.board import (
    MAX_ROWS,
    BoardPublisher,
    BoardShare,
    LiveVisitor,
    LocalShare,
    VisitorBoard,
)
from callserver.visitors.invitations import InvitationRecords, Invitations, VisitorStream
from callserver.visitors.journey import PageSeen, PageViewLog

log = logging.getLogger(__name__)
# New visitors one client address may bring on the board: the same allowance as for widget sockets
# (`callserver/limits.py`): an office or a mobile carrier's NAT puts several real shoppers behind one
# address, a script faking visitors gets no further. Visitors already on the board are never limited.
# Behind a reverse proxy set `trust_forwarded_for`, or every shopper shares the proxy's address.


class TooManyNewVisitors(CallserverError):
    code = "too_many_visitors"


class ShopFloor:
    """Who is in the shops right now; `start()` once the loop runs, `close()` (idempotent) at the end."""

    def __init__(
        self,
        database: Database,
        sites: SiteDirectory,
        roster: Roster,
        publish_interval: float = 0.5,
        new_visitors: RateLimiter | None = None,
        share: BoardShare | None = None,
    ) -> None:
        self.sites = sites
        self._database = database
        self.board = VisitorBoard()
        self.share: BoardShare = share or LocalShare()
        self._unshare = self.board.on_card(self.share.card_changed)
        self.journeys = PageViewLog(database)
        self.invitations = Invitations(self.board, InvitationRecords(database), roster, share=self.share)
        self.publisher = BoardPublisher(self.board, self.board_for, interval=publish_interval)
        self.streams: set[VisitorStream] = set()  # open event streams, ended when the server stops
        self.new_visitors = new_visitors or RateLimiter(NEW_VISITORS_RATE, NEW_VISITORS_BURST)
        self.limited = 0  # beacons refused because their address brought too many new visitors
        self._closed = False

    async def start(self) -> None:
        self.journeys.start()
        self.publisher.start()
        await self.share.start(self)

    async def recall(self, profile: Site, token: str) -> None:
        """Before a beacon: the visit as the nodes last saved it (its last beacon may have gone to
        another node); nothing to do for a node alone."""
        card = await self.share.recall(profile.id, token)
        if card is not None:
            await self.card_arrived(card)

    async def settle(self) -> None:
        """After a beacon, before its answer: what it changed is saved for the other nodes."""
        await self.share.flush()

    # What other nodes send (SharedFloor) ------------------------------------------------------

    async def card_arrived(self, card: LiveVisitor) -> None:
        """Another node's card: on our board, once we know its site (a site this node has not served yet
        is read first; a card of a site that is gone is dropped)."""
        if self.sites.by_id(card.site_id) is None:
            async with self._database.session() as session:
                key = await session.scalar(select(models.Site.key).where(models.Site.id == card.site_id))
            if key is None:
                return
            with contextlib.suppress(UnknownSite):
                await self.sites.by_key(key)
            if self.sites.by_id(card.site_id) is None:
                return
        for gone in self.board.card_arrived(card):
            self.invitations.forget(gone.site_id, gone.token)

    def reach_changed(self, site_id: int) -> None:
        self.board.changed(site_id)

    async def tell_here(self, site_id: int, token: str, event: dict[str, object]) -> bool:
        return await self.invitations.tell_here(site_id, token, event)

    def admit(self, profile: Site, token: str, address: Hashable) -> None:
        """Raise TooManyNewVisitors when this visitor is new and `address` brought too many new ones."""
        if self.board.knows(profile.id, token) or self.new_visitors.take(address):
            return
        self.limited += 1
        if self.limited == 1 or self.limited % 1000 == 0:
            log.warning("too many new visitors from %s: beacon refused (%d so far)", address, self.limited)
        raise TooManyNewVisitors("Too many new visitors from this address: please try again later.")

    def page_view(self, profile: Site, token: str, seen: PageSeen, dismissed: bool) -> None:
        visitor, ended, new, evicted = self.board.page_view(profile.id, token, seen)
        for gone in evicted:
            self.invitations.forget(gone.site_id, gone.token)
        if not new:
            return
        if ended is not None:
            self.journeys.ended(profile.id, token, ended.view_id, ended.seconds)
        self.journeys.viewed(profile.id, token, seen, datetime.now(UTC))
        self.invitations.page_viewed(profile, visitor, dismissed)

    def heartbeat(
        self, profile: Site, token: str, view_id: str, seconds: float, cart_value: float | None
    ) -> bool:
        """False when this process doesn't know the visitor (a restart): the widget reports the page again."""
        return self.board.heartbeat(profile.id, token, view_id, seconds, cart_value) is not None

    def left(self, profile: Site, token: str, view_id: str, seconds: float) -> None:
        visitor = self.board.heartbeat(profile.id, token, view_id, seconds)
        if visitor is not None and visitor.current is not None and visitor.current.view_id == view_id:
            self.journeys.ended(profile.id, token, view_id, visitor.current.seconds)
        if visitor is not None:
            self.board.touched(visitor)  # once a page: the node of the next page knows its time

    def board_for(self, account: Account) -> JsonObject:
        """The board as this operator sees it: the `MAX_ROWS` most promising visitors of their sites
        (the newest first among equals) and how many there are in all."""
        now = self.board.now()
        ranked = []
        for visitor in self.board.active(account.site_ids or None):
            profile = self.sites.by_id(visitor.site_id)
            if profile is not None:
                ranked.append((-visitor.score(profile.weights, now), now - visitor.started, visitor, profile))
        best = heapq.nsmallest(MAX_ROWS, ranked, key=lambda r: (r[0], r[1]))
        rows: list[Json] = [
            self.board.row(
                visitor,
                profile.name,
                profile.weights,
                self.invitations.reachable(visitor.site_id, visitor.token),
            )
            for _score, _seconds, visitor, profile in best
        ]
        return {"visitors": rows, "total": len(ranked)}

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._unshare()
        await self.share.close()
        await self.publisher.close()
        await self.invitations.close()
        await self.journeys.close()
