"""The bridge benchmark: how many calls a server holds, per media engine, in one run.

    .venv/bin/python -m benchmarks.bridge                  # transcoding vs forwarding (in-process)
    .venv/bin/python -m benchmarks.bridge --mode workers   # forwarding with 1 vs 2 media workers
    .venv/bin/python -m benchmarks.bridge --mode delay     # added delay, without and with 3 % loss
    .venv/bin/python -m benchmarks.bridge --mode rss       # RSS across 1,000 consecutive short calls
    add --quick to any of them for a smoke run
    add --baseline REV to measure each variant first with the server of git revision REV (before/after
    in one run: "forwarding@REV", then "forwarding")
    add --server-cpus 0 --load-cpus 1 to pin the server (with its media workers) and the load
    generator to CPUs of their own (os.sched_setaffinity; on this 2-core host: 0 and 1)

For each variant (engine and number of media workers) it starts the real server (`callserver serve`,
`CALLSERVER_MEDIA_ENGINE`, `CALLSERVER_MEDIA_WORKERS`) with a site that records calls and an operator
made through the CLI (`--json`), and a load generator (`benchmarks.load`) in a process of its own that
opens calls through the real signaling. N grows step by step; at each step the load generator measures
a window and this process reads the CPU (all threads) and RSS of the server and its media workers from
/proc. The largest N that is *sustained* — loss ≤ 0.5 %, p99 gap between packets ≤ 60 ms, at least
47.5 packets a second on every leg, every leg hears the other side's tone without dropouts
(near-silent 20 ms frames in a decoded 1 s sample) — is reported per variant with their ratio, as
JSON in benchmarks/results/ and as a Markdown table. The host is shared: a step that fails is measured
once more (both windows kept), and "other CPU" says how much else ran during each window.
Everything runs on this host and is stopped at the end.

Pinned (`--server-cpus`, `--load-cpus`), the server is started on its CPUs (its threads and the media
workers it starts, restarted ones too, inherit the affinity) and the load generator and this process
on theirs; every thread of the server's process tree is checked at every step ("pinned").
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
from collections.abc import Callable
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

# variant → (CALLSERVER_MEDIA_ENGINE, CALLSERVER_MEDIA_WORKERS); 0 workers = media in the main process.
VARIANTS = {
    "transcoding": ("transcoding", 0),
    "forwarding": ("forwarding", 0),
    "forwarding-1w": ("forwarding", 1),
    "forwarding-2w": ("forwarding", 2),
}
MODES = {
    "bridge": ["transcoding", "forwarding"],
    "workers": ["forwarding-1w", "forwarding-2w"],
    "delay": ["forwarding"],
    "rss": ["forwarding"],
}
FORWARDING_STEPS = [10, 25, 50, 75, 100, 125, 150, 175, 200, 250, 300, 350, 400]
STEPS = {"transcoding": [2, 3, 4, 5, 6, 8, 10, 12]}
QUICK_STEPS = {"transcoding": [2, 4, 6], "forwarding": [10, 30, 60]}
DELAY_CALLS, QUICK_DELAY_CALLS = 50, 10
INJECTED_LOSS = 0.03
CHURN = {"calls": 1000, "concurrency": 10, "hold": 1.0, "every": 100}
QUICK_CHURN = {"calls": 100, "concurrency": 10, "hold": 1.0, "every": 20}


def parse_cpus(text: str) -> set[int]:
    """CPUs as `taskset -c` writes them: "0", "0,2", "0-3" or "0-1,4"."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        try:
            cpus.update(range(int(first), int(last or first) + 1))
        except ValueError:
            raise argparse.ArgumentTypeError(f'"{text}" is not a list of CPUs (e.g. 0 or 0-1,3)') from None
    if not cpus or not cpus <= os.sched_getaffinity(0):
        raise argparse.ArgumentTypeError(f'CPUs "{text}" are not all available here')
    return cpus


