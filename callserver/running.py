"""Running aiohttp applications until SIGINT or SIGTERM, on uvloop where it is installed."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import web


async def serve_apps(
    apps: list[tuple[web.Application, str, int]], ready: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Serve each (app, host, port) until a stop signal; then clean up in reverse order."""
    runners: list[web.AppRunner] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        for app, host, port in apps:
            runner = web.AppRunner(app, handle_signals=False, access_log=None)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, host, port, shutdown_timeout=5).start()
        if ready is not None:
            await ready()
        await stop.wait()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


def run(main: Coroutine[Any, Any, None]) -> None:
    """asyncio.run with uvloop when available (it halves the event loop's share of media work)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)
