"""Memory you can budget: three models that fit two at a time, under steady traffic.

The run's main hub has no budget, so this family starts a hub of its own: three JIT
fake-worker models, each holding `HOLD_MB` of real resident memory (`FAKE_HOLD_MB`), and
`memory_budget: BUDGET_MB` (safety margin 0, so the machine's other load cannot change
the figures): two fit, three do not. A warm-up loads each model once alone and unloads
it, so the hub has learned each one's size; that learned size is what admission then
reserves for it (no `memory` key).

Then `memory_requests` requests from `memory_clients` clients, each taking the next one
of a shared list: phases of `memory_phase` requests alternating between two models, the
pair moving on each phase ((m0, m1), (m1, m2), (m2, m0), ...), so every new phase must
evict the model it no longer uses (the hub unloads the least recently used idle one).

Meanwhile a watcher sums the real footprints of every worker process the hub ever
reported (PSS or RSS of its process group, as the hub itself measures them), every
`WATCH_S`. The hub reserves a loading model's learned size, so growth while loading is
covered; what the hub can miss is growth between two of its samples of a loaded worker
(`memory.SAMPLE_INTERVAL`). The allowance is therefore the largest rise of one loaded
worker's footprint within one sample interval, as the watcher saw it; the target is a
peak sum never above budget + allowance.
The hub's own sum (`memory.used_bytes`) is reported beside it: it lags a fresh load by up
to one sample interval, so with short phases it can read below the real figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp

from mlx_openai_server_hub.memory import SAMPLE_INTERVAL, group_footprint
from tests.support.hubs import fake_model

from .core import Bench
from .hubs import BenchHub, bench_hub
from .loadgen import chat_body, log, ms, pct

MB = 2**20
MODELS = ("m0", "m1", "m2")
HOLD_MB = 200  # each worker's block; its footprint is about 30 MB more (Python, aiohttp)
BUDGET_MB = 600  # two learned sizes (~2 x 230 MB) fit, three do not
WATCH_S = 0.05  # the watcher's resolution
STATUS_S = 0.2  # how often it asks /hub/status for new workers and the hub's own sum


def schedule(total: int, phase: int) -> list[str]:
    """The model of each request: pairs of models in turn, alternating within a phase."""
    names = []
    for index in range(total):
        first = index // phase % len(MODELS)
        pair = (MODELS[first], MODELS[(first + 1) % len(MODELS)])
        names.append(pair[index % 2])
    return names


def window_growth(series: list[tuple[float, int]], window: float) -> int:
    """The largest rise of a footprint within `window` seconds (0 if it never grew)."""
    worst = 0
    for i, (at, size) in enumerate(series):
        low = min(s for t, s in series[: i + 1] if t >= at - window)
        worst = max(worst, size - low)
    return worst


class FootprintWatch:
    """The summed real footprint of every worker of a hub, and the hub's own figure."""

    def __init__(self, hub: BenchHub, session: aiohttp.ClientSession) -> None:
        self.hub = hub
        self.session = session
        self.pids: set[int] = set()
        self.loaded: set[int] = set()  # workers the hub reported loaded (not loading)
        self.series: dict[int, list[tuple[float, int]]] = {}
        self.peak = 0
        self.hub_peak = 0

    def _measure(self) -> dict[int, int]:
        found = {}
        for pid in list(self.pids):
            size = group_footprint(pid)  # each worker leads its own process group
            if size is None:
                self.pids.discard(pid)
            else:
                found[pid] = size
        return found

    async def _read_status(self) -> None:
        status = await self.hub.status(self.session)
        self.hub_peak = max(self.hub_peak, int(status["memory"]["used_bytes"]))
        for entry in status["models"]:
            meta = entry["metadata"]
            if meta["pid"]:
                self.pids.add(meta["pid"])
                if meta["memory_state"] == "loaded":
                    self.loaded.add(meta["pid"])

    async def run(self) -> None:
        """Sample until cancelled."""
        next_status = 0.0
        while True:
            now = time.monotonic()
            if now >= next_status:
                await self._read_status()
                next_status = now + STATUS_S
            sizes = await asyncio.to_thread(self._measure)
            self.peak = max(self.peak, sum(sizes.values()))
            for pid, size in sizes.items():
                if pid in self.loaded:
                    self.series.setdefault(pid, []).append((now, size))
            await asyncio.sleep(WATCH_S)

    def allowance(self) -> int:
        """The largest growth of one loaded worker within one of the hub's sample intervals."""
        return max((window_growth(s, SAMPLE_INTERVAL) for s in self.series.values()), default=0)


