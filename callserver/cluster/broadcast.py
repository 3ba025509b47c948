"""One Redis pub/sub channel that every node of a cluster hears: news that isn't for one node.

The relay (`relay.py`) takes a frame to the node that holds a call; some news is for whoever holds a
visitor's stream or a session's sockets, and no node knows which that is. Such news goes out once on a
shared channel and each node acts on its own part (the sender hears its own frames too). Pub/sub is
at-most-once: what is published while a node resubscribes is lost, which is why each use says how it
catches up (`board.py`: cards are also kept under keys with a TTL; `sessions.py`: a session that
ended is gone from the database, so a socket reconnecting later is refused anyway).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from callserver.cluster.listener import ChannelListener

log = logging.getLogger(__name__)

Heard = Callable[[str, dict[str, object]], Awaitable[None]]
"""Takes (the sending node, the frame's body)."""


class Broadcast:
    """This node's end of one shared channel; `start()` once the loop runs, `close()` is idempotent."""

    def __init__(self, redis: Redis, channel: str, node: str, heard: Heard, timeout: float = 10.0) -> None:
        self._redis = redis
        self.channel = channel
        self.node = node
        self._heard = heard
        self._listener = ChannelListener(redis, channel, self._arrived, timeout)

    async def start(self) -> None:
        """Subscribe (frames published before this are not heard)."""
        await self._listener.start()

    async def publish(self, body: Mapping[str, object]) -> bool:
        """Send `body` to every node; False (logged) when Redis did not take it."""
        try:
            await self._redis.publish(self.channel, json.dumps({"from": self.node, "body": dict(body)}))
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as e:
            log.warning("%s: could not publish (%s)", self.channel, e)
            return False
        return True

    async def _arrived(self, frame: dict[str, Any]) -> None:
        sender, body = frame.get("from"), frame.get("body")
        if not isinstance(sender, str) or not isinstance(body, dict):
            log.warning("%s: a frame that is not ours", self.channel)
            return
        await self._heard(sender, body)

    async def close(self) -> None:
        """Stop listening; safe to call twice."""
        await self._listener.close()
