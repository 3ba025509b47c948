"""Background tasks of a long-lived object: kept referenced, failures logged, ended on close."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


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
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
