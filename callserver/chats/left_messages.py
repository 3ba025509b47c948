"""Messages left in the offline form: stored, shown to operators, and mailed to the site by a listener.

Leaving a message stores it and tells the site's softphones (`message.new`); the retrying mailer
(`left_mail.py`) listens for stored mail and reports each try back here, which softphones see as
`message.mail`. Handling a message (softphone or dashboard) takes it off every softphone's list.
"""

from __future__ import annotations

from callserver import events
from callserver.accounts import Account
from callserver.calls.records import VisitorContext
from callserver.chats.channels import to_seats
from callserver.chats.errors import UnknownMessage
from callserver.chats.left_mail import LeftMail, Outbox
from callserver.chats.limits import ChatLimits, message_body
from callserver.chats.records import ChatRecords, Left
from callserver.errors import InvalidInput
from callserver.operators.roster import Roster
from callserver.sites import Site
from callserver.wire import outbound as wire


class LeftMessages:
    """The offline form's messages and their mail; `close()` is safe to call twice."""

    def __init__(
        self,
        records: ChatRecords,
        roster: Roster,
        outbox: Outbox,
        limits: ChatLimits,
        mail_retry_after: float = 60.0,
        sink: events.EventSink | None = None,
    ) -> None:
        self._records = records
        self._sink = sink or events.NoEvents()  # who hears `message.left`
        self._roster = roster
        self._outbox = outbox
        self._limits = limits
        self._mail = LeftMail(records, outbox, self._mail_changed, mail_retry_after)

    def start_mailing(self) -> None:
        """Start mailing (what a previous run left due goes out now)."""
        self._mail.start()

    async def leave(
        self,
        site: Site,
        visitor: VisitorContext,
        name: str | None,
        email: str | None,
        phone: str | None,
        text: str,
        call_id: str | None = None,
    ) -> str:
        """Store the offline form, show it to operators, and have it mailed to the site in the background.

        The mail is retried until it goes out (see left_mail.py); its state is listed with the message.
        """
        body = message_body(text)
        if not (email or phone):
            raise InvalidInput("Leave an e-mail address or a phone number, so that we can answer.")
        self._limits.form(site.id, visitor.token)
        left = await self._records.leave_message(
            site.id,
            site.name,
            visitor,
            name,
            email,
            phone,
            body,
            call_id,
            mail=bool(site.notify_email and self._outbox.configured),
        )
        await self._tell_site(left.site_id, wire.MessageNew(left.wire()))
        await self._sink.publish(left.site_id, events.MESSAGE_LEFT, {"id": left.id})
        if left.mail is not None:
            self._mail.wake()
        return left.id

    async def listed(self, account: Account) -> tuple[wire.LeftMessage, ...]:
        """The messages still to handle on the account's sites, newest first."""
        return tuple(m.wire() for m in await self._records.left_messages(account.site_ids))

    async def mark_handled(self, account: Account, message_id: str) -> None:
        """Take a message off every softphone's list (from a softphone or the dashboard)."""
        if not await self._records.handled(message_id, account.site_ids):
            raise UnknownMessage(f"There is no left message {message_id!r}.")
        await to_seats(self._roster.seats(), wire.MessageHandled(message_id))

    async def _mail_changed(self, left: Left) -> None:
        """A mail try ended: operators of the site see the message's mail state."""
        await self._tell_site(
            left.site_id, wire.MessageMail(left.id, left.mail.wire() if left.mail else None)
        )

    async def _tell_site(self, site_id: int, frame: wire.Frame) -> None:
        await to_seats((s for s in self._roster.seats() if s.account.works_for(site_id)), frame)

    async def close(self, mail_wait: float = 10.0) -> None:
        """Give a mail try in flight `mail_wait` seconds, then stop; what is due stays in the store."""
        await self._mail.close(grace=mail_wait)
