"""The bridge benchmark: how many calls one server process holds, per media engine, in one run.

    .venv/bin/python -m benchmarks.bridge            # both engines, full steps (~10 minutes)
    .venv/bin/python -m benchmarks.bridge --quick    # fewer, shorter steps (~4 minutes)

For each engine it starts the real server (`callserver serve`, `CALLSERVER_MEDIA_ENGINE=...`) with a
site and an operator made through the CLI (`--json`), and a load generator (`benchmarks.load`) in a
process of its own that opens calls through the real signaling. N grows step by step; at each step the
load generator measures a window and this process reads the server's CPU (all threads) and RSS from
/proc. The largest N that is *sustained* — loss ≤ 0.5 %, p99 gap between packets ≤ 60 ms, every leg
hears the other side's tone without dropouts (near-silent 20 ms frames in a decoded 1 s sample) — is
reported per engine with their ratio, as JSON in
benchmarks/results/ and as a Markdown table. Everything runs on this host and is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import select

from benchmarks.load import percentile, process_cpu

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RESULTS = ROOT / "benchmarks" / "results"
ORIGIN = "http://shop.bench.invalid"
PASSWORD = "bench-operator-password"
MAX_LOSS_PERCENT = 0.5
MAX_P99_GAP_MS = 60.0
MIN_PPS_PER_LEG = 47.5  # 95 % of Opus's 50 packets a second

STEPS = {
    "transcoding": [2, 4, 6, 8, 10, 12, 14, 16],
    "forwarding": [10, 25, 50, 75, 100, 125, 150, 200, 250],
}
QUICK_STEPS = {"transcoding": [2, 4, 6, 8], "forwarding": [10, 30, 60, 90]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def cli(env: dict[str, str], *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [str(BIN / "callserver"), *args], env=env, check=True, capture_output=True, text=True
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


async def operator_sessions(var_dir: Path, count: int) -> list[str]:
    """Session cookies for `count` operators: the first made by the CLI, the others copies of it.

    Hashing a password (argon2) and logging in cost ~0.5 s of CPU each: done once, not per operator.
    """
    from callserver import accounts
    from callserver.settings import Settings
    from callserver.store.database import Database
    from callserver.store.models import User

    database = Database(Settings(var_dir=var_dir).effective_database_url)
    try:
        async with database.session() as session:
            first = await session.scalar(select(User).where(User.email == "op0@bench.invalid"))
            assert first is not None
            users = [first]
            for i in range(1, count):
                user = User(
                    email=f"op{i}@bench.invalid",
                    name=f"op{i}",
                    password_hash=first.password_hash,
                    role="operator",
                    created_at=datetime.now(UTC),
                    sites=[],
                )
                session.add(user)
                users.append(user)
            await session.flush()
            return [
                await accounts.open_session(session, accounts.Account(u.id, u.email, u.name, u.role, ()), 1)
                for u in users
            ]
    finally:
        await database.close()


class Server:
    """`callserver serve` in its own process, with its own var directory."""

    def __init__(self, engine: str, var_dir: Path) -> None:
        self.engine = engine
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "CALLSERVER_VAR_DIR": str(var_dir),
            "CALLSERVER_MEDIA_ENGINE": engine,
            "CALLSERVER_LOG_LEVEL": "WARNING",
            "CALLSERVER_RING_TIMEOUT": "60",
        }
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            str(BIN / "callserver"),
            "serve",
            "--port",
            str(self.port),
            env=self.env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=open(Path(self.env["CALLSERVER_VAR_DIR"]) / "server.log", "wb"),  # noqa: ASYNC230, SIM115
        )
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{self.url}/healthz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise RuntimeError("the server did not start; see server.log")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


class LoadProcess:
    def __init__(self, server: Server, site: str, cookies: Path) -> None:
        self.args = ["-m", "benchmarks.load", "--url", server.url, "--site", site, "--origin", ORIGIN]
        self.args += ["--cookies", str(cookies)]
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            *self.args,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )

    async def send(self, command: dict[str, Any]) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        await self.process.stdin.drain()

    async def line(self) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        raw = await self.process.stdout.readline()
        if not raw:
            raise RuntimeError("the load generator exited")
        message: dict[str, Any] = json.loads(raw)
        return message

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        with contextlib.suppress(Exception):
            await self.send({"stop": True})
        try:
            await asyncio.wait_for(self.process.wait(), 60)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def probe_latency(url: str, stop: asyncio.Event, samples: list[float]) -> None:
    """Round trips of GET /healthz every 100 ms: the server's event-loop lag as a user would see it."""
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            started = time.monotonic()
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{url}/healthz") as response:
                    await response.read()
                samples.append(time.monotonic() - started)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)


