"""An SMTP inbox for tests that send mail (served by aiosmtpd)."""

from __future__ import annotations

from email import message_from_bytes
from email.message import Message
from typing import Any

MAIL_FROM = "calls@northwood.example"
NOTIFY = "team@northwood.example"
"""The site's address for new call-backs and left messages in the `mailing_stack` fixture (conftest.py)."""


class Inbox:
    """An aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content)
        message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 Message accepted for delivery"


def mail_text(mail: Message) -> str:
    payload = mail.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()
