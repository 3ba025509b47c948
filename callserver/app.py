"""The app factory: one `create_app(settings)` for production, the demo and the tests.

Every long-lived resource opens and closes here, in one `cleanup_ctx` each, in this order (aiohttp
closes them in reverse): the database and call records, the sites, the outbound webhooks, the media
and the switchboard with the operators' roster, the chat desk, the shop floor, the conversations over
them.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import WSCloseCode, web

from callserver.callbacks import CallbackRecords, Callbacks, VisitorCalls
from callserver.calls.recordings import CallRecordings
from callserver.calls.records import CallRecords
from callserver.calls.switchboard import Switchboard
from callserver.chats.desk import ChatDesk
from callserver.chats.records import ChatRecords
from callserver.clock import Clock, LoopClock
from callserver.cluster.admission import Admission
from callserver.cluster.board import RedisBoardShare
from callserver.cluster.calls import ClusterCalls
from callserver.cluster.chats import ClusterChats
from callserver.cluster.drain import Drain
from callserver.cluster.limits import RedisAttempts
from callserver.cluster.metrics import CONTENT_TYPE, MeteredEngine, Metrics
from callserver.cluster.nodes import NodeLoad, NodeRegistry
from callserver.cluster.redis import RedisLink
from callserver.cluster.redis_roster import RedisRoster
from callserver.cluster.relay import Relay
from callserver.cluster.sessions import ClusterSessions
from callserver.cluster.visitor_calls import ClusterVisitorCalls
from callserver.conversations import Conversations
from callserver.csat import Satisfaction
from callserver.dashboard import views as dashboard
from callserver.dashboard.webhooks import WEBHOOKS
from callserver.limits import AddressLimits
from callserver.mail import SmtpOutbox
from callserver.media.candidates import PolicedEngine
from callserver.media.engine import MediaEngine
from callserver.media.forwarding_bridge import ForwardingEngine
from callserver.media.transcoding_bridge import TranscodingEngine
from callserver.media.worker_pool import WorkerPoolEngine
from callserver.operators.roster import LocalRoster, Roster
from callserver.outcomes import Outcomes
from callserver.settings import Settings
from callserver.signaling.operator_socket import operator_socket
from callserver.signaling.widget_socket import widget_socket
from callserver.sites import SiteDirectory
from callserver.store.database import Database
from callserver.visitors.country import CountryLookup
from callserver.visitors.floor import ShopFloor
from callserver.web import api, auth, hooks, security, softphone, visitors, widget
from callserver.web.keys import (
    ADDRESS_LIMITS,
    ADMISSION,
    CHAT_DESK,
    CONVERSATIONS,
    COUNTRIES,
    DATABASE,
    DRAIN,
    MEDIA,
    METERED_MEDIA,
    METRICS,
    NODE_REGISTRY,
    OPERATOR_SOCKETS,
    OUTCOMES,
    RECORDS,
    REDIS,
    ROSTER,
    SATISFACTION,
    SETTINGS,
    SHOP_FLOOR,
    SITES,
    SOCKETS,
    SWITCHBOARD,
    TEMPLATES,
)
from callserver.webhooks.sender import Webhooks

# The timers of ring timeouts and presence grace (a test may give the app its own clock).
CLOCK = web.AppKey("clock", Clock)
# A cluster member's chats on other nodes (cluster/chats.py): set by `_calls`, used by `_chat_desk`.
CLUSTER_CHATS = web.AppKey("cluster_chats", ClusterChats)
CLUSTER_RELAY = web.AppKey("cluster_relay", Relay)  # a cluster member's end of the signal relay

log = logging.getLogger(__name__)


async def _redis(app: web.Application) -> AsyncIterator[None]:
    """A cluster member's Redis (`redis_url`): one client, reconnected by itself; a node alone opens none."""
    url = app[SETTINGS].redis_url
    if not url:
        yield
        return
    link = RedisLink(url)
    app[REDIS] = link
    if not await link.reachable():
        log.warning("Redis at %s does not answer yet: this node registers once it does", link.url)
    # Sign-in attempts counted for all nodes together; ended sessions close their sockets on every node.
    app[auth.LOGIN_ATTEMPTS] = RedisAttempts(
        link, auth.LOGIN_RATE, auth.LOGIN_BURST, fallback=app[auth.LOGIN_ATTEMPTS]
    )
    sessions = ClusterSessions(link.client, app[SETTINGS].effective_node_name, app[auth.SIGNED_IN])
    await sessions.start()
    app[auth.SESSION_ENDS] = sessions
    yield
    await sessions.close()
    await link.close()


