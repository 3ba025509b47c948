"""Beacon ingest per core, and the time from a page view to the operators' board.

Runs `callserver demo` in its own process pinned to one core (its CPU is read from /proc), a load
generator in a process of its own on the other core that posts beacons as a shop's widgets do —
for each visitor a page view, then heartbeats (1 view : 4 pings) — over keep-alive connections, and
an operator's softphone socket in this process that watches the board. Usage:

    .venv/bin/python -m benchmarks.beacons [--seconds 10] [--connections 64] [--visitors 5000]

Reports beacons per second, beacons per CPU-second of the server (= per core at 100 %), the
page view → board latency (p50/p95/max), both on an idle server and under the load, and what the
operator's board costs under it: pushes per second, the largest push in bytes and rows.

The server trusts `X-Forwarded-For` here and each visitor comes from an address of its own (a shop's
visitors do), since new visitors are limited per client address; `--one-address` sends them all from
one address instead, to see the flood limit at work (most beacons of new visitors then get 429).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.call_setup import cpu_seconds, wait_healthy
from tests.stack import free_port, sign_in_form


def pin(pid: int, core: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setaffinity(pid, {core % (os.cpu_count() or 1)})


def address_of(visitor: int) -> str:
    return f"10.{visitor // 65536 % 256}.{visitor // 256 % 256}.{visitor % 256}"


async def load(
    url: str, site: str, origin: str, seconds: float, connections: int, visitors: int, one_address: bool
) -> dict[str, Any]:
    """The load generator's side: post beacons as fast as the server takes them, for `seconds`."""
    beacon_url = f"{url}/widget/beacon?site={site}"
    headers = {"Origin": origin, "Content-Type": "text/plain;charset=UTF-8"}
    counter = itertools.count()
    done = 0
    failed = 0
    limited = 0
    deadline = time.monotonic() + seconds

    def visitor_of(n: int) -> int:
        return n // 5 % visitors

    def body(n: int) -> bytes:
        visitor = visitor_of(n)
        token = f"bench-visitor-{visitor:06d}"
        view = f"v{n // (5 * visitors)}"
        if n % 5 == 0:
            frame: dict[str, Any] = {
                "kind": "view",
                "visitor": token,
                "view": view,
                "page": f"{origin}/products/item-{n % 97}?utm_source=bench",
                "title": "A product page of the benchmark",
                "referrer": "https://www.google.com/search?q=oak+table",
                "product_price": 10 + n % 1500,
                "currency": "EUR",
            }
        else:
            frame = {"kind": "ping", "visitor": token, "view": view, "seconds": 20 * (n % 5)}
        return json.dumps(frame).encode()

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done, failed, limited
        while time.monotonic() < deadline:
            n = next(counter)
            forwarded = {"X-Forwarded-For": "192.0.2.1" if one_address else address_of(visitor_of(n))}
            async with session.post(beacon_url, data=body(n), headers={**headers, **forwarded}) as response:
                await response.read()
                if response.status == 204:
                    done += 1
                elif response.status == 429:
                    limited += 1
                else:
                    failed += 1

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.monotonic()
        await asyncio.gather(*(worker(session) for _ in range(connections)))
        elapsed = time.monotonic() - started
    return {"beacons": done, "limited": limited, "failed": failed, "seconds": elapsed}


