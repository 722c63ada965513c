"""The OpenAPI 3.1 document of every route the hub serves (`GET /hub/openapi.json`).

The routes are listed here once, as data; `route_mismatches` compares them
with the app's router, and a test fails when a route exists that the
document lacks, or the reverse. Route templates with literal alternatives
(`/hub/models/{name}/{action:start|stop|load|unload}`) are documented as one
path per alternative.
"""

from __future__ import annotations

import re
from typing import Any

import attrs
from aiohttp import web

from . import __version__

OPENAPI_PATH = "/hub/openapi.json"

# Who may call a route: names of `components.securitySchemes`; [] means open.
OPEN: list[dict[str, list[str]]] = []
CONTROL: list[dict[str, list[str]]] = [{"controlToken": []}, {"pageSession": []}]
# `/v1` is open unless `api_keys` is set: either no credential or an API key.
API: list[dict[str, list[str]]] = [{}, {"apiKey": []}]
METRICS: list[dict[str, list[str]]] = [{"controlToken": []}, {}]

_SECURITY_SCHEMES = {
    "controlToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The hub's control token: MLX_HUB_TOKEN, else the file hub.token "
        "beside hub.yaml.",
    },
    "pageSession": {
        "type": "apiKey",
        "in": "cookie",
        "name": "mlx_hub_session",
        "description": "The status page's session (from /hub/login); state-changing "
        "requests must also come from the page's own origin.",
    },
    "apiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "One of hub.yaml's `api_keys`, needed only when that list is set.",
    },
}

_ERROR = {"$ref": "#/components/schemas/Error"}
_OBJECT = {"type": "object", "additionalProperties": True}
_MODEL_BODY = {
    "type": "object",
    "required": ["model"],
    "properties": {"model": {"type": "string", "description": "A hub model name or path."}},
    "additionalProperties": True,
}
_MULTIPART_BODY = {
    "type": "object",
    "required": ["model", "file"],
    "properties": {
        "model": {"type": "string"},
        "file": {"type": "string", "contentMediaType": "application/octet-stream"},
    },
    "additionalProperties": True,
}


@attrs.frozen
class Operation:
    """One (method, path) of the hub and what a reader needs to call it."""

    method: str
    path: str
    summary: str
    tag: str
    security: list[dict[str, list[str]]]
    body: str | None = None  # "json", "model-json", "multipart"
    query: tuple[tuple[str, str, str, bool], ...] = ()  # name, type, description, required
    produces: str = "application/json"


def _page(
    method: str,
    path: str,
    summary: str,
    security: list[dict[str, list[str]]],
    *,
    produces: str = "text/html",
    **more: Any,
) -> Operation:
    """A route of the status page: HTML unless `produces` says otherwise."""
    return Operation(method, path, summary, "page", security, produces=produces, **more)


def _control_post(path: str, summary: str) -> Operation:
    """A control-token POST taking a JSON body."""
    return Operation("POST", path, summary, "control", CONTROL, body="json")


def _forwarded(path: str, body: str) -> Operation:
    """A `/v1` POST the hub forwards to the worker of the model its body names."""
    return Operation(
        "POST", path, "Forwarded to the named model's worker", "openai", API, body=body
    )


def _ops() -> list[Operation]:
    ops = [
        Operation("GET", "/health", "Liveness of the hub", "hub", OPEN),
        Operation("GET", OPENAPI_PATH, "This document", "hub", OPEN),
        Operation(
            "GET",
            "/metrics",
            "Prometheus metrics (open when `metrics_public: true`)",
            "hub",
            METRICS,
            produces="text/plain",
        ),
        _page("GET", "/hub", "The status page (or its login form)", OPEN),
        _page(
            "GET",
            "/hub/login",
            "Trade `?token=` for a page session",
            OPEN,
            query=(("token", "string", "The control token", False),),
        ),
        _page(
            "POST", "/hub/login", "Trade the login form's token for a session", OPEN, body="form"
        ),
        _page("POST", "/hub/logout", "End the page session", CONTROL),
        _page(
            "GET",
            "/hub/static/{filename}",
            "The page's script and styles",
            OPEN,
            produces="text/plain",
        ),
        Operation("GET", "/hub/status", "Every model's live state", "control", CONTROL),
        _control_post("/hub/reload", "Re-read hub.yaml and reconcile"),
        _control_post("/hub/shutdown", "Stop every worker and exit"),
        Operation(
            "GET",
            "/hub/logs",
            "The last lines of the hub's or a model's log; with follow=1 new lines as "
            "server-sent events",
            "control",
            CONTROL,
            query=(
                ("model", "string", "A model name; omitted: the hub's own log", False),
                (
                    "lines",
                    "integer",
                    "How many last lines: 1 to 10000, default 100 (0 with follow: new lines only)",
                    False,
                ),
                ("follow", "boolean", "1: keep sending new lines (text/event-stream)", False),
            ),
            produces="text/plain",
        ),
        _page(
            "GET",
            "/hub/logs/view",
            "A live view of a log in the browser",
            CONTROL,
            query=(("model", "string", "A model name; omitted: the hub's log", False),),
        ),
    ]
    ops += [
        _control_post(f"/hub/service/{action}", f"Service {action} (page shape)")
        for action in ("start", "stop", "reload")
    ]
    ops += [
        _control_post(
            f"/hub/models/{{name}}/{action}", f"{action.title()} a model; answers when done"
        )
        for action in ("start", "stop", "load", "unload")
    ]
    ops += [
        _control_post(f"/hub/models/{{name}}/vram/{action}", f"Same as {action}")
        for action in ("load", "unload")
    ]
    ops.append(
        Operation(
            "POST",
            "/hub/models/{name}/pull",
            "Download the model's snapshot without loading it (progress in its status)",
            "control",
            CONTROL,
            query=(("wait", "string", "1: answer when the download has finished", False),),
        )
    )
    ops += [
        _forwarded(path, "model-json")
        for path in (
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/responses",
            "/v1/embeddings",
            "/v1/images/generations",
        )
    ]
    ops += [
        _forwarded(path, "multipart") for path in ("/v1/images/edits", "/v1/audio/transcriptions")
    ]
    ops.append(Operation("GET", "/v1/models", "Started models, by hub name", "openai", API))
    ops.append(
        Operation(
            "GET",
            "/v1/queue/stats",
            "A model's request queue (and its worker's)",
            "openai",
            API,
            query=(("model", "string", "A model name", True),),
        )
    )
    return ops


