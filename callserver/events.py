"""Dotted names of everything that happens to a call, kept in one place (timeline, logs, listeners)."""

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
