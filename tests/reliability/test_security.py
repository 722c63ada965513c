"""Who can control the hub: tokens, API keys, Host and Origin checks, secrets kept secret.

Already covered elsewhere (not repeated): /hub/status and one start without or with a
wrong token (tests/integration), the token file's 0600 mode, api_keys on chat
completions, and the status page's cookie, Origin, Host and login tests (tests/browser).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import stat
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from mlx_openai_server_hub import auth as auth_module
from tests.conftest import MARKER_ENV, Hub, fake_model

from . import figure, module_hub

API_KEY = "sk-reliability-test-key"
CONTROL_ROUTES = [
    ("GET", "/hub/status"),
    ("POST", "/hub/reload"),
    ("POST", "/hub/shutdown"),
    ("POST", "/hub/service/start"),
    ("POST", "/hub/service/stop"),
    ("POST", "/hub/service/reload"),
    *[("POST", f"/hub/models/a/{action}") for action in ("start", "stop", "load", "unload")],
    *[("POST", f"/hub/models/b/{action}") for action in ("start", "load")],
    ("POST", "/hub/models/a/vram/unload"),
    ("POST", "/hub/models/b/vram/load"),
]
V1_ROUTES = [
    ("POST", "/v1/chat/completions", {"model": "a", "messages": []}),
    ("POST", "/v1/completions", {"model": "a", "prompt": "x"}),
    ("POST", "/v1/responses", {"model": "a", "input": "x"}),
    ("POST", "/v1/embeddings", {"model": "a", "input": "x"}),
    ("POST", "/v1/images/generations", {"model": "a", "prompt": "x"}),
    ("POST", "/v1/images/edits", None),
    ("POST", "/v1/audio/transcriptions", None),
    ("GET", "/v1/models", None),
    ("GET", "/v1/queue/stats?model=a", None),
]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """Model `a` loaded, `b` stopped; /v1 behind an API key; the hub logs at DEBUG."""
    models = [fake_model("a", default=True), fake_model("b")]
    folder = tmp_path_factory.mktemp("security")
    with module_hub(folder, models, api_keys=[API_KEY], log_level="DEBUG") as hub:
        asyncio.run(hub.wait_for("a", lambda m: m["memory_state"] == "loaded"))
        yield hub


def send(
    hub: Hub,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    source: str = "127.0.0.1",
) -> tuple[int, str, dict[str, str]]:
    """(status, body text, headers) of one request from `source`, Host defaulting to
    127.0.0.1:port."""
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=30, source_address=(source, 0))
    try:
        all_headers = {"Host": f"127.0.0.1:{hub.port}", **(headers or {})}
        conn.request(method, path, body=body if method == "POST" else None, headers=all_headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace"), dict(resp.getheaders())
    finally:
        conn.close()


def states(hub: Hub) -> dict[str, tuple[str, str, int | None]]:
    status, text, _ = send(hub, "GET", "/hub/status", hub.auth)
    assert status == 200, text
    return {
        m["id"]: (
            m["metadata"]["process_state"],
            m["metadata"]["memory_state"],
            m["metadata"]["pid"],
        )
        for m in json.loads(text)["models"]
    }


def bad_credentials(hub: Hub) -> dict[str, tuple[dict[str, str], str]]:
    """Ways to ask without the token: headers, and a query string to add."""
    token = hub.token
    return {
        "none": ({}, ""),
        "wrong token": ({"Authorization": "Bearer wrong"}, ""),
        "token prefix": ({"Authorization": f"Bearer {token[:-1]}"}, ""),
        "token + 1 char": ({"Authorization": f"Bearer {token}x"}, ""),
        "upper-cased token": ({"Authorization": f"Bearer {token.upper()}"}, ""),
        "API key": ({"Authorization": f"Bearer {API_KEY}"}, ""),
        "token as Basic": ({"Authorization": f"Basic {token}"}, ""),
        "token without scheme": ({"Authorization": token}, ""),
        "token in X-Api-Key": ({"X-Api-Key": token}, ""),
        "token in query": ({}, "?" + urllib.parse.urlencode({"token": token})),
        "forged session cookie": ({"Cookie": "mlx_hub_session=forged"}, ""),
        "non-UTF-8 bytes": ({"Authorization": "Bearer \xff\xfe"}, ""),
    }


def test_control_api_refuses_every_way_without_the_token(hub: Hub) -> None:
    """Every control route × 12 kinds of wrong credential: 401, and nothing changes."""
    before = states(hub)
    tried = 0
    for method, path in CONTROL_ROUTES:
        for kind, (headers, query) in bad_credentials(hub).items():
            status, text, _ = send(hub, method, path + query, headers)
            tried += 1
            assert status == 401, (method, path, kind, status, text)
            error = json.loads(text)["error"]
            assert error["type"] == "authentication_error"
            assert hub.token not in text  # never echoed back
    assert hub.proc is not None and hub.proc.poll() is None  # /hub/shutdown did nothing
    assert states(hub) == before
    figure(
        "Security",
        f"control API: {len(CONTROL_ROUTES)} routes × {len(bad_credentials(hub))} kinds of "
        "missing or wrong credential",
        f"{tried}/{tried} refused with 401; nothing started, stopped or shut down",
    )


def test_v1_needs_an_api_key_when_set(hub: Hub) -> None:
    """Every /v1 route: 401 without a key, with a wrong one, or with the control token."""
    tried = 0
    for method, path, payload in V1_ROUTES:
        body = json.dumps(payload).encode() if payload is not None else b""
        for headers in ({}, {"Authorization": "Bearer sk-wrong"}, hub.auth):
            status, text, _ = send(hub, method, path, headers, body)
            tried += 1
            assert status == 401, (path, headers, status, text)
            assert hub.token not in text
        status, text, _ = send(hub, method, path, {"Authorization": f"Bearer {API_KEY}"}, body)
        assert status != 401, (path, text)
    figure(
        "Security",
        f"/v1 with api_keys set: {len(V1_ROUTES)} routes × 3 wrong credentials",
        f"{tried}/{tried} refused with 401",
    )


def test_foreign_host_names_are_refused(hub: Hub) -> None:
    """DNS rebinding: a Host that is not a name of this machine gets 403, token or not."""
    evil_hosts = [
        "evil.example",
        f"evil.example:{hub.port}",
        "127.0.0.1.evil.example",
        "localhost.evil.example",
        f"evil.example@127.0.0.1:{hub.port}",
        "",
        "127.0.0.2.nip.io",
        "[::1",
        "127.0.0.1/evil",
        f"127.0.0.1:{hub.port}.evil.example",
        "localhost:abc",
        "localhost:99999",
        "localhost:0",
        "localhost:",
    ]
    requests = [
        ("GET", "/hub/status", hub.auth),
        ("POST", "/hub/models/b/start", hub.auth),
        ("POST", "/v1/chat/completions", {"Authorization": f"Bearer {API_KEY}"}),
        ("GET", "/v1/models", {"Authorization": f"Bearer {API_KEY}"}),
        ("GET", "/hub", {}),
    ]
    tried = 0
    for host in evil_hosts:
        for method, path, headers in requests:
            status, text, _ = send(hub, method, path, {**headers, "Host": host}, b"{}")
            tried += 1
            assert status == 403, (host, path, status, text)
    for host in (f"localhost:{hub.port}", f"LOCALHOST:{hub.port}", f"[::1]:{hub.port}"):
        status, text, _ = send(hub, "GET", "/hub/status", {**hub.auth, "Host": host})
        assert status == 200, (host, text)
    assert states(hub)["b"][0] == "stopped"
    figure(
        "Security",
        f"DNS rebinding: {len(evil_hosts)} foreign Host names × {len(requests)} requests",
        f"{tried}/{tried} refused with 403",
    )


def test_cross_site_requests_to_v1_are_refused(hub: Hub) -> None:
    """A web page elsewhere posting to /v1 without a preflight ("simple" requests): 403."""
    key = {"Authorization": f"Bearer {API_KEY}"}
    body = json.dumps({"model": "b", "messages": []}).encode()
    tried = 0
    for origin in ("https://evil.example", "null", f"http://evil.example:{hub.port}"):
        for content_type in ("text/plain", "application/x-www-form-urlencoded"):
            headers = {"Origin": origin, "Content-Type": content_type}
            for extra in ({}, key):
                status, text, _ = send(
                    hub, "POST", "/v1/chat/completions", {**headers, **extra}, body
                )
                tried += 1
                assert status == 403 and "Cross-origin" in text, (origin, status, text)
    # The hub's own origin (its status page) and clients that send no Origin are served.
    own = {"Origin": f"http://127.0.0.1:{hub.port}", **key}
    status, _, _ = send(hub, "GET", "/v1/models", own)
    assert status == 200
    assert states(hub)["b"][0] == "stopped"
    figure(
        "Security",
        "cross-site simple POSTs to /v1 (3 origins × 2 content types × with/without key)",
        f"{tried}/{tried} refused with 403",
    )


def test_workers_listen_on_loopback_only(hub: Hub) -> None:
    """Nobody can reach a worker around the hub's checks: it binds 127.0.0.1."""
    pid = states(hub)["a"][2]
    assert pid is not None
    listening = [
        c for c in psutil.Process(pid).net_connections("inet") if c.status == psutil.CONN_LISTEN
    ]
    assert listening and all(c.laddr.ip == "127.0.0.1" for c in listening), listening
    figure("Security", "worker sockets", "bound to 127.0.0.1 only")


