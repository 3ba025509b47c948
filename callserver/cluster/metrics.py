"""Prometheus metrics of one app (its own registry: two apps in one process do not collide).

Calls are counted and timed where their media opens and closes (`MeteredEngine` wraps the media
engine): set-up is the offer being answered (aiortc gathers every candidate first), answer time runs
from then until the legs are bridged. Packets forwarded and lost come from each call's quality
figures when it ends — the forwarder counts per leg anyway, and reading them live from the media
workers would cost a round trip per call per scrape.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from callserver.cluster.nodes import NodeLoad, WorkerLoad
from callserver.media.engine import CallMedia, LegBack, LegFailed, MediaEngine
from callserver.media.worker_pool import WorkerPoolEngine

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class Metrics:
    """The app's metrics; `watch()` adds the live figures read at each scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.call_setup = Histogram(
            "callserver_call_setup_seconds",
            "From a shopper's offer reaching the media to its answer",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
            registry=self.registry,
        )
        self.call_answer = Histogram(
            "callserver_call_answer_seconds",
            "From a call's answer to the shopper (ringing) to an operator's leg bridged",
            buckets=(1, 2, 5, 10, 15, 20, 30, 45, 60, 120),
            registry=self.registry,
        )
        self.calls_started = Counter(
            "callserver_calls_started", "Calls whose media opened", registry=self.registry
        )
        self.packets_forwarded = Counter(
            "callserver_packets_forwarded",
            "RTP packets received and forwarded (at call end)",
            registry=self.registry,
        )
        self.packets_lost = Counter(
            "callserver_packets_lost", "RTP packets lost on the way in (at call end)", registry=self.registry
        )

    def watch(self, read: Callable[[], dict[str, Any]]) -> None:
        """Export what `read()` returns at each scrape (see `LiveFigures`)."""
        self.registry.register(LiveFigures(read))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class LiveFigures(Collector):
    """Gauges read when Prometheus scrapes: load, sockets, queues, draining, Redis."""

    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        figures = self._read()
        load: NodeLoad = figures["load"]
        yield GaugeMetricFamily(
            "callserver_calls_in_progress", "Calls ringing or answered on this node", load.calls
        )
        yield GaugeMetricFamily(
            "callserver_chats_in_progress", "Chats with an operator on this node", load.chats
        )
        sockets = GaugeMetricFamily("callserver_sockets", "Open WebSockets", labels=["kind"])
        sockets.add_metric(["operator"], load.operators)
        sockets.add_metric(["visitor"], load.visitors)
        yield sockets
        queue = GaugeMetricFamily("callserver_queue_depth", "What waits for an operator", labels=["queue"])
        queue.add_metric(["calls"], figures.get("calls_ringing", 0))
        queue.add_metric(["chats"], figures.get("chats_waiting", 0))
        yield queue
        worker_calls = GaugeMetricFamily(
            "callserver_worker_calls", "Calls per media worker", labels=["worker"]
        )
        worker_cpu = GaugeMetricFamily(
            "callserver_worker_cpu", "Media worker CPU (share of a core)", labels=["worker"]
        )
        for slot, worker in enumerate(load.workers):
            worker_calls.add_metric([str(slot)], worker.calls)
            if worker.cpu is not None:
                worker_cpu.add_metric([str(slot)], worker.cpu)
        yield worker_calls
        yield worker_cpu
        yield CounterMetricFamily(
            "callserver_calls_refused",
            "Calls refused by admission (full or draining)",
            figures.get("calls_refused", 0),
        )
        yield GaugeMetricFamily(
            "callserver_draining", "1 while this node drains", int(figures.get("draining", 0))
        )
        if "redis_up" in figures:
            yield GaugeMetricFamily("callserver_redis_up", "1 while Redis answers", int(figures["redis_up"]))


