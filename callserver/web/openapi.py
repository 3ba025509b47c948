"""The OpenAPI 3.1 document, built from the operations the API and the hooks declare next to their routes.

An `Operation` names its route, its handler and the pydantic models that validate its body and query
and serialise its answers; `add_routes` registers the handlers and `document` describes them, so the
document cannot drift from what the server accepts and answers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, JsonValue
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from callserver.web.errors import ErrorOut

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
JsonObject = dict[str, JsonValue]
# A route's `{name:regex}` parameter, which OpenAPI writes as `{name}`.
PATH_PARAMETER = re.compile(r"\{(\w+)(?::[^}]*)?\}")
ERROR_REASONS = {
    400: "Bad JSON or a field that is wrong (the message names it).",
    401: "Missing or wrong bearer token (`unauthorized`) or webhook signature (`bad_signature`).",
    404: "No such record for this site (`not_found`).",
    413: "Body over 1 MB (`too_large`).",
}
SITE_SECRET = "siteSecret"


@dataclass(frozen=True)
class Answer:
    """One successful answer of an operation: its status, what it means, and the model of its body."""

    status: int
    description: str
    body: type[BaseModel] | None = None


@dataclass(frozen=True)
class Operation:
    """A route of the API with what the document says of it."""

    method: Literal["get", "post"]
    path: str  # as the router takes it: `{name}` or `{name:regex}` parameters
    handler: Handler
    operation_id: str
    summary: str
    answers: tuple[Answer, ...]
    errors: tuple[int, ...] = ()
    body: type[BaseModel] | None = None
    body_description: str | None = None
    query: type[BaseModel] | None = None
    secured: bool = True  # the bearer token is the site secret

    @property
    def documented_path(self) -> str:
        return PATH_PARAMETER.sub(r"{\1}", self.path)


def add_routes(app: web.Application, operations: Sequence[Operation]) -> None:
    """Register the operations' handlers with the app's router."""
    for operation in operations:
        app.router.add_route(operation.method.upper(), operation.path, operation.handler)


def _models(operations: Sequence[Operation]) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for operation in operations:
        if operation.body:
            models.append((operation.body, "validation"))
        if operation.query:
            models.append((operation.query, "validation"))
        models += [(answer.body, "serialization") for answer in operation.answers if answer.body]
    models.append((ErrorOut, "serialization"))
    return list(dict.fromkeys(models))


def document(operations: Sequence[Operation], title: str, description: str) -> JsonObject:
    """The OpenAPI 3.1 document of these operations; every schema is the model's own JSON schema."""
    refs, definitions = models_json_schema(_models(operations), ref_template="#/components/schemas/{model}")
    schemas: JsonObject = dict(definitions.get("$defs", {}))

    def content(model: type[BaseModel], mode: JsonSchemaMode) -> JsonObject:
        return {"application/json": {"schema": dict(refs[(model, mode)])}}

    def parameters(operation: Operation) -> list[JsonValue]:
        found: list[JsonValue] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in PATH_PARAMETER.findall(operation.path)
        ]
        if operation.query:
            name = str(refs[(operation.query, "validation")]["$ref"]).rsplit("/", 1)[-1]
            query = schemas[name]
            assert isinstance(query, dict) and isinstance(query["properties"], dict)
            required = query.get("required") or []
            assert isinstance(required, list)
            found += [
                {"name": field, "in": "query", "required": field in required, "schema": schema}
                for field, schema in query["properties"].items()
            ]
        return found

    def describe(operation: Operation) -> JsonObject:
        described: JsonObject = {"operationId": operation.operation_id, "summary": operation.summary}
        if operation.secured:
            described["security"] = [{SITE_SECRET: []}]
        if found := parameters(operation):
            described["parameters"] = found
        if operation.body:
            described["requestBody"] = {
                "required": True,
                "content": content(operation.body, "validation"),
                **({"description": operation.body_description} if operation.body_description else {}),
            }
        responses: JsonObject = {}
        for answer in operation.answers:
            responses[str(answer.status)] = {
                "description": answer.description,
                **({"content": content(answer.body, "serialization")} if answer.body else {}),
            }
        for status in operation.errors:
            responses[str(status)] = {
                "description": ERROR_REASONS[status],
                "content": content(ErrorOut, "serialization"),
            }
        described["responses"] = responses
        return described

    paths: dict[str, JsonObject] = {}
    for operation in operations:
        paths.setdefault(operation.documented_path, {})[operation.method] = describe(operation)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1", "description": description},
        "servers": [{"url": "/"}],
        "paths": dict(paths),
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                SITE_SECRET: {"type": "http", "scheme": "bearer", "description": "The site secret."}
            },
        },
    }


def add_document(app: web.Application, path: str, operations: Sequence[Operation], **info: str) -> None:
    """Serve the document of `operations` at `path` (built once, when the route is added)."""
    text = json.dumps(document(operations, **info), indent=2)

    async def serve(request: web.Request) -> web.Response:
        return web.Response(text=text, content_type="application/json")

    app.router.add_get(path, serve)
