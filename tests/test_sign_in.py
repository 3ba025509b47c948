"""Signing in and out under attack: throttled guessing, no stalled sockets, login CSRF, revoked sessions."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from callserver import accounts
from callserver.web.auth import COOKIE, LOGIN_BURST, SECURE_SIGN_IN_COOKIE, SIGN_IN_COOKIE
from tests.dashboard_support import csrf_token, signed_in
from tests.stack import PASSWORD, Stack, running_stack, settings_for, sign_in_form

AREAS = ["operator", "dashboard"]


@pytest.fixture
async def proxied(tmp_path: Path) -> AsyncIterator[Stack]:
    """A server behind a trusted reverse proxy: the client's address is in X-Forwarded-For."""
    async with running_stack(settings_for(tmp_path, trust_forwarded_for=True)) as running:
        yield running


@pytest.fixture
def password_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every real argon2 check of a password, as it happens (the list holds the passwords tried)."""
    checked: list[str] = []
    real = accounts.check_password

    def counting(password_hash: str, password: str) -> bool:
        checked.append(password)  # list.append is atomic: safe from the worker threads
        return real(password_hash, password)

    monkeypatch.setattr(accounts, "check_password", counting)
    return checked


def _client() -> aiohttp.ClientSession:
    # unsafe=True: the test server is on an IP address, whose cookies aiohttp drops by default.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def _post_sign_in(
    client: aiohttp.ClientSession, url: str, area: str, form: dict[str, str], address: str | None = None
) -> int:
    headers = {"X-Forwarded-For": f"{address}, 10.0.0.1"} if address else {}
    async with client.post(f"{url}/{area}/login", data=form, headers=headers, allow_redirects=False) as r:
        await r.read()
        return r.status


# ------------------------------------------------------------------------------------- throttling


async def test_forty_parallel_guesses_reach_the_password_check_at_most_burst_times(
    proxied: Stack, password_checks: list[str]
) -> None:
    await proxied.add_user("anna@shop.example")
    await proxied.add_user("ben@shop.example")
    async with _client() as attacker:
        form = await sign_in_form(attacker, proxied.url, "operator", "anna@shop.example", "guess-0000")
        statuses = await asyncio.gather(
            *(
                _post_sign_in(
                    attacker, proxied.url, "operator", {**form, "password": f"guess-{i:04}"}, "203.0.113.9"
                )
                for i in range(40)
            )
        )
    guesses = [p for p in password_checks if p.startswith("guess-")]
    assert len(guesses) <= LOGIN_BURST, f"{len(guesses)} guesses reached the password check"
    assert statuses.count(401) == len(guesses) and statuses.count(429) == 40 - len(guesses)

    # Ben, behind the same proxy but on another machine, is not locked out by the attacker …
    async with _client() as ben:
        form = await sign_in_form(ben, proxied.url, "operator", "ben@shop.example")
        assert await _post_sign_in(ben, proxied.url, "operator", form, "198.51.100.20") == 302
    # … while the attacker's address is, even for another account.
    async with _client() as attacker:
        form = await sign_in_form(attacker, proxied.url, "dashboard", "ben@shop.example", "guess-x")
        assert await _post_sign_in(attacker, proxied.url, "dashboard", form, "203.0.113.9") == 429
    assert "guess-x" not in password_checks


async def test_guessing_one_account_from_many_addresses_is_limited_too(
    proxied: Stack, password_checks: list[str]
) -> None:
    await proxied.add_user("anna@shop.example")
    async with _client() as attacker:
        form = await sign_in_form(attacker, proxied.url, "operator", "anna@shop.example")
        statuses = await asyncio.gather(
            *(
                _post_sign_in(
                    attacker, proxied.url, "operator", {**form, "password": f"guess-{i}"}, f"203.0.113.{i}"
                )
                for i in range(1, 31)
            )
        )
    assert len(password_checks) <= LOGIN_BURST
    assert statuses.count(429) >= 30 - LOGIN_BURST


async def test_people_who_sign_in_often_are_not_slowed_down(stack: Stack, password_checks: list[str]) -> None:
    await stack.add_user("anna@shop.example")
    async with _client() as anna:
        form = await sign_in_form(anna, stack.url, "operator", "anna@shop.example")
        for _ in range(LOGIN_BURST + 3):
            assert await _post_sign_in(anna, stack.url, "operator", form) == 302
        # A typo after all those sign-ins is still just a typo.
        assert await _post_sign_in(anna, stack.url, "operator", {**form, "password": "typo"}) == 401
    assert len(password_checks) == LOGIN_BURST + 4


# ------------------------------------------------------------------------- argon2 off the event loop


class HeldHasher:
    """Wraps the real argon2 hasher; each hash or verify waits in its thread until the test lets go.

    Run on the event loop instead, the wait blocks the loop itself, nothing else can answer, and
    the hasher gives up after `patience` seconds and says so.
    """

    def __init__(self, real: Any, patience: float = 15.0) -> None:
        self.real = real
        self.patience = patience
        self.entered = threading.Event()
        self.release = threading.Event()
        self.gave_up = False

    def _hold(self) -> None:
        self.entered.set()
        if not self.release.wait(self.patience):
            self.gave_up = True

    def verify(self, password_hash: str, password: str) -> bool:
        self._hold()
        return bool(self.real.verify(password_hash, password))

    def hash(self, password: str) -> str:
        self._hold()
        return str(self.real.hash(password))


async def _answers_while_hashing(stack: Stack, hasher: HeldHasher, work: asyncio.Task[Any]) -> None:
    try:
        assert await asyncio.to_thread(hasher.entered.wait, hasher.patience + 5)
        async with aiohttp.ClientSession() as client, client.get(f"{stack.url}/healthz") as response:
            assert response.status == 200
        # The request was answered while the hash was still being worked on.
        hasher.release.set()
        await work
        assert not hasher.gave_up, "hashing blocked the event loop: nothing was answered meanwhile"
    finally:
        hasher.release.set()
        if not work.done():
            work.cancel()


async def test_the_server_answers_while_a_password_is_checked(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    await stack.add_user("anna@shop.example")
    hasher = HeldHasher(accounts._hasher)
    monkeypatch.setattr(accounts, "_hasher", hasher)
    async with _client() as anna:
        form = await sign_in_form(anna, stack.url, "operator", "anna@shop.example")
        sign_in = asyncio.create_task(_post_sign_in(anna, stack.url, "operator", form))
        await _answers_while_hashing(stack, hasher, sign_in)
        assert sign_in.result() == 302


async def test_the_server_answers_while_a_password_is_hashed(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    hasher = HeldHasher(accounts._hasher)
    monkeypatch.setattr(accounts, "_hasher", hasher)
    adding = asyncio.create_task(stack.add_user("new@shop.example"))
    await _answers_while_hashing(stack, hasher, adding)
    assert adding.result().email == "new@shop.example"


# ------------------------------------------------------------------------------------- login CSRF


@pytest.mark.parametrize("area", AREAS)
async def test_a_sign_in_without_the_forms_token_is_refused(stack: Stack, area: str) -> None:
    await stack.add_user("anna@shop.example", role="owner" if area == "dashboard" else "operator")
    credentials = {"email": "anna@shop.example", "password": PASSWORD}
    async with _client() as browser, _client() as other_browser:
        # A page elsewhere posting the credentials straight away: no cookie, no token.
        async with browser.post(f"{stack.url}/{area}/login", data=credentials, allow_redirects=False) as r:
            assert r.status == 403
            page = await r.text()
            assert "sent from another site" in page and COOKIE not in r.cookies
        assert 'name="csrf" value="' in page  # the page offers a fresh form to sign in for real

        form = await sign_in_form(browser, stack.url, area, "anna@shop.example")
        assert await _post_sign_in(browser, stack.url, area, {**form, "csrf": "0" * 64}) == 403
        assert await _post_sign_in(browser, stack.url, area, {**form, "csrf": ""}) == 403
        # Another browser's token does not go with this browser's cookie.
        theirs = await sign_in_form(other_browser, stack.url, area, "anna@shop.example")
        assert await _post_sign_in(browser, stack.url, area, {**form, "csrf": theirs["csrf"]}) == 403
        async with browser.get(f"{stack.url}/{area}/", allow_redirects=False) as r:
            assert r.status == 302 and "/login" in r.headers["Location"], "nobody is signed in"

        assert await _post_sign_in(browser, stack.url, area, form) == 302


async def test_cookies_are_secure_when_the_server_is_reached_over_https(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, public_url="https://calls.shop.example")
    async with running_stack(settings) as stack, aiohttp.ClientSession() as client:
        await stack.add_user("anna@shop.example")
        async with client.get(f"{stack.url}/operator/login") as r:
            assert r.headers["Strict-Transport-Security"].startswith("max-age=")
            pre_session = r.cookies[SECURE_SIGN_IN_COOKIE]
            assert SIGN_IN_COOKIE not in r.cookies
            assert pre_session["secure"] and pre_session["httponly"] and pre_session["path"] == "/"
            token = csrf_token(await r.text())
        form = {"email": "anna@shop.example", "password": PASSWORD, "csrf": token}
        async with client.post(
            f"{stack.url}/operator/login",
            data=form,
            headers={"Cookie": f"{SECURE_SIGN_IN_COOKIE}={pre_session.value}"},
            allow_redirects=False,
        ) as r:
            assert r.status == 302
            session = r.cookies[COOKIE]
            assert session["secure"] and session["httponly"] and session["samesite"] == "Lax"


# ------------------------------------------------------------------------------- revoked sessions


@asynccontextmanager
async def _softphone(stack: Stack, email: str) -> AsyncIterator[tuple[aiohttp.ClientSession, Any]]:
    async with _client() as client:
        form = await sign_in_form(client, stack.url, "operator", email)
        assert await _post_sign_in(client, stack.url, "operator", form) == 302
        ws = await client.ws_connect(f"{stack.url}/ws/operator")
        try:
            assert (await ws.receive_json(timeout=10))["type"] == "hello"
            yield client, ws
        finally:
            await ws.close()


async def _closed_with(ws: Any) -> tuple[int | None, str]:
    """Read until the server closes the socket; its close code and reason."""
    while True:
        message = await ws.receive(timeout=10)
        if message.type is aiohttp.WSMsgType.CLOSE:  # data: the close code, extra: the reason
            return int(message.data), str(message.extra or "")
        if message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            return ws.close_code, ""


async def _still_open(ws: Any) -> None:
    await ws.send_json({"type": "ping"})
    while True:
        frame = await ws.receive(timeout=10)
        assert frame.type is aiohttp.WSMsgType.TEXT, f"socket closed: {frame}"
        if frame.json()["type"] == "pong":
            return


async def _reconnect_with(stack: Stack, cookie: str) -> tuple[int | None, str]:
    async with aiohttp.ClientSession() as client:
        ws = await client.ws_connect(f"{stack.url}/ws/operator", headers={"Cookie": f"{COOKIE}={cookie}"})
        try:
            return await _closed_with(ws)
        finally:
            await ws.close()


def _session_cookie(client: aiohttp.ClientSession) -> str:
    return next(c.value for c in client.cookie_jar if c.key == COOKIE)


async def test_signing_out_closes_the_softphones_socket(stack: Stack) -> None:
    await stack.add_user("anna@shop.example")
    await stack.add_user("ben@shop.example")
    async with (
        _softphone(stack, "anna@shop.example") as (anna, anna_ws),
        _softphone(stack, "anna@shop.example") as (_, anna_laptop_ws),
        _softphone(stack, "ben@shop.example") as (_, ben_ws),
    ):
        cookie = _session_cookie(anna)
        async with anna.get(f"{stack.url}/operator/config") as r:
            token = (await r.json())["csrf"]
        async with anna.post(
            f"{stack.url}/operator/logout", data={"csrf": token}, allow_redirects=False
        ) as r:
            assert r.status == 302
        assert await _closed_with(anna_ws) == (4401, "session_revoked")
        assert await _reconnect_with(stack, cookie) == (4401, "login_required")
        # Anna's other session (her laptop) and Ben go on.
        await _still_open(anna_laptop_ws)
        await _still_open(ben_ws)


@pytest.mark.parametrize("action", ["disabled", "password"])
async def test_an_owner_cutting_an_operator_off_closes_their_softphone(stack: Stack, action: str) -> None:
    await stack.add_user("boss@shop.example", role="owner")
    anna = await stack.add_user("anna@shop.example")
    await stack.add_user("ben@shop.example")
    async with (
        _softphone(stack, "anna@shop.example") as (anna_client, anna_ws),
        _softphone(stack, "ben@shop.example") as (_, ben_ws),
        signed_in(stack, "boss@shop.example") as owner,
    ):
        cookie = _session_cookie(anna_client)
        async with owner.get("/dashboard/operators") as r:
            token = csrf_token(await r.text())
        form = (
            {"csrf": token, "disabled": "1"}
            if action == "disabled"
            else {"csrf": token, "password": "new pass 123"}
        )
        async with owner.post(
            f"/dashboard/operators/{anna.id}/{action}", data=form, allow_redirects=False
        ) as r:
            assert r.status == 303, await r.text()
        assert await _closed_with(anna_ws) == (4401, "session_revoked")
        assert await _reconnect_with(stack, cookie) == (4401, "login_required")
        await _still_open(ben_ws)
        async with _client() as again:
            form = await sign_in_form(again, stack.url, "operator", "anna@shop.example")
            assert await _post_sign_in(again, stack.url, "operator", form) == 401