def pinned_to(cpus: set[int] | None) -> Callable[[], None] | None:
    """A `preexec_fn` that pins the child (and all it starts later) to `cpus`."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def tree_affinity(pid: int) -> set[int]:
    """The CPUs any thread of the process tree of `pid` may run on."""
    cpus: set[int] = set()
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                cpus |= os.sched_getaffinity(int(task))
    return cpus


def machine() -> dict[str, Any]:
    """The host the figures come from."""
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    return {
        "cpu_model": model or platform.processor(),
        "cpus": os.cpu_count(),
        "kernel": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def settings_of(variant: str) -> tuple[str, int]:
    """(engine, media workers) of a variant; "forwarding@REV" is "forwarding" run from revision REV."""
    return VARIANTS[variant.partition("@")[0]]


def export_revision(revision: str, into: Path) -> Path:
    """The `callserver` package and the assets it serves as they were at `revision` (git archive)."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "callserver", "web_button", "operator_softphone"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def steps_for(variant: str, quick: bool) -> list[int]:
    engine = settings_of(variant)[0]
    if quick:
        return QUICK_STEPS[engine]
    return STEPS.get(engine, FORWARDING_STEPS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # gone
        pass
    return 0


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (the server and its media workers), from /proc."""
    pids = [pid]
    for current in pids:
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    pids += [int(child) for child in f.read().split()]
    return pids


def host_busy() -> float:
    """CPU seconds all cores spent busy so far (/proc/stat): to see what else ran during a window."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:9]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def tree_rss(pid: int) -> int:
    return sum(rss_bytes(p) for p in process_tree(pid))


# glibc gives each thread arena a heap of its own, aligned to HEAP_MAX_SIZE (64 MiB on 64-bit).
THREAD_HEAP_ALIGN = 64 << 20


def memory_by_kind(pid: int) -> dict[str, float]:
    """The resident MB of one process by kind of mapping, from /proc/PID/smaps.

    `heap`: glibc's main arena (what the main thread mallocs: aiortc, libsrtp, PyAV); `thread_arenas`:
    the arenas of other threads (SQLite's page caches live in aiosqlite's connection threads, the mixer's
    buffers in its thread); `anonymous`: the rest of the anonymous memory, mostly pymalloc's 1 MiB
    arenas of Python objects; `files`: mapped libraries and files.
    """
    kinds = dict.fromkeys(("heap", "thread_arenas", "anonymous", "files"), 0)
    kind = None
    with contextlib.suppress(OSError), open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if fields[0] == "Rss:":
                if kind is not None:
                    kinds[kind] += int(fields[1])
            elif not fields[0].endswith(":") and "-" in fields[0]:  # a mapping's header line
                start = int(fields[0].split("-")[0], 16)
                name = fields[5] if len(fields) > 5 else ""
                if name == "[heap]":
                    kind = "heap"
                elif name.startswith("["):
                    kind = None  # the stack, vdso and the like
                elif name:
                    kind = "files"
                else:
                    kind = "thread_arenas" if start % THREAD_HEAP_ALIGN == 0 else "anonymous"
    return {name: round(kib / 1024, 1) for name, kib in kinds.items()}


def tree_cpu(pid: int) -> dict[int, float]:
    """CPU seconds so far of each process of the tree."""
    times: dict[int, float] = {}
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            times[p] = process_cpu(p)
    return times


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

    def __init__(
        self, variant: str, var_dir: Path, cpus: set[int] | None = None, source: Path | None = None
    ) -> None:
        engine, workers = settings_of(variant)
        self.cpus = cpus
        self.engine = engine
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "CALLSERVER_VAR_DIR": str(var_dir),
            "CALLSERVER_MEDIA_ENGINE": engine,
            "CALLSERVER_MEDIA_WORKERS": str(workers),
            "CALLSERVER_LOG_LEVEL": "WARNING",
            "CALLSERVER_RING_TIMEOUT": "60",
            # The load generator's shoppers each come from an address of their own (X-Forwarded-For),
            # and the benchmark looks for the limit itself: no cap on calls per worker.
            "CALLSERVER_TRUST_FORWARDED_FOR": "true",
            "CALLSERVER_MAX_CALLS_PER_WORKER": "100000",
        }
        if source is not None:  # an earlier revision's package ahead of the installed one
            self.env["PYTHONPATH"] = str(source)
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
            preexec_fn=pinned_to(self.cpus),
        )
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{self.url}/healthz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)
        await self.stop()  # not left running behind the benchmark
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
    def __init__(self, server: Server, site: str, cookies: Path, cpus: set[int] | None = None) -> None:
        self.cpus = cpus
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
            preexec_fn=pinned_to(self.cpus),
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


