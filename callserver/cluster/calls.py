"""Calls across the nodes of a cluster: where each call's media lives, answering it from another node,
and ending the calls of a node that died.

A call lives on the node that took the shopper's offer (both legs in one media process there). Redis
says which node that is (`callserver:call:ID`) and which calls each node holds
(`callserver:calls:NODE`). An operator whose softphone is on another node answers, declines, holds or
hangs up through the relay: their node forwards the action to the call's node and hands back the
answer SDP; the operator's browser then connects its media straight to the call's node. Exactly one
operator wins a call: the answer is claimed with `SET NX PX` on `callserver:answer:ID`.

A socket that drops and comes back through the balancer lands on any node. There, `call.resume`,
`call.reoffer`, the shopper's hang-up and the socket's closing go to the call's node through the relay
(`call.action` for a softphone, `call.shopper` for a widget), and that node answers with the call as it
stands, or the same coded error as on one node. From then on the call's node tells that widget socket
through the relay (`call.tell-shopper`, addressed by an id the socket's node gave it), and the
socket's node says when it closes, so the resume window runs for it as for a socket of its own. A
softphone on another node is the operator's relayed channel there (the roster's); the node where it
is open knows which of its softphones carries which call, and says when that one closes.

When a node's registry entry (`callserver/cluster/nodes.py`, renewed every 2 s, gone after 10 s)
disappears, one survivor (the one that takes `callserver:reap:NODE` with `SET NX`) ends that node's
calls as `dropped`, writes the records and tells the operators' softphones on the nodes still up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
import weakref
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import select

from callserver import events
from callserver.background import BackgroundTasks, stop_task
from callserver.calls.records import CallRecords
from callserver.calls.states import CallState, EndReason
from callserver.calls.switchboard import CallSnapshot, ShopperChannel, Switchboard
from callserver.cluster.nodes import node_key
from callserver.cluster.redis_roster import RedisRoster, RelayedFrame
from callserver.cluster.relay import NodeUnreachable, Relay, RemoteError
from callserver.errors import NoCall, UnknownCall
from callserver.operators.roster import OperatorChannel
from callserver.store.database import Database
from callserver.store.models import Call, CallEvent
from callserver.wire.outbound import CallDetached, Frame
from callserver.wire.vocabulary import CallSide

log = logging.getLogger(__name__)

ACTION = "call.action"  # relay requests: an operator's action on a call held by the receiving node
SHOPPER = "call.shopper"  # relay requests: a widget socket's action on a call held by the receiving node
TELL_SHOPPER = "call.tell-shopper"  # relay tells: a frame for a widget socket on the receiving node
TOKENS_KEPT = 256  # operators' resume tokens kept from the answers (each is read once, at once)
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


def _snapshot_body(snapshot: CallSnapshot) -> dict[str, Any]:
    return {
        "id": snapshot.id,
        "state": str(snapshot.state),
        "operator_name": snapshot.operator_name,
        "held": snapshot.held,
        "view": snapshot.view,
    }


def _snapshot_from(body: dict[str, Any]) -> CallSnapshot:
    name = body.get("operator_name")
    return CallSnapshot(
        str(body["id"]),
        CallState(str(body["state"])),
        str(name) if name is not None else None,
        bool(body.get("held")),
        dict(body.get("view") or {}),
    )


class RelayedShopper:
    """A widget socket on another node that carries a call's shopper side held here (a ShopperChannel).

    A frame that cannot reach its node is logged, and `lost` is called: the side counts as gone, and
    the call waits the resume window for it as for a socket of this node that closed.
    """

    def __init__(
        self, relay: Relay, node: str, socket: str, lost: Callable[[str, RelayedShopper], None]
    ) -> None:
        self.relay = relay
        self.node = node
        self.socket = socket
        self._lost = lost

    async def _tell(self, call_id: str, method: str, *args: object) -> None:
        body = {"socket": self.socket, "method": method, "args": [call_id, *args]}
        try:
            await self.relay.tell(self.node, TELL_SHOPPER, body)
        except NodeUnreachable:
            log.warning("call %s: the shopper's socket on node %s missed %s", call_id, self.node, method)
            self._lost(call_id, self)

    async def ringing(self, call_id: str) -> None:
        await self._tell(call_id, "ringing")

    async def connected(self, call_id: str, operator_name: str) -> None:
        await self._tell(call_id, "connected", operator_name)

    async def ended(self, call_id: str, reason: EndReason, why: str | None = None) -> None:
        await self._tell(call_id, "ended", str(reason), why)

    async def call_event(self, frame: Frame) -> None:
        encoded = frame.encode()
        await self._tell(str(encoded.get("call_id", "")), "call_event", encoded)

    async def detached(self, call_id: str) -> None:
        await self._tell(call_id, "detached")


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
        self._unhandle = [
            relay.on(ACTION, self._act),
            relay.on(SHOPPER, self._shopper_acts),
            relay.on(TELL_SHOPPER, self._told_shopper),
        ]
        # Widget sockets here that carry calls held elsewhere: by the id the call's node knows them by,
        # and the (call, node) each carries, so that a node that died has its calls ended here too.
        self._shoppers: weakref.WeakValueDictionary[str, ShopperChannel] = weakref.WeakValueDictionary()
        self._shopper_ids: weakref.WeakKeyDictionary[ShopperChannel, str] = weakref.WeakKeyDictionary()
        self._carried: dict[str, tuple[str, str]] = {}
        # Softphones here that carry calls held elsewhere (the call each carries), and the tokens the
        # call's node handed out with its answers.
        self._softphones: weakref.WeakKeyDictionary[OperatorChannel, str] = weakref.WeakKeyDictionary()
        self._tokens: dict[str, str] = {}
        # Each softphone here has an id the call's node knows it by: one operator's softphones on a
        # node all relay through one channel there, so "gone" must say which of them went.
        self._softphone_ids: weakref.WeakKeyDictionary[OperatorChannel, str] = weakref.WeakKeyDictionary()
        # Calls held here: the id of the softphone (on another node) that carries the operator's side.
        self._carriers: dict[str, str] = {}
        # Widget sockets of other nodes carrying calls held here (kept alive by the calls themselves).
        self._relayed: weakref.WeakValueDictionary[tuple[str, str], RelayedShopper] = (
            weakref.WeakValueDictionary()
        )
        self._background = BackgroundTasks("cluster calls")
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
        self._carriers.pop(call_id, None)
        with contextlib.suppress(Exception):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(call_key(call_id))
                pipe.srem(calls_key(self.node), call_id)
                await pipe.execute()

    async def claim_answer(self, call_id: str, operator_id: int) -> bool:
        """Whether this operator is the one who answers the call (the first claim wins, cluster-wide)."""
        won = await self._redis.set(answer_key(call_id), str(operator_id), nx=True, px=ANSWER_TTL_MS)
        return bool(won)

    async def _holder(self, call_id: str) -> str | None:
        """The other node that holds the call, if one does."""
        node = await self._redis.get(call_key(call_id))
        return None if node is None or node == self.node else str(node)

    async def forward(
        self,
        action: str,
        operator_id: int,
        call_id: str,
        channel: OperatorChannel | None = None,
        **args: object,
    ) -> dict[str, Any]:
        """Run an operator's action on the node that holds the call; UnknownCall when none does.

        With `channel` (accept, reoffer) that softphone here carries the call from then on.
        """
        node = await self._holder(call_id)
        if node is None:
            raise UnknownCall(f"There is no call {call_id!r} in progress.")
        body = {"action": action, "operator_id": operator_id, "call_id": call_id, **args}
        if channel is not None:
            body["softphone"] = self._softphone_id(channel)
        result = await self._relay.request(node, ACTION, body)
        if (token := result.pop("resume_token", None)) is not None:
            self._tokens[call_id] = str(token)
            while len(self._tokens) > TOKENS_KEPT:
                del self._tokens[next(iter(self._tokens))]
        if channel is not None:
            self._softphones[channel] = call_id
        return result

    def resume_token(self, call_id: str, side: CallSide) -> str | None:
        return self._tokens.get(call_id) if side is CallSide.OPERATOR else None

    async def resume_operator(
        self, operator_id: int, call_id: str, token: str, channel: OperatorChannel
    ) -> CallSnapshot:
        """A softphone here takes over the operator's side of a call held elsewhere."""
        node = await self._holder(call_id)
        if node is None:
            raise NoCall(f"There is no call {call_id!r} in progress to resume.")
        body = {
            "action": "resume",
            "operator_id": operator_id,
            "call_id": call_id,
            "token": token,
            "softphone": self._softphone_id(channel),
        }
        snapshot = _snapshot_from(await self._relay.request(node, ACTION, body))
        # The call's node tells the node of the softphone it carried before; one here is told here.
        for other, carried in list(self._softphones.items()):
            if carried == call_id and other is not channel:
                self._softphones.pop(other, None)
                with contextlib.suppress(Exception):
                    await other.call_event(CallDetached(call_id))
        self._softphones[channel] = call_id
        return snapshot

    async def softphone_left(self, operator_id: int, channel: OperatorChannel) -> None:
        call_id = self._softphones.pop(channel, None)
        if call_id is None or (node := await self._holder(call_id)) is None:
            return
        body = {"action": "gone", "operator_id": operator_id, "call_id": call_id}
        if (softphone := self._softphone_ids.get(channel)) is not None:
            body["softphone"] = softphone
        try:
            await self._relay.request(node, ACTION, body)
        except (NodeUnreachable, RemoteError) as e:
            log.warning("call %s: node %s did not hear that the softphone left: %s", call_id, node, e)

    def _softphone_id(self, channel: OperatorChannel) -> str:
        softphone = self._softphone_ids.get(channel)
        if softphone is None:
            softphone = self._softphone_ids[channel] = uuid.uuid4().hex
        return softphone

    def _shopper_id(self, channel: ShopperChannel) -> str:
        socket = self._shopper_ids.get(channel)
        if socket is None:
            socket = self._shopper_ids[channel] = uuid.uuid4().hex
            self._shoppers[socket] = channel
        return socket

    async def resume_shopper(
        self, site_id: int, call_id: str, token: str, channel: ShopperChannel
    ) -> CallSnapshot:
        """A widget socket here takes over the shopper's side of a call held elsewhere."""
        node = await self._holder(call_id)
        if node is None:
            raise NoCall(f"There is no call {call_id!r} in progress to resume.")
        socket = self._shopper_id(channel)
        body = {"action": "resume", "call_id": call_id, "socket": socket, "site_id": site_id, "token": token}
        snapshot = _snapshot_from(await self._relay.request(node, SHOPPER, body))
        self._carried[socket] = (call_id, node)
        return snapshot

    async def for_shopper(
        self, action: str, call_id: str, channel: ShopperChannel | None, **args: object
    ) -> dict[str, Any]:
        socket = self._shopper_ids.get(channel) if channel is not None else None
        if action == "gone":
            if socket is not None:
                self._carried.pop(socket, None)
            try:  # a socket's closing raises nothing: the call's node may be gone, or Redis away
                await self._shopper_request(action, call_id, socket, args)
            except Exception as e:
                log.warning("call %s: its node did not hear that the shopper's socket left: %s", call_id, e)
            return {}
        if action == "reoffer" and socket is None:
            raise NoCall("This page has no such call in progress.")
        return await self._shopper_request(action, call_id, socket, args)

    async def _shopper_request(
        self, action: str, call_id: str, socket: str | None, args: dict[str, object]
    ) -> dict[str, Any]:
        node = await self._holder(call_id)
        if node is None:
            if action == "reoffer":
                raise NoCall("This page has no such call in progress.")
            return {}  # a hang-up or a goodbye of a call that has ended
        body = {"action": action, "call_id": call_id, "socket": socket, **args}
        return await self._relay.request(node, SHOPPER, body)

    # The call's node ---------------------------------------------------------------------------

    async def _act(self, sender: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """An operator on node `sender` acts on a call held here."""
        switchboard = self._switchboard
        action, operator_id, call_id = str(body["action"]), int(body["operator_id"]), str(body["call_id"])
        if not switchboard.holds(call_id):
            if action == "gone":
                return None
            if action == "resume":
                raise NoCall(f"There is no call {call_id!r} in progress to resume.")
            raise UnknownCall(f"There is no call {call_id!r} in progress.")
        softphone = self._roster.relayed(operator_id, sender)
        which = str(body["softphone"]) if body.get("softphone") is not None else None
        match action:
            case "accept":
                sdp = await switchboard.accept(operator_id, call_id, str(body["sdp"]), softphone)
                self._carried_by(call_id, which)
                return {"sdp": sdp, "resume_token": switchboard.resume_token(call_id, CallSide.OPERATOR)}
            case "reoffer":
                sdp = await switchboard.reoffer_operator(operator_id, call_id, str(body["sdp"]), softphone)
                self._carried_by(call_id, which)
                return {"sdp": sdp}
            case "resume":
                token = str(body["token"])
                snapshot = await switchboard.resume_operator(operator_id, call_id, token, softphone)
                self._carried_by(call_id, which)
                return _snapshot_body(snapshot)
            case "gone":
                # A softphone that no longer carries the call (another of that node's took it over,
                # and its resume may have come first) going is not the operator's side going.
                if which is None or self._carriers.get(call_id) in (None, which):
                    await switchboard.softphone_gone(operator_id, call_id, softphone)
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

    def _carried_by(self, call_id: str, softphone: str | None) -> None:
        if softphone is not None and self._switchboard.holds(call_id):
            self._carriers[call_id] = softphone

    async def _shopper_acts(self, sender: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """A widget socket on node `sender` acts on a call held here."""
        switchboard = self._switchboard
        action, call_id, socket = str(body["action"]), str(body["call_id"]), body.get("socket")
        if not switchboard.holds(call_id):
            if action in ("hangup", "gone"):
                return None
            if action == "resume":
                raise NoCall(f"There is no call {call_id!r} in progress to resume.")
            raise NoCall("This page has no such call in progress.")
        channel = self._relayed_shopper(sender, str(socket)) if socket is not None else None
        match action, channel:
            case "resume", RelayedShopper():
                site_id, token = int(body["site_id"]), str(body["token"])
                return _snapshot_body(await switchboard.resume_shopper(site_id, call_id, token, channel))
            case "reoffer", RelayedShopper():
                return {"sdp": await switchboard.reoffer_shopper(call_id, str(body["sdp"]), channel)}
            case "hangup", _:
                await switchboard.shopper_hangup(call_id)
            case "gone", RelayedShopper():
                await switchboard.shopper_gone(call_id, channel)
            case _:
                raise NoCall(f"No action {action!r} on this page's call.")
        return None

    def _relayed_shopper(self, node: str, socket: str) -> RelayedShopper:
        channel = self._relayed.get((node, socket))
        if channel is None:
            channel = self._relayed[(node, socket)] = RelayedShopper(self._relay, node, socket, self._lost)
        return channel

    def _lost(self, call_id: str, channel: RelayedShopper) -> None:
        """The node of the socket that carried the shopper's side no longer listens: it is gone."""
        if self._switchboard.holds(call_id):
            self._background.spawn(self._switchboard.shopper_gone(call_id, channel))

    async def _told_shopper(self, sender: str, body: dict[str, Any]) -> None:
        """A frame from the call's node for a widget socket here."""
        socket = str(body["socket"])
        channel = self._shoppers.get(socket)
        method, args = str(body["method"]), list(body["args"])
        if channel is None:
            return
        if method in ("ended", "detached"):
            self._carried.pop(socket, None)
        match method, args:
            case "ringing", [str() as call_id]:
                await channel.ringing(call_id)
            case "connected", [str() as call_id, str() as operator_name]:
                await channel.connected(call_id, operator_name)
            case "ended", [str() as call_id, str() as reason, why]:
                await channel.ended(call_id, EndReason(reason), str(why) if why is not None else None)
            case "call_event", [str(), dict() as frame]:
                await channel.call_event(RelayedFrame(frame))
            case "detached", [str() as call_id]:
                await channel.detached(call_id)
            case _:
                log.warning("relay: no widget call %r with %d argument(s) from %s", method, len(args), sender)

    async def _holder_gone(self, node: str) -> None:
        """Node `node` died: the widget sockets here that carried its calls hear they were dropped."""
        for socket, (call_id, holder) in list(self._carried.items()):
            if holder != node:
                continue
            self._carried.pop(socket, None)
            if (channel := self._shoppers.get(socket)) is not None:
                with contextlib.suppress(Exception):
                    await channel.ended(call_id, EndReason.DROPPED)

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
        holders |= {node for _, node in self._carried.values()}  # reaped already by another survivor
        for node in sorted(holders - {self.node}):
            if await self._relay.listening(node):
                self._silent.pop(node, None)
            else:
                self._silent[node] = self._silent.get(node, 0) + 1
            silent = self._silent.get(node, 0) >= self._silent_rounds
            if not silent and await self._redis.exists(node_key(node)):
                continue
            self._silent.pop(node, None)
            await self._holder_gone(node)
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
        for unhandle in self._unhandle:
            unhandle()
        if self._switchboard.other_nodes is self:
            self._switchboard.other_nodes = None
        if self._watch is not None:
            await stop_task(self._watch)
        await self._background.close()
