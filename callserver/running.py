"""Running aiohttp applications until SIGINT or SIGTERM (a cluster member drains first), on uvloop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence

from aiohttp import web

from callserver.cluster.drain import Drain
from callserver.heap import freeze_start_up

log = logging.getLogger(__name__)


async def serve_apps(
    apps: list[tuple[web.Application, str, int]],
    ready: Callable[[], Awaitable[None]] | None = None,
    drains: Sequence[Drain] = (),
) -> None:
    """Serve each (app, host, port) until a stop signal; then clean up in reverse order.

    With `drains` (a cluster member's), SIGTERM drains instead of stopping: no new calls or chats,
    `/readyz` 503, and the apps stop once the calls in progress ended (at most the drain timeout); a
    drain ordered through Redis (`callserver nodes drain`) ends the same way. SIGINT stops at once.
    """
    runners: list[web.AppRunner] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    waiting = set(drains)

    def drained(drain: Drain) -> None:
        waiting.discard(drain)
        if not waiting:
            stop.set()

    def terminate() -> None:
        if not drains:
            stop.set()
        elif any(d.draining for d in drains):
            log.warning("already draining: SIGINT stops at once")
        else:
            for drain in drains:
                drain.start("SIGTERM")

    unlisten = [d.on_done(functools.partial(drained, d)) for d in drains]
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, terminate)
    try:
        for app, host, port in apps:
            runner = web.AppRunner(app, handle_signals=False, access_log=None)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, host, port, shutdown_timeout=5).start()
        freeze_start_up()
        if ready is not None:
            await ready()
        await stop.wait()
    finally:
        for undo in unlisten:
            undo()
        for runner in reversed(runners):
            await runner.cleanup()


def run(main: Coroutine[object, None, None]) -> None:
    """asyncio.run with uvloop when available (it halves the event loop's share of media work)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)
