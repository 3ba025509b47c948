"""Mail of left messages to the site's notification address: tried at once, retried for about a day.

A mail server that is down when the shopper leaves a message must not lose the shop that message.
The mail's state lives in the message's row (`mail_state`, `mail_attempts`, `mail_error`,
`mail_next_at`), so a restart loses nothing: whichever process runs next sends what is due. Each try
is claimed in the database first (its next try moved past the attempt), so two processes sharing one
database never send the same mail twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from callserver.background import BackgroundTasks
from callserver.chats.records import ChatRecords, Left
from callserver.due_work import DueWork
from callserver.mail import Mail

log = logging.getLogger(__name__)

# Gaps between tries, in units of the first gap (60 s by default): 1 min, 5 min, 30 min, 2 h, 4 h, 8 h,
# 8 h — the last try about 23 hours after the first; then the mail is `failed` (the message stays listed).
RETRY_STEPS = (1, 5, 30, 120, 240, 480, 480)
# A claimed try is not due again for this long: well beyond one SMTP exchange (SMTP_TIMEOUT per step).
CLAIM = timedelta(minutes=2)
# Look at the table at least this often: another process may have stored mail that is due.
IDLE_LOOK = 300.0


class Outbox(Protocol):
    @property
    def configured(self) -> bool: ...

    async def send(self, mail: Mail) -> None: ...


def left_mail(left: Left, to: str) -> Mail:
    """The mail that tells the site about a left message (reply goes to the shopper)."""
    who = left.name or left.email or left.phone or "a visitor"
    lines = [
        f"{who} left a message on {left.site_name}:",
        "",
        left.body,
        "",
        f"Name: {left.name or '-'}",
        f"E-mail: {left.email or '-'}",
        f"Phone: {left.phone or '-'}",
        f"Page: {left.page or '-'}",
    ]
    if left.call_id:
        lines.append(f"They tried to call first (call {left.call_id}).")
    return Mail(
        to=to,
        subject=f"New message from {who} ({left.site_name})",
        body="\n".join(lines),
        reply_to=left.email,
    )


class LeftMail:
    """Sends the due mail of left messages in the background; `close()` is safe to call twice."""

    def __init__(
        self,
        records: ChatRecords,
        outbox: Outbox,
        on_change: Callable[[Left], Awaitable[None]],
        retry_after: float = 60.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._records = records
        self._outbox = outbox
        self._on_change = on_change
        self._gaps = [timedelta(seconds=retry_after * step) for step in RETRY_STEPS]
        self._clock = clock
        self._due = DueWork(
            "left-message mail",
            self.send_due,
            records.next_mail_at,
            clock,
            idle_look=IDLE_LOOK,
            after_error=self._gaps[0].total_seconds(),
        )
        self._background = BackgroundTasks("left-message mail")
        self._loop: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        """Start sending (what a previous run left due goes out now)."""
        if self._loop is None and not self._closed:
            self._loop = self._background.spawn(self._due.run())

    def wake(self) -> None:
        """A new message was stored: look for due mail now."""
        self._due.wake()

    async def send_due(self) -> None:
        """Try every mail that is due now, once each."""
        at = self._clock()
        for message_id in await self._records.mail_due(at):
            if self._closed:
                return
            job = await self._records.claim_mail(message_id, at, at + CLAIM)
            if job is None:
                continue  # another process took it
            try:
                if not job.notify_email:
                    raise LookupError(f"{job.left.site_name} has no notification address any more.")
                await self._outbox.send(left_mail(job.left, job.notify_email))
            except Exception as e:
                tried = job.attempts + 1
                retry_at = self._clock() + self._gaps[tried - 1] if tried <= len(self._gaps) else None
                # The message is stored and listed for operators: a failed mail loses nothing.
                log.warning(
                    "left message %s was not mailed (try %d, %s): %s",
                    message_id,
                    tried,
                    f"next at {retry_at:%H:%M:%S}" if retry_at else "giving up",
                    e,
                )
                changed = await self._records.mail_failed(message_id, str(e) or type(e).__name__, retry_at)
            else:
                changed = await self._records.mail_sent(message_id)
            if changed is not None:
                await self._on_change(changed)

    async def close(self, grace: float = 10.0) -> None:
        """Let a try in flight finish (up to `grace` seconds), then stop; what is due stays in the store."""
        if self._closed:
            return
        self._closed = True
        self._due.stop()
        await self._background.close(grace=grace)
