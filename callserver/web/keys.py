"""Typed application state (aiohttp `AppKey`s): one place to see what a running app holds.

They live here rather than in `app.py` because the adapters (views, sockets) read them and `app.py`
imports the adapters: keys in `app.py` would make every adapter import the module that imports it.
`app.py` fills them, in order, in its `cleanup_ctx`s. (The sign-in limits and the dashboard's
retention task keep their keys next to the code that owns them: `web/auth.py`, `dashboard/`.)
"""

from weakref import WeakSet

from aiohttp import web
from jinja2 import Environment

from callserver.calls.records import CallRecords
from callserver.calls.switchboard import Switchboard
from callserver.chats.desk import ChatDesk
from callserver.cluster.admission import Admission
from callserver.cluster.drain import Drain
from callserver.cluster.metrics import MeteredEngine, Metrics
from callserver.cluster.nodes import NodeRegistry
from callserver.cluster.redis import RedisLink
from callserver.conversations import Conversations
from callserver.csat import Satisfaction
from callserver.limits import AddressLimits
from callserver.media.engine import MediaEngine
from callserver.operators.roster import Roster
from callserver.outcomes import Outcomes
from callserver.settings import Settings
from callserver.sites import SiteDirectory
from callserver.store.database import Database
from callserver.visitors.country import CountryLookup
from callserver.visitors.floor import ShopFloor

SETTINGS = web.AppKey("settings", Settings)
DATABASE = web.AppKey("database", Database)
RECORDS = web.AppKey("records", CallRecords)
SITES = web.AppKey("sites", SiteDirectory)
MEDIA = web.AppKey("media", MediaEngine)
ROSTER = web.AppKey("roster", Roster)
SWITCHBOARD = web.AppKey("switchboard", Switchboard)
CHAT_DESK = web.AppKey("chat_desk", ChatDesk)
SHOP_FLOOR = web.AppKey("shop_floor", ShopFloor)
CONVERSATIONS = web.AppKey("conversations", Conversations)
TEMPLATES = web.AppKey("templates", Environment)
COUNTRIES = web.AppKey("countries", CountryLookup)
# Sockets, new visitor tokens and call attempts per client address (the widget socket's limits).
ADDRESS_LIMITS = web.AppKey("address_limits", AddressLimits)
# Open sockets, closed with a reason when the server shuts down.
SOCKETS = web.AppKey("sockets", WeakSet[web.WebSocketResponse])
# The operators' among them (the rest are visitors'): node load and metrics count both.
OPERATOR_SOCKETS = web.AppKey("operator_sockets", WeakSet[web.WebSocketResponse])
# Several nodes (cluster/): Redis and the registry only with `redis_url`; the others always.
REDIS = web.AppKey("redis", RedisLink)
NODE_REGISTRY = web.AppKey("node_registry", NodeRegistry)
DRAIN = web.AppKey("drain", Drain)
ADMISSION = web.AppKey("admission", Admission)
METRICS = web.AppKey("metrics", Metrics)
# The media engine as the switchboard sees it: counted per worker and timed.
METERED_MEDIA = web.AppKey("metered_media", MeteredEngine)
# After a conversation: shoppers' ratings, operators' notes/tags/orders (filled on startup by web/widget.py).
SATISFACTION = web.AppKey("satisfaction", Satisfaction)
OUTCOMES = web.AppKey("outcomes", Outcomes)
