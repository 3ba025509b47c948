"""Listening on one Redis pub/sub channel for as long as a node runs, through Redis restarts.

The relay (`relay.py`, a node's own channel), the broadcast (`broadcast.py`, a channel every node
hears) and the roster's announcements (`redis_roster.py`) each keep one reader task on a channel:
it subscribes, hands each frame (a JSON object) on in the order it came, and when the connection
is lost (Redis restarted) subscribes again. Pub/sub is at-most-once: what is published while the
reader is away is lost; each use says how it catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from callserver.background import stop_task

log = logging.getLogger(__name__)

Arrived = Callable[[dict[str, Any]], Awaitable[None]]
"""Takes one frame, a JSON object; what it raises is logged and the next frame is read."""

RESUBSCRIBE_AFTER = 0.5
"""Seconds between a lost connection and subscribing again (Redis coming back takes a moment)."""


class ChannelListener:
    """One reader task on `channel`; `start()` once the loop runs, `close()` is safe to call twice."""

    def __init__(self, redis: Redis, channel: str, arrived: Arrived, timeout: float = 10.0) -> None:
        self._redis = redis
        self.channel = channel
        self._arrived = arrived
        self._timeout = timeout
        self._reader: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._closed = False

    async def start(self) -> None:
        """Subscribe; returns once subscribed (frames published before this are not heard)."""
        self._reader = asyncio.get_running_loop().create_task(self._read())
        await asyncio.wait_for(self._listening.wait(), self._timeout)

    async def _read(self) -> None:
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self._listening.set()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        await self._hand_on(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("%s: listening failed (%s): subscribing again", self.channel, e)
                await asyncio.sleep(RESUBSCRIBE_AFTER)
            finally:
                with contextlib.suppress(Exception):
                    # redis-py before 8.2 leaves aclose untyped
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]

    async def _hand_on(self, data: object) -> None:
        try:
            frame = json.loads(data)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            frame = None
        if not isinstance(frame, dict):
            log.warning("%s: a frame that is not a JSON object", self.channel)
            return
        try:
            await self._arrived(frame)
        except Exception:
            log.exception("%s: a frame failed", self.channel)

    async def close(self) -> None:
        """Stop listening; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._reader is not None:
            await stop_task(self._reader)
