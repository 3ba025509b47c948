"""Erasing a person's data on request (`/dashboard/erase`), and the audit log of what was erased."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select

from callserver.dashboard import queries, recordings
from callserver.dashboard.page import back, checked_form, render, signed_in_owner
from callserver.errors import InvalidInput
from callserver.store.models import AuditEntry, User
from callserver.web.keys import DATABASE, SETTINGS

PAGE = "/dashboard/erase"


async def erase_page(request: web.Request) -> web.StreamResponse:
    owner = await signed_in_owner(request)
    async with request.app[DATABASE].session() as session:
        entries = list(
            await session.execute(
                select(AuditEntry, User.email)
                .outerjoin(User, User.id == AuditEntry.actor_id)
                .where(queries.in_sites(AuditEntry.site_id, owner.site_ids))
                .order_by(AuditEntry.at.desc())
                .limit(50)
            )
        )
    return render(request, owner, "erase.html", title="Erase a person's data", entries=entries)


async def erase_submit(request: web.Request) -> web.StreamResponse:
    owner, form = await checked_form(request)
    try:
        result = await recordings.erase_visitor(
            request.app[DATABASE],
            owner.site_ids,
            request.app[SETTINGS].var_dir,
            owner.account.id,
            email=form.get("email", ""),
            phone=form.get("phone", ""),
        )
    except InvalidInput as e:
        raise back(PAGE, error=e.message) from e
    raise back(
        PAGE,
        notice=(
            f"Erased {result.recordings} recording(s), {result.chat_messages} chat message(s), "
            f"{result.left_messages} left message(s) and the contact data of {result.visitors} visitor(s) "
            f"and {result.orders} order(s)."
        ),
    )