async def _database(app: web.Application) -> AsyncIterator[None]:
    database = Database(app[SETTINGS].effective_database_url)
    await database.upgrade()
    app[DATABASE] = database
    app[RECORDS] = CallRecords(database)
    app[SITES] = SiteDirectory(database)
    yield
    await database.close()


async def _webhooks(app: web.Application) -> AsyncIterator[None]:
    """Outbound webhooks: the sink the domain publishes to, and the sender of the stored queue."""
    webhooks = Webhooks(app[DATABASE], app[SETTINGS].webhook_retry_after)
    webhooks.start()
    app[WEBHOOKS] = webhooks
    app[hooks.ORDER_EVENTS] = webhooks  # `order.attributed`, from the order intake's views
    # Calls a previous run left open end `dropped`, heard as `call.ended` like any other end. In a
    # cluster the other nodes' calls are alive: each node ends only its own (cluster/calls.py).
    dropped = 0 if app[SETTINGS].redis_url else await app[RECORDS].end_leftovers(webhooks)
    if dropped:
        log.warning("ended %d call(s) left open by a previous run as dropped", dropped)
    yield
    await webhooks.close()


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
    # Counted per worker and timed (metrics, the node's load, admission) inside the policy.
    metered = MeteredEngine(media, app[METRICS])
    app[METERED_MEDIA] = metered
    drain = app[DRAIN]
    app[ADMISSION] = Admission(settings.max_calls_per_worker, metered.worker_calls, lambda: drain.draining)
    policed = PolicedEngine(metered, settings.denied_networks)
    clock = app.get(CLOCK)
    relay: Relay | None = None
    shared: RedisRoster | None = None
    if settings.redis_url:  # several nodes: presence in Redis, frames between nodes through the relay
        relay = Relay(app[REDIS].client, settings.effective_node_name)
        await relay.start()
        shared = RedisRoster(app[REDIS].client, relay, settings.presence_grace, clock)
        await shared.start()
    roster: Roster = shared or LocalRoster(settings.presence_grace, clock)
    switchboard = Switchboard(app[RECORDS], policed, roster, settings.ring_timeout, clock, app[WEBHOOKS])
    switchboard.resume_window = settings.resume_window
    cluster: ClusterCalls | None = None
    if relay is not None and shared is not None:
        cluster = ClusterCalls(
            app[REDIS].client, relay, switchboard, shared, app[RECORDS], app[DATABASE], app[WEBHOOKS]
        )
        await cluster.start()
        app[CLUSTER_CHATS] = ClusterChats(app[REDIS].client, relay, shared)
        app[CLUSTER_RELAY] = relay
    app[ROSTER] = roster
    app[SWITCHBOARD] = switchboard
    # A draining node stops once no call has media open and every ended call's sides were told.
    drain.calls_in_progress = lambda: metered.in_progress + switchboard.ending
    yield
    # Calls first (they write their records), then the media they used, then presence.
    await switchboard.close()
    if cluster is not None:
        await cluster.close()
    await media.close()
    await roster.close()
    if relay is not None:
        await relay.close()


