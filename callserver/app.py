"""The app factory: one `create_app(settings)` for production, the demo and the tests."""

from __future__ import annotations

import logging
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

import jinja2
from aiohttp import WSCloseCode, web

from callserver.calls.recordings import CallRecordings
from callserver.calls.records import CallRecords
from callserver.calls.switchboard import Switchboard
from callserver.dashboard import views as dashboard
from callserver.media.candidates import PolicedEngine
from callserver.media.engine import MediaEngine
from callserver.media.forwarding_bridge import ForwardingEngine
from callserver.media.transcoding_bridge import TranscodingEngine
from callserver.media.worker_pool import WorkerPoolEngine
from callserver.settings import Settings
from callserver.signaling.chat_service import setup_chat
from callserver.signaling.operator_socket import operator_socket
from callserver.signaling.widget_socket import setup_address_limits, widget_socket
from callserver.store.database import Database
from callserver.visitors.country import CountryLookup
from callserver.web import api, auth, hooks, security, softphone, visitors, widget
from callserver.web.keys import COUNTRIES, DATABASE, MEDIA, RECORDS, SETTINGS, SOCKETS, SWITCHBOARD, TEMPLATES

log = logging.getLogger(__name__)


async def _database(app: web.Application) -> AsyncIterator[None]:
    database = Database(app[SETTINGS].effective_database_url)
    await database.upgrade()
    app[DATABASE] = database
    records = CallRecords(database)
    dropped = await records.end_leftovers()
    if dropped:
        log.warning("ended %d call(s) left open by a previous run as dropped", dropped)
    app[RECORDS] = records
    yield
    await database.close()


async def _calls(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    media: MediaEngine
    if settings.media_engine == "transcoding":
        media = TranscodingEngine(settings.ice_servers)
    else:
        recordings = CallRecordings(app[DATABASE], settings.recordings_dir, settings.var_dir)
        if settings.media_workers > 1:
            pool = WorkerPoolEngine(
                settings.media_workers, settings.ice_servers, recordings, settings.keep_leg_recordings
            )
            try:
                await pool.start()
            except BaseException:
                await pool.close()
                raise
            media = pool
        else:
            media = ForwardingEngine(settings.ice_servers, recordings, settings.keep_leg_recordings)
    app[MEDIA] = media
    # Offers reach the media only through the network policy for candidates (media/candidates.py).
    policed = PolicedEngine(media, settings.denied_networks)
    switchboard = Switchboard(app[RECORDS], policed, settings.presence_grace)
    app[SWITCHBOARD] = switchboard
    yield
    # Calls first (they write their records), then the media they used.
    await switchboard.close()
    await media.close()


async def _track_sockets(request: web.Request, response: web.StreamResponse) -> None:
    if isinstance(response, web.WebSocketResponse):
        request.app[SOCKETS].add(response)


async def _going_away(app: web.Application) -> None:
    """Before connections close: end the calls as `dropped`, then tell every socket why it closes."""
    await app[SWITCHBOARD].close()
    sockets = app[SOCKETS]
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server_shutdown")


async def _health(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


async def _ready(request: web.Request) -> web.Response:
    """Readiness: this node can take sockets and requests (its database answers)."""
    database = await request.app[DATABASE].reachable()
    return web.json_response(
        {"status": "ready" if database else "unavailable", "checks": {"database": database}},
        status=200 if database else 503,
    )


def create_app(settings: Settings) -> web.Application:
    """Build the callserver application; long-lived resources open and close with it."""
    app = web.Application(client_max_size=1024 * 1024)
    app[SETTINGS] = settings
    app[TEMPLATES] = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "web" / "templates"),
        autoescape=True,
    )
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_calls)
    setup_chat(app)  # after the calls: the chat desk shares the switchboard's operators
    visitors.setup(app)  # the shop floor: beacons, the visitors board, invitations
    app[SOCKETS] = weakref.WeakSet()
    app[COUNTRIES] = CountryLookup()
    setup_address_limits(app)  # per client address: widget sockets, new visitors, call attempts
    app.on_response_prepare.append(_track_sockets)
    app.on_shutdown.append(_going_away)
    security.setup(app)  # CSP and framing headers on every HTML page, the pages' stylesheets
    app.router.add_get("/healthz", _health)
    app.router.add_get("/readyz", _ready)
    app.router.add_get("/ws/widget", widget_socket)
    app.router.add_get("/ws/operator", operator_socket)
    widget.add_routes(app)
    auth.add_routes(app, "operator")
    softphone.add_routes(app)
    dashboard.setup(app)
    api.add_routes(app)
    hooks.add_routes(app)
    return app
