"""Visitors over HTTP: page-view beacons in (`POST /widget/beacon`), invitations out (`GET /widget/events`).

Why beacons and an event stream rather than the widget's WebSocket: every page of a shop reports
itself, and most visitors never talk to anyone, so a page view must cost one small request and no
open connection. The beacon is JSON sent as `text/plain` (a "simple" request: no CORS preflight),
with `fetch(keepalive)` or `navigator.sendBeacon`. Invitations need to reach a page within a second
or two of the operator's click; polling with the 20 s heartbeat would be far too slow, so the widget
opens a server-sent-events stream — a plain GET the browser keeps open, one-way, no upgrade, no
framing to parse — but only while someone could answer: a beacon's 204 carries `CB-Listen: 1` when
operators of the site are online and the shop is open, and the widget closes the stream when its tab
is hidden, the stream fails, or it is told to stop listening.

Anyone can post beacons, so the endpoint takes abuse without harm: a body is bounded in size, and
`decode_beacon` bounds its nesting and numbers before parsing (400 with a code, never a 500); a
client address bringing new visitors too fast gets 429 (see `callserver/visitors/floor.py`), while
visitors already on the board go on as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from aiohttp import web

from callserver.errors import OriginNotAllowed, UnknownSite
from callserver.sites import Site, is_visitor_token
from callserver.visitors.floor import TooManyNewVisitors
from callserver.visitors.journey import PageSeen
from callserver.web.clients import client_address
from callserver.web.errors import json_error
from callserver.web.keys import ROSTER, SHOP_FLOOR, SITES
from callserver.wire.inbound import MAX_BEACON_BYTES, BadMessage, decode_beacon

STREAM_PING = 20.0  # seconds between keep-alive comments on an idle event stream
EXPOSED = {"Access-Control-Expose-Headers": "CB-Listen"}


def cors(request: web.Request) -> dict[str, str]:
    origin = request.headers.get("Origin", "")
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"} if origin else {}


async def site_for(request: web.Request) -> Site:
    """The request's site, after checking the page's Origin (raises UnknownSite or OriginNotAllowed)."""
    site = await request.app[SITES].by_key(request.query.get("site", ""))
    site.check_origin(request.headers.get("Origin"))
    return site


def refusal(request: web.Request, error: UnknownSite | OriginNotAllowed, **extra: object) -> web.Response:
    """The JSON error for a page the site doesn't know or allow: 404 or 403."""
    body = {"error": {"code": error.code, "message": error.message}, **extra}
    return web.json_response(
        body, status=404 if isinstance(error, UnknownSite) else 403, headers=cors(request)
    )


async def beacon(request: web.Request) -> web.Response:
    """Take one page-view beacon; 204, with `CB-Listen: 1` when the widget should listen for invitations."""
    try:
        site = await site_for(request)
    except (UnknownSite, OriginNotAllowed) as e:
        return refusal(request, e)
    headers = {**cors(request), **EXPOSED}
    if (request.content_length or 0) > MAX_BEACON_BYTES:
        return json_error(413, "too_large", f"A beacon is at most {MAX_BEACON_BYTES} bytes.", headers)
    body = await request.content.read(MAX_BEACON_BYTES + 1)
    try:
        message = decode_beacon(body)
    except BadMessage as e:
        return json_error(413 if e.code == "too_large" else 400, e.code, e.message, headers)
    if message.kind == "view" and not message.page:
        return json_error(400, "bad_message", "A `view` beacon needs the `page`.", headers)
    floor = request.app[SHOP_FLOOR]
    await floor.recall(site, message.visitor)  # the visit as another node may have left it
    if message.kind in ("view", "dismiss"):  # the kinds that can bring a visitor we don't know yet
        try:
            floor.admit(site, message.visitor, client_address(request))
        except TooManyNewVisitors as e:
            return json_error(429, e.code, e.message, {**headers, "Retry-After": "10"})
    known = True
    if message.kind == "view":
        seen = PageSeen(
            view_id=message.view,
            page=message.page or "",  # never empty: checked above
            title=message.title,
            referrer=message.referrer,
            utm=message.utm.model_dump(exclude_none=True) if message.utm else {},
            search=message.search,
            product_name=message.product_name,
            product_price=message.product_price,
            sku=message.sku,
            currency=message.currency,
            cart_value=message.cart_value,
            returning=message.returning,
        )
        floor.page_view(site, message.visitor, seen, message.dismissed)
    elif message.kind == "ping":
        known = floor.heartbeat(site, message.visitor, message.view, message.seconds, message.cart_value)
    elif message.kind == "leave":
        floor.left(site, message.visitor, message.view, message.seconds)
    else:
        await floor.invitations.dismissed(site.id, message.visitor)
    await floor.settle()  # saved before the answer: the next beacon may reach another node
    visitor = floor.board.visitor(site.id, message.visitor)
    if (
        not message.dismissed
        and visitor is not None
        and not visitor.dismissed
        and site.is_open()
        and request.app[ROSTER].operators_online(site.id) > 0
    ):
        headers["CB-Listen"] = "1"
    if not known:
        headers["CB-Listen"] = "again"  # this server forgot the visit (a restart): report the page again
    return web.Response(status=204, headers=headers)


class EventStream:
    """One widget's open event stream, as the invitations see it."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, object] | None] = asyncio.Queue(maxsize=16)

    async def invite(self, invitation: dict[str, object]) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(invitation)

    def end(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)


async def events(request: web.Request) -> web.StreamResponse:
    """The widget's invitation stream (server-sent events): `event: invite`, keep-alive comments."""
    try:
        site = await site_for(request)
    except (UnknownSite, OriginNotAllowed) as e:
        return refusal(request, e)
    token = request.query.get("visitor", "")
    origin = request.headers["Origin"]
    if not is_visitor_token(token):
        return json_error(400, "bad_message", "`visitor` must be the widget's visitor token.")
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "Access-Control-Allow-Origin": origin,
            "Vary": "Origin",
            "X-Accel-Buffering": "no",  # nginx in front must not hold events back
        }
    )
    await response.prepare(request)
    floor = request.app[SHOP_FLOOR]
    stream = EventStream()
    stop = floor.invitations.listen(site.id, token, stream)
    floor.streams.add(stream)
    try:
        await response.write(b"retry: 10000\n: listening\n\n")
        while True:
            try:
                invitation = await asyncio.wait_for(stream.queue.get(), STREAM_PING)
            except TimeoutError:
                await response.write(b": ping\n\n")
                continue
            if invitation is None:
                await response.write(b"event: bye\ndata: {}\n\n")
                break
            # An operator ringing the page (callserver/callbacks.py) names its events: visitor_call.ring/over.
            kind = str(invitation.pop("event", "invite"))
            await response.write(f"event: {kind}\ndata: {json.dumps(invitation)}\n\n".encode())
    except (ConnectionResetError, ConnectionError):
        pass
    finally:
        floor.streams.discard(stream)
        stop()
    return response


async def end_streams(app: web.Application) -> None:
    """Before the server stops: end every event stream, so shutdown doesn't wait on them."""
    for stream in list(app[SHOP_FLOOR].streams):
        stream.end()


def add_routes(app: web.Application) -> None:
    app.router.add_post("/widget/beacon", beacon)
    app.router.add_get("/widget/events", events)
