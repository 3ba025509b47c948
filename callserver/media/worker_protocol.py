"""The pipe between the main process and a media worker: length-prefixed JSON frames.

Each frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON. Three kinds travel:
- `Request` (main → worker): `op` on one call (`open_call`, `answer_shopper`, `answer_operator`,
  `replace_operator`, `replace_leg` (args `side`, `sdp`: a re-offer), `connect`, `hold`, `quality`,
  `close`) or on the worker (`recordings_done`, `ping`);
- `Reply` (worker → main): the result of the request with the same `id`, or an error;
- `Event` (worker → main): `ready`, `leg_failed` (a leg's connection failed by itself, or nothing
  arrives from it any more), `leg_back` (packets arrive again on a leg reported gone for want of them)
  and `recording_ready` (a call's playback file is mixed).
Only signaling-sized things cross the pipe; the audio never does.
"""

from __future__ import annotations

import asyncio
import json
import struct
from dataclasses import dataclass, field
from typing import Any

LENGTH = struct.Struct("!I")
MAX_FRAME = 1 << 20  # an SDP is a few kB: anything near this is a broken stream


class ProtocolError(Exception):
    """A frame on the worker pipe that cannot be read."""


@dataclass(frozen=True)
class Request:
    id: int
    op: str
    call_id: str | None = None
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    id: int
    result: Any = None
    error: str | None = None  # the exception's class name: `BadOffer`, …
    message: str = ""


@dataclass(frozen=True)
class Event:
    name: str
    call_id: str | None = None
    args: dict[str, Any] = field(default_factory=dict)


Frame = Request | Reply | Event


def encode(frame: Frame) -> bytes:
    """One frame, length prefix included."""
    if isinstance(frame, Request):
        body: dict[str, Any] = {"kind": "request", "id": frame.id, "op": frame.op}
        body.update(call_id=frame.call_id, args=frame.args)
    elif isinstance(frame, Reply):
        body = {"kind": "reply", "id": frame.id, "result": frame.result}
        if frame.error is not None:
            body.update(error=frame.error, message=frame.message)
    else:
        body = {"kind": "event", "name": frame.name, "call_id": frame.call_id, "args": frame.args}
    data = json.dumps(body, separators=(",", ":")).encode()
    return LENGTH.pack(len(data)) + data


def decode(data: bytes) -> Frame:
    """A frame from its JSON body (without the length prefix)."""
    try:
        body = json.loads(data)
        kind = body["kind"]
        if kind == "request":
            return Request(
                int(body["id"]), str(body["op"]), body.get("call_id"), dict(body.get("args") or {})
            )
        if kind == "reply":
            return Reply(int(body["id"]), body.get("result"), body.get("error"), str(body.get("message", "")))
        if kind == "event":
            return Event(str(body["name"]), body.get("call_id"), dict(body.get("args") or {}))
    except (ValueError, KeyError, TypeError) as e:
        raise ProtocolError(f"Unreadable frame on the media worker pipe: {e}") from e
    raise ProtocolError(f'Unknown frame kind "{kind}" on the media worker pipe.')


async def read_frame(reader: asyncio.StreamReader) -> Frame | None:
    """The next frame, or None when the other side closed the pipe."""
    try:
        (length,) = LENGTH.unpack(await reader.readexactly(LENGTH.size))
        if length > MAX_FRAME:
            raise ProtocolError(f"A frame of {length} bytes on the media worker pipe.")
        return decode(await reader.readexactly(length))
    except asyncio.IncompleteReadError:
        return None
