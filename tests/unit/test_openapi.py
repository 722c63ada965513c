"""The OpenAPI document: valid 3.1, and the route check catches drift both ways."""

from __future__ import annotations

from aiohttp import web
from openapi_spec_validator import validate

from mlx_openai_server_hub.openapi import (
    documented_routes,
    openapi_document,
    route_mismatches,
    served_routes,
)


async def _handler(_request: web.Request) -> web.Response:
    return web.Response()


def test_the_document_is_valid_openapi_3_1_with_security_schemes():
    doc = openapi_document()
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    assert set(doc["components"]["securitySchemes"]) == {"controlToken", "pageSession", "apiKey"}
    assert doc["paths"]["/health"]["get"]["security"] == []
    assert {"controlToken": []} in doc["paths"]["/hub/status"]["get"]["security"]
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"]["required"] == ["model"]
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_templates_with_alternatives_are_spelled_out():
    app = web.Application()
    app.router.add_post("/hub/models/{name}/{action:start|stop}", _handler)
    app.router.add_get("/hub/static/{filename:.*}", _handler)
    app.router.add_get("/plain", _handler)
    assert served_routes(app) == {
        ("POST", "/hub/models/{name}/start"),
        ("POST", "/hub/models/{name}/stop"),
        ("GET", "/hub/static/{filename}"),
        ("GET", "/plain"),
    }


def test_the_check_fails_both_ways():
    doc = openapi_document()
    app = web.Application()
    for method, path in documented_routes(doc):
        app.router.add_route(method, path, _handler)
    assert not route_mismatches(app, doc)
    app.router.add_get("/hub/secret-new-route", _handler)
    diff = route_mismatches(app, doc)
    assert diff.undocumented == {("GET", "/hub/secret-new-route")}
    del doc["paths"]["/health"]
    diff = route_mismatches(app, doc)
    assert ("GET", "/health") in diff.undocumented
    doc["paths"]["/hub/gone"] = {"get": {"responses": {}}}
    assert route_mismatches(app, doc).not_served == {("GET", "/hub/gone")}


def test_the_hub_serves_exactly_the_documented_routes(hub_app):
    app, _supervisor = hub_app
    diff = route_mismatches(app)
    assert not diff, (
        f"undocumented: {sorted(diff.undocumented)}; not served: {sorted(diff.not_served)}"
    )
