"""The supervisor: the registry of model controllers and the rules across models.

Each model's own state lives in its `ModelController` (controller.py). The
supervisor keeps one registry of them — models a reload is retiring
included, so they still count against their group — and owns only what
spans models: name lookup, a group's `max_loaded`, reload, shutdown and the
list of live workers. The proxy asks it for a `lease`, the control API for
intents (`start`, `stop`, `load`, `unload`, `reload`), and status is built
from snapshots (status.py). Reading status never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

import aiohttp
import attrs

from .admission import Holder
from .config import ConfigError, GroupConfig, HubConfig, load_config
from .controller import ModelController, Services
from .downloads import DownloadManager
from .errors import HubError
from .hub_memory import HubMemory
from .launcher import Launcher
from .logs import LogFiles
from .metrics import HubMetrics, ModelSample
from .model_state import Change, ChangeSignal, ModelSnapshot, Target, WhileWaiting
from .ports import PortLeases
from .runtime_state import WorkerRecord
from .states import MemoryState
from .status import full_entry, hub_status, openai_models, wait_note
from .tasks import OwnedTasks
from .worker_shim import worker_headers

logger = logging.getLogger("mlx_hub.supervisor")
# How often `downloaded` in status is re-read from the Hugging Face cache.
SNAPSHOT_REFRESH_SECONDS = 5.0
T = TypeVar("T")


class Supervisor:
    """Owns the models of one hub.yaml and every worker process started for them."""

    def __init__(
        self,
        config: HubConfig,
        log_files: LogFiles,
        on_workers_changed: Callable[[dict[str, WorkerRecord]], None] | None = None,
    ) -> None:
        self.config = config
        self.metrics = HubMetrics(live=self._samples)
        self.downloads = DownloadManager()
        self.accepting = True
        self._log_files = log_files
        self._on_workers_changed = on_workers_changed
        self._tasks = OwnedTasks()
        self._signal = ChangeSignal()
        self._session: aiohttp.ClientSession | None = None
        self._services = Services(
            launcher=Launcher(
                config.source_path, config.launch_help_path, log_files, self._tasks.spawn
            ),
            ports=PortLeases(config.model_starting_port, config.port),
            tasks=self._tasks,
            signal=self._signal,
            http=self._http,
            accepting=lambda: self.accepting,
            admission=self,
            changed=self._changed,
            metrics=self.metrics,
            downloads=self.downloads,
            standby_turn=self._standby_turn,
        )
        # Every controller, those a reload is retiring too; `_by_name` indexes the
        # current config's models within it.
        self._registry: list[ModelController] = [
            ModelController(m, self._services) for m in config.models
        ]
        self._by_name = {c.name: c for c in self._registry}
        self.memory = HubMemory(
            config, self._memory_holders, self._evict_for_memory, self._signal.wait_any
        )
        self._group_locks: dict[str, asyncio.Lock] = {}
        self._standby_lock = asyncio.Lock()
        self._reload_lock = asyncio.Lock()
        self._closed = False

    # ------------------------------------------------------------------ life

    async def open(self) -> None:
        """Create the HTTP session used for health checks; read memory figures."""
        # With the worker secret: readiness and standby probes reach guarded workers.
        self._session = aiohttp.ClientSession(headers=worker_headers())
        await self.memory.open()
        logger.info("Memory: %s", self.memory.summary())
        self._tasks.spawn(self.memory.run_system_monitor(), "memory-system-monitor")
        self._tasks.spawn(self._watch_snapshots(), "snapshot-watch")

    def start_defaults(self) -> None:
        """Start every `default: true` model in the background."""
        for model in self._registry:
            if model.config.default:
                self._tasks.spawn(self._start_logged(model), f"start-default:{model.name}")

    async def shutdown(self, grace: float) -> None:
        """Refuse new requests, let those in flight finish (up to `grace`), stop all.

        Safe to call twice; the second call only makes sure no worker is left.
        """
        self.accepting = False
        if not self._closed:
            with contextlib.suppress(TimeoutError):
                await self._signal.wait_until(lambda: self.in_flight_total() == 0, grace)
            self._closed = True
            await self._tasks.close()
        await asyncio.gather(*(model.close() for model in self._registry))
        await self.memory.close()
        await self.downloads.close()
        if self._session is not None:
            await self._session.close()

    def kill_all_now(self) -> None:
        """SIGKILL every worker's process group (a second Ctrl+C)."""
        for model in self._registry:
            model.kill_now()

    def in_flight_total(self) -> int:
        """Requests being served right now, over all models."""
        return sum(model.in_flight for model in self._registry)

    async def run_owned(self, coro: Coroutine[Any, Any, T], name: str) -> T:
        """Run an action as an owned task: a client hanging up does not cancel it."""
        return await self._tasks.run_shielded(coro, name)

    # -------------------------------------------------------------- lookups

    def get(self, name: str) -> ModelController:
        """The model called `name` (404 if none)."""
        name = name.strip()
        if not name:
            raise HubError("Model name cannot be empty", 400)
        model = self._by_name.get(name)
        if model is None:
            raise HubError(f"Model '{name}' not found. Registered models: {self._known()}", 404)
        return model

    def resolve(self, requested: str) -> ModelController:
        """The model a request names, by hub name or by model_path."""
        model = self._by_name.get(requested) or next(
            (m for m in self._by_name.values() if m.config.model_path == requested), None
        )
        if model is None:
            raise HubError(
                f"Model '{requested}' is not registered in this hub. Available models: "
                f"{self._known()}",
                404,
                "model_not_found",
            )
        return model

    def _known(self) -> str:
        return ", ".join(self._by_name) or "none"

    # -------------------------------------------------------------- intents

    async def start(self, name: str) -> None:
        """Make a model servable; unless it is JIT, also load it now."""
        await self.get(name).start()

    async def stop(self, name: str) -> None:
        """Stop serving a model: drain its requests, stop its worker, free its port."""
        await self.get(name).stop(drain=self.config.shutdown_grace)

    async def load(self, name: str) -> None:
        """Load a started model's worker now (waits until loaded or failed)."""
        await self.get(name).load()

    async def unload(self, name: str) -> None:
        """Stop a model's worker; the model stays started and loads on the next request."""
        await self.get(name).unload("unload requested")

    def lease(
        self, requested: str, while_waiting: WhileWaiting | None = None
    ) -> contextlib.AbstractAsyncContextManager[Target]:
        """Hold the model a request names for that request: a place in its queue,
        then its load if needed (`while_waiting` runs around a wait for either)."""
        return self.resolve(requested).lease(while_waiting)

    def lease_if_loaded(
        self, requested: str
    ) -> contextlib.AbstractAsyncContextManager[Target | None]:
        """Like `lease`, but yields None instead of loading an unloaded model."""
        return self.resolve(requested).lease_if_loaded()

    # -------------------------------------------------------------- policy

    @contextlib.asynccontextmanager
    async def admit(self, model: ModelController, deadline: float) -> AsyncIterator[None]:
        """Make room for `model` (its group's slot, then memory), evicting idle models
        if needed; hold while it begins loading, so the next admission counts it."""
        async with self._group_slot(model, deadline):
            if not model.needs_load():
                yield  # loaded (or stopped) while we waited: nothing to admit
                return
            with await self.memory.admit(model.name, deadline):
                yield

    async def ready(self, model: ModelController) -> None:
        """Sample a freshly loaded worker before anyone sees it LOADED (status, admission)."""
        record = model.worker_record()
        if record is not None:
            await self.memory.sample_now(model.name, record.pgid)

    @contextlib.asynccontextmanager
    async def _group_slot(self, model: ModelController, deadline: float) -> AsyncIterator[None]:
        """Hold the group's lock with a free slot for `model`.

        The lock is not held while waiting for a busy model to go idle: a request
        for a model that is loaded meanwhile must get past it, or the busy model
        never goes idle.
        """
        group = self.config.group(model.config.group)
        if group is None or group.max_loaded is None:
            yield
            return
        lock = self._group_locks.setdefault(group.name, asyncio.Lock())
        while True:
            async with lock:
                if not model.needs_load() or await self._make_room(group, model):
                    yield
                    return
            await self._wait_for_room(group, model, deadline)

    def _holding(self, group: GroupConfig, model: ModelController) -> list[ModelController]:
        return [
            m
            for m in self._registry
            if m is not model and m.config.group == group.name and m.holds_memory
        ]

    async def _make_room(self, group: GroupConfig, model: ModelController) -> bool:
        """Free a slot in `group` by unloading its least recently used idle models;
        False when every model holding one is busy."""
        assert group.max_loaded is not None
        while len(holding := self._holding(group, model)) >= group.max_loaded:
            idle = [m for m in holding if m.evictable]
            if not idle:
                return False
            victim = min(idle, key=lambda m: m.last_used)
            await self._evict(
                victim, f"evicted to make room for '{model.name}' in group '{group.name}'"
            )
        return True

    async def _wait_for_room(
        self, group: GroupConfig, model: ModelController, deadline: float
    ) -> None:
        """Wait for any change; 429 once `deadline` has passed."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            names = ", ".join(m.name for m in self._holding(group, model))
            raise HubError(
                f"Group '{group.name}' is full (max_loaded={group.max_loaded}) and every "
                f"loaded model is busy: {names}. '{model.name}' could not be loaded within "
                f"{model.config.queue_timeout} s (queue_timeout)",
                429,
                "rate_limit_error",
            )
        await self._signal.wait_any(remaining)

    @contextlib.asynccontextmanager
    async def _standby_turn(self) -> AsyncIterator[None]:
        """One standby starts at a time, and only while no model is loading."""
        async with self._standby_lock:
            await self._signal.wait_until(
                lambda: not any(m.memory == MemoryState.LOADING for m in self._registry), None
            )
            yield

    async def _evict(self, victim: ModelController, reason: str) -> None:
        self.metrics.model(victim.name).evicted()
        await victim.evict(reason)

    def _memory_holders(self) -> list[Holder]:
        return [
            self.memory.holder(
                m.name,
                last_used=m.last_used,
                busy=m.holds_memory and not m.evictable,
                loading=m.memory == MemoryState.LOADING,
                standby=not m.holds_memory,
            )
            for m in self._registry
            if m.holds_memory or m.has_standby
        ]

    async def _evict_for_memory(self, name: str, reason: str) -> None:
        for model in (m for m in self._registry if m.name == name):
            if model.evictable:
                self.memory.evicted(name, reason)
                await self._evict(model, reason)
            elif not model.holds_memory and model.has_standby:
                self.metrics.model(name).evicted()
                await model.drop_standby(reason)

    # --------------------------------------------------------------- reload

    async def reload(self) -> dict[str, list[str]]:
        """Re-read hub.yaml and reconcile; a bad file changes nothing (400)."""
        async with self._reload_lock:
            try:
                new = await asyncio.to_thread(load_config, self.config.source_path)
            except ConfigError as exc:
                raise HubError(str(exc), 400) from exc
            return self._apply_config(new)

    def _apply_config(self, new: HubConfig) -> dict[str, list[str]]:
        old_names, new_names = set(self._by_name), {m.name for m in new.models}
        removed, added = old_names - new_names, new_names - old_names
        for name in sorted(removed):
            self._tasks.spawn(self._retire(self._by_name[name]), f"retire:{name}")
        restarted = []
        by_name: dict[str, ModelController] = {}
        for cfg in new.models:
            model = self._by_name.get(cfg.name)
            if model is None:
                model = ModelController(cfg, self._services)
                self._registry.append(model)
            elif model.reconfigure(cfg):
                restarted.append(cfg.name)
                self._tasks.spawn(model.restart_when_idle(), f"restart:{cfg.name}")
            by_name[cfg.name] = model
        self._by_name = by_name
        if new.port != self.config.port or new.host != self.config.host:
            logger.warning("Hub host/port changes take effect when the hub restarts")
        self.config = attrs.evolve(new, host=self.config.host, port=self.config.port)
        self.memory.reconfigure(self.config)
        self._services.ports.starting_port = new.model_starting_port
        for name in sorted(added):
            if by_name[name].config.default:
                self._tasks.spawn(self._start_logged(by_name[name]), f"start-default:{name}")
        self._signal.notify()
        result = {
            "started": sorted(added),
            "stopped": sorted(removed),
            "unchanged": sorted(old_names & new_names),
            "restarted": sorted(restarted),
        }
        logger.info("Reloaded hub config: %s", result)
        return result

    async def _retire(self, model: ModelController) -> None:
        """Stop a model a reload removed; it leaves the registry once stopped."""
        try:
            await model.stop(drain=self.config.shutdown_grace)
        finally:
            self._registry.remove(model)
            if model.name not in self._by_name:
                self.metrics.forget(model.name)
            self._signal.notify()

    # --------------------------------------------------------------- status

    def snapshots(self) -> list[ModelSnapshot]:
        """Every current model's state, in hub.yaml order."""
        return [model.snapshot() for model in self._by_name.values()]

    def status(self) -> dict[str, Any]:
        """The `/hub/status` document (never waits)."""
        return hub_status(
            self.config, self.snapshots(), self._log_files.warnings(), self.memory, self.downloads
        )

    def wait_note(self, name: str) -> str:
        """What a request for `name` waits for now ("downloading qwen 43%", "loading qwen")."""
        snap = self.resolve(name).snapshot()
        entry = full_entry(snap, 0, self.memory, self.downloads)
        return wait_note(entry["metadata"], snap.config.name)

    def model_list(self) -> dict[str, Any]:
        """The `GET /v1/models` document."""
        return openai_models(self.config, self.snapshots())

    def _samples(self) -> list[ModelSample]:
        return [
            ModelSample(
                name=snap.config.name,
                process_state=str(snap.process),
                memory_state=str(snap.memory),
                active_requests=snap.queue.active_requests,
                queued_requests=snap.queue.queued_requests,
                memory_bytes=self.memory.ledger.get(snap.config.name).now_bytes,
            )
            for snap in self.snapshots()
        ]

    def _live_workers(self) -> list[tuple[ModelController, WorkerRecord]]:
        """Every live worker's (or standby's) process group, with its controller."""
        return [(m, r) for m in self._registry if (r := m.worker_record()) is not None]

    def _runtime_key(self, model: ModelController, record: WorkerRecord) -> str:
        """A worker's key in hub_runtime.json: its model's name, or for a model a reload
        is retiring also its pid, since a model added back under that name runs too."""
        if self._by_name.get(model.name) is model:
            return model.name
        return f"{model.name} (retiring, pid {record.pid})"

    # ------------------------------------------------------------- plumbing

    async def _watch_snapshots(self) -> None:
        """Keep `downloaded` in status current (the disk is read in a thread)."""
        while True:
            configs = [m.config for m in self._by_name.values()]
            await self.downloads.refresh_on_disk(
                [(c.model_path, c.revision, c.env) for c in configs]
            )
            await asyncio.sleep(SNAPSHOT_REFRESH_SECONDS)

    def _http(self) -> aiohttp.ClientSession:
        assert self._session is not None, "Supervisor.open() was not awaited"
        return self._session

    def _changed(self, _model: ModelController, change: Change) -> None:
        self._signal.notify()
        if change != Change.WORKER:
            return
        records = self._live_workers()
        self.memory.track({m.name: r.pgid for m, r in records}, self._tasks.spawn)
        if self._on_workers_changed is not None:
            self._on_workers_changed({self._runtime_key(m, r): r for m, r in records})

    async def _start_logged(self, model: ModelController) -> None:
        try:
            await model.start()
        except HubError as exc:
            logger.error("Could not start model '%s': %s", model.name, exc.message)
