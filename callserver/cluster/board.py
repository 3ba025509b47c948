"""The visitors board across nodes: each node keeps every node's visitor cards, through Redis.

A visitor's beacons may reach any node and the operators watching the board sit on any node, so each
node's `VisitorBoard` holds the others' cards as its own (bounded like today: `MAX_VISITORS_PER_SITE`
per site, forgotten after `forget_after`). What one node changes of a card goes out within
`flush_every`, in one batch on the shared channel `callserver:board`, and is kept under
`callserver:card:SITE:TOKEN` for `forget_after` seconds, so a node that starts later (or restarted)
finds the visit there when the visitor's next beacon reaches it. The newer card wins (`updated`);
each node's publisher then pushes its own softphones by the usual rules (top rows and the total, at
most every 0.5 s, only when changed).

Invitations: a node says on the same channel when a visitor's event stream opens or closes there, so
every node knows whether a visitor is reachable; an event for the visitor (an invitation, an
operator's ring) is published once and the node holding the stream delivers it. A node that starts
asks the others to say again which streams they hold; one that stops says so. A node killed
outright cannot: once the node registry has dropped it (no heartbeat for `DEAD_AFTER` seconds, seen
in `MISSING_ROUNDS` checks in a row, so that a Redis restart, after which every node registers again
within a heartbeat, drops nobody), its streams are no longer counted, as when a stream ends on one
node, and the others are asked to say again what they hold; its visitors' widgets reconnect to a
live node within the stream's retry.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Mapping

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from callserver.background import BackgroundTasks, stop_task
from callserver.cluster.broadcast import Broadcast
from callserver.cluster.nodes import HEARTBEAT_EVERY, node_key
from callserver.visitors.board import LiveVisitor, PageViewLive, SharedFloor

log = logging.getLogger(__name__)

CHANNEL = "callserver:board"
BATCH = 200  # cards per published frame: a busy shop's flush stays a few hundred KB at most
REDIS_ERRORS = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)
MISSING_ROUNDS = 3  # checks in a row (a heartbeat apart) without a node's registry entry: it is gone

Key = tuple[int, str]


def card_key(site_id: int, token: str) -> str:
    return f"callserver:card:{site_id}:{token}"


def card_of(visitor: LiveVisitor) -> dict[str, object]:
    """A visitor's card as it travels (all but `gone`, which each node keeps for its own softphones)."""
    card = dataclasses.asdict(visitor)
    card.pop("gone", None)
    return card


def visitor_of(card: Mapping[str, object]) -> LiveVisitor | None:
    """The visitor a card describes; None for a card this version doesn't read (logged)."""
    try:
        values = dict(card)
        views = [PageViewLive(**v) for v in values.pop("views", []) or []]  # type: ignore[attr-defined]
        values.pop("gone", None)
        return LiveVisitor(**values, views=views)  # type: ignore[arg-type]
    except (TypeError, ValueError, AttributeError) as e:
        log.warning("a visitor card that can't be read (%s)", e)
        return None


