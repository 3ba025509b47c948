"""Token buckets: a visitor who floods messages or calls is slowed down, everyone else is not."""

from __future__ import annotations

import time
from collections import OrderedDict
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


# Per client address (DESIGN: a client chooses its visitor token, so per-token limits alone let one
# script with fresh tokens ring every operator). Generous enough for a household or an office behind
# one NAT address, tight enough that a flood costs the server little.
NEW_VISITORS_BURST = 30.0  # visitor tokens an address may bring at once …
NEW_VISITORS_RATE = 1 / 10  # … then one new token every 10 s
CALLS_BURST = 6.0  # call attempts an address may make at once …
CALLS_RATE = 1 / 10  # … then one every 10 s
KNOWN_VISITORS = 100_000  # (address, token) pairs remembered, oldest forgotten first


class AddressLimits:
    """What one client address may do, whatever visitor tokens it presents: open widget sockets at
    once, bring new visitor tokens, attempt calls."""

    def __init__(self, max_sockets: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_sockets = max_sockets
        self._sockets: dict[str, int] = {}
        self._new_visitors = RateLimiter(NEW_VISITORS_RATE, NEW_VISITORS_BURST, clock)
        self._calls = RateLimiter(CALLS_RATE, CALLS_BURST, clock)
        self._known: OrderedDict[tuple[str, Hashable], None] = OrderedDict()

    def open_socket(self, address: str) -> Callable[[], None] | None:
        """Count one more socket from `address`; returns the function that uncounts it (safe to call
        twice), or None when the address already has `max_sockets` open."""
        if self._sockets.get(address, 0) >= self.max_sockets:
            return None
        self._sockets[address] = self._sockets.get(address, 0) + 1
        closed = False

        def close() -> None:
            nonlocal closed
            if closed:
                return
            closed = True
            left = self._sockets.get(address, 0) - 1
            if left > 0:
                self._sockets[address] = left
            else:
                self._sockets.pop(address, None)

        return close

    def sockets_of(self, address: str) -> int:
        return self._sockets.get(address, 0)

    def visitor_arrives(self, address: str, visitor: Hashable) -> bool:
        """False when `address` brought too many new visitor tokens lately; a known one always passes."""
        key = (address, visitor)
        if key in self._known:
            self._known.move_to_end(key)
            return True
        if not self._new_visitors.take(address):
            return False
        self._known[key] = None
        if len(self._known) > KNOWN_VISITORS:
            self._known.popitem(last=False)
        return True

    def call_allowed(self, address: str) -> bool:
        """Spend one call attempt of `address`; False means: rate-limited."""
        return self._calls.take(address)
