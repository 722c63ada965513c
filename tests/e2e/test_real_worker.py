"""The hub driving the real mlx-openai-server worker (CPU) with a tiny model made at test time.

Each test runs against both worker lines (PyPI 1.8.1 and the JIT branch 1.3.12) unless it
says why not. Each worker start costs ~9 s here, so the tests share starts where they can:
five per line, and one more for the JIT branch's own --max-concurrency.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import openai
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Hub, HubFactory
from tests.e2e.conftest import (
    STARTUP_TIMEOUT_S,
    group_members,
    only_line,
    port_bindable,
    port_listening,
    real_model,
)
from tests.e2e.worker_support import RealWorker, worker_secret_headers

MAX_TOKENS = 8
MESSAGES: list[Any] = [{"role": "user", "content": "hello there"}]
IDLE_MINUTES = 0.1  # 6 s


def openai_client(hub: Hub) -> openai.AsyncOpenAI:
    # No retries: a failure must show, not be papered over.
    return openai.AsyncOpenAI(
        base_url=hub.url + "/v1", api_key="unused", max_retries=0, timeout=180
    )


def assert_usage(usage: Any) -> None:
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert 1 <= usage.completion_tokens <= MAX_TOKENS
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def chat_once(client: openai.AsyncOpenAI, model: str) -> Any:
    """A non-streaming chat completion, answered with text and usage counts (returned)."""
    reply = await client.chat.completions.create(
        model=model, messages=MESSAGES, max_tokens=MAX_TOKENS
    )
    assert reply.object == "chat.completion"
    assert len(reply.choices) == 1
    assert reply.choices[0].message.role == "assistant"
    assert isinstance(reply.choices[0].message.content, str)
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert_usage(reply.usage)
    return reply.usage


async def chat_stream(client: openai.AsyncOpenAI, model: str) -> Any:
    """A streaming chat completion: chunks, a finish reason, usage in the last chunk (returned)."""
    stream = await client.chat.completions.create(
        model=model,
        messages=MESSAGES,
        max_tokens=MAX_TOKENS,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks, "the stream carried no chunks"
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    with_choices = [chunk for chunk in chunks if chunk.choices]
    assert with_choices
    assert with_choices[-1].choices[0].finish_reason in ("stop", "length")
    assert_usage(chunks[-1].usage)
    return chunks[-1].usage


async def token_counters(hub: Hub, model: str) -> tuple[float, float]:
    """(prompt, completion) tokens the hub's `/metrics` counted for `model`."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(hub.url + "/metrics", headers=hub.auth) as resp,
    ):
        assert resp.status == 200
        text = await resp.text()
    found = {"mlx_hub_prompt_tokens_total": 0.0, "mlx_hub_completion_tokens_total": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in found and sample.labels.get("model") == model:
                found[sample.name] = sample.value
    return found["mlx_hub_prompt_tokens_total"], found["mlx_hub_completion_tokens_total"]


async def wait_token_counters(hub: Hub, model: str, expected: tuple[int, int]) -> None:
    """The counters reach `expected`: the hub counts a request just after its last byte."""
    deadline = time.monotonic() + 5.0
    while (counted := await token_counters(hub, model)) != expected:
        assert time.monotonic() < deadline, f"/metrics counted {counted}, usage was {expected}"
        await asyncio.sleep(0.1)


def assert_real_worker(meta: dict[str, Any], model_dir: Path, worker: RealWorker) -> psutil.Process:
    """The status names a live `mlx-openai-server launch` leading its own process group."""
    pid = meta["pid"]
    assert isinstance(pid, int)
    proc = psutil.Process(pid)
    assert proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    cmdline = proc.cmdline()
    assert "launch" in cmdline
    assert cmdline[cmdline.index("--model-path") + 1] == str(model_dir)
    assert cmdline[cmdline.index("--port") + 1] == str(meta["port"])
    assert os.getpgid(pid) == pid
    # Never the worker's own loading on demand or idle timer: both are the hub's job.
    assert "--jit" not in cmdline and "--auto-unload-minutes" not in cmdline
    if worker.line.spawns_helpers:
        # 1.8.1 runs helpers (resource tracker, spawn worker) in its group: stopping must
        # end them.
        assert len(group_members(pid)) >= 2, "expected the worker's helper processes"
    assert port_listening(meta["port"])
    return proc


async def worker_health(port: int) -> dict[str, Any]:
    """The worker's own /health, asked directly (not through the hub)."""
    headers = worker_secret_headers(port)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/health", headers=headers) as resp,
    ):
        assert resp.status == 200
        return dict(await resp.json())


