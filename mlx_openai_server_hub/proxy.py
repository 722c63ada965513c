"""The OpenAI API: each `/v1/...` request goes to the worker of the model it names.

Bodies are read once (the `model` field must be rewritten to what the worker
accepts); responses are passed through as they arrive, never parsed. A
streaming request that has to wait for a load gets its SSE headers at once
and comment lines while it waits, so clients with idle timeouts keep waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from .bodies import parse_json_object, read_within_idle_timeout
from .errors import HubError, error_body
from .keys import SUPERVISOR_KEY
from .states import MemoryState
from .supervisor import Supervisor, Target

logger = logging.getLogger("mlx_hub.proxy")

MAX_BODY_BYTES = 100 * 1024 * 1024
HEARTBEAT_SECONDS = 2.0
CONNECT_TIMEOUT_SECONDS = 10.0
MODEL_REQUIRED = (
    "Model selection is required when the server runs in hub mode. Include the 'model' field "
    "(or query parameter) to choose a registered model. Call /v1/models to list available names."
)
# Headers that describe one hop, not the message (RFC 9110 §7.6.1), plus ours.
_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "authorization",
        "cookie",
    }
)
JSON_ENDPOINTS = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/v1/embeddings",
    "/v1/images/generations",
)
MULTIPART_ENDPOINTS = ("/v1/images/edits", "/v1/audio/transcriptions")

UPSTREAM_SESSION_KEY: web.AppKey[aiohttp.ClientSession] = web.AppKey("upstream_session")


def setup_proxy(app: web.Application) -> None:
    """Register the `/v1` routes and the pooled upstream connection session."""
    for path in JSON_ENDPOINTS:
        app.router.add_post(path, proxy_json)
    for path in MULTIPART_ENDPOINTS:
        app.router.add_post(path, proxy_multipart)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/queue/stats", queue_stats)
    app.cleanup_ctx.append(_upstream_session)


async def _upstream_session(app: web.Application) -> Any:
    # Keep-alive connections to workers are reused; no cap, the workers queue.
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30)
    # No cookie jar: a proxy must not keep one client's cookies for the next, and
    # skipping the jar's per-request filtering and updating saves CPU on every request.
    session = aiohttp.ClientSession(
        connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
    )
    app[UPSTREAM_SESSION_KEY] = session
    yield
    await session.close()


# ------------------------------------------------------------------ handlers


async def proxy_json(request: web.Request) -> web.StreamResponse:
    """A JSON body with a `model` field (chat, completions, embeddings, ...)."""
    raw = await read_within_idle_timeout(request, request.read())
    payload = parse_json_object(raw, "Request body must be a JSON object")
    name = _required_model(payload.get("model"))
    supervisor = request.app[SUPERVISOR_KEY]

    def body_for(target: Target) -> bytes:
        payload["model"] = target.upstream_model
        return json.dumps(payload).encode("utf-8")

    rt = supervisor.resolve(name)
    if payload.get("stream") is True and rt.memory != MemoryState.LOADED:
        return await _stream_after_load(request, supervisor, name, body_for)
    async with supervisor.use(name) as target:
        return await _forward(request, target, body_for(target), _json_headers(request))


async def proxy_multipart(request: web.Request) -> web.StreamResponse:
    """A multipart form with a `model` field (transcriptions, image edits)."""
    if not request.content_type.startswith("multipart/"):
        raise HubError("This endpoint expects a multipart/form-data body", 400)
    fields = await read_within_idle_timeout(request, _read_form(request))
    model_values = [value for key, value, _ in fields if key == "model"]
    name = _required_model(model_values[0] if model_values else None)
    supervisor = request.app[SUPERVISOR_KEY]
    async with supervisor.use(name) as target:
        form = aiohttp.FormData()
        for key, value, meta in fields:
            if key == "model":
                value = target.upstream_model
            form.add_field(key, value, **meta)
        writer = form()
        headers = _forward_headers(request)
        headers["Content-Type"] = writer.content_type
        return await _forward(request, target, writer, headers)


async def list_models(request: web.Request) -> web.Response:
    """`GET /v1/models`: started models, named by their hub names."""
    status = request.app[SUPERVISOR_KEY].status()
    data = []
    for entry in status["models"]:
        meta = entry["metadata"]
        if meta["process_state"] not in ("running", "starting"):
            continue
        data.append(
            {
                "id": entry["id"],
                "object": "model",
                "created": entry["created"],
                "owned_by": "hub",
                "metadata": {
                    "model_path": meta["model_path"],
                    "model_type": meta["model_type"],
                    "process_state": meta["process_state"],
                    "memory_state": meta["memory_state"],
                    "group": meta["group"],
                },
            }
        )
    return web.json_response({"object": "list", "data": data})


async def queue_stats(request: web.Request) -> web.StreamResponse:
    """`GET /v1/queue/stats?model=`: the worker's queue, without loading it for this."""
    name = _required_model(request.query.get("model"))
    supervisor = request.app[SUPERVISOR_KEY]
    rt = supervisor.resolve(name)
    if rt.memory != MemoryState.LOADED:
        idle = {"running": 0, "queued": 0, "loaded": False, "memory_state": str(rt.memory)}
        return web.json_response({"model": rt.name, "queue_stats": idle})
    async with supervisor.use(name) as target:
        return await _forward(request, target, None, _forward_headers(request))


# -------------------------------------------------------------- forwarding


