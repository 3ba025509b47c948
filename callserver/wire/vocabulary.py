"""The codes and reasons the server, the widget and the softphone share, in one place.

The browser code cannot import these, so `docs/signaling.md` carries a section generated from this
module (`python -m callserver.wire.vocabulary --markdown`), and tests/test_wire.py checks that the doc
is up to date and that `web_button/widget.js` and `operator_softphone/*.js` use these names only.
Call states and end reasons are the domain's own (`callserver/calls/states.py`).
"""

from __future__ import annotations

import argparse
import re
import sys
from enum import StrEnum
from pathlib import Path


class Fallback(StrEnum):
    """Why a shopper chats instead of talking (`chat.start` `fallback`); the operator reads it first."""

    MICROPHONE_DENIED = "microphone_denied"  # the browser or the shopper refused the microphone
    MICROPHONE_FAILED = "microphone_failed"  # the microphone could not be started
    NO_WEBRTC = "no_webrtc"  # the browser cannot make calls
    ICE_FAILED = "ice_failed"  # the call could not connect
    NO_ANSWER = "no_answer"  # rung, nobody answered in the ring timeout
    ALL_BUSY = "all_busy"  # every operator of the site was in a call
    DECLINED = "declined"  # the call was declined
    FAILED = "failed"  # the call was interrupted


class CallEndWhy(StrEnum):
    """What the shopper is told about a call that ended unanswered or broke (`call.ended` `why`)."""

    NOBODY_ONLINE = "nobody_online"  # the widget shows the offline form
    ALL_BUSY = "all_busy"
    NO_ANSWER = "no_answer"
    DECLINED = "declined"
    CONNECTION_LOST = "connection_lost"  # the operator's softphone went away mid-call


class CallProblem(StrEnum):
    """The widget's own names for a call that failed in the browser (its `error` event's `code`)."""

    MICROPHONE_DENIED = "microphone_denied"
    MICROPHONE_FAILED = "microphone_failed"
    ICE_FAILED = "ice_failed"
    WEBRTC_FAILED = "webrtc_failed"  # the peer connection could not be set up
    BAD_ANSWER = "bad_answer"  # the server's answer could not be applied
    UNREACHABLE = "unreachable"  # the socket could not be opened
    CONNECTION_LOST = "connection_lost"  # the socket closed mid-call
    ALL_BUSY = "all_busy"  # the server refused the offer: its node is full or draining (its error code)


# Which fallback a failed call leads to, by the widget's problem or the call's end reason (the widget's
# FALLBACKS table mirrors this one; a `why` that is a Fallback is taken as it is).
FALLBACK_FOR: dict[str, Fallback] = {
    CallProblem.MICROPHONE_DENIED: Fallback.MICROPHONE_DENIED,
    CallProblem.MICROPHONE_FAILED: Fallback.MICROPHONE_FAILED,
    CallProblem.ICE_FAILED: Fallback.ICE_FAILED,
    CallProblem.WEBRTC_FAILED: Fallback.ICE_FAILED,
    CallProblem.BAD_ANSWER: Fallback.ICE_FAILED,
    "missed": Fallback.NO_ANSWER,
    "declined": Fallback.DECLINED,
    CallProblem.ALL_BUSY: Fallback.ALL_BUSY,
    "failed": Fallback.FAILED,
}


class CallSide(StrEnum):
    """Which side of a call a frame speaks of (`call.reconnecting`, `call.reconnected`)."""

    SHOPPER = "shopper"
    OPERATOR = "operator"


class RingStopped(StrEnum):
    """Why a softphone stops ringing (`call.withdrawn` `reason`), besides the call's end reasons."""

    ANSWERED_ELSEWHERE = "answered_elsewhere"
    DECLINED = "declined"
    TIMEOUT = "timeout"


class TransferFailed(StrEnum):
    """Why a colleague did not take a transferred call (`call.transfer_failed` `reason`)."""

    DECLINED = "declined"
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"
    FAILED = "failed"


class ChatClosedReason(StrEnum):
    """Why a chat left a softphone (`chat.closed` `reason`)."""

    VISITOR = "visitor"  # the shopper closed it
    VISITOR_LEFT = "visitor_left"  # no page of the shopper for `visitor_grace` (10 minutes)
    OPERATOR = "operator"
    TRANSFERRED = "transferred"


class ChatState(StrEnum):
    """A chat as the widget and the queue see it (`chat.state` `chat.state`)."""

    WAITING = "waiting"
    OPEN = "open"
    CLOSED = "closed"


class MessageStatus(StrEnum):
    """Receipts of a chat message (MESSAGE `status`, `chat.status`)."""

    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"


class HistoryChannel(StrEnum):
    """What an entry of a visitor's history is (`visitor.history` ENTRY `channel`)."""

    CALL = "call"
    CHAT = "chat"
    MESSAGE = "message"  # a left message
    ORDER = "order"


VOCABULARY: tuple[tuple[str, type[StrEnum]], ...] = (
    ("`chat.start` `fallback`", Fallback),
    ("`call.ended` `why`", CallEndWhy),
    ("the widget's `error` event `code` for a call that failed in the browser", CallProblem),
    ("`call.withdrawn` `reason` (or the call's end reason)", RingStopped),
    ("`call.transfer_failed` `reason`", TransferFailed),
    ("`call.reconnecting` and `call.reconnected` `side`", CallSide),
    ("`chat.closed` `reason`", ChatClosedReason),
    ("CHAT `state`", ChatState),
    ("MESSAGE `status`", MessageStatus),
    ("`visitor.history` ENTRY `channel`", HistoryChannel),
)

START = "<!-- vocabulary: generated by `python -m callserver.wire.vocabulary --markdown`; do not edit -->"
END = "<!-- end of vocabulary -->"


def markdown() -> str:
    """The doc's vocabulary section, from START to END."""
    lines = [START, "## Codes and reasons", ""]
    for where, enum in VOCABULARY:
        lines.append(f"- {where} ({enum.__name__}): " + ", ".join(f"`{m.value}`" for m in enum) + ".")
    fallbacks = ", ".join(f"`{k}` → `{v.value}`" for k, v in FALLBACK_FOR.items())
    lines.append(f"- the fallback a failed call leads to (the widget's problem or end reason): {fallbacks}.")
    lines.append(END)
    return "\n".join(lines)


def with_vocabulary(doc: str) -> str:
    """`doc` with its generated section replaced (or appended when it has none)."""
    section = re.compile(re.escape(START) + r".*?" + re.escape(END), re.DOTALL)
    if section.search(doc):
        return section.sub(lambda _: markdown(), doc)
    return doc.rstrip("\n") + "\n\n" + markdown() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m callserver.wire.vocabulary", description=__doc__)
    parser.add_argument("--markdown", action="store_true", help="print the doc's generated section")
    parser.add_argument("--write", type=Path, metavar="DOC", help="update the section in DOC in place")
    args = parser.parse_args(argv)
    if args.write:
        args.write.write_text(with_vocabulary(args.write.read_text(encoding="utf-8")), encoding="utf-8")
    if args.markdown or not args.write:
        sys.stdout.write(markdown() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