async def wait_group_gone(pgid: int, timeout: float = 3.0) -> None:
    """The worker's whole process group (helpers too) has ended; zombies count as gone.

    The hub SIGKILLs the group before it answers, so only the kernel's delay is allowed for.
    """
    deadline = time.monotonic() + timeout
    while members := group_members(pgid):
        if time.monotonic() > deadline:
            described = [(p.pid, p.status(), p.cmdline()) for p in members]
            pytest.fail(f"process group {pgid} still has {described}")
        await asyncio.sleep(0.1)


def only_the_hub_runs(hub: Hub) -> bool:
    """No process of this test but the hub itself (no worker, no worker helper)."""
    assert hub.proc is not None
    return [p.pid for p in hub.leftovers()] == [hub.proc.pid]


async def wait_until_only_the_hub_runs(hub: Hub, timeout: float = 30.0) -> None:
    """No worker runs: the hub's one child, a `launch --help` probe for a JIT model, ends.

    A worker would not end on its own, so a started worker makes this fail.
    """
    deadline = time.monotonic() + timeout
    while not only_the_hub_runs(hub):
        if time.monotonic() > deadline:
            others = [p.cmdline() for p in hub.leftovers() if p.pid != hub.proc.pid]
            pytest.fail(f"processes besides the hub: {others}")
        await asyncio.sleep(0.1)


def is_state(process: str, memory: str):
    return lambda m: (m["process_state"], m["memory_state"]) == (process, memory)


@pytest.mark.e2e
async def test_default_model_serves_openai_and_hub_sigterm_ends_everything(
    hub_factory: HubFactory, tiny_model: Path, real_worker: RealWorker
):
    hub = hub_factory([real_model("tiny", tiny_model, real_worker, default=True)])
    meta = await hub.wait_for("tiny", is_state("running", "loaded"), timeout=150)
    assert_real_worker(meta, tiny_model, real_worker)
    health = await worker_health(meta["port"])
    assert health["status"] == "ok" and health["model_id"] == str(tiny_model)
    pgid = meta["pid"]

    prompt = completion = 0
    async with openai_client(hub) as client:
        # 1.8.1 refuses any `model` but its path: the hub must rewrite the name (1.3.12
        # accepts any, so there both names show only that the hub routes them).
        for model in ("tiny", str(tiny_model)):
            for usage in (await chat_once(client, model), await chat_stream(client, model)):
                prompt += usage.prompt_tokens
                completion += usage.completion_tokens
        models = await client.models.list()
        assert [m.id for m in models.data] == ["tiny"]
    # Both bodies and both streams' final chunks are counted, under the hub's name.
    await wait_token_counters(hub, "tiny", (prompt, completion))

    meta = await hub.model("tiny")
    assert meta["pid"] == pgid  # the same worker served everything
    assert meta["in_flight"] == 0 and meta["last_request_at"] is not None
    # The hub's sample of the worker's process group: Python, MLX and the weights, real bytes.
    meta = await hub.wait_for("tiny", lambda m: (m["memory_bytes"] or 0) > 50 * 2**20)
    assert meta["memory_peak_bytes"] >= meta["memory_bytes"]
    assert (await hub.status())["memory"]["used_bytes"] >= meta["memory_bytes"]
    print(
        f"real worker {real_worker.line.name}: footprint {meta['memory_bytes'] / 2**20:.0f} MB, "
        f"peak {meta['memory_peak_bytes'] / 2**20:.0f} MB"
    )
    runtime = hub.log_path / "hub_runtime.json"
    record = json.loads(runtime.read_text())
    assert record["workers"]["tiny"]["pgid"] == pgid

    # SIGTERM with a loaded real worker: clean exit, nothing left.
    assert hub.terminate() == 0, hub.output()
    assert hub.leftovers() == []  # (it counts zombies as gone)
    await wait_group_gone(pgid)
    assert not runtime.exists()
    assert not port_listening(meta["port"])


