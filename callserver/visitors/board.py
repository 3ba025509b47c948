"""The live visitors board: who is on each site now, what they look at, and how promising they are.

A visitor is on the board while the widget has reported them in the last `active_for` seconds (the
widget sends a heartbeat every ~20 s while its tab is visible). Operators see the board sorted by
value score; changes reach their softphones through `BoardPublisher`, at most every `interval`.

The board must stay small when someone fakes visitors by the thousand (anyone can post beacons): a
site keeps at most `MAX_VISITORS_PER_SITE` visitors live (the least promising go first), what a visitor
keeps live is capped (`MAX_VIEWS`, `LIVE_TEXT`), and a push carries the best `MAX_ROWS` rows and the
count of the rest, only when what the operators would see has changed.

With several nodes a visitor's beacons and stream may reach any of them: each node's board keeps the
cards other nodes send it through a `BoardShare` (`callserver/cluster/board.py`); a node alone has
`LocalShare`, which shares nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Protocol

from callserver.accounts import Account
from callserver.background import stop_task
from callserver.visitors.journey import PageSeen, search_in_referrer, source_of
from callserver.visitors.score import ScoreWeights, VisitFacts, value_score
from callserver.wire.outbound import Frame, JsonObject, VisitorsBoard

log = logging.getLogger(__name__)
MAX_VIEWS = 10  # a visit's pages kept live: the board shows the last 10 (all of them are in the store)
LIVE_TEXT = 500  # characters of a page's address and title kept live (the store keeps them whole)
# Rows a softphone gets: the best by score, plus the count of all. Fifty is more than a team reads
# row by row, and keeps a push under ~100 KB however many visitors (fake or not) there are.
MAX_ROWS = 50
# Visitors kept live per site (~3 KB each, at most ~7 KB with the caps above: under ~35 MB a site).
# A real shop with more people on it at once needs a bigger server anyway; past it the gone and the
# least valuable (then the longest idle) visitors are forgotten, a tenth at a time so it stays cheap.
MAX_VISITORS_PER_SITE = 5_000
# Seconds between two shares of a visitor's card that only says "still here" (a heartbeat with no news):
# other nodes' boards keep the visitor active meanwhile (`active_for` is 120 s); what a board shows
# (a page, the cart, gone or back) is shared at once.
SHARE_EVERY = 30.0


@dataclass
class PageViewLive:
    view_id: str
    page: str
    title: str | None
    started: float
    seconds: float = 0.0
    product_price: float | None = None


@dataclass(eq=False)
class LiveVisitor:
    site_id: int
    token: str
    started: float
    last_seen: float
    source: str = "direct"
    search: str | None = None
    campaign: bool = False
    returning: bool = False
    cart_value: float | None = None
    currency: str | None = None
    views: list[PageViewLive] = field(default_factory=list)
    pages_seen: int = 0
    dearest: float = 0.0  # the dearest product seen on this visit
    invited_by: str | None = None  # the operator's name on the invitation showing now
    invited_at: float | None = None
    inviter_id: int | None = None
    invitations: int = 0
    dismissed: bool = False
    gone: bool = False  # off the board, and the softphones were told (each node for its own softphones)
    updated: float = 0.0  # when this card last changed, here or on another node (the newer card wins)

    @property
    def current(self) -> PageViewLive | None:
        return self.views[-1] if self.views else None

    @property
    def value(self) -> float:
        """The cart's value when the shop reports one, else the dearest product seen on this visit."""
        if self.cart_value:
            return self.cart_value
        return self.dearest

    def facts(self, now: float) -> VisitFacts:
        return VisitFacts(
            value=self.value,
            pages=self.pages_seen,
            seconds_on_site=max(0.0, now - self.started),
            has_cart=bool(self.cart_value),
            returning=self.returning,
            searched=bool(self.search),
            campaign=self.campaign,
        )

    def score(self, weights: ScoreWeights, now: float) -> int:
        return value_score(self.facts(now), weights)


