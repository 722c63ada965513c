"""Downloads: snapshot throughput through the hub against huggingface_hub alone, and the
proxy's added latency while a download runs.

The stand-in Hugging Face endpoint (`tests/fake_hf.py`) runs as a subprocess on a free
loopback port at full speed, serving generated repos; this family starts a hub of its own
with `HF_ENDPOINT` pointing there (the run's main hub knows no endpoint).

- Throughput: each round pulls one repo through the hub (`POST /hub/models/{name}/pull
  ?wait=1`, timed by this client) and the same repo with `huggingface_hub.snapshot_download`
  into another cache dir (a subprocess with the same `HF_ENDPOINT`, timed around the call
  alone: its interpreter start is not counted). The rounds alternate which side goes first.
- Latency: small chat requests to the loaded fake model `fast`, direct to the worker and
  through the hub, interleaved, while the hub downloads another repo at full loopback
  speed (`during`, the worst case: the stand-in and the download share this machine's
  cores with the hub), then while it downloads one from a second stand-in paced at
  50 MB/s (`paced`, a fast Internet line), then as many pairs with no download (`idle`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from tests.support.hubs import fake_model, free_port

from .core import Bench
from .hubs import BenchHub, bench_hub
from .loadgen import chat_body, interleaved, log, ms, pct, timed_request

MB = 1_000_000
FAKE_HF = Path(__file__).resolve().parents[1] / "tests" / "fake_hf.py"
SHARDS = 4  # safetensors files per generated repo
DURING = "fake-org/bench-during"  # downloaded at full speed while latency pairs run
PACED = "fake-org/bench-paced"  # the same, from a stand-in at an Internet-like rate
# Per connection: with the hub's 4 files at a time, 50 MB/s (a 400 Mbit/s line).
PACED_BYTES_PER_S = 12_500_000
MIN_PAIRS = 50  # the latency phase goes on at least this long
# huggingface_hub alone, in a subprocess so its endpoint and cache come from its env.
_DIRECT = (
    "import sys, time\n"
    "from huggingface_hub import snapshot_download\n"
    "t = time.perf_counter()\n"
    "snapshot_download(sys.argv[1])\n"
    "print(time.perf_counter() - t)\n"
)


def _pull_repo(i: int) -> str:
    return f"fake-org/bench-pull-{i}"


def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"the stand-in Hugging Face endpoint never listened on {port}")


def _start_stand_in(
    port: int, specs: list[str], bytes_per_s: int | None = None
) -> subprocess.Popen[bytes]:
    """tests/fake_hf.py serving the generated repos `specs` (org/name:shards:bytes)."""
    command = [sys.executable, str(FAKE_HF), "--port", str(port)]
    if bytes_per_s:
        command += ["--bytes-per-s", str(bytes_per_s)]
    for spec in specs:
        command += ["--repo", spec]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL)


def _direct_seconds(repo: str, env: dict[str, str]) -> float:
    done = subprocess.run(
        [sys.executable, "-c", _DIRECT, repo],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


async def _hub_pull(bench: Bench, hub_url: str, headers: dict[str, str], name: str) -> float:
    started = time.perf_counter()
    url = f"{hub_url}/hub/models/{name}/pull?wait=1"
    async with bench.session.post(url, headers=headers) as resp:
        body = await resp.text()
        if resp.status != 200:
            raise RuntimeError(f"pull {name}: {resp.status} {body}")
    return time.perf_counter() - started


async def _latency(
    bench: Bench, hub: BenchHub, pulls: dict[str, Coroutine[Any, Any, float]]
) -> None:
    """Interleaved direct/hub pairs while each pull of `pulls` runs (one after the other),
    then as many pairs as the longest of those with nothing running."""
    meta = await hub.model("fast", bench.session)
    direct_url = f"http://127.0.0.1:{meta['port']}/v1/chat/completions"
    hub_url = hub.url + "/v1/chat/completions"
    direct_body, hub_body = chat_body(meta["model_path"]), chat_body("fast")

    def direct() -> Coroutine[Any, Any, float]:
        return timed_request(bench.client, direct_url, direct_body)

    def via_hub() -> Coroutine[Any, Any, float]:
        return timed_request(bench.client, hub_url, hub_body)

    await interleaved(50, direct, via_hub)  # warm both connections
    phases: dict[str, tuple[list[float], list[float]]] = {}
    for side, pull in pulls.items():
        task = asyncio.ensure_future(pull)
        d_during: list[float] = []
        h_during: list[float] = []
        overlapped = 0  # pairs begun before the download ended
        while not task.done() or len(d_during) < MIN_PAIRS:
            running = not task.done()
            d, h = await interleaved(10, direct, via_hub)
            d_during += d
            h_during += h
            overlapped += len(d) if running else 0
        await task
        phases[side] = d_during, h_during
        bench.put(f"downloads.{side}.pairs", len(d_during))
        bench.put(f"downloads.{side}.pairs_during_download", overlapped)
    phases["idle"] = await interleaved(max(len(d) for d, _ in phases.values()), direct, via_hub)
    for side, (d, h) in phases.items():
        key = f"downloads.{side}"
        bench.put(f"{key}.direct_p50_ms", ms(pct(d, 50)))
        bench.put(f"{key}.direct_p99_ms", ms(pct(d, 99)))
        bench.put(f"{key}.hub_p50_ms", ms(pct(h, 50)))
        bench.put(f"{key}.hub_p99_ms", ms(pct(h, 99)))
        bench.put(f"{key}.added_p50_ms", ms(pct(h, 50) - pct(d, 50)))
        bench.put(f"{key}.added_p99_ms", ms(pct(h, 99) - pct(d, 99)))


async def download_throughput(bench: Bench, folder: Path) -> None:
    """Hub pull vs snapshot_download on the stand-in, and latency during a download."""
    plan = bench.plan
    rounds, shard = plan.download_rounds, plan.download_shard_mb * MB
    port, paced_port = free_port(), free_port()
    specs = [f"{_pull_repo(i)}:{SHARDS}:{shard}" for i in range(rounds)]
    stand_in = _start_stand_in(port, [*specs, f"{DURING}:{SHARDS}:{shard}"])
    paced = _start_stand_in(paced_port, [f"{PACED}:{SHARDS}:{shard}"], PACED_BYTES_PER_S)
    endpoint = f"http://127.0.0.1:{port}"
    hf = {"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_TOKEN_PATH": str(folder / "none")}
    models = [fake_model("fast", default=True)]
    models += [fake_model(f"pull{i}", model_path=_pull_repo(i)) for i in range(rounds)]
    models.append(fake_model("during", model_path=DURING))
    paced_endpoint = {"HF_ENDPOINT": f"http://127.0.0.1:{paced_port}"}  # a model's own env
    models.append(fake_model("paced", model_path=PACED, env=paced_endpoint))
    hub = bench_hub(folder, models)
    hub.env.update({**hf, "HF_HUB_CACHE": str(folder / "hub-cache")})
    direct_env = {**os.environ, **hf, "HF_HUB_CACHE": str(folder / "direct-cache")}
    log(f"downloads: {rounds} x {SHARDS * shard / MB:g} MB, hub pull vs snapshot_download")
    try:
        _wait_port(port)
        _wait_port(paced_port)
        hub.start()
        hub.wait_listening(poll=0.02)
        await hub.wait_state(bench.session, "fast", "memory_state", "loaded", 60)
        hub_s: list[float] = []
        direct_s: list[float] = []
        for i in range(rounds):
            via_direct = asyncio.to_thread(_direct_seconds, _pull_repo(i), direct_env)
            if i % 2:
                direct_s.append(await via_direct)
                hub_s.append(await _hub_pull(bench, hub.url, hub.auth, f"pull{i}"))
            else:
                hub_s.append(await _hub_pull(bench, hub.url, hub.auth, f"pull{i}"))
                direct_s.append(await via_direct)
        total = (await hub.model("pull0", bench.session))["download"]["bytes_total"]
        hub_rate, direct_rate = total / MB / pct(hub_s, 50), total / MB / pct(direct_s, 50)
        bench.put("downloads.repo_mb", total / MB)
        bench.put("downloads.hub_mb_s", hub_rate)
        bench.put("downloads.direct_mb_s", direct_rate)
        bench.put("downloads.hub_direct_ratio", hub_rate / direct_rate)
        bench.samples["downloads.hub_s"] = hub_s
        bench.samples["downloads.direct_s"] = direct_s
        log("downloads: proxy latency with and without a download running")
        pulls = {side: _hub_pull(bench, hub.url, hub.auth, side) for side in ("during", "paced")}
        await _latency(bench, hub, pulls)
    finally:
        hub.kill_everything(timeout=30)
        for server in (stand_in, paced):
            server.terminate()
            server.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
