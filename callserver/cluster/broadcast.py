"""One Redis pub/sub channel that every node of a cluster hears: news that isn't for one node.

The relay (`relay.py`) takes a frame to the node that holds a call; some news is for whoever holds a
visitor's stream or a session's sockets, and no node knows which that is. Such news goes out once on a
shared channel and each node acts on its own part (the sender hears its own frames too). Pub/sub is
at-most-once: what is published while a node resubscribes is lost, which is why each use says how it
catches up (`board.py`: cards are also kept under keys with a TTL; `sessions.py`: a session that
ended is gone from the database, so a socket reconnecting later is refused anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping

from redis import exceptions as redis_errors
from redis.asyncio import Redis

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
        self._timeout = timeout
        self._reader: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._closed = False

    async def start(self) -> None:
        """Subscribe (frames published before this are not heard)."""
        self._reader = asyncio.get_running_loop().create_task(self._read())
        await asyncio.wait_for(self._listening.wait(), self._timeout)

    async def publish(self, body: Mapping[str, object]) -> bool:
        """Send `body` to every node; False (logged) when Redis did not take it."""
        try:
            await self._redis.publish(self.channel, json.dumps({"from": self.node, "body": dict(body)}))
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as e:
            log.warning("%s: could not publish (%s)", self.channel, e)
            return False
        return True

    async def _read(self) -> None:
        """Listen on the channel; a lost connection is opened again (Redis restarted)."""
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self._listening.set()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    try:
                        frame = json.loads(message["data"])
                        sender, body = str(frame["from"]), frame["body"]
                    except (TypeError, ValueError, KeyError):
                        log.warning("%s: a frame that is not ours", self.channel)
                        continue
                    if not isinstance(body, dict):
                        continue
                    try:
                        await self._heard(sender, body)
                    except Exception:
                        log.exception("%s: a frame from %s failed", self.channel, sender)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("%s: listening failed (%s): subscribing again", self.channel, e)
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        """Stop listening; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