# What a card from another node replaces of ours: all but who it is and whether our softphones were
# told the visitor left (each node tells its own).
LIVE_FIELDS = tuple(f.name for f in fields(LiveVisitor) if f.name not in ("site_id", "token", "gone"))


class VisitorBoard:
    """Every live visitor of this process, by (site id, visitor token)."""

    def __init__(
        self,
        active_for: float = 120.0,
        forget_after: float = 1800.0,
        clock: Callable[[], float] = time.time,
        max_per_site: int = MAX_VISITORS_PER_SITE,
    ) -> None:
        self.active_for = active_for
        # A heartbeat with no news goes to the other nodes only this often per visitor: enough to keep
        # the visitor active there (`active_for`), without a Redis write and a broadcast every beacon.
        self.share_every = min(SHARE_EVERY, active_for / 4)
        self._forget_after = forget_after
        self._clock = clock
        self._max_per_site = max_per_site
        self._visitors: dict[tuple[int, str], LiveVisitor] = {}
        self._per_site: dict[int, int] = {}
        self.evicted = 0  # visitors forgotten early because their site's board was full
        self._listeners: list[Callable[[int], None]] = []
        self._card_listeners: list[Callable[[LiveVisitor], None]] = []

    def on_card(self, listener: Callable[[LiveVisitor], None]) -> Callable[[], None]:
        """Call `listener(visitor)` when this node changes a visitor's card (not for cards that came
        from other nodes); returns the function that unregisters it."""
        self._card_listeners.append(listener)
        return lambda: self._card_listeners.remove(listener) if listener in self._card_listeners else None

    def touched(self, visitor: LiveVisitor) -> None:
        """This node changed `visitor`'s card: the card listeners (the other nodes) hear of it."""
        visitor.updated = self._clock()
        for listener in list(self._card_listeners):
            listener(visitor)

    def card_arrived(self, card: LiveVisitor) -> list[LiveVisitor]:
        """Another node's card of a visitor: kept in place of ours unless ours is newer (in place, so
        what holds our visitor sees it); returns the visitors forgotten to make room."""
        key = (card.site_id, card.token)
        mine = self._visitors.get(key)
        evicted: list[LiveVisitor] = []
        if mine is None:
            evicted = self._add(card)
        elif card.updated > mine.updated:
            for name in LIVE_FIELDS:
                setattr(mine, name, getattr(card, name))
            mine.gone = False
        else:
            return evicted
        self.changed(card.site_id)
        return evicted

    def on_change(self, listener: Callable[[int], None]) -> Callable[[], None]:
        """Call `listener(site_id)` when a site's board changes; returns the function that unregisters it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def changed(self, site_id: int, visitor: LiveVisitor | None = None) -> None:
        """A site's board changed (because of `visitor`'s card, when given: the other nodes hear of it)."""
        if visitor is not None:
            self.touched(visitor)
        for listener in list(self._listeners):
            listener(site_id)

    def now(self) -> float:
        return self._clock()

    def visitor(self, site_id: int, token: str) -> LiveVisitor | None:
        return self._visitors.get((site_id, token))

    def is_active(self, visitor: LiveVisitor) -> bool:
        return self._clock() - visitor.last_seen <= self.active_for

    def knows(self, site_id: int, token: str) -> bool:
        """Whether a page view of this visitor continues a visit (rather than starting a new one)."""
        visitor = self._visitors.get((site_id, token))
        return visitor is not None and self._clock() - visitor.last_seen <= self._forget_after

    def count(self, site_id: int) -> int:
        """Visitors of this site kept live (active or not)."""
        return self._per_site.get(site_id, 0)

    def _add(self, visitor: LiveVisitor) -> list[LiveVisitor]:
        """Put a new visitor on the board; returns those forgotten to make room."""
        key = (visitor.site_id, visitor.token)
        if key not in self._visitors:
            self._per_site[visitor.site_id] = self._per_site.get(visitor.site_id, 0) + 1
        self._visitors[key] = visitor
        if self._per_site[visitor.site_id] <= self._max_per_site:
            return []
        now = self._clock()
        others = [v for (s, _), v in self._visitors.items() if s == visitor.site_id and v is not visitor]
        room = max(1, len(others) - (self._max_per_site * 9) // 10 + 1)
        evict = heapq.nsmallest(
            room, others, key=lambda v: (now - v.last_seen <= self.active_for, v.value, v.last_seen)
        )
        for gone in evict:
            self._forget((gone.site_id, gone.token))
        self.evicted += len(evict)
        if self.evicted == len(evict) or self.evicted % 1000 < len(evict):  # the first, then every 1,000
            log.warning(
                "site %d has more than %d live visitors: forgot the least promising (%d so far)",
                visitor.site_id,
                self._max_per_site,
                self.evicted,
            )
        return evict

    def _forget(self, key: tuple[int, str]) -> None:
        if self._visitors.pop(key, None) is not None:
            left = self._per_site[key[0]] - 1
            if left:
                self._per_site[key[0]] = left
            else:
                del self._per_site[key[0]]

    def page_view(
        self, site_id: int, token: str, seen: PageSeen
    ) -> tuple[LiveVisitor, PageViewLive | None, bool, list[LiveVisitor]]:
        """A page of the visit; returns the visitor, the page view it ends (if any), whether the view is
        new, and the visitors forgotten to make room for this one."""
        now = self._clock()
        visitor = self._visitors.get((site_id, token))
        evicted: list[LiveVisitor] = []
        if visitor is None or now - visitor.last_seen > self._forget_after:
            visitor = LiveVisitor(site_id=site_id, token=token, started=now, last_seen=now)
            if visitor_was := self._visitors.get((site_id, token)):
                visitor.invitations, visitor.dismissed = visitor_was.invitations, visitor_was.dismissed
            evicted = self._add(visitor)
            visitor.source = source_of(seen.referrer, seen.utm, seen.page)
            visitor.campaign = bool(seen.utm.get("source") or seen.utm.get("campaign"))
        visitor.last_seen = now
        visitor.gone = False
        visitor.returning = visitor.returning or seen.returning
        visitor.search = seen.search or search_in_referrer(seen.referrer) or visitor.search
        if seen.cart_value is not None:
            visitor.cart_value = seen.cart_value
            visitor.currency = seen.currency or visitor.currency
        elif seen.currency and not visitor.currency:
            visitor.currency = seen.currency
        ended = visitor.current
        if ended is not None and ended.view_id == seen.view_id:
            self.touched(visitor)  # the other nodes still learn the visitor is here
            return visitor, None, False, evicted  # the same page reported again (a retried beacon)
        title = seen.title[:LIVE_TEXT] if seen.title else seen.title
        visitor.views.append(
            PageViewLive(
                seen.view_id, seen.page[:LIVE_TEXT], title, started=now, product_price=seen.product_price
            )
        )
        del visitor.views[:-MAX_VIEWS]
        visitor.dearest = max(visitor.dearest, seen.product_price or 0.0)
        visitor.pages_seen += 1
        self.changed(site_id, visitor)
        return visitor, ended, True, evicted

    def heartbeat(
        self, site_id: int, token: str, view_id: str, seconds: float, cart_value: float | None = None
    ) -> LiveVisitor | None:
        """The visitor is still on `view_id` after `seconds`; None when we don't know them (restart)."""
        visitor = self._visitors.get((site_id, token))
        if visitor is None:
            return None
        visitor.last_seen = self._clock()
        current = visitor.current
        if current is not None and current.view_id == view_id:
            current.seconds = max(current.seconds, seconds)
        # Time on site ticks in the softphone itself: only news worth a push marks the board changed.
        news = visitor.gone or (cart_value is not None and cart_value != visitor.cart_value)
        visitor.gone = False
        if cart_value is not None:
            visitor.cart_value = cart_value
        if news:
            self.changed(site_id, visitor)
        elif self._clock() - visitor.updated >= self.share_every:
            self.touched(visitor)  # other nodes keep the visitor active (last_seen) without a push
        return visitor

    def active(self, site_ids: Iterable[int] | None = None) -> list[LiveVisitor]:
        now = self._clock()
        wanted = None if site_ids is None else set(site_ids)
        return [
            v
            for (site_id, _), v in self._visitors.items()
            if (wanted is None or site_id in wanted) and now - v.last_seen <= self.active_for
        ]

    def sweep(self) -> set[int]:
        """Forget long-gone visitors; returns the sites whose board lost someone since the last sweep."""
        now = self._clock()
        changed: set[int] = set()
        for key, visitor in list(self._visitors.items()):
            idle = now - visitor.last_seen
            if idle > self._forget_after:
                self._forget(key)
            elif idle > self.active_for and not visitor.gone:
                visitor.gone = True
                changed.add(visitor.site_id)
        return changed

    def row(self, visitor: LiveVisitor, site_name: str, weights: ScoreWeights, reachable: bool) -> JsonObject:
        """One row of the board as softphones get it (docs/signaling.md, `visitors`)."""
        now = self._clock()
        current = visitor.current
        return {
            "id": visitor.token,
            "site": site_name,
            "site_id": visitor.site_id,
            "page": current.page if current else None,
            "title": current.title if current else None,
            "pages": visitor.pages_seen,
            "journey": [{"page": v.page, "title": v.title} for v in visitor.views[-10:]],
            "seconds_on_site": round(max(0.0, now - visitor.started)),
            "source": visitor.source,
            "search": visitor.search,
            "cart_value": visitor.cart_value,
            "value": round(visitor.value, 2),
            "currency": visitor.currency,
            "returning": visitor.returning,
            "score": visitor.score(weights, now),
            "invited": visitor.invited_by is not None,
            "dismissed": visitor.dismissed,
            "reachable": reachable,
            "since": datetime.fromtimestamp(visitor.started, UTC).isoformat(),
        }


