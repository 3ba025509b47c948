"""Calls across the nodes of a cluster: where each call's media lives, answering it from another node,
and ending the calls of a node that died.

A call lives on the node that took the shopper's offer (both legs in one media process there). Redis
says which node that is (`callserver:call:ID`) and which calls each node holds
(`callserver:calls:NODE`). An operator whose softphone is on another node answers, declines, holds or
hangs up through the relay: their node forwards the action to the call's node and hands back the
answer SDP; the operator's browser then connects its media straight to the call's node. Exactly one
operator wins a call: the answer is claimed with `SET NX PX` on `callserver:answer:ID`.

When a node's registry entry (`callserver/cluster/nodes.py`, renewed every 2 s, gone after 10 s)
disappears, one survivor (the one that takes `callserver:reap:NODE` with `SET NX`) ends that node's
calls as `dropped`, writes the records and tells the operators' softphones on the nodes still up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import select

from callserver import events
from callserver.background import stop_task
from callserver.calls.records import CallRecords
from callserver.calls.states import CallState, EndReason
from callserver.calls.switchboard import Switchboard
from callserver.cluster.nodes import node_key
from callserver.cluster.redis_roster import RedisRoster
from callserver.cluster.relay import Relay
from callserver.errors import UnknownCall
from callserver.store.database import Database
from callserver.store.models import Call, CallEvent

log = logging.getLogger(__name__)

ACTION = "call.action"  # relay requests: an operator's action on a call held by the receiving node
HOLDERS = "callserver:call-holders"  # names of the nodes that hold (or held) calls
CALL_TTL_MS = 12 * 3600 * 1000  # a call's entries outlive any call; ended calls delete them
ANSWER_TTL_MS = 3600 * 1000
REAP_TTL_MS = 30_000


def call_key(call_id: str) -> str:
    return f"callserver:call:{call_id}"


def calls_key(node: str) -> str:
    return f"callserver:calls:{node}"


def answer_key(call_id: str) -> str:
    return f"callserver:answer:{call_id}"


def reap_key(node: str) -> str:
    return f"callserver:reap:{node}"


class ClusterCalls:
    """The switchboard's `OtherNodes`: calls held elsewhere, and this node's in Redis."""

    def __init__(
        self,
        redis: Redis,
        relay: Relay,
        switchboard: Switchboard,
        roster: RedisRoster,
        records: CallRecords,
        database: Database,
        sink: events.EventSink,
        watch_every: float = 1.0,
        silent_rounds: int = 3,
    ) -> None:
        self._redis = redis
        self._relay = relay
        self.node = relay.node
        self._switchboard = switchboard
        self._roster = roster
        self._records = records
        self._database = database
        self._sink = sink
        self._watch_every = watch_every
        self._silent_rounds = silent_rounds
        self._silent: dict[str, int] = {}  # rounds in a row a node's relay channel had no listener
        self._unhandle = relay.on(ACTION, self._act)
        self._watch: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        """Take part: end what a previous run of this node left, then watch the other nodes."""
        await self._reap(self.node)
        await self._redis.sadd(HOLDERS, self.node)
        self._switchboard.other_nodes = self
        self._watch = asyncio.get_running_loop().create_task(self._watch_nodes())

    # OtherNodes --------------------------------------------------------------------------------

    async def holding(self, call_id: str) -> None:
        """This node holds the call's media from now on (operators elsewhere cannot answer it without)."""
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(call_key(call_id), self.node, px=CALL_TTL_MS)
                pipe.sadd(calls_key(self.node), call_id)
                pipe.sadd(HOLDERS, self.node)
                await pipe.execute()
        except Exception as e:
            log.error("call %s: could not say in Redis that this node holds it: %s", call_id, e)

    async def released(self, call_id: str) -> None:
        """The call ended here."""
        with contextlib.suppress(Exception):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(call_key(call_id))
                pipe.srem(calls_key(self.node), call_id)
                await pipe.execute()

    async def claim_answer(self, call_id: str, operator_id: int) -> bool:
        """Whether this operator is the one who answers the call (the first claim wins, cluster-wide)."""
        won = await self._redis.set(answer_key(call_id), str(operator_id), nx=True, px=ANSWER_TTL_MS)
        return bool(won)

    async def forward(self, action: str, operator_id: int, call_id: str, **args: object) -> dict[str, Any]:
        """Run an operator's action on the node that holds the call; UnknownCall when none does."""
        node = await self._redis.get(call_key(call_id))
        if node is None or node == self.node:
            raise UnknownCall(f"There is no call {call_id!r} in progress.")
        body = {"action": action, "operator_id": operator_id, "call_id": call_id, **args}
        return await self._relay.request(str(node), ACTION, body)

    # The call's node ---------------------------------------------------------------------------

    async def _act(self, sender: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """An operator on node `sender` acts on a call held here."""
        switchboard = self._switchboard
        action, operator_id, call_id = str(body["action"]), int(body["operator_id"]), str(body["call_id"])
        if not switchboard.holds(call_id):
            raise UnknownCall(f"There is no call {call_id!r} in progress.")
        match action:
            case "accept":
                softphone = self._roster.relayed(operator_id, sender)
                return {"sdp": await switchboard.accept(operator_id, call_id, str(body["sdp"]), softphone)}
            case "connected":
                await switchboard.operator_connected(operator_id, call_id)
            case "decline":
                await switchboard.decline(operator_id, call_id)
            case "hangup":
                await switchboard.hangup(operator_id, call_id)
            case "hold":
                await switchboard.hold(operator_id, call_id, bool(body["on"]))
            case "transfer":
                await switchboard.transfer(operator_id, call_id, int(body["to"]))
            case _:
                raise UnknownCall(f"No action {action!r} on calls.")
        return None

    # Nodes that died ---------------------------------------------------------------------------

    async def _watch_nodes(self) -> None:
        while True:
            await asyncio.sleep(self._watch_every)
            try:
                await self.reap_dead()
            except Exception as e:  # Redis or the database away for a moment: next round
                log.warning("could not look for dead nodes' calls: %s", e)

    async def reap_dead(self) -> None:
        """End the calls of every node that is gone (one survivor does each).

        Gone: its registry entry expired (10 s without a heartbeat), or its relay channel had no
        listener for `silent_rounds` rounds in a row — a killed process's connections close at once,
        so its calls end within seconds, not after the whole heartbeat TTL.
        """
        holders = {str(n) for n in await self._redis.smembers(HOLDERS)}
        for node in sorted(holders - {self.node}):
            if await self._relay.listening(node):
                self._silent.pop(node, None)
            else:
                self._silent[node] = self._silent.get(node, 0) + 1
            silent = self._silent.get(node, 0) >= self._silent_rounds
            if not silent and await self._redis.exists(node_key(node)):
                continue
            self._silent.pop(node, None)
            if await self._redis.set(reap_key(node), self.node, nx=True, px=REAP_TTL_MS):
                await self._reap(node)

    async def _reap(self, node: str) -> None:
        call_ids = sorted(str(c) for c in await self._redis.smembers(calls_key(node)))
        for call_id in call_ids:
            await self._drop(call_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(calls_key(node), *(call_key(c) for c in call_ids))
            if node != self.node:
                pipe.srem(HOLDERS, node)
            await pipe.execute()
        if call_ids:
            log.warning("node %s is gone: ended %d call(s) as dropped", node, len(call_ids))

    async def _drop(self, call_id: str) -> None:
        """End one call of a dead node: the record first, then the operators who had it are told."""
        async with self._database.session() as session:
            call = await session.get(Call, call_id)
            if call is None or call.state == CallState.ENDED:
                return
            answered_by, site_id = call.operator_id, call.site_id
            rang = set(
                await session.scalars(
                    select(CallEvent.operator_id).where(
                        CallEvent.call_id == call_id, CallEvent.name == events.CALL_RANG
                    )
                )
            )
        await self._records.ended(call_id, EndReason.DROPPED, None, by="cluster")
        for operator_id in rang | {answered_by}:
            seat = self._roster.seat_of(operator_id) if operator_id is not None else None
            if seat is None:
                continue
            for channel in list(seat.channels):
                with contextlib.suppress(Exception):
                    if operator_id == answered_by:
                        await channel.ended(call_id, EndReason.DROPPED)
                    else:
                        await channel.withdrawn(call_id, EndReason.DROPPED)
        seat = self._roster.seat_of(answered_by) if answered_by is not None else None
        if seat is not None and seat.call_id == call_id:
            self._roster.released_call(seat.account.id)  # else they stay "in a call" for ever
        await self._sink.publish(site_id, events.CALL_ENDED, {"id": call_id})

    async def close(self) -> None:
        """Stop watching and answering; this node's calls are ended by the switchboard. Twice is fine."""
        if self._closed:
            return
        self._closed = True
        self._unhandle()
        if self._switchboard.other_nodes is self:
            self._switchboard.other_nodes = None
        if self._watch is not None:
            await stop_task(self._watch)
