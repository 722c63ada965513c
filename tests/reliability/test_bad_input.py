"""Hostile model names, cut-off bodies and stalled clients against one real hub.

The hub runs with its client timeouts shortened (the body idle timeout from 30 s to
1.5 s, the idle-connection timeout from 75 s to 3 s) so that they can be watched here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gzip
import http.client
import json
import os
import socket
import time
import urllib.parse
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from tests.conftest import Hub, fake_model

from . import figure, module_hub

BODY_IDLE = 1.5
IDLE_CONNECTION = 3.0
TUNE = {
    "mlx_openai_server_hub.bodies.BODY_IDLE_SECONDS": BODY_IDLE,
    "mlx_openai_server_hub.app.IDLE_CONNECTION_SECONDS": IDLE_CONNECTION,
}
CHAT = "/v1/chat/completions"

HOSTILE_NAMES = [
    "..",
    "../..",
    "../../etc/passwd",
    "../hub.token",
    "..\\..\\hub.yaml",
    "/etc/passwd",
    "a/../a",
    "a\x00b",
    "\x00",
    "a" * 300,
    "a" * 100_000,
    "模型",
    "🙂" * 50,
    "a\u202eb",  # right-to-left override
    "\ud800",  # a lone surrogate
    "hub.log",
    "hub_runtime.json",
    "CON",
    " ",
    "%2e%2e%2f",
]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """Model `a` loaded; the hub's client timeouts shortened (TUNE)."""
    with module_hub(
        tmp_path_factory.mktemp("bad-input"), [fake_model("a", default=True)], tune=TUNE
    ) as hub:
        asyncio.run(hub.wait_for("a", lambda m: m["memory_state"] == "loaded"))
        wait_for_startup_lines(hub.log_path / "a.log")
        yield hub
        log = (hub.log_path / "hub.log").read_text(errors="replace")
        assert "Unhandled error" not in log, log[-3000:]


def wait_for_startup_lines(log: Path, timeout: float = 10.0) -> None:
    """Until the worker's last start-up line is in its log.

    The hub marks a worker loaded on its health answer; the lines the worker printed
    before it may still be on their way through the output pump, and a line landing
    during the test would read as a file the hostile requests changed.
    """
    deadline = time.monotonic() + timeout
    while "Uvicorn running on" not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-2000:]
        time.sleep(0.05)


def raw_request(hub: Hub, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    """One request through http.client (paths are sent as given, percent-escapes and all)."""
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=30)
    try:
        headers = {**hub.auth, "Content-Type": "application/json"}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        try:
            return resp.status, json.loads(data)
        except ValueError:
            return resp.status, data
    finally:
        conn.close()