def _hub_config() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    models = [
        fake_model(name, default=True, jit_enabled=True, env={"FAKE_HOLD_MB": str(HOLD_MB)})
        for name in MODELS
    ]
    return models, {"memory_budget": f"{BUDGET_MB}MB", "memory_safety_margin": 0}


def _learned_whole_block(meta: dict[str, Any]) -> bool:
    return bool((meta["memory_learned_bytes"] or 0) >= HOLD_MB * MB)


async def _learn_sizes(bench: Bench, hub: BenchHub, url: str) -> None:
    """Load each model alone until the hub has sampled its whole block, then unload it."""
    session = bench.session
    for name in MODELS:
        await hub.wait_state(session, name, "process_state", "running", 60)
        answer = await bench.client.post(url, chat_body(name))
        if answer.status != 200:
            raise RuntimeError(f"warm-up {name}: {answer.status} {answer.tail!r}")
        await hub.wait_for(name, _learned_whole_block, 20, session)
        await hub.action(session, name, "unload")
        await hub.wait_state(session, name, "memory_state", "unloaded", 30)


async def _traffic(
    bench: Bench, url: str, names: list[str], clients: int
) -> tuple[list[float], int]:
    """Send every request of `names` from `clients` clients: (latencies, errors)."""
    bodies = {name: chat_body(name) for name in MODELS}
    latencies: list[float] = []
    errors = 0
    queue = iter(names)

    async def client() -> None:
        nonlocal errors
        for name in queue:
            try:
                answer = await bench.client.post(url, bodies[name])
            except Exception as exc:
                errors += 1
                log(f"  error: {exc!r}")
                continue
            if answer.status != 200:
                errors += 1
                if errors <= 3:
                    log(f"  error: {answer.status} {answer.tail!r}")
                continue
            latencies.append(answer.total_s)

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, errors


async def memory_budget(bench: Bench, folder: Path) -> None:
    """Three models, two fit: errors, the peak summed footprint against the budget,
    evictions and latency."""
    plan = bench.plan
    models, top = _hub_config()
    hub = bench_hub(folder, models)
    hub.write_config(models, **top)
    try:
        hub.start()
        hub.wait_listening(poll=0.02)
        url = hub.url + "/v1/chat/completions"
        log(f"memory: learning the sizes of {len(MODELS)} models holding {HOLD_MB} MB each")
        await _learn_sizes(bench, hub, url)
        before = (await hub.status(bench.session))["memory"]
        names = schedule(plan.memory_requests, plan.memory_phase)
        log(
            f"memory: {len(names)} requests, {plan.memory_clients} clients, budget "
            f"{BUDGET_MB} MB, pairs of models in turn every {plan.memory_phase} requests"
        )
        watch = FootprintWatch(hub, bench.session)
        watching = asyncio.create_task(watch.run())
        started = time.perf_counter()
        try:
            latencies, errors = await _traffic(bench, url, names, plan.memory_clients)
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
        wall = time.perf_counter() - started
        after = (await hub.status(bench.session))["memory"]
    finally:
        hub.kill_everything(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)
    key = "memory"
    allowance = watch.allowance()
    bench.put(f"{key}.errors", errors)
    bench.put(f"{key}.budget_mb", BUDGET_MB)
    bench.put(f"{key}.peak_sum_mb", watch.peak / MB)
    bench.put(f"{key}.hub_peak_used_mb", watch.hub_peak / MB)
    bench.put(f"{key}.allowance_mb", allowance / MB)
    bench.put(f"{key}.peak_over_allowed_mb", (watch.peak - BUDGET_MB * MB - allowance) / MB)
    bench.put(f"{key}.evictions", after["evictions"] - before["evictions"])
    bench.put(f"{key}.refusals", after["refusals"] - before["refusals"])
    if latencies:
        bench.put(f"{key}.latency_p50_ms", ms(pct(latencies, 50)))
        bench.put(f"{key}.latency_p99_ms", ms(pct(latencies, 99)))
    bench.put(f"{key}.wall_s", wall)
