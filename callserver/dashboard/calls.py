"""The conversation log (`/dashboard/calls`), a call's page, its recording, and attributing an order to it.

A chat's page is `chats.py`; the log links to both.

A call of a site the owner does not see is answered with 404, as if it did not exist.
"""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from callserver.calls.states import CallState, EndReason
from callserver.dashboard import queries, recordings
from callserver.dashboard.filters import log_filters
from callserver.dashboard.page import back, checked_form, forbidden, render, signed_in_owner, site_names
from callserver.errors import NotFound
from callserver.orders.attribution import set_attribution
from callserver.orders.intake import find_order
from callserver.outcomes import site_tags
from callserver.web import auth, hooks
from callserver.web.keys import DATABASE, SETTINGS


async def log_page(request: web.Request) -> web.StreamResponse:
    owner = await signed_in_owner(request)
    filters = log_filters(request.query)
    after = request.query.get("after")
    cursor = queries.Cursor.decode(after) if after else None
    async with request.app[DATABASE].session() as session:
        page = await queries.conversation_log(session, owner.site_ids, filters, cursor)
        operators = await queries.operators_of(session, owner.site_ids)
        names = await site_names(session, owner.site_ids)
        tags = await site_tags(session, owner.site_ids) if owner.site_ids else []
    if filters.tag and filters.tag not in tags:
        tags.append(filters.tag)  # a rarely used tag beyond the suggestions stays selected
    kept = {k: v for k, v in request.query.items() if k != "after" and v}
    next_url = None
    if page.next_cursor is not None:
        next_url = "/dashboard/calls?" + urlencode({**kept, "after": page.next_cursor.encode()})
    return render(
        request,
        owner,
        "log.html",
        title="Calls and chats",
        page=page,
        q=request.query,
        operators=operators,
        site_names=names,
        tags=tags,
        states=list(CallState),
        end_reasons=list(EndReason),
        next_url=next_url,
        first_url="/dashboard/calls?" + urlencode(kept) if cursor else None,
        export_query=urlencode({k: v for k, v in kept.items() if k in ("from", "to", "tag")}),
    )


async def call_page(request: web.Request) -> web.StreamResponse:
    owner = await signed_in_owner(request)
    call_id = request.match_info["call_id"]
    async with request.app[DATABASE].session() as session:
        file = await queries.call_file(session, owner.site_ids, call_id)
    if file is None:
        raise NotFound("There is no such call.")
    return render(request, owner, "call.html", title=f"Call {call_id[:8]}", f=file, c=file.call)


async def recording(request: web.Request) -> web.StreamResponse:
    # Not `signed_in_owner`: an audio element cannot follow a redirect to the sign-in page.
    account = await auth.current_account(request)
    if account is None or account.role != "owner":
        raise forbidden("Only the shop's owners can listen to recordings.")
    async with request.app[DATABASE].session() as session:
        site_ids = await queries.visible_site_ids(session, account.site_ids)
        file = await queries.call_file(session, site_ids, request.match_info["call_id"])
    if file is None or not file.call.recording_path:
        raise NotFound("There is no recording of this call.")
    path = recordings.recording_file(file.call.recording_path, request.app[SETTINGS].var_dir)
    if not path.is_file():
        raise NotFound("The recording file is gone (retention or erasure).")
    headers = {"Content-Type": recordings.content_type(path), "Cache-Control": "private, no-store"}
    if request.query.get("download"):
        headers["Content-Disposition"] = f'attachment; filename="call-{file.call.id}{path.suffix}"'
    # FileResponse answers Range requests, which browsers need to seek and to read the duration.
    return web.FileResponse(path, headers=headers)


async def attribution_submit(request: web.Request) -> web.StreamResponse:
    owner, form = await checked_form(request)
    call_id = request.match_info["call_id"]
    location = f"/dashboard/calls/{call_id}"
    order_id = form.get("order_id", "").strip()
    async with request.app[DATABASE].session() as session:
        file = await queries.call_file(session, owner.site_ids, call_id)
        if file is None:
            raise NotFound("There is no such call.")
        order = await find_order(session, file.call.site_id, order_id)
        if order is None:
            raise back(location, error=f"No order {order_id!r} on this site.")
        if form.get("action") == "unlink":
            if order.channel != "call" or order.conversation_id != call_id:
                raise back(location, error=f"Order {order_id} is not attributed to this call.")
            await set_attribution(session, order, None, None, owner.account.id)
            notice = f"Order {order_id} is no longer attributed to this call."
        else:
            await set_attribution(session, order, "call", call_id, owner.account.id)
            notice = f"Order {order_id} is now attributed to this call."
            site_id = order.site_id
    if form.get("action") != "unlink":
        await hooks.announce_attributed(request.app, site_id, order_id)
    raise back(location, notice=notice)