def tree(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file under `roots`: path → (size, mtime)."""
    found = {}
    for root in roots:
        for folder, _, files in os.walk(root):
            for name in files:
                path = Path(folder) / name
                with_stat = path.stat()
                found[str(path)] = (with_stat.st_size, with_stat.st_mtime_ns)
    return found


def test_hostile_model_names_get_4xx_and_touch_nothing(hub: Hub) -> None:
    """Traversal, NUL, very long, unicode names in paths, bodies and queries: 4xx only."""
    folder = hub.config_path.parent
    outside = [Path("/etc/passwd"), folder.parent]
    before = tree(folder)
    worker_log_before = (hub.log_path / "a.log").read_text(errors="replace")
    before_outside = {p: p.stat().st_mtime_ns for p in outside}
    statuses: dict[int, int] = {}
    tried = 0
    for name in HOSTILE_NAMES:
        quoted = urllib.parse.quote(name.encode("utf-8", "surrogatepass"), safe="")
        attempts = [
            ("POST", f"/hub/models/{quoted}/{action}", None)
            for action in ("start", "stop", "load", "unload", "vram/load", "vram/unload")
        ]
        attempts += [
            ("GET", f"/v1/queue/stats?model={quoted}", None),
            ("GET", f"/hub/static/{quoted}", None),
            ("POST", CHAT, json.dumps({"model": name, "messages": []}).encode()),
            ("POST", "/v1/embeddings", json.dumps({"model": name, "input": "x"}).encode()),
        ]
        for method, path, body in attempts:
            status, answer = raw_request(hub, method, path, body)
            tried += 1
            statuses[status] = statuses.get(status, 0) + 1
            assert 400 <= status < 500, (name[:50], path[:80], status, answer)
            if isinstance(answer, dict):
                assert set(answer["error"]) == {"message", "type", "param", "code", "request_id"}
            else:  # only the HTTP parser answers in plain text: a request line too long
                assert status == 400 and len(path) > 8000, (path[:80], answer[:200])
    # Only the hub's own log and output may have grown; nothing else moved.
    after = tree(folder)
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    worker_log_now = (hub.log_path / "a.log").read_text(errors="replace")
    assert changed <= {str(hub.log_path / "hub.log"), str(folder / "serve.out")}, (
        changed,
        worker_log_now[len(worker_log_before) :][-2000:],
    )
    assert {p: p.stat().st_mtime_ns for p in outside} == before_outside
    assert asyncio.run(hub.model("a"))["memory_state"] == "loaded"
    figure(
        "Bad input",
        f"hostile model names ({len(HOSTILE_NAMES)}: traversal, NUL, 100 KB, unicode) in "
        "control paths, /v1 bodies, queries, static paths",
        f"{tried} requests: {dict(sorted(statuses.items()))}; no file created or changed",
    )


@pytest.mark.parametrize("path", [CHAT, "/v1/embeddings", "/hub/reload", "/hub/models/a/load"])
@pytest.mark.parametrize(
    "body", [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000]
)
def test_absurdly_nested_json_is_a_400(hub: Hub, path: str, body: bytes) -> None:
    """JSON nested past the decoder's recursion limit is a bad request, not a 500."""
    status, answer = raw_request(hub, "POST", path, body)
    assert status == 400, (status, answer)
    assert "nested too deeply" in answer["error"]["message"]
    assert answer["error"]["code"] == "400"


def _send_and_close(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)


def test_cut_off_bodies_leave_nothing_behind(hub: Hub) -> None:
    """Clients that hang up mid-body: no request stays in flight, the hub stays well."""
    host = f"Host: 127.0.0.1:{hub.port}\r\n".encode()
    cases = [
        b"POST /v1/chat/completions HTTP/1.1\r\n" + host + b'Content-Length: 1000\r\n\r\n{"model',
        b"POST /v1/chat/completions HTTP/1.1\r\n"
        + host
        + b'Transfer-Encoding: chunked\r\n\r\n10\r\n{"model": "a", ',
        b"POST /v1/audio/transcriptions HTTP/1.1\r\n"
        + host
        + b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 900\r\n\r\n"
        + b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\na\r\n--b\r\n',
        b"POST /hub/reload HTTP/1.1\r\n" + host + b"Content-Length: 50\r\n\r\n{",
        b"POST /v1/chat/completions HTTP/1.1\r\n" + host + b"Content-Len",
    ]
    for data in cases * 10:
        _send_and_close(hub.port, data)
    time.sleep(0.3)
    meta = asyncio.run(hub.model("a"))
    assert meta["in_flight"] == 0 and meta["memory_state"] == "loaded"
    status, _ = raw_request(hub, "GET", "/health")
    assert status == 200
    figure(
        "Bad input",
        "bodies cut off mid-way (length, chunked, multipart)",
        f"{len(cases) * 10} sent; nothing left in flight",
    )


def client_sockets(hub: Hub) -> int:
    """Connections the hub holds on its own port (clients talking to it)."""
    assert hub.proc is not None
    return sum(
        1
        for conn in psutil.Process(hub.proc.pid).net_connections("tcp")
        if conn.laddr and conn.laddr.port == hub.port and conn.status != psutil.CONN_LISTEN
    )


class Stalled:
    """A raw connection that sent `data` and then stops."""

    def __init__(self, kind: str, port: int, data: bytes) -> None:
        self.kind = kind
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.sendall(data)
        self.opened = time.monotonic()

    def first_answer(self) -> tuple[float, bytes]:
        """(seconds until the hub answered or closed, the first bytes it sent)."""
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        return time.monotonic() - self.opened, data

    def close(self) -> None:
        self.sock.close()


def stalled_clients(hub: Hub, copies: int) -> list[Stalled]:
    host = f"Host: 127.0.0.1:{hub.port}\r\n".encode()
    token = f"Authorization: Bearer {hub.token}\r\n".encode()
    kinds = {
        "connects, sends nothing": b"",
        "half the headers": b"POST /v1/chat/completions HTTP/1.1\r\n" + host,
        "stalled JSON body": b"POST /v1/chat/completions HTTP/1.1\r\n"
        + host
        + b'Content-Length: 100\r\n\r\n{"model": "a"',
        "stalled chunked body": b"POST /v1/embeddings HTTP/1.1\r\n"
        + host
        + b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"mod\r\n',
        "stalled multipart": b"POST /v1/audio/transcriptions HTTP/1.1\r\n"
        + host
        + b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 500\r\n\r\n"
        + b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\na\r\n',
        "stalled control body": b"POST /hub/reload HTTP/1.1\r\n"
        + host
        + token
        + b"Content-Length: 100\r\n\r\n{",
        "stalled login form": b"POST /hub/login HTTP/1.1\r\n"
        + host
        + b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ntok",
    }
    return [Stalled(kind, hub.port, data) for kind, data in kinds.items() for _ in range(copies)]


async def _timed_chat(session: aiohttp.ClientSession, hub: Hub) -> float:
    t0 = time.monotonic()
    payload = {"model": "a", "messages": [{"role": "user", "content": "hi"}]}
    async with session.post(hub.url + CHAT, json=payload) as resp:
        assert resp.status == 200, await resp.text()
        await resp.read()
    return time.monotonic() - t0


def test_stalled_clients_do_not_block_others_and_are_cut(hub: Hub) -> None:
    """70 stalled connections: others are served at once; bodies get 408, idlers are closed."""
    clients = stalled_clients(hub, copies=10)
    # Each client waits for its first answer in its own thread, so that times are exact.
    pool = concurrent.futures.ThreadPoolExecutor(len(clients))
    answers = [pool.submit(client.first_answer) for client in clients]

    async def others() -> list[float]:
        async with aiohttp.ClientSession() as session:
            times = await asyncio.gather(*(_timed_chat(session, hub) for _ in range(50)))
            t0 = time.monotonic()
            await hub.status()
            return [*times, time.monotonic() - t0]

    served = asyncio.run(others())
    assert max(served) < 1.0, served  # nobody waited for the stalled clients

    results: dict[str, list[tuple[float, bytes]]] = {}
    for client, answer in zip(clients, answers, strict=True):
        results.setdefault(client.kind, []).append(answer.result())
        client.close()
    pool.shutdown()
    for kind, answers in results.items():
        for elapsed, data in answers:
            if "body" in kind or "multipart" in kind or "form" in kind:
                # The body idle timeout: 408 with the envelope, within about BODY_IDLE.
                assert data.startswith(b"HTTP/1.1 408"), (kind, data[:200])
                body = json.loads(data.split(b"\r\n\r\n", 1)[1])
                assert body["error"]["type"] == "timeout_error"
                assert BODY_IDLE <= elapsed < BODY_IDLE * 2 + 1.5, (kind, elapsed)
            else:
                # Never a complete request: closed without an answer after IDLE_CONNECTION.
                assert data == b"", (kind, data[:200])
                assert IDLE_CONNECTION - 0.5 <= elapsed < IDLE_CONNECTION + 2, (kind, elapsed)
    # Once lingering is over (aiohttp reads what is left of a body for 10 s at most),
    # the hub holds no connection from a client any more.
    deadline = time.monotonic() + 15
    while client_sockets(hub) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client_sockets(hub) == 0
    bodies = max(e for k, answers in results.items() if k.startswith("stalled") for e, _ in answers)
    idlers = max(
        e for k, answers in results.items() if not k.startswith("stalled") for e, _ in answers
    )
    figure(
        "Bad input",
        f"{len(clients)} stalled clients (no request, half the headers, stalled JSON, chunked, "
        "multipart, control and login bodies) while 50 requests are served",
        f"slowest other request {max(served) * 1000:.0f} ms; stalled bodies got 408 within "
        f"{bodies:.1f} s, the others were closed within {idlers:.1f} s (timeouts shortened to "
        f"{BODY_IDLE:g} s / {IDLE_CONNECTION:g} s from 30 s / 75 s); no client socket left",
    )


def test_a_slow_but_live_body_is_not_cut(hub: Hub) -> None:
    """A body trickling in for longer than the idle timeout, with no long gap, gets through."""
    payload = json.dumps({"model": "a", "messages": [{"role": "user", "content": "slow"}]})
    data = payload.encode()
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1:{hub.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    step = max(1, len(data) // 8)
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", hub.port), timeout=30) as sock:
        sock.sendall(head)
        for i in range(0, len(data), step):
            time.sleep(BODY_IDLE / 3)
            sock.sendall(data[i : i + step])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    elapsed = time.monotonic() - t0
    assert elapsed > BODY_IDLE * 2  # longer in all than the idle timeout
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert b"fake:/models/a:slow" in answer


def _send_in_two_parts(hub: Hub, path: str, headers: dict[str, str], body: bytes) -> Any:
    """The head, a pause, then the body: as a client on a real network often sends them.

    Returns (status, decoded JSON answer).
    """
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{hub.port}", "Connection: close"]
    lines += [f"{key}: {value}" for key, value in {**hub.auth, **headers}.items()]
    lines.append(f"Content-Length: {len(body)}")
    with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        time.sleep(0.2)  # the handler is running, waiting for the body
        sock.sendall(body)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read())


CHAT_BODY = json.dumps({"model": "a", "messages": [{"role": "user", "content": "squeezed"}]})


@pytest.mark.parametrize("path", [CHAT, "/hub/reload"])
@pytest.mark.parametrize("coding", ["deflate", "gzip"])
def test_a_body_that_does_not_decode_is_a_400_at_once(hub: Hub, path: str, coding: str) -> None:
    """Not a 408 after the idle timeout: aiohttp's own decoder left such a handler waiting."""
    t0 = time.monotonic()
    status, answer = _send_in_two_parts(hub, path, {"Content-Encoding": coding}, b"{}")
    assert status == 400, answer
    assert f"not valid {coding}" in answer["error"]["message"]
    assert time.monotonic() - t0 < BODY_IDLE  # answered, not timed out


@pytest.mark.parametrize(
    ("coding", "coded"),
    [("gzip", gzip.compress(CHAT_BODY.encode())), ("deflate", zlib.compress(CHAT_BODY.encode()))],
)
def test_a_compressed_body_reaches_the_worker_decoded(hub: Hub, coding: str, coded: bytes) -> None:
    headers = {"Content-Type": "application/json", "Content-Encoding": coding}
    status, answer = _send_in_two_parts(hub, CHAT, headers, coded)
    assert status == 200, answer
    assert answer["choices"][0]["message"]["content"] == "fake:/models/a:squeezed"


def test_a_body_inflating_past_100_mb_is_a_413(hub: Hub) -> None:
    bomb = gzip.compress(b" " * (100 * 1024 * 1024 + 1), compresslevel=1)
    status, answer = _send_in_two_parts(hub, CHAT, {"Content-Encoding": "gzip"}, bomb)
    assert status == 413, answer
    assert "once decoded" in answer["error"]["message"]
    assert asyncio.run(hub.model("a"))["in_flight"] == 0


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        (CHAT, {"Content-Encoding": "br"}),
        (CHAT, {"Content-Encoding": "gzip, x-bogus"}),
        (
            "/v1/audio/transcriptions",
            {"Content-Encoding": "gzip", "Content-Type": "multipart/form-data; boundary=b"},
        ),
    ],
)
def test_an_encoding_the_hub_does_not_decode_is_a_415(
    hub: Hub, path: str, headers: dict[str, str]
) -> None:
    status, answer = _send_in_two_parts(hub, path, headers, gzip.compress(b"--b--\r\n"))
    assert status == 415, answer
    assert answer["error"]["code"] == "415" and "Content-Encoding" in answer["error"]["message"]
