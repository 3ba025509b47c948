"""Who is on the other end of a request: the client's address, through a trusted proxy or not."""

from __future__ import annotations

from aiohttp import web

from callserver.web.keys import SETTINGS


def client_address(request: web.Request) -> str | None:
    """The client's IP address (the proxy's own when the proxy is not trusted).

    Behind a trusted reverse proxy (`trust_forwarded_for`) it is the first `X-Forwarded-For` entry;
    otherwise every client behind one proxy would share one address (and one sign-in limit).
    """
    if request.app[SETTINGS].trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For", "").split(",")[0].strip()
        if forwarded:
            return forwarded
    return request.remote
