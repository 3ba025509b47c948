"""Helpers for the dashboard tests: records written straight to the store, a signed-in HTTP client."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
from sqlalchemy import select

from callserver import accounts
from callserver.store.models import Call, CallEvent, Chat, ChatMessage, LeftMessage, Order, Site, Visitor
from tests.stack import PASSWORD, Stack, sign_in_form

NOW = datetime(2024, 6, 15, 12, 0, tzinfo=UTC)


async def add_owner(stack: Stack, email: str, site_ids: list[int] | None = None, role: str = "owner") -> int:
    async with stack.database.session() as session:
        linked = list(await session.scalars(select(Site).where(Site.id.in_(site_ids)))) if site_ids else []
        account = await accounts.create_user(session, email, PASSWORD, role, sites=linked)
    return account.id


async def add_visitor(stack: Stack, site_id: int, **fields: Any) -> int:
    async with stack.database.session() as session:
        visitor = Visitor(site_id=site_id, token=uuid.uuid4().hex, created_at=NOW, last_seen_at=NOW, **fields)
        session.add(visitor)
        await session.flush()
        return visitor.id


async def add_call(stack: Stack, site_id: int | None = None, **fields: Any) -> str:
    """A finished call (completed, 90 s of talk) unless `fields` say otherwise."""
    created = fields.pop("created_at", NOW)
    values: dict[str, Any] = {
        "state": "ended",
        "end_reason": "completed",
        "answered_at": created + timedelta(seconds=12),
        "ended_at": created + timedelta(seconds=102),
        "context": {},
    }
    values.update(fields)
    call_id = uuid.uuid4().hex
    async with stack.database.session() as session:
        session.add(Call(id=call_id, site_id=site_id or stack.site.id, created_at=created, **values))
        session.add(CallEvent(call_id=call_id, at=created, name="call.ringing", detail={}))
    return call_id


async def add_chat(
    stack: Stack, site_id: int | None = None, messages: list[str] | None = None, **fields: Any
) -> str:
    chat_id = uuid.uuid4().hex
    created = fields.pop("created_at", NOW)
    async with stack.database.session() as session:
        session.add(
            Chat(id=chat_id, site_id=site_id or stack.site.id, state="closed", created_at=created, **fields)
        )
        await session.flush()
        for i, body in enumerate(messages or []):
            session.add(
                ChatMessage(chat_id=chat_id, at=created + timedelta(seconds=i), sender="visitor", body=body)
            )
    return chat_id


async def add_left_message(stack: Stack, site_id: int | None = None, **fields: Any) -> str:
    message_id = uuid.uuid4().hex
    values: dict[str, Any] = {"created_at": NOW, "body": "Please call me back", "status": "new"}
    values.update(fields)
    async with stack.database.session() as session:
        session.add(LeftMessage(id=message_id, site_id=site_id or stack.site.id, **values))
    return message_id


async def add_order(
    stack: Stack, order_id: str, total: str, channel: str | None, conversation_id: str | None, **fields: Any
) -> None:
    values: dict[str, Any] = {"created_at": NOW, "received_at": NOW, "currency": "EUR", "source": "api"}
    values.update(fields)
    async with stack.database.session() as session:
        session.add(
            Order(
                site_id=values.pop("site_id", stack.site.id),
                order_id=order_id,
                total=Decimal(total),
                channel=channel,
                conversation_id=conversation_id,
                attributed_by="token" if channel else None,
                **values,
            )
        )


def opus_file(path: Path, seconds: float = 2.0, hz: float = 440.0, rate: int = 48_000) -> Path:
    """A real Ogg/Opus recording: a sine tone encoded with libopus."""
    samples = np.arange(int(seconds * rate))
    tone = (0.3 * np.sin(2 * math.pi * hz * samples / rate)).astype(np.float32)
    with av.open(str(path), "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=rate)
        stream.layout = "mono"
        frame_size = 960
        for start in range(0, len(tone), frame_size):
            chunk = tone[start : start + frame_size].reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


def csrf_token(html: str) -> str:
    match = CSRF.search(html)
    assert match, "no CSRF field on the page"
    return match.group(1)


@asynccontextmanager
async def signed_in(stack: Stack, email: str) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client with the dashboard session cookie of `email` (redirects are not followed)."""
    # unsafe=True: the test server is on an IP address, whose cookies aiohttp drops by default.
    async with aiohttp.ClientSession(stack.url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        form = await sign_in_form(client, "", "dashboard", email)
        async with client.post("/dashboard/login", data=form, allow_redirects=False) as response:
            assert response.status == 302, await response.text()
        yield client
