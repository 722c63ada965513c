"""The CLI's HTTP client for a running hub (synchronous, standard library only).

Kept free of aiohttp, psutil and the hub's server modules so that short commands such as
`status` start fast; the rules it shares with the hub come from `contract`. Errors carry
the reference's wording:

- `Failed to contact hub daemon at <base>: <err>` when nothing answers;
- `Daemon responded <code>: <payload>` for an HTTP error, where payload is the Python
  repr of the parsed JSON body (usually the OpenAI error envelope).
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import attrs

# Re-exported: the CLI imports these host and token rules from here.
from .contract import WILDCARD_HOSTS as WILDCARD_HOSTS
from .contract import base_url_for as base_url_for
from .contract import browse_host as browse_host
from .contract import connect_host as connect_host
from .contract import read_runtime_file
from .contract import read_token as read_token
from .contract import url_host as url_host
from .process_group import pid_alive as pid_alive

# Connecting to a local hub is instant; a slow connect means nothing useful is there.
CONNECT_TIMEOUT = 5.0
# For reads that should be quick (status, health). Actions use no read timeout at all.
QUICK_TIMEOUT = 15.0
# A followed log: the hub sends a comment every 15 s of quiet; four missed is a lost hub.
FOLLOW_TIMEOUT = 60.0


class HubClientError(Exception):
    """Any failure talking to the hub; `str()` is the message shown to the user."""


class HubUnreachable(HubClientError):
    """Nothing answered at the hub's address (connection refused, timeout, DNS...)."""

    def __init__(self, base_url: str, reason: object) -> None:
        super().__init__(f"Failed to contact hub daemon at {base_url}: {reason}")
        self.base_url = base_url
        self.reason = reason


def _as_the_reference_shows(payload: Any) -> Any:
    """The envelope without the hub's `request_id` (the reference's CLI printed none)."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict) or "request_id" not in error:
        return payload
    return {**payload, "error": {k: v for k, v in error.items() if k != "request_id"}}


class HubHTTPError(HubClientError):
    """The hub answered with an HTTP error status."""

    def __init__(self, status: int, payload: Any) -> None:
        super().__init__(f"Daemon responded {status}: {_as_the_reference_shows(payload)!r}")
        self.status = status
        self.payload = payload

    @property
    def message(self) -> str:
        """The envelope's `error.message`, else the whole payload as text."""
        return envelope_message(self.payload) or repr(self.payload)


def envelope_message(payload: Any) -> str | None:
    """`error.message` of an OpenAI error envelope (or `detail` of a bare error), if any."""
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    detail = payload.get("detail")
    return detail if isinstance(detail, str) else None


def read_runtime(path: Path) -> dict[str, Any] | None:
    """The hub's runtime file (as JSON data) when it is valid and names a live pid, else None."""
    state = read_runtime_file(path)
    if state is None or not pid_alive(state.pid):
        return None
    return attrs.asdict(state)


@dataclass
class HubLocation:
    """Where a hub listens, and what its runtime file says about it (if it is running)."""

    host: str
    port: int
    runtime: dict[str, Any] | None = None

    @property
    def base_url(self) -> str:
        """The URL a client connects to."""
        return base_url_for(connect_host(self.host), self.port)

    @property
    def pid(self) -> int | None:
        """The hub's pid, from a live runtime file."""
        return self.runtime.get("pid") if self.runtime else None


def locate(host: str, port: int, runtime_path: Path) -> HubLocation:
    """The hub's address: the live runtime file's host/port, else the config's."""
    runtime = read_runtime(runtime_path)
    if runtime is not None:
        return HubLocation(runtime["host"], runtime["port"], runtime)
    return HubLocation(host, port, None)


