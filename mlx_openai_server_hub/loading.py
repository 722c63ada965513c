"""How a model's controller brings a worker up: the loading half of ModelController.

`Loading` is a mixin of `ModelController` (controller.py), split out only so
each file stays readable: the same object, the same single owner of the
model's state. Here: joining or beginning a load, fetching weights,
admission, spawning or adopting a standby, readiness, failed loads and
crashes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import attrs

from .errors import HubError
from .model_state import Change
from .states import SERVABLE, MemoryState, ProcessState
from .worker import WorkerProcess, WorkerStartError

logger = logging.getLogger("mlx_hub.controller")

MAX_FAILED_LOADS = 3
# On a failed load: the openai client would otherwise retry twice, and one call
# would become three failed loads (and mark the model failed).
NO_RETRY = {"x-should-retry": "false"}


class Loading:
    """The loading methods of ModelController (see controller.py for its state).

    No back-reference to ModelController here, not even for type hints: that would
    make the two modules a cycle."""

    async def _ensure_loaded(self, deadline: float | None) -> None:
        """Return once loaded; join a load in progress or begin one."""
        while True:
            self.check_servable()
            if self._memory == MemoryState.LOADED:
                return
            if self._memory == MemoryState.LOADING and self._load_task is not None:
                await self._join_load(self._load_task, deadline)
            elif self._memory == MemoryState.UNLOADING:
                await self._wait_before(lambda: self._memory != MemoryState.UNLOADING, deadline)
            else:
                await self._begin_load(deadline)

    async def _join_load(self, task: asyncio.Task[None], deadline: float | None) -> None:
        """Wait for a load (never cancelling it); raise its failure."""
        try:
            async with asyncio.timeout_at(_loop_deadline(deadline)):
                await asyncio.shield(task)
        except TimeoutError:
            raise HubError(
                f"Model '{self.name}' is still loading after {self.config.queue_timeout} s "
                "(queue_timeout); try again shortly",
                503,
            ) from None
        except asyncio.CancelledError:
            if not task.cancelled():
                raise  # we were cancelled ourselves
            # The load was cancelled by an unload or stop: look again.

    async def _wait_before(self, predicate: Callable[[], bool], deadline: float | None) -> None:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            await self._s.signal.wait_until(predicate, timeout)
        except TimeoutError:
            raise HubError(
                f"Model '{self.name}' did not become available within "
                f"{self.config.queue_timeout} s (queue_timeout)",
                503,
            ) from None

    async def _begin_load(self, deadline: float | None) -> None:
        """Fetch the weights if needed, ask the supervisor for room, then start the one
        load task."""
        if deadline is None:
            deadline = time.monotonic() + self.config.queue_timeout
        self._weights = await self._fetch_weights(deadline)
        async with self._s.admission.admit(self, deadline):
            if not self.needs_load():
                return  # someone else began it while we waited
            self._move(memory=MemoryState.LOADING)
            self._memory_error = None
            self._load_task = self._s.tasks.spawn(self._run_load(), f"load:{self.name}")

    async def _fetch_weights(self, deadline: float) -> Path | None:
        """The model's snapshot on disk, downloaded first when it is a repo id that is
        missing or incomplete (one download however many ask; it goes on for the
        others if this caller gives up). None for a local path."""
        cfg = self.config
        download = self._s.downloads.ensure(cfg.model_path, cfg.revision, self.name, cfg.env)
        try:
            async with asyncio.timeout_at(_loop_deadline(deadline)):
                return await asyncio.shield(asyncio.ensure_future(download))
        except TimeoutError:
            progress = self._s.downloads.status(cfg.model_path, cfg.revision) or {}
            done, total = progress.get("bytes_done"), progress.get("bytes_total")
            share = f" ({done * 100 // total} %)" if done is not None and total else ""
            raise HubError(
                f"Model '{self.name}' is still downloading{share} after "
                f"{cfg.queue_timeout} s (queue_timeout); try again shortly",
                503,
            ) from None

    async def _run_load(self) -> None:
        """The load task: spawn the worker and wait until it is ready."""
        started = time.monotonic()
        try:
            worker = self._adopt_standby() or await self._spawn_worker()
            await worker.wait_ready(self._s.http(), self.config.startup_timeout)
            await self._s.admission.ready(self)
        except asyncio.CancelledError:
            await self._discard_worker()
            self._move(memory=MemoryState.UNLOADED)
            raise
        except (WorkerStartError, HubError) as exc:
            await self._load_failed(exc)
            raise HubError(
                f"Model '{self.name}' failed to load: {exc}", 503, headers=NO_RETRY
            ) from None
        self._failed_loads = 0
        self._last_used = time.monotonic()
        self._move(memory=MemoryState.LOADED)
        seconds = time.monotonic() - started
        self._metrics.load_succeeded(seconds)
        logger.info("Model '%s' loaded in %.1f s", self.name, seconds)
        self._arm_idle_timer()

    async def _spawn_worker(self) -> WorkerProcess:
        cfg = self.config
        if cfg.revision is not None and self._weights is not None:
            # The worker knows no revision: give it the snapshot's own folder.
            cfg = attrs.evolve(cfg, model_path=str(self._weights))
        self._served_path = cfg.model_path
        prepared = await self._s.launcher.prepare(cfg, self.worker_host, self._renew_port)
        for warning in prepared.warnings:
            if warning not in self._warnings:
                logger.warning(warning)
        self._warnings = prepared.warnings
        worker = prepared.worker
        self._set_worker(worker)
        await worker.spawn()
        self._s.changed(self, Change.WORKER)  # now it has a pid to record
        self._s.tasks.spawn(self._watch_worker(worker), f"watch:{self.name}:{worker.pid}")
        return worker

    def _adopt_standby(self) -> WorkerProcess | None:
        """The standby, made this load's worker and told to load (None: no standby)."""
        worker = self._standby.take()
        if worker is None:
            return None
        logger.info("Model '%s': loading in its warm standby (pid %s)", self.name, worker.pid)
        self._set_worker(worker)
        trigger = self._standby.trigger_load(worker, self.config.startup_timeout)
        self._s.tasks.spawn(trigger, f"standby-load:{self.name}")
        self._s.tasks.spawn(self._watch_worker(worker), f"watch:{self.name}:{worker.pid}")
        return worker

    def _wants_standby(self) -> bool:
        return (
            self._process in SERVABLE
            and self._memory == MemoryState.UNLOADED
            and self._s.accepting()
        )

    def _warn_standby(self, message: str) -> None:
        if message not in self._standby_warnings:
            logger.warning(message)
            self._standby_warnings.append(message)

    @property
    def has_standby(self) -> bool:
        """A standby process holds this (unloaded) model's imports in memory."""
        return self._standby.info() is not None

    async def drop_standby(self, reason: str) -> None:
        """End the standby to return its memory (it is not replaced until the next unload)."""
        logger.info("Model '%s': ending its standby: %s", self.name, reason)
        await self._standby.stop()

    def _renew_port(self) -> int:
        self._port = self._s.ports.renew(self._lessee, self.worker_host, self.config.port)
        return self._port

    async def _load_failed(self, exc: WorkerStartError | HubError) -> None:
        worker = self._worker
        await self._discard_worker()
        self._failed_loads += 1
        self._metrics.load_failed()
        self._exit_code = worker.returncode if worker else None
        self._memory_error = str(exc)
        logger.error(
            "Model '%s' failed to load (%d in a row): %s", self.name, self._failed_loads, exc
        )
        self._move(memory=MemoryState.UNLOADED)
        if self._failed_loads >= MAX_FAILED_LOADS and self._process == ProcessState.RUNNING:
            self._release(ProcessState.FAILED)

    async def _watch_worker(self, worker: WorkerProcess) -> None:
        """Notice a loaded worker that exits on its own (a crash)."""
        await worker.exited.wait()
        if self._worker is not worker or self._memory != MemoryState.LOADED:
            return  # we stopped it, or the load path handles it
        self._exit_code = worker.returncode
        self._memory_error = (
            f"Worker exited unexpectedly with code {worker.returncode}. {worker.tail_text()}"
        )
        logger.error("Model '%s': %s", self.name, self._memory_error)
        self._metrics.crashed()
        self._cancel_idle_timer()
        self._set_worker(None)
        self._move(memory=MemoryState.UNLOADED)
        await worker.stop(grace=0)  # reap it and end any helpers left in its group

    async def _discard_worker(self) -> None:
        worker = self._worker
        if worker is not None:
            await worker.stop()
            self._set_worker(None)

    def _warm_launch_help(self) -> None:
        warm = self._s.launcher.warm_help(self.config)
        if warm is not None:
            self._s.tasks.spawn(warm, f"launch-help:{self.name}")


def _loop_deadline(deadline: float | None) -> float | None:
    """Convert a time.monotonic() deadline to the event loop's clock."""
    if deadline is None:
        return None
    return asyncio.get_running_loop().time() + (deadline - time.monotonic())
