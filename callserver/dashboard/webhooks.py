"""Outbound webhooks (`/dashboard/webhooks`): each site's URLs, their secrets, and the delivery log.

A new or rotated secret is shown once, on the page that answers the form (not in a redirect URL,
which would keep it in the browser's history). "Send test event" queues a `ping` event for one URL.
"""

from __future__ import annotations

from aiohttp import web

from callserver import events
from callserver.dashboard.page import (
    Owner,
    back,
    checked_form,
    checked_form_all,
    render,
    signed_in_owner,
    site_names,
)
from callserver.errors import InvalidInput, NotFound
from callserver.web.keys import DATABASE
from callserver.webhooks import subscriptions
from callserver.webhooks.deliveries import PING, delivery_log
from callserver.webhooks.sender import Webhooks

PAGE = "/dashboard/webhooks"
# The app's outbound webhooks (filled by app.py's cleanup_ctx; kept here, next to their one page).
WEBHOOKS = web.AppKey("webhooks", Webhooks)


async def _page(request: web.Request, owner: Owner, **shown: object) -> web.Response:
    async with request.app[DATABASE].session() as session:
        rows = await subscriptions.subscriptions_of(session, owner.site_ids)
        log = await delivery_log(session, owner.site_ids)
        names = await site_names(session, owner.site_ids)
    return render(
        request,
        owner,
        "webhooks.html",
        title="Webhooks",
        subscriptions=rows,
        deliveries=log,
        site_names=names,
        event_names=events.PUBLISHED,
        ping=PING,
        **shown,
    )


async def webhooks_page(request: web.Request) -> web.StreamResponse:
    return await _page(request, await signed_in_owner(request))


def _subscription_id(request: web.Request) -> int:
    raw = request.match_info["subscription_id"]
    if not raw.isdigit() or len(raw) > 12:
        raise NotFound("There is no such webhook.")
    return int(raw)


async def webhook_add(request: web.Request) -> web.StreamResponse:
    owner, form, names = await checked_form_all(request, "event")
    site = form.get("site_id", "")
    site_id = int(site) if site.isdigit() and len(site) < 12 else None
    if site_id is None or site_id not in owner.site_ids:
        raise InvalidInput("Choose one of your sites for the webhook.")
    async with request.app[DATABASE].session() as session:
        created = await subscriptions.add_subscription(
            session, site_id, form.get("url", ""), names, form.get("allow_private_network") == "on"
        )
    return await _page(request, owner, new_secret=created.secret, secret_for=created.id)


async def webhook_secret(request: web.Request) -> web.StreamResponse:
    owner, _ = await checked_form(request)
    subscription_id = _subscription_id(request)
    async with request.app[DATABASE].session() as session:
        secret = await subscriptions.rotate_secret(session, owner.site_ids, subscription_id)
    return await _page(request, owner, new_secret=secret, secret_for=subscription_id)


async def webhook_enabled(request: web.Request) -> web.StreamResponse:
    owner, form = await checked_form(request)
    enabled = form.get("enabled") == "1"
    async with request.app[DATABASE].session() as session:
        await subscriptions.set_enabled(session, owner.site_ids, _subscription_id(request), enabled)
    raise back(PAGE, notice="Webhook enabled." if enabled else "Webhook disabled: nothing is sent to it.")


async def webhook_delete(request: web.Request) -> web.StreamResponse:
    owner, _ = await checked_form(request)
    async with request.app[DATABASE].session() as session:
        await subscriptions.delete_subscription(session, owner.site_ids, _subscription_id(request))
    raise back(PAGE, notice="Webhook deleted, with its delivery log.")


async def webhook_test(request: web.Request) -> web.StreamResponse:
    owner, _ = await checked_form(request)
    delivery_id = await request.app[WEBHOOKS].send_test(owner.site_ids, _subscription_id(request))
    raise back(PAGE, notice=f"A {PING} event is on its way (delivery {delivery_id}).")


def add_routes(app: web.Application) -> None:
    add = app.router
    add.add_get(PAGE, webhooks_page)
    add.add_post(PAGE, webhook_add)
    add.add_post(PAGE + "/{subscription_id}/secret", webhook_secret)
    add.add_post(PAGE + "/{subscription_id}/enabled", webhook_enabled)
    add.add_post(PAGE + "/{subscription_id}/delete", webhook_delete)
    add.add_post(PAGE + "/{subscription_id}/test", webhook_test)
