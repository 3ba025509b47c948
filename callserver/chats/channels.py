"""How the chat domain reaches sockets: a channel takes typed frames (`callserver/wire/outbound.py`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from callserver.operators.roster import Seat
from callserver.wire.outbound import Frame

log = logging.getLogger(__name__)


class ChatChannel(Protocol):
    """A socket (widget or softphone) as the chat domain sees it."""

    async def chat_event(self, frame: Frame) -> None: ...


async def send(channel: ChatChannel, frame: Frame) -> bool:
    """Send one frame; a socket that fails is logged and skipped (the others still get it)."""
    try:
        await channel.chat_event(frame)
    except Exception:
        log.warning("could not send %s to a socket", frame.TYPE, exc_info=True)
        return False
    return True


async def to_seats(seats: Iterable[Seat | None], frame: Frame) -> bool:
    """Send a frame to every open softphone of these operators; whether any got it."""
    sent = False
    for seat in seats:
        for channel in list(seat.channels if seat else []):
            sent = await send(channel, frame) or sent
    return sent
