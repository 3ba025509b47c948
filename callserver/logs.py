"""Logging set-up: plain text by default, or JSON lines (`log_format = "json"`) carrying the call or chat id.

The id comes from, in order: the record's own `call_id`/`chat_id` (`extra=`), the conversation the
code runs for (`conversation_id`, a context variable that tasks inherit: a call's ringing task carries
its call), or the first argument of the project's usual "call %s …" / "chat %s …" messages.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# ("call" | "chat", id) of the conversation the running code works for.
conversation_id: ContextVar[tuple[str, str] | None] = ContextVar("conversation_id", default=None)


@contextlib.contextmanager
def for_conversation(kind: Literal["call", "chat"], id: str) -> Iterator[None]:
    """Log lines written inside (and by tasks started inside) carry this call's or chat's id."""
    token = conversation_id.set((kind, id))
    try:
        yield
    finally:
        conversation_id.reset(token)


def ids_of(record: logging.LogRecord) -> dict[str, str]:
    """The call or chat id a log record is about, if any."""
    found = {key: str(getattr(record, key)) for key in ("call_id", "chat_id") if getattr(record, key, None)}
    if found:
        return found
    current = conversation_id.get()
    if current is not None:
        return {f"{current[0]}_id": current[1]}
    message = record.msg if isinstance(record.msg, str) else ""
    for kind in ("call", "chat"):
        if message.startswith(f"{kind} %s") and isinstance(record.args, tuple) and record.args:
            return {f"{kind}_id": str(record.args[0])}
    return {}


class JsonLines(logging.Formatter):
    """One JSON object per line: time, level, logger, message, call_id/chat_id, exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **ids_of(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def setup(level: str, format: Literal["text", "json"] = "text") -> None:
    """Configure the root logger once, for `serve` and `demo`."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
