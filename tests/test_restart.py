"""A server that goes away mid-call leaves no call open: the record ends as `dropped`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.sockets import Sockets
from tests.stack import PASSWORD, free_port


@dataclass
class Site:
    key: str


@dataclass
class Remote:
    url: str
    shop_url: str
    site: Site


def cli(env: dict[str, str], *args: str) -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, "-m", "callserver", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, str] = json.loads(out.stdout)
    return result


class Server:
    def __init__(self, env: dict[str, str], port: int) -> None:
        self.env, self.port = env, port
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "callserver",
            "serve",
            "--port",
            str(self.port),
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # A loaded 2-core machine can take many seconds to start a server with its media workers: wait
        # for as long as it lives, up to a minute, rather than a fixed number of tries.
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline and self.process.returncode is None:
                try:
                    async with session.get(f"http://127.0.0.1:{self.port}/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
        raise AssertionError(f"the server did not start (exit code {self.process.returncode})")

    async def stop(self, sig: int) -> None:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(sig)
            await asyncio.wait_for(self.process.wait(), 20)


@pytest.fixture
def server_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    yield {**os.environ, "CALLSERVER_VAR_DIR": str(tmp_path / "var"), "CALLSERVER_HOST": "127.0.0.1"}


def call_row(env: dict[str, str], call_id: str) -> tuple[str, str | None]:
    with sqlite3.connect(Path(env["CALLSERVER_VAR_DIR"]) / "callserver.db") as db:
        row = db.execute("SELECT state, end_reason FROM calls WHERE id = ?", (call_id,)).fetchone()
    return row[0], row[1]


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
async def test_a_call_in_progress_ends_as_dropped_when_the_server_goes_away(
    server_env: dict[str, str], how: int
) -> None:
    shop_url = "http://127.0.0.1:9"  # only its Origin matters here
    site = cli(server_env, "site", "add", "--name", "Shop", "--origin", shop_url)
    cli(server_env, "user", "add", "--email", "op@shop.example", "--password", PASSWORD, "--role", "operator")
    port = free_port()
    server = Server(server_env, port)
    await server.start()
    remote = Remote(f"http://127.0.0.1:{port}", shop_url, Site(site["key"]))
    try:
        async with Sockets(remote) as sockets:
            softphone = await sockets.softphone("op@shop.example", online=True)
            shopper = await sockets.shopper()
            call_id = await shopper.call()
            await softphone.receive("call.incoming")
            await softphone.answer(call_id)
            assert call_row(server_env, call_id) == ("answered", None)
            await server.stop(how)
        if how == signal.SIGTERM:  # a clean stop ends its calls itself
            assert call_row(server_env, call_id) == ("ended", "dropped")
        await server.start()
        assert call_row(server_env, call_id) == ("ended", "dropped")
    finally:
        await server.stop(signal.SIGTERM)
