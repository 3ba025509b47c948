"""Calls spread over media worker processes, one per core, behind the same `MediaEngine` interface.

Signaling stays in the main process; each call's two legs live in one worker (`media_worker`), which
runs the forwarding engine on uvloop, so the audio of a call never crosses a process boundary. A new
call goes to the worker with the fewest calls. The main process speaks to each worker over its stdin
and stdout (`worker_protocol`). A worker that dies ends only its own calls — each is reported as a
failed leg (`media_worker`), which the switchboard records as `failed` — and is replaced at once.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import sys
from pathlib import Path
from typing import Any

from callserver.errors import BadOffer
from callserver.media.engine import LegBack, LegFailed, RecordingStore
from callserver.media.forwarding_bridge import check_opus_offer
from callserver.media.worker_protocol import Event, Reply, Request, encode, read_frame
from callserver.settings import IceServer

log = logging.getLogger(__name__)
READY_TIMEOUT = 60.0  # seconds for a new worker to import aiortc and encode the tones
STOP_TIMEOUT = 15.0  # seconds for a worker to finish mixing recordings once told to stop
RESTART_DELAY = 1.0  # seconds before replacing a worker that died before it was ready
# A worker whose event loop does not answer a ping for this long is hung (or stopped): its calls
# are silent anyway, so it is killed, which ends its calls as `failed` and replaces it.
PING_EVERY = 2.0
PING_TIMEOUT = 6.0


class WorkerLost(Exception):
    """The media worker that held a call is gone."""


class MediaWorkerError(Exception):
    """A media worker could not do what it was asked."""


class Worker:
    """One media worker process and the calls placed on it."""

    def __init__(self, pool: WorkerPoolEngine, slot: int) -> None:
        self.pool = pool
        self.slot = slot
        self.process: asyncio.subprocess.Process | None = None
        self.calls: dict[str, WorkerCall] = {}
        self.ready = asyncio.get_running_loop().create_future()
        self.alive = True
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._reader: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    async def start(self) -> None:
        config = {
            "ice_servers": [server.model_dump() for server in self.pool.ice_servers],
            "keep_leg_recordings": self.pool.keep_leg_recordings,
            "log_level": logging.getLevelName(logging.getLogger().getEffectiveLevel()),
        }
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "callserver.media.media_worker",
            json.dumps(config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 20,
        )
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        try:
            while (frame := await read_frame(self.process.stdout)) is not None:
                if isinstance(frame, Reply):
                    future = self._pending.pop(frame.id, None)
                    if future is not None and not future.done():
                        if frame.error is None:
                            future.set_result(frame.result)
                        elif frame.error == "BadOffer":
                            future.set_exception(BadOffer(frame.message))
                        else:
                            future.set_exception(MediaWorkerError(f"{frame.error}: {frame.message}"))
                elif isinstance(frame, Event):
                    self._event(frame)
        except Exception:
            log.exception("media worker %s: unreadable pipe", self.pid)
        finally:
            await self._gone()

    def _event(self, event: Event) -> None:
        if event.name == "ready":
            if not self.ready.done():
                self.ready.set_result(None)
                self._watchdog = asyncio.get_running_loop().create_task(self._watch())
        elif event.name == "leg_failed" and event.call_id in self.calls:
            self.calls[event.call_id].leg_failed(str(event.args.get("leg")))
        elif event.name == "leg_back" and event.call_id in self.calls:
            self.calls[event.call_id].leg_back(str(event.args.get("leg")))
        elif event.name == "recording_ready" and event.call_id is not None:
            self.pool.recording_ready(event.call_id, Path(event.args["path"]))

    async def _watch(self) -> None:
        """Ping the worker; kill it when it stops answering (a hung worker never exits by itself)."""
        while self.alive:
            await asyncio.sleep(PING_EVERY)
            try:
                await asyncio.wait_for(self.request("ping"), PING_TIMEOUT)
            except WorkerLost:
                return
            except TimeoutError:
                log.error("media worker %s stopped answering: killing it", self.pid)
                if self.process is not None and self.process.returncode is None:
                    self.process.kill()
                return

    async def _gone(self) -> None:
        """The pipe closed: the process exited (or is about to). Fail what it held."""
        self.alive = False
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
        if not self.ready.done():
            self.ready.set_exception(WorkerLost("The media worker exited before it was ready."))
            self.ready.exception()  # retrieved: `start()` or `_replace()` reports it, not the loop
        for future in self._pending.values():
            if not future.done():
                future.set_exception(WorkerLost("The media worker of this call is gone."))
        self._pending.clear()
        returncode = await self.process.wait() if self.process is not None else None
        calls = list(self.calls.values())
        self.calls.clear()
        if not self.pool.closing:
            log.error("media worker %s exited (%s) holding %d call(s)", self.pid, returncode, len(calls))
        for call in calls:
            call.worker_died()
        self.pool.worker_gone(self)

    def _send(self, op: str, call_id: str | None, args: dict[str, object]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self.alive or self.process is None or self.process.stdin is None:
            future.set_exception(WorkerLost("The media worker of this call is gone."))
            return future
        request = Request(next(self._ids), op, call_id, args)
        self._pending[request.id] = future
        self.process.stdin.write(encode(request))
        return future

    async def request(self, op: str, call_id: str | None = None, **args: object) -> Any:
        """Ask the worker and wait for its reply."""
        return await self._send(op, call_id, args)

    def notify(self, op: str, call_id: str, **args: object) -> None:
        """Ask the worker without waiting (`connect`, `hold`); a failure is only logged."""

        def done(future: asyncio.Future[object]) -> None:
            if not future.cancelled() and future.exception() is not None:
                log.warning(
                    "media worker %s: %s of call %s failed: %s", self.pid, op, call_id, future.exception()
                )

        self._send(op, call_id, args).add_done_callback(done)

    async def stop(self) -> None:
        """Close the pipe (the worker ends its calls and exits), wait, and kill it if it hangs."""
        process = self.process
        if process is None:
            return
        if self._watchdog is not None:
            self._watchdog.cancel()  # a worker mixing its last recordings is busy, not hung
        if process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            log.warning("media worker %s did not stop: killing it", process.pid)
            process.kill()
            await process.wait()
        if self._reader is not None:
            await self._reader


class WorkerCall:
    """The `CallMedia` of one call whose legs live in a media worker."""

    def __init__(
        self,
        pool: WorkerPoolEngine,
        worker: Worker,
        call_id: str,
        on_failed: LegFailed,
        recording_dir: Path | None,
        on_back: LegBack | None = None,
    ) -> None:
        self.call_id = call_id
        self.worker = worker
        self._pool = pool
        self._on_failed = on_failed
        self._on_back = on_back
        self._recording_dir = recording_dir
        self._closed = False

    async def answer_shopper(self, offer_sdp: str) -> str:
        return str(await self.worker.request("answer_shopper", self.call_id, sdp=offer_sdp))

    async def answer_operator(self, offer_sdp: str) -> str:
        # The main process owns the database: it says where the recording goes.
        directory = self._recording_dir
        if directory is None and self._pool.recordings is not None:
            directory = await self._pool.recordings.directory_for(self.call_id)
        answer = await self.worker.request(
            "answer_operator",
            self.call_id,
            sdp=offer_sdp,
            recording_dir=str(directory) if directory else None,
        )
        return str(answer)

    async def replace_operator(self, offer_sdp: str) -> str:
        return str(await self.worker.request("replace_operator", self.call_id, sdp=offer_sdp))

    async def replace_leg(self, side: str, offer_sdp: str) -> str:
        return str(await self.worker.request("replace_leg", self.call_id, side=side, sdp=offer_sdp))

    def connect(self) -> None:
        self.worker.notify("connect", self.call_id)

    def hold(self, on: bool) -> None:
        self.worker.notify("hold", self.call_id, on=on)

    async def quality(self) -> dict[str, Any]:
        try:
            quality: dict[str, Any] = await self.worker.request("quality", self.call_id)
        except WorkerLost:
            return {}
        return quality

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.worker.calls.pop(self.call_id, None)
        try:
            await self.worker.request("close", self.call_id)
        except WorkerLost:
            pass  # its legs went with the worker
        except MediaWorkerError as e:
            log.warning("media worker %s could not close call %s: %s", self.worker.pid, self.call_id, e)

    def leg_failed(self, leg: str) -> None:
        if not self._closed:
            self._on_failed(leg)

    def leg_back(self, leg: str) -> None:
        if not self._closed and self._on_back is not None:
            self._on_back(leg)

    def worker_died(self) -> None:
        if not self._closed:
            self._on_failed("media_worker")


class WorkerPoolEngine:
    """MediaEngine that places each call on the least-loaded of `workers` media worker processes."""

    def __init__(
        self,
        workers: int,
        ice_servers: list[IceServer],
        recordings: RecordingStore | None = None,
        keep_leg_recordings: bool = False,
    ) -> None:
        self.size = workers
        self.ice_servers = ice_servers
        self.recordings = recordings
        self.keep_leg_recordings = keep_leg_recordings
        self.workers: list[Worker] = []
        self.closing = False
        self._saving: set[asyncio.Task[None]] = set()
        self._starting: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Start the workers and wait until each is ready to take calls."""
        self.workers = [Worker(self, slot) for slot in range(self.size)]
        for worker in self.workers:
            await worker.start()
        await asyncio.wait_for(asyncio.gather(*(w.ready for w in self.workers)), READY_TIMEOUT)
        log.info("media workers ready: %s", ", ".join(str(w.pid) for w in self.workers))

    def check_offer(self, sdp: str) -> None:
        check_opus_offer(sdp)

    def open_call(
        self,
        call_id: str,
        on_leg_failed: LegFailed,
        recording_dir: Path | None = None,
        on_leg_back: LegBack | None = None,
    ) -> WorkerCall:
        # Least loaded first; a worker still starting is only used when no other is alive.
        worker = min(self.workers, key=lambda w: (not (w.alive and w.ready.done()), len(w.calls)))
        call = WorkerCall(self, worker, call_id, on_leg_failed, recording_dir, on_leg_back)
        worker.calls[call_id] = call
        worker.notify("open_call", call_id, recording_dir=str(recording_dir) if recording_dir else None)
        return call

    def worker_of(self, call_id: str) -> Worker | None:
        return next((w for w in self.workers if call_id in w.calls), None)

    def worker_gone(self, worker: Worker) -> None:
        """Replace a worker that exited (unless the engine is closing)."""
        if self.closing or worker not in self.workers:
            return
        replacement = Worker(self, worker.slot)
        self.workers[self.workers.index(worker)] = replacement
        delay = 0.0 if worker.ready.done() and worker.ready.exception() is None else RESTART_DELAY
        task = asyncio.get_running_loop().create_task(self._replace(replacement, delay))
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def _replace(self, worker: Worker, delay: float) -> None:
        await asyncio.sleep(delay)  # a worker that cannot even start must not be restarted in a tight loop
        try:
            await worker.start()
            await asyncio.wait_for(asyncio.shield(worker.ready), READY_TIMEOUT)
        except Exception:
            log.exception("a replacement media worker failed to start")
            return
        log.warning("media worker %s replaces the one that exited", worker.pid)

    def recording_ready(self, call_id: str, playback: Path) -> None:
        if self.recordings is None:
            return
        task = asyncio.get_running_loop().create_task(self.recordings.saved(call_id, playback))
        self._saving.add(task)
        task.add_done_callback(self._saving.discard)

    async def recordings_done(self) -> None:
        """Wait for the playback files being mixed in the workers, and for their records."""
        await asyncio.gather(
            *(w.request("recordings_done") for w in self.workers if w.alive), return_exceptions=True
        )
        while self._saving:
            await asyncio.gather(*list(self._saving), return_exceptions=True)

    async def close(self) -> None:
        """End every call, stop the workers (they finish mixing recordings); safe to call twice."""
        if self.closing:
            return
        self.closing = True
        for task in list(self._starting):
            task.cancel()
        await asyncio.gather(*self._starting, return_exceptions=True)
        for worker in reversed(self.workers):
            for call in list(worker.calls.values()):
                await call.close()
        for worker in reversed(self.workers):
            await worker.stop()
        while self._saving:
            await asyncio.gather(*list(self._saving), return_exceptions=True)
