"""Memory admission: may a model load now, and what must give way first?

`plan` is a pure function over attrs records (what each model holds, whether
it is busy, when it was last used, the budget and the machine's available
memory): it answers admit / evict these idle models (standbys first, then
least recently used) / wait for a busy one / refuse. `Admitter` runs it under
one lock so two loads racing for the last gigabyte never both get it: a model
admitted keeps its reservation until its own figures show it holding memory.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from .errors import HubError
from .memory import SystemMemory, read_system_memory
from .sizes import SizeSpec, format_size

logger = logging.getLogger("mlx_hub.admission")

# The system guard's default: after a load, at least this much must stay
# available to macOS and the desktop, or the machine starts to swap.
DEFAULT_SAFETY_MARGIN = 2 * 2**30


@attrs.frozen
class Holder:
    """A model that holds (or is about to hold) memory."""

    name: str
    measured: int | None  # its sampled footprint now; None before the first sample
    need: int  # what admission reserved for it
    last_used: float = 0.0
    busy: bool = False  # requests in flight, loading, or draining: never evicted
    loading: bool = False
    standby: bool = False  # a warm worker without weights: given up first

    @property
    def holds(self) -> int:
        """Bytes counted against the budget: what it holds, but at least its need.

        A loading model has not reached its size yet, and an idle one grows back
        to its peak (the KV cache) with its next request: reserving the need
        keeps the budget true under load, not only at the instant of admission.
        """
        return max(self.measured or 0, self.need)

    @property
    def pending(self) -> int:
        """Bytes it will still take that the machine's "available" does not show yet."""
        return max(0, self.need - (self.measured or 0)) if self.loading else 0


@attrs.frozen
class Need:
    """The model asking to load and what it needs."""

    name: str
    bytes: int
    source: str = "unknown"  # config / learned / estimate / unknown


@attrs.frozen
class Limits:
    """The budget (None: no budget) and the system guard's reading."""

    budget: int | None = None
    margin: int = DEFAULT_SAFETY_MARGIN
    system: SystemMemory | None = None


class Action(enum.StrEnum):
    """What admission decided."""

    ADMIT = "admit"
    EVICT = "evict"
    WAIT = "wait"
    REFUSE = "refuse"


@attrs.frozen
class Decision:
    """A plan: `evict` lists the idle models to unload (in order) before admitting."""

    action: Action
    evict: tuple[str, ...] = ()
    reason: str = ""


def eviction_order(holders: list[Holder]) -> list[Holder]:
    """Idle holders in the order they are given up: standbys, then least recently used."""
    idle = [h for h in holders if not h.busy]
    return sorted(idle, key=lambda h: (not h.standby, h.last_used))


@attrs.frozen
class _Fit:
    """The two constraints for one request, as functions of the bytes freed."""

    need: Need
    used: int
    limits: Limits
    available: int | None

    def budget_ok(self, freed: int) -> bool:
        budget = self.limits.budget
        return budget is None or self.used - freed + self.need.bytes <= budget

    def system_ok(self, freed: int) -> bool:
        if self.available is None or self.need.bytes == 0:
            return True  # an unknown need cannot be checked (status warns of it)
        return self.available + freed - self.need.bytes >= self.limits.margin

    def ok(self, freed: int) -> bool:
        return self.budget_ok(freed) and self.system_ok(freed)


def _fit(need: Need, others: list[Holder], mine: Holder | None, limits: Limits) -> _Fit:
    available = None
    if limits.system is not None:
        # Loads in progress will take more than "available" shows yet; this
        # model's own standby becomes part of its load, so it is not extra.
        available = limits.system.available_bytes - sum(h.pending for h in others)
        if mine is not None:
            available += mine.measured or 0
    return _Fit(need, sum(h.holds for h in others), limits, available)


def plan(need: Need, holders: list[Holder], limits: Limits) -> Decision:
    """Admit `need`, evict idle holders first, wait for busy ones, or refuse."""
    others = [h for h in holders if h.name != need.name]
    mine = next((h for h in holders if h.name == need.name), None)
    fit = _fit(need, others, mine, limits)
    if limits.budget is not None and need.bytes > limits.budget:
        return Decision(Action.REFUSE, reason="it alone exceeds the memory budget")
    if not fit.system_ok(sum(h.holds for h in others)):
        return Decision(
            Action.REFUSE,
            reason="even with every other model unloaded the machine would keep less "
            "available than the safety margin",
        )
    if fit.ok(0):
        return Decision(Action.ADMIT)
    chosen: list[str] = []
    freed = 0
    for holder in eviction_order(others):
        chosen.append(holder.name)
        freed += holder.holds
        if fit.ok(freed):
            return Decision(Action.EVICT, tuple(chosen), reason="to make room")
    if any(h.busy for h in others):
        return Decision(Action.WAIT, reason="the models holding the memory are busy")
    return Decision(Action.REFUSE, reason="it does not fit")


