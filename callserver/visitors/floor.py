"""The shop floor: the live board, the journey log, invitations and the board's publisher, together.

Beacons come in through `page_view`, `heartbeat` and `left`; softphones watch the board; widgets
listen for invitations. Nothing here knows about HTTP: `callserver/web/visitors.py` adapts it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from callserver.accounts import Account
from callserver.store.database import Database
from callserver.visitors.board import MAX_ROWS, BoardPublisher, VisitorBoard
from callserver.visitors.invitations import InvitationRecords, Invitations, Seats, VisitorStream
from callserver.visitors.journey import PageSeen, PageViewLog
from callserver.visitors.profiles import SiteProfile, SiteProfiles


class ShopFloor:
    """Who is in the shops right now; `start()` once the loop runs, `close()` (idempotent) at the end."""

    def __init__(self, database: Database, seats: Seats, publish_interval: float = 0.25) -> None:
        self.profiles = SiteProfiles(database)
        self.board = VisitorBoard()
        self.journeys = PageViewLog(database)
        self.invitations = Invitations(self.board, InvitationRecords(database), seats)
        self.publisher = BoardPublisher(self.board, self.rows_for, interval=publish_interval)
        self.streams: set[VisitorStream] = set()  # open event streams, ended when the server stops
        self._closed = False

    def start(self) -> None:
        self.journeys.start()
        self.publisher.start()

    def page_view(self, profile: SiteProfile, token: str, seen: PageSeen, dismissed: bool) -> None:
        visitor, ended, new = self.board.page_view(profile.id, token, seen)
        if not new:
            return
        if ended is not None:
            self.journeys.ended(profile.id, token, ended.view_id, ended.seconds)
        self.journeys.viewed(profile.id, token, seen, datetime.now(UTC))
        self.invitations.page_viewed(profile, visitor, dismissed)

    def heartbeat(
        self, profile: SiteProfile, token: str, view_id: str, seconds: float, cart_value: float | None
    ) -> bool:
        """False when this process doesn't know the visitor (a restart): the widget reports the page again."""
        return self.board.heartbeat(profile.id, token, view_id, seconds, cart_value) is not None

    def left(self, profile: SiteProfile, token: str, view_id: str, seconds: float) -> None:
        visitor = self.board.heartbeat(profile.id, token, view_id, seconds)
        if visitor is not None and visitor.current is not None and visitor.current.view_id == view_id:
            self.journeys.ended(profile.id, token, view_id, visitor.current.seconds)

    def rows_for(self, account: Account) -> list[dict[str, Any]]:
        """The board as this operator sees it: the visitors of their sites, the most promising first."""
        rows = []
        for visitor in self.board.active(account.site_ids or None):
            profile = self.profiles.by_id(visitor.site_id)
            if profile is None:
                continue
            reachable = self.invitations.reachable(visitor.site_id, visitor.token)
            rows.append(self.board.row(visitor, profile.name, profile.weights, reachable))
        rows.sort(key=lambda r: (-r["score"], r["seconds_on_site"]))
        return rows[:MAX_ROWS]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.publisher.close()
        await self.invitations.close()
        await self.journeys.close()
