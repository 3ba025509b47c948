"""Call-back requests (`/dashboard/callbacks`): who asked to be called, when it suits them, what came of it.

Recording an outcome here is `done` of `callserver/callbacks.py`, the same call the softphone's
`callback.done` makes, so open softphones drop the request from their list at once.
"""

from __future__ import annotations

from aiohttp import web

from callserver.callbacks import OUTCOMES, CallbackRecords
from callserver.dashboard.page import back, checked_form, render, signed_in_owner
from callserver.errors import InvalidInput
from callserver.web.keys import CONVERSATIONS, DATABASE

PAGE = "/dashboard/callbacks"
SHOWN = ("open", "done")


async def callbacks_page(request: web.Request) -> web.StreamResponse:
    owner = await signed_in_owner(request)
    shown = request.query.get("show") or None
    if shown not in (None, *SHOWN):
        raise InvalidInput(f"Unknown filter {shown[:40]!r}: open or done.")
    rows = (
        await CallbackRecords(request.app[DATABASE]).listed(tuple(owner.site_ids), open_only=False)
        if owner.site_ids
        else []
    )
    if shown == "open":
        rows = [r for r in rows if r.outcome is None]
    elif shown == "done":
        rows = [r for r in rows if r.outcome is not None]
    return render(
        request,
        owner,
        "callbacks.html",
        title="Call-back requests",
        callbacks=rows,
        shown=shown,
        outcomes=OUTCOMES,
        several_sites=len({r.site_id for r in rows}) > 1,
    )


async def callback_outcome(request: web.Request) -> web.StreamResponse:
    owner, form = await checked_form(request)
    outcome = form.get("outcome", "")
    if outcome not in OUTCOMES:
        raise back(PAGE, error=f"The outcome is one of {', '.join(OUTCOMES)}.")
    callbacks = request.app[CONVERSATIONS].callbacks
    if callbacks is None:
        raise back(PAGE, error="This server takes no call-back requests.")
    await callbacks.done(owner.account, request.match_info["callback_id"], outcome)
    raise back(PAGE, notice=f"Recorded: {outcome.replace('_', ' ')}.")
