"""A model's warm standby: a `--jit` worker with its imports done and no weights.

For a started model that is not loaded, when its worker takes `--jit` and
`warm_standby` allows it, the model's controller keeps one standby. A load
then adopts it and has it load in-process: about a second, against the ~7 s
of imports a new worker process spends. Unloading still ends the process (the
worker's own unload returns only part of the memory), and a new standby is
started behind it.

Standbys start one at a time and only while no load is in progress (the
supervisor's `turn`): ten JIT models at hub start must not be ten imports
competing with a load someone waits for. They are not niced: an
unprivileged process cannot raise its priority back once it serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import aiohttp
import attrs

from .config import ModelConfig
from .errors import HubError
from .launcher import Launcher
from .runtime_state import WorkerRecord
from .tasks import OwnedTasks
from .worker import WorkerProcess, WorkerStartError

logger = logging.getLogger("mlx_hub.standby")

# A standby that fails to start (or dies) this many times in a row is given up:
# the model falls back to cold starts.
MAX_FAILURES = 3
# Seconds before the n-th retry: a dying standby is replaced, never in a tight loop.
BACKOFF_SECONDS = (1.0, 5.0, 15.0)
# How long the request that makes a standby load may take before it is dropped
# (readiness is judged by /health, not by this request).
TRIGGER_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10)

Turn = Callable[[], contextlib.AbstractAsyncContextManager[None]]


@attrs.frozen
class StandbyInfo:
    """What status shows of a standby."""

    pid: int | None
    since: float


@attrs.frozen
class StandbyContext:
    """What a standby needs from its model's controller."""

    name: str
    config: Callable[[], ModelConfig]
    host: Callable[[], str]
    lease_port: Callable[[], int]
    wanted: Callable[[], bool]  # started, not loaded, the hub not shutting down
    changed: Callable[[], None]  # a process appeared or went away
    warn: Callable[[str], None]


class Standby:
    """The standby worker of one model (owned by its controller)."""

    def __init__(
        self,
        context: StandbyContext,
        launcher: Launcher,
        tasks: OwnedTasks,
        http: Callable[[], aiohttp.ClientSession],
        turn: Turn,
    ) -> None:
        self._c = context
        self._launcher = launcher
        self._tasks = tasks
        self._http = http
        self._turn = turn
        self._worker: WorkerProcess | None = None
        self._since = 0.0
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        self.given_up = False

    def info(self) -> StandbyInfo | None:
        """The standby now, if there is one."""
        if self._worker is None:
            return None
        return StandbyInfo(self._worker.pid, self._since)

    def record(self) -> WorkerRecord | None:
        """Its process group, for hub_runtime.json (so a crashed hub's reaper ends it)."""
        worker = self._worker
        if worker is None or worker.pid is None or worker.returncode is not None:
            return None
        return WorkerRecord(worker.pid, worker.pid, worker.port, worker.create_time or 0.0)

    def schedule(self) -> None:
        """Start a standby in the background if the model wants one and has none."""
        if self._worker is not None or self.given_up or not self._c.wanted():
            return
        if self._task is None or self._task.done():
            self._task = self._tasks.spawn(self._run(), f"standby:{self._c.name}")

    def take(self) -> WorkerProcess | None:
        """Hand the standby over to a load (None: there is none, or it has no process
        yet). It is the caller's worker from now on."""
        worker = self._worker
        if worker is None or worker.pid is None or worker.returncode is not None:
            return None
        self._worker = None
        if self._task is not None:
            self._task.cancel()  # it may still be waiting for /health: the load does that
        return worker

    async def stop(self) -> None:
        """End the standby (the model stopped, memory is needed, the hub shuts down)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._discard()

    async def _discard(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            await worker.stop()
            self._c.changed()

    def kill_now(self) -> None:
        """SIGKILL its process group (a second Ctrl+C)."""
        if self._worker is not None:
            self._worker.kill_now()

    async def trigger_load(self, worker: WorkerProcess, timeout: float) -> None:
        """Make an adopted standby load its model in-process (its `/v1/queue/stats`
        loads, as a request would) once it answers at all: it may have been adopted
        while still importing. The load's readiness is judged by `/health`."""
        url = f"{worker.base_url}/v1/queue/stats"
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, WorkerStartError):
            await worker.wait_ready(self._http(), timeout, loaded=False)
            async with self._http().get(url, timeout=TRIGGER_TIMEOUT) as resp:
                await resp.read()

    # ---------------------------------------------------------------- internals

    async def _run(self) -> None:
        if self._failures:
            await asyncio.sleep(BACKOFF_SECONDS[min(self._failures, len(BACKOFF_SECONDS)) - 1])
        cfg = self._c.config()
        if cfg.warm_standby is False or not await self._supported(cfg):
            return
        async with self._turn():
            if not self._c.wanted() or self._worker is not None:
                return
            try:
                worker = await self._start(cfg)
            except (WorkerStartError, HubError) as exc:
                await self._failed(f"could not start: {exc}")
                return
        self._failures = 0
        if not self._c.wanted():  # a cold load began while it started: not needed now
            await self._discard()
            return
        self._tasks.spawn(self._watch(worker), f"standby-watch:{self._c.name}:{worker.pid}")

    async def _supported(self, cfg: ModelConfig) -> bool:
        try:
            supported = await self._launcher.supports_standby(cfg)
        except (WorkerStartError, HubError):
            return False  # the first load reports what is wrong with the command
        if not supported and cfg.warm_standby is True:
            self._c.warn(
                f"Model '{cfg.name}': warm_standby is set but this worker's launch command has "
                "no --jit; it starts cold"
            )
        return supported

    async def _start(self, cfg: ModelConfig) -> WorkerProcess:
        prepared = await self._launcher.prepare(
            cfg, self._c.host(), self._c.lease_port, standby=True
        )
        worker = prepared.worker
        self._worker, self._since = worker, time.time()
        try:
            await worker.spawn()
            self._c.changed()
            await worker.wait_ready(self._http(), cfg.startup_timeout, loaded=False)
        except BaseException:
            if self._worker is worker:  # not adopted by a load meanwhile
                self._worker = None
                await worker.stop()
                self._c.changed()
            raise
        logger.info("Model '%s': standby ready (pid %s)", self._c.name, worker.pid)
        return worker

    async def _watch(self, worker: WorkerProcess) -> None:
        """A standby that dies on its own is replaced (with back-off)."""
        await worker.exited.wait()
        if self._worker is not worker:
            return  # adopted by a load, or stopped by us
        self._worker = None
        await worker.stop(grace=0)  # reap it and end any helpers left in its group
        self._c.changed()
        await self._failed(f"exited with code {worker.returncode}")

    async def _failed(self, why: str) -> None:
        self._failures += 1
        if self._failures >= MAX_FAILURES:
            self.given_up = True
            self._c.warn(
                f"Model '{self._c.name}': its warm standby {why} {self._failures} times in a "
                "row; given up, the model starts cold"
            )
            return
        logger.warning("Model '%s': standby %s; retrying", self._c.name, why)
        self._task = None
        self.schedule()
