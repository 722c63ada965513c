"""JIT overhead: the hub's first answer from an unloaded model minus the worker's own start."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from mlx_openai_server_hub.worker_shim import SECRET_ENV, SECRET_HEADER
from tests.support.hubs import free_port

from .core import Bench
from .hubs import bench_hub
from .loadgen import chat_body, log, ms


async def _hub_first_answer(bench: Bench, name: str, body: bytes) -> float:
    """Through the hub, to an unloaded JIT model: request sent → answer's first byte."""
    meta = await bench.hub.model(name, bench.session)
    assert meta["memory_state"] == "unloaded", meta
    answer = await bench.client.post(bench.hub.url + "/v1/chat/completions", body)
    if answer.status != 200:
        raise RuntimeError(f"JIT request: {answer.status} {answer.body[:300]!r}")
    return answer.headers_s


async def _ready(bench: Bench, base: str) -> bool:
    """One cheap /health probe of a worker we started (connection refused: not yet)."""
    try:
        answer = await bench.client.request("GET", base + "/health")
    except OSError:
        return False
    if answer.status != 200:
        return False
    with contextlib.suppress(ValueError):
        status = str(json.loads(answer.body).get("model_status", ""))
        return not status.lower().startswith("unloaded")
    return False


async def _direct_spawn(
    bench: Bench, argv: list[str], env: dict[str, str], body: bytes, timeout: float
) -> tuple[float, float]:
    """Spawn the worker ourselves: (spawn → /health ready, its first answer) seconds."""
    port = free_port()
    argv = list(argv)
    argv[argv.index("--port") + 1] = str(port)
    base = f"http://127.0.0.1:{port}"
    secret = env.get(SECRET_ENV)
    if secret:  # the hub's guarded worker command: it answers that secret only
        bench.client.headers_for[port] = f"{SECRET_HEADER}: {secret}\r\n"
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
        while not await _ready(bench, base):
            if proc.returncode is not None:
                raise RuntimeError(f"direct worker exited with {proc.returncode}: {argv}")
            if time.perf_counter() - start > timeout:
                raise RuntimeError(f"direct worker not ready in {timeout}s: {argv}")
            await asyncio.sleep(0.005)
        ready_s = time.perf_counter() - start
        answer = await bench.client.post(base + "/v1/chat/completions", body)
        if answer.status != 200:
            raise RuntimeError(f"direct first answer: {answer.status} {answer.body!r}")
        return ready_s, answer.headers_s
    finally:
        bench.client.headers_for.pop(port, None)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


async def jit(
    bench: Bench, name: str, upstream: str, prefix: str, rounds: int, timeout: float
) -> None:
    """Cold JIT load (first ever, right after hub start), then `rounds` reloads.

    Overhead = the hub's time from request to first answer byte, minus what the same
    worker command needs on its own: spawn → ready (polled every 5 ms) + first answer.
    Direct spawns and hub reloads alternate.
    """
    hub_body = chat_body(name, max_tokens=8)
    direct_body = chat_body(upstream, max_tokens=8)
    log(f"JIT '{name}': first load through the hub")
    cold = await _hub_first_answer(bench, name, hub_body)
    meta = await bench.hub.model(name, bench.session)
    worker = psutil.Process(meta["pid"])
    argv, env = worker.cmdline(), worker.environ()
    hub_times: list[float] = []
    direct_ready: list[float] = []
    direct_total: list[float] = []
    await bench.hub.action(bench.session, name, "unload")
    for i in range(rounds + 1):
        log(f"JIT '{name}': direct spawn {i + 1}/{rounds + 1}")
        ready_s, answer_s = await _direct_spawn(bench, argv, env, direct_body, timeout)
        direct_ready.append(ready_s)
        direct_total.append(ready_s + answer_s)
        if i < rounds:
            log(f"JIT '{name}': reload {i + 1}/{rounds} through the hub")
            hub_times.append(await _hub_first_answer(bench, name, hub_body))
            await bench.hub.action(bench.session, name, "unload")
    # Interference only ever adds time: reloads compare the fastest of each side.
    # The single first load is one draw of a noisy start-up, so it is set against
    # the worker's typical (median) start instead.
    own = min(direct_total)
    typical = statistics.median(direct_total)
    bench.samples[f"{prefix}hub_ms"] = [ms(x) for x in [cold, *hub_times]]
    bench.samples[f"{prefix}direct_ready_plus_answer_ms"] = [ms(x) for x in direct_total]
    bench.put(f"{prefix}worker_ready_ms", ms(min(direct_ready)))
    bench.put(f"{prefix}worker_first_answer_ms", ms(own))
    bench.put(f"{prefix}worker_first_answer_median_ms", ms(typical))
    bench.put(f"{prefix}hub_cold_ms", ms(cold))
    bench.put(f"{prefix}cold_overhead_ms", ms(cold - typical))
    if hub_times:
        bench.put(f"{prefix}hub_warm_ms", ms(min(hub_times)))
        bench.put(f"{prefix}warm_overhead_ms", ms(min(hub_times) - own))
        median_gap = statistics.median(hub_times) - statistics.median(direct_total)
        bench.put(f"{prefix}warm_overhead_median_ms", ms(median_gap))


async def jit_at_hub_start(bench: Bench, model: dict[str, Any], prefix: str) -> None:
    """A JIT request sent the moment a fresh hub listens (run after `jit`), twice.

    Unlike `jit`, the hub has had no time to read the worker's `launch --help`
    in the background. "start": the first hub ever in its folder, the worst case a
    client can meet; "restart": the next hub there, which reuses the stored help.
    """
    folder = Path(tempfile.mkdtemp(prefix="mlx-hub-bench-"))
    try:
        for case in ("start", "restart"):
            hub = bench_hub(folder, [model])
            try:
                hub.start()
                hub.wait_listening(poll=0.02)
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
                hub.kill_everything(timeout=30)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
