"""The signal relay: frames for a call or an operator travel to the node that holds them, and back.

Each node listens on its own Redis pub/sub channel (`callserver:relay:NODE`). A frame is either a
one-way *tell* (a softphone on that node should hear `call.incoming`, `call.ended`, …) or a *request*
(the operator's `call.accept` for a call whose media lives there) that the node answers with a *reply*
on the asker's channel. `PUBLISH` says how many subscribers got a frame: none means the node is not
listening (restarting, or gone), so a frame is retried a bounded number of times and then given up with
`NodeUnreachable` — the asker gets a clear error instead of waiting for ever. (LiveKit's signal relay
over Redis in `pkg/routing/redisrouter.go` is the model; pub/sub is at-most-once, which is why requests
carry a timeout.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from redis.asyncio import Redis

from callserver.background import BackgroundTasks
from callserver.cluster.listener import ChannelListener
from callserver.errors import CallserverError

log = logging.getLogger(__name__)

PREFIX = "callserver:relay:"

Body = dict[str, Any]
Handler = Callable[[str, Body], Awaitable[Body | None]]
"""Takes (the sending node, the frame's body); a request's handler returns the reply's body."""


class NodeUnreachable(CallserverError):
    code = "node_unreachable"


class RemoteError(CallserverError):
    """A domain error raised on the other node, with its code kept (`call_not_ringing`, …)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def channel_of(node: str) -> str:
    return PREFIX + node


class Relay:
    """This node's end of the relay; `close()` is safe to call twice."""

    def __init__(
        self,
        redis: Redis,
        node: str,
        request_timeout: float = 10.0,
        retries: int = 3,
        retry_after: float = 0.2,
    ) -> None:
        self._redis = redis
        self.node = node
        self._request_timeout = request_timeout
        self._retries = retries
        self._retry_after = retry_after
        self._handlers: dict[str, Handler] = {}
        self._waiting: dict[str, asyncio.Future[Body]] = {}
        self._background = BackgroundTasks("relay")
        self._listener = ChannelListener(redis, channel_of(node), self._arrived, request_timeout)
        self._closed = False

    def on(self, kind: str, handler: Handler) -> Callable[[], None]:
        """Handle frames of `kind`; returns the function that unregisters the handler."""
        self._handlers[kind] = handler

        def unregister() -> None:
            if self._handlers.get(kind) is handler:
                del self._handlers[kind]

        return unregister

    async def start(self) -> None:
        """Subscribe to this node's channel (frames sent before this are not seen)."""
        await self._listener.start()

    async def tell(self, node: str, kind: str, body: Mapping[str, object]) -> None:
        """A one-way frame to `node`; raises NodeUnreachable when nobody listens there after the retries."""
        await self._publish(node, {"kind": kind, "from": self.node, "body": dict(body)})

    async def request(self, node: str, kind: str, body: Mapping[str, object]) -> Body:
        """A frame to `node` whose handler's reply comes back; its domain error is raised here."""
        request_id = uuid.uuid4().hex
        reply: asyncio.Future[Body] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = reply
        try:
            await self._publish(
                node, {"kind": kind, "from": self.node, "request": request_id, "body": dict(body)}
            )
            try:
                answer = await asyncio.wait_for(reply, self._request_timeout)
            except TimeoutError as e:
                raise NodeUnreachable(f"Node {node} did not answer {kind!r} in time.") from e
        finally:
            self._waiting.pop(request_id, None)
        if "error" in answer:
            raise RemoteError(str(answer["error"]["code"]), str(answer["error"]["message"]))
        result: Body = answer.get("result") or {}
        return result

    async def _publish(self, node: str, frame: Body) -> None:
        data = json.dumps(frame)
        for attempt in range(self._retries + 1):
            if await self._redis.publish(channel_of(node), data):
                return
            if attempt < self._retries:
                await asyncio.sleep(self._retry_after * (attempt + 1))
        raise NodeUnreachable(f"Node {node} is not listening.")

    async def listening(self, node: str) -> bool:
        """Whether `node` listens on its channel now (a killed process leaves no subscriber)."""
        counts = await self._redis.pubsub_numsub(channel_of(node))
        return bool(counts and counts[0][1])

    async def _arrived(self, frame: Body) -> None:
        kind = frame.get("kind")
        if kind == "reply":
            waiting = self._waiting.get(str(frame.get("request")))
            if waiting is not None and not waiting.done():
                waiting.set_result(frame)
            return
        handler = self._handlers.get(str(kind))
        if handler is None:
            log.warning("relay: no handler for %r frames", kind)
            return
        sender, body = str(frame.get("from")), frame.get("body") or {}
        if "request" not in frame:
            # Tells are handled in the order they came: a softphone hears `incoming` before `withdrawn`.
            try:
                await handler(sender, body)
            except Exception:
                log.exception("relay: the %r frame from %s failed", kind, sender)
            return
        # A request may take a while (answering an offer): it must not hold up the frames behind it.
        self._background.spawn(self._answer(handler, sender, str(frame["request"]), body))

    async def _answer(self, handler: Handler, sender: str, request_id: str, body: Body) -> None:
        reply: Body = {"kind": "reply", "from": self.node, "request": request_id}
        try:
            reply["result"] = await handler(sender, body) or {}
        except CallserverError as e:
            reply["error"] = {"code": e.code, "message": e.message}
        except Exception as e:
            log.exception("relay: a request from %s failed", sender)
            reply["error"] = {"code": "internal_error", "message": f"{type(e).__name__}: {e}"}
        with contextlib.suppress(NodeUnreachable):
            await self._publish(sender, reply)

    async def close(self) -> None:
        """Stop listening; requests still waiting fail with NodeUnreachable. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await self._listener.close()
        await self._background.close()
        for waiting in self._waiting.values():
            if not waiting.done():
                waiting.set_exception(NodeUnreachable("This node's relay closed."))
