"""Signaling across two nodes vs within one, in the same run: chat round trips, or calls set up a second.

Starts PostgreSQL, Redis and two `callserver serve` nodes (tests/cluster.py).

Chats (default): one operator's softphone is on node A; one shopper's chat lives on A (their widget's
socket is there), another's on B. The operator sends `chat.send` to the two chats in turn; for each
message it times the `chat.ack` at the softphone (on B's chat: A → relay request → B stores it → reply
→ A) and the `chat.message` at the widget.

Calls (`--calls N`): benchmarks/load.py's Python shoppers and operators (aiortc peers sending Opus)
drive the real signaling. Each of `--lanes` sites has one operator who works for it alone, so the lanes
run side by side and never take each other's rings; a lane places its calls one after another (offer →
ringing → accept → two-way media → hang-up → ended). "one node": every socket on A. "two nodes": lane
i's operator on A or B in turn and each lane's shoppers on A and B in turn (half the calls have the
shopper and the operator on different nodes: ring, accept and answer through the relay, media on the
shopper's node). The two modes take turns, `--rounds` times each. Usage:

    .venv/bin/python -m benchmarks.cluster [--messages 200]
    .venv/bin/python -m benchmarks.cluster --calls 24 [--lanes 6] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.bridge import tree_cpu
from benchmarks.load import LoadGenerator, percentile, process_cpu
from callserver import accounts, sites
from callserver.store.models import Site
from tests.cluster import SHOP, Cluster, add_operator, operators_online, running_cluster
from tests.signing_in import PASSWORD
from tests.sockets import Sockets, Softphone, Widget

SHARED_HOST = (
    "Both nodes, their media, PostgreSQL, Redis and this load generator share the {cores} cores of one"
    " host: two nodes cannot set up more calls a second than one here, so this shows what the relay"
    " costs, not how a cluster scales (that needs a node per machine)."
)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _figures(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(values) * 1000, 2),
        "p99_ms": round(_quantile(values, 0.99) * 1000, 2),
        "max_ms": round(max(values) * 1000, 2),
    }


async def _one(anna: Softphone, chat_id: str, shopper: Widget, n: int) -> tuple[float, float]:
    client_id = f"m{n}"
    started = time.perf_counter()
    await anna.send({"type": "chat.send", "chat_id": chat_id, "text": f"message {n}", "client_id": client_id})
    await anna.receive("chat.ack", lambda f: f["client_id"] == client_id)
    acked = time.perf_counter() - started
    await shopper.receive("chat.message", lambda f: f["message"]["text"] == f"message {n}")
    delivered = time.perf_counter() - started
    anna.drain()
    shopper.drain()
    return acked, delivered


async def main(messages: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="callserver-bench-cluster-") as folder:
        async with running_cluster(Path(folder)) as cluster:
            await add_operator(cluster, "anna@cluster.test")
            async with Sockets(cluster.a) as on_a, Sockets(cluster.b) as on_b:
                anna = await on_a.softphone("anna@cluster.test", online=True)
                await operators_online(cluster.b, 1)
                chats: dict[str, tuple[str, Widget]] = {}
                for where, sockets in (("one node", on_a), ("across nodes", on_b)):
                    shopper = await sockets.shopper(f"visitor-bench-{len(chats)}")
                    await shopper.send({"type": "chat.start"})
                    assigned = await anna.receive("chat.assigned")
                    await shopper.receive("chat.history")
                    chats[where] = (str(assigned["chat"]["id"]), shopper)
                for chat_id, shopper in chats.values():  # warm up: connections, caches
                    for n in range(10):
                        await _one(anna, chat_id, shopper, -1 - n)
                acks: dict[str, list[float]] = {w: [] for w in chats}
                deliveries: dict[str, list[float]] = {w: [] for w in chats}
                for n in range(messages):  # the two in turn: the same conditions for both
                    for where, (chat_id, shopper) in chats.items():
                        acked, delivered = await _one(anna, chat_id, shopper, n)
                        acks[where].append(acked)
                        deliveries[where].append(delivered)
    return {
        "messages": messages,
        "chat.send → chat.ack at the softphone": {w: _figures(v) for w, v in acks.items()},
        "chat.send → chat.message at the widget": {w: _figures(v) for w, v in deliveries.items()},
    }


# ---- calls set up a second, through one node and through two ----


@dataclass
class Lane:
    """A site and the one operator who works for it (their softphone's session cookie)."""

    site: sites.NewSite
    cookie: str


async def _lanes(cluster: Cluster, count: int) -> list[Lane]:
    lanes: list[Lane] = []
    async with cluster.database.session() as session:
        for i in range(count):
            new = await sites.create_site(session, f"Lane {i}", [SHOP])
            site = await session.get(Site, new.id)
            assert site is not None
            email, name = f"lane{i}@cluster.test", f"lane{i}"
            account = await accounts.create_user(session, email, PASSWORD, "operator", [site], name)
            lanes.append(Lane(new, await accounts.open_session(session, account, 1)))
    return lanes


async def _one_after_another(load: LoadGenerator, calls: int) -> list[float]:
    """A lane's calls, each set up (two-way media), hung up and ended before the next: set-up seconds."""
    setups: list[float] = []
    for _ in range(calls):
        call = await load.open_call()
        assert call.setup_seconds is not None
        setups.append(call.setup_seconds)
        await load.hang_up(call)
    return setups


def _node_cpu(cluster: Cluster) -> float:
    return sum(sum(tree_cpu(node.process.pid).values()) for node in cluster.nodes)


async def _calls_through(
    cluster: Cluster, lanes: list[Lane], two_nodes: bool, calls: int, first_visitor: int
) -> dict[str, Any]:
    nodes = [cluster.a, cluster.b] if two_nodes else [cluster.a]
    shoppers = [node.url for node in nodes]
    loads: list[LoadGenerator] = []
    try:
        for i, lane in enumerate(lanes):
            load = LoadGenerator(
                nodes[i % len(nodes)].url,
                lane.site.key,
                SHOP,
                [lane.cookie],
                shoppers,
                first_visitor + 1000 * i,
            )
            loads.append(load)
            await load.start()
            await load.open_operators(1)
        for lane in lanes:  # every node that takes this lane's shoppers knows its operator is online
            for node in nodes:
                seen = await operators_online(replace(node, site=lane.site), 1)
                assert seen == 1, f"{node.name} sees {seen} operators for {lane.site.key}"
        per_lane = [calls // len(lanes) + (i < calls % len(lanes)) for i in range(len(lanes))]
        cpu, own, started = _node_cpu(cluster), process_cpu(os.getpid()), time.monotonic()
        setups = await asyncio.wait_for(
            asyncio.gather(*(_one_after_another(load, n) for load, n in zip(loads, per_lane, strict=True))),
            150,
        )
        seconds, cpu = time.monotonic() - started, _node_cpu(cluster) - cpu
        own = process_cpu(os.getpid()) - own
    finally:
        for load in loads:
            await load.close()
    return {
        "calls": calls,
        "seconds": seconds,
        "node_cpu_s": cpu,
        "loadgen_cpu_s": own,
        "setups": [s for lane in setups for s in lane],
    }


def _load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


async def calls_main(calls: int, lanes: int, rounds: int) -> dict[str, Any]:
    load_before = _load_average()
    runs: dict[str, list[dict[str, Any]]] = {"one node": [], "two nodes": []}
    # Shoppers come from addresses of their own (X-Forwarded-For, as the bridge benchmark's do).
    env = {"CALLSERVER_TRUST_FORWARDED_FOR": "true", "CALLSERVER_LOG_LEVEL": "WARNING"}
    with tempfile.TemporaryDirectory(prefix="callserver-bench-cluster-") as folder:
        async with running_cluster(Path(folder), env=env) as cluster:
            made = await _lanes(cluster, lanes)
            visitors = iter(range(0, 10**9, 1000 * lanes))  # each run's shoppers numbered afresh
            await _calls_through(cluster, made, True, len(made), next(visitors))  # warm up: both nodes
            for _ in range(rounds):  # in turn: the host's conditions alike for both
                for where in runs:
                    run = await _calls_through(cluster, made, where == "two nodes", calls, next(visitors))
                    runs[where].append(run)
    figures: dict[str, Any] = {}
    for where, done in runs.items():
        setups = sorted(s for run in done for s in run["setups"])
        total, seconds = sum(run["calls"] for run in done), sum(run["seconds"] for run in done)
        figures[where] = {
            "calls": total,
            "calls_per_second": round(total / seconds, 2),
            "calls_per_second_each_round": [round(run["calls"] / run["seconds"], 2) for run in done],
            "setup_ms_p50": round(1000 * percentile(setups, 0.5)),
            "setup_ms_p90": round(1000 * percentile(setups, 0.9)),
            "setup_ms_max": round(1000 * setups[-1]),
            "node_cpu_ms_per_call": round(1000 * sum(run["node_cpu_s"] for run in done) / total),
            "loadgen_cpu_ms_per_call": round(1000 * sum(run["loadgen_cpu_s"] for run in done) / total),
        }
    return {
        "note": SHARED_HOST.format(cores=os.cpu_count()),
        "lanes": lanes,
        "calls_per_round": calls,
        "rounds": rounds,
        "load_average_before": load_before,
        "load_average_after": _load_average(),
        **figures,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=200, help="chat messages to each chat")
    parser.add_argument("--calls", type=int, help="calls set up a second instead: calls per mode and round")
    parser.add_argument("--lanes", type=int, default=6, help="sites placing calls side by side")
    parser.add_argument("--rounds", type=int, default=4, help="turns of each mode")
    args = parser.parse_args()
    if args.calls:
        result = asyncio.run(calls_main(args.calls, args.lanes, args.rounds))
    else:
        result = asyncio.run(main(args.messages))
    print(json.dumps(result, indent=2, ensure_ascii=False))