@dataclass
class HubClient:
    """Blocking JSON client for the hub's `/health` and `/hub/...` routes.

    Each call opens its own connection, so one client may be shared between threads.
    """

    location: HubLocation
    token_path: Path | None = None
    token: str | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        """The URL requests go to."""
        return self.location.base_url

    def _token(self) -> str | None:
        # Read at call time: a hub started by this very command writes hub.token late.
        return self.token or read_token(self.token_path)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        timeout: float | None = QUICK_TIMEOUT,
    ) -> Any:
        """Send one request and return the parsed JSON body (None when empty).

        `timeout` bounds each socket read; None waits as long as the hub works on it.
        Raises HubUnreachable or HubHTTPError.
        """
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        conn, response = self._open(method, path, data, headers, timeout)
        payload = _parse_body(self._read_body(conn, response))
        if response.status >= 400:
            raise HubHTTPError(response.status, payload)
        return payload

    def _open(
        self,
        method: str,
        path: str,
        data: bytes | None,
        headers: dict[str, str],
        timeout: float | None,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Connect, send, and read the response's head; the caller reads the body and closes."""
        headers = {**headers, "Connection": "close"}
        token = self._token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        conn = http.client.HTTPConnection(
            connect_host(self.location.host), self.location.port, timeout=CONNECT_TIMEOUT
        )
        try:
            conn.connect()
            assert conn.sock is not None
            conn.sock.settimeout(timeout)
            conn.request(method, path, body=data, headers=headers)
            return conn, conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise HubUnreachable(self.base_url, _reason(exc)) from exc

    def _read_body(
        self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse
    ) -> bytes:
        """The whole body, then the connection closed."""
        try:
            return response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise HubUnreachable(self.base_url, _reason(exc)) from exc
        finally:
            conn.close()

    def _open_log(
        self, model: str | None, lines: int, follow: bool, timeout: float | None
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """GET /hub/logs with its query; an HTTP error is read and raised as HubHTTPError."""
        query = {"lines": str(lines)} if model is None else {"model": model, "lines": str(lines)}
        if follow:
            query["follow"] = "1"
        accept = "text/event-stream" if follow else "text/plain"
        conn, response = self._open(
            "GET", f"/hub/logs?{urlencode(query)}", None, {"Accept": accept}, timeout
        )
        if response.status < 400:
            return conn, response
        raise HubHTTPError(response.status, _parse_body(self._read_body(conn, response)))

    def log_tail(self, model: str | None, lines: int) -> str:
        """GET /hub/logs: the last `lines` lines of a model's log, or the hub's (None)."""
        conn, response = self._open_log(model, lines, False, QUICK_TIMEOUT)
        return self._read_body(conn, response).decode("utf-8", errors="replace")

    def follow_log(self, model: str | None, lines: int) -> Iterator[str]:
        """GET /hub/logs?follow=1: the last `lines` lines, then each new one, as they come.

        Connects before it returns (so HubUnreachable and HubHTTPError are raised here);
        the iterator yields each event's data (a log line without its newline) and ends
        when the hub ends the stream. A hub silent for FOLLOW_TIMEOUT (it sends a comment
        every 15 s) counts as gone.
        """
        conn, response = self._open_log(model, lines, True, FOLLOW_TIMEOUT)
        return self._events(conn, response)

    def _events(
        self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse
    ) -> Iterator[str]:
        try:
            yield from sse_data(response)
        except (OSError, http.client.HTTPException) as exc:
            raise HubUnreachable(self.base_url, _reason(exc)) from exc
        finally:
            conn.close()

    def health(self, timeout: float = 2.0) -> dict[str, Any]:
        """GET /health."""
        return self.request("GET", "/health", timeout=timeout)

    def is_up(self, timeout: float = 2.0) -> bool:
        """True when the hub answers /health."""
        try:
            self.health(timeout=timeout)
        except HubClientError:
            return False
        return True

    def status(self, timeout: float | None = QUICK_TIMEOUT) -> dict[str, Any]:
        """GET /hub/status."""
        return self.request("GET", "/hub/status", timeout=timeout)

    def reload(self) -> dict[str, Any]:
        """POST /hub/reload (no read timeout: the hub re-reads hub.yaml off its loop)."""
        return self.request("POST", "/hub/reload", timeout=None)

    def shutdown(self) -> dict[str, Any]:
        """POST /hub/shutdown (the hub answers, then drains and exits)."""
        return self.request("POST", "/hub/shutdown", timeout=QUICK_TIMEOUT)

    def model_action(self, name: str, action: str, *, timeout: float | None = None) -> Any:
        """POST /hub/models/<name>/<action>; by default waits until the action finished."""
        return self.request(
            "POST", f"/hub/models/{quote(name, safe='')}/{action}", {}, timeout=timeout
        )

    def wait_until_up(self, deadline: float, interval: float = 0.2) -> bool:
        """Poll /health until it answers or `deadline` (a time.monotonic value) passes."""
        while time.monotonic() < deadline:
            if self.is_up(timeout=1.0):
                return True
            time.sleep(interval)
        return False


def sse_data(lines: Iterable[bytes]) -> Iterator[str]:
    """The data of each server-sent event in `lines` (several `data:` lines joined by \\n).

    Comment lines (`:` first) and other fields are skipped; a blank line ends an event,
    and an event cut off by the end of the stream is dropped (as the SSE rules say).
    """
    data: list[str] = []
    for raw in lines:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
            data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


def _reason(exc: BaseException) -> str:
    """Short text for a transport error, like httpx's (`[Errno 111] Connection refused`)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc)
    return text or type(exc).__name__


def _parse_body(raw: bytes) -> Any:
    """JSON body → object; empty → None; non-JSON or non-dict → `{"raw": text}`."""
    if not raw:
        return None
    text = raw.decode("utf-8", errors="replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        return {"raw": text}
    return parsed if isinstance(parsed, dict) else {"raw": text}