@pytest.mark.e2e
async def test_start_unload_load_stop_over_http(
    hub_factory: HubFactory, tiny_model: Path, real_worker: RealWorker
):
    hub = hub_factory([real_model("tiny", tiny_model, real_worker)])
    meta = await hub.model("tiny")
    assert (meta["process_state"], meta["memory_state"], meta["pid"]) == (
        "stopped",
        "unloaded",
        None,
    )

    status, body = await hub.post("/hub/models/tiny/start")
    assert status == 200, body
    meta = await hub.model("tiny")
    assert (meta["process_state"], meta["memory_state"]) == ("running", "loaded")
    first = assert_real_worker(meta, tiny_model, real_worker)
    port = meta["port"]

    status, body = await hub.post("/hub/models/tiny/unload")
    assert status == 200, body
    meta = await hub.model("tiny")
    assert (meta["process_state"], meta["memory_state"], meta["pid"]) == (
        "running",
        "unloaded",
        None,
    )
    assert meta["port"] == port  # a started model keeps its port
    await wait_group_gone(first.pid)
    assert not port_listening(port)

    status, body = await hub.post("/hub/models/tiny/load")
    assert status == 200, body
    meta = await hub.model("tiny")
    assert (meta["process_state"], meta["memory_state"]) == ("running", "loaded")
    second = assert_real_worker(meta, tiny_model, real_worker)
    assert second.pid != first.pid and meta["port"] == port
    async with openai_client(hub) as client:
        await chat_once(client, "tiny")

    status, body = await hub.post("/hub/models/tiny/stop")
    assert status == 200, body
    meta = await hub.model("tiny")
    assert (meta["process_state"], meta["memory_state"], meta["pid"], meta["port"]) == (
        "stopped",
        "unloaded",
        None,
        None,
    )
    await wait_group_gone(second.pid)
    assert not port_listening(port) and port_bindable(port)

    # A stopped model is neither loadable nor served.
    status, body = await hub.post("/hub/models/tiny/load")
    assert status == 400 and "not started" in body["error"]["message"]
    async with openai_client(hub) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await chat_once(client, "tiny")
    assert caught.value.status_code == 503
    assert only_the_hub_runs(hub)


@pytest.mark.e2e
async def test_jit_model_loads_on_request_and_unloads_when_idle(
    hub_factory: HubFactory, tiny_model: Path, real_worker: RealWorker
):
    entry = real_model(
        "jit",
        tiny_model,
        real_worker,
        default=True,
        jit_enabled=True,
        auto_unload_minutes=IDLE_MINUTES,
    )
    hub = hub_factory([entry])
    meta = await hub.wait_for("jit", lambda m: m["process_state"] == "running")
    assert (meta["memory_state"], meta["pid"]) == ("unloaded", None)
    await wait_until_only_the_hub_runs(hub)  # no worker yet

    async with openai_client(hub) as client:
        await chat_once(client, "jit")  # loads it, then answers
        meta = await hub.model("jit")
        assert (meta["process_state"], meta["memory_state"]) == ("running", "loaded")
        first = assert_real_worker(meta, tiny_model, real_worker)
        assert meta["unload_at"] == pytest.approx(time.time() + IDLE_MINUTES * 60, abs=3)

        meta = await hub.wait_for("jit", is_state("running", "unloaded"), timeout=30)
        assert meta["pid"] is None
        await wait_group_gone(first.pid)

        # The next request (streaming this time) loads it again.
        await chat_stream(client, str(tiny_model))
        meta = await hub.model("jit")
        assert meta["memory_state"] == "loaded"
        second = assert_real_worker(meta, tiny_model, real_worker)
        assert second.pid != first.pid

    log = (hub.log_path / "jit.log").read_text()
    assert log.count("worker started: pid") == 2