async def measure_step(server: Server, load: LoadProcess, calls: int, window: float) -> dict[str, Any]:
    idle_rss = rss_bytes(server.pid)
    await load.send({"calls": calls, "window": window, "settle": 2.0, "setup_timeout": 150})
    cpu_before = wall_before = 0.0
    latencies: list[float] = []
    stop = asyncio.Event()
    probe: asyncio.Task[None] | None = None
    rss_at_end = idle_rss
    server_cpu = 0.0
    elapsed = 1.0
    while True:
        message = await load.line()
        if message.get("window") == "start":
            cpu_before, wall_before = process_cpu(server.pid), time.monotonic()
            probe = asyncio.ensure_future(probe_latency(server.url, stop, latencies))
        elif message.get("window") == "end":
            server_cpu, elapsed = process_cpu(server.pid) - cpu_before, time.monotonic() - wall_before
            rss_at_end = rss_bytes(server.pid)
            stop.set()
            if probe is not None:
                await probe
        elif "result" in message:
            result: dict[str, Any] = message["result"]
            break
    if "error" in result:
        return {**result, "sustained": False}
    n = result["calls"]
    result.update(
        server_cpu_percent=round(100 * server_cpu / elapsed, 1),
        server_cpu_percent_per_call=round(100 * server_cpu / elapsed / n, 2),
        server_rss_mb=round(rss_at_end / 2**20, 1),
        healthz_p99_ms=round(1000 * percentile(sorted(latencies), 0.99), 1) if latencies else None,
    )
    result["sustained"] = (
        result["loss_percent"] <= MAX_LOSS_PERCENT
        and result["p99_gap_ms"] is not None
        and result["p99_gap_ms"] <= MAX_P99_GAP_MS
        and result["legs_with_wrong_tone"] == 0
        and result["legs_with_dropouts"] == 0
        # A bridge that falls behind sends fewer packets with contiguous sequence numbers: not loss.
        and result["min_pps_per_leg"] >= MIN_PPS_PER_LEG
    )
    return result


async def bench_engine(engine: str, steps: list[int], window: float, work: Path) -> dict[str, Any]:
    var_dir = work / engine
    var_dir.mkdir(parents=True)
    server = Server(engine, var_dir)
    site = cli(server.env, "site", "add", "--name", "Bench shop", "--origin", ORIGIN, "--json")
    cli(
        server.env,
        "user",
        "add",
        "--email",
        "op0@bench.invalid",
        "--password",
        PASSWORD,
        "--role",
        "operator",
        "--json",
    )
    cookies = await operator_sessions(var_dir, max(steps))
    cookie_file = var_dir / "cookies.txt"
    cookie_file.write_text("\n".join(cookies))
    await server.start()
    idle_rss = rss_bytes(server.pid)
    load = LoadProcess(server, site["key"], cookie_file)
    rows: list[dict[str, Any]] = []
    try:
        await load.start()
        for calls in steps:
            print(f"  {engine}: {calls} calls …", end="", flush=True)
            row = await measure_step(server, load, calls, window)
            row["rss_mb_per_call"] = (
                round((rss_bytes(server.pid) - idle_rss) / 2**20 / row["calls"], 2)
                if row.get("calls")
                else None
            )
            rows.append(row)
            print(" " + summary_line(row), flush=True)
            if not row["sustained"]:
                break
    finally:
        await load.stop()
        await server.stop()
    sustained = [r for r in rows if r["sustained"]]
    best = max(sustained, key=lambda r: r["calls"]) if sustained else None
    return {
        "engine": engine,
        "steps": rows,
        "max_sustained_calls": best["calls"] if best else 0,
        "best": best,
    }


