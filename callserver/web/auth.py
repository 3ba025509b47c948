"""Login and logout for operators and owners: a server-side session in an HttpOnly cookie."""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler

from callserver import accounts
from callserver.accounts import Account
from callserver.limits import RateLimiter
from callserver.web import csrf
from callserver.web.keys import DATABASE, SETTINGS, TEMPLATES

COOKIE = "callserver_session"
# Ten failed sign-ins at once per e-mail address and per client address, then one every 30 s:
# enough for people who mistype, too slow to guess passwords.
LOGIN_ATTEMPTS = web.AppKey("login_attempts", RateLimiter)


async def current_account(request: web.Request) -> Account | None:
    """The logged-in account of this request, or None."""
    token = request.cookies.get(COOKIE)
    if not token or len(token) > 100:
        return None
    async with request.app[DATABASE].session() as session:
        return await accounts.account_for_session(session, token)


def _safe_next(value: str | None, default: str) -> str:
    # Only paths on this server: an open redirect would let phishing pages borrow our login.
    if not value or not value.startswith("/") or value.startswith("//") or urlsplit(value).netloc:
        return default
    return value


def _render_login(
    request: web.Request, area: str, error: str | None = None, status: int = 200
) -> web.Response:
    template = request.app[TEMPLATES].get_template("login.html")
    html = template.render(
        area=area,
        title="Operator sign-in" if area == "operator" else "Owner sign-in",
        action=f"/{area}/login",
        next=_safe_next(request.query.get("next"), f"/{area}/"),
        error=error,
    )
    return web.Response(text=html, content_type="text/html", status=status)


def login_page(area: str) -> Handler:
    async def show(request: web.Request) -> web.StreamResponse:
        if await current_account(request):
            raise web.HTTPFound(f"/{area}/")
        return _render_login(request, area)

    return show


def login_submit(area: str) -> Handler:
    async def submit(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        email, password = str(form.get("email", "")), str(form.get("password", ""))
        attempts = request.app[LOGIN_ATTEMPTS]
        keys = [("email", email.strip().lower()), ("peer", request.remote)]
        if not all(attempts.allows(key) for key in keys):
            return _render_login(
                request, area, "Too many sign-in attempts. Wait a minute and try again.", status=429
            )
        settings = request.app[SETTINGS]
        async with request.app[DATABASE].session() as session:
            account = await accounts.authenticate(session, email, password)
            if account is None:
                for key in keys:  # only failures count: people who sign in often are not slowed down
                    attempts.take(key)
                return _render_login(request, area, "Wrong e-mail or password.", status=401)
            token = await accounts.open_session(session, account, settings.session_days)
        target = _safe_next(str(form.get("next", "")), f"/{area}/")
        response = web.HTTPFound(target)
        response.set_cookie(
            COOKIE,
            token,
            max_age=settings.session_days * 86400,
            httponly=True,
            samesite="Lax",
            secure=settings.secure_cookies,
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
        response = web.HTTPFound(f"/{area}/login")
        response.del_cookie(COOKIE, path="/")
        raise response

    return submit


def add_routes(app: web.Application, area: str) -> None:
    if LOGIN_ATTEMPTS not in app:
        app[LOGIN_ATTEMPTS] = RateLimiter(rate=1 / 30, burst=10)
    app.router.add_get(f"/{area}/login", login_page(area))
    app.router.add_post(f"/{area}/login", login_submit(area))
    app.router.add_post(f"/{area}/logout", logout(area))
