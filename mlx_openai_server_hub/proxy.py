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
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from .access_log import REQUEST_ID_HEADER, access_record, usage_from_json
from .bodies import (
    MAX_BODY_BYTES,
    parse_json_object,
    read_body,
    read_within_idle_timeout,
    require_plain_body,
)
from .errors import HubError, error_body
from .keys import SUPERVISOR_KEY
from .model_state import Target, WhileWaiting
from .states import MemoryState
from .worker_shim import SECRET_HEADER, worker_headers

logger = logging.getLogger("mlx_hub.proxy")

HEARTBEAT_SECONDS = 2.0
CONNECT_TIMEOUT_SECONDS = 10.0
WORKER_STATS_TIMEOUT = aiohttp.ClientTimeout(total=2.0)
MODEL_REQUIRED = (
    "Model selection is required when the server runs in hub mode. Include the 'model' field "
    "(or query parameter) to choose a registered model. Call /v1/models to list available names."
)
# Headers that describe one hop, not the message (RFC 9110 §7.6.1), plus ours.
_SECRET_HEADER = SECRET_HEADER.lower()
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
    # Every request carries the hub's worker secret: a guarded worker refuses others.
    session = aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers=worker_headers(),
    )
    app[UPSTREAM_SESSION_KEY] = session
    yield
    await session.close()


# ------------------------------------------------------------------ handlers


async def proxy_json(request: web.Request) -> web.StreamResponse:
    """A JSON body with a `model` field (chat, completions, embeddings, ...)."""
    raw = await read_body(request)
    payload = parse_json_object(raw, "Request body must be a JSON object")
    name = _required_model(payload.get("model"))

    def body_for(target: Target) -> bytes:
        payload["model"] = target.upstream_model
        return json.dumps(payload).encode("utf-8")

    if payload.get("stream") is True:
        return await _stream(request, name, body_for)
    async with _lease(request, name) as target:
        return await _forward(request, target, body_for(target), _json_headers(request))


async def proxy_multipart(request: web.Request) -> web.StreamResponse:
    """A multipart form with a `model` field (transcriptions, image edits)."""
    if not request.content_type.startswith("multipart/"):
        raise HubError("This endpoint expects a multipart/form-data body", 400)
    require_plain_body(request, "A multipart/form-data body")
    fields = await read_within_idle_timeout(request, _read_form(request))
    model_values = [value for key, value, _ in fields if key == "model"]
    name = _required_model(model_values[0] if model_values else None)
    async with _lease(request, name) as target:
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
    return web.json_response(request.app[SUPERVISOR_KEY].model_list())


async def queue_stats(request: web.Request) -> web.Response:
    """`GET /v1/queue/stats?model=`: the hub's queue of the model, and the worker's
    own figures when it is loaded (never loading it for this)."""
    name = _required_model(request.query.get("model"))
    supervisor = request.app[SUPERVISOR_KEY]
    worker: dict[str, Any] | None = None
    async with supervisor.lease_if_loaded(name) as target:
        if target is not None:
            worker = await _worker_queue_stats(request, target)
    snap = supervisor.resolve(name).snapshot()
    queue = snap.queue
    stats = {
        "active_requests": queue.active_requests,
        "queued_requests": queue.queued_requests,
        "max_concurrency": queue.max_concurrency,
        "queue_size": queue.queue_size,
        "queue_timeout": queue.queue_timeout,
        # The reference's fields, for scripts written against it.
        "running": queue.active_requests,
        "queued": queue.queued_requests,
        "loaded": snap.memory == MemoryState.LOADED,
        "memory_state": str(snap.memory),
    }
    body: dict[str, Any] = {"status": "ok", "model": snap.config.name, "queue_stats": stats}
    if worker is not None:
        body["worker"] = worker
    return web.json_response(body)


async def _worker_queue_stats(request: web.Request, target: Target) -> dict[str, Any] | None:
    """The worker's own `/v1/queue/stats`, or None if it does not answer it in time."""
    session = request.app[UPSTREAM_SESSION_KEY]
    url = f"{target.base_url}/v1/queue/stats"
    try:
        async with session.get(
            url, params={"model": target.upstream_model}, timeout=WORKER_STATS_TIMEOUT
        ) as upstream:
            if upstream.status != 200:
                return None
            data = await upstream.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# -------------------------------------------------------------- forwarding


