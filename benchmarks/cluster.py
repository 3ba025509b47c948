"""Signaling round trip across two nodes vs within one, in the same run.

Starts PostgreSQL, Redis and two `callserver serve` nodes (tests/cluster.py). One operator's softphone
is on node A; one shopper's chat lives on A (their widget's socket is there), another's on B. The
operator sends `chat.send` to the two chats in turn; for each message it times the `chat.ack` at the
softphone (on B's chat: A → relay request → B stores it → reply → A) and the `chat.message` at the
widget. Usage:

    .venv/bin/python -m benchmarks.cluster [--messages 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from tests.cluster import add_operator, operators_online, running_cluster
from tests.sockets import Sockets, Softphone, Widget


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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=200)
    print(json.dumps(asyncio.run(main(parser.parse_args().messages)), indent=2, ensure_ascii=False))
