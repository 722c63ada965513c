#!/usr/bin/env python3
"""How much does the hub cost? The same worker, reached directly and through the hub.

One command::

    .venv/bin/python benchmarks/bench.py [--quick] [--real-worker PATH] [--real-jit N]
        [--json out.json] [--baseline benchmarks/baseline.json] [--strict] [--save-baseline]

It starts a real hub (``python -m mlx_openai_server_hub serve``) on a free loopback port
with fake workers (``tests/fake_worker.py``, and the real ``mlx-openai-server`` with a
tiny model when ``--real-worker`` is given). Every comparison sends the same bytes to the
same worker process, once to the worker's own port and once through the hub, in the same
run and interleaved where the phase allows it, so machine noise hits both sides alike:

- small non-streaming requests, one at a time: added latency (hub minus direct, p50/p99),
  and the hub/direct ratio with the real worker;
- streaming: time to the first body byte (added), throughput of a 20,000-chunk stream;
- 64 and 256 concurrent streams at 50 chunks/s each (and, in a full run, 64 unpaced
  streams): latency ratio, hub CPU time per request, hub peak RSS, errors;
- JIT: request to first answer byte through the hub, minus what the same worker command
  needs on its own (spawn → /health ready → first answer), for a first load, reloads, and
  a request sent the moment a fresh hub listens;
- the hub's idle RSS and the wall time of ``mlx-openai-server-hub status``.

It prints a table (targets, results, baseline), writes JSON, and with ``--strict`` exits 1
when a target is missed or a metric regressed against the baseline. See
docs/performance.md for the method and the numbers.

This process is the load generator: uvloop and a minimal keep-alive HTTP/1.1 client
(`RawClient`), cheap enough never to be the bottleneck. The hub and each worker are
separate processes. On a 2-core machine the three compete for CPU: the hub's numbers
include that contention, which is the honest cost on such a machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import yaml

REPO = Path(__file__).resolve().parent.parent
FAKE_WORKER = REPO / "tests" / "fake_worker.py"
DEFAULT_BASELINE = REPO / "benchmarks" / "baseline.json"
TOKEN = "bench-token-" + uuid.uuid4().hex
MARKER_ENV = "MLX_HUB_BENCH_MARKER"
TINY_MODEL_CACHE = Path(
    os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"),
    "mlx-openai-server-hub",
    "bench-tiny-model",
)


# ------------------------------------------------------------------ settings


@dataclass(frozen=True)
class Plan:
    """How much of each phase to run."""

    latency_pairs: int
    latency_warmup: int
    ttfb_pairs: int
    spaced_pairs: int
    stream_chunks: int
    stream_reps: int
    # Concurrent streams at a token-like pace (20 ms a chunk: 50 tokens/s per stream).
    conc_chunks: int
    conc_rounds: dict[int, int]
    # 64 streams as fast as the worker goes (rounds; 0: skip): the 2-core worst case.
    saturated_rounds: int
    jit_warm_rounds: int
    status_runs: int
    real_pairs: int
    real_jit_rounds: int


FULL = Plan(
    latency_pairs=2000,
    latency_warmup=200,
    ttfb_pairs=500,
    spaced_pairs=150,
    stream_chunks=20_000,
    stream_reps=7,
    conc_chunks=32,
    conc_rounds={64: 4, 256: 2},
    saturated_rounds=4,
    jit_warm_rounds=3,
    status_runs=7,
    real_pairs=150,
    real_jit_rounds=3,
)
QUICK = Plan(
    latency_pairs=300,
    latency_warmup=50,
    ttfb_pairs=100,
    spaced_pairs=40,
    stream_chunks=20_000,
    stream_reps=3,
    conc_chunks=8,
    conc_rounds={64: 2, 256: 2},
    saturated_rounds=0,
    jit_warm_rounds=1,
    status_runs=3,
    real_pairs=40,
    real_jit_rounds=-1,  # no real-worker JIT timing (about 10 s per load)
)


@dataclass(frozen=True)
class Metric:
    """One reported number: how to judge it against its target and its baseline."""

    key: str
    label: str
    unit: str
    lower_is_better: bool = True
    target: float | None = None
    # A change against the baseline counts as a regression beyond both tolerances.
    rel_tol: float = 0.5
    abs_tol: float = 0.0


M = Metric
METRICS: list[Metric] = [
    # key, label, unit, lower is better, target, baseline tolerance (relative, absolute)
    M("small.added_p50_ms", "small request: added p50", "ms", True, 1.0, 0.5, 0.3),
    M("small.added_p99_ms", "small request: added p99", "ms", True, 5.0, 0.5, 1.0),
    M("small.direct_p50_ms", "small request: direct p50", "ms", True, None, 0.5, 0.3),
    M("small.hub_p50_ms", "small request: hub p50", "ms", True, None, 0.5, 0.3),
    M("small.hub_p99_ms", "small request: hub p99", "ms", True, None, 0.5, 1.0),
    M("spaced.added_p50_ms", "requests 20 ms apart: added p50", "ms", True, None, 0.5, 0.5),
    M("spaced.added_p99_ms", "requests 20 ms apart: added p99", "ms", True, None, 0.5, 2.0),
    M("real.ratio_p50", "real worker: hub/direct p50", "x", True, None, 0.1, 0.05),
    M("real.ratio_p99", "real worker: hub/direct p99", "x", True, None, 0.2, 0.1),
    M("real.added_p50_ms", "real worker: added p50", "ms", True, None, 0.5, 1.0),
    M("real.stream_ttfb_added_ms", "real worker: first byte added p50", "ms", True, 1.0, 0.5, 0.5),
    M("stream.ttfb_added_p50_ms", "stream: first byte added p50", "ms", True, 1.0, 0.5, 0.3),
    M("stream.ttfb_added_p99_ms", "stream: first byte added p99", "ms", True, None, 0.5, 1.0),
    M("stream.throughput_ratio", "20k-chunk stream: hub/direct", "x", False, 0.90, 0.1, 0.05),
    M("stream.direct_chunks_per_s", "20k-chunk stream: direct", "chunk/s", False, None, 0.3),
    M("stream.hub_chunks_per_s", "20k-chunk stream: hub", "chunk/s", False, None, 0.3),
    M("conc64.ratio_p50", "64 streams @50/s: hub/direct p50", "x", True, None, 0.2, 0.1),
    M("conc64.ratio_p99", "64 streams @50/s: hub/direct p99", "x", True, None, 0.3, 0.15),
    M("conc64.hub_cpu_ms_per_req", "64 streams: hub CPU/request", "ms", True, None, 0.3, 0.2),
    M("conc64.hub_peak_rss_mb", "64 streams: hub peak RSS", "MB", True, 150.0, 0.15, 5),
    M("conc64.errors", "64 streams: errors", "", True, 0.0, 0.0, 0.0),
    M("conc256.ratio_p50", "256 streams @50/s: hub/direct p50", "x", True, None, 0.2, 0.1),
    M("conc256.ratio_p99", "256 streams @50/s: hub/direct p99", "x", True, None, 0.3, 0.15),
    M("conc256.hub_cpu_ms_per_req", "256 streams: hub CPU/request", "ms", True, None, 0.3, 0.2),
    M("conc256.hub_peak_rss_mb", "256 streams: hub peak RSS", "MB", True, 150.0, 0.15, 5),
    M("conc256.errors", "256 streams: errors", "", True, 0.0, 0.0, 0.0),
    M("saturated64.ratio_p50", "64 unpaced streams: hub/direct p50", "x", True, None, 0.3),
    M("saturated64.hub_cpu_ms_per_req", "64 unpaced streams: CPU/request", "ms", True, None, 0.3),
    M("jit.cold_overhead_ms", "JIT first load: overhead", "ms", True, 300.0, 0.5, 100),
    M("jit.warm_overhead_ms", "JIT reload: overhead", "ms", True, 300.0, 0.5, 100),
    M("jit.at_hub_start_overhead_ms", "JIT at hub start: overhead", "ms", True, 300, 0.5, 100),
    M("jit.at_hub_restart_overhead_ms", "JIT at hub restart: overhead", "ms", True, 300, 0.5, 100),
    M("jit.worker_ready_ms", "JIT: worker's own spawn→ready", "ms", True, None, 0.5, 100),
    M("real.jit_cold_overhead_ms", "real JIT first load: overhead", "ms", True, 300, 0.5, 1e3),
    M("real.jit_warm_overhead_ms", "real JIT reload: overhead", "ms", True, 300, 0.5, 1e3),
    M("real.jit_at_hub_start_overhead_ms", "real JIT at hub start", "ms", True, 300, 0.5, 1e3),
    M("real.jit_at_hub_restart_overhead_ms", "real JIT at restart", "ms", True, 300, 0.5, 1e3),
    M("real.jit_worker_ready_ms", "real JIT: worker spawn→ready", "ms", True, None, 0.5, 1e3),
    M("idle.hub_rss_mb", "hub idle RSS", "MB", True, 80.0, 0.15, 5),
    M("idle.hub_rss_after_load_mb", "hub RSS after the load phases", "MB", True, None, 0.2, 5),
    M("cli.status_ms", "CLI `status` wall time (median)", "ms", True, 300.0, 0.3, 30),
]


# ------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def chat_body(model: str, *, stream: bool = False, **extra: Any) -> bytes:
    """A small chat request, encoded once (the same bytes go direct and through the hub)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello in one word."}],
        "stream": stream,
    }
    body.update(extra)
    return json.dumps(body).encode()


