"""Memory admission through a real hub with fake workers: admit, evict, wait, refuse, learn."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from mlx_openai_server_hub.memory_estimate import RUNTIME_BASELINE_BYTES
from tests.conftest import HubFactory, fake_model
from tests.support.hubs import chat, post_json
from tests.unit.test_memory import _fake_hf_cache, _write

MB = 2**20
HOLDING = ("loading", "loaded", "unloading")


def jit(name: str, memory: str | None = None, **extra: object) -> dict:
    """A JIT model started with the hub (so it loads on its first request)."""
    if memory is not None:
        extra["memory"] = memory
    return fake_model(name, jit_enabled=True, default=True, **extra)


async def started(hub, *names: str) -> None:
    for name in names:
        await hub.wait_for(name, lambda m: m["process_state"] == "running")


async def test_admits_then_evicts_the_least_recently_used_idle_model(hub_factory: HubFactory):
    hub = hub_factory(
        [jit("a", "400MB"), jit("b", "400MB"), jit("c", "400MB")],
        memory_budget="1GB",
        memory_safety_margin=0,
    )
    for name in ("a", "b"):
        assert (await post_json(hub, chat(name)))[0] == 200
    await post_json(hub, chat("a"))  # a is now more recently used than b
    status, _ = await post_json(hub, chat("c"))
    assert status == 200
    b = await hub.model("b")
    assert b["memory_state"] == "unloaded"
    assert "to make room for 'c'" in b["memory_last_error"]
    assert (await hub.model("a"))["memory_state"] == "loaded"
    full = await hub.status()
    assert full["memory"]["budget_bytes"] == 1024 * MB
    assert full["memory"]["evictions"] == 1
    assert full["memory"]["system_total_bytes"] > 0
    meta = await hub.wait_for("c", lambda m: (m["memory_bytes"] or 0) > 0)
    assert meta["memory_need_bytes"] == 400 * MB and meta["memory_need_source"] == "config"


async def test_waits_for_a_busy_model_then_answers_503(hub_factory: HubFactory):
    hub = hub_factory(
        [jit("busy", "600MB"), jit("other", "600MB", queue_timeout=1)],
        memory_budget="1GB",
        memory_safety_margin=0,
    )
    await started(hub, "busy", "other")
    assert (await post_json(hub, chat("busy")))[0] == 200
    slow = asyncio.create_task(post_json(hub, chat("busy", fake_delay=4)))
    await hub.wait_for("busy", lambda m: m["in_flight"] >= 1)
    t0 = time.monotonic()
    status, body = await post_json(hub, chat("other"))
    waited = time.monotonic() - t0
    assert status == 503, body
    message = body["error"]["message"]
    assert body["error"]["type"] == "service_unavailable"
    assert "'other'" in message and "600.0 MB" in message and "'busy'" in message
    assert "budget 1.0 GB" in message
    assert 0.9 <= waited < 4
    assert (await slow)[0] == 200
    assert (await hub.model("busy"))["memory_state"] == "loaded"  # never evicted while busy


async def test_a_model_that_alone_exceeds_the_budget_is_refused_at_once(hub_factory: HubFactory):
    hub = hub_factory(
        [jit("small", "100MB"), jit("huge", "5GB")], memory_budget="1GB", memory_safety_margin=0
    )
    await started(hub, "small", "huge")
    assert (await post_json(hub, chat("small")))[0] == 200
    t0 = time.monotonic()
    status, body = await post_json(hub, chat("huge"))
    assert status == 503 and "alone exceeds the memory budget" in body["error"]["message"]
    assert time.monotonic() - t0 < 2
    huge = await hub.model("huge")
    assert huge["memory_state"] == "unloaded" and huge["pid"] is None
    assert (await hub.model("small"))["memory_state"] == "loaded"  # nothing was evicted for it


async def test_learned_memory_survives_a_hub_restart(hub_factory: HubFactory, tmp_path):
    logs = tmp_path / "shared-logs"
    model = jit("m")
    first = hub_factory([model], log_path=str(logs))
    await started(first, "m")
    assert (await post_json(first, chat("m")))[0] == 200
    meta = await first.wait_for("m", lambda m: (m["memory_learned_bytes"] or 0) > 0)
    assert meta["memory_peak_bytes"] >= meta["memory_bytes"] > 0
    assert first.terminate() == 0
    assert (logs / "memory_learned.json").exists()

    second = hub_factory([model], log_path=str(logs))
    meta = await second.model("m")
    assert meta["memory_state"] == "unloaded"
    assert meta["memory_bytes"] is None  # nothing loaded in this hub yet
    assert meta["memory_learned_bytes"] > 0 and meta["memory_need_source"] == "learned"


async def test_sampled_footprint_is_the_workers_resident_memory(hub_factory: HubFactory):
    held = 150
    hub = hub_factory([jit("m", env={"FAKE_HOLD_MB": str(held)})])
    await started(hub, "m")
    assert (await post_json(hub, chat("m")))[0] == 200
    meta = await hub.wait_for("m", lambda m: (m["memory_bytes"] or 0) >= held * MB)
    # The block itself, plus Python and aiohttp (~30 MB of PSS, under 100 MB even as RSS).
    assert held * MB <= meta["memory_bytes"] <= (held + 100) * MB
    assert meta["memory_peak_bytes"] >= meta["memory_bytes"]
    assert (await hub.status())["memory"]["used_bytes"] >= held * MB


@pytest.mark.parametrize("how", ["load call", "first request"])
async def test_the_footprint_is_in_status_as_soon_as_the_load_returns(
    hub_factory: HubFactory, how: str
):
    # The periodic sampler last read the worker at spawn, before it held anything: only
    # a sample taken when it became ready can show the block in the very next status.
    held = 150
    hub = hub_factory([jit("m", env={"FAKE_HOLD_MB": str(held)})])
    await started(hub, "m")
    if how == "load call":
        code, body = await hub.post("/hub/models/m/load")
    else:
        code, body = await post_json(hub, chat("m"))
    assert code == 200, body
    full = await hub.status()
    meta = next(m["metadata"] for m in full["models"] if m["id"] == "m")
    assert meta["memory_state"] == "loaded"
    assert (meta["memory_bytes"] or 0) >= held * MB, meta
    assert full["memory"]["used_bytes"] >= held * MB


async def test_needs_are_estimated_from_a_local_folder_and_the_hf_cache(
    hub_factory: HubFactory, tmp_path
):
    local = tmp_path / "local-model"
    _write(local / "model.safetensors", 300 * MB)
    _write(local / "pytorch_model.bin", 900 * MB)  # ignored: the safetensors are loaded
    cache = tmp_path / "hf-cache"
    _fake_hf_cache(cache, "org/big", {"model.safetensors": 2 * 1024 * MB, "config.json": 100})
    hub = hub_factory(
        [
            jit("local", model_path=str(local)),
            jit("cached", model_path="org/big"),
        ],
        env={"HF_HUB_CACHE": str(cache)},
        memory_budget="1GB",
        memory_safety_margin=0,
    )
    meta = await hub.model("local")
    assert meta["memory_need_source"] == "estimate"
    assert meta["memory_need_bytes"] == 300 * MB + RUNTIME_BASELINE_BYTES
    assert str(local) in meta["memory_estimate_source"]
    cached = await hub.model("cached")
    assert cached["memory_need_source"] == "estimate"
    assert cached["memory_need_bytes"] == 2 * 1024 * MB + RUNTIME_BASELINE_BYTES
    assert "models--org--big" in cached["memory_estimate_source"]
    # The estimates drive admission: 556 MB fits the budget, 2.25 GB never can.
    assert (await post_json(hub, chat("local")))[0] == 200
    status, body = await post_json(hub, chat("cached"))
    assert status == 503 and "alone exceeds the memory budget" in body["error"]["message"]
    assert (await hub.model("local"))["memory_state"] == "loaded"


class Watcher:
    """Polls /hub/status and keeps the worst moment: models holding memory, and their needs."""

    def __init__(self, hub) -> None:
        self.hub = hub
        self.most_holding = 0
        self.most_needed = 0
        self.snapshots = 0

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                models = [m["metadata"] for m in (await self.hub.status(session))["models"]]
                holding = [m for m in models if m["memory_state"] in HOLDING]
                self.most_holding = max(self.most_holding, len(holding))
                needed = sum(m["memory_need_bytes"] for m in holding)
                self.most_needed = max(self.most_needed, needed)
                self.snapshots += 1
                await asyncio.sleep(0.02)


@pytest.mark.parametrize("limit", ["budget", "group"])
async def test_a_reload_racing_a_load_keeps_the_budget_and_the_group_cap(
    hub_factory: HubFactory, limit: str
):
    slow = {"FAKE_START_DELAY": "1.5"}  # a load long enough for the reload to land inside it
    if limit == "budget":
        top = {"memory_budget": "1GB", "memory_safety_margin": 0}
        entry = {"memory": "600MB"}
    else:
        top = {"groups": [{"name": "g", "max_loaded": 1}]}
        entry = {"group": "g"}
    models = [jit(n, env=slow, **entry) for n in ("a", "b")]
    hub = hub_factory(models, **top)
    await started(hub, "a", "b")
    watcher = Watcher(hub)
    watching = asyncio.create_task(watcher.run())
    try:
        first = asyncio.create_task(post_json(hub, chat("a")))
        await hub.wait_for("a", lambda m: m["memory_state"] == "loading")
        # While a loads: b is replaced by a changed copy and c is added, then both are asked for.
        changed = [models[0], jit("b", env={}, **entry), jit("c", env=slow, **entry)]
        hub.write_config(changed, **top)
        code, reply = await hub.post("/hub/reload")
        assert code == 200 and reply["started"] == ["c"], reply
        answers = await asyncio.gather(
            first, post_json(hub, chat("b")), post_json(hub, chat("c")), post_json(hub, chat("a"))
        )
    finally:
        watching.cancel()
    assert [status for status, _ in answers] == [200] * 4, answers
    assert watcher.snapshots > 10
    assert watcher.most_holding == 1
    if limit == "budget":
        assert watcher.most_needed <= 1024 * MB
