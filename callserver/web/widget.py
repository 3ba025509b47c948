"""What a shop's page loads: `/widget.js` and the widget's configuration (texts, hours, who is online)."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import rjsmin
from aiohttp import web

from callserver import i18n
from callserver.assets import asset_dir
from callserver.errors import OriginNotAllowed, UnknownSite
from callserver.media.ice import ice_servers_for
from callserver.web.keys import ROSTER, SETTINGS, SWITCHBOARD
from callserver.web.visitors import refusal, site_for


@dataclass(frozen=True)
class ServedScript:
    """The widget as shops' pages load it: compacted once, kept gzipped, with an ETag."""

    plain: bytes
    gzipped: bytes
    etag: str

    @classmethod
    def load(cls, path: Path) -> ServedScript:
        plain = compact_js(path.read_text(encoding="utf-8")).encode()
        return cls(plain, gzip.compress(plain, 9), '"' + hashlib.sha256(plain).hexdigest()[:20] + '"')


WIDGET_JS = web.AppKey("widget_js", ServedScript)
# What comes after a conversation (survey, call-back form, incoming call), loaded by widget.js on demand.
WIDGET_AFTER_JS = web.AppKey("widget_after_js", ServedScript)


def compact_js(source: str) -> str:
    """The widget minified (comments and whitespace out, by rjsmin): every shop page loads less.

    The source in web_button/ stays commented and readable; rjsmin keeps the line breaks that automatic
    semicolon insertion needs and never touches string, template or regular-expression literals.
    """
    minified: str = rjsmin.jsmin(source)
    return minified + "\n"


async def widget_js(request: web.Request) -> web.StreamResponse:
    return served(request, request.app[WIDGET_JS])


async def widget_after_js(request: web.Request) -> web.StreamResponse:
    return served(request, request.app[WIDGET_AFTER_JS])


def served(request: web.Request, script: ServedScript) -> web.StreamResponse:
    """A script as shops' pages load it: gzipped when the browser takes it, revalidated by its ETag."""
    headers = {
        "Content-Type": "application/javascript; charset=utf-8",
        # Shops embed one URL for years: let browsers revalidate often, but cache between pages.
        "Cache-Control": "public, max-age=300",
        "Access-Control-Allow-Origin": "*",
        "ETag": script.etag,
        "Vary": "Accept-Encoding",
    }
    if request.headers.get("If-None-Match") == script.etag:
        return web.Response(status=304, headers=headers)
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        return web.Response(body=script.gzipped, headers={**headers, "Content-Encoding": "gzip"})
    return web.Response(body=script.plain, headers=headers)


async def widget_config(request: web.Request) -> web.Response:
    """The site's public settings for the widget, readable only from the site's allowed origins.

    `lang` is the page's language (`<html lang>` or the browser's); the site may force its own. The
    texts come back in the chosen language with the owner's changes, so the widget carries none.
    """
    requested = request.query.get("lang")
    try:
        site = await site_for(request)
    except (UnknownSite, OriginNotAllowed) as e:
        # Even a refusal is told in the shopper's language.
        return refusal(request, e, texts=i18n.widget_texts(i18n.choose(requested)))
    language = i18n.choose(requested, site.language)
    now = datetime.now(UTC)
    texts = i18n.widget_texts(language, site.texts)
    is_open = site.is_open(now)
    config: dict[str, object] = {
        "site": {"name": site.name, "records_calls": site.records_calls},
        "ice_servers": ice_servers_for(request.app[SETTINGS], "visitor"),
        "ice_transport_policy": request.app[SETTINGS].ice_transport_policy,
        "operators_online": request.app[ROSTER].operators_online(site.id),
        "chat": True,
        "callback": site.callbacks,  # the call-me-back form beside the offline form
        "lang": language,
        "texts": texts,
        "open": is_open,
        # Seconds a call whose side went away waits for it: the widget gives up on its own after that.
        "resume_window": request.app[SWITCHBOARD].resume_window,
    }
    if not is_open:
        opens = site.next_opening(now)
        config["opens_at"] = opens.isoformat() if opens else None
        config["closed_text"] = i18n.opening_text(language, opens, now, site.texts)
    headers = {
        "Access-Control-Allow-Origin": request.headers["Origin"],
        "Vary": "Origin",
        "Cache-Control": "no-store",
    }
    return web.json_response(config, headers=headers)


def add_routes(app: web.Application) -> None:
    app[WIDGET_JS] = ServedScript.load(asset_dir("web_button") / "widget.js")
    app[WIDGET_AFTER_JS] = ServedScript.load(asset_dir("web_button") / "widget-after.js")
    app.router.add_get("/widget.js", widget_js)
    app.router.add_get("/widget-after.js", widget_after_js)
    app.router.add_get("/widget/config", widget_config)