def refusal_message(need: Need, holders: list[Holder], limits: Limits, reason: str) -> str:
    """The 503 text: what is loaded, how much each holds, the budget and the need."""
    others = [h for h in holders if h.name != need.name]
    held = ", ".join(
        f"'{h.name}' {format_size(h.holds)} ({'busy' if h.busy else 'idle'}"
        f"{', standby' if h.standby else ''})"
        for h in sorted(others, key=lambda h: -h.holds)
    )
    parts = [
        f"Not enough memory to load model '{need.name}': it needs "
        f"{format_size(need.bytes)} ({need.source}) and {reason}."
    ]
    if limits.budget is not None:
        used = sum(h.holds for h in others)
        parts.append(f"Memory budget {format_size(limits.budget)}, in use {format_size(used)}.")
    parts.append(f"Loaded: {held}." if held else "No other model is loaded.")
    if limits.system is not None:
        parts.append(
            f"System: {format_size(limits.system.available_bytes)} available of "
            f"{format_size(limits.system.total_bytes)}, safety margin {format_size(limits.margin)}."
        )
    return " ".join(parts)


class MemoryRefused(HubError):
    """A load refused for memory: a 503 whose message carries the figures."""

    def __init__(self, message: str, figures: dict[str, Any]) -> None:
        super().__init__(message, 503, headers={"Retry-After": "5"})
        self.figures = figures


# --- serialised admission ----------------------------------------------------------------

HoldersFn = Callable[[], list[Holder]]
EvictFn = Callable[[str, str], Awaitable[None]]
WaitFn = Callable[[float], Awaitable[None]]
LimitsFn = Callable[[], Awaitable[Limits]]


def limits_reader(
    budget: SizeSpec | None,
    margin: SizeSpec | None,
    reader: Callable[[], SystemMemory] = read_system_memory,
) -> LimitsFn:
    """An async `() -> Limits` that reads the machine (in a thread) and resolves shares."""

    async def read() -> Limits:
        system = await asyncio.to_thread(reader)
        resolved = budget.resolve(system.total_bytes) if budget is not None else None
        guard = margin.resolve(system.total_bytes) if margin is not None else DEFAULT_SAFETY_MARGIN
        return Limits(resolved, guard, system)

    return read


class Ticket:
    """An admitted load's reservation: release it once the model's own figures count."""

    def __init__(self, admitter: Admitter, name: str) -> None:
        self._admitter = admitter
        self.name = name

    def release(self) -> None:
        """Drop the reservation (idempotent)."""
        self._admitter._reserved.pop(self.name, None)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Admitter:
    """Runs `plan` one request at a time, evicting and waiting as it says."""

    def __init__(self, holders: HoldersFn, evict: EvictFn, wait: WaitFn, limits: LimitsFn):
        self._holders = holders
        self._evict = evict
        self._wait = wait
        self._limits = limits
        self._lock = asyncio.Lock()
        self._reserved: dict[str, Holder] = {}
        self.counters = {"admitted": 0, "evictions": 0, "refusals": 0, "waits": 0}
        self.last_limits: Limits | None = None

    def set_limits(self, limits: LimitsFn) -> None:
        """A reloaded hub.yaml changed the budget or the margin."""
        self._limits = limits

    def holders(self) -> list[Holder]:
        """What holds memory now, admitted loads not yet visible included."""
        current = self._holders()
        seen = {h.name for h in current}
        return current + [h for name, h in self._reserved.items() if name not in seen]

    async def admit(self, need: Need, deadline: float | None) -> Ticket:
        """Admit `need` (evicting idle models, waiting for busy ones until the monotonic
        `deadline`) or raise MemoryRefused."""
        async with self._lock:
            while True:
                limits = self.last_limits = await self._limits()
                holders = self.holders()
                decision = plan(need, holders, limits)
                if decision.action is Action.ADMIT:
                    return self._reserve(need)
                if decision.action is Action.REFUSE:
                    raise self._refuse(need, holders, limits, decision.reason)
                if decision.action is Action.EVICT:
                    await self._evict_all(need, holders, limits, decision.evict)
                    continue
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    reason = "the models holding the memory stayed busy until the queue timeout"
                    raise self._refuse(need, holders, limits, reason)
                self.counters["waits"] += 1
                await self._wait(remaining if remaining is not None else 3600.0)

    def _reserve(self, need: Need) -> Ticket:
        self.counters["admitted"] += 1
        self._reserved[need.name] = Holder(
            need.name, None, need.bytes, time.time(), busy=True, loading=True
        )
        return Ticket(self, need.name)

    async def _evict_all(
        self, need: Need, holders: list[Holder], limits: Limits, names: tuple[str, ...]
    ) -> None:
        by_name = {h.name: h for h in holders}
        for name in names:
            reason = (
                f"unloaded to make room for '{need.name}' ({format_size(need.bytes)}, "
                f"{need.source}); it held {format_size(by_name[name].holds)}"
                + (f", budget {format_size(limits.budget)}" if limits.budget is not None else "")
            )
            logger.info("memory: evicting %s: %s", name, reason)
            self.counters["evictions"] += 1
            await self._evict(name, reason)

    def _refuse(
        self, need: Need, holders: list[Holder], limits: Limits, reason: str
    ) -> MemoryRefused:
        message = refusal_message(need, holders, limits, reason)
        logger.warning("memory: %s", message)
        self.counters["refusals"] += 1
        figures = {
            "need_bytes": need.bytes,
            "need_source": need.source,
            "budget_bytes": limits.budget,
            "held": {h.name: h.holds for h in holders if h.name != need.name},
        }
        return MemoryRefused(message, figures)
