"""The roster: every operator's seat — presence, open softphones, the grace after the last one closes,
and their load (one call, several chats).

Calls (`calls/switchboard.py`) and chats (`chats/desk.py`) read seats and report load through the
roster; nobody else changes a seat. `Roster` is the interface, `LocalRoster` the in-process one; a
roster shared by several nodes (Redis) can take its place without the switchboard or the desk knowing
(LiveKit's `Router` / `localrouter.go` is the model).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from callserver.accounts import Account
from callserver.background import BackgroundTasks
from callserver.clock import Clock, LoopClock, Timer
from callserver.wire.outbound import Frame

log = logging.getLogger(__name__)


class Presence(StrEnum):
    ONLINE = "online"
    AWAY = "away"
    OFFLINE = "offline"


class OperatorChannel(Protocol):
    """One open softphone of an operator; the socket adapter turns these calls into wire messages."""

    async def incoming(self, call: dict[str, object]) -> None: ...
    async def withdrawn(self, call_id: str, reason: str) -> None: ...
    async def answer(self, call_id: str, sdp: str) -> None: ...
    async def connected(self, call_id: str) -> None: ...
    async def ended(self, call_id: str, reason: str) -> None: ...
    async def presence(self, status: Presence) -> None: ...
    async def transferred(self, call_id: str, to_name: str) -> None: ...
    async def transfer_failed(self, call_id: str, reason: str) -> None: ...
    async def chat_event(self, frame: Frame) -> None:
        """A chat frame (`chat.message`, `chat.assigned`, …) for this softphone."""

    async def call_event(self, frame: Frame) -> None:
        """A call frame (`call.reconnecting`, `call.reconnected`, `call.detached`) for this softphone."""


@dataclass(eq=False)
class Seat:
    """An operator as calls and chats see them. Read it freely; change it only through the roster."""

    account: Account
    presence: Presence = Presence.OFFLINE
    channels: list[OperatorChannel] = field(default_factory=list)
    idle_since: float = 0.0
    call_id: str | None = None
    chats: set[str] = field(default_factory=set)  # ids of the chats this operator handles

    @property
    def free(self) -> bool:
        return self.presence is Presence.ONLINE and bool(self.channels) and self.call_id is None

    @property
    def reachable(self) -> bool:
        """Online with a softphone open: can take chats, in a call or not."""
        return self.presence is Presence.ONLINE and bool(self.channels)


SeatListener = Callable[[Seat], Awaitable[None]]


class Roster(Protocol):
    """Where operators' presence and load live (in this process, or shared by several nodes)."""

    def seat(self, account: Account) -> Seat: ...
    def seat_of(self, operator_id: int) -> Seat | None: ...
    def seats(self) -> list[Seat]: ...
    def presence_of(self, operator_id: int) -> Presence: ...
    def operators_online(self, site_id: int) -> int: ...
    def join(self, account: Account, channel: OperatorChannel) -> Callable[[], None]: ...
    async def set_presence(self, operator_id: int, status: Presence) -> Seat: ...
    def took_call(self, operator_id: int, call_id: str) -> None: ...
    def released_call(self, operator_id: int) -> None: ...
    def took_chat(self, operator_id: int, chat_id: str) -> None: ...
    def released_chat(self, operator_id: int, chat_id: str) -> None: ...
    def released_chats(self, operator_id: int) -> None: ...
    def on_change(self, listener: SeatListener) -> Callable[[], None]: ...
    async def close(self) -> None: ...


