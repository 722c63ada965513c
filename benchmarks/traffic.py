"""Traffic the hub shapes and sees: a model's request queue under 64 clients, and what
request ids, the access log and the metrics cost the proxy path.

- `queue_fifo`: 64 clients on the model `queued` (`max_concurrency: 2`), each request
  held `fake_delay` by the fake worker. Arrival order is the order the clients send in
  (staggered starts); service order is the fake worker's own response counter
  (`chatcmpl-fake-<pid>-<n>`, taken as it answers). Queue waits are the access log's
  `queue_wait` fields in hub.log; hub CPU is psutil's, before and after.
- `proxy_cost`: one request at a time, direct to the worker and through the hub,
  interleaved, for `fast` (no limit) and `queued` (through the request queue); then the
  per-request work of the access middleware timed in this process with the hub's own
  functions. The hub has no switch to turn metrics off (and gets none for a benchmark), so
  the "without" side is the worker reached directly, and the in-process figure says how
  much of the added latency that work can account for.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from mlx_openai_server_hub.access_log import (
    AccessRecord,
    access_line,
    endpoint_of,
    request_id_from,
    usage_from_json,
)
from mlx_openai_server_hub.logs import LogFiles
from mlx_openai_server_hub.metrics import HubMetrics

from .core import Bench
from .loadgen import Answer, chat_body, interleaved, log, ms, no_gc, pct, timed_request

QUEUED = "queued"  # the hub.yaml model with max_concurrency: 2 (benchmarks/hubs.py)
CLIENTS = 64
SERVICE_S = 0.05  # fake_delay of each queued request
# The first two requests start the two slots half a service apart, so the worker's two
# answers in flight never finish within a few ms of each other: its answer counter is
# then the order the queue let them in, not the scheduler's noise.
SLOT_OFFSET_S = SERVICE_S / 2
STAGGER_S = 0.003  # between the sends of the other clients: the arrival order
IDLE_S = 0.5  # the hub's idle CPU is measured this long
WORK_BATCHES = 5  # of the in-process timing; the fastest counts
_ANSWER_NUMBER = re.compile(rb'"id":\s*"chatcmpl-fake-\d+-(\d+)"')
_QUEUE_WAIT = re.compile(r"queue_wait=([0-9.]+)")


def worst_reordering(service: list[int]) -> tuple[int, int]:
    """(most later arrivals served before one request, pairs served out of order).

    `service[i]` is the service rank of the i-th arrival.
    """
    worst = inversions = 0
    for i, rank in enumerate(service):
        overtaken = sum(1 for later in service[i + 1 :] if later < rank)
        worst = max(worst, overtaken)
        inversions += overtaken
    return worst, inversions


def _access_waits(hub_log: Path, offset: int) -> list[float]:
    """The queue waits of the queued model's chat requests logged after `offset`."""
    with hub_log.open("rb") as file:
        file.seek(offset)
        text = file.read().decode("utf-8", "replace")
    waits = []
    for line in text.splitlines():
        if " access " in line and f" model={QUEUED} " in line and "/chat/completions" in line:
            found = _QUEUE_WAIT.search(line)
            if found:
                waits.append(float(found.group(1)))
    return waits


async def _one_round(bench: Bench, url: str, body: bytes) -> tuple[list[int], int]:
    """64 staggered clients, one request each: (answer number per arrival, errors)."""
    numbers: list[int] = [-1] * CLIENTS
    errors = 0

    async def client(index: int) -> None:
        nonlocal errors
        delay = 0.0 if index == 0 else SLOT_OFFSET_S + (index - 1) * STAGGER_S
        await asyncio.sleep(delay)
        try:
            answer: Answer = await bench.client.post(url, body)
        except Exception as exc:
            errors += 1
            log(f"  error: {exc!r}")
            return
        found = _ANSWER_NUMBER.search(answer.body)
        if answer.status != 200 or found is None:
            errors += 1
            if errors <= 3:
                log(f"  error: {answer.status} {answer.tail!r}")
            return
        numbers[index] = int(found.group(1))

    await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    return numbers, errors


