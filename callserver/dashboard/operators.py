"""Operators (`/dashboard/operators`): their activity, and adding, disabling and re-keying them.

An owner of some sites manages the operators of those sites only, not operators shared with others.
"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callserver import accounts
from callserver.dashboard import queries
from callserver.dashboard.filters import date_range, whole_number
from callserver.dashboard.page import (
    Owner,
    back,
    checked_form,
    checked_form_all,
    render,
    signed_in_owner,
    site_names,
)
from callserver.errors import CallserverError, InvalidInput, NotFound
from callserver.store.models import Site, User
from callserver.web import auth
from callserver.web.errors import HttpError
from callserver.web.keys import DATABASE

PAGE = "/dashboard/operators"


async def activity_page(request: web.Request) -> web.StreamResponse:
    owner = await signed_in_owner(request)
    start, end = date_range(request.query)
    async with request.app[DATABASE].session() as session:
        people = await queries.operator_activity(session, owner.site_ids, start, end)
        names = await site_names(session, owner.site_ids)
        manageable = {u.id for u in await queries.operators_of(session, owner.site_ids) if _manages(owner, u)}
    return render(
        request,
        owner,
        "operators.html",
        title="Operators",
        people=people,
        start=start,
        end=end,
        site_names=names,
        manageable=manageable,
    )


def _manages(owner: Owner, user: User) -> bool:
    if owner.sees_every_site:
        return True
    linked = {s.id for s in user.sites}
    return bool(linked) and linked <= set(owner.site_ids)


async def _managed_operator(session: AsyncSession, owner: Owner, request: web.Request) -> User:
    user_id = whole_number(request.match_info["user_id"], "User")
    user = await session.get(User, user_id)
    if user is None or user.role != "operator" or not _manages(owner, user):
        # An HttpError, not NotFound: the forms go back with a NotFound of theirs, this is the 404 page.
        raise HttpError(404, "not_found", "There is no such operator.")
    return user


async def operator_add(request: web.Request) -> web.StreamResponse:
    owner, form, site_values = await checked_form_all(request, "site")
    chosen = {int(v) for v in site_values if v.isdigit()} & set(owner.site_ids)
    if not owner.sees_every_site and not chosen:
        chosen = set(owner.site_ids)
    try:
        async with request.app[DATABASE].session() as session:
            linked = list(await session.scalars(select(Site).where(Site.id.in_(chosen)))) if chosen else []
            created = await accounts.create_user(
                session,
                form.get("email", ""),
                form.get("password", ""),
                "operator",
                sites=linked,
                name=form.get("name", "").strip(),
            )
    except CallserverError as e:
        raise back(PAGE, error=e.message) from e
    raise back(PAGE, notice=f"Operator {created.email} can now sign in to the softphone.")


async def operator_disable(request: web.Request) -> web.StreamResponse:
    owner, form = await checked_form(request)
    disable = form.get("disabled") == "1"
    async with request.app[DATABASE].session() as session:
        user = await _managed_operator(session, owner, request)
        await accounts.set_disabled(session, user.id, disable)
        email, user_id = user.email, user.id
    if disable:  # after the commit: an open softphone is cut off and cannot sign in again
        await auth.end_sessions_of(request.app, user_id)
    raise back(PAGE, notice=f"{email} is {'disabled' if disable else 'enabled again'}.")


async def operator_password(request: web.Request) -> web.StreamResponse:
    owner, form = await checked_form(request)
    try:
        async with request.app[DATABASE].session() as session:
            user = await _managed_operator(session, owner, request)
            await accounts.set_password(session, user.id, form.get("password", ""))
            email, user_id = user.email, user.id
    except (InvalidInput, NotFound) as e:
        raise back(PAGE, error=e.message) from e
    await auth.end_sessions_of(request.app, user_id)  # signed out everywhere, open softphones too
    raise back(PAGE, notice=f"New password set for {email}; they were signed out.")
