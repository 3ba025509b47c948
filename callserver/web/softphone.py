"""The operator's softphone page (`/operator/`), its files and its configuration."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from callserver import i18n
from callserver.assets import asset_dir
from callserver.media.ice import ice_servers_for
from callserver.web import csrf
from callserver.web.auth import COOKIE, current_account
from callserver.web.keys import SETTINGS

# The page's scripts (ES modules, served as they are: no build step) and its stylesheet, each with its
# type spelled out: a browser runs a module script only when it comes as JavaScript, and the system's
# MIME table says `application/javascript`, or nothing, for `.js` on some machines.
_FILE_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


async def softphone_page(request: web.Request) -> web.StreamResponse:
    if await current_account(request) is None:
        raise web.HTTPFound("/operator/login")
    return web.FileResponse(
        asset_dir("operator_softphone") / "index.html",
        headers={"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"},
    )


async def softphone_config(request: web.Request) -> web.Response:
    account = await current_account(request)
    if account is None:
        raise web.HTTPUnauthorized(
            text='{"error": {"code": "login_required", "message": "Sign in first."}}',
            content_type="application/json",
        )
    settings = request.app[SETTINGS]
    language = i18n.choose(request.query.get("lang"))
    return web.json_response(
        {
            "ice_servers": ice_servers_for(settings, f"operator-{account.id}"),
            "ice_transport_policy": settings.ice_transport_policy,
            "operator": {"id": account.id, "email": account.email, "name": account.display_name},
            "lang": language,
            "texts": i18n.softphone_texts(language),
            # For the page's forms (sign-out): the token cannot be read by other sites.
            "csrf": csrf.token_for(request.cookies[COOKIE]),
        },
        headers={"Cache-Control": "no-store"},
    )


async def _to_softphone(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/operator/")


def _file(path: Path) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Serves one of the page's files (validators and ranges as any static file; no Cache-Control)."""

    async def serve(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path, headers={"Content-Type": _FILE_TYPES[path.suffix]})

    return serve


def add_routes(app: web.Application) -> None:
    app.router.add_get("/operator", _to_softphone)
    app.router.add_get("/operator/", softphone_page)
    app.router.add_get("/operator/config", softphone_config)
    for path in sorted(asset_dir("operator_softphone").iterdir()):
        if path.suffix in _FILE_TYPES:
            app.router.add_get(f"/operator/static/{path.name}", _file(path))
