"""Sign-in limits shared by the nodes: one token bucket per key in Redis, taken atomically.

Counted per node, an attacker spreading guesses over N nodes would get N times the allowance. Here each
e-mail address and each client address has one bucket in Redis (`callserver:sign-in:KEY`, a hash of
`tokens` and `at`), and one Lua script refills and takes from all of an attempt's buckets, or from
none, in one step: attempts sent at once to any nodes can't all pass before one is counted. The
script reads Redis's own clock (`TIME`), so the nodes' clocks don't matter. A bucket left alone
refills in `burst / rate` seconds and expires then.

When Redis does not answer, a node falls back to its own buckets (logged once): sign-in keeps working,
limited per node, rather than locking everyone out. Widget sockets per client address stay counted
per node (`callserver/limits.py`): each node protects its own sockets and memory.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Protocol

from redis.asyncio import Redis

from callserver.cluster.redis import RedisLink, RedisUnavailable

log = logging.getLogger(__name__)

PREFIX = "callserver:sign-in:"

# KEYS: the buckets; ARGV: rate (tokens per ms), burst, cost (negative: give back), time to live (ms).
TAKE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local cost, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local levels = {}
for i, key in ipairs(KEYS) do
  local bucket = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(bucket[1]) or burst
  local at = tonumber(bucket[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
  if cost > 0 and tokens < cost then
    return 0
  end
  levels[i] = tokens
end
for i, key in ipairs(KEYS) do
  redis.call('HSET', key, 'tokens', tostring(math.min(burst, levels[i] - cost)), 'at', now)
  redis.call('PEXPIRE', key, ttl)
end
return 1
"""


class Attempts(Protocol):
    """Sign-in attempts as `callserver/web/auth.py` counts them."""

    async def take(self, keys: Sequence[str]) -> bool: ...
    async def give_back(self, keys: Sequence[str]) -> None: ...


def bucket_key(key: str) -> str:
    # Hashed: no e-mail address is written to Redis, and a long key stays short.
    return PREFIX + hashlib.sha256(key.encode()).hexdigest()


class RedisAttempts:
    """Sign-in attempts counted in Redis for every node; `fallback` counts when Redis is down."""

    def __init__(self, link: RedisLink, rate: float, burst: float, fallback: Attempts) -> None:
        self._link = link
        self._rate = rate
        self._burst = burst
        self._fallback = fallback
        self._ttl_ms = int(burst / rate * 1000) + 1000

    async def _run(self, keys: Sequence[str], cost: float) -> bool:
        names = [bucket_key(k) for k in keys]
        args = [self._rate / 1000, self._burst, cost, self._ttl_ms]

        async def script(redis: Redis) -> object:
            return await redis.eval(TAKE, len(names), *names, *args)

        result = await self._link.run("sign-in limit", script)
        return bool(int(str(result)))

    async def take(self, keys: Sequence[str]) -> bool:
        """Count one attempt against every key, or none when any is used up."""
        try:
            return await self._run(keys, 1)
        except RedisUnavailable:
            return await self._fallback.take(keys)

    async def give_back(self, keys: Sequence[str]) -> None:
        try:
            await self._run(keys, -1)
        except RedisUnavailable:
            await self._fallback.give_back(keys)