class BoardChannel(Protocol):
    """A softphone as the board publisher sees it."""

    async def chat_event(self, frame: Frame) -> None: ...


# The board as one operator sees it: `{"visitors": [ROW, … at most MAX_ROWS], "total": N}`.
BoardFor = Callable[[Account], JsonObject]


def _fingerprint(board: dict[str, Any]) -> int:
    """What an operator would notice of a board: everything but the time on site, which the
    softphone counts up by itself."""
    rows = [{k: v for k, v in row.items() if k != "seconds_on_site"} for row in board["visitors"]]
    return hash(json.dumps([rows, board.get("total")], sort_keys=True, default=str))


class BoardPublisher:
    """Pushes board changes to the softphones watching the sites that changed: at most one push per
    `interval`, and to a softphone only when its board differs from the one it was last sent."""

    def __init__(
        self, board: VisitorBoard, board_for: BoardFor, interval: float = 0.5, sweep_every: float = 5.0
    ):
        self._board = board
        self._board_for = board_for
        self._interval = interval
        self._sweep_every = sweep_every
        self._watchers: dict[BoardChannel, Account] = {}
        self._sent: dict[BoardChannel, int] = {}  # the fingerprint of the board each one has
        self._dirty: set[int] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unlisten = board.on_change(self.mark)
        self.pushes = 0  # boards sent, snapshots included

    def mark(self, site_id: int) -> None:
        self._dirty.add(site_id)
        self._wake.set()

    def watch(self, account: Account, channel: BoardChannel) -> Callable[[], None]:
        """Send this softphone the board on every change; returns the function that stops it."""
        self._watchers[channel] = account

        def stop() -> None:
            self._watchers.pop(channel, None)
            self._sent.pop(channel, None)

        return stop

    async def snapshot(self, account: Account, channel: BoardChannel) -> None:
        board = self._board_for(account)
        await self._send(channel, board, _fingerprint(board))

    async def _send(self, channel: BoardChannel, board: JsonObject, fingerprint: int) -> None:
        self._sent[channel] = fingerprint
        self.pushes += 1
        await channel.chat_event(VisitorsBoard(board))

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + self._sweep_every
        while True:
            timeout = max(0.0, next_sweep - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            if loop.time() >= next_sweep:
                self._dirty |= self._board.sweep()
                next_sweep = loop.time() + self._sweep_every
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            if dirty:
                await self._publish(dirty)
            await asyncio.sleep(self._interval)  # the throttle: a busy shop's changes go out in batches

    async def _publish(self, dirty: set[int]) -> None:
        # Operators of the same sites share one board, computed once.
        boards: dict[tuple[int, ...], tuple[JsonObject, int]] = {}
        for channel, account in list(self._watchers.items()):
            if account.site_ids and not (set(account.site_ids) & dirty):
                continue
            if account.site_ids not in boards:
                board = self._board_for(account)
                boards[account.site_ids] = board, _fingerprint(board)
            board, fingerprint = boards[account.site_ids]
            if self._sent.get(channel) == fingerprint:
                continue  # nothing this operator would see has changed
            try:
                await self._send(channel, board, fingerprint)
            except Exception:
                log.exception("the visitors board could not be sent to %s", account.email)

    async def close(self) -> None:
        """Stop publishing; safe to call twice."""
        self._unlisten()
        if self._task is not None:
            await stop_task(self._task)
            self._task = None


class SharedFloor(Protocol):
    """What a `BoardShare` hands on to this node (`callserver/visitors/floor.py`, `ShopFloor`)."""

    async def card_arrived(self, card: LiveVisitor) -> None:
        """Another node's card of a visitor."""

    def reach_changed(self, site_id: int) -> None:
        """Whether a visitor of this site can be reached elsewhere changed."""

    async def tell_here(self, site_id: int, token: str, event: dict[str, object]) -> bool:
        """An event for the visitor's streams on this node; whether one took it."""


class BoardShare(Protocol):
    """How this node's board meets the other nodes' boards (`callserver/cluster/board.py`)."""

    async def start(self, floor: SharedFloor) -> None:
        """Begin sharing: what the other nodes send goes to `floor`."""

    def card_changed(self, visitor: LiveVisitor) -> None:
        """This node changed `visitor`'s card (sent to the others soon, in a batch)."""

    def listening(self, site_id: int, token: str, on: bool) -> None:
        """Whether this visitor has an open event stream on this node now."""

    def listening_elsewhere(self, site_id: int, token: str) -> bool:
        """Whether another node holds an open event stream of this visitor."""

    async def tell_elsewhere(self, site_id: int, token: str, event: dict[str, object]) -> bool:
        """Send an event to the visitor's streams on other nodes; whether one was known to be open."""

    async def recall(self, site_id: int, token: str) -> LiveVisitor | None:
        """The visitor's card as the nodes last saved it (before a beacon: the visitor's last beacon may
        have gone to another node, or this one restarted)."""

    async def flush(self) -> None:
        """Save and send the changed cards now (after a beacon, before its answer: the visitor's next
        beacon may go to another node)."""

    async def close(self) -> None:
        """Stop sharing; safe to call twice."""


class LocalShare:
    """A node alone: nothing to share."""

    async def start(self, floor: SharedFloor) -> None:
        return None

    def card_changed(self, visitor: LiveVisitor) -> None:
        return None

    def listening(self, site_id: int, token: str, on: bool) -> None:
        return None

    def listening_elsewhere(self, site_id: int, token: str) -> bool:
        return False

    async def tell_elsewhere(self, site_id: int, token: str, event: dict[str, object]) -> bool:
        return False

    async def recall(self, site_id: int, token: str) -> LiveVisitor | None:
        return None

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None
