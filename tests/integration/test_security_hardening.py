"""Issue 16's holes, each reproduced against a real hub on real sockets.

A proxy on the same machine, another Unix user, huge login bodies, sessions that
never end, unlimited login guesses, `Connection`-listed headers, world-readable
logs and state files, empty or short tokens. Each test fails on the hub before the fix.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request

from mlx_openai_server_hub import proxy
from mlx_openai_server_hub.auth import SESSION_COOKIE, Auth
from mlx_openai_server_hub.memory import LearnedStore
from tests.cli import cli_env, run_cli
from tests.conftest import Hub, HubFactory, fake_model
from tests.reliability import module_hub
from tests.reliability.test_security import send

SESSION_SECONDS = 4.0
MAX_SESSIONS = 3
LOGIN_WINDOW_SECONDS = 3.0
PROXY_HEADERS = {
    "Forwarded": "for=203.0.113.9;proto=https",
    "X-Forwarded-For": "203.0.113.9",
    "X-Forwarded-Host": "hub.example",
    "X-Forwarded-Proto": "http",
    "X-Real-IP": "203.0.113.9",
    "Via": "1.1 nginx",
}

Answer = tuple[int, str, dict[str, str]]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """Model `a` (stopped); short sessions, a small session cap, a short login window."""
    tune = {
        "mlx_openai_server_hub.auth.SESSION_SECONDS": SESSION_SECONDS,
        "mlx_openai_server_hub.auth.MAX_SESSIONS": MAX_SESSIONS,
        "mlx_openai_server_hub.auth.LOGIN_WINDOW_SECONDS": LOGIN_WINDOW_SECONDS,
    }
    folder = tmp_path_factory.mktemp("hardening")
    with module_hub(folder, [fake_model("a")], tune=tune) as hub:
        yield hub


def local_cookie(hub: Hub) -> str:
    """`mlx_hub_session=…` as a local browser gets it on sight."""
    status, text, headers = send(hub, "GET", "/hub")
    assert status == 200 and "Set-Cookie" in headers, (status, text[:200])
    return headers["Set-Cookie"].split(";", 1)[0]


def token_login(
    hub: Hub, headers: dict[str, str] | None = None, source: str = "127.0.0.1"
) -> Answer:
    """POST the right token to the login form."""
    form = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
    body = urllib.parse.urlencode({"token": hub.token}).encode()
    return send(hub, "POST", "/hub/login", form, body, source)


def test_proxied_requests_get_no_automatic_session(hub: Hub) -> None:
    """Behind a proxy on this machine every visitor is a loopback peer: proxy headers → form."""
    for name, value in PROXY_HEADERS.items():
        for host in (f"localhost:{hub.port}", f"127.0.0.1:{hub.port}"):
            status, text, headers = send(hub, "GET", "/hub", {"Host": host, name: value})
            assert status == 401 and 'name="token"' in text, (name, status)
            assert "Set-Cookie" not in headers, name
    local_cookie(hub)  # the same request without them: a browser on this machine


def test_allowed_hosts_means_proxied_and_its_origin_is_ours(hub_factory: HubFactory) -> None:
    """With `allowed_hosts`, nobody gets a session on sight; the page's POSTs work behind nginx."""
    proxied = hub_factory([fake_model("a")], allowed_hosts=["hub.example"])
    status, text, headers = send(proxied, "GET", "/hub")
    assert status == 401 and "Set-Cookie" not in headers, text[:200]
    # nginx's default `proxy_pass http://127.0.0.1:PORT` sends Host 127.0.0.1:PORT.
    status, _, headers = token_login(proxied, {"Origin": "https://hub.example"})
    assert status == 303, status
    cookie = {"Cookie": headers["Set-Cookie"].split(";", 1)[0]}
    ours = send(proxied, "POST", "/hub/reload", {**cookie, "Origin": "https://hub.example"})
    assert ours[0] == 200, ours
    theirs = send(proxied, "POST", "/hub/reload", {**cookie, "Origin": "https://evil.example"})
    assert theirs[0] == 403, theirs


def test_page_posts_work_behind_a_proxy_passing_x_forwarded_host(hub: Hub) -> None:
    """Origin is the public name the proxy names in X-Forwarded-Host: same origin."""
    cookie = {"Cookie": local_cookie(hub)}
    public = {"Origin": "https://hub.example:8443"}
    refused = send(hub, "POST", "/hub/reload", {**cookie, **public})
    assert refused[0] == 403, refused
    forwarded = {**cookie, **public, "X-Forwarded-Host": "hub.example:8443"}
    assert send(hub, "POST", "/hub/reload", forwarded)[0] == 200
    rfc7239 = {**cookie, **public, "Forwarded": 'host="hub.example:8443";proto=https'}
    assert send(hub, "POST", "/hub/reload", rfc7239)[0] == 200


