"""Chats across the nodes of a cluster: where each chat lives, operators acting on it from another node,
and the queues of every node seen by every operator.

A chat lives in the desk of the node that took it (the node of the visitor's socket), as a call lives
on the node that took the offer. Redis says which node that is (`callserver:chat:ID`, renewed with
each beat, gone `ttl` seconds after a node stops) and what waits in each node's queue
(`callserver:waiting:NODE`, the same). The desk already reaches operators on other nodes through
their seats (the roster's relayed channels: `chat.assigned`, `chat.message`, receipts, typing,
`chat.closed` and `chat.queue` travel as relay tells). What comes the other way — an operator's
`chat.send`, typing, read, close, pick, transfer or call offer on a chat held elsewhere — travels as a
relay *request* to the chat's node. What that node sends the operator's socket (the ack) and their
other softphones comes back at once as tells, ahead of the reply; the reply ends the request, or
carries the domain error with its code.

A chat waiting on one node is given to an operator who frees up on another: every beat, a node with
waiting chats drains its queue against the roster (seats and chat counts are mirrored from Redis).

An operator's chats are counted against `max_chats` in Redis, as an answer is claimed with `SET NX`:
`callserver:seat_chats:ID` is a sorted set of their chats, each scored with the time its claim expires.
A Lua script drops the expired claims and adds the chat only while fewer than the limit remain, so two
nodes giving chats at the same moment cannot put an operator over it. The chat's node renews its claims
every beat (and the claiming node adds back its own, so that after a Redis restart the count is
rebuilt within a beat); the claims of a node that died expire `ttl` seconds after its last beat.

A waiting visitor's place counts the waiting chats of their site on every node, by when each started
waiting. A node whose queue changed says so on `callserver:queue`; the others tell their waiting
visitors whose place moved (and check again every beat, for news lost or a node that died).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from typing import Any

from redis.asyncio import Redis

from callserver.background import stop_task
from callserver.chats.channels import ChatChannel
from callserver.chats.desk import ChatDesk
from callserver.chats.errors import UnknownChat
from callserver.chats.places import WaitingChat
from callserver.cluster.broadcast import Broadcast
from callserver.cluster.nodes import DEAD_AFTER, HEARTBEAT_EVERY, NODES
from callserver.cluster.redis_roster import RedisRoster, RelayedFrame, operator_key
from callserver.cluster.relay import NodeUnreachable, Relay
from callserver.errors import NotOnline
from callserver.operators.roster import Seat
from callserver.wire.outbound import Frame, JsonObject

log = logging.getLogger(__name__)

ACTION = "chat.action"  # relay requests: an operator's action on a chat held by the receiving node
ENTRIES = "chat.entries"  # relay requests: an operator's chats held by the receiving node, for `hello`
HAND_OVER = "chat.hand_over"  # relay requests: the receiving node lets a chat go to the asking node
TO_ORIGIN = "chat.to_origin"  # relay tells: frames for the socket (or softphones) an action came from
QUEUE = "callserver:queue"  # shared channel: a node's queue changed

# KEYS[1]: the operator's claims; ARGV: the chat, now and the claim's expiry (Unix ms), the limit, the
# key's TTL (ms), then the chats this node already holds for them (added back: Redis may have restarted).
CLAIM = """
local key, chat = KEYS[1], ARGV[1]
local now, expires, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
for i = 6, #ARGV do redis.call('ZADD', key, expires, ARGV[i]) end
if redis.call('ZSCORE', key, chat) or redis.call('ZCARD', key) < limit then
  redis.call('ZADD', key, expires, chat)
  redis.call('PEXPIRE', key, ARGV[5])
  return 1