async def measure_step(
    server: Server, load: LoadProcess, calls: int, window: float, loss: float = 0.0
) -> dict[str, Any]:
    await load.send({"calls": calls, "window": window, "settle": 2.0, "setup_timeout": 150, "loss": loss})
    cpu_before: dict[int, float] = {}
    cpu_after: dict[int, float] = {}
    wall_before = busy_before = busy = 0.0
    latencies: list[float] = []
    stop = asyncio.Event()
    probe: asyncio.Task[None] | None = None
    rss_at_end = 0
    elapsed = 1.0
    while True:
        message = await load.line()
        if message.get("window") == "start":
            cpu_before, wall_before, busy_before = tree_cpu(server.pid), time.monotonic(), host_busy()
            probe = asyncio.ensure_future(probe_latency(server.url, stop, latencies))
        elif message.get("window") == "end":
            cpu_after, elapsed = tree_cpu(server.pid), time.monotonic() - wall_before
            busy = host_busy() - busy_before
            rss_at_end = tree_rss(server.pid)
            stop.set()
            if probe is not None:
                await probe
        elif "result" in message:
            result: dict[str, Any] = message["result"]
            break
    if "error" in result:
        return {**result, "sustained": False}
    n = result["calls"]
    # Per process: the main one (signaling, and media when in-process) and each media worker.
    used = {p: cpu_after[p] - cpu_before.get(p, 0.0) for p in cpu_after}
    main_cpu = used.pop(server.pid, 0.0)
    server_cpu = main_cpu + sum(used.values())
    result.update(
        server_cpu_percent=round(100 * server_cpu / elapsed, 1),
        server_cpu_percent_per_call=round(100 * server_cpu / elapsed / n, 2),
        main_cpu_percent=round(100 * main_cpu / elapsed, 1),
        worker_cpu_percent=[round(100 * c / elapsed, 1) for c in used.values()],
        # This host is shared: CPU used by anything but the server and the load generator.
        other_cpu_percent=round(
            max(0.0, 100 * (busy - server_cpu) / elapsed - result["loadgen_cpu_percent"]), 1
        ),
        server_rss_mb=round(rss_at_end / 2**20, 1),
        healthz_p99_ms=round(1000 * percentile(sorted(latencies), 0.99), 1) if latencies else None,
        # Server CPU per packet it forwarded (received on one leg, sent on the other), all costs in.
        us_per_packet=round(1e6 * server_cpu / result["packets_received"], 1)
        if result["packets_received"]
        else None,
        # The media workers' CPU per call: what one more call costs the worker that takes it.
        worker_cpu_percent_per_call=round(100 * sum(used.values()) / elapsed / n, 2) if used else None,
        server_affinity=sorted(tree_affinity(server.pid)),
    )
    if server.cpus:
        result["pinned"] = set(result["server_affinity"]) <= server.cpus
    result["sustained"] = (
        result["loss_percent"] <= MAX_LOSS_PERCENT
        and result["p99_gap_ms"] is not None
        and result["p99_gap_ms"] <= MAX_P99_GAP_MS
        and result["legs_with_wrong_tone"] == 0
        and result["legs_with_dropouts"] == 0
        # A bridge that falls behind sends fewer packets with contiguous sequence numbers: not loss.
        and result["min_pps_per_leg"] >= MIN_PPS_PER_LEG
        and result.get("pinned", True)
    )
    return result


class Pins:
    """The CPUs of the server's process tree and of the load generator (None: not pinned)."""

    def __init__(self, server: set[int] | None = None, load: set[int] | None = None) -> None:
        self.server, self.load = server, load

    def describe(self) -> dict[str, Any]:
        return {
            "server_cpus": sorted(self.server) if self.server else None,
            "load_cpus": sorted(self.load) if self.load else None,
        }


