"""The supervisor: owns every model's state, worker, port, timer and group slot.

Everyone else asks it: the proxy (`use`), the control API (`start`, `stop`,
`load`, `unload`, `reload`, `status`), the app (`start_defaults`, `shutdown`).
State changes happen only in `_move`, which enforces the state machines in
`states.py`. Reading status never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import aiohttp
import attrs

from .auth import TOKEN_ENV_VAR
from .config import ConfigError, GroupConfig, HubConfig, ModelConfig, load_config
from .errors import HubError
from .launch_help import LaunchHelpCache
from .logs import LogFiles
from .ports import PortLeases
from .runtime_state import WorkerRecord
from .states import (
    HOLDS_MEMORY,
    MEMORY_MOVES,
    PROCESS_MOVES,
    SERVABLE,
    IllegalTransition,
    MemoryState,
    ProcessState,
)
from .worker import WorkerProcess, WorkerStartError, resolve_worker_command
from .worker_flags import build_launch_args

logger = logging.getLogger("mlx_hub.supervisor")

MAX_FAILED_LOADS = 3


@attrs.define(eq=False)
class ModelRuntime:
    """What the hub knows about one configured model right now."""

    config: ModelConfig
    process: ProcessState = ProcessState.STOPPED
    memory: MemoryState = MemoryState.UNLOADED
    worker: WorkerProcess | None = None
    port: int | None = None
    started_at: float | None = None
    stopped_at: float | None = None
    exit_code: int | None = None
    memory_changed_at: float | None = None
    memory_error: str | None = None
    in_flight: int = 0
    last_request_at: float | None = None
    last_used: float = 0.0
    failed_loads: int = 0
    load_task: asyncio.Task[None] | None = None
    idle_timer: asyncio.TimerHandle | None = None
    unload_at: float | None = None
    warnings: list[str] = attrs.field(factory=list)

    @property
    def name(self) -> str:
        """The model's hub name."""
        return self.config.name

    @property
    def worker_host(self) -> str:
        """The address the worker binds: 127.0.0.1 unless the model sets `host`."""
        return self.config.host or "127.0.0.1"


@attrs.frozen
class Target:
    """Where the proxy sends a request for a loaded model."""

    name: str
    base_url: str
    upstream_model: str
    request_timeout: float


