"""Answering one text frame of a socket: decode it, handle it, and send a coded error for what fails.

Both sockets, the widget's and the softphone's, stay open after a bad or failing message. The sender
gets an `error` frame (naming the chat message's `client_id` where there is one); a bug on our side is
one line in the log and an `internal_error` frame, never a dropped socket.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from callserver.errors import CallserverError
from callserver.wire.inbound import BadMessage, error, internal_error

log = logging.getLogger(__name__)

Message = TypeVar("Message")


async def answer_frame(
    side: str,
    data: str,
    decode: Callable[[str], Message],
    handle: Callable[[Message], Awaitable[None]],
    send: Callable[[Mapping[str, object]], Awaitable[None]],
) -> None:
    """Decode `data` and handle the message; what fails is answered on `send` (`side` names it in the log)."""
    message: Message | None = None
    try:
        message = decode(data)
        await handle(message)
    except BadMessage as e:
        await send(error(e.code, e.message))
    except CallserverError as e:
        await send(error(e.code, e.message, getattr(message, "client_id", None)))
    except Exception as e:
        log.error("%s message %s failed: %s: %s", side, getattr(message, "type", "?"), type(e).__name__, e)
        with contextlib.suppress(ConnectionError):
            await send(internal_error(getattr(message, "client_id", None)))
