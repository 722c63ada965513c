"""The CLI's HTTP client: discovery, token, error wording, no read timeout for actions."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mlx_openai_server_hub import client as hub_client
from mlx_openai_server_hub.client import (
    HubClient,
    HubHTTPError,
    HubLocation,
    HubUnreachable,
    base_url_for,
    browse_host,
    connect_host,
    locate,
    read_runtime,
    read_token,
)


class FakeHub(BaseHTTPRequestHandler):
    """Answers like the hub; remembers what it was sent."""

    seen: list[dict] = []  # noqa: RUF012
    delay = 0.0

    def log_message(self, *_args: object) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        FakeHub.seen.append(
            {
                "method": self.command,
                "path": self.path,
                "auth": self.headers.get("Authorization"),
                "body": body,
            }
        )
        time.sleep(FakeHub.delay)
        if self.path == "/hub/models/nope/start":
            status, payload = (
                404,
                {
                    "error": {
                        "message": "Model 'nope' not found",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "404",
                    }
                },
            )
        elif self.path == "/text":
            status, payload = 500, "plain failure"
        else:
            status, payload = 200, {"status": "ok", "path": self.path}
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except BrokenPipeError:
            pass  # the client timed out on purpose

    do_GET = do_POST = _answer


@pytest.fixture
def fake_hub() -> Iterator[HubClient]:
    FakeHub.seen, FakeHub.delay = [], 0.0
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield HubClient(HubLocation("0.0.0.0", server.server_address[1]), token="tok")
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_wildcard_hosts_are_dialled_on_loopback_and_shown_as_localhost():
    for host in ("0.0.0.0", "::", "[::]", ""):
        assert connect_host(host) == "127.0.0.1"
        assert browse_host(host) == "localhost"
    assert connect_host("192.168.1.5") == "192.168.1.5"
    assert base_url_for("::1", 8000) == "http://[::1]:8000"
    assert HubLocation("0.0.0.0", 8123).base_url == "http://127.0.0.1:8123"
    assert HubLocation("::", 8123).base_url == "http://127.0.0.1:8123"


def test_token_comes_from_env_then_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    token_file = tmp_path / "hub.token"
    monkeypatch.delenv("MLX_HUB_TOKEN", raising=False)
    assert read_token(token_file) is None
    token_file.write_text("from-file\n")
    assert read_token(token_file) == "from-file"
    monkeypatch.setenv("MLX_HUB_TOKEN", "from-env-0123456789")
    assert read_token(token_file) == "from-env-0123456789"


def test_runtime_file_is_used_only_while_its_pid_lives(tmp_path: Path):
    runtime = tmp_path / "hub_runtime.json"
    assert read_runtime(runtime) is None
    runtime.write_text(json.dumps({"pid": os.getpid(), "host": "::", "port": 9999}))
    location = locate("127.0.0.1", 8000, runtime)
    assert (location.host, location.port, location.pid) == ("::", 9999, os.getpid())
    assert location.base_url == "http://127.0.0.1:9999"

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    runtime.write_text(json.dumps({"pid": dead.pid, "host": "::", "port": 9999}))
    location = locate("127.0.0.1", 8000, runtime)
    assert (location.host, location.port, location.runtime) == ("127.0.0.1", 8000, None)

    runtime.write_text("{not json")
    assert locate("h", 1, runtime).runtime is None


def test_requests_carry_the_token_and_parse_json(fake_hub: HubClient):
    assert fake_hub.status() == {"status": "ok", "path": "/hub/status"}
    fake_hub.model_action("a b/c", "start")
    assert FakeHub.seen[0]["auth"] == "Bearer tok"
    assert FakeHub.seen[1]["path"] == "/hub/models/a%20b%2Fc/start"
    assert FakeHub.seen[1]["method"] == "POST"


def test_error_envelope_keeps_the_reference_wording(fake_hub: HubClient):
    with pytest.raises(HubHTTPError) as info:
        fake_hub.model_action("nope", "start")
    assert info.value.status == 404
    assert str(info.value) == (
        "Daemon responded 404: {'error': {'message': \"Model 'nope' not found\", "
        "'type': 'invalid_request_error', 'param': None, 'code': '404'}}"
    )
    assert info.value.message == "Model 'nope' not found"
    with pytest.raises(HubHTTPError, match=r"Daemon responded 500: \{'raw': 'plain failure'\}"):
        fake_hub.request("GET", "/text")


def test_nothing_listening_gives_the_reference_message():
    port = free_port()
    client = HubClient(HubLocation("127.0.0.1", port))
    with pytest.raises(HubUnreachable) as info:
        client.status()
    assert str(info.value) == (
        f"Failed to contact hub daemon at http://127.0.0.1:{port}: [Errno 111] Connection refused"
    )
    assert not client.is_up()


def test_actions_wait_past_the_quick_timeout(fake_hub: HubClient, monkeypatch: pytest.MonkeyPatch):
    # A load can take minutes: model actions must not give up on a read timeout.
    monkeypatch.setattr(hub_client, "QUICK_TIMEOUT", 0.2)
    FakeHub.delay = 0.6
    assert fake_hub.model_action("slow", "load")["status"] == "ok"
    with pytest.raises(HubUnreachable, match="timed out"):
        fake_hub.request("GET", "/hub/status", timeout=0.2)