JSON_HEADERS = {"Content-Type": "application/json"}


class ProcWatch:
    """CPU time and peak RSS of one process, per phase (Linux: VmHWM, reset per phase)."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self._cpu0 = 0.0
        self._peak = 0
        self._sampler: asyncio.Task[None] | None = None
        self._hwm = Path(f"/proc/{pid}/status").exists()

    def rss_mb(self) -> float:
        return round(self.proc.memory_info().rss / 2**20, 1)

    def cpu_s(self) -> float:
        times = self.proc.cpu_times()
        return float(times.user + times.system)

    def _read_hwm(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return None

    async def _sample(self) -> None:
        while True:
            with contextlib.suppress(psutil.Error):
                self._peak = max(self._peak, self.proc.memory_info().rss)
            await asyncio.sleep(0.05)

    def begin(self) -> None:
        """Start a phase: remember CPU time, reset the peak."""
        self._cpu0 = self.cpu_s()
        self._peak = self.proc.memory_info().rss
        reset = False
        if self._hwm:
            # "5" resets the peak RSS (VmHWM) to the current RSS (proc(5), clear_refs).
            with contextlib.suppress(OSError):
                Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
                reset = True
        if not reset:
            self._hwm = False
            self._sampler = asyncio.ensure_future(self._sample())

    async def end(self) -> tuple[float, float]:
        """(CPU seconds used, peak RSS in MB) since `begin()`."""
        if self._sampler is not None:
            self._sampler.cancel()
            await asyncio.gather(self._sampler, return_exceptions=True)
            self._sampler = None
        peak = self._read_hwm() if self._hwm else None
        peak = max(peak or 0, self._peak, self.proc.memory_info().rss)
        return self.cpu_s() - self._cpu0, round(peak / 2**20, 1)


# ------------------------------------------------------------ the hub process


@dataclass
class HubProcess:
    """A real hub subprocess on a free port, with the hub.yaml it was given."""

    folder: Path
    models: list[dict[str, Any]]
    port: int = field(default_factory=free_port)
    marker: str = field(default_factory=lambda: uuid.uuid4().hex)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.folder / "hub.yaml"

    @property
    def env(self) -> dict[str, str]:
        env = {**os.environ, "MLX_HUB_TOKEN": TOKEN, MARKER_ENV: self.marker}
        env.pop("MLX_HUB_CONFIG_PATH", None)
        return env

    def start(self) -> None:
        doc = {
            "host": "127.0.0.1",
            "port": self.port,
            "log_path": str(self.folder / "logs"),
            "model_starting_port": free_port(),
            "models": self.models,
        }
        self.config_path.write_text(yaml.safe_dump(doc))
        out = open(self.folder / "serve.out", "ab")  # noqa: SIM115 - handed to the child
        command = [sys.executable, "-m", "mlx_openai_server_hub"]
        self.proc = subprocess.Popen(
            [*command, "--config", str(self.config_path), "serve"],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        out.close()

    def output(self) -> str:
        path = self.folder / "serve.out"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    async def wait_listening(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited with {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            await asyncio.sleep(0.02)
        raise RuntimeError(f"hub did not listen within {timeout}s:\n{self.output()}")

    async def status(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with session.get(self.url + "/hub/status", headers=headers) as resp:
            resp.raise_for_status()
            return dict(await resp.json())

    async def model(self, session: aiohttp.ClientSession, name: str) -> dict[str, Any]:
        status = await self.status(session)
        return dict(next(m for m in status["models"] if m["id"] == name)["metadata"])

    async def wait_model(
        self,
        session: aiohttp.ClientSession,
        name: str,
        ok: Callable[[dict[str, Any]], bool],
        timeout: float,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            meta = await self.model(session, name)
            if ok(meta):
                return meta
            if meta["process_state"] == "failed" or time.monotonic() > deadline:
                raise RuntimeError(f"model {name} never got ready: {meta}\n{self.output()}")
            await asyncio.sleep(0.05)

    async def action(self, session: aiohttp.ClientSession, name: str, action: str) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        url = f"{self.url}/hub/models/{name}/{action}"
        async with session.post(url, headers=headers) as resp:
            if resp.status != 200:
                raise RuntimeError(f"{action} {name}: {resp.status} {await resp.text()}")

    def event_loop(self) -> str:
        """Which event loop the hub runs: uvloop when its extension is mapped."""
        assert self.proc is not None
        with contextlib.suppress(psutil.Error, OSError):
            maps = psutil.Process(self.proc.pid).memory_maps()
            return "uvloop" if any("uvloop" in m.path for m in maps) else "asyncio"
        return "unknown"

    def stop(self) -> None:
        """SIGTERM the hub (it stops its workers); then end anything left with our marker."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for proc in psutil.process_iter(["pid"]):
            with contextlib.suppress(psutil.Error):
                if proc.environ().get(MARKER_ENV) == self.marker:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.kill()


