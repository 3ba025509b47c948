"""The Redis connection of a cluster member: one client per app, reconnected by itself.

redis-py's pool drops a connection that failed and opens a new one for the next command, so a Redis
that went away and came back needs nothing but the next command (the registry sends one every 2 s).
A command that fails meanwhile raises `RedisUnavailable` naming what failed; the outage is logged once
when it starts and once when Redis answers again, not on every heartbeat.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ConstantBackoff

log = logging.getLogger(__name__)
T = TypeVar("T")
TIMEOUT = 2.0  # seconds for connecting and for one reply: a heartbeat must not hang for longer


class RedisUnavailable(Exception):
    """Redis did not answer (it is down, restarting or unreachable)."""


def redacted(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def connect(url: str) -> Redis:
    """A client for `url` with short timeouts and one quick retry (then the caller hears of it)."""
    client: Redis = Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=TIMEOUT,
        socket_timeout=TIMEOUT,
        retry=Retry(ConstantBackoff(0.05), 1),
        health_check_interval=10,
    )
    return client


class RedisLink:
    """The app's one Redis client; `close()` is safe to call twice."""

    def __init__(self, url: str) -> None:
        self.url = redacted(url)
        self.client = connect(url)
        self._up = True
        self._closed = False

    @property
    def up(self) -> bool:
        """Whether the last command got an answer."""
        return self._up

    async def run(self, what: str, command: Callable[[Redis], Awaitable[T]]) -> T:
        """Run `command` on the client; a Redis that does not answer raises RedisUnavailable."""
        try:
            result = await command(self.client)
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as e:
            if self._up:
                self._up = False
                log.error("Redis at %s is unreachable (%s failed: %s): retrying", self.url, what, e)
            raise RedisUnavailable(f"Redis is unreachable: {what} failed ({e})") from e
        if not self._up:
            self._up = True
            log.warning("Redis at %s answers again", self.url)
        return result

    async def reachable(self) -> bool:
        """Whether Redis answers a PING now."""
        try:
            await self.run("ping", lambda r: r.ping())
        except RedisUnavailable:
            return False
        return True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.client.aclose()
