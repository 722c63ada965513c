"""Request ids, one access-log line per request, and the usage a worker reported.

- Every request gets an id: the client's `X-Request-ID` when it is sane
  (printable ASCII, at most 128 characters), else a new one. The proxy sends
  it to the worker; the response carries it back with `X-Process-Time`; every
  hub-made error envelope names it (`errors.current_request_id`).
- When the request is done, one line goes to `hub.log` (logger
  `mlx_hub.access`): id, client, method, path (never the query string: the
  login link carries the token there), model, status, queue wait, time to
  first byte, total time, bytes sent and the usage token counts. No prompt
  text and no credential is ever written.
- Usage comes from the last `"usage"` object of a JSON body, or of the last
  SSE `data:` lines before `[DONE]`: a stream is never parsed chunk by chunk,
  only its last few KiB are kept.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import quote

import attrs
from aiohttp import web

from .errors import current_request_id
from .metrics import HubMetrics

access_logger = logging.getLogger("mlx_hub.access")

REQUEST_ID_HEADER = "X-Request-ID"
PROCESS_TIME_HEADER = "X-Process-Time"
MAX_REQUEST_ID_CHARS = 128
# Status logged (and counted) for a client that hung up before its answer was sent.
CLIENT_CLOSED = 499
# How much of a stream's end is kept to find the final usage chunk.
STREAM_TAIL_BYTES = 16 * 1024
_USAGE_KEY = b'"usage"'
# A body can repeat "usage" (e.g. a model writing JSON); look at the last few only.
_USAGE_TRIES = 4

ACCESS_KEY: web.RequestKey[AccessRecord] = web.RequestKey("mlx_hub_access")
METRICS_KEY: web.AppKey[HubMetrics] = web.AppKey("mlx_hub_metrics", HubMetrics)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def request_id_from(value: str | None) -> str:
    """The client's id if it is printable ASCII of 1..128 characters, else a new one."""
    if (
        value
        and len(value) <= MAX_REQUEST_ID_CHARS
        and value.isascii()
        and value.isprintable()
        and value.strip() == value
    ):
        return value
    return uuid.uuid4().hex


@attrs.frozen
class Usage:
    """The token counts a worker reported for one request."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _usage_of(obj: object) -> Usage | None:
    if not isinstance(obj, dict):
        return None
    # Chat/completions/embeddings say prompt/completion; /v1/responses says input/output.
    prompt = _count(obj.get("prompt_tokens", obj.get("input_tokens")))
    completion = _count(obj.get("completion_tokens", obj.get("output_tokens")))
    if prompt is None and completion is None:
        return None
    return Usage(prompt, completion)


def usage_from_json(data: bytes) -> Usage | None:
    """The last non-null `"usage"` object in a JSON text (the body is not parsed whole)."""
    decoder = json.JSONDecoder()
    end = len(data)
    for _ in range(_USAGE_TRIES):
        at = data.rfind(_USAGE_KEY, 0, end)
        if at < 0:
            return None
        end = at
        if at > 0 and data[at - 1] == ord("\\"):
            continue  # `\"usage\"` inside a string, not a key
        rest = data[at + len(_USAGE_KEY) :].lstrip()
        if not rest.startswith(b":"):
            continue
        text = rest[1:].lstrip().decode("utf-8", "replace")
        try:
            value, _ = decoder.raw_decode(text)
        except ValueError:
            continue
        usage = _usage_of(value)
        if usage is not None:
            return usage
        if value is None:
            # `"usage": null` in a stream chunk: an earlier chunk cannot carry the final one.
            return None
    return None


class StreamTail:
    """Keeps the end of a stream as it passes, to read the usage once it is over."""

    __slots__ = ("_kept", "_parts", "bytes")

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._kept = 0
        self.bytes = 0

    def feed(self, chunk: bytes) -> None:
        """Called for every chunk relayed: a length sum and a bounded list of chunks.

        The kept chunks are joined and cut only once they reach twice the tail's
        size, so a 20,000-chunk stream is not copied 16 KB per chunk.
        """
        self.bytes += len(chunk)
        self._parts.append(chunk)
        self._kept += len(chunk)
        if self._kept > 2 * STREAM_TAIL_BYTES:
            tail = self._tail()
            self._parts, self._kept = [tail], len(tail)

    def _tail(self) -> bytes:
        return b"".join(self._parts)[-STREAM_TAIL_BYTES:]

    def usage(self) -> Usage | None:
        """The usage of the last `data:` event(s) before `[DONE]`, if any carries one."""
        tail = self._tail()
        done = tail.rfind(b"data: [DONE]")
        if done >= 0:
            tail = tail[:done]
        return usage_from_json(tail)


@attrs.define
class AccessRecord:
    """What the hub learns about one request while serving it (filled in by the proxy)."""

    request_id: str
    started: float  # time.perf_counter()
    model: str | None = None
    queue_wait: float | None = None
    first_byte: float | None = None  # perf_counter when the worker's answer began
    usage: Usage | None = None
    stream: StreamTail | None = None

    def mark_first_byte(self) -> None:
        """The worker's response has begun (first call wins)."""
        if self.first_byte is None:
            self.first_byte = time.perf_counter()

    def stream_tail(self) -> StreamTail:
        """The tail keeper of a relayed stream (created on first use)."""
        if self.stream is None:
            self.stream = StreamTail()
        return self.stream

    def final_usage(self) -> Usage | None:
        """The body's usage, else the stream's final chunk's."""
        if self.usage is None and self.stream is not None:
            self.usage = self.stream.usage()
        return self.usage