def summary_line(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"failed: {row['error']}"
    return (
        f"server {row['server_cpu_percent']}% ({row['server_cpu_percent_per_call']}%/call), "
        f"loadgen {row['loadgen_cpu_percent']}%, loss {row['loss_percent']}%, "
        f"p99 gap {row['p99_gap_ms']} ms, "
        f"wrong tone {row['legs_with_wrong_tone']}, dropouts {row['legs_with_dropouts']} "
        f"→ {'ok' if row['sustained'] else 'NOT sustained'}"
    )


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| engine | calls | server CPU/call | server CPU | load gen CPU | pkt/s per leg | loss | p99 gap "
        "| legs with dropouts | /healthz p99 | load gen lag p99 | setup median | RSS/call | sustained |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for engine in report["engines"]:
        for r in engine["steps"]:
            if "error" in r:
                lines.append(f"| {engine['engine']} | {r.get('calls')} | error: {r['error']} |||||||||||")
                continue
            lines.append(
                f"| {engine['engine']} | {r['calls']} | {r['server_cpu_percent_per_call']} % "
                f"| {r['server_cpu_percent']} % | {r['loadgen_cpu_percent']} % | {r['pps_per_leg']} "
                f"| {r['loss_percent']} % | {r['p99_gap_ms']} ms | {r['legs_with_dropouts']} "
                f"| {r['healthz_p99_ms']} ms "
                f"| {r['loadgen_loop_lag_p99_ms']} ms | {r['setup_ms_median']} ms "
                f"| {r['rss_mb_per_call']} MB "
                f"| {'yes' if r['sustained'] else 'no'} |"
            )
    lines.append("")
    for engine in report["engines"]:
        lines.append(f"- {engine['engine']}: largest N sustained = **{engine['max_sustained_calls']}** calls")
    if report.get("ratio") is not None:
        lines.append(f"- forwarding / transcoding = **{report['ratio']}×**")
    if report.get("cpu_ratio") is not None:
        lines.append(f"- server CPU per call, transcoding / forwarding = **{report['cpu_ratio']}×**")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    steps = QUICK_STEPS if args.quick else STEPS
    if args.steps:
        steps = {engine: args.steps for engine in steps}
    window = 4.0 if args.quick else 6.0
    work = Path(tempfile.mkdtemp(prefix="callserver-bench-"))
    report: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()},
        "criteria": {"max_loss_percent": MAX_LOSS_PERCENT, "max_p99_gap_ms": MAX_P99_GAP_MS},
        "quick": args.quick,
        "engines": [],
    }
    try:
        for engine in args.engines:
            print(f"{engine}:", flush=True)
            report["engines"].append(await bench_engine(engine, steps[engine], window, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    found = {e["engine"]: e for e in report["engines"]}
    if "transcoding" in found and "forwarding" in found:
        base, new = found["transcoding"], found["forwarding"]
        if base["max_sustained_calls"]:
            report["ratio"] = round(new["max_sustained_calls"] / base["max_sustained_calls"], 1)
        if base["best"] and new["best"]:
            report["cpu_ratio"] = round(
                base["best"]["server_cpu_percent_per_call"] / new["best"]["server_cpu_percent_per_call"], 1
            )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer and shorter steps")
    parser.add_argument(
        "--engines", nargs="+", default=["transcoding", "forwarding"], choices=["transcoding", "forwarding"]
    )
    parser.add_argument("--steps", nargs="+", type=int, help="numbers of calls to try (both engines)")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    table = markdown(report)
    (RESULTS / f"bridge-{stamp}.json").write_text(json.dumps(report, indent=2))
    (RESULTS / f"bridge-{stamp}.md").write_text(table + "\n")
    print()
    print(table)
    print(f"\nresults: {RESULTS / f'bridge-{stamp}.json'}")


if __name__ == "__main__":
    main()