@pytest.mark.skipif(
    not hasattr(os, "fork") or os.geteuid() != 0, reason="needs root to act as another user"
)
def test_another_unix_user_gets_the_login_form(hub: Hub) -> None:
    """A loopback peer running as `nobody` cannot read hub.token: no session on sight."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the other user: one GET /hub, then report status and cookie
        code = 1
        try:
            os.close(read_end)
            os.setgid(65534)
            os.setuid(65534)
            status, _, headers = send(hub, "GET", "/hub")
            os.write(write_end, f"{status} {'Set-Cookie' in headers}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        answer = pipe.read()
    _, exit_status = os.waitpid(pid, 0)
    assert exit_status == 0 and answer == "401 False", answer
    local_cookie(hub)  # the hub's own user still gets one


def test_login_body_is_capped_before_reading(hub: Hub) -> None:
    """A 95 MB login post is refused from its Content-Length (413) without being read."""
    with socket.create_connection(("127.0.0.1", hub.port), timeout=5) as sock:
        sock.sendall(
            f"POST /hub/login HTTP/1.1\r\nHost: 127.0.0.1:{hub.port}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {95 * 2**20}\r\n\r\ntoken=".encode()
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 413"), "the hub waited for the body"
    # Chunked (no length): cut at the cap, 413 too.
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=30)
    try:
        form = "application/x-www-form-urlencoded"
        headers = {"Host": f"127.0.0.1:{hub.port}", "Content-Type": form}
        chunks = iter([b"token=" + b"x" * 2**20] * 4)
        conn.request("POST", "/hub/login", body=chunks, headers=headers, encode_chunked=True)
        assert conn.getresponse().status == 413
    finally:
        conn.close()


def test_sessions_expire_are_capped_and_end_on_logout(hub: Hub) -> None:
    """Sessions end after SESSION_SECONDS, beyond MAX_SESSIONS, and on POST /hub/logout."""
    cookies = [local_cookie(hub) for _ in range(MAX_SESSIONS + 1)]
    alive = [send(hub, "GET", "/hub/status", {"Cookie": c})[0] for c in cookies]
    assert alive == [401] + [200] * MAX_SESSIONS, alive  # the oldest one made room
    # Logout: only from the page's own origin; then the cookie is worthless.
    cookie = {"Cookie": cookies[-1]}
    assert send(hub, "POST", "/hub/logout", {**cookie, "Origin": "https://evil.example"})[0] == 403
    own = {**cookie, "Origin": f"http://127.0.0.1:{hub.port}"}
    status, _, headers = send(hub, "POST", "/hub/logout", own)
    assert status == 303 and headers["Location"] == "/hub/login"
    assert headers["Set-Cookie"].startswith(f'{SESSION_COOKIE}=""')
    assert send(hub, "GET", "/hub/status", cookie)[0] == 401
    # Expiry.
    time.sleep(SESSION_SECONDS + 0.5)
    assert send(hub, "GET", "/hub/status", {"Cookie": cookies[-2]})[0] == 401
    status, page, _ = send(hub, "GET", "/hub", {"Cookie": local_cookie(hub)})
    assert status == 200 and 'action="/hub/logout"' in page  # the page's Sign out button


def test_session_cookie_is_secure_over_https(hub: Hub) -> None:
    """A TLS proxy in front says so (X-Forwarded-Proto or Forwarded): the cookie is Secure."""
    for header in ({"X-Forwarded-Proto": "https"}, {"Forwarded": "proto=https"}):
        status, _, headers = token_login(hub, header)
        assert status == 303 and "Secure" in headers["Set-Cookie"], header
    status, _, headers = token_login(hub)
    assert status == 303 and "Secure" not in headers["Set-Cookie"]


def test_login_guesses_are_rate_limited_per_client(hub: Hub) -> None:
    """10 wrong tokens from one address: 429 (even for the right one) until the window passes."""
    guesser, other = "127.0.0.2", "127.0.0.3"
    try:
        socket.create_connection(("127.0.0.1", hub.port), source_address=(guesser, 0)).close()
    except OSError:
        pytest.skip("no 127.0.0.2 on this machine (macOS has only 127.0.0.1)")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for _ in range(10):
        assert send(hub, "POST", "/hub/login", form, b"token=guess", guesser)[0] == 401
    status, text, headers = token_login(hub, source=guesser)
    assert status == 429 and int(headers["Retry-After"]) >= 1, (status, text)
    assert send(hub, "GET", "/hub/login?token=guess", source=guesser)[0] == 429
    assert token_login(hub, source=other)[0] == 303  # another client is not locked out
    time.sleep(LOGIN_WINDOW_SECONDS + 0.5)
    assert token_login(hub, source=guesser)[0] == 303


def test_connection_listed_headers_are_not_forwarded() -> None:
    """RFC 9110 §7.6.1: a header that `Connection` names is for this hop only."""
    request = make_mocked_request(
        "POST",
        "/v1/chat/completions",
        headers={
            "Connection": "keep-alive, X-Hop-Secret , x-other",
            "X-Hop-Secret": "1",
            "X-Other": "2",
            "X-Kept": "3",
        },
    )
    forwarded = proxy._forward_headers(request)
    assert "X-Kept" in forwarded
    assert not {"Connection", "X-Hop-Secret", "X-Other"} & set(forwarded), forwarded


def test_log_files_are_private(hub: Hub) -> None:
    """Logs hold prompts' traces: the folder the hub made is 0700, every log file 0600."""
    status, text, _ = send(hub, "POST", "/hub/models/a/start", hub.auth)
    assert status == 200, text
    deadline = time.monotonic() + 20
    while not (hub.log_path / "a.log").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stat.S_IMODE(hub.log_path.stat().st_mode) == 0o700
    files = [p for p in hub.log_path.iterdir() if p.suffix == ".log"]
    assert {"hub.log", "a.log"} <= {p.name for p in files}, files
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_an_empty_token_file_gets_a_new_token_not_an_open_door(hub_factory: HubFactory) -> None:
    """`hub.token` left empty by a crash or a full disk: `?token=` must not sign anyone in."""
    hub = hub_factory([fake_model("a")], start=False, env={"MLX_HUB_TOKEN": ""})
    token_file = hub.config_path.parent / "hub.token"
    token_file.write_text("")
    hub.start()
    hub.wait_listening()
    remote = {"Host": f"{socket.gethostname().lower()}:{hub.port}"}
    status, text, headers = send(hub, "GET", "/hub/login?token=", remote)
    assert "Set-Cookie" not in headers, (status, text[:200])
    hub.token = token_file.read_text().strip()
    assert len(hub.token) >= 32
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert send(hub, "GET", "/hub/status", hub.auth)[0] == 200
    assert f"{token_file} was empty" in (hub.log_path / "hub.log").read_text()


