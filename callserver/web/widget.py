"""What a shop's page loads: `/widget.js` and the widget's configuration (texts, hours, who is online)."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from callserver import i18n
from callserver.assets import asset_dir
from callserver.errors import OriginNotAllowed, UnknownSite
from callserver.web.keys import SETTINGS, SWITCHBOARD
from callserver.web.visitors import refusal, site_for


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
    """The site's public settings for the widget, readable only from the site's allowed origins.

    `lang` is the page's language (`<html lang>` or the browser's); the site may force its own. The
    texts come back in the chosen language with the owner's changes, so the widget carries none.
    """
    requested = request.query.get("lang")
    try:
        profile = await site_for(request)
    except (UnknownSite, OriginNotAllowed) as e:
        # Even a refusal is told in the shopper's language.
        return refusal(request, e, texts=i18n.widget_texts(i18n.choose(requested)))
    language = i18n.choose(requested, profile.language)
    now = datetime.now(UTC)
    texts = i18n.widget_texts(language, profile.texts)
    is_open = profile.hours is None or profile.hours.is_open(now)
    config: dict[str, object] = {
        "site": {"name": profile.name, "records_calls": profile.records_calls},
        "ice_servers": [s.model_dump(exclude_none=True) for s in request.app[SETTINGS].ice_servers],
        "operators_online": request.app[SWITCHBOARD].operators_online(profile.id),
        "chat": True,
        "lang": language,
        "texts": texts,
        "open": is_open,
    }
    if not is_open and profile.hours is not None:
        opens = profile.hours.next_opening(now)
        config["opens_at"] = opens.isoformat() if opens else None
        config["closed_text"] = i18n.opening_text(language, opens, now, profile.texts)
    headers = {
        "Access-Control-Allow-Origin": request.headers["Origin"],
        "Vary": "Origin",
        "Cache-Control": "no-store",
    }
    return web.json_response(config, headers=headers)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/widget.js", widget_js)
    app.router.add_get("/widget/config", widget_config)
