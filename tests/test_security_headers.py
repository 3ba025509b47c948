"""Every HTML page carries a strict CSP and refuses framing; a real Chromium blocks a framed softphone."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import ConsoleMessage, Page, Playwright, expect

from callserver.web.auth import COOKIE
from tests.browsers import launch, sign_in
from tests.dashboard_support import add_call, add_chat, add_left_message, add_order, csrf_token, signed_in
from tests.stack import PASSWORD, Stack, free_port, sign_in_form

ROOT = Path(__file__).parent.parent
PAGES = [
    *sorted((ROOT / "callserver" / "web" / "templates").rglob("*.html")),
    ROOT / "operator_softphone" / "index.html",
]
# Pages that must be found by walking the routes (signed in as the right person).
EXPECTED_HTML = {
    "/operator/login",
    "/dashboard/login",
    "/operator/",
    "/dashboard/",
    "/dashboard/calls",
    "/dashboard/calls/{call_id}",
    "/dashboard/chats/{chat_id}",
    "/dashboard/operators",
    "/dashboard/messages",
    "/dashboard/sites",
    "/dashboard/erase",
}


def assert_page_headers(response: aiohttp.ClientResponse, host: str) -> None:
    where = f"{response.method} {response.url.path} ({response.status})"
    policy = response.headers.get("Content-Security-Policy", "")
    directives = {d.split()[0]: d.split()[1:] for d in policy.split(";") if d.strip()}
    assert directives.get("frame-ancestors") == ["'none'"], where
    assert directives.get("default-src") == ["'none'"], where
    assert directives.get("script-src") == ["'self'"] and directives.get("style-src") == ["'self'"], where
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy, where
    assert f"ws://{host}" in directives.get("connect-src", []), where
    assert response.headers.get("X-Frame-Options") == "DENY", where
    assert response.headers.get("X-Content-Type-Options") == "nosniff", where
    assert response.headers.get("Referrer-Policy") in ("same-origin", "strict-origin-when-cross-origin"), (
        where
    )


def _get_paths(app: web.Application, values: dict[str, str]) -> list[tuple[str, str]]:
    """(route pattern, a concrete path) for every GET route of the app, placeholders filled in."""
    paths = []
    for route in app.router.routes():
        if route.method != "GET":
            continue
        info = route.resource.get_info() if route.resource else {}
        pattern = info.get("path") or info.get("formatter")
        if pattern is None:  # a static folder: stylesheets and scripts, checked apart
            continue
        if pattern.startswith("/ws/"):
            continue
        concrete = re.sub(r"\{(\w+)(:[^}]*)?\}", lambda m: values[m.group(1)], pattern)
        paths.append((re.sub(r"\{(\w+):[^}]*\}", r"{\1}", pattern), concrete))
    return paths


async def test_every_html_page_carries_the_security_headers(stack: Stack) -> None:
    await stack.add_user("boss@shop.example", role="owner")
    anna = await stack.add_user("anna@shop.example")
    call_id = await add_call(stack, operator_id=anna.id)
    await add_order(stack, "W-1", "10.00", "call", call_id)
    values = {
        "call_id": call_id,
        "chat_id": await add_chat(stack, call_id=call_id, messages=["Hello"]),
        "order_id": "W-1",
        "user_id": str(anna.id),
        "site_id": str(stack.site.id),
        "site_key": stack.site.key,
        "message_id": await add_left_message(stack),
    }
    host = stack.url.removeprefix("http://")
    html_routes: set[str] = set()
    other_types: set[str] = set()

    @asynccontextmanager
    async def anonymous() -> AsyncIterator[aiohttp.ClientSession]:
        async with aiohttp.ClientSession(stack.url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
            yield client

    @asynccontextmanager
    async def operator() -> AsyncIterator[aiohttp.ClientSession]:
        async with anonymous() as client:
            form = await sign_in_form(client, "", "operator", "anna@shop.example")
            async with client.post("/operator/login", data=form, allow_redirects=False) as r:
                assert r.status == 302
            yield client

    for who in (anonymous, operator, lambda: signed_in(stack, "boss@shop.example")):
        async with who() as client:
            for pattern, path in _get_paths(stack.app, values):
                async with client.get(path, allow_redirects=False) as response:
                    await response.read()
                    if response.content_type == "text/html":
                        assert_page_headers(response, host)
                        html_routes.add(pattern)
                    else:
                        other_types.add(response.content_type)
                        assert "Content-Security-Policy" not in response.headers, path
    assert html_routes >= EXPECTED_HTML, f"not seen as HTML pages: {EXPECTED_HTML - html_routes}"
    assert "application/json" in other_types

    # Error pages and answers to forms are pages too.
    async with (
        signed_in(stack, "anna@shop.example") as operator_client,
        operator_client.get("/dashboard/") as response,  # operators may not: 403
    ):
        assert response.status == 403 and response.content_type == "text/html"
        assert_page_headers(response, host)
    async with signed_in(stack, "boss@shop.example") as owner:
        for path in ("/dashboard/calls/no-such-call", "/dashboard/calls?from=yesterday"):
            async with owner.get(path) as response:
                assert response.status in (400, 404) and response.content_type == "text/html", path
                assert_page_headers(response, host)
        async with owner.get("/dashboard/sites") as response:
            token = csrf_token(await response.text())
        async with owner.post(
            "/dashboard/sites", data={"csrf": token, "name": "", "origins": ""}
        ) as response:
            assert response.content_type == "text/html"
            assert_page_headers(response, host)
    async with anonymous() as client:
        form = await sign_in_form(client, "", "dashboard", "boss@shop.example", "wrong password")
        async with client.post("/dashboard/login", data=form) as response:
            assert response.status == 401
            assert_page_headers(response, host)
        async with client.post("/operator/login", data={**form, "csrf": "forged"}) as response:
            assert response.status == 403
            assert_page_headers(response, host)


async def test_the_shops_files_and_pages_do_not_get_our_page_policy(stack: Stack) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{stack.url}/widget.js") as response:
            assert response.status == 200
            assert (
                "Content-Security-Policy" not in response.headers
                and "X-Frame-Options" not in response.headers
            )
        async with client.get(f"{stack.shop_url}/") as response:  # the demo shop, on its own origin
            assert response.status == 200 and response.content_type == "text/html"
            assert "Content-Security-Policy" not in response.headers
        for stylesheet in ("signin.css", "dashboard.css", "error.css"):
            async with client.get(f"{stack.url}/static/{stylesheet}") as response:
                assert response.status == 200 and response.content_type == "text/css", stylesheet


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_pages_have_no_inline_script_or_style(page: Path) -> None:
    """What the policy would refuse to run (and a browser would quietly drop)."""
    html = page.read_text()
    assert "<style" not in html
    assert not re.search(r"\sstyle\s*=", html), "style= attribute"
    assert not re.search(r"\son[a-z]+\s*=", html), "inline event handler"
    for script in re.findall(r"<script\b[^>]*>", html):
        assert "src=" in script, f"inline script: {script}"
    assert "javascript:" not in html


# ------------------------------------------------------------------------------- in a real browser


@asynccontextmanager
async def framing_page(stack: Stack) -> AsyncIterator[str]:
    """A page on another origin (same machine, another port) that frames the softphone and, for
    comparison, a plain response of the same server that does not forbid framing."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(
            content_type="text/html",
            text=(
                "<!doctype html><title>Not the shop</title>"
                f'<iframe id="softphone" src="{stack.url}/operator/" width="800" height="600"></iframe>'
                f'<iframe id="control" src="{stack.url}/healthz" width="300" height="100"></iframe>'
            ),
        )

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


