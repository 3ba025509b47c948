"""The owner dashboard's pages under `/dashboard/`: parse the request, ask the queries, render.

Only owners get in (operators get 403); an owner linked to sites sees only those sites, and a call
of another site is answered with 404 as if it did not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from multidict import MultiDictProxy
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callserver import accounts, sites
from callserver.accounts import Account
from callserver.calls.states import CallState, EndReason, RingStrategy
from callserver.dashboard import queries, recordings, site_form
from callserver.dashboard.charts import daily_chart
from callserver.errors import CallserverError, InvalidInput, NotFound
from callserver.orders.attribution import set_attribution
from callserver.store.models import AuditEntry, LeftMessage, Order, Site, User, UserSite
from callserver.web import auth, csrf
from callserver.web.errors import html_errors
from callserver.web.keys import DATABASE, SETTINGS, TEMPLATES
from callserver.web.visitors import SHOP_FLOOR

RETENTION = web.AppKey("dashboard_retention", asyncio.Task[None])
OVERVIEW_DAYS = 30
# The overview and the activity page look at most this far at once: owners compare months, and
# the figures stay quick to compute on a busy shop.
MAX_RANGE_DAYS = 366


@dataclass(frozen=True)
class Owner:
    """The logged-in owner of this request and the sites they may see."""

    account: Account
    site_ids: list[int]
    csrf: str

    @property
    def sees_every_site(self) -> bool:
        return not self.account.site_ids


async def _owner(request: web.Request) -> Owner:
    account = await auth.current_account(request)
    if account is None:
        query = urlencode({"next": request.path_qs})
        raise web.HTTPFound(f"/dashboard/login?{query}")
    if account.role != "owner":
        raise _forbidden(request, "The dashboard is for shop owners; operators use the softphone.")
    async with request.app[DATABASE].session() as session:
        site_ids = await queries.visible_site_ids(session, account.site_ids)
    return Owner(account, site_ids, csrf.token_for(request.cookies.get(auth.COOKIE, "")))


def _forbidden(request: web.Request, message: str) -> web.HTTPForbidden:
    html = (
        request.app[TEMPLATES]
        .get_template("dashboard/error.html")
        .render(title="Not allowed", message=message)
    )
    return web.HTTPForbidden(text=html, content_type="text/html")


def _not_found(request: web.Request, message: str) -> web.HTTPNotFound:
    html = (
        request.app[TEMPLATES].get_template("dashboard/error.html").render(title="Not found", message=message)
    )
    return web.HTTPNotFound(text=html, content_type="text/html")


async def _checked_form(request: web.Request) -> tuple[Owner, MultiDictProxy[Any]]:
    """The owner and the posted form, after checking the form's CSRF token (403 when it is wrong)."""
    owner = await _owner(request)
    form = await request.post()
    if not csrf.is_valid(request.cookies.get(auth.COOKIE), str(form.get(csrf.FIELD, ""))):
        raise _forbidden(
            request, "This form has expired or did not come from the dashboard. Reload the page."
        )
    return owner, form


def _render(request: web.Request, owner: Owner, template: str, **context: Any) -> web.Response:
    html = (
        request.app[TEMPLATES]
        .get_template(f"dashboard/{template}")
        .render(
            account=owner.account,
            csrf_token=owner.csrf,
            path=request.path,
            notice=request.query.get("notice"),
            error=request.query.get("error"),
            fmt=FORMATS,
            **context,
        )
    )
    return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})


def _back(location: str, notice: str | None = None, error: str | None = None) -> web.HTTPSeeOther:
    params = {k: v for k, v in (("notice", notice), ("error", error)) if v}
    return web.HTTPSeeOther(location + ("?" + urlencode(params) if params else ""))


# ------------------------------------------------------------------------------------ formatting


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _money(amounts: Sequence[tuple[str, Decimal]]) -> str:
    if not amounts:
        return "—"
    return " + ".join(f"{amount:,.2f} {currency}" for currency, amount in amounts)


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "—"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def _http_url(value: Any) -> str | None:
    # Autoescaping does not stop a `javascript:` link: only http(s) addresses become links.
    text = str(value or "")
    return text if text.startswith(("http://", "https://")) else None


