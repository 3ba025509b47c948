"""Sign-in and sign-out for operators and owners: a server-side session in an HttpOnly cookie.

Signing in is throttled per e-mail address and per client address, and an attempt is counted
*before* the password is checked: counting only failures, after the check, let forty requests sent
at once all reach the (slow, argon2) check. A right password gives its attempt back, so people
who sign in often are not slowed down.

A session that ends (sign-out, a disabled account, a new password) also closes the sockets that
were opened with it: an open softphone must not keep getting calls and chats.

With several nodes (`redis_url`) the attempts are counted in Redis for all nodes together
(`callserver/cluster/limits.py`), and an ended session's sockets close on every node
(`callserver/cluster/sessions.py`); alone, a node counts and closes its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable, Sequence
from typing import Protocol
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler

from callserver import accounts
from callserver.accounts import Account
from callserver.cluster.limits import Attempts
from callserver.cluster.sessions import session_digest
from callserver.limits import RateLimiter
from callserver.settings import Settings
from callserver.web import csrf
from callserver.web.clients import client_address
from callserver.web.keys import DATABASE, SETTINGS, TEMPLATES

log = logging.getLogger(__name__)

COOKIE = "callserver_session"
# The sign-in form's pre-session cookie; `__Host-` (HTTPS only) keeps sibling subdomains from
# planting one of their own.
SIGN_IN_COOKIE = "callserver_sign_in"
SECURE_SIGN_IN_COOKIE = "__Host-callserver_sign_in"
# Ten sign-in attempts at once per e-mail address and per client address, then one every 30 s:
# enough for people who mistype, too slow to guess passwords.
LOGIN_ATTEMPTS = web.AppKey("login_attempts", Attempts)
LOGIN_RATE = 1 / 30
LOGIN_BURST = 10
# The softphone treats this close code as "sign in again" (it is the socket's login_required).
CLOSE_SESSION_REVOKED = 4401


class SignedInSockets:
    """The open sockets of each login session, so that ending a session can close them."""

    def __init__(self) -> None:
        self._sockets: dict[web.WebSocketResponse, tuple[str, int]] = {}

    def add(self, session_cookie: str, account_id: int, ws: web.WebSocketResponse) -> Callable[[], None]:
        """Remember `ws` as opened with this session; returns the function that forgets it."""
        self._sockets[ws] = (session_cookie, account_id)

        def forget() -> None:
            self._sockets.pop(ws, None)

        return forget

    def count(self, account_id: int) -> int:
        return sum(1 for _, owner in self._sockets.values() if owner == account_id)

    async def end_session(self, session_cookie: str) -> int:
        """Close the sockets of one login session (its owner signed out); returns how many."""
        return await self._close(
            [ws for ws, (cookie, _) in self._sockets.items() if cookie == session_cookie]
        )

    async def end_digest(self, digest: str) -> int:
        """Close the sockets of the session another node named by its digest; returns how many."""
        return await self._close(
            [ws for ws, (cookie, _) in self._sockets.items() if session_digest(cookie) == digest]
        )

    async def end_account(self, account_id: int) -> int:
        """Close every socket of an account (disabled, or signed out everywhere); returns how many."""
        return await self._close([ws for ws, (_, owner) in self._sockets.items() if owner == account_id])

    async def _close(self, sockets: list[web.WebSocketResponse]) -> int:
        for ws in sockets:
            self._sockets.pop(ws, None)
        await asyncio.gather(
            *(ws.close(code=CLOSE_SESSION_REVOKED, message=b"session_revoked") for ws in sockets),
            return_exceptions=True,
        )
        return len(sockets)


SIGNED_IN = web.AppKey("signed_in_sockets", SignedInSockets)


class SessionEnds(Protocol):
    """Closes the sockets of ended sessions: this node's (`SignedInSockets`), or every node's
    (`callserver/cluster/sessions.py`)."""

    async def end_session(self, session_cookie: str) -> int: ...
    async def end_account(self, account_id: int) -> int: ...


SESSION_ENDS = web.AppKey("session_ends", SessionEnds)


class LocalAttempts:
    """Sign-in attempts counted by this node alone."""

    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter

    async def take(self, keys: Sequence[str]) -> bool:
        return _take_attempt(self._limiter, list(keys))

    async def give_back(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._limiter.give_back(key)


def secure_cookies(settings: Settings) -> bool:
    """Whether cookies get `Secure`: when asked to, and always when the server is reached over HTTPS."""
    return settings.secure_cookies or settings.public_url.lower().startswith("https://")


async def current_account(request: web.Request) -> Account | None:
    """The logged-in account of this request, or None."""
    token = request.cookies.get(COOKIE)
    if not token or len(token) > 100:
        return None
    async with request.app[DATABASE].session() as session:
        return await accounts.account_for_session(session, token)


def watch_socket(request: web.Request, account: Account, ws: web.WebSocketResponse) -> Callable[[], None]:
    """Close `ws` when the session it was opened with ends; returns the function that stops watching."""
    return request.app[SIGNED_IN].add(request.cookies.get(COOKIE, ""), account.id, ws)


async def end_sessions_of(app: web.Application, account_id: int) -> None:
    """After an account's sessions were deleted (disabled, new password): close its open sockets."""
    closed = await app[SESSION_ENDS].end_account(account_id)
    if closed:
        log.info("closed %d socket(s) of user %d: their sessions ended", closed, account_id)