def _parameters(op: Operation) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", op.path)
    ]
    for name, kind, description, required in op.query:
        params.append(
            {
                "name": name,
                "in": "query",
                "required": required,
                "description": description,
                "schema": {"type": kind},
            }
        )
    return params


def _request_body(kind: str | None) -> dict[str, Any] | None:
    if kind is None:
        return None
    if kind == "json":
        return {"required": False, "content": {"application/json": {"schema": _OBJECT}}}
    if kind == "form":
        form = {"type": "object", "properties": {"token": {"type": "string"}}}
        return {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": form}},
        }
    if kind == "multipart":
        return {"required": True, "content": {"multipart/form-data": {"schema": _MULTIPART_BODY}}}
    return {"required": True, "content": {"application/json": {"schema": _MODEL_BODY}}}


def _operation(op: Operation) -> dict[str, Any]:
    success: dict[str, Any] = {"description": "OK", "content": {op.produces: {"schema": {}}}}
    if op.produces == "application/json":
        success["content"] = {"application/json": {"schema": _OBJECT}}
    if op.tag == "openai" and op.body is not None:
        success["content"]["text/event-stream"] = {"schema": {"type": "string"}}
    doc: dict[str, Any] = {
        "summary": op.summary,
        "tags": [op.tag],
        "operationId": f"{op.method.lower()}{re.sub(r'[^A-Za-z0-9]+', '_', op.path)}",
        "security": op.security,
        "responses": {
            "200": success,
            "default": {
                "description": "An OpenAI error envelope",
                "content": {"application/json": {"schema": _ERROR}},
            },
        },
    }
    params = _parameters(op)
    if params:
        doc["parameters"] = params
    body = _request_body(op.body)
    if body is not None:
        doc["requestBody"] = body
    return doc


def openapi_document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document (a fresh dict each call)."""
    paths: dict[str, dict[str, Any]] = {}
    for op in _ops():
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    error = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": "string", "description": "The HTTP status"},
                    "request_id": {"type": "string"},
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mlx-openai-server-hub",
            "version": __version__,
            "description": "Many local MLX models behind one OpenAI-compatible port. "
            "See docs/api.md for examples.",
        },
        "tags": [
            {"name": "hub", "description": "Liveness, metrics, this document"},
            {"name": "control", "description": "The control API (CLI, scripts, the page)"},
            {"name": "page", "description": "The status page and its way in"},
            {"name": "openai", "description": "The OpenAI API, routed by `model`"},
        ],
        "paths": paths,
        "components": {"securitySchemes": _SECURITY_SCHEMES, "schemas": {"Error": error}},
    }


# ------------------------------------------------------------ the route check


@attrs.frozen
class RouteDiff:
    """Routes the app serves that the document lacks, and the reverse."""

    undocumented: frozenset[tuple[str, str]]
    not_served: frozenset[tuple[str, str]]

    def __bool__(self) -> bool:
        return bool(self.undocumented or self.not_served)


_GROUP = re.compile(r"\(\?P<(\w+)>([^()]*)\)")
_LITERALS = re.compile(r"[\w.-]+(\|[\w.-]+)*")


def _expand(resource: web.AbstractResource) -> list[str]:
    """The document paths of one router resource (alternatives spelled out)."""
    info = resource.get_info()
    if "path" in info:
        return [info["path"]]
    formatter = info.get("formatter")
    pattern = info.get("pattern")
    if formatter is None or pattern is None:
        return [resource.canonical]
    paths = [formatter]
    for name, body in _GROUP.findall(pattern.pattern):
        if _LITERALS.fullmatch(body):
            paths = [p.replace(f"{{{name}}}", alt) for p in paths for alt in body.split("|")]
    return paths


def served_routes(app: web.Application) -> frozenset[tuple[str, str]]:
    """(method, path) of every route of the app (HEAD, added by aiohttp for GET, left out)."""
    found = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "*") or route.resource is None:
            continue
        for path in _expand(route.resource):
            found.add((route.method, path))
    return frozenset(found)


def documented_routes(document: dict[str, Any]) -> frozenset[tuple[str, str]]:
    """(method, path) of every operation in an OpenAPI document."""
    return frozenset(
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    )


def route_mismatches(app: web.Application, document: dict[str, Any] | None = None) -> RouteDiff:
    """Compare the app's router with the document (empty when they agree)."""
    served = served_routes(app)
    documented = documented_routes(document if document is not None else openapi_document())
    return RouteDiff(frozenset(served - documented), frozenset(documented - served))


async def openapi_handler(_request: web.Request) -> web.Response:
    """`GET /hub/openapi.json` (open, like /health)."""
    return web.json_response(openapi_document())