class Bench:
    """One variant's server and load generator, set up and torn down together."""

    def __init__(
        self, variant: str, work: Path, operators: int, record: bool, pins: Pins | None = None
    ) -> None:
        self.variant = variant
        self.source = work / "baseline" if "@" in variant else None
        self.pins = pins or Pins()
        self.var_dir = work / variant
        self.operators = operators
        self.record = record
        self.server: Server | None = None
        self.load: LoadProcess | None = None
        self.idle_rss = 0

    async def __aenter__(self) -> Bench:
        self.var_dir.mkdir(parents=True)
        server = self.server = Server(self.variant, self.var_dir, self.pins.server, self.source)
        record = ["--record-calls"] if self.record else []
        site = cli(server.env, "site", "add", "--name", "Bench shop", "--origin", ORIGIN, *record, "--json")
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
        cookies = await operator_sessions(self.var_dir, self.operators)
        cookie_file = self.var_dir / "cookies.txt"
        cookie_file.write_text("\n".join(cookies))
        await server.start()
        try:
            self.idle_rss = tree_rss(server.pid)
            self.load = LoadProcess(server, site["key"], cookie_file, self.pins.load)
            await self.load.start()
        except BaseException:
            await self.__aexit__()  # `async with` runs no __aexit__ when __aenter__ fails
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Reverse order: the load generator hangs up its calls, then the server stops.
        if self.load is not None:
            await self.load.stop()
        if self.server is not None:
            await self.server.stop()


async def bench_variant(
    variant: str, steps: list[int], window: float, work: Path, record: bool, pins: Pins
) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    async with Bench(variant, work, max(steps), record, pins) as bench:
        assert bench.server is not None and bench.load is not None
        for calls in steps:
            print(f"  {variant}: {calls} calls …", end="", flush=True)
            row = await measure_step(bench.server, bench.load, calls, window)
            if not row["sustained"] and "error" not in row:
                # The host is shared (see "other CPU"): a window spoilt by someone else's burst is
                # measured once more with the same calls still up; both windows are kept.
                print(" " + summary_line(row) + "; again …", end="", flush=True)
                retry = await measure_step(bench.server, bench.load, calls, window)
                retry["first_attempt"] = row
                row = retry
            row["rss_mb_per_call"] = (
                round((tree_rss(bench.server.pid) - bench.idle_rss) / 2**20 / row["calls"], 2)
                if row.get("calls")
                else None
            )
            rows.append(row)
            print(" " + summary_line(row), flush=True)
            if not row["sustained"]:
                break
    sustained = [r for r in rows if r["sustained"]]
    best = max(sustained, key=lambda r: r["calls"]) if sustained else None
    return {
        "engine": variant,
        "steps": rows,
        "max_sustained_calls": best["calls"] if best else 0,
        "best": best,
    }


async def bench_delay(
    variant: str, calls: int, window: float, work: Path, record: bool, pins: Pins
) -> dict[str, Any]:
    """One-way delay through the bridge at `calls` calls, without loss, then with loss on one leg."""
    rows: list[dict[str, Any]] = []
    async with Bench(variant, work, calls, record, pins) as bench:
        assert bench.server is not None and bench.load is not None
        for loss in (0.0, INJECTED_LOSS):
            print(f"  {variant}: {calls} calls, {100 * loss:.0f} % loss on the shoppers' uplink …", end="")
            row = await measure_step(bench.server, bench.load, calls, window, loss)
            rows.append(row)
            print(
                f" delay p50 {row.get('delay_ms_p50')} ms, p99 {row.get('delay_ms_p99')} ms, "
                f"max {row.get('delay_ms_max')} ms, loss seen {row.get('loss_percent')} %",
                flush=True,
            )
    return {"engine": variant, "steps": rows}


