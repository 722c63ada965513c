"""Fuzzing the HTTP surface of one real hub with Hypothesis (fixed seed, bounded run time).

Random methods, paths (route templates with hostile segments, or random paths), headers
and bodies go to /v1/*, /hub/* (with and without the token) and /health; random bytes go
straight to the socket. Every answer must be:

- below 500, except 503 for the one model of this hub that is stopped (a model that is
  not started is legitimately unavailable; the message says how to start it). 502 and
  504 (worker unreachable / silent) cannot happen here: the only started worker is
  healthy and the fuzzer never sends the fake worker's fault fields (`fake_*`);
- for an error, the OpenAI envelope `{"error": {"message", "type", "param", "code", "request_id"}}`
  with `code` equal to the status. Two answers are HTML by design: the status page's
  login form (`GET /hub`, `/hub/login`: 401 for a visitor without a session) and the
  page itself. Bytes that are not HTTP at all never reach a route: aiohttp's parser
  answers them with its own plain-text 400 and closes the connection;
- followed by a healthy hub: `/health` answers after every example, and at the end the
  loaded model still has the same worker and the hub logged no unhandled error.

Nothing destructive is fuzzed: /hub/shutdown and /hub/service/stop are never sent with
the token, and control actions only ever name models that do not exist.
"""

from __future__ import annotations

import collections
import gzip
import http.client
import json
import socket
import string
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Hub, fake_model

from . import figure, module_hub

MODELS = [fake_model("a", default=True), fake_model("b")]
REGISTERED = {"a", "b", "/models/a", "/models/b"}
JSON_ROUTES = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/v1/embeddings",
    "/v1/images/generations",
]
MULTIPART_ROUTES = ["/v1/images/edits", "/v1/audio/transcriptions"]
# Examples per test: about 30 s of fuzzing in all (two CPUs, 2026).
HTTP_EXAMPLES = 2500
RAW_EXAMPLES = 600
MULTIPART_EXAMPLES = 300
FUZZ_SETTINGS = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

STATS: collections.Counter[str] = collections.Counter()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """One hub for the module: model `a` loaded, model `b` stopped."""
    with module_hub(tmp_path_factory.mktemp("fuzz"), MODELS) as hub:
        deadline = time.monotonic() + 30
        while _model(hub, "a")["memory_state"] != "loaded":
            assert time.monotonic() < deadline, "model a never loaded"
            time.sleep(0.1)
        worker_pid = _model(hub, "a")["pid"]
        yield hub
        # The hub survived everything: same worker, no unhandled error logged.
        assert hub.proc is not None and hub.proc.poll() is None
        assert _model(hub, "a")["pid"] == worker_pid
        log = (hub.log_path / "hub.log").read_text(errors="replace")
        assert "Unhandled error" not in log, log[-3000:]


# ------------------------------------------------------------------ helpers


