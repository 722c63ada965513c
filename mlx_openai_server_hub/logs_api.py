"""Logs over HTTP: `GET /hub/logs` and the live view `GET /hub/logs/view`.

- `GET /hub/logs?model=NAME&lines=N`: the last N lines (default 100, at most
  MAX_LINES; 0 is allowed with `follow`) of a model's log (its `log_file`),
  or of the hub's own `hub.log` when `model` is omitted, as text/plain.
- With `follow=1` the answer is a stream of server-sent events: one `data:`
  event per line, the last N lines first, then every new line as it is
  written, across rotation and truncation (log_follow.py), with a comment
  line after HEARTBEAT_SECONDS of quiet so proxies keep the connection.
  The stream ends when the client goes away or the hub shuts down.
- `GET /hub/logs/view?model=NAME`: a page showing that stream live (the
  status page's look; its script is `static/hub_logs.js`).

Both sit under `/hub/`, so the auth middleware (app.py) asks for the control
token or the page's session cookie.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import cast

from aiohttp import web

from .dashboard import DISABLED_MESSAGE, _asset_url, _render
from .errors import HubError, error_response
from .keys import SUPERVISOR_KEY
from .log_follow import follow_lines, tail_lines

DEFAULT_LINES = 100
MAX_LINES = 10_000
HEARTBEAT_SECONDS = 15.0
# At shutdown a stream gets this long to end by itself (it notices within one
# poll) before it is cancelled: a client that stopped reading must not hold the exit.
STREAM_END_SECONDS = 1.0
# logs.py writes the hub's own records here, inside `log_path`.
HUB_LOG_NAME = "hub.log"
VIEW_TEMPLATE = "hub_logs.html.jinja"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
# A bare CR (a progress bar) would end an SSE field early: each piece is its own field.
_LINE_BREAKS = re.compile(r"\r\n|\r|\n")

_STOP_KEY: web.AppKey[asyncio.Event] = web.AppKey("logs_stop")
_STREAMS_KEY: web.AppKey[set[asyncio.Task[object]]] = web.AppKey("logs_streams")


def setup_logs_api(app: web.Application) -> None:
    """Register `/hub/logs` and `/hub/logs/view`; end open streams at shutdown."""
    app[_STOP_KEY] = asyncio.Event()
    app[_STREAMS_KEY] = set()
    app.router.add_get("/hub/logs", logs)
    app.router.add_get("/hub/logs/view", logs_view)
    app.on_shutdown.append(_end_streams)


def _log_file(request: web.Request) -> tuple[str, Path]:
    """(what the log is of, its path) for the `model` query parameter."""
    supervisor = request.app[SUPERVISOR_KEY]
    name = request.query.get("model")
    if name is None:
        return "hub", supervisor.config.log_path / HUB_LOG_NAME
    config = supervisor.get(name).config  # 404 for an unknown model
    if config.log_file is None:
        raise HubError(f"Model '{config.name}' has no log file (no_log_file is set)", 404)
    return config.name, config.log_file


def _line_count(request: web.Request, follow: bool) -> int:
    raw = request.query.get("lines")
    if raw is None:
        return DEFAULT_LINES
    lowest = 0 if follow else 1
    try:
        count = int(raw)
    except ValueError:
        count = -1
    if not lowest <= count <= MAX_LINES:
        raise HubError(f"'lines' must be a whole number from {lowest} to {MAX_LINES}", 400)
    return count


def _follow(request: web.Request) -> bool:
    raw = request.query.get("follow", "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise HubError("'follow' must be 1 or 0", 400)


async def logs(request: web.Request) -> web.StreamResponse:
    """`GET /hub/logs`: the last lines as text, or with `follow=1` a live SSE stream."""
    follow = _follow(request)
    count = _line_count(request, follow)
    _name, path = _log_file(request)
    if not follow:
        lines = await tail_lines(path, count)
        return web.Response(
            text="".join(lines),
            content_type="text/plain",
            charset="utf-8",
            headers={"Cache-Control": "no-store"},
        )
    return await _stream(request, path, count)


async def _stream(request: web.Request, path: Path, count: int) -> web.StreamResponse:
    """Send the last `count` lines and then new ones until the client or the hub stops."""
    app = request.app
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # a reverse proxy in front must not hold lines back
        }
    )
    await response.prepare(request)
    task = asyncio.current_task()
    assert task is not None
    app[_STREAMS_KEY].add(task)
    # An async generator (typed as an iterator): closed here, so its file is too.
    lines = cast(
        AsyncGenerator[str, None],
        follow_lines(path, count, stop=app[_STOP_KEY], heartbeat=HEARTBEAT_SECONDS),
    )
    try:
        async with contextlib.aclosing(lines):
            async for line in lines:
                await response.write(_event(line))
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away: the follower is closed all the same
    finally:
        app[_STREAMS_KEY].discard(task)
    return response


def _event(line: str) -> bytes:
    """One SSE event for a log line; "" (a quiet spell) is a comment heartbeat."""
    if not line:
        return b": keep-alive\n\n"
    pieces = _LINE_BREAKS.split(line.removesuffix("\n"))
    return "".join(f"data: {piece}\n" for piece in pieces).encode() + b"\n"


async def _end_streams(app: web.Application) -> None:
    """Stop every follower; cancel the streams that do not end in STREAM_END_SECONDS."""
    app[_STOP_KEY].set()
    streams = app[_STREAMS_KEY].copy()
    if not streams:
        return
    _done, stuck = await asyncio.wait(streams, timeout=STREAM_END_SECONDS)
    for task in stuck:
        task.cancel()


async def logs_view(request: web.Request) -> web.Response:
    """`GET /hub/logs/view`: a page that shows the log live (through `/hub/logs?follow=1`)."""
    if not request.app[SUPERVISOR_KEY].config.enable_status_page:
        return error_response(DISABLED_MESSAGE, 404)
    name, path = _log_file(request)
    context = {
        "title": "Hub log" if request.query.get("model") is None else f"Log of {name}",
        "log_path": str(path),
        "js_url": _asset_url(request, "hub_logs.js"),
    }
    return _render(request, VIEW_TEMPLATE, context)
