"""A real callserver (and a demo shop on a second origin) started inside a test, on loopback."""

from __future__ import annotations

import asyncio
import atexit
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy.engine import make_url

from callserver import accounts, sites
from callserver.app import create_app
from callserver.clock import Clock
from callserver.demo import shop_app
from callserver.settings import Settings
from callserver.store.database import Database
from callserver.web.keys import DATABASE, RECORDS, SWITCHBOARD
from tests.signing_in import PASSWORD, sign_in_form
from tests.sockets import Sockets

__all__ = ["PASSWORD", "Stack", "free_port", "running_stack", "settings_for", "sign_in_form"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Stack:
    app: web.Application
    url: str
    shop_url: str
    site: sites.NewSite
    settings: Settings
    sockets: Sockets = field(init=False)
    """Shoppers' and operators' sockets on this server, closed before it stops."""

    def __post_init__(self) -> None:
        self.sockets = Sockets(self, add_operator=lambda email, name: self.add_user(email, name=name))

    @property
    def database(self) -> Database:
        return self.app[DATABASE]

    @property
    def switchboard(self) -> Any:
        return self.app[SWITCHBOARD]

    async def add_user(self, email: str, role: str = "operator", name: str = "") -> accounts.Account:
        async with self.database.session() as session:
            return await accounts.create_user(session, email, PASSWORD, role, name=name)

    async def add_site(self, name: str, origins: list[str]) -> sites.NewSite:
        async with self.database.session() as session:
            return await sites.create_site(session, name, origins)

    async def call(self, call_id: str) -> Any:
        return await self.app[RECORDS].get(call_id)

    async def ended_call(self, call_id: str, within: float = 10.0) -> Any:
        """The call's record once it has ended (the browser may show the end before the server wrote it)."""
        deadline = asyncio.get_running_loop().time() + within
        while (record := await self.call(call_id)).state != "ended":
            assert asyncio.get_running_loop().time() < deadline, f"call {call_id} is still {record.state}"
            await asyncio.sleep(0.05)
        return record


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    # Media in the test's process unless a test asks for workers: each worker process costs about a
    # second of CPU to start, which every test would pay (tests/test_media_workers.py and the media
    # tests run with workers, the default of a real server).
    overrides.setdefault("media_workers", 0)
    return Settings(var_dir=tmp_path / "var", **overrides)


_MIGRATED: dict[str, Path] = {}  # the store every migration made, once per test process (see below)


async def _migrated_store() -> Path:
    """A SQLite store with every migration applied, made on first use and copied for each new stack.

    Migrating a new store cost each test that starts a server ~0.3 s; the migrations themselves are
    tested in tests/test_migrations.py (and on PostgreSQL), and each app still runs `upgrade()`.
    """
    if "sqlite" not in _MIGRATED:
        folder = Path(tempfile.mkdtemp(prefix="callserver-migrated-"))
        atexit.register(shutil.rmtree, folder, True)
        database = Database(f"sqlite+aiosqlite:///{folder / 'callserver.db'}")
        try:
            await database.upgrade()
        finally:
            await database.close()
        _MIGRATED["sqlite"] = folder / "callserver.db"
    return _MIGRATED["sqlite"]


def _missing_store(settings: Settings) -> Path | None:
    """The path of the SQLite store `settings` names when there is none there yet."""
    url = make_url(settings.effective_database_url)
    if url.get_backend_name() != "sqlite" or not url.database or Path(url.database).exists():
        return None
    return Path(url.database)


def _copy(source: Path, to: Path) -> None:
    to.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, to)


@asynccontextmanager
async def running_stack(settings: Settings, clock: Clock | None = None) -> AsyncIterator[Stack]:
    """Server on one port, the demo shop (embedding the widget) on another: two origins.

    `clock` drives the server's ring timeouts and presence grace (tests/clocks.py: moved by hand).
    """
    if (store := _missing_store(settings)) is not None:  # a new store starts as the migrated one
        _copy(await _migrated_store(), store)
    app = create_app(settings, clock)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}"
    shop_port = free_port()
    shop_url = f"http://127.0.0.1:{shop_port}"
    async with app[DATABASE].session() as session:
        site = await sites.create_site(session, "Test shop", [shop_url])
    shop_runner = web.AppRunner(shop_app(url, site.key), access_log=None)
    await shop_runner.setup()
    await web.TCPSite(shop_runner, "127.0.0.1", shop_port).start()
    stack = Stack(app=app, url=url, shop_url=shop_url, site=site, settings=settings)
    try:
        yield stack
    finally:
        await stack.sockets.close()
        await shop_runner.cleanup()
        await runner.cleanup()
