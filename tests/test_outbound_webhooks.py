"""Outbound webhooks: a real HTTP receiver on loopback hears the site's events, signed as DESIGN says.

The receiver is an aiohttp app the test starts (and stops, also when an assertion fails); the
signature is checked here with `hmac`, independently of the server's code. Retries are driven by a
short first gap (`webhook_retry_after`), never by long sleeps.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import select

from callserver.cli import main
from callserver.store.models import OutboundDelivery, WebhookSubscription
from callserver.webhooks.subscriptions import add_subscription
from tests.dashboard_support import add_owner, csrf_token, signed_in
from tests.stack import Stack, free_port, running_stack, settings_for

HEX = set("0123456789abcdef")


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """A shop's endpoint: answers `statuses` in turn (then 200) and keeps every request."""

    port: int
    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/callserver"

    async def _take(self, request: web.Request) -> web.Response:
        self.received.append(Received(request.path, dict(request.headers), await request.read()))
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200, text="ok")

    async def requests(self, count: int, within: float = 15.0) -> list[Received]:
        deadline = time.monotonic() + within
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"{len(self.received)} of {count} deliveries arrived"
            await asyncio.sleep(0.02)
        return self.received

    def of_type(self, type: str, path: str = "/hooks/callserver") -> list[Received]:
        return [r for r in self.received if r.headers["X-Callserver-Event"] == type and r.path == path]


@asynccontextmanager
async def receiving(port: int | None = None, statuses: list[int] | None = None) -> AsyncIterator[Receiver]:
    receiver = Receiver(port or free_port(), list(statuses or []))
    app = web.Application()
    app.router.add_post("/hooks/{name}", receiver._take)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", receiver.port).start()
        yield receiver
    finally:
        await runner.cleanup()


async def until(check: Callable[[], Awaitable[bool]], within: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"still waiting: {what}"
        await asyncio.sleep(0.05)


async def subscribe(
    stack: Stack, url: str, names: tuple[str, ...] = (), allow: bool = True
) -> tuple[int, str]:
    async with stack.database.session() as session:
        created = await add_subscription(session, stack.site.id, url, names, allow_private_network=allow)
    return created.id, created.secret


async def deliveries(stack: Stack) -> list[OutboundDelivery]:
    async with stack.database.session() as session:
        return list(await session.scalars(select(OutboundDelivery).order_by(OutboundDelivery.created_at)))


def assert_signed(request: Received, secret: str, site_key: str, type: str, since: int) -> dict[str, Any]:
    """The request is exactly what DESIGN documents; returns the event's `data`."""
    headers = request.headers
    assert headers["Content-Type"].startswith("application/json")
    assert headers["X-Callserver-Event"] == type
    delivery = headers["X-Callserver-Delivery"]
    assert len(delivery) == 32 and set(delivery) <= HEX
    timestamp = headers["X-Callserver-Timestamp"]
    assert timestamp.isdigit() and since <= int(timestamp) <= int(time.time())
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256).hexdigest()
    assert headers["X-Callserver-Signature"] == f"sha256={expected}"
    event = request.event
    assert set(event) == {"id", "type", "created_at", "site", "data"}
    assert event["type"] == type and event["site"] == site_key
    assert len(event["id"]) == 32 and set(event["id"]) <= HEX
    assert datetime.fromisoformat(event["created_at"]).tzinfo is not None
    data: dict[str, Any] = event["data"]
    return data


