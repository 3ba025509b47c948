"""JSON errors for HTTP: `{"error": {"code": ..., "message": ...}}` with a fitting status."""

from typing import Any

from aiohttp import web


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    return web.json_response(body, status=status, headers=headers)