@pytest.mark.e2e
@only_line(
    "jit",
    reason="only 1.3.12's `launch` has --max-concurrency; 1.8.1 gets no such flag and the "
    "hub's own queue enforces the limit (tests/integration)",
)
async def test_max_concurrency_reaches_the_worker(
    hub_factory: HubFactory, tiny_model: Path, real_worker: RealWorker
):
    hub = hub_factory([real_model("tiny", tiny_model, real_worker, max_concurrency=2)])
    status, body = await hub.post("/hub/models/tiny/start")
    assert status == 200, body
    meta = await hub.model("tiny")
    cmdline = assert_real_worker(meta, tiny_model, real_worker).cmdline()
    assert cmdline[cmdline.index("--max-concurrency") + 1] == "2"
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"http://127.0.0.1:{meta['port']}/v1/queue/stats",
            headers=worker_secret_headers(meta["port"]),
        ) as resp,
    ):
        assert resp.status == 200
        stats = await resp.json()
    assert stats["queue_stats"]["max_concurrency"] == 2
    async with openai_client(hub) as client:
        await asyncio.gather(chat_once(client, "tiny"), chat_stream(client, "tiny"))


async def standby_health(port: int) -> str | None:
    """The worker's `model_status`, or None while it does not answer yet (imports)."""
    try:
        return str((await worker_health(port)).get("model_status"))
    except (aiohttp.ClientError, AssertionError):
        return None


@pytest.mark.e2e
@only_line("jit", reason="only the JIT-and-Auto-Unload line has --jit, which a standby needs")
async def test_a_standby_serves_the_cold_request_and_is_replaced_after_unload(
    hub_factory: HubFactory, tiny_model: Path, real_worker: RealWorker
):
    entry = real_model(
        "warm", tiny_model, real_worker, default=True, jit_enabled=True, warm_standby=True
    )
    hub = hub_factory([entry])
    standby = (await hub.wait_for("warm", lambda m: (m["standby"] or {}).get("pid"), 120))[
        "standby"
    ]
    cmdline = psutil.Process(standby["pid"]).cmdline()
    assert "--jit" in cmdline and "--auto-unload-minutes" not in cmdline
    # Its /health answers "unloaded" once its imports are done.
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    port = (await hub.model("warm"))["port"]
    while await standby_health(port) != "unloaded":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.5)
    async with openai_client(hub) as client:
        started = time.monotonic()
        await chat_once(client, "warm")
        cold_request = time.monotonic() - started
        meta = await hub.model("warm")
        assert meta["memory_state"] == "loaded" and meta["pid"] == standby["pid"]
        print(f"cold request through the standby: {cold_request:.2f} s")
        status, _ = await hub.post("/hub/models/warm/unload")
        assert status == 200
        await wait_group_gone(standby["pid"])
        again = await hub.wait_for(
            "warm", lambda m: (m["standby"] or {}).get("pid") not in (None, standby["pid"]), 120
        )
        assert again["memory_state"] == "unloaded"


@pytest.mark.e2e
@only_line("pypi", reason="the point is that 1.8.1, which has no --jit, never gets a standby")
async def test_the_pypi_line_gets_no_standby(
    hub_factory: HubFactory, tiny_model: Path, real_worker: RealWorker
):
    entry = real_model("cold", tiny_model, real_worker, default=True, jit_enabled=True)
    del entry["warm_standby"]  # the default: a standby where the worker supports one
    hub = hub_factory([entry])
    await hub.wait_for("cold", lambda m: m["process_state"] == "running")
    await wait_until_only_the_hub_runs(hub)
    assert (await hub.model("cold"))["standby"] is None