async def queue_fifo(bench: Bench) -> None:
    """64 clients on one model with max_concurrency 2: errors, FIFO, queue wait, hub CPU."""
    rounds = bench.plan.traffic_rounds
    await bench.hub.wait_state(bench.session, QUEUED, "memory_state", "loaded", 60)
    _, hub_url = await bench.urls(QUEUED)
    body = chat_body(QUEUED, fake_delay=SERVICE_S)
    log(f"queue: {CLIENTS} clients, max_concurrency 2, {SERVICE_S * 1000:g} ms each, x{rounds}")
    # Open the client's connections first: a connect must not decide the arrival order.
    fast_url = bench.hub.url + "/v1/chat/completions"
    fast = chat_body("fast")
    await asyncio.gather(*(bench.client.post(fast_url, fast) for _ in range(CLIENTS)))
    # ... and the hub's two connections to the worker.
    warm = chat_body(QUEUED)
    await asyncio.gather(*(bench.client.post(hub_url, warm) for _ in range(2)))
    # What the hub burns doing nothing (health checks): is its CPU figure all requests'?
    # Meanwhile the log writer thread catches up with the warm-up's access lines.
    bench.watch.begin()
    await asyncio.sleep(IDLE_S)
    idle_rate = (await bench.watch.end())[0] / IDLE_S
    hub_log = bench.hub.log_path / "hub.log"
    offset = hub_log.stat().st_size
    worst = inversions = errors = 0
    walls: list[float] = []
    bench.watch.begin()
    with no_gc():
        for _ in range(rounds):
            started = time.perf_counter()
            numbers, failed = await _one_round(bench, hub_url, body)
            walls.append(time.perf_counter() - started)
            errors += failed
            served = sorted(n for n in numbers if n >= 0)
            rank = {n: r for r, n in enumerate(served)}
            round_worst, round_pairs = worst_reordering([rank[n] for n in numbers if n >= 0])
            worst, inversions = max(worst, round_worst), inversions + round_pairs
    cpu, _ = await bench.watch.end()
    expected = CLIENTS * rounds - errors
    waits = _access_waits(hub_log, offset)
    for _ in range(50):  # the access log is written off the event loop
        if len(waits) >= expected:
            break
        await asyncio.sleep(0.1)
        waits = _access_waits(hub_log, offset)
    key = "traffic.queue64"
    bench.put(f"{key}.errors", errors)
    bench.put(f"{key}.fifo_worst_reordering", worst)
    bench.put(f"{key}.fifo_inversions", inversions)
    bench.put(f"{key}.logged_requests", len(waits))
    if waits:
        bench.put(f"{key}.queue_wait_p50_ms", ms(pct(waits, 50)))
        bench.put(f"{key}.queue_wait_p99_ms", ms(pct(waits, 99)))
    # With two slots, 64 requests of SERVICE_S each need 32 × SERVICE_S at best.
    bench.put(f"{key}.wall_s", sum(walls) / len(walls))
    bench.put(f"{key}.ideal_wall_s", CLIENTS / 2 * SERVICE_S)
    bench.put(f"{key}.hub_cpu_s", cpu)
    bench.put(f"{key}.hub_cpu_ms_per_req", ms(cpu / max(1, CLIENTS * rounds)))
    bench.put(f"{key}.hub_idle_cpu_share", idle_rate)


async def _pairs(bench: Bench, model: str, pairs: int) -> tuple[list[float], list[float], float]:
    """Interleaved direct and hub requests to `model`: (direct, hub, hub CPU seconds)."""
    direct_url, hub_url = await bench.urls(model)
    meta = await bench.hub.model(model, bench.session)
    direct_body = chat_body(meta["model_path"])
    hub_body = chat_body(model)
    for _ in range(50):
        await timed_request(bench.client, direct_url, direct_body)
        await timed_request(bench.client, hub_url, hub_body)
    bench.watch.begin()
    with no_gc():
        d, h = await interleaved(
            pairs,
            lambda: timed_request(bench.client, direct_url, direct_body),
            lambda: timed_request(bench.client, hub_url, hub_body),
        )
    cpu, _ = await bench.watch.end()
    return d, h, cpu


class _Peer:
    """The transport a request asks for its client's address (`request.remote`)."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False


async def _chat_request() -> web.Request:
    """A chat request matched to its route, as the access middleware sees it."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", lambda _: web.Response())
    path = "/v1/chat/completions"
    match = await app.router.resolve(make_mocked_request("POST", path, app=app))
    return make_mocked_request("POST", path, app=app, match_info=match, transport=_Peer())


