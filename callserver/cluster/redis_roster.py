"""The roster shared by the nodes of a cluster: operators' presence, softphones and load in Redis.

Redis holds, per operator, a hash (`callserver:operator:ID`: the account, presence, the call they are
in, the chats each node gave them) and a sorted set of the nodes where a softphone of theirs is open
(`callserver:softphones:ID`, scored by the time the entry expires, as Chatwoot keeps presence). Each
node renews its own entries every `beat` seconds; a node that dies stops renewing, and within `ttl`
seconds its operators' softphones are gone everywhere. Every change is announced on
`callserver:roster`, and every node keeps a mirror of all seats, reloaded on each announcement and on
each beat, so the switchboard and the desk read seats without waiting (the `Roster` protocol stays
synchronous). A seat's `channels` are this node's open softphones plus one relayed channel per other
node with a softphone open: telling it `incoming` on node B reaches the operator's softphone on node A
through the relay (`callserver/cluster/relay.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from redis.asyncio import Redis

from callserver.accounts import Account
from callserver.background import BackgroundTasks, stop_task
from callserver.clock import Clock, LoopClock, Timer
from callserver.cluster.listener import ChannelListener
from callserver.cluster.relay import NodeUnreachable, Relay
from callserver.operators.roster import OperatorChannel, Presence, Seat, Seats
from callserver.wire.outbound import Frame, JsonObject

log = logging.getLogger(__name__)

OPERATORS = "callserver:operators"  # every operator id a node has seen
ANNOUNCE = "callserver:roster"  # pub/sub: {"operator_id", "from"} after each change
TELL = "operator.tell"  # relay frames for an operator's softphones on the receiving node


def operator_key(operator_id: int) -> str:
    return f"callserver:operator:{operator_id}"


def softphones_key(operator_id: int) -> str:
    return f"callserver:softphones:{operator_id}"


@dataclass(frozen=True)
class RelayedFrame(Frame):
    """A chat frame that came through the relay, sent on as it was encoded."""

    TYPE: ClassVar[str] = "relayed"
    frame: JsonObject

    def encode(self) -> JsonObject:
        return dict(self.frame)


class RelayedChannel:
    """The softphones of one operator on another node, told through the relay.

    A node that cannot be reached is logged, not raised: the switchboard tells seats while ringing,
    and one unreachable node must not stop a call ringing the others.
    """

    def __init__(self, relay: Relay, node: str, operator_id: int) -> None:
        self.relay = relay
        self.node = node
        self.operator_id = operator_id

    async def _tell(self, method: str, *args: object) -> None:
        body = {"operator_id": self.operator_id, "method": method, "args": list(args)}
        try:
            await self.relay.tell(self.node, TELL, body)
        except NodeUnreachable:
            log.warning("operator %s on node %s missed %s", self.operator_id, self.node, method)

    async def incoming(self, call: dict[str, object]) -> None:
        await self._tell("incoming", call)

    async def withdrawn(self, call_id: str, reason: str) -> None:
        await self._tell("withdrawn", call_id, str(reason))

    async def answer(self, call_id: str, sdp: str) -> None:
        await self._tell("answer", call_id, sdp)

    async def connected(self, call_id: str) -> None:
        await self._tell("connected", call_id)

    async def ended(self, call_id: str, reason: str) -> None:
        await self._tell("ended", call_id, str(reason))

    async def presence(self, status: Presence) -> None:
        # Each node tells its own softphones when it hears of the change (see RedisRoster._reload).
        return None

    async def transferred(self, call_id: str, to_name: str) -> None:
        await self._tell("transferred", call_id, to_name)

    async def transfer_failed(self, call_id: str, reason: str) -> None:
        await self._tell("transfer_failed", call_id, reason)

    async def chat_event(self, frame: Frame) -> None:
        await self._tell("chat_event", frame.encode())

    async def call_event(self, frame: Frame) -> None:
        await self._tell("call_event", frame.encode())


async def tell_channel(channel: OperatorChannel, method: str, args: list[object]) -> None:
    """Play a relayed call on one of this node's softphones."""
    match method, args:
        case "incoming", [dict() as call]:
            await channel.incoming(call)
        case "withdrawn", [str() as call_id, str() as reason]:
            await channel.withdrawn(call_id, reason)
        case "answer", [str() as call_id, str() as sdp]:
            await channel.answer(call_id, sdp)
        case "connected", [str() as call_id]:
            await channel.connected(call_id)
        case "ended", [str() as call_id, str() as reason]:
            await channel.ended(call_id, reason)
        case "transferred", [str() as call_id, str() as to_name]:
            await channel.transferred(call_id, to_name)
        case "transfer_failed", [str() as call_id, str() as reason]:
            await channel.transfer_failed(call_id, reason)
        case "chat_event", [dict() as frame]:
            await channel.chat_event(RelayedFrame(frame))
        case "call_event", [dict() as frame]:
            await channel.call_event(RelayedFrame(frame))
        case _:
            log.warning("relay: no softphone call %r with %d argument(s)", method, len(args))


