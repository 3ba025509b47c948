"""A clock the test moves by hand: ring timeouts and presence grace without sleeping."""

from __future__ import annotations

from collections.abc import Callable

from callserver.clock import Timer


class ManualClock:
    """A clock that moves only when told to (`advance`): timers fire in order, synchronously."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._timers: list[_ManualTimer] = []

    def now(self) -> float:
        return self._now

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = _ManualTimer(self._now + max(0.0, delay), callback)
        self._timers.append(timer)
        return timer

    def pending(self) -> int:
        """Timers armed and not yet fired or cancelled."""
        return sum(1 for t in self._timers if not t.cancelled)

    def advance(self, seconds: float) -> None:
        """Move time on by `seconds`, firing every timer that falls due, earliest first."""
        until = self._now + seconds
        while True:
            due = [t for t in self._timers if not t.cancelled and t.when <= until]
            if not due:
                break
            timer = min(due, key=lambda t: t.when)
            self._timers.remove(timer)
            self._now = max(self._now, timer.when)
            timer.callback()
        self._timers = [t for t in self._timers if not t.cancelled]
        self._now = until


class _ManualTimer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
