"""One benchmark run: a hub with fake (and maybe real) workers, then every phase in order."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from .concurrency import concurrency
from .core import Bench
from .downloads import download_throughput
from .footprint import cli_status, idle_rss
from .hubs import bench_hub, models_for, prepare_real_worker
from .jit import jit, jit_at_hub_start
from .latency import small, spaced, throughput, ttfb
from .loadgen import chat_body, log, new_session, timed_request
from .memory import memory_budget
from .plans import FULL, QUICK
from .real import real
from .report import machine
from .traffic import proxy_cost, queue_fifo


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark `args` ask for; the report (meta, results, samples)."""
    plan = QUICK if args.quick else FULL
    real_worker = args.real_worker
    tiny = prepare_real_worker(real_worker) if real_worker else None
    folder = Path(tempfile.mkdtemp(prefix="mlx-hub-bench-"))
    models = models_for(real_worker, tiny)
    hub = bench_hub(folder, models)
    started = time.monotonic()
    try:
        hub.start()
        async with new_session() as session:
            hub.wait_listening(poll=0.02)
            bench = Bench(plan, hub, session)
            await hub.wait_state(session, "fast", "memory_state", "loaded", 60)
            await hub.wait_state(session, "jit", "process_state", "running", 60)
            # The first JIT load must come before anything else touches that model.
            await jit(bench, "jit", "/models/jit", "jit.", plan.jit_warm_rounds, 60)
            await jit_at_hub_start(bench, models[1], "jit.")
            if real_worker:
                log("waiting for the real worker to load")
                await hub.wait_state(session, "real", "memory_state", "loaded", 300)
                await hub.wait_state(session, "real-jit", "process_state", "running", 60)
                rounds = plan.real_jit_rounds if args.real_jit is None else args.real_jit
                if rounds >= 0:
                    await jit(bench, "real-jit", str(tiny), "real.jit_", rounds, 300)
                    await jit_at_hub_start(bench, models[3], "real.jit_")
            # One small request per model, then the footprint of an idle hub.
            await timed_request(bench.client, hub.url + "/v1/chat/completions", chat_body("fast"))
            await idle_rss(bench, "idle.hub_rss_mb")
            await small(bench)
            await spaced(bench)
            await ttfb(bench)
            await throughput(bench)
            await queue_fifo(bench)
            await proxy_cost(bench)
            await memory_budget(bench, folder / "memory")
            await download_throughput(bench, folder / "downloads")
            if real_worker:
                await real(bench, str(tiny))
            for clients, rounds in plan.conc_rounds.items():
                await concurrency(bench, f"conc{clients}", clients, rounds, plan.conc_chunks, 0.02)
            if plan.saturated_rounds:
                await concurrency(bench, "saturated64", 64, plan.saturated_rounds, 32, 0.0)
            await idle_rss(bench, "idle.hub_rss_after_load_mb")
            log("CLI status")
            cli_status(bench)
            await bench.client.close()
            results = bench.results
            hub_loop = hub.event_loop()
            samples = bench.samples
    finally:
        hub.kill_everything(timeout=30)
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
