"""Operators ringing visitors across the nodes of a cluster: the ring lives on the operator's node.

An operator's `visitor.call` rings the page through the invitation stream (shared by the nodes), and
the ring itself — its timer, who rang, Decline and no-answer — stays in the `VisitorCalls` of the node
the operator's softphone is on. Redis says which node that is (`callserver:visitor-ring:ID`, kept a
little longer than a ring lasts). The visitor's answer (`call.offer` naming the ring) or Decline may
reach any node: that node asks the ring's node through the relay (`visitor_call.ring`), which ends
the ring and tells its operator as it would for a page of its own, and hands back who rang, so the
call placed on the visitor's node rings only that operator.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.asyncio import Redis

from callserver.callbacks import NoVisitorCall, VisitorCalls
from callserver.cluster.relay import Relay

log = logging.getLogger(__name__)

RING = "visitor_call.ring"  # relay requests: a visitor's answer or Decline of a ring held by the receiver
KEEP_AFTER = 10.0  # seconds a ring's entry outlives the ring (an answer on the way finds its node)


def ring_key(ring_id: str) -> str:
    return f"callserver:visitor-ring:{ring_id}"


class ClusterVisitorCalls:
    """`VisitorCalls.elsewhere` in a cluster; `close()` is safe to call twice."""

    def __init__(self, redis: Redis, relay: Relay, visitor_calls: VisitorCalls) -> None:
        self._redis = redis
        self._relay = relay
        self.node = relay.node
        self._visitor_calls = visitor_calls
        self._unhandle = relay.on(RING, self._act)
        visitor_calls.elsewhere = self

    async def ringing(self, ring_id: str, seconds: float) -> None:
        try:
            await self._redis.set(ring_key(ring_id), self.node, px=int((seconds + KEEP_AFTER) * 1000))
        except Exception as e:  # the ring goes on; only an answer through another node misses it
            log.error("ring %s: could not say in Redis that this node holds it: %s", ring_id, e)

    async def _node_of(self, ring_id: str) -> str:
        node = await self._redis.get(ring_key(ring_id))
        if node is None or node == self.node:
            raise NoVisitorCall("That call is over: the operator stopped ringing.")
        return str(node)

    async def answered(self, site_id: int, token: str, ring_id: str) -> int:
        node = await self._node_of(ring_id)
        body = {"action": "answered", "site_id": site_id, "token": token, "ring_id": ring_id}
        return int((await self._relay.request(node, RING, body))["operator_id"])

    async def declined(self, site_id: int, token: str, ring_id: str) -> None:
        node = await self._node_of(ring_id)
        body = {"action": "declined", "site_id": site_id, "token": token, "ring_id": ring_id}
        await self._relay.request(node, RING, body)

    async def _act(self, sender: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """The visitor's node hands on their answer or Decline of a ring of this node."""
        action, ring_id = str(body["action"]), str(body["ring_id"])
        site_id, token = int(body["site_id"]), str(body["token"])
        if action == "answered":
            return {"operator_id": self._visitor_calls.answered_here(site_id, token, ring_id).operator_id}
        if action == "declined":
            await self._visitor_calls.declined_here(site_id, token, ring_id)
            return None
        raise NoVisitorCall(f"No action {action!r} on rings of visitors.")

    def close(self) -> None:
        self._unhandle()
        if self._visitor_calls.elsewhere is self:
            self._visitor_calls.elsewhere = None
