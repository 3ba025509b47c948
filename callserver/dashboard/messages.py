"""Left messages (`/dashboard/messages`): the inbox with its mail state, and marking a message handled.

Marking one handled is `mark_handled` of `chats/left_messages.py`, the same call the softphone's
`message.handled` makes, so open softphones drop it from their list at once.
"""

from __future__ import annotations

from aiohttp import web

from callserver.dashboard import queries
from callserver.dashboard.page import back, checked_form, render, signed_in_owner, site_names
from callserver.errors import InvalidInput, NotFound
from callserver.web.keys import CHAT_DESK, DATABASE

PAGE = "/dashboard/messages"
STATUSES = ("new", "handled")


async def messages_page(request: web.Request) -> web.StreamResponse:
    owner = await signed_in_owner(request)
    status = request.query.get("status") or None
    if status not in (None, *STATUSES):
        raise InvalidInput(f"Unknown status {status[:40]!r}.")
    async with request.app[DATABASE].session() as session:
        rows = await queries.left_messages(session, owner.site_ids, status)
        names = await site_names(session, owner.site_ids)
    return render(
        request,
        owner,
        "messages.html",
        title="Left messages",
        messages=rows,
        status=status,
        site_names=names,
    )


async def message_status(request: web.Request) -> web.StreamResponse:
    owner, form = await checked_form(request)
    status = form.get("status", "")
    if status not in STATUSES:
        raise back(PAGE, error="A message is either new or handled.")
    message_id = request.match_info["message_id"]
    if status == "handled":
        await request.app[CHAT_DESK].left_messages.mark_handled(owner.account, message_id)
    else:
        # Back to new: nothing live follows a message once handled, so only the record changes.
        async with request.app[DATABASE].session() as session:
            if not await queries.reopen_left_message(session, owner.site_ids, message_id):
                raise NotFound("There is no such message.")
    raise back(PAGE, notice=f"Marked as {status}.")