def request(
    hub: Hub,
    method: str,
    path: str,
    headers: dict[str, Any] | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP request (any method, path, header and body bytes).

    An answer in HTTP/1.0 comes from aiohttp's parser, not from a route (see
    `check_answer`): its headers get `x-parser: 1`.
    """
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        all_headers = {"Host": f"127.0.0.1:{hub.port}", **(headers or {})}
        if body is not None:
            all_headers.setdefault("Content-Length", str(len(body)))
        for key, value in all_headers.items():
            conn.putheader(key, value)
        conn.endheaders(body)
        resp = conn.getresponse()
        headers = {k.lower(): v for k, v in resp.getheaders()}
        if resp.version == 10:
            headers["x-parser"] = "1"
        return resp.status, headers, resp.read()
    finally:
        conn.close()


def _model(hub: Hub, name: str) -> dict[str, Any]:
    status, _, body = request(hub, "GET", "/hub/status", hub.auth)
    assert status == 200, body
    return next(m["metadata"] for m in json.loads(body)["models"] if m["id"] == name)


def assert_healthy(hub: Hub) -> None:
    """/health answers at once, and the hub process is alive."""
    status, _, body = request(hub, "GET", "/health")
    assert status == 200, body
    assert hub.proc is not None and hub.proc.poll() is None, hub.output()[-3000:]


def check_answer(method: str, path: str, status: int, headers: dict[str, str], body: bytes) -> None:
    """The rules of the module docstring."""
    STATS[f"{status // 100}xx"] += 1
    STATS[str(status)] += 1
    route = urllib.parse.urlsplit(path).path
    if status >= 500:
        message = _envelope(status, headers, body)["message"]
        assert status == 503 and "Model 'b' is stopped" in message, (method, path, status, body)
        return
    if status < 400 or method == "HEAD":
        return
    if "x-fake-worker-pid" in headers:
        # The worker's own answer, passed through as it is (the hub never rewrites them).
        error = json.loads(body)["error"]
        assert isinstance(error["message"], str), error
        STATS["worker 4xx"] += 1
        return
    if status == 400 and "x-parser" in headers:
        # aiohttp's HTTP parser refused the message before any route saw it (a header
        # value with control characters): plain text, and the connection is closed.
        STATS["parser 400"] += 1
        return
    if headers.get("content-type", "").startswith("text/html"):
        assert route in ("/hub", "/hub/login") and status == 401, (method, path, status)
        return
    _envelope(status, headers, body)


def _envelope(status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    assert headers.get("content-type", "").startswith("application/json"), (status, body[:300])
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code", "request_id"}, error
    assert error["code"] == str(status) and isinstance(error["message"], str), error
    return dict(error)


# --------------------------------------------------------------- strategies

HOSTILE_SEGMENTS = [
    "..",
    "../../etc/passwd",
    "..%2F..%2Fhub.yaml",
    "%2e%2e%2f%2e%2e%2fhub.token",
    "%00",
    "a%00b",
    "%2F",
    "%ff%fe",
    "x" * 5000,
    urllib.parse.quote("模型"),
    urllib.parse.quote("🙂"),
    "%ED%A0%80",  # a lone surrogate, UTF-8 encoded
    "a%20",
    "con",
    "%25",
]


def _segment_ok(text: str) -> bool:
    # Only names that do not exist: actions on real models would change the hub's state.
    name = urllib.parse.unquote(text, errors="replace").strip()
    return name not in REGISTERED and "/" not in name


segments = st.one_of(
    st.sampled_from(HOSTILE_SEGMENTS),
    st.text(min_size=1, max_size=40).map(lambda t: urllib.parse.quote(t, safe="")),
    st.text(string.ascii_letters + string.digits + "-_.~", min_size=1, max_size=20),
).filter(_segment_ok)

paths = st.one_of(
    st.sampled_from([*JSON_ROUTES, *MULTIPART_ROUTES]),
    st.sampled_from(["/v1/models", "/health", "/hub", "/hub/status", "/hub/login"]),
    st.sampled_from(["/hub/reload", "/hub/service/start", "/hub/service/reload"]),
    st.builds(
        "/hub/models/{}/{}".format,
        segments,
        st.sampled_from(["start", "stop", "load", "unload", "vram/load", "vram/unload", "x"]),
    ),
    st.builds("/hub/static/{}".format, segments),
    st.builds("/v1/queue/stats?model={}".format, segments),
    st.builds("/v1/{}".format, segments),
    st.builds("/{}".format, segments),
    st.builds(
        "{}?{}".format,
        st.sampled_from(JSON_ROUTES),
        st.text(max_size=30).map(lambda t: urllib.parse.quote(t, safe="=&")),
    ),
)

# POST half of the time: most routes take POST, and other methods only ever get 405.
methods = st.one_of(
    st.just("POST"),
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "PROPFIND"]),
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=50),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.text(max_size=10).filter(lambda k: not k.startswith("fake")), inner),
    ),
    max_leaves=20,
)
# Request-shaped objects: the fields a worker reads, with right and wrong types.
models_field = st.one_of(st.sampled_from(sorted(REGISTERED)), json_scalars, st.just("  a  "))
small_ints = st.integers(-3, 4)
openai_objects = st.fixed_dictionaries(
    {},
    optional={
        "model": models_field,
        "messages": st.one_of(
            st.lists(
                st.fixed_dictionaries(
                    {"role": st.sampled_from(["user", "system", "x"]), "content": json_values}
                ),
                max_size=3,
            ),
            json_values,
        ),
        "prompt": json_values,
        "input": json_values,
        "stream": st.one_of(st.booleans(), json_scalars),
        "stream_options": json_values,
        "n": small_ints,
        "dimensions": small_ints,
        "encoding_format": st.sampled_from(["float", "base64", "x"]),
        "temperature": json_scalars,
        "max_tokens": small_ints,
        "tools": json_values,
    },
)


def _truncate(data: bytes, cut: float) -> bytes:
    return data[: int(len(data) * cut)]


# Valid requests (mostly for the loaded model) with one or two fields of any shape added.
nearly_valid = st.builds(
    lambda model, extra: {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra},
    st.sampled_from(["a", "a", "a", "b"]),
    st.dictionaries(
        st.sampled_from(["stream", "n", "temperature", "max_tokens", "stop", "tools", "user"]),
        json_values,
        max_size=2,
    ),
)
json_bodies = st.one_of(openai_objects, nearly_valid, json_values).map(
    lambda v: json.dumps(v).encode()
)
bodies = st.one_of(
    st.none(),
    st.just(b""),
    json_bodies,
    st.builds(_truncate, json_bodies, st.floats(0.0, 0.99)),
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"\xef\xbb\xbf{}", b"\x00" * 64, b"[" * 5000 + b"]" * 5000, b"{" * 200]),
    st.builds(lambda n: b'{"model": "' + b"a" * n + b'"}', st.integers(10_000, 1_000_000)),
)

# Header values HTTP allows (visible ASCII, space, tab and obs-text bytes 0x80-0xff); the
# raw socket fuzz below sends the forbidden ones.
header_values = st.one_of(
    st.text(string.printable.strip("\r\n\x0b\x0c"), max_size=40),
    st.binary(max_size=20).map(lambda b: bytes(c if c >= 0x20 and c != 0x7F else 0x80 for c in b)),
)
content_types = st.sampled_from(
    [
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "multipart/form-data; boundary=xyz",
        "application/json; charset=latin-1",
        "image/png",
        "",
        ";;;",
    ]
)
common_headers = st.fixed_dictionaries(
    {},
    optional={
        "Content-Type": st.one_of(content_types, header_values),
        "Content-Encoding": st.sampled_from(["gzip", "deflate", "identity", "br", "x-bogus"]),
        "Authorization": st.one_of(
            st.just("TOKEN"),
            st.just("Bearer TOKEN"),
            st.sampled_from(["Bearer", "Bearer ", "Basic Zm9vOmJhcg==", "bearer wrong"]),
            header_values.map(lambda v: b"Bearer " + (v if isinstance(v, bytes) else v.encode())),
        ),
        "Cookie": st.one_of(st.just("mlx_hub_session=forged"), header_values),
        "Accept": st.sampled_from(["text/html", "*/*", "text/event-stream"]),
        "X-Random": header_values,
    },
)
# A foreign Host or Origin is refused before the routes: only one example in four has one.
foreign = st.fixed_dictionaries(
    {},
    optional={
        "Origin": st.sampled_from(["null", "https://evil.example", "http://127.0.0.1"]),
        "Host": st.one_of(
            st.sampled_from(["[::1", "[::1]:x", "evil.example", "a@127.0.0.1", "", "localhost"]),
            header_values,
        ),
    },
)
header_sets = st.one_of(
    common_headers,
    common_headers,
    common_headers,
    st.builds(lambda a, b: {**a, **b}, common_headers, foreign),
)


def _real_token(headers: dict[str, Any], hub: Hub) -> dict[str, Any]:
    out = dict(headers)
    if out.get("Authorization") == "TOKEN":
        out["Authorization"] = hub.auth["Authorization"]
    elif out.get("Authorization") == "Bearer TOKEN":
        out["Authorization"] = "bearer " + hub.token  # the scheme is case-insensitive
    return out


# --------------------------------------------------------------------- tests


@settings(FUZZ_SETTINGS, max_examples=HTTP_EXAMPLES)
@given(method=methods, path=paths, headers=header_sets, body=bodies, gzipped=st.booleans())
def test_http_fuzz(
    hub: Hub, method: str, path: str, headers: dict[str, Any], body: bytes | None, gzipped: bool
) -> None:
    """Random requests: never a 5xx (but the stopped model's 503), always the envelope."""
    headers = _real_token(headers, hub)
    if gzipped and body:
        # A well-formed compressed body must be read as if it were plain.
        headers["Content-Encoding"] = "gzip"
        body = gzip.compress(body)
    status, answer_headers, answer = request(hub, method, path, headers, body)
    check_answer(method, path, status, answer_headers, answer)
    assert_healthy(hub)


@settings(FUZZ_SETTINGS, max_examples=MULTIPART_EXAMPLES)
@given(
    route=st.sampled_from([*MULTIPART_ROUTES, "/hub/login"]),
    parts=st.lists(
        st.tuples(
            st.one_of(st.sampled_from(["model", "file", "token", "image", "prompt"]), st.text()),
            st.binary(max_size=200),
            st.one_of(st.none(), st.text(max_size=30)),
        ),
        max_size=4,
    ),
    boundary=st.text(string.ascii_letters + string.digits, min_size=1, max_size=70),
    mangle=st.sampled_from(["none", "truncate", "wrong-boundary", "no-closing"]),
)
def test_multipart_fuzz(
    hub: Hub, route: str, parts: list[tuple[str, bytes, str | None]], boundary: str, mangle: str
) -> None:
    """Random, broken and truncated multipart forms on the upload routes and the login form."""
    lines: list[bytes] = []
    for name, data, filename in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        lines += [
            f"--{boundary}".encode(),
            b"Content-Disposition: " + disposition.encode("utf-8", "surrogatepass"),
            b"",
            data,
        ]
    if mangle != "no-closing":
        lines.append(f"--{boundary}--".encode())
    body = b"\r\n".join(lines) + b"\r\n"
    if mangle == "truncate":
        body = body[: len(body) // 2]
    sent_boundary = boundary + "x" if mangle == "wrong-boundary" else boundary
    headers = {"Content-Type": f"multipart/form-data; boundary={sent_boundary}"}
    status, answer_headers, answer = request(hub, "POST", route, headers, body)
    check_answer("POST", route, status, answer_headers, answer)
    assert_healthy(hub)


request_lines = st.builds(
    "{} {} {}\r\n".format,
    st.one_of(methods, st.text(min_size=0, max_size=10)),
    st.one_of(paths, st.text(max_size=30)),
    st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/9", "", "FOO"]),
).map(lambda line: line.encode("utf-8", "surrogatepass"))
raw_headers = st.lists(
    st.one_of(
        st.sampled_from(
            [
                b"Host: 127.0.0.1",
                b"Content-Length: 10",
                b"Content-Length: -1",
                b"Content-Length: 99999999999999999999",
                b"Content-Length: 5\r\nContent-Length: 6",
                b"Transfer-Encoding: chunked",
                b"Transfer-Encoding: gzip, chunked",
                b"Expect: 100-continue",
                b"Connection: upgrade\r\nUpgrade: websocket",
                b"X: " + b"y" * 9000,
                b"Bad Header: x",
                b": empty",
            ]
        ),
        st.binary(max_size=40),
    ),
    max_size=6,
)


@settings(FUZZ_SETTINGS, max_examples=RAW_EXAMPLES)
@given(line=request_lines, header_lines=raw_headers, tail=st.binary(max_size=200))
def test_raw_socket_fuzz(hub: Hub, line: bytes, header_lines: list[bytes], tail: bytes) -> None:
    """Bytes that may not be HTTP at all: a 4xx (or just a closed connection), never a 5xx."""
    data = line + b"\r\n".join(header_lines) + b"\r\n\r\n" + tail
    with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)  # the hub sees the end of what we send
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    statuses = [int(s) for s in _statuses(answer)]
    STATS["raw"] += 1
    for status in statuses:
        STATS[f"raw {status // 100}xx"] += 1
        assert status < 500 or status == 503, answer[:500]
    assert_healthy(hub)


def _statuses(answer: bytes) -> Iterator[bytes]:
    for line in answer.split(b"\r\n"):
        if line.startswith(b"HTTP/1.") and len(line) >= 12 and line[9:12].isdigit():
            yield line[9:12]


def test_zz_fuzz_figures(hub: Hub) -> None:
    """Record how many inputs of each kind were tried (runs after the fuzz tests)."""
    assert_healthy(hub)
    total = sum(STATS[k] for k in ("2xx", "3xx", "4xx", "5xx"))
    codes = ", ".join(f"{k}: {v}" for k, v in sorted(STATS.items()) if k.isdigit())
    figure(
        "Bad input",
        "random HTTP requests + multipart forms (Hypothesis, fixed seed)",
        f"{total} sent; by status {codes}; 5xx: {STATS['5xx']} (only the stopped model's 503)",
    )
    figure(
        "Bad input",
        "of which answered by the worker / by aiohttp's parser (plain 400)",
        f"{STATS['worker 4xx']} / {STATS['parser 400']}; every other error an OpenAI envelope",
    )
    figure("Bad input", "raw byte streams on the socket", f"{STATS['raw']} sent, no 5xx")
    figure(
        "Bad input",
        "hub health after each fuzz input",
        "/health answered every time; same worker; no unhandled error logged",
    )