def _policy_violations(page: Page) -> list[str]:
    seen: list[str] = []

    def note(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            seen.append(message.text)

    page.on("console", note)
    return seen


@pytest.mark.browser
async def test_a_page_elsewhere_cannot_frame_the_signed_in_softphone(
    stack: Stack, playwright: Playwright
) -> None:
    await stack.add_user("anna@shop.example")
    context = await launch(playwright, microphone=None)
    try:
        page = await context.new_page()
        violations = _policy_violations(page)
        await sign_in(page, stack.url, "operator", "anna@shop.example", PASSWORD)
        await expect(page.get_by_test_id("op-presence")).to_be_enabled()  # the softphone works under its CSP
        assert any(c["name"] == COOKIE for c in await context.cookies())
        assert violations == [], violations

        async with framing_page(stack) as elsewhere:
            await page.goto(elsewhere)
            # The control frame shows: frames load fine in this browser …
            await expect(page.frame_locator("#control").locator("body")).to_contain_text("ok")
            # … but the softphone's frame is refused: Chromium shows its error page in its place.
            frame = await (await page.locator("#softphone").element_handle()).content_frame()
            assert frame is not None
            for _ in range(100):  # the frame's navigation ends on its own; this only waits for it
                if frame.url.startswith("chrome-error://"):
                    break
                await page.wait_for_timeout(100)
            assert frame.url.startswith("chrome-error://"), f"the softphone was framed: {frame.url}"
            assert await frame.locator("[data-testid=op-presence]").count() == 0
    finally:
        await context.browser.close()  # type: ignore[union-attr]


@pytest.mark.browser
async def test_the_dashboard_and_sign_in_pages_run_under_their_policy(
    stack: Stack, playwright: Playwright
) -> None:
    await stack.add_user("boss@shop.example", role="owner")
    await add_call(stack)
    context = await launch(playwright, microphone=None)
    try:
        page = await context.new_page()
        violations = _policy_violations(page)
        await page.goto(f"{stack.url}/dashboard/login")
        # The stylesheet applies (the sign-in button is the accent blue, not a grey default).
        button = page.locator("button[type=submit]")
        assert await button.evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(31, 111, 235)"
        await sign_in(page, stack.url, "dashboard", "boss@shop.example", PASSWORD)
        for path in ("/dashboard/", "/dashboard/calls", "/dashboard/operators", "/dashboard/sites"):
            await page.goto(f"{stack.url}{path}")
            await expect(page.locator("header.top")).to_be_visible()
            assert await page.locator("header.top").evaluate("h => getComputedStyle(h).display") == "flex"
        assert violations == [], violations
    finally:
        await context.browser.close()  # type: ignore[union-attr]


async def test_a_forged_host_header_cannot_loosen_the_policy(stack: Stack) -> None:
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"{stack.url}/operator/login", headers={"Host": "x; script-src *"}) as response,
    ):
        policy = response.headers["Content-Security-Policy"]
    assert policy.count("script-src") == 1 and "script-src 'self';" in policy and "*" not in policy
