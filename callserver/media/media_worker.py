"""A media worker process: a `ForwardingEngine` on uvloop, driven over its stdin and stdout.

Started by `WorkerPoolEngine` as `python -m callserver.media.media_worker CONFIG_JSON`. Requests come
in on stdin and replies and events go out on stdout, framed as in `worker_protocol`; anything the
process logs goes to stderr (fd 1 is moved aside first so that no stray print corrupts the pipe).
When stdin closes — the main process is shutting down or is gone — the worker closes its calls,
finishes the recordings being mixed and exits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from callserver.heap import freeze_start_up
from callserver.media.forwarding_bridge import ForwardingCall, ForwardingEngine
from callserver.media.worker_protocol import Event, Reply, Request, encode, read_frame
from callserver.settings import IceServer

log = logging.getLogger(__name__)


class WorkerRecordings:
    """The worker's `RecordingStore`: the main process says where, the worker says when it is ready."""

    def __init__(self, worker: MediaWorker) -> None:
        self._worker = worker
        self.directories: dict[str, Path] = {}

    async def directory_for(self, call_id: str) -> Path | None:
        return self.directories.get(call_id)

    async def saved(self, call_id: str, playback: Path) -> None:
        self.directories.pop(call_id, None)
        self._worker.emit(Event("recording_ready", call_id, {"path": str(playback)}))


class MediaWorker:
    """Serves the requests of one pipe with one forwarding engine."""

    def __init__(self, config: dict[str, Any], out: asyncio.WriteTransport) -> None:
        self._out = out
        self.recordings = WorkerRecordings(self)
        self.engine = ForwardingEngine(
            [IceServer(**server) for server in config.get("ice_servers", [])],
            self.recordings,
            bool(config.get("keep_leg_recordings", False)),
        )
        self._calls: dict[str, ForwardingCall] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def emit(self, frame: Event | Reply) -> None:
        if not self._out.is_closing():
            self._out.write(encode(frame))

    async def serve(self, reader: asyncio.StreamReader) -> None:
        self.emit(Event("ready", args={"pid": os.getpid()}))
        while (frame := await read_frame(reader)) is not None:
            if not isinstance(frame, Request):
                continue
            # Each request in a task of its own: answering a leg waits for ICE gathering, and the
            # other calls' requests must not queue behind it. Tasks start in arrival order, so a
            # call's `open_call` has run before its `answer_shopper` does.
            task = asyncio.get_running_loop().create_task(self._handle(frame))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle(self, request: Request) -> None:
        try:
            result = await self._run(request)
        except Exception as e:
            log.debug("media worker: %s of call %s failed", request.op, request.call_id, exc_info=True)
            self.emit(Reply(request.id, error=type(e).__name__, message=str(e)))
        else:
            self.emit(Reply(request.id, result))

    async def _run(self, request: Request) -> Any:
        op, call_id, args = request.op, request.call_id or "", request.args
        if op == "open_call":
            directory = args.get("recording_dir")
            self._calls[call_id] = self.engine.open_call(
                call_id,
                lambda leg: self.emit(Event("leg_failed", call_id, {"leg": leg})),
                Path(directory) if directory else None,
                lambda leg: self.emit(Event("leg_back", call_id, {"leg": leg})),
            )
            return None
        if op == "ping":
            return None
        if op == "recordings_done":
            await self.engine.recordings_done()
            return None
        if op == "close" and call_id not in self._calls:
            return None  # never opened here, or closed already: closing is safe to repeat
        call = self._calls[call_id]
        if op == "answer_shopper":
            return await call.answer_shopper(args["sdp"])
        if op == "answer_operator":
            if args.get("recording_dir"):
                self.recordings.directories[call_id] = Path(args["recording_dir"])
            return await call.answer_operator(args["sdp"])
        if op == "replace_operator":
            return await call.replace_operator(args["sdp"])
        if op == "replace_leg":
            return await call.replace_leg(str(args["side"]), args["sdp"])
        if op == "connect":
            call.connect()
            return None
        if op == "hold":
            call.hold(bool(args["on"]))
            return None
        if op == "quality":
            return await call.quality()
        if op == "close":
            self._calls.pop(call_id, None)
            await call.close()
            return None
        raise ValueError(f'Unknown media worker request "{op}".')

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.engine.close()  # closes the calls left, then waits for the recordings being mixed
        self._calls.clear()


async def main(config: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    # The pipe to the main process is a private copy of fd 1; fd 1 itself becomes stderr.
    pipe_fd = os.dup(1)
    os.dup2(2, 1)
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(pipe_fd, "wb", buffering=0))
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    worker = MediaWorker(config, transport)
    freeze_start_up()
    try:
        await worker.serve(reader)
    finally:
        await worker.close()
        transport.close()


def run() -> None:
    config: dict[str, Any] = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    logging.basicConfig(
        level=config.get("log_level", "INFO"),
        format=f"%(asctime)s media-worker[{os.getpid()}] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        import uvloop
    except ImportError:  # uvloop is not built for every platform: the stock loop works, slower
        asyncio.run(main(config))
    else:
        uvloop.run(main(config))


if __name__ == "__main__":
    run()