def _one_request(
    request: web.Request, body: bytes, log: logging.Logger, metrics: HubMetrics
) -> tuple[float, float, float]:
    """What the access middleware and the proxy add to one request: seconds spent on
    (its id and record, its usage and access-log line, its metrics)."""
    t0 = time.perf_counter()
    record = AccessRecord(request_id_from(None), t0)
    record.model, record.queue_wait = "fast", 0.0
    record.mark_first_byte()
    t1 = time.perf_counter()
    usage = record.usage = usage_from_json(body)
    total = time.perf_counter() - record.started
    log.info("%s", access_line(request, record, 200, len(body), total))
    t2 = time.perf_counter()
    model = metrics.model(record.model)
    model.observe_request(endpoint_of(request), 200, total, 0.0, 0.0)
    assert usage is not None
    model.add_tokens(usage.prompt_tokens, usage.completion_tokens)
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2


async def _per_request_work_us(calls: int) -> dict[str, float]:
    """µs per request of the access-log and metrics work, done with the hub's own functions
    and log writer: on the loop thread in all and per part (the fastest of a few batches:
    the other processes on the machine only ever add to it), and as process CPU (on
    average, with the writer thread's file writes)."""
    request = await _chat_request()
    body = json.dumps(
        {
            "id": "chatcmpl-fake-1-1",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "fake:x:hi"}}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
        }
    ).encode()
    metrics = HubMetrics()
    files = LogFiles()
    batch = max(1, calls // WORK_BATCHES)
    best = dict.fromkeys(("loop", "id_loop", "log_loop", "metrics_loop"), math.inf)
    with tempfile.TemporaryDirectory(prefix="mlx-hub-bench-log-") as folder:
        # A logger of our own, through the hub's queue and writer thread to a real file.
        access = files.open("mlx_hub_bench.access", Path(folder) / "hub.log")
        access.setLevel(logging.INFO)
        try:
            with no_gc():
                cpu = time.process_time()
                for _ in range(WORK_BATCHES):
                    wall = time.perf_counter()
                    spent = [_one_request(request, body, access, metrics) for _ in range(batch)]
                    sums = [sum(column) for column in zip(*spent, strict=True)]
                    sums.insert(0, time.perf_counter() - wall)
                    for key, value in zip(best, sums, strict=True):
                        best[key] = min(best[key], value)
        finally:
            files.close()  # waits for the writer thread: its CPU is in the figure
        cpu = time.process_time() - cpu
    per_call = {f"{key}_us": value / batch * 1e6 for key, value in best.items()}
    return {**per_call, "cpu_us": cpu / (batch * WORK_BATCHES) * 1e6}


async def proxy_cost(bench: Bench) -> None:
    """Added latency of the hub (with its access log and metrics) against the same worker
    direct, and how much of it the access-log and metrics work is."""
    pairs = bench.plan.traffic_pairs
    log(f"proxy cost: {pairs} interleaved pairs on 'fast' and on '{QUEUED}'")
    added = 0.0
    for model, key in (("fast", "traffic.plain"), (QUEUED, "traffic.queued")):
        d, h, cpu = await _pairs(bench, model, pairs)
        bench.put(f"{key}.direct_p50_ms", ms(pct(d, 50)))
        bench.put(f"{key}.hub_p50_ms", ms(pct(h, 50)))
        bench.put(f"{key}.ratio_p50", pct(h, 50) / pct(d, 50))
        bench.put(f"{key}.ratio_p99", pct(h, 99) / pct(d, 99))
        bench.put(f"{key}.added_p50_us", (pct(h, 50) - pct(d, 50)) * 1e6)
        bench.put(f"{key}.hub_cpu_ms_per_req", ms(cpu / pairs))
        if model == "fast":
            added = pct(h, 50) - pct(d, 50)
    calls = bench.plan.traffic_calls
    log(f"access log + metrics work in process: {calls} requests")
    work = await _per_request_work_us(calls)
    for name, value in work.items():
        bench.put(f"traffic.observe.{name}_per_req", value)
    if added > 0:
        bench.put("traffic.observe.share_of_added", work["loop_us"] / (added * 1e6))