FORMATS = {"duration": _duration, "money": _money, "when": _when, "percent": _percent, "url": _http_url}


# ---------------------------------------------------------------------------------------- parsing


# Dates a filter may name: ranges are turned into [start 00:00, end + 1 day) and a month's worth
# is subtracted for the overview's default start, which must stay within what Python can hold.
FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(2999, 12, 31)
# Ids are SQL BIGINTs at most (SQLite and PostgreSQL refuse a larger parameter outright).
MAX_ID = 2**63 - 1


def _day(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        day = date.fromisoformat(value.strip())
    except ValueError as e:
        raise InvalidInput(f"The {name} date must look like 2024-05-31, not {value[:40]!r}.") from e
    if not FIRST_DAY <= day <= LAST_DAY:
        raise InvalidInput(f"The {name} date must lie between {FIRST_DAY} and {LAST_DAY}, not {day}.")
    return day


def _int(value: Any, name: str, at_least: int = -MAX_ID, at_most: int = MAX_ID) -> int | None:
    text = str(value or "").strip()
    if not text:
        return None
    # isdecimal first: int() would take "١٢" or "1_000", and spend seconds on a million digits.
    digits = text.removeprefix("-")
    if not digits.isascii() or not digits.isdecimal() or len(digits) > len(str(MAX_ID)):
        raise InvalidInput(f"{name} must be a whole number, not {text[:40]!r}.")
    number = int(text)
    if not at_least <= number <= at_most:
        raise InvalidInput(f"{name} must be between {at_least} and {at_most}, not {number}.")
    return number


def _range(query: Any) -> tuple[date, date]:
    today = datetime.now(UTC).date()
    end = _day(query.get("to"), "end") or today
    start = _day(query.get("from"), "start") or end - timedelta(days=OVERVIEW_DAYS - 1)
    if start > end:
        raise InvalidInput("The start date is after the end date.")
    if (end - start).days >= MAX_RANGE_DAYS:
        raise InvalidInput(f"Pick at most {MAX_RANGE_DAYS} days at once.")
    return start, end


def _log_filters(query: Any) -> queries.LogFilters:
    start, end = _day(query.get("from"), "start"), _day(query.get("to"), "end")
    channel = query.get("channel") or None
    state = query.get("state") or None
    end_reason = query.get("end_reason") or None
    orders = query.get("orders") or None
    if channel not in (None, *queries.CHANNELS):
        raise InvalidInput(f"Unknown channel {channel!r}.")
    if state not in (None, *CallState):
        raise InvalidInput(f"Unknown call state {state!r}.")
    if end_reason not in (None, *EndReason):
        raise InvalidInput(f"Unknown end reason {end_reason!r}.")
    if orders not in (None, "with", "without"):
        raise InvalidInput(f"Unknown orders filter {orders!r}.")
    return queries.LogFilters(
        start=queries.day_bounds(start, start)[0] if start else None,
        end=queries.day_bounds(end, end)[1] if end else None,
        site_id=_int(query.get("site"), "Site", at_least=1),
        operator_id=_int(query.get("operator"), "Operator", at_least=1),
        state=state,
        end_reason=end_reason,
        channel=channel,
        orders=orders,
    )


async def _site_names(session: AsyncSession, site_ids: Sequence[int]) -> dict[int, str]:
    rows = await session.execute(select(Site.id, Site.name).where(queries.in_sites(Site.id, site_ids)))
    return {r.id: r.name for r in rows}


# ------------------------------------------------------------------------------------------ pages


async def overview_page(request: web.Request) -> web.StreamResponse:
    owner = await _owner(request)
    start, end = _range(request.query)
    async with request.app[DATABASE].session() as session:
        figures = await queries.overview(session, owner.site_ids, start, end)
    return _render(
        request, owner, "overview.html", title="Overview", o=figures, chart=daily_chart(figures.days)
    )


async def log_page(request: web.Request) -> web.StreamResponse:
    owner = await _owner(request)
    filters = _log_filters(request.query)
    after = request.query.get("after")
    cursor = queries.Cursor.decode(after) if after else None
    async with request.app[DATABASE].session() as session:
        page = await queries.conversation_log(session, owner.site_ids, filters, cursor)
        operators = await queries.operators_of(session, owner.site_ids)
        site_names = await _site_names(session, owner.site_ids)
    kept = {k: v for k, v in request.query.items() if k != "after" and v}
    next_url = None
    if page.next_cursor is not None:
        next_url = "/dashboard/calls?" + urlencode({**kept, "after": page.next_cursor.encode()})
    return _render(
        request,
        owner,
        "log.html",
        title="Calls and chats",
        page=page,
        q=request.query,
        operators=operators,
        site_names=site_names,
        states=list(CallState),
        end_reasons=list(EndReason),
        next_url=next_url,
        first_url="/dashboard/calls?" + urlencode(kept) if cursor else None,
        export_query=urlencode({k: v for k, v in kept.items() if k in ("from", "to")}),
    )


async def call_page(request: web.Request) -> web.StreamResponse:
    owner = await _owner(request)
    call_id = request.match_info["call_id"]
    async with request.app[DATABASE].session() as session:
        file = await queries.call_file(session, owner.site_ids, call_id)
    if file is None:
        raise _not_found(request, "There is no such call.")
    return _render(request, owner, "call.html", title=f"Call {call_id[:8]}", f=file, c=file.call)


async def recording(request: web.Request) -> web.StreamResponse:
    account = await auth.current_account(request)
    if account is None or account.role != "owner":
        raise web.HTTPForbidden(text="Only the shop's owners can listen to recordings.")
    async with request.app[DATABASE].session() as session:
        site_ids = await queries.visible_site_ids(session, account.site_ids)
        file = await queries.call_file(session, site_ids, request.match_info["call_id"])
    if file is None or not file.call.recording_path:
        raise web.HTTPNotFound(text="There is no recording of this call.")
    path = recordings.recording_file(file.call.recording_path, request.app[SETTINGS].var_dir)
    if not path.is_file():
        raise web.HTTPNotFound(text="The recording file is gone (retention or erasure).")
    headers = {"Content-Type": recordings.content_type(path), "Cache-Control": "private, no-store"}
    if request.query.get("download"):
        headers["Content-Disposition"] = f'attachment; filename="call-{file.call.id}{path.suffix}"'
    # FileResponse answers Range requests, which browsers need to seek and to read the duration.
    return web.FileResponse(path, headers=headers)


async def attribution_submit(request: web.Request) -> web.StreamResponse:
    owner, form = await _checked_form(request)
    call_id = request.match_info["call_id"]
    location = f"/dashboard/calls/{call_id}"
    order_id = str(form.get("order_id", "")).strip()
    async with request.app[DATABASE].session() as session:
        file = await queries.call_file(session, owner.site_ids, call_id)
        if file is None:
            raise _not_found(request, "There is no such call.")
        order = await session.scalar(
            select(Order).where(Order.site_id == file.call.site_id, Order.order_id == order_id)
        )
        if order is None:
            raise _back(location, error=f"No order {order_id!r} on this site.")
        if form.get("action") == "unlink":
            if order.channel != "call" or order.conversation_id != call_id:
                raise _back(location, error=f"Order {order_id} is not attributed to this call.")
            await set_attribution(session, order, None, None, owner.account.id)
            notice = f"Order {order_id} is no longer attributed to this call."
        else:
            await set_attribution(session, order, "call", call_id, owner.account.id)
            notice = f"Order {order_id} is now attributed to this call."
    raise _back(location, notice=notice)


async def activity_page(request: web.Request) -> web.StreamResponse:
    owner = await _owner(request)
    start, end = _range(request.query)
    async with request.app[DATABASE].session() as session:
        people = await queries.operator_activity(session, owner.site_ids, start, end)
        site_names = await _site_names(session, owner.site_ids)
        manageable = {u.id for u in await queries.operators_of(session, owner.site_ids) if _manages(owner, u)}
    return _render(
        request,
        owner,
        "operators.html",
        title="Operators",
        people=people,
        start=start,
        end=end,
        site_names=site_names,
        manageable=manageable,
    )


def _manages(owner: Owner, user: User) -> bool:
    # An owner of some sites manages the operators of those sites only, not shared ones.
    if owner.sees_every_site:
        return True
    linked = {s.id for s in user.sites}
    return bool(linked) and linked <= set(owner.site_ids)


async def _managed_operator(session: AsyncSession, owner: Owner, request: web.Request) -> User:
    user_id = _int(request.match_info["user_id"], "User")
    user = await session.get(User, user_id)
    if user is None or user.role != "operator" or not _manages(owner, user):
        raise _not_found(request, "There is no such operator.")
    return user


async def operator_add(request: web.Request) -> web.StreamResponse:
    owner, form = await _checked_form(request)
    chosen = {int(v) for v in form.getall("site", []) if str(v).isdigit()} & set(owner.site_ids)
    if not owner.sees_every_site and not chosen:
        chosen = set(owner.site_ids)
    try:
        async with request.app[DATABASE].session() as session:
            linked = list(await session.scalars(select(Site).where(Site.id.in_(chosen)))) if chosen else []
            created = await accounts.create_user(
                session,
                str(form.get("email", "")),
                str(form.get("password", "")),
                "operator",
                sites=linked,
                name=str(form.get("name", "")).strip(),
            )
    except CallserverError as e:
        raise _back("/dashboard/operators", error=e.message) from e
    raise _back("/dashboard/operators", notice=f"Operator {created.email} can now sign in to the softphone.")


async def operator_disable(request: web.Request) -> web.StreamResponse:
    owner, form = await _checked_form(request)
    disable = form.get("disabled") == "1"
    async with request.app[DATABASE].session() as session:
        user = await _managed_operator(session, owner, request)
        await accounts.set_disabled(session, user.id, disable)
        email, user_id = user.email, user.id
    if disable:  # after the commit: an open softphone is cut off and cannot sign in again
        await auth.end_sessions_of(request.app, user_id)
    raise _back("/dashboard/operators", notice=f"{email} is {'disabled' if disable else 'enabled again'}.")


async def operator_password(request: web.Request) -> web.StreamResponse:
    owner, form = await _checked_form(request)
    try:
        async with request.app[DATABASE].session() as session:
            user = await _managed_operator(session, owner, request)
            await accounts.set_password(session, user.id, str(form.get("password", "")))
            email, user_id = user.email, user.id
    except (InvalidInput, NotFound) as e:
        raise _back("/dashboard/operators", error=e.message) from e
    await auth.end_sessions_of(request.app, user_id)  # signed out everywhere, open softphones too
    raise _back("/dashboard/operators", notice=f"New password set for {email}; they were signed out.")


async def messages_page(request: web.Request) -> web.StreamResponse:
    owner = await _owner(request)
    status = request.query.get("status") or None
    if status not in (None, "new", "handled"):
        raise InvalidInput(f"Unknown status {status[:40]!r}.")
    async with request.app[DATABASE].session() as session:
        rows = await queries.left_messages(session, owner.site_ids, status)
        site_names = await _site_names(session, owner.site_ids)
    return _render(
        request,
        owner,
        "messages.html",
        title="Left messages",
        messages=rows,
        status=status,
        site_names=site_names,
    )


async def message_status(request: web.Request) -> web.StreamResponse:
    owner, form = await _checked_form(request)
    status = str(form.get("status", ""))
    if status not in ("new", "handled"):
        raise _back("/dashboard/messages", error="A message is either new or handled.")
    async with request.app[DATABASE].session() as session:
        message = await session.get(LeftMessage, request.match_info["message_id"])
        if message is None or message.site_id not in owner.site_ids:
            raise _not_found(request, "There is no such message.")
        message.status = status
    raise _back("/dashboard/messages", notice=f"Marked as {status}.")


def _csv_range(request: web.Request) -> tuple[datetime | None, datetime | None]:
    start, end = _day(request.query.get("from"), "start"), _day(request.query.get("to"), "end")
    return (
        queries.day_bounds(start, start)[0] if start else None,
        queries.day_bounds(end, end)[1] if end else None,
    )


# Spreadsheets run a cell that starts with one of these as a formula, TAB and CR (and LF) included
# because some of them skip those before looking (OWASP, "CSV Injection"); so is a formula behind
# leading blanks, which some spreadsheets trim away.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


def spreadsheet_safe(cell: str) -> str:
    """The cell with a leading `'` when a spreadsheet would take it for a formula (CSV injection)."""
    risky = cell.startswith(FORMULA_STARTS) or cell.lstrip().startswith(FORMULA_STARTS[:4])
    return "'" + cell if risky else cell


def _csv_export(
    name: str,
    rows: Callable[[AsyncSession, Sequence[int], datetime | None, datetime | None], AsyncIterator[list[str]]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def export(request: web.Request) -> web.StreamResponse:
        owner = await _owner(request)
        start, end = _csv_range(request)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/csv; charset=utf-8",
                "Content-Disposition": f'attachment; filename="{name}-{datetime.now(UTC):%Y%m%d}.csv"',
                "Cache-Control": "no-store",
            }
        )
        await response.prepare(request)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        async with request.app[DATABASE].session() as session:
            count = 0
            async for row in rows(session, owner.site_ids, start, end):
                writer.writerow([spreadsheet_safe(v) for v in row])
                count += 1
                if count % 500 == 0:
                    await response.write(buffer.getvalue().encode())
                    buffer.seek(0)
                    buffer.truncate()
        await response.write(buffer.getvalue().encode())
        await response.write_eof()
        return response

    return export


async def sites_page(request: web.Request) -> web.StreamResponse:
    owner = await _owner(request)
    async with request.app[DATABASE].session() as session:
        rows = list(await session.scalars(select(Site).where(queries.in_sites(Site.id, owner.site_ids))))
    base_url = request.app[SETTINGS].base_url
    return _render(
        request,
        owner,
        "sites.html",
        title="Sites",
        sites=sorted(rows, key=lambda s: s.name.lower()),
        visitor_settings={s.id: site_form.form_values(s) for s in rows},
        strategies=list(RingStrategy),
        base_url=base_url,
    )


def _site_settings(site: Site, form: MultiDictProxy[Any]) -> None:
    origins = [line for line in str(form.get("origins", "")).split() if line]
    site.allowed_origins = sorted({sites.normalize_origin(o) for o in origins})
    strategy = str(form.get("ring_strategy", ""))
    if strategy not in {s.value for s in RingStrategy}:
        raise InvalidInput(f"Unknown ring strategy {strategy!r}.")
    site.ring_strategy = strategy
    timeout = str(form.get("ring_timeout", "")).strip()
    try:
        site.ring_timeout = float(timeout) if timeout else None
    except ValueError as e:
        raise InvalidInput("The ring timeout is a number of seconds.") from e
    if site.ring_timeout is not None and not 5 <= site.ring_timeout <= 300:
        raise InvalidInput("The ring timeout must be between 5 and 300 seconds.")
    site.records_calls = form.get("records_calls") == "on"
    try:
        site.retention_days = _int(form.get("retention_days"), "Retention days", at_least=1, at_most=36_500)
    except InvalidInput as e:
        raise InvalidInput("Keep recordings 1 to 36,500 days, or leave the field empty to keep them.") from e
    attribution = _int(form.get("attribution_days"), "Attribution days")
    if attribution is None or not 0 <= attribution <= 365:
        raise InvalidInput("The attribution window is 0 to 365 days.")
    site.attribution_days = attribution
    notify = str(form.get("notify_email", "")).strip()
    if notify and "@" not in notify:
        raise InvalidInput(f"Not an e-mail address: {notify!r}.")
    site.notify_email = notify or None
    secret = str(form.get("webhook_secret", "")).strip()
    if form.get("clear_webhook_secret") == "on":
        site.webhook_secret = None
    elif secret:
        site.webhook_secret = secret
    site_form.apply(site, form)


async def site_submit(request: web.Request) -> web.StreamResponse:
    owner, form = await _checked_form(request)
    site_id = _int(request.match_info["site_id"], "Site")
    try:
        async with request.app[DATABASE].session() as session:
            site = await session.get(Site, site_id)
            if site is None or site.id not in owner.site_ids:
                raise _not_found(request, "There is no such site.")
            _site_settings(site, form)
            name = site.name
    except InvalidInput as e:
        raise _back("/dashboard/sites", error=e.message) from e
    request.app[SHOP_FLOOR].profiles.forget()  # the widget and the board use the new settings now
    raise _back("/dashboard/sites", notice=f"Saved the settings of {name}.")


async def site_add(request: web.Request) -> web.StreamResponse:
    owner, form = await _checked_form(request)
    try:
        async with request.app[DATABASE].session() as session:
            created = await sites.create_site(
                session, str(form.get("name", "")), [o for o in str(form.get("origins", "")).split() if o]
            )
            if not owner.sees_every_site:
                session.add(UserSite(user_id=owner.account.id, site_id=created.id))
    except CallserverError as e:
        raise _back("/dashboard/sites", error=e.message) from e
    raise _back(
        "/dashboard/sites",
        notice=f"Added {created.name}. Its secret (for the orders API) is {created.secret} — keep it safe.",
    )


async def erase_page(request: web.Request) -> web.StreamResponse:
    owner = await _owner(request)
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
    return _render(request, owner, "erase.html", title="Erase a person's data", entries=entries)


async def erase_submit(request: web.Request) -> web.StreamResponse:
    owner, form = await _checked_form(request)
    try:
        result = await recordings.erase_visitor(
            request.app[DATABASE],
            owner.site_ids,
            request.app[SETTINGS].var_dir,
            owner.account.id,
            email=str(form.get("email", "")),
            phone=str(form.get("phone", "")),
        )
    except InvalidInput as e:
        raise _back("/dashboard/erase", error=e.message) from e
    raise _back(
        "/dashboard/erase",
        notice=(
            f"Erased {result.recordings} recording(s), {result.chat_messages} chat message(s), "
            f"{result.left_messages} left message(s) and the contact data of {result.visitors} visitor(s) "
            f"and {result.orders} order(s)."
        ),
    )


async def _to_dashboard(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/dashboard/")


async def _retention(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(recordings.keep_expiring(app[DATABASE], app[SETTINGS].var_dir))
    app[RETENTION] = task
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def setup(app: web.Application) -> None:
    """Add the dashboard's routes and its recording-retention task (after the database opens)."""
    auth.add_routes(app, "dashboard")
    # A filter or form the dashboard refuses (InvalidInput, NotFound, ...) is its error page, not a 500.
    app.middlewares.append(html_errors("/dashboard"))
    app.cleanup_ctx.append(_retention)
    add = app.router
    add.add_get("/dashboard", _to_dashboard)
    add.add_get("/dashboard/", overview_page)
    add.add_get("/dashboard/calls", log_page)
    add.add_get("/dashboard/calls/{call_id}", call_page)
    add.add_get("/dashboard/calls/{call_id}/recording", recording)
    add.add_post("/dashboard/calls/{call_id}/attribution", attribution_submit)
    add.add_get("/dashboard/operators", activity_page)
    add.add_post("/dashboard/operators", operator_add)
    add.add_post("/dashboard/operators/{user_id}/disabled", operator_disable)
    add.add_post("/dashboard/operators/{user_id}/password", operator_password)
    add.add_get("/dashboard/messages", messages_page)
    add.add_post("/dashboard/messages/{message_id}/status", message_status)
    add.add_get("/dashboard/export/calls.csv", _csv_export("calls", queries.export_calls))
    add.add_get("/dashboard/export/orders.csv", _csv_export("orders", queries.export_orders))
    add.add_get("/dashboard/sites", sites_page)
    add.add_post("/dashboard/sites", site_add)
    add.add_post("/dashboard/sites/{site_id}", site_submit)
    add.add_get("/dashboard/erase", erase_page)
    add.add_post("/dashboard/erase", erase_submit)