def _safe_next(value: str | None, default: str) -> str:
    # Only paths on this server: an open redirect would let phishing pages borrow our login.
    if not value or not value.startswith("/") or value.startswith("//") or urlsplit(value).netloc:
        return default
    return value


def _sign_in_cookie_name(settings: Settings) -> str:
    return SECURE_SIGN_IN_COOKIE if secure_cookies(settings) else SIGN_IN_COOKIE


def _render_login(
    request: web.Request, area: str, error: str | None = None, status: int = 200, next_path: str | None = None
) -> web.Response:
    settings = request.app[SETTINGS]
    name = _sign_in_cookie_name(settings)
    secret = request.cookies.get(name)
    fresh = not csrf.is_sign_in_secret(secret)
    if fresh:
        secret = csrf.new_sign_in_secret()
    template = request.app[TEMPLATES].get_template("login.html")
    html = template.render(
        area=area,
        title="Operator sign-in" if area == "operator" else "Owner sign-in",
        action=f"/{area}/login",
        next=_safe_next(next_path or request.query.get("next"), f"/{area}/"),
        error=error,
        csrf_field=csrf.FIELD,
        csrf_token=csrf.sign_in_token_for(secret or ""),
    )
    response = web.Response(
        text=html, content_type="text/html", status=status, headers={"Cache-Control": "no-store"}
    )
    if fresh:
        response.set_cookie(
            name, secret or "", httponly=True, samesite="Lax", secure=secure_cookies(settings), path="/"
        )
    return response


def login_page(area: str) -> Handler:
    async def show(request: web.Request) -> web.StreamResponse:
        if await current_account(request):
            raise web.HTTPFound(f"/{area}/")
        return _render_login(request, area)

    return show


def _take_attempt(attempts: RateLimiter, keys: list[Hashable]) -> bool:
    """Count one attempt against every key, or none when any is used up.

    Synchronous on purpose: between the check and the take nothing else runs on the event loop,
    so requests arriving at once cannot all pass the check before any of them is counted.
    """
    if not all(attempts.allows(key) for key in keys):
        return False
    for key in keys:
        attempts.take(key)
    return True


def login_submit(area: str) -> Handler:
    async def submit(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        settings = request.app[SETTINGS]
        next_path = str(form.get("next", ""))
        sign_in_secret = request.cookies.get(_sign_in_cookie_name(settings))
        if not csrf.is_valid_sign_in(sign_in_secret, str(form.get(csrf.FIELD, ""))):
            log.info("sign-in form without a valid CSRF token refused (%s area)", area)
            return _render_login(
                request,
                area,
                "This sign-in form has expired or was sent from another site. Please sign in again.",
                status=403,
                next_path=next_path,
            )
        email, password = str(form.get("email", "")), str(form.get("password", ""))
        attempts = request.app[LOGIN_ATTEMPTS]
        # 320 characters: the longest e-mail address there is; a megabyte "address" stays a short key.
        account_key = email.strip().lower()[:320]
        keys = [f"email:{account_key}", f"address:{client_address(request)}"]
        if not await attempts.take(keys):
            return _render_login(
                request,
                area,
                "Too many sign-in attempts. Wait a minute and try again.",
                status=429,
                next_path=next_path,
            )
        account = await accounts.authenticate(request.app[DATABASE], email, password)
        if account is None:
            return _render_login(request, area, "Wrong e-mail or password.", status=401, next_path=next_path)
        # A right password does not count: people who sign in often are not slowed down.
        await attempts.give_back(keys)
        async with request.app[DATABASE].session() as session:
            token = await accounts.open_session(session, account, settings.session_days)
        response = web.HTTPFound(_safe_next(next_path, f"/{area}/"))
        response.set_cookie(
            COOKIE,
            token,
            max_age=settings.session_days * 86400,
            httponly=True,
            samesite="Lax",
            secure=secure_cookies(settings),
            path="/",
        )
        raise response

    return submit


def logout(area: str) -> Handler:
    async def submit(request: web.Request) -> web.StreamResponse:
        token = request.cookies.get(COOKIE)
        form = await request.post()
        if token and not csrf.is_valid(token, str(form.get(csrf.FIELD, ""))):
            # Another site must not be able to sign people out (a form posted from elsewhere).
            raise web.HTTPForbidden(text="This sign-out form has expired: reload the page and try again.")
        if token:
            async with request.app[DATABASE].session() as session:
                await accounts.close_session(session, token)
            # After the commit: a socket reconnecting from now on finds no session.
            await request.app[SESSION_ENDS].end_session(token)
        response = web.HTTPFound(f"/{area}/login")
        response.del_cookie(COOKIE, path="/")
        raise response

    return submit


def add_routes(app: web.Application, area: str) -> None:
    if LOGIN_ATTEMPTS not in app:
        app[LOGIN_ATTEMPTS] = LocalAttempts(RateLimiter(rate=LOGIN_RATE, burst=LOGIN_BURST))
    if SIGNED_IN not in app:
        app[SIGNED_IN] = SignedInSockets()
        app[SESSION_ENDS] = app[SIGNED_IN]  # a cluster member replaces it (app.py, with Redis)
    app.router.add_get(f"/{area}/login", login_page(area))
    app.router.add_post(f"/{area}/login", login_submit(area))
    app.router.add_post(f"/{area}/logout", logout(area))
