"""The hub's footprint at rest and the wall time of `mlx-openai-server-hub status`."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .core import Bench
from .loadgen import ms


async def idle_rss(bench: Bench, key: str) -> None:
    """The hub's RSS as `key`, after half a second of rest."""
    await asyncio.sleep(0.5)
    bench.put(key, bench.watch.rss_mb())


def cli_status(bench: Bench) -> None:
    """Median wall time of `status` against the running hub (module, and script if any)."""
    env = bench.hub.env
    config = ["--config", str(bench.hub.config_path), "status"]
    commands = {"cli.status_ms": [sys.executable, "-m", "mlx_openai_server_hub", *config]}
    script = Path(sys.executable).parent / "mlx-openai-server-hub"
    if script.exists():
        commands["cli.status_script_ms"] = [str(script), *config]
    for key, command in commands.items():
        runs: list[float] = []
        for _ in range(bench.plan.status_runs + 1):  # the first run warms the page cache
            start = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, timeout=60)
            runs.append(time.perf_counter() - start)
            if done.returncode != 0:
                raise RuntimeError(f"`status` failed ({done.returncode}): {done.stderr!r}")
        bench.put(key, ms(statistics.median(runs[1:])))