async def bench_rss(
    variant: str, churn: dict[str, Any], work: Path, record: bool, pins: Pins
) -> dict[str, Any]:
    """RSS of the server (and its workers) every `every` calls across `calls` consecutive short calls."""
    async with Bench(variant, work, churn["concurrency"], record, pins) as bench:
        assert bench.server is not None and bench.load is not None
        samples = [
            {"calls": 0, "rss_mb": round(bench.idle_rss / 2**20, 1), **memory_by_kind(bench.server.pid)}
        ]
        await bench.load.send(
            {
                "churn": churn["calls"],
                "concurrency": churn["concurrency"],
                "hold": churn["hold"],
                "every": churn["every"],
            }
        )
        print(f"  {variant}: {churn['calls']} calls, {churn['concurrency']} at a time …", flush=True)
        while True:
            message = await bench.load.line()
            if "progress" in message:
                rss = tree_rss(bench.server.pid)
                kinds = memory_by_kind(bench.server.pid)
                samples.append({"calls": message["progress"], "rss_mb": round(rss / 2**20, 1), **kinds})
                print(f"    after {message['progress']} calls: RSS {rss / 2**20:.1f} MB {kinds}", flush=True)
            elif "result" in message:
                result: dict[str, Any] = message["result"]
                break

    def spread(rss: list[float]) -> float | None:
        return round(100 * (max(rss) - min(rss)) / min(rss), 1) if rss else None

    # From the first sample (after the first `every` calls), and from the second: the first calls
    # still warm up (the mixing threads and their malloc arenas, the import of codecs).
    return {
        "engine": variant,
        "churn": {**churn, **result},
        "rss_samples": samples,
        "spread_percent": spread([s["rss_mb"] for s in samples[1:]]),
        "spread_after_warmup_percent": spread([s["rss_mb"] for s in samples[2:]]),
    }


