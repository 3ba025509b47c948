"""Draining: a node that stops taking new calls and chats and lets the calls in progress end.

Started by SIGTERM (running.py) or by `callserver nodes drain NAME` (a drain order the registry reads
at its next heartbeat). From then on `/readyz` answers 503 so the balancer sends new sockets
elsewhere, admission refuses new calls and chats, and once no call is left — or `timeout` seconds have
passed — the listeners hear that the node may stop (the process then exits; calls still running then
end as `dropped`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from callserver.background import stop_task

log = logging.getLogger(__name__)
POLL_EVERY = 0.2  # seconds between looks at the calls still in progress


class Drain:
    """Whether this node drains, and the wait for its calls; `close()` is safe to call twice."""

    def __init__(self, timeout: float, calls_in_progress: Callable[[], int] = lambda: 0) -> None:
        self.timeout = timeout
        self.calls_in_progress = calls_in_progress
        self.started_at: float | None = None
        self.why = ""
        self._task: asyncio.Task[None] | None = None
        self._done: list[Callable[[], None]] = []
        self._started: list[Callable[[], None]] = []

    @property
    def draining(self) -> bool:
        return self.started_at is not None

    def on_done(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` once the calls ended (or the timeout passed); returns what unregisters it."""
        self._done.append(listener)
        return lambda: self._done.remove(listener) if listener in self._done else None

    def on_start(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` when the drain starts (the registry tells the cluster at once)."""
        self._started.append(listener)
        return lambda: self._started.remove(listener) if listener in self._started else None

    def start(self, why: str) -> None:
        """Stop taking new calls and chats from now on; a second start changes nothing."""
        if self.draining:
            return
        self.started_at = time.monotonic()
        self.why = why
        log.warning(
            "draining (%s): no new calls or chats; waiting up to %.0f s for %d call(s) in progress",
            why,
            self.timeout,
            self.calls_in_progress(),
        )
        self._task = asyncio.get_running_loop().create_task(self._wait(), name="drain")
        for listener in list(self._started):
            listener()

    async def _wait(self) -> None:
        deadline = time.monotonic() + self.timeout
        # Polled: the count lives in the media engine, which has no event for "the last call ended".
        while (left := self.calls_in_progress()) > 0 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(POLL_EVERY)
        if left:
            log.warning("drain timeout: %d call(s) still in progress end as dropped", left)
        else:
            log.info("drained: no call left in progress")
        for listener in list(self._done):
            listener()

    async def close(self) -> None:
        if self._task is not None:
            await stop_task(self._task)
