"""One model's controller: the only code that changes that model's state.

A `ModelController` owns its model's two state machines (`states.py`), its
worker process, its port lease, its idle timer and its counters. Everyone
else calls its intent-level methods (`start`, `stop`, `load`, `unload`,
`lease`, `snapshot`) and never writes its fields. Decisions that involve
other models (a group's `max_loaded`) are the supervisor's: the controller
asks its `Admission` before a load and announces every change through
`Services.changed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Protocol

import aiohttp
import attrs

from .config import ModelConfig
from .downloads import DownloadManager
from .errors import HubError
from .launcher import Launcher
from .loading import NO_RETRY, Loading
from .metrics import HubMetrics
from .model_state import Change, ChangeSignal, ModelSnapshot, Target, WhileWaiting
from .ports import Lessee, PortLeases
from .request_queue import QueueLimits, RequestQueue, Ticket, limits_from
from .runtime_state import WorkerRecord
from .standby import Standby, StandbyContext, Turn
from .states import (
    HOLDS_MEMORY,
    MEMORY_MOVES,
    PROCESS_MOVES,
    SERVABLE,
    IllegalTransition,
    MemoryState,
    ProcessState,
)
from .tasks import OwnedTasks
from .worker import WorkerProcess

logger = logging.getLogger("mlx_hub.controller")


class Admission(Protocol):
    """The supervisor's cross-model policy, asked before each load and told when it is ready."""

    def admit(
        self, model: ModelController, deadline: float
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold while `model` moves to LOADING: room has been made for it."""

    async def ready(self, model: ModelController) -> None:
        """`model`'s worker is ready, about to be LOADED: its footprint is measured now."""


@attrs.frozen
class Services:
    """What every controller shares: given by the supervisor."""

    launcher: Launcher
    ports: PortLeases
    tasks: OwnedTasks
    signal: ChangeSignal
    http: Callable[[], aiohttp.ClientSession]
    accepting: Callable[[], bool]
    admission: Admission
    changed: Callable[[ModelController, Change], None]
    metrics: HubMetrics
    downloads: DownloadManager
    standby_turn: Turn


class ModelController(Loading):
    """Owns one configured model: its states, worker, port, idle timer and counters."""

    def __init__(self, config: ModelConfig, services: Services) -> None:
        self.config = config
        self._s = services
        self._process = ProcessState.STOPPED
        self._memory = MemoryState.UNLOADED
        self._worker: WorkerProcess | None = None
        self._port: int | None = None
        self._lessee = Lessee(config.name)  # its own: a successor may share the name
        self._started_at: float | None = None
        self._stopped_at: float | None = None
        self._exit_code: int | None = None
        self._memory_changed_at: float | None = None
        self._loaded_at: float | None = None
        self._unloaded_at: float | None = None
        self._memory_error: str | None = None
        self._in_flight = 0
        self._last_request_at: float | None = None
        self._last_used = 0.0
        self._failed_loads = 0
        self._load_task: asyncio.Task[None] | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._unload_at: float | None = None
        self._warnings: list[str] = []
        self._queue = RequestQueue(config.name, _queue_limits(config))
        self._standby_warnings: list[str] = []
        self._standby = Standby(
            StandbyContext(
                name=config.name,
                config=lambda: self.config,
                host=lambda: self.worker_host,
                lease_port=self._renew_port,
                wanted=self._wants_standby,
                changed=lambda: self._s.changed(self, Change.WORKER),
                warn=self._warn_standby,
            ),
            services.launcher,
            services.tasks,
            services.http,
            services.standby_turn,
        )
        self._weights: Path | None = None  # the snapshot folder of a repo-id model
        self._served_path = config.model_path  # what its worker was started with
        self._metrics = services.metrics.model(config.name)

    # -------------------------------------------------------------- reading

    @property
    def name(self) -> str:
        """The model's hub name."""
        return self.config.name

    @property
    def process(self) -> ProcessState:
        """Whether the model is servable."""
        return self._process

    @property
    def memory(self) -> MemoryState:
        """Whether its worker holds the model in memory."""
        return self._memory

    @property
    def in_flight(self) -> int:
        """Requests being served right now."""
        return self._in_flight

    @property
    def last_used(self) -> float:
        """time.monotonic() of its last request or load (for least-recently-used eviction)."""
        return self._last_used

    @property
    def holds_memory(self) -> bool:
        """Loading, loaded or unloading: it holds (or is about to hold) a slot."""
        return self._memory in HOLDS_MEMORY

    @property
    def evictable(self) -> bool:
        """Loaded and idle (nothing served, nothing queued): unloading interrupts nobody."""
        return self._memory == MemoryState.LOADED and self._in_flight == 0 and not self._queue.busy

    def needs_load(self) -> bool:
        """Started and unloaded: a request for it must begin a load."""
        return self._memory == MemoryState.UNLOADED and self._process in SERVABLE

    @property
    def worker_host(self) -> str:
        """The address the worker binds: 127.0.0.1 unless the model sets `host`."""
        return self.config.host or "127.0.0.1"

    def snapshot(self) -> ModelSnapshot:
        """The model's state now (never waits)."""
        worker = self._worker
        standby = self._standby.info()
        return ModelSnapshot(
            config=self.config,
            process=self._process,
            memory=self._memory,
            pid=worker.pid if worker else standby.pid if standby else None,
            standby=standby,
            port=self._port if self._port is not None else self.config.port,
            started_at=self._started_at,
            stopped_at=self._stopped_at,
            exit_code=self._exit_code,
            memory_changed_at=self._memory_changed_at,
            loaded_at=self._loaded_at,
            unloaded_at=self._unloaded_at,
            memory_error=self._memory_error,
            in_flight=self._in_flight,
            queue=self._queue.stats(),
            last_request_at=self._last_request_at,
            unload_at=self._unload_at,
            failed_loads=self._failed_loads,
            warnings=(*self._warnings, *self._standby_warnings),
        )

    def worker_record(self) -> WorkerRecord | None:
        """Its live worker's (or standby's) process group, for hub_runtime.json."""
        worker = self._worker
        if worker is None or worker.pid is None or worker.returncode is not None:
            return self._standby.record()
        return WorkerRecord(
            pid=worker.pid, pgid=worker.pid, port=worker.port, create_time=worker.create_time or 0.0
        )

    # --------------------------------------------------------------- intent

    async def start(self) -> None:
        """Make the model servable; unless it is JIT, also load it now."""
        if self._process == ProcessState.STOPPING:
            await self._wait(lambda: self._process != ProcessState.STOPPING)
        if self._process in (ProcessState.STOPPED, ProcessState.FAILED):
            self._port = self._s.ports.lease(self._lessee, self.worker_host, self.config.port)
            self._failed_loads, self._exit_code, self._memory_error = 0, None, None
            jit = self.config.jit_enabled
            self._move(process=ProcessState.RUNNING if jit else ProcessState.STARTING)
        if self.config.jit_enabled:
            self._warm_launch_help()
            return
        try:
            await self._ensure_loaded(deadline=None)
        except HubError:
            if self._process == ProcessState.STARTING:
                self._release(ProcessState.FAILED)
            raise
        if self._process == ProcessState.STARTING:
            self._move(process=ProcessState.RUNNING)

    async def stop(self, drain: float) -> None:
        """Stop serving: let requests finish (up to `drain` s), stop the worker, free the port."""
        if self._process == ProcessState.FAILED:
            self._move(process=ProcessState.STOPPED)
            return
        if self._process == ProcessState.STOPPED:
            return
        if self._process == ProcessState.STOPPING:
            await self._wait(lambda: self._process != ProcessState.STOPPING)
            return
        self._move(process=ProcessState.STOPPING)
        with contextlib.suppress(TimeoutError):
            await self._s.signal.wait_until(lambda: self._in_flight == 0, drain)
        await self.unload("model stopped")
        await self._standby.stop()
        self._release(ProcessState.STOPPED)

    async def load(self) -> None:
        """Load a started model now (waits until loaded or failed)."""
        if self._process not in SERVABLE:
            raise HubError(
                f"Model '{self.name}' is not started ({self._process}); start it first "
                f"(POST /hub/models/{self.name}/start or "
                f"`mlx-openai-server-hub start-model {self.name}`)",
                400,
            )
        await self._ensure_loaded(deadline=None)

    async def unload(self, reason: str) -> None:
        """Bring the model to UNLOADED: cancel a load in progress or stop its worker."""
        if self._memory == MemoryState.LOADING and self._load_task is not None:
            self._load_task.cancel()
            await asyncio.gather(self._load_task, return_exceptions=True)
            return
        if self._memory == MemoryState.UNLOADING:
            await self._wait(lambda: self._memory != MemoryState.UNLOADING)
            return
        if self._memory != MemoryState.LOADED:
            return
        logger.info("Unloading model '%s': %s", self.name, reason)
        self._move(memory=MemoryState.UNLOADING)
        self._cancel_idle_timer()
        worker = self._worker
        if worker is not None:
            self._exit_code = await worker.stop()
        self._set_worker(None)
        self._move(memory=MemoryState.UNLOADED)
        self._metrics.unloaded()

    async def evict(self, reason: str) -> None:
        """Unload to make room for another model; the reason shows in its status."""
        await self.unload(reason)
        self._memory_error = reason

    @contextlib.asynccontextmanager
    async def lease(self, while_waiting: WhileWaiting | None = None) -> AsyncIterator[Target]:
        """Hold the loaded model for one request: a place in its queue, then its load.

        While held, the model is busy: never evicted or idle-unloaded. A
        stream holds it until its last byte. The wait for a slot and for the
        load together are bounded by `queue_timeout`; `while_waiting` runs
        around that wait when there is one.
        """
        self.check_servable()
        must_wait = self._queue.would_wait() or self._memory != MemoryState.LOADED
        waiting = while_waiting() if while_waiting and must_wait else contextlib.nullcontext()
        ticket: Ticket | None = None
        try:
            async with waiting:
                ticket = await self._queue.admit()
                if self._memory != MemoryState.LOADED:
                    await self._ensure_loaded(ticket.arrived_at + self.config.queue_timeout)
            self._queue.start(ticket)
            async with self._held(ticket) as target:
                yield target
        finally:
            if ticket is not None:
                self._queue.release(ticket)

    @contextlib.asynccontextmanager
    async def lease_if_loaded(self) -> AsyncIterator[Target | None]:
        """Hold the model if it is loaded now; yield None (and load nothing) if not."""
        if self._memory != MemoryState.LOADED:
            yield None
            return
        async with self._held() as target:
            yield target

    @contextlib.asynccontextmanager
    async def _held(self, ticket: Ticket | None = None) -> AsyncIterator[Target]:
        """Count the request in flight while it is served; `ticket` is its queue place."""
        worker = self._worker
        if worker is None or self._memory != MemoryState.LOADED:
            raise HubError(f"Model '{self.name}' was unloaded while its request waited", 503)
        self._in_flight += 1
        self._last_used = time.monotonic()
        self._cancel_idle_timer()
        try:
            yield Target(
                self.name,
                worker.base_url,
                self._served_path,
                self.config.request_timeout,
                ticket.wait_seconds(time.monotonic()) if ticket else 0.0,
            )
        finally:
            self._in_flight -= 1
            if ticket is not None:
                self._queue.release(ticket)  # before arming: a held slot is not idle
            self._last_request_at = time.time()
            self._last_used = time.monotonic()
            if self._in_flight == 0:
                self._arm_idle_timer()
                self._s.changed(self, Change.STATE)

    def check_servable(self) -> None:
        """Raise the 503 a request gets when the model is not started (or failed)."""
        if not self._s.accepting():  # no new worker may start once shutdown has begun
            raise HubError("The hub is shutting down; not accepting new requests", 503)
        if self._process in SERVABLE:
            return
        if self._process == ProcessState.FAILED:
            raise HubError(
                f"Model '{self.name}' has failed ({self._memory_error or 'see its log'}). Start "
                f"it again with `mlx-openai-server-hub start-model {self.name}`",
                503,
                headers=NO_RETRY,
            )
        raise HubError(
            f"Model '{self.name}' is {self._process}. Start it with `mlx-openai-server-hub "
            f"start-model {self.name}` or POST /hub/models/{self.name}/start",
            503,
        )

    def reconfigure(self, config: ModelConfig) -> bool:
        """Take a reloaded config; True when its worker must restart to apply it."""
        restart = (
            self.config.worker_identity() != config.worker_identity()
            and self._memory in HOLDS_MEMORY
        )
        self.config = config
        self._queue.reconfigure(_queue_limits(config))
        if self.evictable:
            self._arm_idle_timer()  # auto_unload_minutes may have changed
        return restart

    async def restart_when_idle(self) -> None:
        """Apply changed worker options once the requests in flight have ended."""
        await self._wait(lambda: self._in_flight == 0)
        await self.unload("worker options changed in hub.yaml")
        if self._process in SERVABLE:
            await self._ensure_loaded(deadline=None)

    async def close(self) -> None:
        """Hub shutdown: stop the worker at once (requests have had their grace)."""
        self._cancel_idle_timer()
        await self._standby.stop()
        if self._load_task is not None:
            self._load_task.cancel()
            await asyncio.gather(self._load_task, return_exceptions=True)
        worker = self._worker
        if worker is not None:
            await worker.stop()
            self._set_worker(None)

    def kill_now(self) -> None:
        """SIGKILL the worker's process group (a second Ctrl+C)."""
        if self._worker is not None:
            self._worker.kill_now()
        self._standby.kill_now()

    # ---------------------------------------------------------- state moves

    def _move(self, process: ProcessState | None = None, memory: MemoryState | None = None) -> None:
        """The one place that changes this model's state."""
        now = time.time()
        if process is not None and process != self._process:
            if process not in PROCESS_MOVES.get(self._process, frozenset()):
                raise IllegalTransition(f"{self.name}: process {self._process} → {process}")
            logger.info("Model '%s' process %s → %s", self.name, self._process, process)
            if self._process in (ProcessState.STOPPED, ProcessState.FAILED):
                self._started_at, self._stopped_at = now, None
            if process in (ProcessState.STOPPED, ProcessState.FAILED):
                self._stopped_at = now
            self._process = process
        if memory is not None and memory != self._memory:
            if memory not in MEMORY_MOVES[self._memory]:
                raise IllegalTransition(f"{self.name}: memory {self._memory} → {memory}")
            logger.info("Model '%s' memory %s → %s", self.name, self._memory, memory)
            if memory == MemoryState.LOADED:
                self._loaded_at = now
            elif memory == MemoryState.UNLOADED and self._memory != MemoryState.LOADING:
                self._unloaded_at = now
            self._memory = memory
            self._memory_changed_at = now
        self._s.changed(self, Change.STATE)
        self._standby.schedule()  # it checks that the model wants one now

    def _set_worker(self, worker: WorkerProcess | None) -> None:
        if worker is not self._worker:
            self._worker = worker
            self._s.changed(self, Change.WORKER)

    def _release(self, final: ProcessState) -> None:
        self._s.ports.release(self._lessee)
        self._port = None
        self._move(process=final)

    async def _wait(self, predicate: Callable[[], bool]) -> None:
        await self._s.signal.wait_until(predicate, None)

    # ----------------------------------------------------------- idle timer

    def _arm_idle_timer(self) -> None:
        self._cancel_idle_timer()
        minutes = self.config.auto_unload_minutes
        if not minutes or not self.evictable:
            return
        delay = minutes * 60
        self._unload_at = time.time() + delay
        self._idle_timer = asyncio.get_running_loop().call_later(delay, self._idle_expired)

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._idle_timer, self._unload_at = None, None

    def _idle_expired(self) -> None:
        self._idle_timer, self._unload_at = None, None
        if self.evictable and self._process in SERVABLE:
            reason = f"idle for {self.config.auto_unload_minutes:g} minute(s)"
            self._s.tasks.spawn(self.unload(reason), f"idle-unload:{self.name}")


def _queue_limits(config: ModelConfig) -> QueueLimits:
    return limits_from(config.max_concurrency, config.queue_size, config.queue_timeout)
