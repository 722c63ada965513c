"""Warm standby workers (issue 11 §1) with the fake worker's JIT flavor.

The fake worker started with `--jit` (FAKE_WORKER_FLAVOR=jit) answers /health
with "unloaded" until its first request or `GET /v1/queue/stats`, which load
in FAKE_LOAD_DELAY; FAKE_START_DELAY stands for the imports a new process
spends, FAKE_JIT_START_DELAY for a standby's.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import aiohttp
import psutil

from tests.conftest import HubFactory, fake_model

CHAT = "/v1/chat/completions"


def jit_model(name: str, env: dict[str, str] | None = None, **extra: object) -> dict:
    """A started JIT model on the JIT worker line, slow to start and quick to load."""
    knobs = {"FAKE_WORKER_FLAVOR": "jit", "FAKE_START_DELAY": "3", "FAKE_LOAD_DELAY": "0.2"}
    return fake_model(name, jit_enabled=True, default=True, env={**knobs, **(env or {})}, **extra)


async def chat(hub, model: str, **extra: object) -> tuple[int, dict, float]:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    started = time.monotonic()
    async with aiohttp.ClientSession() as session, session.post(hub.url + CHAT, json=body) as r:
        return r.status, await r.json(content_type=None), time.monotonic() - started


async def standby_of(hub, name: str, timeout: float = 20) -> dict:
    meta = await hub.wait_for(name, lambda m: (m["standby"] or {}).get("pid"), timeout=timeout)
    assert meta["memory_state"] == "unloaded" and meta["pid"] == meta["standby"]["pid"]
    return meta["standby"]


def argv_of(pid: int) -> list[str]:
    return psutil.Process(pid).cmdline()


async def test_a_cold_request_is_served_by_the_standby(hub_factory: HubFactory):
    hub = hub_factory([jit_model("m")])
    standby = await standby_of(hub, "m")
    argv = argv_of(standby["pid"])
    assert "--jit" in argv and "--auto-unload-minutes" not in argv
    await asyncio.sleep(3.5)  # the standby has finished its "imports"
    status, body, took = await chat(hub, "m")
    assert status == 200 and body["fake_worker"]["pid"] == standby["pid"]
    assert took < 2.5  # an in-process load, not a 3 s process start
    meta = await hub.model("m")
    assert meta["memory_state"] == "loaded" and meta["standby"] is None


async def test_unload_ends_the_process_and_a_new_standby_follows(hub_factory: HubFactory):
    hub = hub_factory([jit_model("m", env={"FAKE_START_DELAY": "0.5"})])
    first = await standby_of(hub, "m")
    assert (await chat(hub, "m"))[0] == 200
    code, _ = await hub.post("/hub/models/m/unload")
    assert code == 200
    second = await standby_of(hub, "m")
    assert second["pid"] != first["pid"]
    assert not psutil.pid_exists(first["pid"])  # the memory came back with the process


async def test_the_pypi_line_never_gets_a_standby_and_warns_only_when_asked(
    hub_factory: HubFactory,
):
    plain = fake_model("plain", jit_enabled=True, default=True)
    asked = fake_model("asked", jit_enabled=True, default=True, warm_standby=True)
    hub = hub_factory([plain, asked])
    await hub.wait_for("asked", lambda m: m["process_state"] == "running")
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        status = await hub.status()
        assert all(m["metadata"]["standby"] is None for m in status["models"])
        warnings = [w for w in status["warnings"] if "warm_standby" in w]
        if warnings:
            break
        await asyncio.sleep(0.1)
    assert len(warnings) == 1 and "'asked'" in warnings[0] and "--jit" in warnings[0]


async def test_warm_standby_false_keeps_no_process(hub_factory: HubFactory):
    hub = hub_factory([jit_model("m", warm_standby=False, env={"FAKE_START_DELAY": "0"})])
    await hub.wait_for("m", lambda m: m["process_state"] == "running")
    await asyncio.sleep(1.5)
    meta = await hub.model("m")
    assert meta["standby"] is None and meta["pid"] is None
    status, body, _ = await chat(hub, "m")
    assert status == 200 and "--jit" not in argv_of(body["fake_worker"]["pid"])


async def test_a_standby_that_dies_is_replaced(hub_factory: HubFactory):
    hub = hub_factory([jit_model("m", env={"FAKE_START_DELAY": "0.3"})])
    first = await standby_of(hub, "m")
    await asyncio.sleep(1)  # ready
    os.kill(first["pid"], signal.SIGKILL)
    second = await hub.wait_for(
        "m", lambda m: (m["standby"] or {}).get("pid") not in (None, first["pid"]), timeout=15
    )
    assert second["memory_state"] == "unloaded"
    assert (await chat(hub, "m"))[0] == 200


async def test_a_standby_that_never_gets_ready_is_given_up_and_cold_starts_work(
    hub_factory: HubFactory,
):
    env = {"FAKE_START_DELAY": "0.3", "FAKE_JIT_START_DELAY": "30"}
    hub = hub_factory([jit_model("m", env=env, startup_timeout=1)])
    status = await hub.status()
    deadline = time.monotonic() + 40
    while not any("given up" in w for w in status["warnings"]):
        assert time.monotonic() < deadline, status["warnings"]
        await asyncio.sleep(0.3)
        status = await hub.status()
    assert (await hub.model("m"))["standby"] is None
    code, body, _ = await chat(hub, "m")
    assert code == 200 and "--jit" not in argv_of(body["fake_worker"]["pid"])


async def test_stopping_a_model_and_the_hub_leave_no_standby(hub_factory: HubFactory):
    hub = hub_factory([jit_model("a", env={"FAKE_START_DELAY": "0.3"}), jit_model("b")])
    a = await standby_of(hub, "a")
    code, _ = await hub.post("/hub/models/a/stop")
    assert code == 200 and not psutil.pid_exists(a["pid"])
    b = await standby_of(hub, "b")
    assert hub.terminate() == 0
    assert not psutil.pid_exists(b["pid"]) and hub.leftovers() == []


async def test_standbys_start_one_at_a_time_and_never_delay_a_load(hub_factory: HubFactory):
    models = [jit_model(name, env={"FAKE_START_DELAY": "2"}) for name in ("a", "b", "c")]
    hub = hub_factory(models)
    first = await standby_of(hub, "a")
    # While a's standby imports, b's and c's wait their turn...
    assert (await hub.model("b"))["standby"] is None
    # ...and a request for c starts c cold at once, not behind a's standby.
    status, body, took = await chat(hub, "c")
    assert status == 200 and took < 3.5
    assert "--jit" not in argv_of(body["fake_worker"]["pid"])
    b = await standby_of(hub, "b", timeout=20)
    assert b["since"] - first["since"] >= 1.5  # after a's was ready, not beside it


async def test_a_standby_is_the_first_memory_given_up(hub_factory: HubFactory):
    hub = hub_factory(
        [
            jit_model("idle", env={"FAKE_START_DELAY": "0.2", "FAKE_HOLD_MB": "300"}),
            jit_model("big", memory="800MB", warm_standby=False),
        ],
        memory_budget="1GB",
        memory_safety_margin=0,
    )
    standby = await standby_of(hub, "idle")
    await hub.wait_for("idle", lambda m: (m["memory_bytes"] or 0) > 200 * 2**20)
    assert (await hub.status())["memory"]["used_bytes"] > 200 * 2**20
    status, _, _ = await chat(hub, "big")
    assert status == 200
    assert not psutil.pid_exists(standby["pid"])  # given up for 'big'
    assert (await hub.model("idle"))["standby"] is None