async def _chat_desk(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    desk = ChatDesk(
        ChatRecords(app[DATABASE]),
        app[ROSTER],
        SmtpOutbox(settings),
        max_chats=settings.max_chats,
        mail_retry_after=settings.mail_retry_after,
        sink=app[WEBHOOKS],
        places=app.get(CLUSTER_CHATS),
    )
    desk.left_messages.start_mailing()
    app[CHAT_DESK] = desk
    elsewhere = app.get(CLUSTER_CHATS)
    if elsewhere is not None:  # several nodes: other nodes' operators act on this desk's chats
        await elsewhere.start(desk)
    yield
    if elsewhere is not None:
        await elsewhere.close()
    await desk.close()


async def _shop_floor(app: web.Application) -> AsyncIterator[None]:
    """The visitors on the shops' pages: beacons, the visitors board, invitations."""
    # Several nodes: the board's cards and the visitors' streams are shared through Redis.
    share = RedisBoardShare(app[REDIS].client, app[SETTINGS].effective_node_name) if REDIS in app else None
    floor = ShopFloor(app[DATABASE], app[SITES], app[ROSTER], share=share)
    await floor.start()
    app[SHOP_FLOOR] = floor
    yield
    await floor.close()


async def _conversations(app: web.Application) -> AsyncIterator[None]:
    """What the sockets call; of its own it holds call-back requests (their mail) and rings of visitors."""
    settings, floor = app[SETTINGS], app[SHOP_FLOOR]
    callbacks = Callbacks(
        CallbackRecords(app[DATABASE]),
        app[ROSTER],
        SmtpOutbox(settings),
        floor.invitations,
        app[WEBHOOKS],
        settings.mail_retry_after,
    )
    callbacks.start_mailing()
    visitor_calls = VisitorCalls(
        app[SITES], floor.board, floor.invitations, app[ROSTER], app.get(CLOCK) or LoopClock()
    )
    # Several nodes: a visitor's answer to a ring may come through another node than the ring's.
    rings = (
        ClusterVisitorCalls(app[REDIS].client, app[CLUSTER_RELAY], visitor_calls)
        if CLUSTER_RELAY in app
        else None
    )
    app[CONVERSATIONS] = Conversations(
        app[SWITCHBOARD],
        app[CHAT_DESK],
        floor.invitations,
        app[SITES],
        app[ADDRESS_LIMITS],
        admission=app[ADMISSION],
        callbacks=callbacks,
        visitor_calls=visitor_calls,
    )
    # After a conversation: the visitor's rating and the operator's note, tags and order (issue 15).
    app[SATISFACTION] = Satisfaction(app[DATABASE], app[WEBHOOKS])
    app[OUTCOMES] = Outcomes(app[DATABASE], app[WEBHOOKS])
    yield
    if rings is not None:
        rings.close()
    await visitor_calls.close()
    await callbacks.close()


def _load(app: web.Application) -> NodeLoad:
    """What this node carries now: calls, chats, sockets, its media workers."""
    metered = app[METERED_MEDIA]
    operators = sum(1 for ws in app[OPERATOR_SOCKETS] if not ws.closed)
    sockets = sum(1 for ws in app[SOCKETS] if not ws.closed)
    chats, _ = app[CHAT_DESK].counts()
    return NodeLoad(metered.in_progress, chats, operators, sockets - operators, metered.workers())


async def _node(app: web.Application) -> AsyncIterator[None]:
    """This node's load in /metrics and, in a cluster, in the node registry (renewed every 2 s)."""
    settings, drain = app[SETTINGS], app[DRAIN]

    def figures() -> dict[str, Any]:
        _, waiting = app[CHAT_DESK].counts()
        live: dict[str, Any] = {
            "load": _load(app),
            "calls_ringing": app[METERED_MEDIA].ringing,
            "chats_waiting": waiting,
            "calls_refused": app[ADMISSION].refused,
            "draining": drain.draining,
        }
        if REDIS in app:
            live["redis_up"] = app[REDIS].up
        return live

    app[METRICS].watch(figures)
    registry: NodeRegistry | None = None
    if REDIS in app:
        registry = NodeRegistry(
            app[REDIS],
            settings.effective_node_name,
            settings.base_url,
            lambda: _load(app),
            lambda: drain.draining,
            lambda: drain.start("callserver nodes drain"),
        )
        drain.on_start(registry.beat_soon)  # the cluster hears of a drain at once, not in 2 s
        await registry.start()
        app[NODE_REGISTRY] = registry
    yield
    if registry is not None:
        await registry.close()
    await drain.close()


async def _track_sockets(request: web.Request, response: web.StreamResponse) -> None:
    if isinstance(response, web.WebSocketResponse):
        request.app[SOCKETS].add(response)
        if request.path == "/ws/operator":
            request.app[OPERATOR_SOCKETS].add(response)


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
    """Readiness: this node takes new sockets (database and Redis answer, and it does not drain)."""
    app = request.app
    checks = {"database": await app[DATABASE].reachable()}
    if REDIS in app:
        checks["redis"] = await app[REDIS].reachable()
    draining = app[DRAIN].draining
    ready = all(checks.values()) and not draining
    status = "ready" if ready else "draining" if draining else "unavailable"
    return web.json_response(
        {"status": status, "draining": draining, "checks": checks}, status=200 if ready else 503
    )


def _from_loopback(request: web.Request) -> bool:
    """A client on this machine that did not come through a proxy (a proxy on this host is loopback too)."""
    if any(h in request.headers for h in ("X-Forwarded-For", "Forwarded", "X-Real-IP")):
        return False
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False


async def _metrics(request: web.Request) -> web.Response:
    """Prometheus metrics: for the bearer of `metrics_token`, or without one from loopback only."""
    token = request.app[SETTINGS].metrics_token
    if token:
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, f"Bearer {token}".encode()):
            return web.json_response(
                {"error": {"code": "unauthorized", "message": "Send the metrics token as a bearer token."}},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
    elif not _from_loopback(request):
        message = "Without metrics_token, /metrics answers on loopback only."
        return web.json_response({"error": {"code": "forbidden", "message": message}}, status=403)
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE})