def fake_model(name: str, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "model_path": f"/models/{name}",
        "worker_command": [sys.executable, str(FAKE_WORKER)],
    }
    entry.update(extra)
    return entry


# ---------------------------------------------------------------- the client


class _Stale(Exception):
    """The connection closed before a single byte of the answer arrived."""


@dataclass
class Answer:
    """One HTTP answer as the load generator saw it (times in seconds from sending)."""

    status: int
    headers_s: float
    first_data_s: float
    total_s: float
    size: int
    tail: bytes
    body: bytes = b""  # a sized (non-chunked) body only


class RawClient:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams (uvloop when present).

    Cheaper per chunk than a full client library, so it is never the bottleneck: with
    aiohttp's client the direct side of a 20,000-chunk stream was slower than the hub's,
    because the hub coalesces small chunks and the client paid per read. Like curl, it
    reads whatever has arrived (up to 256 KiB) and only walks the chunk framing.
    """

    READ = 256 * 1024

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[tuple[asyncio.StreamReader, Any]]] = {}

    async def close(self) -> None:
        for conns in self._idle.values():
            for _, writer in conns:
                writer.close()
        self._idle.clear()

    async def post(self, url: str, body: bytes) -> Answer:
        """POST `body` as JSON and read the whole answer (chunked or sized)."""
        return await self.request("POST", url, body)

    async def request(self, method: str, url: str, body: bytes = b"") -> Answer:
        """Send one request on a pooled connection and read the whole answer."""
        rest = url.removeprefix("http://")
        hostport, _, path = rest.partition("/")
        host, _, port_text = hostport.partition(":")
        key = (host, int(port_text))
        pool = self._idle.setdefault(key, [])
        request = (
            f"{method} /{path} HTTP/1.1\r\nHost: {hostport}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        while True:
            pooled = bool(pool)
            if pooled:
                reader, writer = pool.pop()
            else:
                reader, writer = await asyncio.open_connection(host, key[1])
            start = time.perf_counter()
            try:
                writer.write(request)
                answer, reusable = await self._read_answer(reader, start)
                break
            except _Stale:
                writer.close()
                if not pooled:
                    raise ConnectionError("connection closed before the answer's headers") from None
                # A kept-alive connection the server had closed: try a fresh one.
            except BaseException:
                writer.close()
                raise
        if reusable:
            pool.append((reader, writer))
        else:
            writer.close()
        return answer

    async def _read_answer(self, reader: asyncio.StreamReader, start: float) -> tuple[Answer, bool]:
        buf = bytearray()
        body = b""
        while (end := buf.find(b"\r\n\r\n")) < 0:
            try:
                more = await reader.read(self.READ)
            except ConnectionResetError:
                more = b""
            if not more:
                if not buf:
                    raise _Stale
                raise ConnectionError("connection closed in the middle of the answer's headers")
            buf += more
        headers_s = time.perf_counter() - start
        lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        del buf[: end + 4]
        reusable = fields.get("connection", "").lower() != "close"
        if "chunked" in fields.get("transfer-encoding", "").lower():
            first, size, tail = await self._read_chunked(reader, buf, start)
        elif "content-length" in fields:
            need = int(fields["content-length"])
            while len(buf) < need:
                more = await reader.read(self.READ)
                if not more:
                    raise ConnectionError("connection closed in the middle of the body")
                buf += more
            first = headers_s if need else time.perf_counter() - start
            size, tail, body = need, bytes(buf[-64:]), bytes(buf[:need])
        else:
            while more := await reader.read(self.READ):
                buf += more
            first, size, tail, reusable = headers_s, len(buf), bytes(buf[-64:]), False
        total = time.perf_counter() - start
        return Answer(status, headers_s, first, total, size, tail, body), reusable

    async def _read_chunked(
        self, reader: asyncio.StreamReader, buf: bytearray, start: float
    ) -> tuple[float, int, bytes]:
        """Walk the chunk framing: (first data byte time, payload bytes, last payload)."""
        pos = 0
        size_total = 0
        first = None
        tail = b""
        while True:
            while (line_end := buf.find(b"\r\n", pos)) < 0:
                more = await reader.read(self.READ)
                if not more:
                    raise ConnectionError("stream ended without its last chunk")
                buf += more
            size = int(bytes(buf[pos:line_end]).split(b";")[0], 16)
            need = line_end + 2 + size + 2
            while len(buf) < need:
                more = await reader.read(self.READ)
                if not more:
                    raise ConnectionError("stream ended in the middle of a chunk")
                buf += more
            if size == 0:
                return first or time.perf_counter() - start, size_total, tail
            if first is None:
                first = time.perf_counter() - start
            size_total += size
            tail = bytes(buf[need - 2 - min(size, 64) : need - 2])
            pos = need
            if pos > self.READ:
                del buf[:pos]
                pos = 0


async def timed_request(client: RawClient, url: str, body: bytes) -> float:
    """Seconds from sending a non-streaming request to having its whole answer."""
    answer = await client.post(url, body)
    if answer.status != 200:
        raise RuntimeError(f"{url}: {answer.status} {answer.tail!r}")
    return answer.total_s


async def timed_stream(client: RawClient, url: str, body: bytes) -> Answer:
    """A streamed answer, checked to be complete (ends with `data: [DONE]`)."""
    answer = await client.post(url, body)
    if answer.status != 200:
        raise RuntimeError(f"{url}: {answer.status} {answer.tail!r}")
    if not answer.tail.rstrip().endswith(b"data: [DONE]"):
        raise RuntimeError(f"{url}: stream ended without [DONE] (tail {answer.tail!r})")
    return answer


def new_session() -> aiohttp.ClientSession:
    """For the control API and health probes (not timed)."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600))