class Supervisor:
    """Owns the models of one hub.yaml and every worker process started for them."""

    def __init__(
        self,
        config: HubConfig,
        log_files: LogFiles,
        on_workers_changed: Callable[[dict[str, WorkerRecord]], None] | None = None,
    ) -> None:
        self.config = config
        self.models: dict[str, ModelRuntime] = {m.name: ModelRuntime(m) for m in config.models}
        self.accepting = True
        self._log_files = log_files
        self._on_workers_changed = on_workers_changed
        self._ports = PortLeases(config.model_starting_port, config.port)
        self._help = LaunchHelpCache(config.launch_help_path, self._spawn)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._retiring: set[ModelRuntime] = set()
        self._group_locks: dict[str, asyncio.Lock] = {}
        self._reload_lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    # ------------------------------------------------------------------ life

    async def open(self) -> None:
        """Create the HTTP session used for health checks."""
        self._session = aiohttp.ClientSession()

    def start_defaults(self) -> None:
        """Start every `default: true` model in the background."""
        for rt in self.models.values():
            if rt.config.default:
                self._spawn(self._start_logged(rt.name), f"start-default:{rt.name}")

    async def shutdown(self, grace: float) -> None:
        """Refuse new requests, let those in flight finish (up to `grace`), stop all.

        Safe to call twice; the second call only makes sure no worker is left.
        """
        self.accepting = False
        if not self._closed:
            with contextlib.suppress(TimeoutError):
                await self._wait_until(lambda: self.in_flight_total() == 0, grace)
            self._closed = True
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        everything = [*self.models.values(), *self._retiring]
        for rt in everything:
            self._cancel_idle_timer(rt)
        workers = [rt.worker for rt in everything if rt.worker is not None]
        await asyncio.gather(*(worker.stop() for worker in workers))
        for rt in everything:
            rt.worker = None
        if self._session is not None:
            await self._session.close()

    def kill_all_now(self) -> None:
        """SIGKILL every worker's process group (a second Ctrl+C)."""
        for rt in [*self.models.values(), *self._retiring]:
            if rt.worker is not None:
                rt.worker.kill_now()

    def in_flight_total(self) -> int:
        """Requests being served right now, over all models."""
        return sum(rt.in_flight for rt in self.models.values()) + sum(
            rt.in_flight for rt in self._retiring
        )

    # -------------------------------------------------------------- lookups

    def get(self, name: str) -> ModelRuntime:
        """The model called `name` (404 if none)."""
        name = name.strip()
        if not name:
            raise HubError("Model name cannot be empty", 400)
        rt = self.models.get(name)
        if rt is None:
            known = ", ".join(self.models) or "none"
            raise HubError(f"Model '{name}' not found. Registered models: {known}", 404)
        return rt

    def resolve(self, requested: str) -> ModelRuntime:
        """The model a request names, by hub name or by model_path."""
        rt = self.models.get(requested)
        if rt is None:
            rt = next((r for r in self.models.values() if r.config.model_path == requested), None)
        if rt is None:
            known = ", ".join(self.models) or "none"
            raise HubError(
                f"Model '{requested}' is not registered in this hub. Available models: {known}",
                404,
                "model_not_found",
            )
        return rt

    # ---------------------------------------------------------- state moves

    def _move(
        self,
        rt: ModelRuntime,
        process: ProcessState | None = None,
        memory: MemoryState | None = None,
    ) -> None:
        """The one place that changes a model's state."""
        now = time.time()
        if process is not None and process != rt.process:
            if process not in PROCESS_MOVES.get(rt.process, frozenset()):
                raise IllegalTransition(f"{rt.name}: process {rt.process} → {process}")
            logger.info("Model '%s' process %s → %s", rt.name, rt.process, process)
            if rt.process in (ProcessState.STOPPED, ProcessState.FAILED):
                rt.started_at, rt.stopped_at = now, None
            if process in (ProcessState.STOPPED, ProcessState.FAILED):
                rt.stopped_at = now
            rt.process = process
        if memory is not None and memory != rt.memory:
            if memory not in MEMORY_MOVES[rt.memory]:
                raise IllegalTransition(f"{rt.name}: memory {rt.memory} → {memory}")
            logger.info("Model '%s' memory %s → %s", rt.name, rt.memory, memory)
            rt.memory = memory
            rt.memory_changed_at = now
        self._notify()

    def _notify(self) -> None:
        """Wake everyone waiting for a state or in-flight change."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_until(self, predicate: Callable[[], bool], timeout: float | None) -> None:
        """Wait until `predicate()` holds; TimeoutError after `timeout` seconds."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await self._changed.wait()

    # -------------------------------------------------------------- actions

    async def start(self, name: str) -> None:
        """Make a model servable; unless it is JIT, also load it now."""
        rt = self.get(name)
        if rt.process == ProcessState.STOPPING:
            await self._wait_until(lambda: rt.process != ProcessState.STOPPING, None)
        if rt.process in (ProcessState.STOPPED, ProcessState.FAILED):
            rt.port = self._ports.lease(rt.name, rt.worker_host, rt.config.port)
            rt.failed_loads, rt.exit_code, rt.memory_error = 0, None, None
            jit = rt.config.jit_enabled
            self._move(rt, process=ProcessState.RUNNING if jit else ProcessState.STARTING)
        if rt.config.jit_enabled:
            self._warm_launch_help(rt)
            return
        try:
            await self._ensure_loaded(rt, deadline=None)
        except HubError:
            if rt.process == ProcessState.STARTING:
                self._release(rt, ProcessState.FAILED)
            raise
        if rt.process == ProcessState.STARTING:
            self._move(rt, process=ProcessState.RUNNING)

    async def stop(self, name: str) -> None:
        """Stop serving a model: drain its requests, stop its worker, free its port."""
        rt = self.get(name)
        await self._stop_runtime(rt, drain=self.config.shutdown_grace)

    async def load(self, name: str) -> None:
        """Load a started model's worker now (waits until loaded or failed)."""
        rt = self.get(name)
        if rt.process not in SERVABLE:
            raise HubError(
                f"Model '{name}' is not started ({rt.process}); start it first "
                f"(POST /hub/models/{name}/start or `mlx-openai-server-hub start-model {name}`)",
                400,
            )
        await self._ensure_loaded(rt, deadline=None)

    async def unload(self, name: str) -> None:
        """Stop a model's worker; the model stays started and loads on the next request."""
        rt = self.get(name)
        await self._stop_worker(rt, "unload requested")

    async def reload(self) -> dict[str, list[str]]:
        """Re-read hub.yaml and reconcile; a bad file changes nothing (400)."""
        async with self._reload_lock:
            try:
                new = await asyncio.to_thread(load_config, self.config.source_path)
            except ConfigError as exc:
                raise HubError(str(exc), 400) from exc
            return self._apply_config(new)

    # ------------------------------------------------------------- requests

    @contextlib.asynccontextmanager
    async def use(self, requested: str) -> AsyncIterator[Target]:
        """Hold a loaded model for one request (loading it first if needed).

        While held, the model counts as busy: it is never evicted or
        idle-unloaded. A stream holds it until its last byte.
        """
        rt = self.resolve(requested)
        self._check_servable(rt)
        if rt.memory != MemoryState.LOADED:
            deadline = time.monotonic() + rt.config.queue_timeout
            await self._ensure_loaded(rt, deadline)
        worker = rt.worker
        assert worker is not None
        rt.in_flight += 1
        rt.last_used = time.monotonic()
        self._cancel_idle_timer(rt)
        try:
            yield Target(rt.name, worker.base_url, rt.config.model_path, rt.config.request_timeout)
        finally:
            rt.in_flight -= 1
            rt.last_request_at = time.time()
            rt.last_used = time.monotonic()
            if rt.in_flight == 0:
                self._arm_idle_timer(rt)
                self._notify()

    def _check_servable(self, rt: ModelRuntime) -> None:
        if not self.accepting:  # no new worker may start once shutdown has begun
            raise HubError("The hub is shutting down; not accepting new requests", 503)
        if rt.process in SERVABLE:
            return
        if rt.process == ProcessState.FAILED:
            raise HubError(
                f"Model '{rt.name}' has failed ({rt.memory_error or 'see its log'}). Start it "
                f"again with `mlx-openai-server-hub start-model {rt.name}`",
                503,
            )
        raise HubError(
            f"Model '{rt.name}' is {rt.process}. Start it with "
            f"`mlx-openai-server-hub start-model {rt.name}` or POST /hub/models/{rt.name}/start",
            503,
        )

    # -------------------------------------------------------------- loading

    async def _ensure_loaded(self, rt: ModelRuntime, deadline: float | None) -> None:
        """Return once `rt` is loaded; join a load in progress or begin one."""
        while True:
            self._check_servable(rt)
            if rt.memory == MemoryState.LOADED:
                return
            if rt.memory == MemoryState.LOADING and rt.load_task is not None:
                await self._join_load(rt, rt.load_task, deadline)
            elif rt.memory == MemoryState.UNLOADING:
                await self._wait_for(rt, lambda: rt.memory != MemoryState.UNLOADING, deadline)
            else:
                await self._begin_load(rt, deadline)

    async def _join_load(
        self, rt: ModelRuntime, task: asyncio.Task[None], deadline: float | None
    ) -> None:
        """Wait for a load (never cancelling it); raise its failure."""
        try:
            async with asyncio.timeout_at(_loop_deadline(deadline)):
                await asyncio.shield(task)
        except TimeoutError:
            raise HubError(
                f"Model '{rt.name}' is still loading after {rt.config.queue_timeout} s "
                "(queue_timeout); try again shortly",
                503,
            ) from None
        except asyncio.CancelledError:
            if not task.cancelled():
                raise  # we were cancelled ourselves
            # The load was cancelled by an unload or stop: look again.

    async def _wait_for(
        self, rt: ModelRuntime, predicate: Callable[[], bool], deadline: float | None
    ) -> None:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            await self._wait_until(predicate, timeout)
        except TimeoutError:
            raise HubError(
                f"Model '{rt.name}' did not become available within "
                f"{rt.config.queue_timeout} s (queue_timeout)",
                503,
            ) from None

    async def _begin_load(self, rt: ModelRuntime, deadline: float | None) -> None:
        """Take a group slot (evicting if needed) and start the one load task."""
        group = self.config.group(rt.config.group)
        if group is None or group.max_loaded is None:
            self._launch_load(rt)
            return
        lock = self._group_locks.setdefault(group.name, asyncio.Lock())
        async with lock:
            if rt.memory != MemoryState.UNLOADED or rt.process not in SERVABLE:
                return  # someone else began it while we waited for the lock
            if deadline is None:
                deadline = time.monotonic() + rt.config.queue_timeout
            await self._make_room(group, rt, deadline)
            self._launch_load(rt)

    def _launch_load(self, rt: ModelRuntime) -> None:
        self._move(rt, memory=MemoryState.LOADING)
        rt.memory_error = None
        rt.load_task = self._spawn(self._run_load(rt), f"load:{rt.name}")

    async def _make_room(self, group: GroupConfig, rt: ModelRuntime, deadline: float) -> None:
        """Free a slot in `group`: unload its least recently used idle model, or wait."""
        assert group.max_loaded is not None
        while True:
            holding = [
                m
                for m in self.models.values()
                if m is not rt and m.config.group == group.name and m.memory in HOLDS_MEMORY
            ]
            if len(holding) < group.max_loaded:
                return
            idle = [m for m in holding if m.memory == MemoryState.LOADED and m.in_flight == 0]
            if idle:
                victim = min(idle, key=lambda m: m.last_used)
                reason = f"evicted to make room for '{rt.name}' in group '{group.name}'"
                await self._stop_worker(victim, reason)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                names = ", ".join(m.name for m in holding)
                raise HubError(
                    f"Group '{group.name}' is full (max_loaded={group.max_loaded}) and every "
                    f"loaded model is busy: {names}. '{rt.name}' could not be loaded within "
                    f"{rt.config.queue_timeout} s (queue_timeout)",
                    429,
                    "rate_limit_error",
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def _run_load(self, rt: ModelRuntime) -> None:
        """The load task: spawn the worker and wait until it is ready."""
        started = time.monotonic()
        try:
            worker = await self._spawn_worker(rt)
            assert self._session is not None
            await worker.wait_ready(self._session, rt.config.startup_timeout)
        except asyncio.CancelledError:
            await self._discard_worker(rt)
            self._move(rt, memory=MemoryState.UNLOADED)
            raise
        except (WorkerStartError, HubError) as exc:
            await self._load_failed(rt, exc)
            raise HubError(f"Model '{rt.name}' failed to load: {exc}", 503) from None
        rt.failed_loads = 0
        rt.last_used = time.monotonic()
        self._move(rt, memory=MemoryState.LOADED)
        logger.info("Model '%s' loaded in %.1f s", rt.name, time.monotonic() - started)
        self._arm_idle_timer(rt)

    def _worker_command_and_env(self, cfg: ModelConfig) -> tuple[list[str], dict[str, str]]:
        command = resolve_worker_command(cfg.worker_command, self.config.source_path)
        # A worker has no use for the hub's control token: keep it out of its reach.
        inherited = {k: v for k, v in os.environ.items() if k != TOKEN_ENV_VAR}
        return command, {**inherited, "PYTHONUNBUFFERED": "1", **cfg.env}

    def _warm_launch_help(self, rt: ModelRuntime) -> None:
        """Read the worker's `launch --help` now, in the background.

        A JIT model's first request would otherwise wait for it on top of the
        worker's own start (3.6 s for the real worker here). A failure is not
        reported now: the first load runs it again and reports it.
        """
        with contextlib.suppress(HubError):
            command, env = self._worker_command_and_env(rt.config)
            options = self._help.options_for(command, env, rt.config.env)
            self._spawn(options, f"launch-help:{rt.name}")

    async def _spawn_worker(self, rt: ModelRuntime) -> WorkerProcess:
        cfg = rt.config
        command, env = self._worker_command_and_env(cfg)
        options = await self._help.options_for(command, env, cfg.env)
        rt.port = self._ports.renew(rt.name, rt.worker_host, cfg.port)
        args, warnings = build_launch_args(cfg, rt.worker_host, rt.port, options)
        for warning in warnings:
            if warning not in rt.warnings:
                logger.warning(warning)
        rt.warnings = warnings
        log = None
        if cfg.log_file is not None:
            log = self._log_files.open(f"mlx_hub.models.{rt.name}", cfg.log_file)
        worker = WorkerProcess(rt.name, [*command, *args], env, rt.worker_host, rt.port, log)
        rt.worker = worker
        await worker.spawn()
        self._spawn(self._watch_worker(rt, worker), f"watch:{rt.name}:{worker.pid}")
        self._workers_changed()
        return worker

    async def _load_failed(self, rt: ModelRuntime, exc: WorkerStartError | HubError) -> None:
        worker = rt.worker
        await self._discard_worker(rt)
        rt.failed_loads += 1
        rt.exit_code = worker.returncode if worker else None
        rt.memory_error = str(exc)
        logger.error("Model '%s' failed to load (%d in a row): %s", rt.name, rt.failed_loads, exc)
        self._move(rt, memory=MemoryState.UNLOADED)
        if rt.failed_loads >= MAX_FAILED_LOADS and rt.process == ProcessState.RUNNING:
            self._release(rt, ProcessState.FAILED)

    async def _watch_worker(self, rt: ModelRuntime, worker: WorkerProcess) -> None:
        """Notice a loaded worker that exits on its own (a crash)."""
        await worker.exited.wait()
        if rt.worker is not worker or rt.memory != MemoryState.LOADED:
            return  # we stopped it, or the load path handles it
        rt.worker = None
        rt.exit_code = worker.returncode
        tail = worker.tail_text()
        rt.memory_error = f"Worker exited unexpectedly with code {worker.returncode}. {tail}"
        logger.error("Model '%s': %s", rt.name, rt.memory_error)
        self._cancel_idle_timer(rt)
        self._move(rt, memory=MemoryState.UNLOADED)
        self._workers_changed()
        await worker.stop(grace=0)  # reap it and end any helpers left in its group

    # ------------------------------------------------------------ unloading

    async def _stop_worker(self, rt: ModelRuntime, reason: str) -> None:
        """Bring `rt` to UNLOADED: cancel a load in progress or stop its worker."""
        if rt.memory == MemoryState.LOADING and rt.load_task is not None:
            rt.load_task.cancel()
            await asyncio.gather(rt.load_task, return_exceptions=True)
            return
        if rt.memory == MemoryState.UNLOADING:
            await self._wait_until(lambda: rt.memory != MemoryState.UNLOADING, None)
            return
        if rt.memory != MemoryState.LOADED:
            return
        logger.info("Unloading model '%s': %s", rt.name, reason)
        self._move(rt, memory=MemoryState.UNLOADING)
        self._cancel_idle_timer(rt)
        worker = rt.worker
        if worker is not None:
            rt.exit_code = await worker.stop()
        rt.worker = None
        self._move(rt, memory=MemoryState.UNLOADED)
        self._workers_changed()

    async def _discard_worker(self, rt: ModelRuntime) -> None:
        worker, rt.worker = rt.worker, None
        if worker is not None:
            await worker.stop()
            self._workers_changed()

    async def _stop_runtime(self, rt: ModelRuntime, drain: float) -> None:
        if rt.process == ProcessState.FAILED:
            self._move(rt, process=ProcessState.STOPPED)
            return
        if rt.process == ProcessState.STOPPED:
            return
        if rt.process == ProcessState.STOPPING:
            await self._wait_until(lambda: rt.process != ProcessState.STOPPING, None)
            return
        self._move(rt, process=ProcessState.STOPPING)
        with contextlib.suppress(TimeoutError):
            await self._wait_until(lambda: rt.in_flight == 0, drain)
        await self._stop_worker(rt, "model stopped")
        self._release(rt, ProcessState.STOPPED)

    def _release(self, rt: ModelRuntime, final: ProcessState) -> None:
        self._ports.release(rt.name)
        rt.port = None
        self._move(rt, process=final)

    # ----------------------------------------------------------- idle timer

    def _arm_idle_timer(self, rt: ModelRuntime) -> None:
        self._cancel_idle_timer(rt)
        minutes = rt.config.auto_unload_minutes
        if not minutes or rt.memory != MemoryState.LOADED or rt.in_flight:
            return
        delay = minutes * 60
        rt.unload_at = time.time() + delay
        rt.idle_timer = asyncio.get_running_loop().call_later(delay, self._idle_expired, rt)

    def _cancel_idle_timer(self, rt: ModelRuntime) -> None:
        if rt.idle_timer is not None:
            rt.idle_timer.cancel()
        rt.idle_timer, rt.unload_at = None, None

    def _idle_expired(self, rt: ModelRuntime) -> None:
        rt.idle_timer, rt.unload_at = None, None
        if rt.memory == MemoryState.LOADED and rt.in_flight == 0 and rt.process in SERVABLE:
            reason = f"idle for {rt.config.auto_unload_minutes:g} minute(s)"
            self._spawn(self._stop_worker(rt, reason), f"idle-unload:{rt.name}")

    # --------------------------------------------------------------- reload

    def _apply_config(self, new: HubConfig) -> dict[str, list[str]]:
        old_names, new_names = set(self.models), {m.name for m in new.models}
        removed, added = old_names - new_names, new_names - old_names
        restarted = []
        for name in sorted(removed):
            rt = self.models[name]
            self._retiring.add(rt)
            self._spawn(self._retire(rt), f"retire:{name}")
        models: dict[str, ModelRuntime] = {}
        for cfg in new.models:
            rt = self.models.get(cfg.name) or ModelRuntime(cfg)
            if rt.config.worker_identity() != cfg.worker_identity() and rt.memory in HOLDS_MEMORY:
                restarted.append(cfg.name)
                self._spawn(self._restart_when_idle(rt), f"restart:{cfg.name}")
            rt.config = cfg
            if rt.memory == MemoryState.LOADED and rt.in_flight == 0:
                self._arm_idle_timer(rt)
            models[cfg.name] = rt
        self.models = models
        if new.port != self.config.port or new.host != self.config.host:
            logger.warning("Hub host/port changes take effect when the hub restarts")
        self.config = attrs.evolve(new, host=self.config.host, port=self.config.port)
        self._ports.starting_port = new.model_starting_port
        for name in sorted(added):
            if self.models[name].config.default:
                self._spawn(self._start_logged(name), f"start-default:{name}")
        self._notify()
        result = {
            "started": sorted(added),
            "stopped": sorted(removed),
            "unchanged": sorted(old_names & new_names),
            "restarted": sorted(restarted),
        }
        logger.info("Reloaded hub config: %s", result)
        return result

    async def _retire(self, rt: ModelRuntime) -> None:
        try:
            await self._stop_runtime(rt, drain=self.config.shutdown_grace)
        finally:
            self._retiring.discard(rt)

    async def _restart_when_idle(self, rt: ModelRuntime) -> None:
        """Apply changed worker options once the requests in flight have ended."""
        await self._wait_until(lambda: rt.in_flight == 0, None)
        await self._stop_worker(rt, "worker options changed in hub.yaml")
        if rt.process in SERVABLE:
            await self._ensure_loaded(rt, deadline=None)

    # --------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        """The `/hub/status` document (never waits)."""
        created = _mtime(self.config)
        models = [self._model_entry(rt, created) for rt in self.models.values()]
        counts = {
            "registered": len(self.models),
            "started": sum(rt.process in SERVABLE for rt in self.models.values()),
            "loaded": sum(rt.memory == MemoryState.LOADED for rt in self.models.values()),
        }
        warnings = [w for rt in self.models.values() for w in rt.warnings]
        warnings += self._log_files.warnings()
        return {
            "status": "ok",
            "timestamp": int(time.time()),
            "host": self.config.host,
            "port": self.config.port,
            "models": models,
            "counts": counts,
            "warnings": warnings,
            "controller_available": True,
        }

    def _model_entry(self, rt: ModelRuntime, created: int) -> dict[str, Any]:
        cfg = rt.config
        worker = rt.worker
        return {
            "id": rt.name,
            "object": "model",
            "created": created,
            "owned_by": "hub",
            "metadata": {
                "status": str(rt.process),
                "process_state": str(rt.process),
                "memory_state": str(rt.memory),
                "group": cfg.group,
                "default": cfg.default,
                "model_type": cfg.model_type,
                "model_path": cfg.model_path,
                "log_path": str(cfg.log_file) if cfg.log_file else None,
                "pid": worker.pid if worker else None,
                "port": rt.port if rt.port is not None else cfg.port,
                "started_at": rt.started_at,
                "stopped_at": rt.stopped_at,
                "exit_code": rt.exit_code,
                "auto_unload_minutes": cfg.auto_unload_minutes,
                "jit_enabled": cfg.jit_enabled,
                "memory_last_transition_at": rt.memory_changed_at,
                "memory_last_error": rt.memory_error,
                "in_flight": rt.in_flight,
                "last_request_at": rt.last_request_at,
                "unload_at": rt.unload_at,
                "failed_loads": rt.failed_loads,
            },
        }

    def worker_records(self) -> dict[str, WorkerRecord]:
        """The live workers' process groups, for hub_runtime.json."""
        records = {}
        for rt in [*self.models.values(), *self._retiring]:
            worker = rt.worker
            if worker is not None and worker.pid is not None and worker.returncode is None:
                records[rt.name] = WorkerRecord(
                    pid=worker.pid,
                    pgid=worker.pid,
                    port=worker.port,
                    create_time=worker.create_time or 0.0,
                )
        return records

    # ---------------------------------------------------------------- tasks

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run `coro` as a task the supervisor owns (cancelled on shutdown)."""
        return self.adopt(asyncio.create_task(coro, name=name), name)

    def adopt(self, task: asyncio.Task[Any], name: str) -> asyncio.Task[Any]:
        """Own an already running task: it is cancelled on shutdown, errors are logged."""
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, HubError):
            logger.error("Task %s failed", task.get_name(), exc_info=exc)

    async def _start_logged(self, name: str) -> None:
        try:
            await self.start(name)
        except HubError as exc:
            logger.error("Could not start model '%s': %s", name, exc.message)

    def _workers_changed(self) -> None:
        if self._on_workers_changed is not None:
            self._on_workers_changed(self.worker_records())


def _loop_deadline(deadline: float | None) -> float | None:
    """Convert a time.monotonic() deadline to the event loop's clock."""
    if deadline is None:
        return None
    return asyncio.get_running_loop().time() + (deadline - time.monotonic())


def _mtime(config: HubConfig) -> int:
    try:
        return int(config.source_path.stat().st_mtime)
    except OSError:
        return int(time.time())
