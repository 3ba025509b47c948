"""What a shop's page loads: `/widget.js` and the widget's configuration."""

from __future__ import annotations

from aiohttp import web

from callserver import sites
from callserver.assets import asset_dir
from callserver.errors import OriginNotAllowed, UnknownSite
from callserver.web.errors import json_error
from callserver.web.keys import DATABASE, SETTINGS, SWITCHBOARD


async def widget_js(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(
        asset_dir("web_button") / "widget.js",
        headers={
            "Content-Type": "application/javascript; charset=utf-8",
            # Shops embed one URL for years: let browsers revalidate often, but cache between pages.
            "Cache-Control": "public, max-age=300",
            "Access-Control-Allow-Origin": "*",
        },
    )


async def widget_config(request: web.Request) -> web.Response:
    """The site's public settings for the widget, readable only from the site's allowed origins."""
    origin = request.headers.get("Origin", "")
    cors = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"} if origin else {}
    try:
        async with request.app[DATABASE].session() as session:
            site = await sites.site_by_key(session, request.query.get("site", ""))
        sites.check_origin(site, origin)
    except UnknownSite as e:
        return json_error(404, e.code, e.message, cors)
    except OriginNotAllowed as e:
        return json_error(403, e.code, e.message, cors)
    settings = request.app[SETTINGS]
    return web.json_response(
        {
            "site": {"name": site.name, "records_calls": site.records_calls},
            "ice_servers": [s.model_dump(exclude_none=True) for s in settings.ice_servers],
            "operators_online": request.app[SWITCHBOARD].operators_online(site.id),
            "chat": True,
        },
        headers={**cors, "Cache-Control": "no-store"},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/widget.js", widget_js)
    app.router.add_get("/widget/config", widget_config)