async def api_get(stack: Stack, path: str) -> Any:
    async with (
        aiohttp.ClientSession(stack.url, headers={"Authorization": f"Bearer {stack.site.secret}"}) as client,
        client.get(path) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json()


@pytest.fixture
async def quick(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(settings_for(tmp_path, ring_timeout=30, webhook_retry_after=0.3)) as running:
        yield running


async def test_each_event_reaches_the_receiver_signed_with_the_documented_body(quick: Stack) -> None:
    since = int(time.time())
    async with receiving() as receiver:
        _, secret = await subscribe(quick, receiver.url)
        calls_only = receiver.url.replace("/hooks/callserver", "/hooks/calls")
        _, calls_secret = await subscribe(quick, calls_only, ("call.ended",))

        # A call with nobody online ends at once (missed).
        shopper = await quick.sockets.shopper("visitor-hook-1")
        call_id = await shopper.call()
        assert (await shopper.receive("call.ended"))["reason"] == "missed"

        # A chat: the operator answers, the shopper closes it.
        anna = await quick.sockets.operator("anna@shop.example", "Anna", online=True)
        await shopper.send({"type": "chat.start", "context": {"page": "https://shop.example/p/1"}})
        chat_id = (await anna.receive("chat.assigned"))["chat"]["id"]
        await shopper.send({"type": "chat.send", "text": "Is it in stock?", "client_id": "c1"})
        await shopper.receive("chat.ack")
        await shopper.send({"type": "chat.close"})
        await anna.receive("chat.closed")

        # A left message.
        await shopper.send({"type": "message.leave", "message": "Call me back", "phone": "+47 555 12 345"})
        left_id = (await shopper.receive("message.left"))["id"]

        await receiver.requests(4)
        [call] = receiver.of_type("call.ended")
        data = assert_signed(call, secret, quick.site.key, "call.ended", since)
        assert data == await api_get(quick, f"/api/v1/calls/{call_id}")  # the API's own serialisation
        assert data["state"] == "ended" and data["end_reason"] == "missed"
        # The second subscription hears the same event (one event id), under its own delivery id and secret.
        [same] = receiver.of_type("call.ended", "/hooks/calls")
        assert assert_signed(same, calls_secret, quick.site.key, "call.ended", since) == data
        assert same.event["id"] == call.event["id"]
        assert same.headers["X-Callserver-Delivery"] != call.headers["X-Callserver-Delivery"]

        [chat] = receiver.of_type("chat.closed")
        data = assert_signed(chat, secret, quick.site.key, "chat.closed", since)
        assert data["id"] == chat_id and data["state"] == "closed" and data["closed_at"]
        assert data["operator"]["name"] == "Anna" and data["visitor"]["token"] == "visitor-hook-1"
        assert [(m["sender"], m["text"]) for m in data["messages"]] == [("visitor", "Is it in stock?")]

        [left] = receiver.of_type("message.left")
        data = assert_signed(left, secret, quick.site.key, "message.left", since)
        assert data["id"] == left_id and data["text"] == "Call me back" and data["phone"] == "+47 555 12 345"
        assert data["visitor_token"] == "visitor-hook-1"

        # The subscription to call.ended alone heard nothing else.
        assert [r.headers["X-Callserver-Event"] for r in receiver.received if r.path == "/hooks/calls"] == [
            "call.ended"
        ]

        # order.attributed carries the order exactly as GET /api/v1/orders/{id} shows it.
        async with (
            aiohttp.ClientSession(
                quick.url, headers={"Authorization": f"Bearer {quick.site.secret}"}
            ) as client,
            client.post(
                "/api/v1/orders",
                json={
                    "order_id": "W-1",
                    "total": "42.50",
                    "currency": "EUR",
                    "visitor_token": "visitor-hook-1",
                },
            ) as response,
        ):
            assert response.status == 201, await response.text()
        await until(lambda: _has(receiver, "order.attributed"), what="order.attributed")
        order = receiver.of_type("order.attributed")[-1]
        data = assert_signed(order, secret, quick.site.key, "order.attributed", since)
        assert data == await api_get(quick, "/api/v1/orders/W-1")
        assert data["attribution"]["conversation_id"] in (chat_id, left_id)

    async def all_delivered() -> bool:  # the outcome is written once the receiver has answered
        return {d.state for d in await deliveries(quick)} == {"delivered"}

    await until(all_delivered, what="every delivery marked delivered")
    stored = await deliveries(quick)
    assert all(d.attempts == 1 and d.status_code == 200 and d.response_ms is not None for d in stored)


async def _has(receiver: Receiver, type: str) -> bool:
    return bool(receiver.of_type(type))


async def test_a_receiver_that_fails_first_gets_the_same_delivery_again(quick: Stack) -> None:
    since = int(time.time())
    async with receiving(statuses=[500]) as receiver:
        _, secret = await subscribe(quick, receiver.url, ("message.left",))
        shopper = await quick.sockets.shopper("visitor-hook-2")
        await shopper.send({"type": "message.leave", "message": "Hello?", "email": "ola@example.com"})
        await shopper.receive("message.left")
        first, again = await receiver.requests(2)
    assert first.headers["X-Callserver-Delivery"] == again.headers["X-Callserver-Delivery"]
    assert first.body == again.body  # the same event, byte for byte
    for request in (first, again):
        assert_signed(request, secret, quick.site.key, "message.left", since)

    async def delivered() -> bool:  # the outcome is written once the receiver has answered
        return [d.state for d in await deliveries(quick)] == ["delivered"]

    await until(delivered, what="the delivery marked delivered")
    [stored] = await deliveries(quick)
    assert stored.id == again.headers["X-Callserver-Delivery"]
    assert (stored.state, stored.attempts, stored.status_code, stored.error) == ("delivered", 2, 200, None)

    # The owner's delivery log says so.
    await add_owner(quick, "owner@shop.example")
    async with signed_in(quick, "owner@shop.example") as owner, owner.get("/dashboard/webhooks") as page:
        html = await page.text()
    assert 'data-testid="dash-webhooks"' in html
    assert (
        f'data-delivery-id="{stored.id}" data-state="delivered" data-type="message.left" data-attempts="2"'
        in html
    )


async def test_a_receiver_down_while_the_server_restarts_still_gets_the_event(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, webhook_retry_after=0.3)
    port = free_port()  # nothing listens there yet
    async with running_stack(settings) as first:
        _, secret = await subscribe(first, f"http://127.0.0.1:{port}/hooks/callserver")
        shopper = await first.sockets.shopper("visitor-hook-3")
        await shopper.send({"type": "message.leave", "message": "Anyone?", "phone": "+47 555 00 000"})
        left_id = (await shopper.receive("message.left"))["id"]

        async def tried() -> bool:
            return any(d.attempts >= 1 and d.state == "retrying" for d in await deliveries(first))

        await until(tried, what="a failed first try")
        [queued] = await deliveries(first)
        assert queued.error  # connection refused, written down
    async with receiving(port) as receiver, running_stack(settings) as second:
        [request] = await receiver.requests(1)
        assert request.headers["X-Callserver-Delivery"] == queued.id
        assert assert_signed(request, secret, first.site.key, "message.left", 0)["id"] == left_id

        async def delivered() -> bool:
            return [d.state for d in await deliveries(second)] == ["delivered"]

        await until(delivered, what="the delivery marked delivered")


def _cli(config: Path, *args: str) -> list[str]:
    return ["--config", str(config), *args]


def test_the_cli_refuses_private_addresses_unless_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "callserver.toml"
    config.write_text(f'var_dir = "{tmp_path / "var"}"\n')
    assert (
        main(["site", "add", *_cli(config, "--name", "Shop", "--origin", "https://shop.example", "--json")])
        == 0
    )
    key = json.loads(capsys.readouterr().out)["key"]
    for url in (
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",  # a name that resolves to loopback
        "http://10.1.2.3/hook",
        "http://192.168.1.20/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:9/hook",
        "http://[::ffff:127.0.0.1]/hook",
    ):
        assert main(["webhook", "add", *_cli(config, "--site", key, "--url", url, "--json")]) == 2, url
        assert "private" in capsys.readouterr().err
    for url in ("ftp://shop.example/x", "http://user:pw@93.184.215.14/", "not a url"):
        assert main(["webhook", "add", *_cli(config, "--site", key, "--url", url)]) == 2
        assert "callserver:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(
            [
                "webhook",
                "add",
                *_cli(config, "--site", key, "--url", "https://93.184.215.14/", "--event", "nope"),
            ]
        )
    capsys.readouterr()

    allowed = [
        "--url",
        "http://127.0.0.1:9/hook",
        "--allow-private-network",
        "--event",
        "call.ended",
        "--json",
    ]
    assert main(["webhook", "add", *_cli(config, "--site", key, *allowed)]) == 0
    created = json.loads(capsys.readouterr().out)
    assert set(created) == {"id", "secret"} and isinstance(created["id"], int) and len(created["secret"]) > 30
    # A public literal address needs no allowance (and no lookup); no --event: every event.
    assert (
        main(["webhook", "add", *_cli(config, "--site", key, "--url", "https://93.184.215.14/h", "--json")])
        == 0
    )
    public = json.loads(capsys.readouterr().out)
    assert public["id"] != created["id"] and public["secret"] != created["secret"]


async def test_a_name_that_turns_private_is_refused_at_delivery(quick: Stack) -> None:
    """DNS rebinding: the check is made again when sending, and only checked answers are connected to."""
    async with receiving() as receiver:
        async with quick.database.session() as session:
            # As if `localhost` had answered a public address when the webhook was added.
            for url in (receiver.url.replace("127.0.0.1", "localhost"), receiver.url):
                session.add(
                    WebhookSubscription(
                        site_id=quick.site.id,
                        url=url,
                        events=[],
                        secret="whsec_test",
                        allow_private_network=False,
                        enabled=True,
                        created_at=datetime.now().astimezone(),
                    )
                )
        shopper = await quick.sockets.shopper("visitor-hook-4")
        await shopper.send({"type": "message.leave", "message": "Hi", "phone": "+47 555 11 111"})
        await shopper.receive("message.left")

        async def both_refused() -> bool:
            stored = await deliveries(quick)
            return len(stored) == 2 and all(d.attempts >= 1 for d in stored)

        await until(both_refused, what="two refused tries")
        assert all("private" in (d.error or "") and d.state == "retrying" for d in await deliveries(quick))
        assert receiver.received == []


async def test_the_owner_manages_webhooks_on_the_dashboard(quick: Stack) -> None:
    since = int(time.time())
    await add_owner(quick, "owner@shop.example")
    async with receiving() as receiver, signed_in(quick, "owner@shop.example") as owner:
        async with owner.get("/dashboard/webhooks") as page:
            html = await page.text()
        token = csrf_token(html)
        assert 'href="/dashboard/webhooks" aria-current="page"' in html
        form = {"csrf": token, "site_id": str(quick.site.id), "url": receiver.url, "event": "message.left"}

        # Without its CSRF token a form changes nothing; a private URL is refused unless allowed.
        async with owner.post("/dashboard/webhooks", data={**form, "csrf": "0" * 64}) as refused:
            assert refused.status == 403
        async with owner.post("/dashboard/webhooks", data=form) as refused:
            assert refused.status == 400 and "private" in await refused.text()
        async with quick.database.session() as session:
            assert list(await session.scalars(select(WebhookSubscription))) == []

        async with owner.post("/dashboard/webhooks", data={**form, "allow_private_network": "on"}) as added:
            assert added.status == 200
            html = await added.text()
        async with quick.database.session() as session:
            [row] = list(await session.scalars(select(WebhookSubscription)))
        assert (row.url, row.events, row.allow_private_network, row.enabled) == (
            receiver.url,
            ["message.left"],
            True,
            True,
        )
        assert f'data-testid="dash-webhook-secret" data-webhook-id="{row.id}"' in html and row.secret in html
        async with owner.get("/dashboard/webhooks") as page:
            assert row.secret not in await page.text()  # shown once

        async with owner.post(f"/dashboard/webhooks/{row.id}/secret", data={"csrf": token}) as rotated:
            html = await rotated.text()
        async with quick.database.session() as session:
            fresh = await session.get(WebhookSubscription, row.id)
            assert fresh is not None and fresh.secret != row.secret and fresh.secret in html

        # "Send test event": a `ping`, signed with the new secret, to this webhook alone.
        async with owner.post(
            f"/dashboard/webhooks/{row.id}/test", data={"csrf": token}, allow_redirects=False
        ) as sent:
            assert sent.status == 303
        [ping] = await receiver.requests(1)
        data = assert_signed(ping, fresh.secret, quick.site.key, "ping", since)
        assert data["subscription_id"] == row.id

        async def logged() -> bool:
            async with owner.get("/dashboard/webhooks") as page:
                return 'data-type="ping"' in (text := await page.text()) and 'data-state="delivered"' in text

        await until(logged, what="the ping in the delivery log")

        async with owner.post(
            f"/dashboard/webhooks/{row.id}/enabled",
            data={"csrf": token, "enabled": "0"},
            allow_redirects=False,
        ) as disabled:
            assert disabled.status == 303
        async with owner.get("/dashboard/webhooks") as page:
            assert f'data-webhook-id="{row.id}" data-enabled="false"' in await page.text()
        async with owner.post(
            f"/dashboard/webhooks/{row.id}/delete", data={"csrf": token}, allow_redirects=False
        ):
            pass
        async with quick.database.session() as session:
            assert list(await session.scalars(select(WebhookSubscription))) == []
            assert list(await session.scalars(select(OutboundDelivery))) == []
        async with owner.post("/dashboard/webhooks/999/test", data={"csrf": token}) as missing:
            assert missing.status == 404
