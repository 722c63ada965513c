"""The supervisor's one handle on memory: figures, samplers, admission and status.

`HubMemory` ties the `MemoryLedger` (what each model holds, learned, estimated)
to the `Admitter` (one admission at a time) through three callbacks the
supervisor gives it: which models hold memory now (as `Holder`s, built with
`holder()`), how to evict an idle model, and how to wait for any change. It
never touches the supervisor's state itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from .admission import (
    DEFAULT_SAFETY_MARGIN,
    Admitter,
    EvictFn,
    Holder,
    MemoryRefused,
    Need,
    Ticket,
    WaitFn,
    limits_reader,
)
from .config import HubConfig, ModelConfig
from .memory import MemoryLedger, MemorySubject, SystemMemory, read_system_memory
from .sizes import format_size

logger = logging.getLogger("mlx_hub.memory")

SYSTEM_REFRESH = 2.0

Spawn = Callable[[Coroutine[Any, Any, Any], str], "asyncio.Task[Any]"]


def subject_of(model: ModelConfig) -> MemorySubject:
    """What the ledger needs of a model; settings that change its size are in its fingerprint."""
    settings = {
        "model_type": model.model_type,
        "quantize": model.quantize,
        "config_name": model.config_name,
        "lora": ",".join(model.lora_paths) or None,
    }
    return MemorySubject(model.name, model.model_path, model.memory, model.revision, settings)


class HubMemory:
    """Memory figures, per-worker samplers and admission for one hub."""

    def __init__(
        self,
        config: HubConfig,
        holders: Callable[[], list[Holder]],
        evict: EvictFn,
        wait: WaitFn,
        system_reader: Callable[[], SystemMemory] = read_system_memory,
    ) -> None:
        self.ledger = MemoryLedger(config.log_path)
        self._reader = system_reader
        self.system: SystemMemory | None = None
        self.admitter = Admitter(holders, evict, wait, self._limits_for(config))
        self.budget_spec = config.memory_budget
        self.margin_spec = config.memory_safety_margin
        self._samplers: dict[str, asyncio.Task[Any]] = {}
        self._sampled: dict[str, int] = {}
        self.ledger.configure(subject_of(m) for m in config.models)

    def _limits_for(self, config: HubConfig) -> Any:
        read = limits_reader(config.memory_budget, config.memory_safety_margin, self._reader)

        async def limits() -> Any:
            found = await read()
            self.system = found.system
            return found

        return limits

    # ------------------------------------------------------------------ life

    async def open(self) -> None:
        """Read learned sizes, estimate every model from disk, take a first system reading."""
        await self.ledger.open()
        self.system = await asyncio.to_thread(self._reader)

    def reconfigure(self, config: HubConfig) -> None:
        """A reloaded hub.yaml: new models, new `memory` keys, a new budget."""
        self.ledger.configure(subject_of(m) for m in config.models)
        self.budget_spec = config.memory_budget
        self.margin_spec = config.memory_safety_margin
        self.admitter.set_limits(self._limits_for(config))

    async def run_system_monitor(self) -> None:
        """Keep the system reading fresh for status (which never waits)."""
        while True:
            self.system = await asyncio.to_thread(self._reader)
            await asyncio.sleep(SYSTEM_REFRESH)

    async def close(self) -> None:
        """Stop every sampler and write learned sizes."""
        for name in list(self._samplers):
            self.stop_sampling(name)
        await asyncio.gather(*self._samplers.values(), return_exceptions=True)
        await self.ledger.flush(force=True)

    # ------------------------------------------------------------------ admission

    def holder(
        self,
        name: str,
        *,
        last_used: float,
        busy: bool,
        loading: bool = False,
        standby: bool = False,
    ) -> Holder:
        """A `Holder` for a model holding memory, with its measured size and need."""
        entry = self.ledger.get(name)
        need = 0 if standby else entry.need()[0]
        return Holder(name, entry.now_bytes, need, last_used, busy, loading, standby)

    async def admit(self, name: str, deadline: float | None) -> Ticket:
        """Admit `name` for a load (evicting, waiting as needed) or raise MemoryRefused (503)."""
        entry = self.ledger.get(name)
        if entry.need()[1] in ("estimate", "unknown"):
            await self.ledger.refresh_estimates([name])  # it may have been downloaded since
        need = Need(name, *entry.need())
        if need.source == "unknown":
            logger.warning(
                "memory: %s: need unknown (no memory key, never loaded, no weights found)", name
            )
        try:
            ticket = await self.admitter.admit(need, deadline)
        except MemoryRefused as exc:
            entry.last_error = exc.message
            raise
        return ticket

    def evicted(self, name: str, reason: str) -> None:
        """Record why `name` was unloaded (shown as its `memory_last_error`)."""
        self.ledger.get(name).last_error = reason

    # ------------------------------------------------------------------ sampling

    def start_sampling(self, name: str, pgid: int, spawn: Spawn) -> None:
        """Sample `name`'s worker group from now on (a new load: peak starts over)."""
        self.stop_sampling(name)
        self.ledger.begin_load(name)
        self._samplers[name] = spawn(self.ledger.run_sampler(name, pgid), f"memory-sampler:{name}")

    def track(self, pgids: dict[str, int], spawn: Spawn) -> None:
        """Sample exactly these workers (`{model: process group}`): start new, stop gone."""
        for name in [n for n in self._samplers if n not in pgids]:
            self.stop_sampling(name)
        for name, pgid in pgids.items():
            if self._sampled.get(name) != pgid:
                self.start_sampling(name, pgid, spawn)
                self._sampled[name] = pgid

    async def sample_now(self, name: str, pgid: int) -> None:
        """Measure `name`'s worker group `pgid` at once (it has just become ready), so the
        status and the next admission see its footprint before the next periodic sample."""
        if not self._sampling(name, pgid):
            return  # another worker holds that name's sampler (a reload's retiring model)
        size = await self.ledger.measure(pgid)
        # Stopped or replaced meanwhile: a late reading must not bring back a gone footprint.
        if size is not None and self._sampling(name, pgid):
            self.ledger.record(name, size)

    def _sampling(self, name: str, pgid: int) -> bool:
        task = self._samplers.get(name)
        return self._sampled.get(name) == pgid and task is not None and not task.done()

    def stop_sampling(self, name: str) -> None:
        """`name`'s worker is gone: stop sampling it (its footprint becomes None)."""
        self._sampled.pop(name, None)
        task = self._samplers.pop(name, None)
        if task is not None:
            task.cancel()
        self.ledger.end_load(name)

    # ------------------------------------------------------------------ status

    def model_status(self, name: str) -> dict[str, Any]:
        """The `memory_*` fields of one model in /hub/status."""
        return self.ledger.get(name).status()

    def status(self) -> dict[str, Any]:
        """The top-level `memory` object of /hub/status (never waits)."""
        system = self.system
        total = system.total_bytes if system else 0
        budget = self.budget_spec.resolve(total) if self.budget_spec and system else None
        margin = self.margin_spec.resolve(total) if self.margin_spec else DEFAULT_SAFETY_MARGIN
        return {
            "budget_bytes": budget,
            "budget": str(self.budget_spec) if self.budget_spec is not None else None,
            "used_bytes": self.ledger.used_bytes(),
            "system_total_bytes": system.total_bytes if system else None,
            "system_available_bytes": system.available_bytes if system else None,
            "safety_margin_bytes": margin,
            **self.admitter.counters,
        }

    def summary(self) -> str:
        """One line for logs and the CLI: "used 12.0 GB / budget 24.0 GB"."""
        status = self.status()
        budget = status["budget_bytes"]
        line = f"used {format_size(status['used_bytes'])}"
        return line + (f" / budget {format_size(budget)}" if budget is not None else " (no budget)")