def test_workers_do_not_inherit_the_token(hub: Hub) -> None:
    """The hub runs with MLX_HUB_TOKEN set; its workers' environment lacks it."""
    assert hub.env["MLX_HUB_TOKEN"] == hub.token
    pid = states(hub)["a"][2]
    environ = psutil.Process(pid).environ()
    assert environ.get(MARKER_ENV) == hub.marker  # the rest is inherited
    assert "MLX_HUB_TOKEN" not in environ
    assert hub.token not in "\n".join(environ.values())
    figure("Security", "worker environment", "MLX_HUB_TOKEN not passed on")


def test_the_token_never_appears_in_logs_or_answers(hub: Hub) -> None:
    """After logins, control calls and failures at DEBUG level: no token in any file."""
    token = hub.token
    remote = {"Host": f"{socket.gethostname().lower()}:{hub.port}"}
    send(hub, "GET", "/hub/login?" + urllib.parse.urlencode({"token": token}), remote)
    send(
        hub,
        "POST",
        "/hub/login",
        {**remote, "Content-Type": "application/x-www-form-urlencoded"},
        urllib.parse.urlencode({"token": token}).encode(),
    )
    for method, path in CONTROL_ROUTES[:2]:
        send(hub, method, path, hub.auth)
    send(hub, "POST", "/hub/models/ghost/start", hub.auth)  # an error, with the token
    send(hub, "POST", "/v1/chat/completions", {**hub.auth, "Authorization": f"Bearer {API_KEY}"})
    # A /v1 request carrying the token and a cookie: neither may reach the worker.
    status, text, _ = send(
        hub,
        "POST",
        "/v1/chat/completions",
        {"Authorization": f"Bearer {API_KEY}", "Cookie": f"x={token}"},
        json.dumps({"model": "a", "messages": [{"role": "user", "content": "hi"}]}).encode(),
    )
    assert status == 200 and token not in text
    folder = hub.config_path.parent
    checked = []
    for path in folder.rglob("*"):
        if path.is_file() and path.name != "hub.yaml" and path.name != "hub.token":
            assert token not in path.read_text(errors="replace"), path
            checked.append(path.name)
    assert "hub.log" in checked and "a.log" in checked and "serve.out" in checked
    figure(
        "Security",
        "token in hub.log (DEBUG), model logs, output, runtime file",
        f"absent from all {len(checked)} files",
    )