class Seats:
    """Reading the seats a roster keeps (in-process, or this node's copy of the cluster's), and
    telling listeners of presence changes."""

    def __init__(self) -> None:
        self._seats: dict[int, Seat] = {}
        self._listeners: list[SeatListener] = []

    def on_change(self, listener: SeatListener) -> Callable[[], None]:
        """Call `listener` after an operator's presence changes; returns the function that unregisters it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def _changed(self, seat: Seat) -> None:
        for listener in list(self._listeners):
            try:
                await listener(seat)
            except Exception:
                log.exception("a listener failed on the presence change of %s", seat.account.email)

    def seat_of(self, operator_id: int) -> Seat | None:
        return self._seats.get(operator_id)

    def seats(self) -> list[Seat]:
        return list(self._seats.values())

    def presence_of(self, operator_id: int) -> Presence:
        seat = self._seats.get(operator_id)
        return seat.presence if seat else Presence.OFFLINE

    def operators_online(self, site_id: int) -> int:
        """Operators of the site online with a softphone open (busy or not; on any node in a cluster)."""
        return sum(1 for s in self._seats.values() if s.reachable and s.account.works_for(site_id))


class LocalRoster(Seats):
    """The operators of this process; `close()` is safe to call twice."""

    def __init__(self, presence_grace: float, clock: Clock | None = None) -> None:
        super().__init__()
        self._presence_grace = presence_grace
        self._clock = clock or LoopClock()
        self._offline_timers: dict[int, Timer] = {}
        self._background = BackgroundTasks("roster")

    # Reading -----------------------------------------------------------------------------------

    def seat(self, account: Account) -> Seat:
        """The operator's seat, made on first sight (offline until they say otherwise)."""
        seat = self._seats.get(account.id)
        if seat is None:
            seat = self._seats[account.id] = Seat(account=account, idle_since=self._clock.now())
        return seat

    # Presence ----------------------------------------------------------------------------------

    def join(self, account: Account, channel: OperatorChannel) -> Callable[[], None]:
        """Register an open softphone; returns the function that unregisters it.

        When the last softphone closes the operator stays as they were for `presence_grace` seconds
        (a reload or a short network drop should not take them offline), then goes offline.
        """
        seat = self.seat(account)
        seat.channels.append(channel)
        timer = self._offline_timers.pop(account.id, None)
        if timer:
            timer.cancel()

        def leave() -> None:
            if channel in seat.channels:
                seat.channels.remove(channel)
            if not seat.channels and account.id not in self._offline_timers:
                self._offline_timers[account.id] = self._clock.call_later(
                    self._presence_grace, lambda: self._went_away(account.id)
                )

        return leave

    def _went_away(self, operator_id: int) -> None:
        self._offline_timers.pop(operator_id, None)
        seat = self._seats.get(operator_id)
        if seat and not seat.channels:
            seat.presence = Presence.OFFLINE
            log.info("operator %s is offline: softphone gone", seat.account.email)
            self._background.spawn(self._changed(seat))

    async def set_presence(self, operator_id: int, status: Presence) -> Seat:
        """The operator chose a presence: their softphones are told, then the listeners."""
        seat = self._seats[operator_id]
        seat.presence = status
        if status is Presence.ONLINE and seat.call_id is None:
            seat.idle_since = max(seat.idle_since, self._clock.now())
        for channel in list(seat.channels):
            await channel.presence(status)
        await self._changed(seat)
        return seat

    # Load --------------------------------------------------------------------------------------

    def took_call(self, operator_id: int, call_id: str) -> None:
        self._seats[operator_id].call_id = call_id

    def released_call(self, operator_id: int) -> None:
        """The operator's call ended or passed to a colleague: idle from now (longest-idle routing)."""
        seat = self._seats[operator_id]
        seat.call_id = None
        seat.idle_since = self._clock.now()

    def took_chat(self, operator_id: int, chat_id: str) -> None:
        self._seats[operator_id].chats.add(chat_id)

    def released_chat(self, operator_id: int, chat_id: str) -> None:
        seat = self._seats.get(operator_id)
        if seat is not None:
            seat.chats.discard(chat_id)

    def released_chats(self, operator_id: int) -> None:
        """Every chat of the operator went back to the queue (they went offline)."""
        seat = self._seats.get(operator_id)
        if seat is not None:
            seat.chats.clear()

    async def close(self) -> None:
        """Cancel the grace timers and wait for listeners in flight; safe to call twice."""
        for timer in self._offline_timers.values():
            timer.cancel()
        self._offline_timers.clear()
        await self._background.close()