def access_record(request: web.Request) -> AccessRecord | None:
    """The record of a request (None in an app without the access middleware)."""
    return request.get(ACCESS_KEY)


def _field(value: str | None, limit: int = 256) -> str:
    """A log-safe token: no spaces, no control characters, bounded."""
    if not value:
        return "-"
    return quote(value[:limit], safe="/:._-@+,=~!*()[]'")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def access_line(
    request: web.Request, record: AccessRecord, status: int, sent: int, total: float
) -> str:
    """The one access-log line of a finished request."""
    usage = record.final_usage()
    ttfb = None if record.first_byte is None else record.first_byte - record.started
    prompt = completion = "-"
    if usage is not None:
        prompt = "-" if usage.prompt_tokens is None else str(usage.prompt_tokens)
        completion = "-" if usage.completion_tokens is None else str(usage.completion_tokens)
    return (
        f"access id={_field(record.request_id)} client={_field(request.remote)} "
        f"method={_field(request.method)} path={_field(request.path)} "
        f"model={_field(record.model, 128)} status={status} "
        f"queue_wait={_seconds(record.queue_wait)} ttfb={_seconds(ttfb)} total={total:.3f} "
        f"bytes={sent} prompt_tokens={prompt} completion_tokens={completion}"
    )


def endpoint_of(request: web.Request) -> str:
    """The route's template (`/hub/models/{name}/{action}`): a bounded metrics label."""
    resource = request.match_info.route.resource
    return "unmatched" if resource is None else resource.canonical


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: id the request, send its answer, then log and count it."""
    record = AccessRecord(
        request_id_from(request.headers.get(REQUEST_ID_HEADER)), time.perf_counter()
    )
    request[ACCESS_KEY] = record
    token = current_request_id.set(record.request_id)
    status, sent = CLIENT_CLOSED, 0
    try:
        response = await handler(request)
        if not response.prepared:
            # Sent here rather than by aiohttp afterwards, so total time and bytes are
            # complete. (A stream the handler prepared is finished, or was aborted.)
            try:
                await response.prepare(request)
                await response.write_eof()
            except ConnectionError:
                status = CLIENT_CLOSED
                raise
        status = response.status
        sent = response.body_length
        return response
    except web.HTTPException as exc:  # a redirect raised by a handler, sent by aiohttp
        status = exc.status
        raise
    finally:
        current_request_id.reset(token)
        total = time.perf_counter() - record.started
        if not sent and record.stream is not None:
            sent = record.stream.bytes
        _finish(request, record, status, sent, total)


def _finish(
    request: web.Request, record: AccessRecord, status: int, sent: int, total: float
) -> None:
    access_logger.info("%s", access_line(request, record, status, sent, total))
    metrics = request.app.get(METRICS_KEY)
    if metrics is None:
        return
    model = metrics.model(record.model)
    ttfb = None if record.first_byte is None else record.first_byte - record.started
    model.observe_request(endpoint_of(request), status, total, ttfb, record.queue_wait)
    usage = record.usage
    if usage is not None:
        model.add_tokens(usage.prompt_tokens, usage.completion_tokens)


async def _add_id_headers(request: web.Request, response: web.StreamResponse) -> None:
    record = request.get(ACCESS_KEY)
    if record is None:
        return
    response.headers[REQUEST_ID_HEADER] = record.request_id
    response.headers[PROCESS_TIME_HEADER] = f"{time.perf_counter() - record.started:.6f}"


def setup_access_log(app: web.Application, metrics: HubMetrics | None) -> None:
    """Install the access middleware (first) and the id/process-time response headers."""
    if metrics is not None:
        app[METRICS_KEY] = metrics
    app.middlewares.insert(0, access_middleware)
    app.on_response_prepare.append(_add_id_headers)
