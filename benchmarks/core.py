"""What every phase shares: the hub, the timed client, the results and the hub's watch."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import aiohttp

from .hubs import BenchHub, ProcWatch
from .loadgen import RawClient
from .plans import Plan


class Bench:
    """One run against one hub: the phases (in the family modules) fill `results`."""

    def __init__(self, plan: Plan, hub: BenchHub, session: aiohttp.ClientSession) -> None:
        self.plan = plan
        self.hub = hub
        self.session = session  # control API only
        self.client = RawClient()  # every timed request
        self.results: dict[str, float] = {}
        self.samples: dict[str, list[float]] = {}  # raw values of the slow phases
        assert hub.proc is not None
        self.watch = ProcWatch(hub.proc.pid)

    def put(self, key: str, value: float) -> None:
        """Record one figure (rounded: the JSON stays readable)."""
        self.results[key] = round(value, 4)

    async def urls(self, name: str) -> tuple[str, str]:
        """(the worker's own URL, the hub's URL) for chat completions of model `name`."""
        meta = await self.hub.model(name, self.session)
        path = "/v1/chat/completions"
        return f"http://127.0.0.1:{meta['port']}{path}", self.hub.url + path

    @contextlib.contextmanager
    def loadgen_cpu(self, key: str) -> Iterator[None]:
        """Record how busy the load generator itself was (share of one core)."""
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        busy = (time.process_time() - cpu) / max(1e-9, time.perf_counter() - wall)
        self.put(f"{key}.loadgen_cpu_share", busy)
