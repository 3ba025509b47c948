"""One way from an error to an HTTP answer, for the API, the webhooks and the dashboard.

`answer_for` decides which errors are the request's fault and with what status and code; the JSON
views answer those as `{"error": {"code": ..., "message": ...}}` (`json_errors`), the dashboard as
its error page (`html_errors`). Either way the refusal is logged on one line, without a traceback;
anything else is a bug and stays a 500 with its traceback.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import BaseModel, Field

from callserver.errors import CallserverError, InvalidInput, NotFound
from callserver.web.keys import TEMPLATES

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpError(Exception):
    """An HTTP error a view raises on purpose: status, stable code, message for people."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable and machine-readable, e.g. not_found, unauthorized, invalid.")
    message: str = Field(description="For people.")


class ErrorOut(BaseModel):
    """The body of every JSON error (and its schema in the OpenAPI document)."""

    error: ErrorDetail


def answer_for(error: BaseException) -> HttpError | None:
    """The 4xx an error caused by the request deserves; None for anything else (a bug)."""
    if isinstance(error, HttpError):
        return error
    if isinstance(error, NotFound):
        return HttpError(404, "not_found", error.message)
    if isinstance(error, InvalidInput):
        return HttpError(400, error.code, error.message)
    if isinstance(error, CallserverError):
        return HttpError(409, error.code, error.message)
    return None


def _log_refusal(request: web.Request, answer: HttpError) -> None:
    # The raw (still percent-encoded) path: a decoded one could carry line breaks into the log.
    path = request.raw_path[:300]
    log.info("%s %s refused: %d %s: %r", request.method, path, answer.status, answer.code, answer.message)


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = ErrorOut(error=ErrorDetail(code=code, message=message))
    return web.Response(
        text=body.model_dump_json(), status=status, content_type="application/json", headers=headers
    )


def json_errors(handler: Handler) -> Handler:
    """Answer the request's errors (see `answer_for`) as JSON errors."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Exception as e:
            answer = answer_for(e)
            if answer is None:
                raise
            _log_refusal(request, answer)
            return json_error(answer.status, answer.code, answer.message, answer.headers)

    return wrapped


TITLES = {400: "Cannot show this page", 403: "Not allowed", 404: "Not found", 409: "Cannot do this"}


def error_page(request: web.Request, status: int, message: str, title: str | None = None) -> web.Response:
    """The dashboard's error page with this status."""
    html = (
        request.app[TEMPLATES]
        .get_template("dashboard/error.html")
        .render(title=title or TITLES.get(status, "Cannot do this"), message=message)
    )
    return web.Response(
        text=html, status=status, content_type="text/html", headers={"Cache-Control": "no-store"}
    )


def html_errors(prefix: str) -> Middleware:
    """A middleware answering the request's errors under `prefix` with the error page."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(prefix):
            return await handler(request)
        try:
            return await handler(request)
        except Exception as e:
            answer = answer_for(e)
            if answer is None:
                raise
            _log_refusal(request, answer)
            return error_page(request, answer.status, answer.message)

    return middleware