def _account_json(account: Account) -> str:
    return json.dumps(
        {
            "id": account.id,
            "email": account.email,
            "name": account.name,
            "role": account.role,
            "site_ids": list(account.site_ids),
        }
    )


def _account_from(text: str) -> Account:
    data = json.loads(text)
    return Account(
        int(data["id"]), str(data["email"]), str(data["name"]), str(data["role"]), tuple(data["site_ids"])
    )


class RedisRoster(Seats):
    """Operators of every node, mirrored here from Redis; `close()` is safe to call twice."""

    def __init__(
        self,
        redis: Redis,
        relay: Relay,
        presence_grace: float,
        clock: Clock | None = None,
        ttl: float = 10.0,
        beat: float = 2.0,
    ) -> None:
        super().__init__()
        self._redis = redis
        self._relay = relay
        self.node = relay.node
        self._presence_grace = presence_grace
        self._clock = clock or LoopClock()
        self._ttl = ttl
        self._beat = beat
        self._local: dict[int, list[OperatorChannel]] = {}  # this node's open softphones
        self._remote: dict[tuple[int, str], RelayedChannel] = {}  # kept: the switchboard compares by identity
        self._stored_presence: dict[int, Presence] = {}
        self._chats_here: dict[int, set[str]] = {}  # the chats this node's desk gave each operator
        self._writing: dict[int, int] = {}  # writes in flight per operator: a reload must not undo them
        self._offline_timers: dict[int, Timer] = {}
        self._background = BackgroundTasks("redis roster")
        self._loops: list[asyncio.Task[None]] = []
        self._announcements = ChannelListener(redis, ANNOUNCE, self._announced)
        self._unhandle = relay.on(TELL, self._told)
        self._closed = False

    async def start(self) -> None:
        """Load every seat, then listen for changes and renew this node's softphones."""
        await self.reload_all()
        await self._announcements.start()
        self._loops = [asyncio.get_running_loop().create_task(self._heartbeat())]

    # Reading -----------------------------------------------------------------------------------

    def seat(self, account: Account) -> Seat:
        seat = self._seats.get(account.id)
        if seat is None:
            seat = self._seats[account.id] = Seat(account=account, idle_since=self._clock.now())
            self._background.spawn(self._write(account.id, self._remember(account)))
        return seat

    def local_channels(self, operator_id: int) -> list[OperatorChannel]:
        return list(self._local.get(operator_id, ()))

    def relayed(self, operator_id: int, node: str) -> RelayedChannel:
        """The channel that reaches the operator's softphones on `node` (this node: the local ones)."""
        channel = self._remote.get((operator_id, node))
        if channel is None:
            channel = self._remote[(operator_id, node)] = RelayedChannel(self._relay, node, operator_id)
        return channel

    # Presence ----------------------------------------------------------------------------------

    def join(self, account: Account, channel: OperatorChannel) -> Callable[[], None]:
        """Register a softphone open on this node; returns the function that unregisters it."""
        seat = self.seat(account)
        self._local.setdefault(account.id, []).append(channel)
        seat.channels.insert(len(self._local[account.id]) - 1, channel)
        timer = self._offline_timers.pop(account.id, None)
        if timer:
            timer.cancel()
        if (stored := self._stored_presence.get(account.id)) is not None:
            seat.presence = stored
        self._background.spawn(self._write(account.id, self._renew(account.id)))

        def leave() -> None:
            local = self._local.get(account.id, [])
            if channel in local:
                local.remove(channel)
            if channel in seat.channels:
                seat.channels.remove(channel)
            if not local:
                self._local.pop(account.id, None)
                self._background.spawn(self._write(account.id, self._left(account.id)))
                if not seat.channels and account.id not in self._offline_timers:
                    self._offline_timers[account.id] = self._clock.call_later(
                        self._presence_grace, lambda: self._went_away(account.id)
                    )

        return leave

    def _went_away(self, operator_id: int) -> None:
        self._offline_timers.pop(operator_id, None)
        seat = self._seats.get(operator_id)
        if seat and not seat.channels:
            log.info("operator %s is offline: softphone gone", seat.account.email)
            self._background.spawn(self.set_presence(operator_id, Presence.OFFLINE))

    async def set_presence(self, operator_id: int, status: Presence) -> Seat:
        """The operator chose a presence: stored, announced, their softphones here told, then listeners.

        Other nodes tell their own softphones when they hear the announcement.
        """
        seat = self._seats[operator_id]
        seat.presence = status
        self._stored_presence[operator_id] = status
        fields: dict[str, str] = {"presence": str(status)}
        if status is Presence.ONLINE and seat.call_id is None:
            seat.idle_since = max(seat.idle_since, self._clock.now())
            fields["idle_wall"] = str(self._wall(seat.idle_since))
        await self._write(operator_id, self._store(operator_id, fields))
        for channel in self.local_channels(operator_id):
            await channel.presence(status)
        await self._changed(seat)
        return seat

    # Load --------------------------------------------------------------------------------------

    def took_call(self, operator_id: int, call_id: str) -> None:
        self._seats[operator_id].call_id = call_id
        self._spawn_write(operator_id, self._store(operator_id, {"call_id": call_id}))

    def released_call(self, operator_id: int) -> None:
        seat = self._seats[operator_id]
        seat.call_id = None
        seat.idle_since = self._clock.now()
        self._spawn_write(
            operator_id,
            self._store(operator_id, {"idle_wall": str(self._wall(seat.idle_since))}, drop=("call_id",)),
        )

    def took_chat(self, operator_id: int, chat_id: str) -> None:
        self._seats[operator_id].chats.add(chat_id)
        self._chats_here.setdefault(operator_id, set()).add(chat_id)
        self._store_chats(operator_id)

    def released_chat(self, operator_id: int, chat_id: str) -> None:
        seat = self._seats.get(operator_id)
        if seat is not None:
            seat.chats.discard(chat_id)
            self._chats_here.get(operator_id, set()).discard(chat_id)
            self._store_chats(operator_id)

    def released_chats(self, operator_id: int) -> None:
        """This node's chats of the operator went back to its queue (other nodes keep theirs)."""
        seat = self._seats.get(operator_id)
        if seat is not None:
            seat.chats.difference_update(self._chats_here.pop(operator_id, set()))
            self._store_chats(operator_id)

    def _store_chats(self, operator_id: int) -> None:
        chats = sorted(self._chats_here.get(operator_id, ()))
        self._spawn_write(operator_id, self._store(operator_id, {f"chats@{self.node}": json.dumps(chats)}))

    # Redis -------------------------------------------------------------------------------------

    def _wall(self, at: float) -> float:
        """A time of this node's clock as Unix time (nodes' monotonic clocks cannot be compared)."""
        return time.time() - (self._clock.now() - at)

    def _spawn_write(self, operator_id: int, write: Coroutine[object, None, None]) -> None:
        self._background.spawn(self._write(operator_id, write))

    async def _write(self, operator_id: int, write: Coroutine[object, None, None]) -> None:
        """Run one write of the operator's entries, then announce it; reloads wait for it."""
        self._writing[operator_id] = self._writing.get(operator_id, 0) + 1
        try:
            await write
            await self._redis.publish(ANNOUNCE, json.dumps({"operator_id": operator_id, "from": self.node}))
        finally:
            self._writing[operator_id] -= 1
            if not self._writing[operator_id]:
                del self._writing[operator_id]

    async def _remember(self, account: Account) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.sadd(OPERATORS, account.id)
            pipe.hset(operator_key(account.id), "account", _account_json(account))
            await pipe.execute()

    async def _store(self, operator_id: int, fields: Mapping[str, str], drop: tuple[str, ...] = ()) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            for name, value in fields.items():
                pipe.hset(operator_key(operator_id), name, value)
            if drop:
                pipe.hdel(operator_key(operator_id), *drop)
            await pipe.execute()

    async def _renew(self, *operator_ids: int) -> None:
        deadline = time.time() + self._ttl
        async with self._redis.pipeline(transaction=False) as pipe:
            for operator_id in operator_ids:
                pipe.zadd(softphones_key(operator_id), {self.node: deadline})
            await pipe.execute()

    async def _left(self, operator_id: int) -> None:
        await self._redis.zrem(softphones_key(operator_id), self.node)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._beat)
            try:
                if self._local:
                    await self._renew(*self._local)
                await self.reload_all()
            except Exception as e:  # Redis away for a moment: try again on the next beat
                log.warning("roster: could not renew or reload the seats: %s", e)

    async def _announced(self, news: dict[str, Any]) -> None:
        """Another node changed an operator's seat: read it again (what was missed, the beat reloads)."""
        if news.get("from") != self.node and isinstance(operator_id := news.get("operator_id"), int):
            await self._reload([operator_id])

    async def reload_all(self) -> None:
        """Read every operator's seat from Redis into the mirror."""
        ids = [int(i) for i in await self._redis.smembers(OPERATORS)]
        await self._reload(ids)

    async def _reload(self, operator_ids: list[int]) -> None:
        if not operator_ids:
            return
        now = time.time()
        async with self._redis.pipeline(transaction=False) as pipe:
            for operator_id in operator_ids:
                pipe.hgetall(operator_key(operator_id))
                pipe.zrangebyscore(softphones_key(operator_id), now, "+inf")
            found = await pipe.execute()
        for i, operator_id in enumerate(operator_ids):
            # The client decodes replies (callserver/cluster/redis.py): names and values are text.
            stored: dict[str, str] = found[2 * i]
            nodes = set(found[2 * i + 1])
            if operator_id not in self._writing and "account" in stored:
                await self._mirror(operator_id, stored, nodes)

    async def _mirror(self, operator_id: int, stored: dict[str, str], nodes: set[str]) -> None:
        """Bring one seat up to what Redis holds; listeners hear of a change of presence."""
        seat = self._seats.get(operator_id)
        if seat is None:
            seat = self._seats[operator_id] = Seat(account=_account_from(stored["account"]))
        was = seat.presence
        presence = Presence(stored.get("presence", Presence.OFFLINE))
        self._stored_presence[operator_id] = presence
        local = self._local.get(operator_id, [])
        remote = [self.relayed(operator_id, n) for n in sorted(nodes - {self.node})]
        seat.channels[:] = [*local, *remote]
        if not seat.channels and operator_id not in self._offline_timers:
            # Softphones gone everywhere (a node died, or they left long ago): not online for calls.
            presence = Presence.OFFLINE if presence is Presence.ONLINE else presence
        seat.presence = presence
        seat.call_id = stored.get("call_id") or None
        if "idle_wall" in stored:
            seat.idle_since = self._clock.now() - (time.time() - float(stored["idle_wall"]))
        elsewhere: set[str] = set()
        for name, value in stored.items():
            if name.startswith("chats@") and name != f"chats@{self.node}" and name[6:] in nodes:
                elsewhere.update(json.loads(value))
        seat.chats.clear()
        seat.chats.update(elsewhere | self._chats_here.get(operator_id, set()))
        if seat.presence is not was:
            for channel in local:
                with contextlib.suppress(Exception):
                    await channel.presence(seat.presence)
            await self._changed(seat)

    async def _told(self, sender: str, body: dict[str, Any]) -> None:
        """A relayed call for an operator's softphones on this node."""
        operator_id, method, args = int(body["operator_id"]), str(body["method"]), list(body["args"])
        for channel in self.local_channels(operator_id):
            try:
                await tell_channel(channel, method, args)
            except Exception:
                log.warning("could not tell operator %s %s (from node %s)", operator_id, method, sender)

    async def close(self) -> None:
        """Take this node's softphones out of Redis, stop listening; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._unhandle()
        for timer in self._offline_timers.values():
            timer.cancel()
        self._offline_timers.clear()
        await self._announcements.close()
        for task in self._loops:
            await stop_task(task)
        with contextlib.suppress(Exception):
            async with self._redis.pipeline(transaction=False) as pipe:
                for operator_id in self._local:
                    pipe.zrem(softphones_key(operator_id), self.node)
                await pipe.execute()
        await self._background.close(grace=1.0)
