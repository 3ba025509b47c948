"""Token buckets: a visitor who floods messages or calls is slowed down, everyone else is not."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass
class TokenBucket:
    """`burst` actions at once, refilled at `rate` per second."""

    rate: float
    burst: float
    clock: Callable[[], float] = time.monotonic
    tokens: float = -1.0
    updated: float = 0.0

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.burst
        self.updated = self.clock()

    def take(self, cost: float = 1.0) -> bool:
        """Spend `cost` tokens if there are enough; False means: rate-limited."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True

    def available(self) -> float:
        """Tokens there are now, without spending any."""
        return min(self.burst, self.tokens + (self.clock() - self.updated) * self.rate)

    def full_at(self, now: float) -> bool:
        return self.tokens + (now - self.updated) * self.rate >= self.burst


class RateLimiter:
    """One bucket per key (e.g. (site, visitor token, "message")); full buckets are forgotten."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[Hashable, TokenBucket] = {}
        self._taken = 0

    def take(self, key: Hashable, cost: float = 1.0) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, self._clock)
        self._taken += 1
        if self._taken % 1000 == 0:
            self._forget_full()
        return bucket.take(cost)

    def give_back(self, key: Hashable, cost: float = 1.0) -> None:
        """Return what a `take` spent on an attempt that turned out not to count (e.g. a right password)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.tokens = min(self.burst, bucket.tokens + cost)

    def allows(self, key: Hashable, cost: float = 1.0) -> bool:
        """Whether `take(key, cost)` would succeed now, without spending anything."""
        bucket = self._buckets.get(key)
        return bucket is None or bucket.available() >= cost

    def _forget_full(self) -> None:
        # A full bucket behaves exactly like a new one: dropping it keeps memory bounded.
        now = self._clock()
        for key in [k for k, b in self._buckets.items() if b.full_at(now)]:
            del self._buckets[key]
