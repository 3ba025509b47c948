"""The pub/sub reader that the relay and the broadcast share, on a real redis-server.

Frames are handed on in the order they came; a frame that is not a JSON object, or one whose handling
fails, is passed over without losing the frames behind it; after Redis restarts the reader subscribes
again by itself; `close()` is safe to call twice.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from callserver.cluster.broadcast import Broadcast
from callserver.cluster.listener import ChannelListener
from callserver.cluster.redis import connect
from tests.servers import RedisServer, redis_server

CHANNEL = "callserver:test:listener"


@pytest.fixture
async def redis() -> AsyncIterator[tuple[RedisServer, Redis]]:
    with redis_server() as server:
        client = connect(server.url)
        try:
            yield server, client
        finally:
            await client.aclose()


async def subscribers(client: Redis) -> int:
    counts = await client.pubsub_numsub(CHANNEL)
    return int(counts[0][1]) if counts else 0


async def test_frames_come_in_order_and_a_bad_or_failing_one_does_not_stop_the_rest(
    redis: tuple[RedisServer, Redis],
) -> None:
    _, client = redis
    heard: list[dict[str, Any]] = []
    last = asyncio.Event()

    async def arrived(frame: dict[str, Any]) -> None:
        if frame.get("fail"):
            raise RuntimeError("this frame's handling fails")
        heard.append(frame)
        if frame.get("n") == 4:
            last.set()

    listener = ChannelListener(client, CHANNEL, arrived)
    await listener.start()
    try:
        for data in [
            '{"n": 1}',
            "not json",
            '{"n": 2}',
            "[3]",
            '{"fail": true}',
            '"text"',
            '{"n": 3}',
            '{"n": 4}',
        ]:
            await client.publish(CHANNEL, data)
        await asyncio.wait_for(last.wait(), 10)
        assert heard == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}]
    finally:
        await listener.close()
        await listener.close()
    assert await subscribers(client) == 0


async def test_the_reader_subscribes_again_after_redis_restarts(redis: tuple[RedisServer, Redis]) -> None:
    server, client = redis
    heard: asyncio.Queue[str] = asyncio.Queue()

    async def said(sender: str, body: dict[str, object]) -> None:
        await heard.put(f"{sender}:{body['said']}")

    broadcast = Broadcast(client, CHANNEL, "node-a", said)
    await broadcast.start()
    try:
        assert await broadcast.publish({"said": "before"})
        assert await asyncio.wait_for(heard.get(), 10) == "node-a:before"

        server.stop()
        assert not await broadcast.publish({"said": "while away"})  # refused, logged, nothing raised
        server.start()  # the same port, an empty Redis with no subscriber yet
        deadline = time.monotonic() + 20
        while await subscribers(client) == 0:
            assert time.monotonic() < deadline, "the reader did not subscribe again"
            await asyncio.sleep(0.1)

        # A frame of another kind sent straight to the channel is passed over; ours behind it is heard.
        await client.publish(CHANNEL, json.dumps({"from": "node-b"}))
        assert await broadcast.publish({"said": "after"})
        assert await asyncio.wait_for(heard.get(), 10) == "node-a:after"
        assert heard.empty()
    finally:
        await broadcast.close()
        await broadcast.close()
