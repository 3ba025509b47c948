"""Which operators ring for a call: presence, busy state and the site's ring strategy."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from callserver.operators.roster import Seat
from callserver.sites import RingStrategy


class Router:
    """Orders the free operators of a site by its ring strategy."""

    def __init__(self) -> None:
        self._last_rung: dict[int, int] = {}  # site id → operator id rung last (round-robin)

    def next_to_ring(
        self, site_id: int, strategy: RingStrategy, seats: Iterable[Seat], tried: set[int]
    ) -> list[Seat]:
        """The operators to ring now: one for longest-idle and round-robin, all for ring-all."""
        free = [s for s in seats if s.free and s.account.works_for(site_id) and s.account.id not in tried]
        if not free:
            return []
        if strategy is RingStrategy.RING_ALL:
            return free
        if strategy is RingStrategy.ROUND_ROBIN:
            free.sort(key=lambda s: s.account.id)
            last = self._last_rung.get(site_id, -1)
            after = [s for s in free if s.account.id > last]
            chosen = next(itertools.chain(after, free))
            self._last_rung[site_id] = chosen.account.id
            return [chosen]
        return [min(free, key=lambda s: (s.idle_since, s.account.id))]

    def least_loaded(self, site_id: int, seats: Iterable[Seat], max_chats: int) -> Seat | None:
        """The operator to give a new chat: fewest chats, not in a call, idle longest; None at the limit."""
        open_seats = [
            s for s in seats if s.reachable and s.account.works_for(site_id) and len(s.chats) < max_chats
        ]
        return min(
            open_seats,
            key=lambda s: (len(s.chats), s.call_id is not None, s.idle_since, s.account.id),
            default=None,
        )
