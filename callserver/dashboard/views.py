"""The owner dashboard under `/dashboard/`: its routes, the overview, and the recording-retention task.

Each page lives with its subject (`calls.py`, `operators.py`, `messages.py`, `sites.py`, `exports.py`,
`erase.py`) and parses the request, asks the queries or the domain, and renders; what they share is in
`page.py` and `filters.py`. Every refusal is answered by `web/errors.py`'s one mapping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from callserver.background import stop_task
from callserver.dashboard import callbacks as callback_requests
from callserver.dashboard import calls, chats, erase, exports, messages, operators, queries, recordings, sites
from callserver.dashboard import webhooks as outbound_webhooks
from callserver.dashboard.charts import daily_chart
from callserver.dashboard.filters import date_range
from callserver.dashboard.google_ads import conversion_rows
from callserver.dashboard.page import render, signed_in_owner
from callserver.dashboard.sources import sources_csv, sources_page
from callserver.web import auth
from callserver.web.errors import html_errors
from callserver.web.keys import DATABASE, SETTINGS

RETENTION = web.AppKey("dashboard_retention", asyncio.Task[None])


async def overview_page(request: web.Request) -> web.StreamResponse:
    owner = await signed_in_owner(request)
    start, end = date_range(request.query)
    async with request.app[DATABASE].session() as session:
        figures = await queries.overview(session, owner.site_ids, start, end)
    return render(
        request, owner, "overview.html", title="Overview", o=figures, chart=daily_chart(figures.days)
    )


async def _to_dashboard(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/dashboard/")


async def _retention(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(recordings.keep_expiring(app[DATABASE], app[SETTINGS].var_dir))
    app[RETENTION] = task
    yield
    await stop_task(task)


def setup(app: web.Application) -> None:
    """Add the dashboard's routes and its recording-retention task (after the database opens)."""
    auth.add_routes(app, "dashboard")
    # A filter or form the dashboard refuses (InvalidInput, NotFound, ...) is its error page, not a 500.
    app.middlewares.append(html_errors("/dashboard"))
    app.cleanup_ctx.append(_retention)
    add = app.router
    add.add_get("/dashboard", _to_dashboard)
    add.add_get("/dashboard/", overview_page)
    add.add_get("/dashboard/calls", calls.log_page)
    add.add_get("/dashboard/calls/{call_id}", calls.call_page)
    add.add_get("/dashboard/calls/{call_id}/recording", calls.recording)
    add.add_post("/dashboard/calls/{call_id}/attribution", calls.attribution_submit)
    add.add_get("/dashboard/chats/{chat_id}", chats.chat_page)
    add.add_get("/dashboard/operators", operators.activity_page)
    add.add_post("/dashboard/operators", operators.operator_add)
    add.add_post("/dashboard/operators/{user_id}/disabled", operators.operator_disable)
    add.add_post("/dashboard/operators/{user_id}/password", operators.operator_password)
    add.add_get("/dashboard/messages", messages.messages_page)
    add.add_get("/dashboard/callbacks", callback_requests.callbacks_page)
    add.add_post("/dashboard/callbacks/{callback_id}/outcome", callback_requests.callback_outcome)
    add.add_post("/dashboard/messages/{message_id}/status", messages.message_status)
    add.add_get("/dashboard/export/calls.csv", exports.tagged_csv_export("calls", queries.export_calls))
    add.add_get("/dashboard/export/orders.csv", exports.tagged_csv_export("orders", queries.export_orders))
    add.add_get("/dashboard/sources", sources_page)
    add.add_get("/dashboard/export/sources.csv", sources_csv)
    add.add_get("/dashboard/export/google-ads.csv", exports.csv_export("google-ads", conversion_rows))
    add.add_get("/dashboard/sites", sites.sites_page)
    add.add_post("/dashboard/sites", sites.site_add)
    add.add_post("/dashboard/sites/{site_id}", sites.site_submit)
    add.add_get("/dashboard/erase", erase.erase_page)
    add.add_post("/dashboard/erase", erase.erase_submit)
    outbound_webhooks.add_routes(app)
