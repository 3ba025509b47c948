"""Admission control: a node that drains, or whose media workers are full, refuses new calls.

Past saturation the forwarder's p99 packet gap went to 0.7–0.9 s and added up to 1.7 s of delay to
every call on the worker (issue 12), so a full worker takes no new call: the shopper gets the "all
busy" fallback (the widget offers a chat) instead. A draining node refuses new chats too (the widget
shows the offline form, which is stored whatever the node does next); chats already open go on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from callserver.errors import CallserverError


class AllLinesBusy(CallserverError):
    """No media worker of this node can take one more call (or the node drains)."""

    code = "all_busy"


class NotTakingChats(CallserverError):
    """The node drains: new chats go to the offline form (the widget knows the code `nobody_online`)."""

    code = "nobody_online"


class Admission:
    """Decides whether this node takes a new call or chat.

    `worker_calls` gives the calls on each media worker that can take calls now (one entry for the main
    process when media runs there); `draining` whether the node drains.
    """

    def __init__(
        self,
        max_calls_per_worker: int,
        worker_calls: Callable[[], list[int]],
        draining: Callable[[], bool] = lambda: False,
    ) -> None:
        self.max_calls_per_worker = max_calls_per_worker
        self._worker_calls = worker_calls
        self._draining = draining
        # Calls admitted whose media is not open yet (the record is being written): counted on the
        # least-loaded worker, where the pool will place them, so a burst cannot slip past the limit.
        self._placing = 0
        self.refused = 0

    def room_for_a_call(self) -> bool:
        loads = self._worker_calls()
        return bool(loads) and min(loads) + self._placing < self.max_calls_per_worker

    @contextlib.contextmanager
    def admit_call(self) -> Iterator[None]:
        """Hold a place for a new call while it is set up; raise AllLinesBusy when there is none."""
        if self._draining():
            self.refused += 1
            raise AllLinesBusy("We cannot take a call on this line now: chat with us instead.")
        if not self.room_for_a_call():
            self.refused += 1
            raise AllLinesBusy("All our lines are busy right now: chat with us instead.")
        self._placing += 1
        try:
            yield
        finally:
            self._placing -= 1

    def check_chat(self) -> None:
        """Raise NotTakingChats when the node drains."""
        if self._draining():
            raise NotTakingChats(
                "We cannot start a chat right now: leave a message and we will get back to you."
            )
