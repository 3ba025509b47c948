"""Dotted names of everything that happens to a call, kept in one place (timeline, logs, listeners)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

CALL_RINGING = "call.ringing"
CALL_RANG = "call.rang"  # one operator was rung (detail: operator)
CALL_RING_TIMEOUT = "call.ring_timeout"
CALL_DECLINED = "call.declined"
CALL_ANSWERED = "call.answered"
CALL_CONNECTED = "call.connected"
CALL_HELD = "call.held"
CALL_RESUMED = "call.resumed"
CALL_ENDED = "call.ended"
CALL_TRANSFER_RANG = "call.transfer_rang"  # an operator was rung to take over an answered call
CALL_TRANSFERRED = "call.transferred"  # their leg replaced the first operator's
CALL_RECONNECTING = "call.reconnecting"  # one side's socket or media went away (detail: side, cause)
CALL_RECONNECTED = "call.reconnected"  # that side came back: resumed its socket, or its leg was replaced

# What a shop's own systems hear (outbound webhooks, callserver/webhooks/). `callback.requested` and
# `csat.received` are part of the public list already; nothing emits them yet.
CHAT_CLOSED = "chat.closed"
MESSAGE_LEFT = "message.left"
CALLBACK_REQUESTED = "callback.requested"
ORDER_ATTRIBUTED = "order.attributed"
CSAT_RECEIVED = "csat.received"
PUBLISHED = (CALL_ENDED, CHAT_CLOSED, MESSAGE_LEFT, CALLBACK_REQUESTED, ORDER_ATTRIBUTED, CSAT_RECEIVED)


class EventSink(Protocol):
    """Where the domain tells that something happened, without knowing who listens (webhooks do).

    `subject` is `{"id": …}` for a record the API serialises (a call, chat, left message, order),
    the event's whole `data` otherwise. Publishing never raises: a listener's failure is its own.
    """

    async def publish(self, site_id: int, type: str, subject: Mapping[str, object]) -> None: ...


class NoEvents:
    """The sink of a domain object built without listeners (tests, tools)."""

    async def publish(self, site_id: int, type: str, subject: Mapping[str, object]) -> None:
        return None
