"""Background tasks of a long-lived object: kept referenced, failures logged, ended on close.

`stop_task` ends one task for good. On Python 3.11, `asyncio.wait_for` prefers a result to a
cancellation that lands just as what it waits for completes (CPython gh-86296): it returns the result
and the cancellation is lost. redis-py's commands wait that way, and so does a loop's
`wait_for(event.wait(), t)` on an event already set, so a loop cancelled at such a moment goes on as if
nothing happened and `await task` waits for ever (a node that drained did not exit after SIGTERM).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
RECANCEL_EVERY = 0.1  # seconds a cancelled task has to end before it is cancelled again


async def stop_task(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait until it has ended, cancelling it again while it goes on.

    What it raised on the way out is logged, not raised. Safe on a task that has ended already.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=RECANCEL_EVERY)
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("task %s failed", task.get_name(), exc_info=error)


class BackgroundTasks:
    """The tasks one owner (the switchboard, the chat desk) started and must not lose."""

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._tasks: set[asyncio.Task[object]] = set()

    def spawn(self, coroutine: Coroutine[object, None, T]) -> asyncio.Task[T]:
        # The event loop keeps only a weak reference to tasks: without this set they can vanish.
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s task failed", self._owner, exc_info=task.exception())

    async def close(self, grace: float = 0.0) -> None:
        """Give running tasks `grace` seconds to finish, then cancel what is left and wait for it."""
        if self._tasks and grace > 0:
            await asyncio.wait(list(self._tasks), timeout=grace)
        # Read the set each round: a task cancelled here may spawn another on its way out.
        while pending := [t for t in self._tasks if not t.done()]:  # failures were logged by _done
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=RECANCEL_EVERY)
