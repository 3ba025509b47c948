"""Security headers for every HTML page this server serves (softphone, dashboard, sign-in, errors).

The pages carry a strict Content-Security-Policy: scripts and styles only from files this server
serves (no inline `<script>`, `<style>` or `style=`), sockets only to this server, and no framing
by any other page (clickjacking: a shop page must not put a signed-in softphone or dashboard under
its own buttons). `/widget.js` and the widget's files are not pages of ours but run inside the
shop's page, and the demo shop is a separate application: neither gets these headers.
"""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web

from callserver.web.keys import SETTINGS

# Stylesheets of the sign-in and dashboard pages (the softphone's live in operator_softphone/).
STATIC_DIR = Path(__file__).parent / "static"
# What a Host header may hold to be named in the policy: a `;` or a space would add directives.
_PLAIN_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]+)?|\[[0-9A-Fa-f:.]+\](:[0-9]+)?")


def content_security_policy(host: str) -> str:
    """The policy of our pages; `host` is the page's own host[:port], for the softphone's socket."""
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            # Recordings in the dashboard; calls' audio arrives as a MediaStream, not a URL.
            "media-src 'self' blob:",
            # 'self' covers ws(s) to the same host in CSP 3, older browsers need the scheme spelled out.
            f"connect-src 'self' ws://{host} wss://{host}"
            if _PLAIN_HOST.fullmatch(host)
            else "connect-src 'self'",
            "font-src 'self'",
            "manifest-src 'self'",
            "form-action 'self'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        )
    )


async def _page_headers(request: web.Request, response: web.StreamResponse) -> None:
    content_type = response.headers.get("Content-Type", response.content_type or "")
    if not content_type.lower().startswith("text/html"):
        return
    headers = response.headers
    headers["Content-Security-Policy"] = content_security_policy(request.host)
    headers["X-Frame-Options"] = "DENY"  # for browsers that predate frame-ancestors
    headers["X-Content-Type-Options"] = "nosniff"
    # Call ids and filters sit in dashboard URLs: links to shops' pages need not carry them.
    headers["Referrer-Policy"] = "same-origin"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if request.app[SETTINGS].public_url.lower().startswith("https://"):
        headers["Strict-Transport-Security"] = "max-age=31536000"


def setup(app: web.Application) -> None:
    """Put the security headers on every HTML response, and serve the pages' stylesheets."""
    app.on_response_prepare.append(_page_headers)
    app.router.add_static("/static/", STATIC_DIR, append_version=False)
