"""What a visitor may send in chats and forms: how long a message is, and how often (per visitor token)."""

from __future__ import annotations

import time
from collections.abc import Callable

from callserver.chats.errors import EmptyMessage, MessageTooLong, RateLimited
from callserver.limits import RateLimiter

MAX_MESSAGE_CHARS = 4000


def message_body(text: str) -> str:
    """The text as it is stored: stripped, not empty, at most MAX_MESSAGE_CHARS."""
    body = text.strip()
    if not body:
        raise EmptyMessage("The message is empty.")
    if len(body) > MAX_MESSAGE_CHARS:
        raise MessageTooLong(
            f"The message has {len(body)} characters; at most {MAX_MESSAGE_CHARS} fit in one message."
        )
    return body


class ChatLimits:
    """Per visitor token: chat messages, and the rarer forms (chat start, left message, transcript)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._messages = RateLimiter(rate=1.0, burst=10, clock=clock)
        self._forms = RateLimiter(rate=1 / 20, burst=6, clock=clock)

    def message(self, site_id: int, token: str) -> None:
        """Raise RateLimited when this visitor sent chat messages too fast (others are unaffected)."""
        if not self._messages.take((site_id, token)):
            raise RateLimited("Too many requests: please wait a moment and try again.")

    def form(self, site_id: int, token: str) -> None:
        """Raise RateLimited when this visitor started chats or sent forms too often."""
        if not self._forms.take((site_id, token)):
            raise RateLimited("Too many requests: please wait a moment and try again.")
