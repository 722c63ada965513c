"""The hub under test, its models, and a watch on its CPU time and memory.

The hub subprocess itself is tests/support/hubs.py's `HubProcess`, the one the tests use.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from tests.support.hubs import HubError, HubProcess, fake_model, new_hub

from .loadgen import log

TOKEN = "bench-token-" + uuid.uuid4().hex
TINY_MODEL_CACHE = Path(
    os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"),
    "mlx-openai-server-hub",
    "bench-tiny-model",
)


class BenchHub(HubProcess):
    """A hub started by the benchmark: the shared `HubProcess` and a few look-ups."""

    async def wait_state(
        self, session: aiohttp.ClientSession, name: str, key: str, value: str, timeout: float
    ) -> None:
        """Wait until model `name` has `key` == `value`; a failed model ends the wait."""

        def reached(meta: dict[str, Any]) -> bool:
            if meta["process_state"] == "failed":
                raise HubError(f"model {name} never got ready: {meta}\n{self.output()[-4000:]}")
            return bool(meta[key] == value)

        await self.wait_for(name, reached, timeout, session)

    async def action(self, session: aiohttp.ClientSession, name: str, action: str) -> None:
        """POST /hub/models/<name>/<action> (load, unload, ...), which must succeed."""
        status, body = await self.post(f"/hub/models/{name}/{action}", session)
        if status != 200:
            raise RuntimeError(f"{action} {name}: {status} {body}")

    def event_loop(self) -> str:
        """Which event loop the hub runs: uvloop when its extension is mapped."""
        assert self.proc is not None
        with contextlib.suppress(psutil.Error, OSError):
            maps = psutil.Process(self.proc.pid).memory_maps()
            return "uvloop" if any("uvloop" in m.path for m in maps) else "asyncio"
        return "unknown"


def bench_hub(folder: Path, models: list[dict[str, Any]]) -> BenchHub:
    """A hub in `folder` with these models and the benchmark's token, not started."""
    return new_hub(BenchHub, folder, models, token=TOKEN)


def prepare_real_worker(worker: str) -> Path:
    """Build (or reuse) the tiny model with the worker's own Python."""
    # Imported here: it pulls in pytest and the hub's CLI, which only a real-worker run needs.
    from tests.e2e.worker_support import build_tiny_model

    log(f"tiny model for the real worker in {TINY_MODEL_CACHE}")
    return build_tiny_model(TINY_MODEL_CACHE, worker)


def models_for(real_worker: str | None, tiny: Path | None) -> list[dict[str, Any]]:
    """The hub.yaml models: 'fast', 'jit', 'queued' (fake), and 'real', 'real-jit' with a worker."""
    models = [
        fake_model("fast", default=True),
        # Its own env keeps it out of the launch-help cache the 'fast' load filled,
        # so the first load is as cold as a hub's first JIT model ever is.
        fake_model("jit", default=True, jit_enabled=True, env={"BENCH_SIDE": "jit"}),
        # The hub's own request queue at work (traffic.py).
        fake_model("queued", default=True, max_concurrency=2),
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


class ProcWatch:
    """CPU time and peak RSS of one process, per phase (Linux: VmHWM, reset per phase)."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self._cpu0 = 0.0
        self._peak = 0
        self._sampler: asyncio.Task[None] | None = None
        self._hwm = Path(f"/proc/{pid}/status").exists()

    def rss_mb(self) -> float:
        """Resident memory now, in MB."""
        return round(self.proc.memory_info().rss / 2**20, 1)

    def cpu_s(self) -> float:
        """CPU time used so far (user + system), in seconds."""
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
