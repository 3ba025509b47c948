"""How fast the owner dashboard answers over a big SQLite store.

Fills a SQLite database with a year of traffic (1,000,000 calls by default, plus chats, left
messages and orders) using plain `executemany` in a few transactions, then starts the real app and
times whole HTTP requests (aiohttp client, signed in as an owner) for: the first log page, a
filtered log page, a deep page (keyset cursor half-way through the year), the overview and the
Sources page (last and first touch; the default 30 days), and the API's revenue report (30 days, by
channel, operator and campaign). Every conversation carries a touch (source, medium, campaign, some a
gclid; a third direct). Prints a table and a JSON line.

    .venv/bin/python -m benchmarks.dashboard [--calls 1000000] [--requests 100] [--rebuild] [--compare]

`--compare` measures twice in one run, side by side: first with every day counted live (the kept
past days of reports/kept_days.py switched off: how the pages were counted before), then as served.

The database is kept in var/bench/ and reused when it already holds the requested number of calls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from aiohttp import web
from sqlalchemy import select, text

from callserver import accounts
from callserver.app import create_app
from callserver.dashboard.queries import Cursor
from callserver.reports import kept_days
from callserver.settings import Settings
from callserver.store.database import Database
from callserver.store.models import User
from callserver.web.keys import DATABASE
from tests.stack import sign_in_form

OWNER = "owner@bench.example"
PASSWORD = "benchmark password"
OPERATORS = 8
STAMP = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores datetimes in SQLite
END_REASONS = ["completed"] * 70 + ["missed"] * 15 + ["abandoned"] * 10 + ["declined"] * 5
# Where the visitors came from: (source, medium, campaigns) and how often, a third of them direct.
TOUCHES = [
    (("(direct)", "(none)", 1), 34),
    (("google", "cpc", 24), 25),
    (("google", "organic", 1), 15),
    (("newsletter", "email", 12), 12),
    (("facebook", "paid_social", 8), 8),
    (("blog.example", "referral", 1), 6),
]
LABELS = ("source", "medium", "campaign", "first_source", "first_medium", "first_campaign", "gclid")


def _stamp(value: datetime) -> str:
    return value.strftime(STAMP)


def _touch(rng: random.Random) -> tuple[str | None, ...]:
    """A conversation's labels (`LABELS`): last touch, first touch, and a gclid for Google's ads."""
    picked: list[tuple[str, str, str]] = []
    for _ in range(2):
        [(source, medium, campaigns)] = rng.choices([t for t, _ in TOUCHES], [w for _, w in TOUCHES])
        campaign = f"{source}-{rng.randrange(campaigns)}" if campaigns > 1 else "(not set)"
        picked.append((source, medium, campaign))
    last, first = picked
    gclid = f"Cj0KCQ{rng.getrandbits(96):024x}" if last[:2] == ("google", "cpc") else None
    return (*last, *first, gclid)


def _calls(
    count: int, start: datetime, span: timedelta, operators: list[int], visitors: int
) -> Iterator[tuple]:  # type: ignore[type-arg]
    rng = random.Random(1)
    step = span / count
    for i in range(count):
        created = start + step * i
        reason = END_REASONS[i % len(END_REASONS)]
        answered = reason == "completed"
        answered_at = created + timedelta(seconds=rng.randint(3, 40)) if answered else None
        ended_at = (answered_at or created) + timedelta(seconds=rng.randint(20, 600) if answered else 30)
        yield (
            uuid.UUID(int=rng.getrandbits(128)).hex,
            1,
            rng.randint(1, visitors),
            "ended",
            reason,
            rng.choice(operators) if answered else None,
            _stamp(created),
            _stamp(answered_at) if answered_at else None,
            _stamp(ended_at),
            f"https://shop.example/products/item-{rng.randint(1, 5000)}",
            "Product",
            "https://search.example/",
            '{"utm": {"source": "newsletter"}, "cart_value": 120.0}',
            None,
            None,
            *_touch(rng),
        )


def build(path: Path, calls: int, now: datetime) -> None:
    """Create the schema with the real migrations, then bulk-load the rows with sqlite3."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)

    async def schema() -> None:
        database = Database(f"sqlite+aiosqlite:///{path}")
        await database.upgrade()
        async with database.session() as session:
            from callserver import sites

            await sites.create_site(session, "Bench shop", ["https://shop.example"])
            await accounts.create_user(session, OWNER, PASSWORD, "owner")
            for i in range(OPERATORS):
                await accounts.create_user(
                    session, f"op{i}@bench.example", PASSWORD, "operator", name=f"Op {i}"
                )
        await database.close()

    asyncio.run(schema())
    started = time.perf_counter()
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    operators = [row[0] for row in db.execute("SELECT id FROM users WHERE role = 'operator'")]
    year = timedelta(days=365)
    start = now - year
    visitors = max(1, calls // 4)
    with db:
        db.executemany(
            "INSERT INTO visitors (id, site_id, token, created_at, last_seen_at) VALUES (?, 1, ?, ?, ?)",
            ((i, uuid.uuid4().hex, _stamp(start), _stamp(start)) for i in range(1, visitors + 1)),
        )
    batch = 200_000
    rows = _calls(calls, start, year, operators, visitors)
    sold: list[tuple[str, str]] = []  # (call id, created_at) of the calls that get an order
    while True:
        chunk = [r for _, r in zip(range(batch), rows, strict=False)]
        if not chunk:
            break
        sold += [(r[0], r[6]) for r in chunk[:: max(1, calls // 30_000)]]
        with db:
            db.executemany(
                "INSERT INTO calls (id, site_id, visitor_id, state, end_reason, operator_id, created_at,"
                " answered_at, ended_at, page, title, referrer, context, quality, recording_path,"
                f" {', '.join(LABELS)}) VALUES ({', '.join('?' * (15 + len(LABELS)))})",
                chunk,
            )
        print(f"  {db.total_changes:,} rows written", file=sys.stderr)
    rng = random.Random(2)
    chats = calls // 10
    with db:
        db.executemany(
            f"INSERT INTO chats (id, site_id, visitor_id, state, operator_id, created_at, context,"
            f" {', '.join(LABELS)}) VALUES (?, 1, ?, 'closed', ?, ?, '{{}}', {', '.join('?' * len(LABELS))})",
            (
                (
                    uuid.uuid4().hex,
                    rng.randint(1, visitors),
                    rng.choice(operators),
                    _stamp(start + year * (i / chats)),
                    *_touch(rng),
                )
                for i in range(chats)
            ),
        )
        messages = calls // 50
        db.executemany(
            "INSERT INTO left_messages (id, site_id, created_at, name, email, body, status,"
            f" {', '.join(LABELS)}) VALUES (?, 1, ?, 'Shopper', 'shopper@mail.example',"
            " 'Please call me back', 'new',"
            f" {', '.join('?' * len(LABELS))})",
            (
                (uuid.uuid4().hex, _stamp(start + year * (i / messages)), *_touch(rng))
                for i in range(messages)
            ),
        )
        # Orders: one per sampled call (attributed), and as many again unattributed.
        orders: list[tuple[str | None, ...]] = []
        for n, (call_id, created) in enumerate(sold):
            orders.append(
                (f"A{n}", f"{rng.uniform(10, 900):.2f}", created, created, "call", call_id, "token")
            )
            orders.append((f"U{n}", f"{rng.uniform(10, 900):.2f}", created, created, None, None, None))
        db.executemany(
            "INSERT INTO orders (site_id, order_id, total, currency, created_at, received_at, source,"
            " channel, conversation_id, attributed_by) VALUES (1, ?, ?, 'EUR', ?, ?, 'api', ?, ?, ?)",
            orders,
        )
    db.close()
    print(f"  filled in {time.perf_counter() - started:.0f} s", file=sys.stderr)


def _count(path: Path) -> int:
    if not path.exists():
        return -1
    db = sqlite3.connect(path)
    try:
        # A store filled before the calls carried touches is filled again (no such column: -1 too).
        if db.execute("SELECT 1 FROM calls WHERE source IS NOT NULL LIMIT 1").fetchone() is None:
            return -1
        return int(db.execute("SELECT count(*) FROM calls").fetchone()[0])
    except sqlite3.Error:
        return -1
    finally:
        db.close()


async def measure(path: Path, requests: int) -> dict[str, dict[str, float]]:
    settings = Settings(var_dir=path.parent, database_url=f"sqlite+aiosqlite:///{path}")
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with app[DATABASE].session() as session:
        operator = await session.scalar(select(User.id).where(User.role == "operator"))
        # A cursor half-way through the calls: the page a deep "Older »" walk would reach.
        middle = (
            await session.execute(
                text(
                    "SELECT created_at, id FROM calls ORDER BY created_at"
                    " LIMIT 1 OFFSET (SELECT count(*) / 2 FROM calls)"
                )
            )
        ).one()
    deep = Cursor(datetime.strptime(middle[0], STAMP).replace(tzinfo=UTC), middle[1]).encode()
    pages = {
        "log (first page)": "/dashboard/calls",
        "log filtered": f"/dashboard/calls?channel=call&end_reason=completed&operator={operator}",
        "log deep page": f"/dashboard/calls?after={deep}",
        "overview (30 days)": "/dashboard/",
        "sources (30 days)": "/dashboard/sources",
        "sources, first touch": "/dashboard/sources?touch=first",
    }
    # The API's revenue report (bearer: the site secret) over the same 30 days as the overview.
    async with app[DATABASE].session() as session:
        secret = str(await session.scalar(text("SELECT secret FROM sites WHERE id = 1")))
    month = f"from={(datetime.now(UTC) - timedelta(days=29)).date()}&to={datetime.now(UTC).date()}"
    pages["revenue report, channel"] = f"/api/v1/reports/revenue?{month}&by=channel"
    pages["revenue report, operator"] = f"/api/v1/reports/revenue?{month}&by=operator"
    pages["revenue report, campaign"] = f"/api/v1/reports/revenue?{month}&by=campaign"
    api = {"Authorization": f"Bearer {secret}"}
    results: dict[str, dict[str, float]] = {}
    jar = aiohttp.CookieJar(unsafe=True)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", cookie_jar=jar) as client:
            form = await sign_in_form(client, "", "dashboard", OWNER, PASSWORD)
            async with client.post("/dashboard/login", data=form) as response:
                assert response.status == 200, response.status
            # The first visits count the past days and keep them (dashboard/daily.py, reports/kept_days.py).
            async with app[DATABASE].session() as session:
                await session.execute(text("DELETE FROM dashboard_call_days"))
                await session.execute(text("DELETE FROM report_days"))
            cold: dict[str, float] = {}
            for name in ("overview (30 days)", "sources (30 days)"):
                started = time.perf_counter()
                async with client.get(pages[name]) as response:
                    await response.read()
                cold[name] = round((time.perf_counter() - started) * 1000, 1)
            for name, url in pages.items():
                headers = api if url.startswith("/api/") else None
                for _ in range(3):  # warm the caches
                    async with client.get(url, headers=headers) as response:
                        assert response.status == 200, (url, response.status)
                        body = await response.text()
                assert "data-testid" in body or '"rows"' in body
                timings = []
                for _ in range(requests):
                    started = time.perf_counter()
                    async with client.get(url, headers=headers) as response:
                        await response.read()
                    timings.append((time.perf_counter() - started) * 1000)
                cuts = statistics.quantiles(timings, n=100)
                results[name] = {"p50_ms": round(cuts[49], 1), "p95_ms": round(cuts[94], 1), "n": requests}
    finally:
        await runner.cleanup()
    for name, cold_ms in cold.items():
        results[f"{name.split(' ')[0]}, first visit"] = {"p50_ms": cold_ms, "p95_ms": cold_ms, "n": 1}
    return results


def _table(results: dict[str, dict[str, float]], baseline: dict[str, dict[str, float]] | None) -> None:
    header = f"{'page':<26}{'p50 ms':>10}{'p95 ms':>10}"
    if baseline:
        header += f"{'live p50':>10}{'live p95':>10}"
    print(header)
    for name, figures in results.items():
        line = f"{name:<26}{figures['p50_ms']:>10.1f}{figures['p95_ms']:>10.1f}"
        if baseline and name in baseline:
            line += f"{baseline[name]['p50_ms']:>10.1f}{baseline[name]['p95_ms']:>10.1f}"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--db", type=Path, default=Path("var/bench/dashboard.db"))
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--compare", action="store_true", help="also measure with every day counted live")
    args = parser.parse_args()
    if args.rebuild or _count(args.db) != args.calls:
        print(f"filling {args.db} with {args.calls:,} calls …", file=sys.stderr)
        build(args.db, args.calls, datetime.now(UTC))
    baseline = None
    if args.compare:
        kept = kept_days.LIVE_DAYS
        kept_days.LIVE_DAYS = 100_000  # every day of the period live: nothing kept is read
        try:
            baseline = asyncio.run(measure(args.db, args.requests))
        finally:
            kept_days.LIVE_DAYS = kept
    results = asyncio.run(measure(args.db, args.requests))
    print(f"\n({args.calls:,} calls, SQLite, {args.requests} requests)")
    _table(results, baseline)
    print(json.dumps({"calls": args.calls, "database": "sqlite", "pages": results, "live": baseline}))


if __name__ == "__main__":
    main()