class RedisBoardShare:
    """This node's end of the shared board; `start()` once the loop runs, `close()` is idempotent."""

    def __init__(
        self,
        redis: Redis,
        node: str,
        forget_after: float = 1800.0,
        flush_every: float = 0.1,
        check_every: float = HEARTBEAT_EVERY,
    ) -> None:
        self._redis = redis
        self.node = node
        self._forget_after = forget_after
        self._flush_every = flush_every
        self._check_every = check_every
        self._missing: dict[str, int] = {}  # nodes holding streams, by checks without their entry
        self._broadcast = Broadcast(redis, CHANNEL, node, self._heard)
        self._floor: SharedFloor | None = None
        self._dirty: dict[Key, LiveVisitor] = {}
        self._here: set[Key] = set()  # visitors with an open stream on this node
        self._elsewhere: dict[Key, set[str]] = {}  # … and the other nodes holding one
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._checker: asyncio.Task[None] | None = None
        self._background = BackgroundTasks("board share")
        self._failing = False
        self.cards_sent = 0
        self.cards_heard = 0
        self._closed = False

    async def start(self, floor: SharedFloor) -> None:
        self._floor = floor
        await self._broadcast.start()
        self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())
        self._checker = asyncio.get_running_loop().create_task(self._check_loop())
        await self._broadcast.publish({"hello": True})  # the others say again which streams they hold

    # What this node tells ---------------------------------------------------------------------

    def card_changed(self, visitor: LiveVisitor) -> None:
        self._dirty[(visitor.site_id, visitor.token)] = visitor
        self._wake.set()

    def listening(self, site_id: int, token: str, on: bool) -> None:
        key = (site_id, token)
        if on:
            self._here.add(key)
        else:
            self._here.discard(key)
        self._background.spawn(self._broadcast.publish({"listening": [[site_id, token, on]]}))

    def listening_elsewhere(self, site_id: int, token: str) -> bool:
        return bool(self._elsewhere.get((site_id, token)))

    async def tell_elsewhere(self, site_id: int, token: str, event: dict[str, object]) -> bool:
        if not self.listening_elsewhere(site_id, token):
            return False
        return await self._broadcast.publish({"tell": {"site_id": site_id, "token": token, "event": event}})

    async def recall(self, site_id: int, token: str) -> LiveVisitor | None:
        try:
            text = await self._redis.get(card_key(site_id, token))
        except REDIS_ERRORS as e:
            log.warning("could not look up visitor %s… in Redis (%s)", token[:8], e)
            return None
        if not text:
            return None
        try:
            card = json.loads(text)
        except ValueError:
            return None
        return visitor_of(card) if isinstance(card, dict) else None

    async def flush(self) -> None:
        dirty, self._dirty = self._dirty, {}
        cards = [card_of(v) for v in dirty.values()]
        for start in range(0, len(cards), BATCH):
            await self._send(cards[start : start + BATCH])

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self._flush_every)  # what changes meanwhile goes in the same batch
            self._wake.clear()
            await self.flush()

    async def _send(self, cards: list[dict[str, object]]) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for card in cards:
                    key = card_key(int(str(card["site_id"])), str(card["token"]))
                    pipe.set(key, json.dumps(card), ex=int(self._forget_after))
                await pipe.execute()
        except REDIS_ERRORS as e:
            if not self._failing:
                log.warning("visitor cards could not be kept in Redis (%s): other nodes may miss them", e)
            self._failing = True
            return
        self._failing = False
        if await self._broadcast.publish({"cards": cards}):
            self.cards_sent += len(cards)

    # What the other nodes tell ----------------------------------------------------------------

    async def _heard(self, sender: str, body: dict[str, object]) -> None:
        if sender == self.node or self._floor is None:
            return
        floor = self._floor
        cards = body.get("cards")
        if isinstance(cards, list):
            for card in cards:
                visitor = visitor_of(card) if isinstance(card, dict) else None
                if visitor is not None:
                    await floor.card_arrived(visitor)
                    self.cards_heard += 1
        listening = body.get("listening")
        if isinstance(listening, list):
            for site_id, token, on in listening:
                key = (int(site_id), str(token))
                nodes = self._elsewhere.setdefault(key, set())
                if on:
                    nodes.add(sender)
                else:
                    nodes.discard(sender)
                if not nodes:
                    del self._elsewhere[key]
                floor.reach_changed(key[0])
        if body.get("hello") and self._here:
            entries = [[s, t, True] for s, t in self._here]
            for start in range(0, len(entries), BATCH):
                await self._broadcast.publish({"listening": entries[start : start + BATCH]})
        if body.get("bye"):
            self._forget_streams_of(sender)
        tell = body.get("tell")
        if isinstance(tell, dict):
            event = tell.get("event")
            if isinstance(event, dict):
                await floor.tell_here(int(tell["site_id"]), str(tell["token"]), event)

    def _forget_streams_of(self, node: str) -> None:
        """Node `node` holds no stream any more (it stopped, or died)."""
        self._missing.pop(node, None)
        for key, nodes in list(self._elsewhere.items()):
            if node in nodes:
                nodes.discard(node)
                if not nodes:
                    del self._elsewhere[key]
                if self._floor is not None:
                    self._floor.reach_changed(key[0])

    async def check_nodes(self) -> list[str]:
        """Forget the streams of nodes the registry dropped; returns those forgotten this time."""
        holding = sorted({n for nodes in self._elsewhere.values() for n in nodes})
        for node in set(self._missing) - set(holding):
            del self._missing[node]
        if not holding:
            return []
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for node in holding:
                    pipe.exists(node_key(node))
                registered = await pipe.execute()
        except REDIS_ERRORS as e:  # Redis away: nobody is judged meanwhile
            log.warning("could not check which nodes hold visitors' streams (%s)", e)
            return []
        gone = []
        for node, present in zip(holding, registered, strict=True):
            if present:
                self._missing.pop(node, None)
                continue
            self._missing[node] = self._missing.get(node, 0) + 1
            if self._missing[node] >= MISSING_ROUNDS:
                log.warning("node %s is gone: its visitors' streams are no longer counted", node)
                self._forget_streams_of(node)
                gone.append(node)
        if gone:  # a node dropped by mistake (alive, but late) says again what it holds
            await self._broadcast.publish({"hello": True})
        return gone

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(self._check_every)
            try:
                await self.check_nodes()
            except Exception:
                log.exception("checking the nodes that hold visitors' streams failed")

    async def close(self) -> None:
        """Send what is pending, say goodbye, stop listening; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._checker is not None:
            await stop_task(self._checker)
        if self._flusher is not None:
            await stop_task(self._flusher)
            await self.flush()
            await self._broadcast.publish({"bye": True})
        await self._background.close()
        await self._broadcast.close()
