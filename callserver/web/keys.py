"""Typed application state (aiohttp `AppKey`s): one place to see what a running app holds."""

from weakref import WeakSet

from aiohttp import web
from jinja2 import Environment

from callserver.calls.records import CallRecords
from callserver.calls.switchboard import Switchboard
from callserver.media.engine import MediaEngine
from callserver.settings import Settings
from callserver.store.database import Database
from callserver.visitors.country import CountryLookup

SETTINGS = web.AppKey("settings", Settings)
DATABASE = web.AppKey("database", Database)
RECORDS = web.AppKey("records", CallRecords)
MEDIA = web.AppKey("media", MediaEngine)
SWITCHBOARD = web.AppKey("switchboard", Switchboard)
TEMPLATES = web.AppKey("templates", Environment)
COUNTRIES = web.AppKey("countries", CountryLookup)
# Open sockets, closed with a reason when the server shuts down.
SOCKETS = web.AppKey("sockets", WeakSet[web.WebSocketResponse])