def test_token_file_is_private_from_its_first_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written to a file beside it made by open(O_CREAT | O_EXCL, 0o600), even under umask
    000, then linked into place whole: never chmod-ed later, never seen half-written."""
    monkeypatch.delenv(auth_module.TOKEN_ENV_VAR, raising=False)
    calls: list[tuple[str, Any]] = []
    real_open = os.open

    def spy_open(path: Any, flags: int, mode: int = 0o777, *args: Any, **kwargs: Any) -> int:
        calls.append(("open", (str(path), flags, mode)))
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(os, "chmod", lambda *a, **k: calls.append(("chmod", a)))
    old_umask = os.umask(0)
    try:
        token = auth_module.load_or_create_token(tmp_path / "sub" / "hub.token")
    finally:
        os.umask(old_umask)
    path = tmp_path / "sub" / "hub.token"
    (kind, (opened, flags, mode)), *rest = calls
    assert kind == "open" and Path(opened).parent == path.parent and opened != str(path)
    assert flags & os.O_CREAT and flags & os.O_EXCL and mode == 0o600
    assert all(kind == "open" and not call[1] & os.O_CREAT for kind, call in rest), rest
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == token and len(token) >= 32
    assert [p.name for p in path.parent.iterdir()] == ["hub.token"]  # no temporary left
    figure(
        "Security",
        "hub.token creation under umask 000",
        "O_CREAT|O_EXCL with mode 0600, linked whole: private from the first byte",
    )
