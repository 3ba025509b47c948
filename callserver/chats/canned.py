"""Canned replies: ready answers operators pick in the softphone, per site or for every site."""

from __future__ import annotations

from callserver.accounts import Account
from callserver.chats.channels import to_seats
from callserver.chats.errors import NotYourChat, UnknownChat
from callserver.chats.limits import message_body
from callserver.chats.records import Canned, ChatRecords
from callserver.operators.roster import Roster
from callserver.wire import outbound as wire


class CannedReplies:
    """Adds and removes canned replies; every open softphone gets its sites' list after a change."""

    def __init__(self, records: ChatRecords, roster: Roster) -> None:
        self._records = records
        self._roster = roster

    async def replies(self, account: Account) -> tuple[wire.CannedReply, ...]:
        return tuple(c.wire() for c in await self._records.canned(account.site_ids))

    async def add(self, account: Account, site_id: int | None, title: str, text: str) -> Canned:
        if site_id is not None and not account.works_for(site_id):
            raise NotYourChat("You do not work for that site.")
        if site_id is None and account.site_ids:
            site_id = account.site_ids[0]  # an operator of some sites cannot write for every site
        reply = await self._records.add_canned(site_id, title.strip() or text[:40], message_body(text))
        await self._changed()
        return reply

    async def remove(self, account: Account, reply_id: int) -> None:
        if not await self._records.remove_canned(reply_id, account.site_ids):
            # `unknown_chat` on the wire since canned replies exist (tests/test_socket_abuse.py holds it).
            raise UnknownChat(f"There is no canned reply {reply_id}.")
        await self._changed()

    async def _changed(self) -> None:
        for seat in self._roster.seats():
            if seat.channels:
                await to_seats([seat], wire.CannedReplies(await self.replies(seat.account)))