def summary_line(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"failed: {row['error']}"
    workers = (
        f" (main {row['main_cpu_percent']}%, workers {row['worker_cpu_percent']})"
        if row["worker_cpu_percent"]
        else ""
    )
    return (
        f"server {row['server_cpu_percent']}% ({row['server_cpu_percent_per_call']}%/call){workers}, "
        f"loadgen {row['loadgen_cpu_percent']}%, other {row['other_cpu_percent']}%, "
        f"loss {row['loss_percent']}%, "
        f"p99 gap {row['p99_gap_ms']} ms, min pkt/s {row['min_pps_per_leg']}, "
        f"delay p99 {row['delay_ms_p99']} ms, "
        f"wrong tone {row['legs_with_wrong_tone']}, dropouts {row['legs_with_dropouts']} "
        f"→ {'ok' if row['sustained'] else 'NOT sustained'}"
    )


def where(report: dict[str, Any]) -> str:
    """The machine and the pinning, as a line above the figures."""
    host, pins = report["host"], report.get("pinning") or {}

    def cpus(listed: list[int] | None) -> str:
        return "CPU " + ",".join(map(str, listed)) if listed else "not pinned"

    return (
        f"{host.get('cpu_model')}, {host.get('cpus')} CPUs, {host.get('kernel')}, "
        f"Python {host.get('python')}; "
        f"server (main process and media workers): {cpus(pins.get('server_cpus'))}; "
        f"load generator: {cpus(pins.get('load_cpus'))}"
    )


def markdown(report: dict[str, Any]) -> str:
    return where(report) + "\n\n" + figures(report)


def figures(report: dict[str, Any]) -> str:
    mode = report["mode"]
    if mode == "delay":
        return markdown_delay(report)
    if mode == "rss":
        return markdown_rss(report)
    lines = [
        "| variant | calls | server CPU/call | µs/packet | server CPU (main + workers) | load gen CPU "
        "| other CPU on the host | min pkt/s per leg | loss | p99 gap | delay p50 / p99 "
        "| legs with dropouts | /healthz p99 | setup median | RSS/call "
        "| sustained |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for engine in report["engines"]:
        for r in engine["steps"]:
            if "error" in r:
                lines.append(f"| {engine['engine']} | {r.get('calls')} | error: {r['error']} ||||||||||||||")
                continue
            split = (
                f" ({r['main_cpu_percent']} + {' + '.join(map(str, r['worker_cpu_percent']))})"
                if r["worker_cpu_percent"]
                else ""
            )
            delay = (
                f"{r['delay_ms_p50']} / {r['delay_ms_p99']} ms" if r["delay_ms_p99"] is not None else "n/a"
            )
            lines.append(
                f"| {engine['engine']} | {r['calls']} | {r['server_cpu_percent_per_call']} % "
                f"| {r['us_per_packet']} | {r['server_cpu_percent']} %{split} | {r['loadgen_cpu_percent']} % "
                f"| {r['other_cpu_percent']} % | {r['min_pps_per_leg']} "
                f"| {r['loss_percent']} % | {r['p99_gap_ms']} ms | {delay} "
                f"| {r['legs_with_dropouts']} "
                f"| {r['healthz_p99_ms']} ms | {r['setup_ms_median']} ms "
                f"| {r['rss_mb_per_call']} MB "
                f"| {'yes' if r['sustained'] else 'no'} |"
            )
    lines.append("")
    for engine in report["engines"]:
        best = engine["best"]
        per_core = (
            f"; at that step {best['calls']} calls used {best['server_cpu_percent']} % of a core: "
            f"**{per_core_calls(best)}** calls per core of server CPU, {best['us_per_packet']} µs "
            "of server CPU per packet forwarded"
            if best
            else ""
        )
        if best and best.get("worker_cpu_percent_per_call") is not None:
            per_core += (
                f"; the media workers' CPU per call: {best['worker_cpu_percent_per_call']} % of a core "
                f"({len(best['worker_cpu_percent'])} workers: "
                f"{' + '.join(map(str, best['worker_cpu_percent']))} %)"
            )
        lines.append(
            f"- {engine['engine']}: largest N sustained = **{engine['max_sustained_calls']}** calls{per_core}"
        )
    if report.get("before_after"):
        lines += [
            "",
            "| variant | calls | µs/packet before | after | CPU/call before | after | after / before |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in report["before_after"]:
            lines.append(
                f"| {r['variant']} | {r['calls']} | {r['us_per_packet_before']} | {r['us_per_packet_after']} "
                f"| {r['cpu_per_call_before']} % | {r['cpu_per_call_after']} % | {r['after_over_before']} |"
            )
        lines.append("")
    for name, label in (
        ("ratio", "forwarding / transcoding, calls sustained"),
        ("cpu_ratio", "server CPU per call, transcoding / forwarding (= calls per core)"),
        ("workers_ratio", "2 workers / 1 worker, calls sustained"),
    ):
        if report.get(name) is not None:
            lines.append(f"- {label} = **{report[name]}×**")
    return "\n".join(lines)


def per_core_calls(row: dict[str, Any]) -> float:
    """Calls one core of server CPU carries at this step's cost per call (N × 100 / server CPU %)."""
    return round(row["calls"] * 100 / row["server_cpu_percent"], 1) if row["server_cpu_percent"] else 0.0


def markdown_delay(report: dict[str, Any]) -> str:
    lines = [
        "| variant | calls | loss injected on the shoppers' uplink | loss seen | delay p50 | delay p99 "
        "| delay max | p99 gap | server CPU | load gen CPU | other CPU on the host |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for engine in report["engines"]:
        for r in engine["steps"]:
            if "error" in r:
                lines.append(f"| {engine['engine']} | {r.get('calls')} | error: {r['error']} |||||||||")
                continue
            lines.append(
                f"| {engine['engine']} | {r['calls']} | {r['injected_loss_percent']} % "
                f"| {r['loss_percent']} % | {r['delay_ms_p50']} ms | {r['delay_ms_p99']} ms "
                f"| {r['delay_ms_max']} ms "
                f"| {r['p99_gap_ms']} ms | {r['server_cpu_percent']} % | {r['loadgen_cpu_percent']} % "
                f"| {r['other_cpu_percent']} % |"
            )
    return "\n".join(lines)


def markdown_rss(report: dict[str, Any]) -> str:
    lines = []
    for engine in report["engines"]:
        churn = engine["churn"]
        samples = ", ".join(f"{s['calls']}: {s['rss_mb']}" for s in engine["rss_samples"])
        lines += [
            f"- {engine['engine']}: {churn.get('calls')} calls ({churn['concurrency']} at a time, "
            f"{churn['hold']} s each, recorded: {report['recorded']}) in {churn.get('seconds')} s, "
            f"{churn.get('calls_without_audio')} without audio; PyAV {report['host']['av']}",
            f"- RSS in MB after N calls — {samples}",
            *(
                f"- {kind} (main process) in MB — "
                + ", ".join(f"{s['calls']}: {s[kind]}" for s in engine["rss_samples"])
                for kind in ("heap", "thread_arenas", "anonymous", "files")
            ),
            f"- spread from the first sample on: **{engine['spread_percent']} %**; "
            f"from the second on: **{engine['spread_after_warmup_percent']} %**",
        ]
        if "error" in churn:
            lines.append(f"- error: {churn['error']}")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import av

    variants = args.engines or MODES[args.mode]
    if args.baseline:
        variants = [name for v in variants for name in (f"{v}@{args.baseline}", v)]
    pins = Pins(args.server_cpus, args.load_cpus)
    if pins.load:
        os.sched_setaffinity(0, pins.load)  # this process probes and reads /proc: the load's side
    window = 4.0 if args.quick else 6.0
    work = Path(tempfile.mkdtemp(prefix="callserver-bench-"))
    if args.baseline:
        export_revision(args.baseline, work / "baseline")
    report: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.bridge", *sys.argv[1:]]),
        "mode": args.mode,
        "host": {**machine(), "av": av.__version__},
        "pinning": pins.describe(),
        "criteria": {
            "max_loss_percent": MAX_LOSS_PERCENT,
            "max_p99_gap_ms": MAX_P99_GAP_MS,
            "min_pps_per_leg": MIN_PPS_PER_LEG,
        },
        "recorded": not args.no_record,
        "quick": args.quick,
        "engines": [],
    }
    record = not args.no_record
    try:
        for variant in variants:
            print(f"{variant}:", flush=True)
            if args.mode == "delay":
                calls = args.steps[0] if args.steps else QUICK_DELAY_CALLS if args.quick else DELAY_CALLS
                report["engines"].append(await bench_delay(variant, calls, window, work, record, pins))
            elif args.mode == "rss":
                churn = QUICK_CHURN if args.quick else CHURN
                report["engines"].append(await bench_rss(variant, churn, work, record, pins))
            else:
                steps = args.steps or steps_for(variant, args.quick)
                report["engines"].append(await bench_variant(variant, steps, window, work, record, pins))
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
    if (
        "forwarding-1w" in found
        and "forwarding-2w" in found
        and found["forwarding-1w"]["max_sustained_calls"]
    ):
        report["workers_ratio"] = round(
            found["forwarding-2w"]["max_sustained_calls"] / found["forwarding-1w"]["max_sustained_calls"], 2
        )
    if args.baseline:
        report["before_after"] = before_after(report["engines"])
    return report


def before_after(engines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant and step: server CPU per packet of the earlier revision and of this one."""
    found = {e["engine"]: e for e in engines}
    rows = []
    for name, before in found.items():
        after = found.get(name.partition("@")[0])
        if "@" not in name or after is None or "steps" not in before:
            continue
        then = {r["calls"]: r for r in before["steps"] if "error" not in r}
        for now in after["steps"]:
            old = then.get(now.get("calls"))
            if old is None or "error" in now or not old["us_per_packet"] or not now["us_per_packet"]:
                continue
            rows.append(
                {
                    "variant": name.partition("@")[0],
                    "calls": now["calls"],
                    "us_per_packet_before": old["us_per_packet"],
                    "us_per_packet_after": now["us_per_packet"],
                    "cpu_per_call_before": old["server_cpu_percent_per_call"],
                    "cpu_per_call_after": now["server_cpu_percent_per_call"],
                    "after_over_before": round(now["us_per_packet"] / old["us_per_packet"], 2),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=list(MODES), default="bridge")
    parser.add_argument("--quick", action="store_true", help="fewer and shorter steps")
    parser.add_argument("--engines", nargs="+", choices=list(VARIANTS), help="variants (default: the mode's)")
    parser.add_argument("--steps", nargs="+", type=int, help="numbers of calls to try (all variants)")
    parser.add_argument("--no-record", action="store_true", help="the bench site does not record calls")
    parser.add_argument("--baseline", metavar="REV", help="also run each server from git revision REV")
    parser.add_argument("--server-cpus", type=parse_cpus, help="pin the server and its media workers (0-1,3)")
    parser.add_argument("--load-cpus", type=parse_cpus, help="pin the load generator (and this process)")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    table = markdown(report)
    name = f"bridge-{args.mode}-{stamp}"
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2))
    (RESULTS / f"{name}.md").write_text(f"`{report['command']}` — {report['when']}\n\n{table}\n")
    print()
    print(table)
    print(f"\nresults: {RESULTS / f'{name}.json'}")


if __name__ == "__main__":
    main()