end
return 0
"""


def chat_key(chat_id: str) -> str:
    return f"callserver:chat:{chat_id}"


def waiting_key(node: str) -> str:
    return f"callserver:waiting:{node}"


def claims_key(operator_id: int) -> str:
    return f"callserver:seat_chats:{operator_id}"


class ToAsker:
    """What the desk sends the socket an action came from (or its other softphones on that node): told
    to the asking node at once, so the `chat.ack` does not wait for the rest of the action (delivery
    to the widget, receipts)."""

    def __init__(self, relay: Relay, node: str, token: str, echo: bool = False) -> None:
        self._relay, self._node, self._token, self._echo = relay, node, token, echo

    async def chat_event(self, frame: Frame) -> None:
        body = {"token": self._token, "echo": self._echo, "frame": frame.encode()}
        try:
            await self._relay.tell(self._node, TO_ORIGIN, body)
        except NodeUnreachable:
            log.warning("node %s missed %s for an operator's socket", self._node, frame.TYPE)


class ForwardedOrigin(ToAsker):
    """The socket of an operator on another node whose action came through the relay.

    `covers` is the relayed channel to that node's softphones of theirs: the desk's echo of a message
    skips it (the asking node echoes to its own softphones, not to the one that sent it) and goes to
    `echo` instead.
    """

    def __init__(self, relay: Relay, node: str, token: str, covers: object) -> None:
        super().__init__(relay, node, token)
        self.covers = covers
        self.echo = ToAsker(relay, node, token, echo=True)


class ClusterChats:
    """The desk's `ChatPlaces` in a cluster, and this node's answers to other nodes' chat requests."""

    def __init__(
        self,
        redis: Redis,
        relay: Relay,
        roster: RedisRoster,
        ttl: float = DEAD_AFTER,
        beat: float = HEARTBEAT_EVERY,
    ) -> None:
        self._redis = redis
        self._relay = relay
        self.node = relay.node
        self._roster = roster
        self._ttl_ms = int(ttl * 1000)
        self._beat = beat
        self._desk: ChatDesk | None = None
        self._claim = redis.register_script(CLAIM)
        self._queue = Broadcast(redis, QUEUE, self.node, self._queue_moved)
        self._unhandle = [
            relay.on(ACTION, self._act),
            relay.on(ENTRIES, self._entries),
            relay.on(HAND_OVER, self._hand_over),
            relay.on(TO_ORIGIN, self._to_origin),
        ]
        # The sockets whose actions are on their way to other nodes, by token (see ToAsker).
        self._asking: dict[str, tuple[int, ChatChannel | None]] = {}
        self._loop: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self, desk: ChatDesk) -> None:
        """Serve `desk`'s chats to other nodes and renew them in Redis every beat."""
        self._desk = desk
        await self._queue.start()
        self._loop = asyncio.get_running_loop().create_task(self._beats())

    @property
    def desk(self) -> ChatDesk:
        if self._desk is None:
            raise RuntimeError("ClusterChats has not started")
        return self._desk

    # ChatPlaces ---------------------------------------------------------------------------------

    async def holding(self, chat_id: str) -> None:
        try:
            await self._redis.set(chat_key(chat_id), self.node, px=self._ttl_ms)
        except Exception as e:
            log.error("chat %s: could not say in Redis that this node holds it: %s", chat_id, e)

    async def released(self, chat_id: str) -> None:
        with contextlib.suppress(Exception):
            await self._redis.delete(chat_key(chat_id))

    async def take_over(self, chat_id: str) -> None:
        node = await self._redis.get(chat_key(chat_id))
        if node is None or node == self.node:
            return  # nobody holds it (its node died, or it was never live): it is revived here
        try:
            await self._relay.request(str(node), HAND_OVER, {"chat_id": chat_id})
        except NodeUnreachable:
            log.warning("chat %s: node %s did not let it go; it is taken over here", chat_id, node)
        await self.holding(chat_id)

    async def forward(
        self, seat: Seat, action: str, chat_id: str, origin: ChatChannel | None, args: JsonObject
    ) -> None:
        node = await self._redis.get(chat_key(chat_id))
        if node is None or node == self.node:
            raise UnknownChat(f"There is no open chat {chat_id!r}.")
        operator_id = seat.account.id
        token = uuid.uuid4().hex
        body = {
            "action": action,
            "operator_id": operator_id,
            "chat_id": chat_id,
            "args": args,
            "token": token,
        }
        self._asking[token] = (operator_id, origin)
        try:
            # Tells and the reply come in order on this node's channel: the ack is sent before this returns.
            await self._relay.request(str(node), ACTION, body)
        finally:
            del self._asking[token]

    async def _to_origin(self, sender: str, body: dict[str, Any]) -> None:
        asking = self._asking.get(str(body["token"]))
        if asking is None:
            return  # the request timed out meanwhile
        operator_id, origin = asking
        frame = RelayedFrame(dict(body["frame"]))
        if not body.get("echo"):
            if origin is not None:
                await origin.chat_event(frame)
            return
        for channel in self._roster.local_channels(operator_id):
            if channel is not origin:
                with contextlib.suppress(Exception):
                    await channel.chat_event(frame)

    def echo_channels(self, seat: Seat, origin: ChatChannel) -> list[ChatChannel]:
        if isinstance(origin, ForwardedOrigin):
            return [c for c in seat.channels if c is not origin.covers] + [origin.echo]
        return [c for c in seat.channels if c is not origin]

    async def claim(self, seat: Seat, chat_id: str, limit: int) -> bool:
        operator_id = seat.account.id
        now = int(time.time() * 1000)
        held = sorted(c for o, c in self.desk.assignments() if o == operator_id and c != chat_id)
        args: list[str | int] = [chat_id, now, now + self._ttl_ms, limit, self._ttl_ms, *held]
        try:
            return bool(await self._claim(keys=[claims_key(operator_id)], args=args))
        except Exception as e:  # Redis away: this node's count decides until it is back
            log.warning(
                "chat %s: could not claim a seat of operator %s in Redis: %s", chat_id, operator_id, e
            )
            return chat_id in seat.chats or len(seat.chats) < limit

    async def unclaim(self, operator_id: int, chat_id: str) -> None:
        try:
            await self._redis.zrem(claims_key(operator_id), chat_id)
        except Exception as e:  # it expires `ttl` seconds after this node last renewed it
            log.warning("chat %s: could not free operator %s's seat in Redis: %s", chat_id, operator_id, e)

    async def _renew_claims(self) -> None:
        """Keep this node's claims alive (and add them back after a Redis restart)."""
        held = self.desk.assignments()
        if not held:
            return
        expires = (time.time() * 1000) + self._ttl_ms
        async with self._redis.pipeline(transaction=False) as pipe:
            for operator_id, chat_id in held:
                pipe.zadd(claims_key(operator_id), {chat_id: expires})
                pipe.pexpire(claims_key(operator_id), self._ttl_ms)
            await pipe.execute()
        gone = set(held) - set(self.desk.assignments())  # released while the renewal was on its way
        if gone:
            async with self._redis.pipeline(transaction=False) as pipe:
                for operator_id, chat_id in gone:
                    pipe.zrem(claims_key(operator_id), chat_id)
                await pipe.execute()

    async def waiting_here(self, waiting: list[WaitingChat]) -> None:
        try:
            await self._keep_waiting(waiting)
        except Exception as e:
            log.warning("could not publish this node's chat queue: %s", e)
            return
        await self._queue.publish({"moved": True})

    async def _keep_waiting(self, waiting: list[WaitingChat]) -> None:
        if waiting:
            data = json.dumps([w.encode() for w in waiting])
            await self._redis.set(waiting_key(self.node), data, px=self._ttl_ms)
        else:
            await self._redis.delete(waiting_key(self.node))

    async def serve_older(self) -> None:
        await self._queue.publish({"drain": True})

    async def _queue_moved(self, sender: str, body: dict[str, object]) -> None:
        if sender == self.node or self._desk is None:
            return
        if body.get("drain"):
            await self._desk.drain()
        if body.get("moved"):
            await self._desk.queue_moved()

    async def waiting_elsewhere(self) -> list[WaitingChat]:
        try:
            nodes = [n for n in await self._live_nodes() if n != self.node]
            if not nodes:
                return []
            found = await self._redis.mget([waiting_key(n) for n in nodes])
        except Exception as e:
            log.warning("could not read the other nodes' chat queues: %s", e)
            return []
        waiting: list[WaitingChat] = []
        for text in found:
            if text:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    waiting.extend(WaitingChat.decode(w) for w in json.loads(text))
        return waiting

    async def chats_elsewhere(self, seat: Seat) -> list[JsonObject]:
        operator_id = seat.account.id
        try:
            # The client decodes replies (callserver/cluster/redis.py): names and values are text.
            stored: dict[str, str] = await self._redis.hgetall(operator_key(operator_id))  # type: ignore[assignment]
        except Exception as e:
            log.warning("could not read where operator %s has chats: %s", operator_id, e)
            return []
        nodes = sorted(
            name[len("chats@") :]
            for name, value in stored.items()
            if name.startswith("chats@") and name != f"chats@{self.node}" and value not in ("", "[]")
        )
        entries: list[JsonObject] = []
        for node in nodes:
            try:
                reply = await self._relay.request(node, ENTRIES, {"operator_id": operator_id})
            except Exception as e:  # that node is gone or slow: its chats come back with its queue
                log.warning("operator %s: could not list their chats on %s: %s", operator_id, node, e)
                continue
            entries.extend(reply.get("entries") or [])
        return entries

    async def _live_nodes(self) -> list[str]:
        since = (time.time() - self._ttl_ms / 1000) * 1000
        return [str(n) for n in await self._redis.zrangebyscore(NODES, since, "+inf")]

    # The chat's node ----------------------------------------------------------------------------

    async def _act(self, sender: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """An operator on node `sender` acts on a chat held here."""
        desk = self.desk
        action, operator_id, chat_id = str(body["action"]), int(body["operator_id"]), str(body["chat_id"])
        args: dict[str, Any] = body.get("args") or {}
        if not desk.holds(chat_id):
            raise UnknownChat(f"There is no open chat {chat_id!r}.")
        seat = self._roster.seat_of(operator_id)
        if seat is None:
            raise NotOnline("That operator is not online.")
        covers = self._roster.relayed(operator_id, sender)
        origin = ForwardedOrigin(self._relay, sender, str(body["token"]), covers)
        match action:
            case "send":
                client_id = args.get("client_id")
                text, client = str(args["text"]), str(client_id) if client_id is not None else None
                await desk.post_operator(seat, chat_id, text, client, origin)
            case "typing":
                await desk.operator_typing(seat, chat_id, bool(args["active"]))
            case "read":
                await desk.operator_read(seat, chat_id, int(args["up_to"]))
            case "close":
                await desk.operator_close(seat, chat_id)
            case "pick":
                await desk.pick(seat, chat_id)
            case "transfer":
                await desk.transfer(seat, chat_id, int(args["to"]))
            case "offer_call":
                await desk.offer_call(seat, chat_id)
            case _:
                raise UnknownChat(f"No action {action!r} on chats.")
        return None

    async def _hand_over(self, sender: str, body: dict[str, Any]) -> dict[str, Any]:
        """Node `sender` takes one of this node's chats: the visitor's socket is there now."""
        chat_id = str(body["chat_id"])
        handed = await self.desk.hand_over(chat_id)
        log.info("chat %s moved to node %s", chat_id, sender)
        return {"handed": handed}

    async def _entries(self, sender: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"entries": await self.desk.entries_for(int(body["operator_id"]))}

    # Beats --------------------------------------------------------------------------------------

    async def _beats(self) -> None:
        """Renew this node's chats and queue in Redis; give waiting chats to whoever freed up elsewhere."""
        while True:
            await asyncio.sleep(self._beat)
            desk = self.desk
            try:
                chat_ids = desk.chat_ids()
                if chat_ids:
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for chat_id in chat_ids:
                            pipe.set(chat_key(chat_id), self.node, px=self._ttl_ms)
                        await pipe.execute()
                await self._renew_claims()
                waiting = desk.waiting_here()
                if waiting:
                    await self._keep_waiting(waiting)
                    await desk.drain()
                    await desk.queue_moved()  # news lost, or a node that died: places move up
            except Exception as e:  # Redis away for a moment: the next beat
                log.warning("could not renew this node's chats: %s", e)

    async def close(self) -> None:
        """Stop answering and renewing; the chats stay open in the store. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for unhandle in self._unhandle:
            unhandle()
        if self._loop is not None:
            await stop_task(self._loop)
        await self._queue.close()
        with contextlib.suppress(Exception):
            await self._redis.delete(waiting_key(self.node))
