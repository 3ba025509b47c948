"""Work stored with a due time (mail to retry, webhook deliveries), sent by one loop in the background.

The state lives in the database, so a restart loses nothing and any process sharing the database
sends what is due; the owner claims each try there. The loop only decides *when* to look: when woken
(new work stored, a try finished), when the next stored due time comes, and at least every
`idle_look` seconds (another process may have stored work that is due).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

log = logging.getLogger(__name__)


class DueWork:
    """Calls `send_due()` whenever work may be due; `stop()` ends the loop after the current round."""

    def __init__(
        self,
        what: str,
        send_due: Callable[[], Awaitable[None]],
        next_at: Callable[[], Awaitable[datetime | None]],
        clock: Callable[[], datetime],
        idle_look: float,
        after_error: float,
    ) -> None:
        self._what = what
        self._send_due = send_due
        self._next_at = next_at
        self._clock = clock
        self._idle_look = idle_look
        self._after_error = after_error
        self._wake = asyncio.Event()
        self._stopped = False

    def wake(self) -> None:
        """Look for due work now."""
        self._wake.set()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    async def run(self) -> None:
        while not self._stopped:
            self._wake.clear()
            try:
                await self._send_due()
                wait = await self._until_next()
            except Exception:
                log.exception("%s: the store could not be read; trying again later", self._what)
                wait = self._after_error
            if wait > 0 and not self._stopped:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)

    async def _until_next(self) -> float:
        due = await self._next_at()
        if due is None:
            return self._idle_look
        return min(self._idle_look, max(0.0, (due - self._clock()).total_seconds()))