def test_a_short_token_file_or_env_token_stops_the_hub_with_the_reason(
    hub_factory: HubFactory,
) -> None:
    """A token of a few characters is refused, naming where it came from; `start` says why."""
    hub = hub_factory([fake_model("a")], start=False)
    token_file = hub.config_path.parent / "hub.token"
    token_file.write_text("abc\n")
    result = run_cli("serve", config=hub.config_path, timeout=60)
    assert result.returncode == 1, result.stdout
    assert f"{token_file} holds a control token of 3 characters" in result.stderr
    env = cli_env(MLX_HUB_TOKEN="short")
    result = run_cli("start", config=hub.config_path, env=env, timeout=60)
    assert result.returncode == 1, result.stdout
    assert "MLX_HUB_TOKEN has 5 characters; a control token needs at least 16" in result.stderr
    result = run_cli("reload", config=hub.config_path, env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: MLX_HUB_TOKEN has 5 characters"), result.stderr


def test_an_empty_token_never_matches() -> None:
    """Every token check refuses an empty value; no Auth can hold an empty token."""
    auth = Auth("t" * 32, (), {"localhost"})
    assert not auth.check_token("") and not auth.check_token(None)
    with pytest.raises(ValueError, match="at least 16"):
        Auth("", (), {"localhost"})


def test_init_config_and_state_files_are_private(tmp_path: Path, hub: Hub) -> None:
    """hub.yaml (it may hold api_keys) and the hub's JSON state files: 0600, new folders 0700."""
    path = tmp_path / "new" / "hub.yaml"
    result = run_cli("init", config=path)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    status, text, _ = send(hub, "POST", "/hub/models/a/start", hub.auth)
    assert status == 200, text
    runtime = hub.log_path / "hub_runtime.json"
    help_cache = hub.log_path / "launch_help_cache.json"
    deadline = time.monotonic() + 20
    while not (runtime.exists() and help_cache.exists()) and time.monotonic() < deadline:
        time.sleep(0.05)
    for state_file in (runtime, help_cache):
        assert stat.S_IMODE(state_file.stat().st_mode) == 0o600, state_file
    store = LearnedStore(tmp_path / "memory_learned.json")
    store.put("a", "print", 1024)
    store.save()
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_an_unknown_worker_command_runs_unguarded_with_a_warning(hub: Hub) -> None:
    """The fake worker is no mlx-openai-server script: it runs as configured, and the
    status says its port is open (the real workers' guard: tests/e2e/test_worker_guard.py)."""
    status, text, _ = send(hub, "POST", "/hub/models/a/start", hub.auth)
    assert status == 200, text
    status, text, _ = send(hub, "GET", "/hub/status", hub.auth)
    warnings = json.loads(text)["warnings"]
    assert any("Model 'a'" in w and "worker port is not guarded" in w for w in warnings)
    worker = next(m for m in json.loads(text)["models"] if m["id"] == "a")["metadata"]
    conn = http.client.HTTPConnection("127.0.0.1", worker["port"], timeout=10)
    try:
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200  # reachable around the hub, as warned
    finally:
        conn.close()