async def interleaved(
    pairs: int, direct: Callable[[], Awaitable[float]], hub: Callable[[], Awaitable[float]]
) -> tuple[list[float], list[float]]:
    """Run direct and hub one after the other, alternating which goes first (ABBA)."""
    d: list[float] = []
    h: list[float] = []
    for i in range(pairs):
        if i % 2:
            h.append(await hub())
            d.append(await direct())
        else:
            d.append(await direct())
            h.append(await hub())
    return d, h


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Keep the load generator's garbage collector out of the timings."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# -------------------------------------------------------------------- phases


class Bench:
    """Runs the phases against one hub and fills `results`."""

    def __init__(self, plan: Plan, hub: HubProcess, session: aiohttp.ClientSession) -> None:
        self.plan = plan
        self.hub = hub
        self.session = session  # control API only
        self.client = RawClient()  # every timed request
        self.results: dict[str, float] = {}
        self.samples: dict[str, list[float]] = {}  # raw values of the slow phases
        assert hub.proc is not None
        self.watch = ProcWatch(hub.proc.pid)

    def put(self, key: str, value: float) -> None:
        self.results[key] = round(value, 4)

    async def urls(self, name: str) -> tuple[str, str]:
        """(the worker's own URL, the hub's URL) for chat completions of model `name`."""
        meta = await self.hub.model(self.session, name)
        path = "/v1/chat/completions"
        return f"http://127.0.0.1:{meta['port']}{path}", self.hub.url + path

    @contextlib.contextmanager
    def loadgen_cpu(self, key: str) -> Iterator[None]:
        """Record how busy the load generator itself was (share of one core)."""
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        busy = (time.process_time() - cpu) / max(1e-9, time.perf_counter() - wall)
        self.put(f"{key}.loadgen_cpu_share", busy)

    # -- small requests ----------------------------------------------------------------

    async def small(self) -> None:
        plan = self.plan
        direct_url, hub_url = await self.urls("fast")
        direct_body = chat_body("/models/fast")
        hub_body = chat_body("fast")
        log(f"small requests: {plan.latency_pairs} interleaved pairs")
        for _ in range(plan.latency_warmup):
            await timed_request(self.client, direct_url, direct_body)
            await timed_request(self.client, hub_url, hub_body)
        with no_gc(), self.loadgen_cpu("small"):
            d, h = await interleaved(
                plan.latency_pairs,
                lambda: timed_request(self.client, direct_url, direct_body),
                lambda: timed_request(self.client, hub_url, hub_body),
            )
        for side, values in (("direct", d), ("hub", h)):
            self.put(f"small.{side}_p50_ms", ms(pct(values, 50)))
            self.put(f"small.{side}_p99_ms", ms(pct(values, 99)))
        self.put("small.added_p50_ms", ms(pct(h, 50) - pct(d, 50)))
        self.put("small.added_p99_ms", ms(pct(h, 99) - pct(d, 99)))
        diffs = [b - a for a, b in zip(d, h, strict=True)]
        self.put("small.paired_added_median_ms", ms(statistics.median(diffs)))

    async def spaced(self) -> None:
        """Small requests 20 ms apart: each one meets a CPU that has gone idle.

        Back to back, caches stay warm; a client that pauses between requests (most
        of them) pays for waking the machine up on both sides. The hub's share of that
        is what this measures.
        """
        direct_url, hub_url = await self.urls("fast")
        direct_body = chat_body("/models/fast")
        hub_body = chat_body("fast")
        pairs = self.plan.spaced_pairs
        log(f"spaced small requests: {pairs} interleaved pairs, 20 ms apart")

        async def after_pause(url: str, body: bytes) -> float:
            await asyncio.sleep(0.02)
            return await timed_request(self.client, url, body)

        with no_gc():
            d, h = await interleaved(
                pairs,
                lambda: after_pause(direct_url, direct_body),
                lambda: after_pause(hub_url, hub_body),
            )
        self.put("spaced.direct_p50_ms", ms(pct(d, 50)))
        self.put("spaced.hub_p50_ms", ms(pct(h, 50)))
        self.put("spaced.added_p50_ms", ms(pct(h, 50) - pct(d, 50)))
        self.put("spaced.added_p99_ms", ms(pct(h, 99) - pct(d, 99)))

    # -- streaming ---------------------------------------------------------------------

    async def ttfb(self) -> None:
        direct_url, hub_url = await self.urls("fast")
        direct_body = chat_body("/models/fast", stream=True, fake_chunks=5)
        hub_body = chat_body("fast", stream=True, fake_chunks=5)
        log(f"time to first byte: {self.plan.ttfb_pairs} interleaved pairs")
        heads: dict[str, list[float]] = {"direct": [], "hub": []}

        async def first(url: str, body: bytes, side: str) -> float:
            answer = await timed_stream(self.client, url, body)
            heads[side].append(answer.headers_s)
            return answer.first_data_s

        for _ in range(20):
            await first(direct_url, direct_body, "direct")
            await first(hub_url, hub_body, "hub")
        heads = {"direct": [], "hub": []}
        with no_gc():
            d, h = await interleaved(
                self.plan.ttfb_pairs,
                lambda: first(direct_url, direct_body, "direct"),
                lambda: first(hub_url, hub_body, "hub"),
            )
        self.put("stream.ttfb_direct_p50_ms", ms(pct(d, 50)))
        self.put("stream.ttfb_hub_p50_ms", ms(pct(h, 50)))
        self.put("stream.ttfb_added_p50_ms", ms(pct(h, 50) - pct(d, 50)))
        self.put("stream.ttfb_added_p99_ms", ms(pct(h, 99) - pct(d, 99)))
        added_headers = pct(heads["hub"], 50) - pct(heads["direct"], 50)
        self.put("stream.headers_added_p50_ms", ms(added_headers))

    async def throughput(self) -> None:
        chunks = self.plan.stream_chunks
        direct_url, hub_url = await self.urls("fast")
        direct_body = chat_body("/models/fast", stream=True, fake_chunks=chunks)
        hub_body = chat_body("fast", stream=True, fake_chunks=chunks)
        log(f"stream throughput: {chunks} chunks x {self.plan.stream_reps} rep(s) each side")
        warm = chat_body("/models/fast", stream=True, fake_chunks=500)
        await timed_stream(self.client, direct_url, warm)
        d: list[float] = []
        h: list[float] = []
        size = 0
        with no_gc(), self.loadgen_cpu("stream"):
            for rep in range(self.plan.stream_reps):
                order = [(d, direct_url, direct_body), (h, hub_url, hub_body)]
                for bucket, url, body in order if rep % 2 == 0 else order[::-1]:
                    answer = await timed_stream(self.client, url, body)
                    bucket.append(answer.total_s)
                    size = answer.size
        direct_rate = chunks / statistics.median(d)
        hub_rate = chunks / statistics.median(h)
        self.put("stream.direct_chunks_per_s", direct_rate)
        self.put("stream.hub_chunks_per_s", hub_rate)
        self.put("stream.payload_bytes", size)
        self.put("stream.throughput_ratio", hub_rate / direct_rate)

    # -- concurrency -------------------------------------------------------------------

    async def _crowd(
        self, url: str, body: bytes, clients: int, rounds: int
    ) -> tuple[list[float], int]:
        latencies: list[float] = []
        errors = 0

        async def client() -> None:
            nonlocal errors
            for _ in range(rounds):
                try:
                    latencies.append((await timed_stream(self.client, url, body)).total_s)
                except Exception as exc:
                    errors += 1
                    if errors <= 3:
                        log(f"  error: {exc!r}")

        await asyncio.gather(*(client() for _ in range(clients)))
        return latencies, errors

    async def concurrency(
        self, key: str, clients: int, rounds: int, chunks: int, delay: float
    ) -> None:
        """`clients` streams at once, `rounds` times per side, direct and hub alternating."""
        direct_url, hub_url = await self.urls("fast")
        extra = {"fake_chunks": chunks, "fake_chunk_delay": delay}
        direct_body = chat_body("/models/fast", stream=True, **extra)
        hub_body = chat_body("fast", stream=True, **extra)
        log(f"{clients} concurrent streams of {chunks} chunks every {delay * 1000:g} ms, x{rounds}")
        # Open the connection pools first so both sides start warm.
        await self._crowd(direct_url, direct_body, clients, 1)
        await self._crowd(hub_url, hub_body, clients, 1)
        d: list[float] = []
        h: list[float] = []
        errors = {"direct": 0, "hub": 0}
        cpu = peak = 0.0
        with no_gc():
            for index in range(rounds):
                sides = [("direct", direct_url, direct_body, d), ("hub", hub_url, hub_body, h)]
                for side, url, body, bucket in sides if index % 2 == 0 else sides[::-1]:
                    if side == "hub":
                        self.watch.begin()
                    latencies, failed = await self._crowd(url, body, clients, 1)
                    if side == "hub":
                        used, top = await self.watch.end()
                        cpu, peak = cpu + used, max(peak, top)
                    bucket += latencies
                    errors[side] += failed
        if d and h:
            self.put(f"{key}.direct_p50_ms", ms(pct(d, 50)))
            self.put(f"{key}.hub_p50_ms", ms(pct(h, 50)))
            self.put(f"{key}.direct_p99_ms", ms(pct(d, 99)))
            self.put(f"{key}.hub_p99_ms", ms(pct(h, 99)))
            self.put(f"{key}.ratio_p50", pct(h, 50) / pct(d, 50))
            self.put(f"{key}.ratio_p99", pct(h, 99) / pct(d, 99))
        self.put(f"{key}.hub_cpu_s", cpu)
        self.put(f"{key}.hub_cpu_ms_per_req", ms(cpu / max(1, clients * rounds)))
        self.put(f"{key}.hub_peak_rss_mb", peak)
        self.put(f"{key}.errors", errors["hub"])
        self.put(f"{key}.direct_errors", errors["direct"])

    # -- JIT ---------------------------------------------------------------------------

    async def _hub_first_answer(self, name: str, body: bytes) -> float:
        """Through the hub, to an unloaded JIT model: request sent → answer's first byte."""
        meta = await self.hub.model(self.session, name)
        assert meta["memory_state"] == "unloaded", meta
        answer = await self.client.post(self.hub.url + "/v1/chat/completions", body)
        if answer.status != 200:
            raise RuntimeError(f"JIT request: {answer.status} {answer.body[:300]!r}")
        return answer.headers_s

    async def _ready(self, base: str) -> bool:
        """One cheap /health probe of a worker we started (connection refused: not yet)."""
        try:
            answer = await self.client.request("GET", base + "/health")
        except OSError:
            return False
        if answer.status != 200:
            return False
        with contextlib.suppress(ValueError):
            status = str(json.loads(answer.body).get("model_status", ""))
            return not status.lower().startswith("unloaded")
        return False

    async def _direct_spawn(
        self, argv: list[str], env: dict[str, str], body: bytes, timeout: float
    ) -> tuple[float, float]:
        """Spawn the worker ourselves: (spawn → /health ready, its first answer) seconds."""
        port = free_port()
        argv = list(argv)
        argv[argv.index("--port") + 1] = str(port)
        base = f"http://127.0.0.1:{port}"
        start = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            while not await self._ready(base):
                if proc.returncode is not None:
                    raise RuntimeError(f"direct worker exited with {proc.returncode}: {argv}")
                if time.perf_counter() - start > timeout:
                    raise RuntimeError(f"direct worker not ready in {timeout}s: {argv}")
                await asyncio.sleep(0.005)
            ready_s = time.perf_counter() - start
            answer = await self.client.post(base + "/v1/chat/completions", body)
            if answer.status != 200:
                raise RuntimeError(f"direct first answer: {answer.status} {answer.body!r}")
            return ready_s, answer.headers_s
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

    async def jit(self, name: str, upstream: str, prefix: str, rounds: int, timeout: float) -> None:
        """Cold JIT load (first ever, right after hub start), then `rounds` reloads.

        Overhead = the hub's time from request to first answer byte, minus what the same
        worker command needs on its own: spawn → ready (polled every 5 ms) + first answer.
        Direct spawns and hub reloads alternate.
        """
        hub_body = chat_body(name, max_tokens=8)
        direct_body = chat_body(upstream, max_tokens=8)
        log(f"JIT '{name}': first load through the hub")
        cold = await self._hub_first_answer(name, hub_body)
        meta = await self.hub.model(self.session, name)
        worker = psutil.Process(meta["pid"])
        argv, env = worker.cmdline(), worker.environ()
        hub_times: list[float] = []
        direct_ready: list[float] = []
        direct_total: list[float] = []
        await self.hub.action(self.session, name, "unload")
        for i in range(rounds + 1):
            log(f"JIT '{name}': direct spawn {i + 1}/{rounds + 1}")
            ready_s, answer_s = await self._direct_spawn(argv, env, direct_body, timeout)
            direct_ready.append(ready_s)
            direct_total.append(ready_s + answer_s)
            if i < rounds:
                log(f"JIT '{name}': reload {i + 1}/{rounds} through the hub")
                hub_times.append(await self._hub_first_answer(name, hub_body))
                await self.hub.action(self.session, name, "unload")
        # Interference only ever adds time: reloads compare the fastest of each side.
        # The single first load is one draw of a noisy start-up, so it is set against
        # the worker's typical (median) start instead.
        own = min(direct_total)
        typical = statistics.median(direct_total)
        self.samples[f"{prefix}hub_ms"] = [ms(x) for x in [cold, *hub_times]]
        self.samples[f"{prefix}direct_ready_plus_answer_ms"] = [ms(x) for x in direct_total]
        self.put(f"{prefix}worker_ready_ms", ms(min(direct_ready)))
        self.put(f"{prefix}worker_first_answer_ms", ms(own))
        self.put(f"{prefix}worker_first_answer_median_ms", ms(typical))
        self.put(f"{prefix}hub_cold_ms", ms(cold))
        self.put(f"{prefix}cold_overhead_ms", ms(cold - typical))
        if hub_times:
            self.put(f"{prefix}hub_warm_ms", ms(min(hub_times)))
            self.put(f"{prefix}warm_overhead_ms", ms(min(hub_times) - own))
            median_gap = statistics.median(hub_times) - statistics.median(direct_total)
            self.put(f"{prefix}warm_overhead_median_ms", ms(median_gap))

    # -- real worker -------------------------------------------------------------------

    async def real(self, model_path: str) -> None:
        direct_url, hub_url = await self.urls("real")
        extra: dict[str, Any] = {"max_tokens": 8, "temperature": 0.0}
        direct_body = chat_body(model_path, **extra)
        hub_body = chat_body("real", **extra)
        log(f"real worker: {self.plan.real_pairs} interleaved pairs")
        for _ in range(5):
            await timed_request(self.client, direct_url, direct_body)
            await timed_request(self.client, hub_url, hub_body)
        with no_gc():
            d, h = await interleaved(
                self.plan.real_pairs,
                lambda: timed_request(self.client, direct_url, direct_body),
                lambda: timed_request(self.client, hub_url, hub_body),
            )
        self.put("real.direct_p50_ms", ms(pct(d, 50)))
        self.put("real.hub_p50_ms", ms(pct(h, 50)))
        self.put("real.direct_p99_ms", ms(pct(d, 99)))
        self.put("real.hub_p99_ms", ms(pct(h, 99)))
        self.put("real.ratio_p50", pct(h, 50) / pct(d, 50))
        self.put("real.ratio_p99", pct(h, 99) / pct(d, 99))
        self.put("real.added_p50_ms", ms(pct(h, 50) - pct(d, 50)))
        direct_stream = chat_body(model_path, stream=True, **extra)
        hub_stream = chat_body("real", stream=True, **extra)

        async def first(url: str, body: bytes) -> float:
            return (await timed_stream(self.client, url, body)).first_data_s

        with no_gc():
            d, h = await interleaved(
                max(10, self.plan.real_pairs // 2),
                lambda: first(direct_url, direct_stream),
                lambda: first(hub_url, hub_stream),
            )
        self.put("real.stream_ttfb_direct_ms", ms(pct(d, 50)))
        self.put("real.stream_ttfb_hub_ms", ms(pct(h, 50)))
        self.put("real.stream_ttfb_added_ms", ms(pct(h, 50) - pct(d, 50)))

    # -- footprint and CLI -------------------------------------------------------------

    async def idle_rss(self, key: str) -> None:
        await asyncio.sleep(0.5)
        self.put(key, self.watch.rss_mb())

    def cli_status(self) -> None:
        env = self.hub.env
        config = ["--config", str(self.hub.config_path), "status"]
        commands = {"cli.status_ms": [sys.executable, "-m", "mlx_openai_server_hub", *config]}
        script = Path(sys.executable).parent / "mlx-openai-server-hub"
        if script.exists():
            commands["cli.status_script_ms"] = [str(script), *config]
        for key, command in commands.items():
            runs: list[float] = []
            for _ in range(self.plan.status_runs + 1):  # the first run warms the page cache
                start = time.perf_counter()
                done = subprocess.run(command, env=env, capture_output=True, timeout=60)
                runs.append(time.perf_counter() - start)
                if done.returncode != 0:
                    raise RuntimeError(f"`status` failed ({done.returncode}): {done.stderr!r}")
            self.put(key, ms(statistics.median(runs[1:])))


# ----------------------------------------------------------------- reporting


def compare(
    results: dict[str, float], baseline: dict[str, float] | None, widen: float = 1.0
) -> tuple[list[list[str]], list[str], list[str]]:
    """Table rows, missed targets, regressions against the baseline (tolerances × widen)."""
    rows: list[list[str]] = []
    missed: list[str] = []
    regressed: list[str] = []
    for metric in METRICS:
        if metric.key not in results:
            continue
        value = results[metric.key]
        target = ""
        verdict = ""
        if metric.target is not None:
            sign = "≤" if metric.lower_is_better else "≥"
            target = f"{sign} {metric.target:g}"
            ok = value <= metric.target if metric.lower_is_better else value >= metric.target
            verdict = "ok" if ok else "MISS"
            if not ok:
                missed.append(metric.key)
        base_text = ""
        if baseline is not None and metric.key in baseline:
            base = baseline[metric.key]
            if metric.lower_is_better:
                # Added times can come out below zero by noise; never demand that again.
                base = max(base, 0.0)
            slack = max(abs(base) * metric.rel_tol, metric.abs_tol) * widen
            worse = value > base + slack if metric.lower_is_better else value < base - slack
            base_text = f"{base:g}" + (" REGRESSED" if worse else "")
            if worse:
                regressed.append(metric.key)
        rows.append([metric.label, f"{value:g} {metric.unit}".strip(), target, verdict, base_text])
    return rows, missed, regressed


def render(rows: list[list[str]]) -> str:
    header = ["metric", "result", "target", "", "baseline"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "aiohttp": aiohttp.__version__,
        "loop": loop,
    }


# ---------------------------------------------------------------------- main


def prepare_real_worker(worker: str) -> Path:
    """Build (or reuse) the tiny model with the worker's own Python."""
    sys.path.insert(0, str(REPO))
    from tests.e2e.worker_support import build_tiny_model

    log(f"tiny model for the real worker in {TINY_MODEL_CACHE}")
    return build_tiny_model(TINY_MODEL_CACHE, worker)


def models_for(real_worker: str | None, tiny: Path | None) -> list[dict[str, Any]]:
    models = [
        fake_model("fast", default=True),
        # Its own env keeps it out of the launch-help cache the 'fast' load filled,
        # so the first load is as cold as a hub's first JIT model ever is.
        fake_model("jit", default=True, jit_enabled=True, env={"BENCH_SIDE": "jit"}),
    ]
    if real_worker is not None and tiny is not None:
        from tests.e2e.worker_support import WORKER_ENV_OVERRIDES

        real = {
            "model_path": str(tiny),
            "worker_command": [real_worker],
            "model_type": "lm",
            "startup_timeout": 300,
        }
        models.append({"name": "real", "default": True, "env": dict(WORKER_ENV_OVERRIDES), **real})
        models.append(
            {
                "name": "real-jit",
                "default": True,
                "jit_enabled": True,
                "env": {**WORKER_ENV_OVERRIDES, "BENCH_SIDE": "jit"},
                **real,
            }
        )
    return models


async def jit_at_hub_start(bench: Bench, model: dict[str, Any], prefix: str) -> None:
    """A JIT request sent the moment a fresh hub listens (run after `Bench.jit`), twice.

    Unlike `Bench.jit`, the hub has had no time to read the worker's `launch --help`
    in the background. "start": the first hub ever in its folder, the worst case a
    client can meet; "restart": the next hub there, which reuses the stored help.
    """
    folder = Path(tempfile.mkdtemp(prefix="mlx-hub-bench-"))
    try:
        for case in ("start", "restart"):
            hub = HubProcess(folder, [model])
            try:
                hub.start()
                await hub.wait_listening()
                log(f"JIT '{model['name']}': request the moment the hub listens ({case})")
                answer = await bench.client.post(
                    hub.url + "/v1/chat/completions", chat_body(model["name"], max_tokens=8)
                )
                if answer.status != 200:
                    raise RuntimeError(f"JIT at hub {case}: {answer.status} {answer.body[:300]!r}")
                own = bench.results[f"{prefix}worker_first_answer_median_ms"]
                bench.put(f"{prefix}at_hub_{case}_ms", ms(answer.headers_s))
                bench.put(f"{prefix}at_hub_{case}_overhead_ms", ms(answer.headers_s) - own)
            finally:
                hub.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = QUICK if args.quick else FULL
    real_worker = args.real_worker
    tiny = prepare_real_worker(real_worker) if real_worker else None
    folder = Path(tempfile.mkdtemp(prefix="mlx-hub-bench-"))
    hub = HubProcess(folder, models_for(real_worker, tiny))
    started = time.monotonic()
    try:
        hub.start()
        async with new_session() as session:
            await hub.wait_listening()
            bench = Bench(plan, hub, session)
            await hub.wait_model(session, "fast", lambda m: m["memory_state"] == "loaded", 60)
            await hub.wait_model(session, "jit", lambda m: m["process_state"] == "running", 60)
            # The first JIT load must come before anything else touches that model.
            await bench.jit("jit", "/models/jit", "jit.", plan.jit_warm_rounds, 60)
            await jit_at_hub_start(bench, hub.models[1], "jit.")
            if real_worker:
                log("waiting for the real worker to load")
                loaded = lambda m: m["memory_state"] == "loaded"  # noqa: E731
                await hub.wait_model(session, "real", loaded, 300)
                running = lambda m: m["process_state"] == "running"  # noqa: E731
                await hub.wait_model(session, "real-jit", running, 60)
                rounds = plan.real_jit_rounds if args.real_jit is None else args.real_jit
                if rounds >= 0:
                    await bench.jit("real-jit", str(tiny), "real.jit_", rounds, 300)
                    await jit_at_hub_start(bench, hub.models[3], "real.jit_")
            # One small request per model, then the footprint of an idle hub.
            await timed_request(bench.client, hub.url + "/v1/chat/completions", chat_body("fast"))
            await bench.idle_rss("idle.hub_rss_mb")
            await bench.small()
            await bench.spaced()
            await bench.ttfb()
            await bench.throughput()
            if real_worker:
                await bench.real(str(tiny))
            for clients, rounds in plan.conc_rounds.items():
                await bench.concurrency(f"conc{clients}", clients, rounds, plan.conc_chunks, 0.02)
            if plan.saturated_rounds:
                await bench.concurrency("saturated64", 64, plan.saturated_rounds, 32, 0.0)
            await bench.idle_rss("idle.hub_rss_after_load_mb")
            log("CLI status")
            bench.cli_status()
            await bench.client.close()
            results = bench.results
            hub_loop = hub.event_loop()
            samples = bench.samples
    finally:
        hub.stop()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return {
        "meta": {
            **machine(),
            "mode": "quick" if args.quick else "full",
            "hub_loop": hub_loop,
            "real_worker": real_worker,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(time.monotonic() - started, 1),
        },
        "results": results,
        "samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized run (seconds)")
    parser.add_argument("--real-worker", metavar="PATH", help="mlx-openai-server executable")
    parser.add_argument(
        "--real-jit",
        type=int,
        metavar="N",
        help="real-worker JIT: first load plus N reloads (default: 3; --quick: none)",
    )
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--baseline", metavar="FILE", default=str(DEFAULT_BASELINE))
    parser.add_argument("--no-baseline", action="store_true", help="compare with no baseline")
    parser.add_argument("--strict", action="store_true", help="exit 1 on a miss or regression")
    parser.add_argument(
        "--save-baseline",
        action="store_true",
        help="store this run as the baseline of its mode (full or quick) in --baseline",
    )
    parser.add_argument("--keep", action="store_true", help="keep the hub's temporary folder")
    args = parser.parse_args(argv)
    if args.real_worker:
        args.real_worker = str(Path(args.real_worker).expanduser().resolve())
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    report = asyncio.run(run(args))
    baseline = None
    base_path = Path(args.baseline)
    if not args.no_baseline and base_path.is_file():
        loaded = json.loads(base_path.read_text())
        # A quick run is only compared with a quick baseline (fewer samples, other sizes).
        section = "quick" if args.quick else "full"
        baseline = loaded.get(section, {}).get("results") if section in loaded else None
    # A quick run takes fewer samples: allow it twice the noise.
    rows, missed, regressed = compare(report["results"], baseline, 2.0 if args.quick else 1.0)
    report["missed_targets"] = missed
    report["regressions"] = regressed
    meta = report["meta"]
    print(
        f"\nmlx-openai-server-hub benchmark ({meta['mode']}, {meta['cpus']} CPUs, "
        f"hub on {meta['hub_loop']}, {meta['seconds']} s)"
    )
    print(render(rows))
    if baseline is None:
        print(f"(no {('quick' if args.quick else 'full')} baseline in {base_path})")
    print(f"\nmissed targets: {', '.join(missed) or 'none'}")
    print(f"regressions vs baseline: {', '.join(regressed) or 'none'}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    if args.save_baseline:
        stored = json.loads(base_path.read_text()) if base_path.is_file() else {}
        stored[meta["mode"]] = {"meta": meta, "results": report["results"]}
        base_path.write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n")
        print(f"saved as the {meta['mode']} baseline in {base_path}")
    return 1 if args.strict and (missed or regressed) else 0


if __name__ == "__main__":
    sys.exit(main())