class CpuSampler:
    """CPU share of a process since the last sample, from /proc (None where there is no /proc)."""

    def __init__(self) -> None:
        self._last: dict[int | None, tuple[float, float]] = {}

    def sample(self, pid: int | None) -> float | None:
        """`pid` None: this process."""
        try:
            if pid is None:
                used = time.process_time()
            else:
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                used = (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime
        except (OSError, IndexError, ValueError):
            return None
        now = time.monotonic()
        last = self._last.get(pid)
        self._last[pid] = (now, used)
        if last is None or now <= last[0]:
            return None
        return round(max(0.0, (used - last[1]) / (now - last[0])), 3)


class MeteredCall:
    """A call's media, timed and counted; any other media method passes straight through."""

    def __init__(self, engine: MeteredEngine, call_id: str, media: CallMedia) -> None:
        self._engine = engine
        self._media = media
        self.call_id = call_id
        self._opened = time.monotonic()
        self._ringing_since: float | None = None
        self.bridged = False
        self._closed = False

    async def answer_shopper(self, offer_sdp: str) -> str:
        answer = await self._media.answer_shopper(offer_sdp)
        self._ringing_since = time.monotonic()
        self._engine.metrics.call_setup.observe(self._ringing_since - self._opened)
        return answer

    async def answer_operator(self, offer_sdp: str) -> str:
        return await self._media.answer_operator(offer_sdp)

    async def replace_operator(self, offer_sdp: str) -> str:
        return await self._media.replace_operator(offer_sdp)

    def connect(self) -> None:
        self._media.connect()
        if not self.bridged and self._ringing_since is not None:
            self.bridged = True
            self._engine.metrics.call_answer.observe(time.monotonic() - self._ringing_since)

    def hold(self, on: bool) -> None:
        self._media.hold(on)

    async def quality(self) -> dict[str, Any]:
        figures = await self._media.quality()
        if not self._closed:
            for leg in figures.values():
                if isinstance(leg, dict):
                    self._engine.metrics.packets_forwarded.inc(int(leg.get("packets_received") or 0))
                    self._engine.metrics.packets_lost.inc(max(0, int(leg.get("packets_lost") or 0)))
        return figures

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._engine.closed(self.call_id)
        await self._media.close()

    def __getattr__(self, name: str) -> Any:
        # Media methods added later (resuming a leg, …) reach the engine's own call unchanged.
        return getattr(self._media, name)


class MeteredEngine:
    """A media engine whose calls are counted per worker and timed (see the module's docstring)."""

    def __init__(self, engine: MediaEngine, metrics: Metrics) -> None:
        self._engine = engine
        self.metrics = metrics
        self._calls: dict[str, MeteredCall] = {}
        self._cpu = CpuSampler()

    @property
    def in_progress(self) -> int:
        """Calls whose media is open on this node (ringing or answered)."""
        return len(self._calls)

    def check_offer(self, sdp: str) -> None:
        self._engine.check_offer(sdp)

    @property
    def ringing(self) -> int:
        """Calls not bridged to an operator yet: the calls' queue."""
        return sum(1 for call in self._calls.values() if not call.bridged)

    def open_call(
        self,
        call_id: str,
        on_leg_failed: LegFailed,
        recording_dir: Path | None = None,
        on_leg_back: LegBack | None = None,
    ) -> MeteredCall:
        media = self._engine.open_call(call_id, on_leg_failed, recording_dir, on_leg_back)
        call = self._calls[call_id] = MeteredCall(self, call_id, media)
        self.metrics.calls_started.inc()
        return call

    def closed(self, call_id: str) -> None:
        self._calls.pop(call_id, None)

    def worker_calls(self) -> list[int]:
        """Calls on each worker that can take one now (the pool places a call on the least loaded)."""
        pool = self._engine
        if isinstance(pool, WorkerPoolEngine):
            return [len(w.calls) for w in pool.workers if w.alive and w.ready.done()]
        return [len(self._calls)]

    def workers(self) -> tuple[WorkerLoad, ...]:
        """Each media worker's calls and CPU (the main process's, when media runs there)."""
        pool = self._engine
        if isinstance(pool, WorkerPoolEngine):
            return tuple(WorkerLoad(w.pid, len(w.calls), self._cpu.sample(w.pid)) for w in pool.workers)
        return (WorkerLoad(os.getpid(), len(self._calls), self._cpu.sample(None)),)

    async def close(self) -> None:
        await self._engine.close()
