"""Mail through the SMTP server the settings name (`CALLSERVER_SMTP_*`): left messages, transcripts."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from callserver.settings import Settings

SMTP_TIMEOUT = 20.0


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    body: str
    reply_to: str | None = None


class MailError(Exception):
    """The SMTP server could not be reached or refused the message."""


class SmtpOutbox:
    """Sends mail with the standard library's SMTP client in a worker thread (it blocks)."""

    def __init__(self, settings: Settings) -> None:
        self._host = settings.smtp_host
        self._port = settings.smtp_port
        self._user = settings.smtp_user
        self._password = settings.smtp_password
        self._tls = settings.smtp_tls
        self._sender = settings.mail_from

    @property
    def configured(self) -> bool:
        return bool(self._host)

    async def send(self, mail: Mail) -> None:
        """Deliver one message to the SMTP server; raises MailError when that fails."""
        if not self.configured:
            raise MailError("No SMTP server is configured (CALLSERVER_SMTP_HOST).")
        try:
            await asyncio.to_thread(self._send, self._message(mail))
        except (OSError, ValueError, smtplib.SMTPException) as e:
            raise MailError(f"Mail to {mail.to} via {self._host}:{self._port} failed: {e}") from e

    def _message(self, mail: Mail) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self._sender
        message["To"] = mail.to
        message["Subject"] = mail.subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain=self._sender.rsplit("@", 1)[-1] or "callserver")
        if mail.reply_to:
            message["Reply-To"] = mail.reply_to
        message.set_content(mail.body)
        return message

    def _send(self, message: EmailMessage) -> None:
        with smtplib.SMTP(self._host, self._port, timeout=SMTP_TIMEOUT) as smtp:
            if self._tls:
                smtp.starttls(context=ssl.create_default_context())
            if self._user:
                smtp.login(self._user, self._password)
            smtp.send_message(message)