class BoardWatch:
    """The operator's socket: every board push, its size and rows, and the latency probes' waits."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.pushes: list[tuple[float, int, int]] = []  # (time, bytes, rows)
        self.seen: dict[str, asyncio.Future[float]] = {}
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            frame = json.loads(message.data)
            if frame.get("type") != "visitors":
                continue
            now = time.monotonic()
            self.pushes.append((now, len(message.data), len(frame["visitors"])))
            for row in frame["visitors"]:
                waiting = self.seen.get(row["id"])
                if waiting is not None and not waiting.done():
                    waiting.set_result(now)

    def between(self, start: float, end: float) -> dict[str, Any]:
        pushes = [p for p in self.pushes if start <= p[0] <= end]
        return {
            "pushes_per_second": round(len(pushes) / max(end - start, 1e-9), 2),
            "push_bytes_max": max((p[1] for p in pushes), default=0),
            "push_rows_max": max((p[2] for p in pushes), default=0),
        }


async def board_latency(
    session: aiohttp.ClientSession, url: str, site: str, origin: str, board: BoardWatch, n: int
) -> list[float]:
    """Post a page view for a fresh visitor and time until the operator's board shows it."""
    times = []
    for i in range(n):
        token = f"latency-{time.monotonic_ns()}-{i}"
        # A visitor with a full cart from a search ad: high enough to make the board's top rows.
        body = {
            "kind": "view",
            "visitor": token,
            "view": "v1",
            "page": f"{origin}/products/oak?utm_source=ads",
            "referrer": "https://www.google.com/search?q=oak",
            "utm": {"source": "ads"},
            "cart_value": 5000,
        }
        seen = board.seen[token] = asyncio.get_running_loop().create_future()
        started = time.monotonic()
        headers = {"Origin": origin, "X-Forwarded-For": f"198.51.100.{i % 250}"}
        async with session.post(
            f"{url}/widget/beacon?site={site}", data=json.dumps(body), headers=headers
        ) as response:
            assert response.status == 204, await response.text()
        times.append((await asyncio.wait_for(seen, 10) - started) * 1000)
        del board.seen[token]
        await asyncio.sleep(0.3)
    return times


def summary(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {
        "p50_ms": round(statistics.median(values), 1),
        "p95_ms": round(values[int(0.95 * (len(values) - 1))], 1),
        "max_ms": round(values[-1], 1),
    }


async def main(seconds: float, connections: int, visitors: int, one_address: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="callserver-beacons-"))
    port, shop_port = free_port(), free_port()
    env = {
        **os.environ,
        "CALLSERVER_VAR_DIR": str(work / "var"),
        "CALLSERVER_LOG_LEVEL": "WARNING",
        "CALLSERVER_TRUST_FORWARDED_FOR": "1",
    }
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callserver", "demo", "--port", str(port), "--shop-port", str(shop_port),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    pin(server.pid, 0)
    url, origin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{shop_port}"
    result: dict[str, Any] = {"connections": connections, "visitors": visitors, "one_address": one_address}
    try:
        await wait_healthy(url)
        demo = json.loads((work / "var" / "demo.json").read_text())
        site = demo["site_key"]
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            operator = demo["operator"]
            login = await sign_in_form(session, url, "operator", operator["email"], operator["password"])
            async with session.post(f"{url}/operator/login", data=login, allow_redirects=False) as response:
                assert response.status == 302
            ws = await session.ws_connect(f"{url}/ws/operator")
            board = BoardWatch(ws)
            result["idle_page_view_to_board"] = summary(
                await board_latency(session, url, site, origin, board, 20)
            )

            cpu0 = cpu_seconds(server.pid)
            load_process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "benchmarks.beacons", "--load", url, site, origin,
                "--seconds", str(seconds), "--connections", str(connections), "--visitors", str(visitors),
                *(["--one-address"] if one_address else []),
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            pin(load_process.pid, 1)
            await asyncio.sleep(1.5)  # the generator starts up
            loaded_from = time.monotonic()
            probes = int(max(3.0, seconds - 3) / 0.6)
            under_load = await board_latency(session, url, site, origin, board, probes)
            result["board_under_load"] = board.between(loaded_from, time.monotonic())
            out, _ = await load_process.communicate()
            cpu = cpu_seconds(server.pid) - cpu0  # everything the server did while the load ran
            generated = json.loads(out)
            await ws.close()
            board.task.cancel()
        rate = generated["beacons"] / generated["seconds"]
        result.update(
            beacons=generated["beacons"],
            limited=generated["limited"],
            failed=generated["failed"],
            beacons_per_second=round(rate),
            server_cpu_seconds=round(cpu, 2),
            server_cpu_percent_of_one_core=round(100 * cpu / generated["seconds"], 1),
            beacons_per_cpu_second=round(generated["beacons"] / cpu),
            loaded_page_view_to_board=summary(under_load),
        )
    finally:
        server.terminate()
        await server.wait()
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--visitors", type=int, default=5000)
    parser.add_argument("--one-address", action="store_true", help="every visitor from one address")
    parser.add_argument("--load", nargs=3, metavar=("URL", "SITE", "ORIGIN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    counts = (args.seconds, args.connections, args.visitors, args.one_address)
    if args.load:
        url, site, origin = args.load
        print(json.dumps(asyncio.run(load(url, site, origin, *counts))))
    else:
        print(json.dumps(asyncio.run(main(*counts)), indent=2))