async def _forward(
    request: web.Request,
    target: Target,
    body: Any,
    headers: CIMultiDict[str],
    prepared: web.StreamResponse | None = None,
) -> web.StreamResponse:
    """Send the request to the worker and pass its answer back as it arrives."""
    session = request.app[UPSTREAM_SESSION_KEY]
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=CONNECT_TIMEOUT_SECONDS, sock_read=target.request_timeout
    )
    url = target.base_url + request.rel_url.path_qs
    try:
        async with session.request(
            request.method, url, data=body, headers=headers, timeout=timeout
        ) as upstream:
            if prepared is not None:
                return await _relay_into_prepared(request, upstream, prepared, target)
            if _is_stream(upstream):
                return await _relay_stream(request, upstream, target)
            data = await upstream.read()
            return web.Response(
                body=data, status=upstream.status, headers=_response_headers(upstream)
            )
    except TimeoutError:
        raise HubError(
            f"Model '{target.name}' did not answer within {target.request_timeout:g} s "
            "(request_timeout)",
            504,
            "timeout_error",
        ) from None
    except aiohttp.ClientError as exc:
        raise HubError(f"Worker for model '{target.name}' is unreachable: {exc}", 502) from None


def _is_stream(upstream: aiohttp.ClientResponse) -> bool:
    return upstream.content_type == "text/event-stream" or upstream.content_length is None


async def _relay_stream(
    request: web.Request, upstream: aiohttp.ClientResponse, target: Target
) -> web.StreamResponse:
    response = web.StreamResponse(status=upstream.status, headers=_response_headers(upstream))
    await response.prepare(request)
    await _pump(request, upstream, response, target)
    return response


async def _relay_into_prepared(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    response: web.StreamResponse,
    target: Target,
) -> web.StreamResponse:
    """The 200 and SSE headers are already sent: turn a worker error into an SSE error."""
    if upstream.status != 200:
        detail = (await upstream.read()).decode("utf-8", "replace")
        await _write_sse_error(
            response, f"Worker for '{target.name}' answered {upstream.status}: {detail}", 502
        )
        await response.write_eof()
        return response
    await _pump(request, upstream, response, target)
    return response


async def _pump(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    response: web.StreamResponse,
    target: Target,
) -> None:
    """Copy the body chunk by chunk; a broken upstream must not look like a clean end."""
    try:
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
    except (aiohttp.ClientError, TimeoutError) as exc:
        message = (
            f"Model '{target.name}' did not answer within {target.request_timeout:g} s"
            if isinstance(exc, TimeoutError)
            else f"The worker for model '{target.name}' failed mid-response: {exc!r}"
        )
        logger.warning(message)
        with contextlib.suppress(ConnectionError):
            await _write_sse_error(response, message, 502)
        # End the connection without the final chunk: the client sees a broken stream.
        if request.transport is not None:
            request.transport.abort()
        return
    await response.write_eof()


async def _stream_after_load(
    request: web.Request, supervisor: Supervisor, name: str, body_for: Any
) -> web.StreamResponse:
    """Send SSE headers now, comment lines while the model loads, then the stream."""
    response = web.StreamResponse(
        status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        entering = asyncio.ensure_future(stack.enter_async_context(supervisor.use(name)))
        try:
            while not entering.done():
                await asyncio.wait({entering}, timeout=HEARTBEAT_SECONDS)
                if not entering.done():
                    elapsed = int(time.monotonic() - started)
                    await response.write(f": loading {name} ({elapsed}s)\n\n".encode())
            target = entering.result()
        except HubError as exc:
            await _write_sse_error(response, exc.message, exc.status, exc.error_type)
            await response.write_eof()
            return response
        finally:
            if not entering.done():
                entering.cancel()
                await asyncio.gather(entering, return_exceptions=True)
        headers = _json_headers(request)
        return await _forward(request, target, body_for(target), headers, prepared=response)
    raise AssertionError("unreachable")  # pragma: no cover - the stack always returns


async def _write_sse_error(
    response: web.StreamResponse, message: str, status: int, error_type: str | None = None
) -> None:
    event = json.dumps(error_body(message, status, error_type))
    await response.write(f"data: {event}\n\n".encode())


# ----------------------------------------------------------------- parsing


def _required_model(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise HubError(MODEL_REQUIRED, 400)
    return value.strip()


async def _read_form(request: web.Request) -> list[tuple[str, Any, dict[str, str]]]:
    """Every part of a multipart body, kept in memory (bounded by MAX_BODY_BYTES)."""
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError, KeyError) as exc:
        raise HubError(f"Malformed multipart body: {exc}", 400) from None
    fields: list[tuple[str, Any, dict[str, str]]] = []
    total = 0
    try:
        while (part := await reader.next()) is not None:
            if not isinstance(part, aiohttp.BodyPartReader):
                raise HubError("Nested multipart bodies are not supported", 400)
            data = await part.read(decode=False)
            total += len(data)
            if total > MAX_BODY_BYTES:
                raise HubError("Request body is larger than 100 MB", 413)
            meta: dict[str, str] = {}
            if part.filename is not None:
                meta["filename"] = part.filename
                meta["content_type"] = part.headers.get("Content-Type", "application/octet-stream")
                fields.append((part.name or "", bytes(data), meta))
            else:
                fields.append((part.name or "", data.decode("utf-8", "replace"), meta))
    except (ValueError, AssertionError, aiohttp.ClientError) as exc:
        raise HubError(f"Malformed multipart body: {exc}", 400) from None
    return fields


def _forward_headers(request: web.Request) -> CIMultiDict[str]:
    # Content-Encoding too: aiohttp decompressed the body and the hub sends it re-encoded.
    return CIMultiDict(
        (k, v)
        for k, v in request.headers.items()
        if k.lower() not in _HOP_HEADERS and k.lower() != "content-encoding"
    )


def _json_headers(request: web.Request) -> CIMultiDict[str]:
    headers = _forward_headers(request)
    headers["Content-Type"] = "application/json"
    return headers


def _response_headers(upstream: aiohttp.ClientResponse) -> CIMultiDict[str]:
    return CIMultiDict((k, v) for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS)