def _lease(
    request: web.Request, name: str, while_waiting: WhileWaiting | None = None
) -> contextlib.AbstractAsyncContextManager[Target]:
    """The supervisor's lease on the model `name`; its access-log line names the model
    even when the lease is refused (a full queue, a failed load)."""
    supervisor = request.app[SUPERVISOR_KEY]
    record = access_record(request)
    if record is not None:
        record.model = supervisor.resolve(name).name
    return supervisor.lease(name, while_waiting)


async def _forward(
    request: web.Request,
    target: Target,
    body: Any,
    headers: CIMultiDict[str],
    prepared: web.StreamResponse | None = None,
) -> web.StreamResponse:
    """Send the request to the worker and pass its answer back as it arrives."""
    record = access_record(request)
    if record is not None:
        record.model, record.queue_wait = target.name, target.queue_wait
        headers[REQUEST_ID_HEADER] = record.request_id
    session = request.app[UPSTREAM_SESSION_KEY]
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=CONNECT_TIMEOUT_SECONDS, sock_read=target.request_timeout
    )
    url = target.base_url + request.rel_url.path_qs
    try:
        async with session.request(
            request.method, url, data=body, headers=headers, timeout=timeout
        ) as upstream:
            if record is not None:
                record.mark_first_byte()
            if prepared is not None:
                return await _relay_into_prepared(request, upstream, prepared, target)
            if _is_stream(upstream):
                return await _relay_stream(request, upstream, target)
            data = await upstream.read()
            if record is not None and upstream.content_type == "application/json":
                record.usage = usage_from_json(data)
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
        record = access_record(request)
        tail = record.stream_tail() if record is not None else None
        async for chunk in upstream.content.iter_any():
            if tail is not None:
                tail.feed(chunk)
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


class _LoadingStream:
    """A streaming request's response, opened early if its model must load first.

    While the model loads, the client already has its 200 and SSE headers and
    gets a comment line every couple of seconds, so clients with idle timeouts
    keep waiting; an error after that point can only be an SSE error event.
    """

    def __init__(self, request: web.Request, name: str) -> None:
        self.request = request
        self.name = name
        self.response: web.StreamResponse | None = None

    @contextlib.asynccontextmanager
    async def heartbeats(self) -> AsyncIterator[None]:
        """Open the response, then write a comment line every HEARTBEAT_SECONDS."""
        self.response = web.StreamResponse(
            status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await self.response.prepare(self.request)
        beating = asyncio.ensure_future(self._beat(self.response))
        try:
            yield
        finally:
            beating.cancel()
            await asyncio.gather(beating, return_exceptions=True)

    async def _beat(self, response: web.StreamResponse) -> None:
        started = time.monotonic()
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            elapsed = int(time.monotonic() - started)
            note = self.request.app[SUPERVISOR_KEY].wait_note(self.name)
            await response.write(f": {note} ({elapsed}s)\n\n".encode())


async def _stream(request: web.Request, name: str, body_for: Any) -> web.StreamResponse:
    """A streaming request: its SSE headers go out early when its model must load."""
    stream = _LoadingStream(request, name)
    try:
        async with _lease(request, name, stream.heartbeats) as target:
            body = body_for(target)
            return await _forward(
                request, target, body, _json_headers(request), prepared=stream.response
            )
    except HubError as exc:
        if stream.response is None:
            raise
        await _write_sse_error(stream.response, exc.message, exc.status, exc.error_type)
        await stream.response.write_eof()
        return stream.response


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


def _hop_headers(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    """_HOP_HEADERS plus those that `Connection` names: a proxy drops them (RFC 9110 §7.6.1)."""
    listed = {
        name.strip().lower()
        for value in headers.getall("Connection", ())
        for name in value.split(",")
    }
    return _HOP_HEADERS | listed


def _forward_headers(request: web.Request) -> CIMultiDict[str]:
    # Content-Encoding too: the hub decoded the body (bodies.read_body) and sends it re-encoded.
    # And the worker secret's header: a client's own would replace the session's.
    drop = _hop_headers(request.headers) | {"content-encoding", _SECRET_HEADER}
    return CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in drop)


def _json_headers(request: web.Request) -> CIMultiDict[str]:
    headers = _forward_headers(request)
    headers["Content-Type"] = "application/json"
    return headers


def _response_headers(upstream: aiohttp.ClientResponse) -> CIMultiDict[str]:
    drop = _hop_headers(upstream.headers)
    return CIMultiDict((k, v) for k, v in upstream.headers.items() if k.lower() not in drop)
