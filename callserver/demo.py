"""`callserver demo`: the whole product on one machine, with a demo shop on a second origin."""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web
from sqlalchemy import select

from callserver import accounts, sites
from callserver.app import create_app
from callserver.running import run, serve_apps
from callserver.settings import Settings
from callserver.store.database import Database
from callserver.store.models import Site, User

SHOP = Path(__file__).with_name("demo_shop")
PRODUCTS = [
    {"slug": "oak-table", "name": "Solid oak dining table", "price": 1290.00, "sku": "OAK-180"},
    {"slug": "linen-chair", "name": "Linen lounge chair", "price": 540.00, "sku": "LIN-01"},
    {"slug": "brass-lamp", "name": "Brass reading lamp", "price": 89.00, "sku": "LAMP-7"},
]


async def prepare_demo(settings: Settings, shop_origins: list[str]) -> dict[str, Any]:
    """Create (or reuse) the demo site and accounts; returns what the demo prints."""
    saved_file = settings.var_dir / "demo.json"
    saved: dict[str, Any] = json.loads(saved_file.read_text()) if saved_file.exists() else {}
    database = Database(settings.effective_database_url)
    try:
        await database.upgrade()
        async with database.session() as session:
            site = await session.scalar(select(Site).where(Site.key == saved.get("site_key", "")))
            if site is None:
                created = await sites.create_site(session, "Demo shop", shop_origins)
                saved = {"site_key": created.key, "site_secret": created.secret}
            else:
                site.allowed_origins = sorted({sites.normalize_origin(o) for o in shop_origins})
            for role in ("owner", "operator"):
                email = f"{role}@demo.shop"
                if await session.scalar(select(User).where(User.email == email)) is None:
                    password = secrets.token_urlsafe(9)
                    await accounts.create_user(session, email, password, role, name=f"Demo {role}")
                    saved[role] = {"email": email, "password": password}
    finally:
        await database.close()
    saved_file.parent.mkdir(parents=True, exist_ok=True)
    saved_file.write_text(json.dumps(saved, indent=2))
    saved_file.chmod(0o600)
    return saved


def shop_app(server_url: str, site_key: str) -> web.Application:
    """A small shop that embeds the widget exactly as a real one would."""
    templates = jinja2.Environment(loader=jinja2.FileSystemLoader(SHOP), autoescape=True)

    def page(name: str, request: web.Request, **values: object) -> web.Response:
        # `?lang=ru` shows the page as a Russian (or Polish, …) shop would: <html lang="ru">.
        lang = request.query.get("lang", "en")
        html = templates.get_template(name).render(
            server_url=server_url,
            site_key=site_key,
            products=PRODUCTS,
            lang=lang if lang.replace("-", "").isalpha() else "en",
            **values,
        )
        return web.Response(text=html, content_type="text/html")

    async def home(request: web.Request) -> web.Response:
        return page("index.html", request)

    async def product(request: web.Request) -> web.Response:
        slug = request.match_info["slug"]
        found = next((p for p in PRODUCTS if p["slug"] == slug), None)
        if found is None:
            raise web.HTTPNotFound(text="No such product")
        return page("product.html", request, product=found)

    app = web.Application()
    app.router.add_get("/", home)
    app.router.add_get("/products/{slug}", product)
    return app


def run_demo(settings: Settings, shop_port: int) -> int:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    shop_url = f"http://{settings.host}:{shop_port}"
    origins = [shop_url, f"http://localhost:{shop_port}", f"http://127.0.0.1:{shop_port}"]
    import asyncio

    saved = asyncio.run(prepare_demo(settings, origins))

    async def ready() -> None:
        base = settings.base_url
        lines = [
            "",
            "callserver demo is running.",
            f"  Shop (the shopper's side):  {shop_url}/",
            f"  Softphone (operators):      {base}/operator/",
            f"  Dashboard (owners):         {base}/dashboard/",
            f"  Operator sign-in: {saved['operator']['email']} / {saved['operator']['password']}",
            f"  Owner sign-in:    {saved['owner']['email']} / {saved['owner']['password']}",
            f"  Site key: {saved['site_key']}   site secret: {saved['site_secret']}",
            f"  (saved in {settings.var_dir / 'demo.json'}; press Ctrl+C to stop)",
            "",
        ]
        print("\n".join(lines), flush=True)

    run(
        serve_apps(
            [
                (create_app(settings), settings.host, settings.port),
                (shop_app(settings.base_url, saved["site_key"]), settings.host, shop_port),
            ],
            ready,
        )
    )
    return 0