def create_app(settings: Settings, clock: Clock | None = None) -> web.Application:
    """Build the callserver application; long-lived resources open and close with it.

    `clock` drives ring timeouts and presence grace (the event loop's by default; tests pass theirs).
    """
    app = web.Application(client_max_size=1024 * 1024)
    app[SETTINGS] = settings
    if clock is not None:
        app[CLOCK] = clock
    app[TEMPLATES] = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "web" / "templates"),
        autoescape=True,
    )
    app[SOCKETS] = weakref.WeakSet()
    app[OPERATOR_SOCKETS] = weakref.WeakSet()
    app[METRICS] = Metrics()  # this app's own registry, not prometheus-client's global one
    app[DRAIN] = Drain(settings.drain_timeout)
    app[COUNTRIES] = CountryLookup()
    # Per client address: widget sockets, new visitors, call attempts.
    app[ADDRESS_LIMITS] = AddressLimits(settings.widget_sockets_per_address)
    # In order: each needs the ones before it, and they close in reverse.
    app.cleanup_ctx.append(_redis)  # a cluster member's Redis (none for a node alone)
    app.cleanup_ctx.append(_database)  # the database, call records, the sites directory
    app.cleanup_ctx.append(_webhooks)  # what the ones below publish, sent from the stored queue
    app.cleanup_ctx.append(_calls)  # media, the roster, the switchboard
    app.cleanup_ctx.append(_chat_desk)  # chats share the roster's operators
    app.cleanup_ctx.append(_shop_floor)  # beacons, the visitors board, invitations
    app.cleanup_ctx.append(_conversations)
    app.cleanup_ctx.append(_node)  # this node's load: /metrics and the node registry
    app.on_response_prepare.append(_track_sockets)
    app.on_shutdown.append(_going_away)
    app.on_shutdown.append(visitors.end_streams)
    security.setup(app)  # CSP and framing headers on every HTML page, the pages' stylesheets
    app.router.add_get("/healthz", _health)
    app.router.add_get("/readyz", _ready)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/ws/widget", widget_socket)
    app.router.add_get("/ws/operator", operator_socket)
    visitors.add_routes(app)
    widget.add_routes(app)
    auth.add_routes(app, "operator")
    softphone.add_routes(app)
    dashboard.setup(app)
    api.add_routes(app)
    hooks.add_routes(app)
    return app
