"""The admission planner (pure) and the serialised Admitter (evict, wait, refuse)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from mlx_openai_server_hub.admission import (
    Action,
    Admitter,
    Holder,
    Limits,
    MemoryRefused,
    Need,
    limits_reader,
    plan,
    refusal_message,
)
from mlx_openai_server_hub.errors import error_type_for
from mlx_openai_server_hub.memory import SystemMemory
from mlx_openai_server_hub.sizes import SizeSpec

GB = 2**30


def idle(name: str, size: float, used: float, **kw: object) -> Holder:
    return Holder(name, int(size * GB), int(size * GB), last_used=used, **kw)  # type: ignore[arg-type]


def busy(name: str, size: float, used: float = 0.0) -> Holder:
    return idle(name, size, used, busy=True)


def need(name: str, size: float, source: str = "learned") -> Need:
    return Need(name, int(size * GB), source)


BUDGET = Limits(budget=40 * GB, margin=0, system=None)


def test_admit_when_it_fits() -> None:
    assert plan(need("c", 10), [idle("a", 10, 1), idle("b", 20, 2)], BUDGET).action is Action.ADMIT


def test_no_budget_admits_anything() -> None:
    assert plan(need("c", 500), [idle("a", 300, 1)], Limits(None, 0, None)).action is Action.ADMIT


def test_evicts_least_recently_used_idle_first() -> None:
    holders = [idle("new", 10, 30), idle("old", 10, 10), idle("mid", 10, 20)]
    decision = plan(need("c", 20), holders, BUDGET)
    assert decision.action is Action.EVICT
    assert decision.evict == ("old",)  # 30 - 10 + 20 = 40 fits: only one goes
    decision = plan(need("c", 30), holders, BUDGET)
    assert decision.evict == ("old", "mid")


def test_standbys_go_before_loaded_models() -> None:
    holders = [idle("old", 10, 1), idle("standby", 1, 50, standby=True), idle("b", 28, 2)]
    decision = plan(need("c", 2), holders, BUDGET)
    assert decision == plan(need("c", 2), holders, BUDGET)
    assert decision.evict == ("standby",)  # 39 - 1 + 2 = 40


def test_busy_models_are_never_evicted() -> None:
    holders = [busy("hot", 30, 1), idle("cold", 5, 50)]
    decision = plan(need("c", 10), holders, BUDGET)
    assert decision.action is Action.EVICT and decision.evict == ("cold",)
    # Evicting the idle one is not enough: wait for the busy one, evict nothing yet.
    decision = plan(need("c", 15), holders, BUDGET)
    assert decision.action is Action.WAIT and decision.evict == ()


def test_refuses_at_once_when_alone_over_budget() -> None:
    decision = plan(need("huge", 41), [], BUDGET)
    assert decision.action is Action.REFUSE and "alone exceeds" in decision.reason


def test_a_loading_model_counts_its_whole_need() -> None:
    loading = Holder("l", measured=1 * GB, need=30 * GB, busy=True, loading=True)
    assert loading.holds == 30 * GB and loading.pending == 29 * GB
    assert plan(need("c", 15), [loading], BUDGET).action is Action.WAIT


def test_own_standby_is_not_counted_twice() -> None:
    mine = idle("c", 1, 1, standby=True)
    assert plan(need("c", 40), [mine], BUDGET).action is Action.ADMIT


def test_system_guard_refuses_and_evicts() -> None:
    system = SystemMemory(total_bytes=32 * GB, available_bytes=6 * GB)
    guard = Limits(budget=None, margin=2 * GB, system=system)
    assert plan(need("c", 4), [], guard).action is Action.ADMIT
    # 6 - 5 < 2: nothing to evict and nothing will ever free -> refuse.
    decision = plan(need("c", 5), [], guard)
    assert decision.action is Action.REFUSE and "safety margin" in decision.reason
    # An idle model holding 3 GB: evict it and 9 - 5 >= 2.
    decision = plan(need("c", 5), [idle("a", 3, 1)], guard)
    assert decision.action is Action.EVICT and decision.evict == ("a",)
    # A busy one instead: wait for it.
    assert plan(need("c", 5), [busy("a", 3)], guard).action is Action.WAIT
    # A load in progress will still take memory "available" does not show yet.
    growing = Holder("g", measured=0, need=3 * GB, busy=True, loading=True)
    assert plan(need("c", 2), [growing], guard).action is Action.WAIT
    # Unknown need: the guard cannot judge it and lets it through.
    assert plan(Need("c", 0, "unknown"), [], guard).action is Action.ADMIT


def test_budget_and_guard_must_both_hold() -> None:
    system = SystemMemory(total_bytes=64 * GB, available_bytes=3 * GB)
    limits = Limits(budget=40 * GB, margin=2 * GB, system=system)
    # The budget has room, the machine has not: evict to satisfy the guard.
    decision = plan(need("c", 4), [idle("a", 5, 1), idle("b", 5, 2)], limits)
    assert decision.action is Action.EVICT and decision.evict == ("a",)


def test_refusal_message_lists_the_figures() -> None:
    holders = [busy("a", 20), idle("b", 15.5, 3)]
    limits = Limits(40 * GB, 2 * GB, SystemMemory(32 * GB, 3 * GB))
    text = refusal_message(need("big", 12), holders, limits, "the others are busy")
    assert "'big'" in text and "12.0 GB (learned)" in text
    assert "Memory budget 40.0 GB, in use 35.5 GB" in text
    assert "'a' 20.0 GB (busy), 'b' 15.5 GB (idle)" in text
    assert "3.0 GB available of 32.0 GB, safety margin 2.0 GB" in text


# --- Admitter ------------------------------------------------------------------------


class World:
    """Holders the test controls, with eviction and change notification."""

    def __init__(self, holders: list[Holder], limits: Limits = BUDGET) -> None:
        self.holders = {h.name: h for h in holders}
        self.limits = limits
        self.evicted: list[tuple[str, str]] = []
        self.changed = asyncio.Event()

    async def evict(self, name: str, reason: str) -> None:
        self.evicted.append((name, reason))
        del self.holders[name]

    async def wait(self, timeout: float) -> None:
        self.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.changed.wait(), timeout)

    async def read_limits(self) -> Limits:
        return self.limits

    def admitter(self) -> Admitter:
        return Admitter(
            lambda: list(self.holders.values()), self.evict, self.wait, self.read_limits
        )


async def test_admitter_evicts_in_lru_order_then_admits() -> None:
    world = World([idle("a", 15, 1), idle("b", 15, 2), idle("c", 5, 3)])
    admitter = world.admitter()
    ticket = await admitter.admit(need("d", 30), deadline=None)
    assert [name for name, _ in world.evicted] == ["a", "b"]
    assert "make room for 'd'" in world.evicted[0][1]
    assert admitter.counters["evictions"] == 2 and admitter.counters["admitted"] == 1
    # The reservation counts until released: a second load cannot take the same room.
    assert any(h.name == "d" and h.holds == 30 * GB for h in admitter.holders())
    ticket.release()
    assert all(h.name != "d" for h in admitter.holders())


async def test_two_racing_loads_never_both_get_the_last_room() -> None:
    world = World([])
    admitter = world.admitter()
    first = await admitter.admit(need("x", 30), deadline=None)
    with pytest.raises(MemoryRefused) as info:
        await admitter.admit(need("y", 20), deadline=time.monotonic() + 0.2)
    assert "'x' 30.0 GB (busy)" in info.value.message
    first.release()
    with await admitter.admit(need("y", 20), deadline=None):
        pass


async def test_admitter_waits_for_a_busy_model_to_go_idle() -> None:
    world = World([busy("hot", 35, 1)])
    admitter = world.admitter()
    pending = asyncio.create_task(admitter.admit(need("c", 10), deadline=time.monotonic() + 10))
    await asyncio.sleep(0.1)
    assert not pending.done() and admitter.counters["waits"] >= 1
    world.holders["hot"] = idle("hot", 35, 1)  # its last request finished
    world.changed.set()
    ticket = await asyncio.wait_for(pending, 5)
    assert [name for name, _ in world.evicted] == ["hot"]
    ticket.release()


async def test_admitter_answers_503_after_the_queue_timeout() -> None:
    world = World([busy("hot", 35, 1)])
    admitter = world.admitter()
    started = time.monotonic()
    with pytest.raises(MemoryRefused) as info:
        await admitter.admit(need("c", 10), deadline=time.monotonic() + 0.3)
    assert 0.25 <= time.monotonic() - started < 3
    error = info.value
    assert error.status == 503 and error.error_type == error_type_for(503)
    assert "stayed busy until the queue timeout" in error.message
    assert error.figures["held"] == {"hot": 35 * GB}
    assert admitter.counters["refusals"] == 1 and world.evicted == []


async def test_admitter_refuses_too_big_without_touching_anything() -> None:
    world = World([idle("a", 10, 1)])
    with pytest.raises(MemoryRefused, match="alone exceeds the memory budget"):
        await world.admitter().admit(need("huge", 50), deadline=None)
    assert world.evicted == []


async def test_limits_reader_resolves_shares() -> None:
    read = limits_reader(
        SizeSpec(share=0.5), SizeSpec(bytes=GB), reader=lambda: SystemMemory(32 * GB, 20 * GB)
    )
    limits = await read()
    assert limits == Limits(16 * GB, GB, SystemMemory(32 * GB, 20 * GB))
    default = await limits_reader(None, None, reader=lambda: SystemMemory(8 * GB, 4 * GB))()
    assert default.budget is None and default.margin == 2 * GB


# --- HubMemory (the supervisor's handle) -------------------------------------------------


async def test_hub_memory_admits_refuses_and_reports(tmp_path) -> None:
    from mlx_openai_server_hub.config import load_config_text
    from mlx_openai_server_hub.hub_memory import HubMemory

    config = load_config_text(
        f"log_path: {tmp_path}\nmemory_budget: 10GB\nmemory_safety_margin: 1GB\nmodels:\n"
        "  - {name: a, model_path: /nowhere/a, memory: 6GB}\n"
        "  - {name: b, model_path: /nowhere/b, memory: 6GB}\n"
        "  - {name: c, model_path: /nowhere/c}\n",
        tmp_path / "hub.yaml",
    )
    loaded: dict[str, bool] = {}  # name -> busy
    evicted: list[str] = []

    async def evict(name: str, reason: str) -> None:
        evicted.append(name)
        hub.evicted(name, reason)
        del loaded[name]

    async def wait(timeout: float) -> None:
        await asyncio.sleep(min(timeout, 0.05))

    def holders() -> list[Holder]:
        return [hub.holder(n, last_used=1.0, busy=b) for n, b in loaded.items()]

    hub = HubMemory(
        config, holders, evict, wait, system_reader=lambda: SystemMemory(64 * GB, 40 * GB)
    )
    await hub.open()
    with await hub.admit("a", deadline=None):
        loaded["a"] = False
    with await hub.admit("b", deadline=None):  # 6 + 6 > 10: a (idle) goes
        loaded["b"] = True
    assert evicted == ["a"]
    assert hub.ledger.get("a").last_error.startswith("unloaded to make room for 'b'")  # type: ignore[union-attr]
    with pytest.raises(MemoryRefused):
        await hub.admit("a", deadline=time.monotonic() + 0.2)  # b is busy
    status = hub.model_status("a")
    assert "stayed busy" in hub.ledger.get("a").last_error  # type: ignore[operator]
    assert status["memory_need_bytes"] == 6 * GB and status["memory_need_source"] == "config"
    assert hub.model_status("c")["memory_need_source"] == "unknown"
    top = hub.status()
    assert top["budget_bytes"] == 10 * GB and top["system_total_bytes"] == 64 * GB
    assert top["safety_margin_bytes"] == GB and top["evictions"] == 1 and top["refusals"] == 1
    assert hub.summary() == "used 0 B / budget 10.0 GB"
    await hub.close()


async def test_hub_memory_system_guard_reads_the_injected_reader(tmp_path) -> None:
    from mlx_openai_server_hub.config import load_config_text
    from mlx_openai_server_hub.hub_memory import HubMemory

    config = load_config_text(
        f"log_path: {tmp_path}\nmemory_safety_margin: 2GB\nmodels:\n"
        "  - {name: m, model_path: /nowhere/m, memory: 4GB}\n",
        tmp_path / "hub.yaml",
    )
    reading = SystemMemory(32 * GB, 5 * GB)  # no budget: only the guard can refuse

    async def never_evict(name: str, reason: str) -> None:
        raise AssertionError(f"nothing holds memory, yet {name} was evicted")

    async def wait(timeout: float) -> None:
        await asyncio.sleep(min(timeout, 0.05))

    hub = HubMemory(config, list, never_evict, wait, system_reader=lambda: reading)
    await hub.open()
    with pytest.raises(MemoryRefused) as info:  # 5 - 4 < 2, and nothing will ever free
        await hub.admit("m", deadline=time.monotonic() + 5)
    assert "safety margin 2.0 GB" in info.value.message and "5.0 GB available" in info.value.message
    assert hub.status()["refusals"] == 1 and hub.status()["system_available_bytes"] == 5 * GB
    reading = SystemMemory(32 * GB, 7 * GB)  # another app quit: each admission reads afresh
    with await hub.admit("m", deadline=None):
        assert hub.status()["system_available_bytes"] == 7 * GB
    await hub.close()
