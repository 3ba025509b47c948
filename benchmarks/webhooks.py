"""Webhook deliveries per second, from the stored queue to a local receiver.

This process is the sender: a fresh SQLite database (as the default server has), one site, one
subscription to a receiver on loopback, and `--events` events queued before the sender starts;
then `Webhooks` (the app's sender: claim each delivery with its conditional UPDATE, sign, POST,
record the outcome) works through them. The receiver runs in a process of its own, so this one's
CPU (read from /proc, whole process) is the sender's alone. Usage:

    .venv/bin/python -m benchmarks.webhooks [--events 2000] [--parallel 16]

Reports deliveries per second (wall clock) and per CPU-second of the sending process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

from callserver import sites
from callserver.store.database import Database
from callserver.store.models import OutboundDelivery
from callserver.webhooks.sender import Webhooks
from callserver.webhooks.subscriptions import add_subscription
from tests.stack import free_port

RECEIVER = """
import sys
from aiohttp import web

async def take(request):
    await request.read()
    return web.Response(text="ok")

app = web.Application()
app.router.add_post("/hook", take)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def cpu_seconds() -> float:
    with open(f"/proc/{os.getpid()}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_listening(port: int, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
        else:
            writer.close()
            return


async def delivered(database: Database) -> int:
    async with database.session() as session:
        count = await session.scalar(
            select(func.count()).select_from(OutboundDelivery).where(OutboundDelivery.state == "delivered")
        )
        return int(count or 0)


async def main(events: int, parallel: int) -> None:
    port = free_port()
    receiver = await asyncio.create_subprocess_exec(sys.executable, "-c", RECEIVER, str(port))
    folder = tempfile.TemporaryDirectory()
    database = Database(f"sqlite+aiosqlite:///{Path(folder.name) / 'bench.db'}")
    webhooks = Webhooks(database, parallel=parallel)
    try:
        await wait_listening(port)
        await database.upgrade()
        async with database.session() as session:
            site = await sites.create_site(session, "Bench shop", ["https://shop.example"])
            site_id = (await sites.site_by_key(session, site.key)).id
            await add_subscription(
                session, site_id, f"http://127.0.0.1:{port}/hook", allow_private_network=True
            )
        data = {
            "id": "0" * 32,
            "state": "ended",
            "end_reason": "completed",
            "visitor": {"page": "https://x/p"},
        }
        for start in range(0, events, 500):
            async with database.session() as session:
                for _ in range(min(500, events - start)):
                    await webhooks.queue.enqueue(session, site_id, "call.ended", data)
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        webhooks.start()
        while True:
            done = await delivered(database)
            if done >= events:
                break
            await asyncio.sleep(0.05)  # polling the table: what an owner's log would see
        wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
        print(
            f"{done} deliveries in {wall:.2f} s: {done / wall:.0f} per second, "
            f"{done / cpu:.0f} per CPU-second of the sender ({cpu / wall * 100:.0f} % of a core), "
            f"parallel={parallel}"
        )
    finally:
        await webhooks.close()
        await database.close()
        receiver.terminate()
        await receiver.wait()
        folder.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--parallel", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.parallel))
