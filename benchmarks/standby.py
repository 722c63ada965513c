"""Cold requests on the JIT-and-Auto-Unload worker line: standby vs respawn vs the worker alone.

    python -m benchmarks.standby --jit-worker PATH [--rounds N]

One run, side by side, the time of a chat request to a started model that is
not loaded (issue 11's table):

- `standby`: through the hub, the model's warm standby loads in-process;
- `respawn`: through the hub with `warm_standby: false` (a new process per load);
- `direct`: the worker started with `--jit` by hand, its first request.

Each round unloads the model and waits until a new standby is ready (or for
nothing, with respawn). The model is the tests' tiny llama, built once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.e2e.worker_support import WORKER_ENV_OVERRIDES, build_tiny_model
from tests.support.hubs import HubProcess, chat, free_port, new_hub, post_json

STARTUP_S = 180.0


def model_entry(name: str, path: Path, worker: str, standby: bool) -> dict[str, Any]:
    return {
        "name": name,
        "model_path": str(path),
        "worker_command": [worker],
        "env": dict(WORKER_ENV_OVERRIDES),
        "jit_enabled": True,
        "default": True,
        "warm_standby": standby,
        "startup_timeout": STARTUP_S,
    }


async def wait_standby_ready(hub: HubProcess, name: str) -> None:
    """Until the model's standby exists and its own /health answers (imports done)."""
    meta = await hub.wait_for(name, lambda m: (m["standby"] or {}).get("pid"), STARTUP_S)
    deadline = time.monotonic() + STARTUP_S
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(f"http://127.0.0.1:{meta['port']}/health") as r:
                    if r.status in (200, 403):  # 403: guarded, but it answers
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(f"standby of {name} never answered")


async def through_hub(folder: Path, model: Path, worker: str, standby: bool, rounds: int):
    hub = new_hub(HubProcess, folder, [model_entry("m", model, worker, standby)])
    hub.start()
    try:
        hub.wait_listening(STARTUP_S)
        times = []
        for _ in range(rounds):
            if standby:
                await wait_standby_ready(hub, "m")
            else:
                await hub.wait_for("m", lambda m: m["process_state"] == "running", STARTUP_S)
            started = time.monotonic()
            status, body = await post_json(hub, chat("m", max_tokens=4))
            assert status == 200, body
            times.append(time.monotonic() - started)
            code, _ = await hub.post("/hub/models/m/unload")
            assert code == 200
        return times
    finally:
        hub.kill_everything()


async def direct(model: Path, worker: str, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        port = free_port()
        argv = [worker, "launch", "--model-path", str(model), "--model-type", "lm"]
        argv += ["--host", "127.0.0.1", "--port", str(port), "--jit", "--no-log-file"]
        env = {**os.environ, **WORKER_ENV_OVERRIDES}
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.STDOUT
        )
        try:
            url = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as session:
                deadline = time.monotonic() + STARTUP_S
                while time.monotonic() < deadline:
                    try:
                        async with session.get(url + "/health") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.2)
                body = chat(str(model), max_tokens=4)
                started = time.monotonic()
                async with session.post(url + "/v1/chat/completions", json=body) as r:
                    await r.read()
                    assert r.status == 200
                times.append(time.monotonic() - started)
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)
    return times


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jit-worker", required=True, help="the JIT line's mlx-openai-server")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = build_tiny_model(folder / "tiny", args.jit_worker)
        figures = {
            "standby": await through_hub(folder / "a", model, args.jit_worker, True, args.rounds),
            "respawn": await through_hub(folder / "b", model, args.jit_worker, False, args.rounds),
            "direct": await direct(model, args.jit_worker, args.rounds),
        }
    base = statistics.median(figures["direct"])
    for name, times in figures.items():
        median = statistics.median(times)
        print(f"{name:8} median {median:6.2f} s  ({median / base:4.2f}x direct)  {times}")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
