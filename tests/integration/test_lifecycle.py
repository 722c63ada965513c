"""Memory lifecycle with fake workers: JIT loads, idle unloads, group caps, crashes."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import aiohttp
import openai
import psutil
import pytest

from tests.conftest import HubFactory, fake_model
from tests.support.hubs import chat, post_json

CHAT = "/v1/chat/completions"


async def test_jit_model_is_started_unloaded_and_loads_once_for_40_requests(
    hub_factory: HubFactory,
):
    hub = hub_factory(
        [fake_model("jit", jit_enabled=True, default=True, env={"FAKE_START_DELAY": "1"})]
    )
    meta = await hub.wait_for("jit", lambda m: m["process_state"] == "running")
    assert meta["memory_state"] == "unloaded" and meta["pid"] is None

    results = await asyncio.gather(*(post_json(hub, chat("jit")) for _ in range(40)))
    assert [status for status, _ in results] == [200] * 40
    pids = {body["fake_worker"]["pid"] for _, body in results}
    assert len(pids) == 1  # exactly one worker start
    log = (hub.log_path / "jit.log").read_text()
    assert log.count("worker started: pid") == 1


async def test_streaming_request_gets_keepalive_comments_while_loading(hub_factory: HubFactory):
    hub = hub_factory(
        [fake_model("slow", jit_enabled=True, default=True, env={"FAKE_START_DELAY": "5"})]
    )
    await hub.wait_for("slow", lambda m: m["process_state"] == "running")
    lines: list[tuple[float, bytes]] = []
    t0 = time.monotonic()
    async with (
        aiohttp.ClientSession() as session,
        session.post(hub.url + CHAT, json=chat("slow", stream=True)) as resp,
    ):
        headers_at = time.monotonic() - t0
        assert resp.status == 200
        assert resp.content_type == "text/event-stream"
        async for line in resp.content:
            lines.append((time.monotonic() - t0, line))
    assert headers_at < 1.0
    comments = [t for t, line in lines if line.startswith(b": loading slow")]
    assert len(comments) >= 2
    gaps = [b - a for a, b in zip([0.0, *comments], comments, strict=False)]
    assert max(gaps) <= 5.0
    assert lines[-2][1].strip() == b"data: [DONE]"


async def test_queue_timeout_ends_a_wait_for_a_slow_load(hub_factory: HubFactory):
    model = fake_model("slow", jit_enabled=True, queue_timeout=1, env={"FAKE_START_DELAY": "4"})
    hub = hub_factory([model])
    await hub.post("/hub/models/slow/start")
    status, body = await post_json(hub, chat("slow"))
    assert status == 503 and "still loading" in body["error"]["message"]
    # The load itself goes on and later requests are served.
    await hub.wait_for("slow", lambda m: m["memory_state"] == "loaded")
    status, _ = await post_json(hub, chat("slow"))
    assert status == 200


async def test_idle_model_unloads_and_reloads_on_next_request(hub_factory: HubFactory):
    hub = hub_factory(
        [fake_model("idle", jit_enabled=True, default=True, auto_unload_minutes=0.05)]
    )
    await hub.wait_for("idle", lambda m: m["process_state"] == "running")
    status, first = await post_json(hub, chat("idle"))
    assert status == 200
    meta = await hub.model("idle")
    assert meta["memory_state"] == "loaded"
    assert meta["unload_at"] == pytest.approx(time.time() + 3, abs=1.5)
    meta = await hub.wait_for("idle", lambda m: m["memory_state"] == "unloaded", timeout=10)
    assert meta["process_state"] == "running" and meta["pid"] is None
    status, second = await post_json(hub, chat("idle"))
    assert status == 200
    assert second["fake_worker"]["pid"] != first["fake_worker"]["pid"]
    assert second["fake_worker"]["port"] == first["fake_worker"]["port"]


async def test_a_stream_longer_than_the_idle_time_is_never_cut(hub_factory: HubFactory):
    hub = hub_factory(
        [fake_model("idle", jit_enabled=True, default=True, auto_unload_minutes=0.02)]
    )  # 1.2 s
    await hub.wait_for("idle", lambda m: m["process_state"] == "running")
    async with openai.AsyncOpenAI(base_url=hub.url + "/v1", api_key="x") as client:
        stream = await client.chat.completions.create(
            model="idle",
            messages=[{"role": "user", "content": "x"}],
            stream=True,
            extra_body={"fake_chunks": 15, "fake_chunk_delay": 0.2},  # 3 s
        )
        pieces = [c.choices[0].delta.content async for c in stream if c.choices[0].delta.content]
    assert len(pieces) == 15
    await hub.wait_for("idle", lambda m: m["memory_state"] == "unloaded", timeout=5)


async def test_group_cap_evicts_the_least_recently_used_idle_model(hub_factory: HubFactory):
    models = [fake_model(n, jit_enabled=True, default=True, group="g") for n in "abc"]
    hub = hub_factory(models, groups=[{"name": "g", "max_loaded": 2}])
    for name in "abc":
        await hub.wait_for(name, lambda m: m["process_state"] == "running")
    assert (await post_json(hub, chat("a")))[0] == 200
    assert (await post_json(hub, chat("b")))[0] == 200
    assert (await post_json(hub, chat("a")))[0] == 200  # b is now the least recently used
    assert (await post_json(hub, chat("c")))[0] == 200
    states = {m["id"]: m["metadata"]["memory_state"] for m in (await hub.status())["models"]}
    assert states == {"a": "loaded", "b": "unloaded", "c": "loaded"}
    assert (await hub.status())["counts"]["loaded"] == 2


async def test_busy_model_is_not_evicted_and_the_wait_ends_in_429(hub_factory: HubFactory):
    # b's queue_timeout bounds both its wait for the slot (it must end while a is still
    # busy: a's request outlasts it by 3 s) and, at the end, evicting a and spawning b's
    # worker (which takes over 1 s on a loaded 2-core machine): 3 s of margin each way.
    queue_timeout = 3
    models = [
        fake_model("a", jit_enabled=True, default=True, group="g"),
        fake_model("b", jit_enabled=True, default=True, group="g", queue_timeout=queue_timeout),
    ]
    hub = hub_factory(models, groups=[{"name": "g", "max_loaded": 1}])
    await hub.wait_for("b", lambda m: m["process_state"] == "running")
    busy_for = 2 * queue_timeout
    long_stream = asyncio.create_task(post_json(hub, chat("a", stream=False, fake_delay=busy_for)))
    await hub.wait_for("a", lambda m: m["in_flight"] == 1)
    status, body = await post_json(hub, chat("b"))
    assert status == 429
    assert body["error"]["type"] == "rate_limit_error"
    assert "'g'" in body["error"]["message"] and "a" in body["error"]["message"]
    assert (await long_stream)[0] == 200
    # Once a is idle, b gets the slot.
    status, body = await post_json(hub, chat("b"))
    assert status == 200, (body, hub.output())
    assert (await hub.model("a"))["memory_state"] == "unloaded"


async def test_a_load_waits_for_a_busy_model_to_become_idle(hub_factory: HubFactory):
    models = [
        fake_model("a", jit_enabled=True, default=True, group="g"),
        fake_model("b", jit_enabled=True, default=True, group="g", queue_timeout=10),
    ]
    hub = hub_factory(models, groups=[{"name": "g", "max_loaded": 1}])
    await hub.wait_for("b", lambda m: m["process_state"] == "running")
    busy = asyncio.create_task(post_json(hub, chat("a", fake_delay=1.5)))
    await hub.wait_for("a", lambda m: m["in_flight"] == 1)
    status, _ = await post_json(hub, chat("b"))
    assert status == 200
    assert (await busy)[0] == 200


async def test_racing_loads_never_exceed_the_cap(hub_factory: HubFactory):
    models = [
        fake_model(n, jit_enabled=True, default=True, group="g", env={"FAKE_START_DELAY": "0.5"})
        for n in "abc"
    ]
    hub = hub_factory(models, groups=[{"name": "g", "max_loaded": 1}])
    for name in "abc":
        await hub.wait_for(name, lambda m: m["process_state"] == "running")
    peak = 0
    stop = asyncio.Event()

    async def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            status = await hub.status()
            holding = [
                m
                for m in status["models"]
                if m["metadata"]["memory_state"] in ("loading", "loaded", "unloading")
            ]
            peak = max(peak, len(holding))
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    results = await asyncio.gather(*(post_json(hub, chat(n)) for n in "abcabc"))
    stop.set()
    await watcher
    assert [s for s, _ in results] == [200] * 6
    assert peak == 1


async def test_killed_worker_is_noticed_within_a_second_and_reloaded(hub_factory: HubFactory):
    hub = hub_factory([fake_model("a", default=True), fake_model("b", default=True)])
    a = await hub.wait_for("a", lambda m: m["memory_state"] == "loaded")
    b = await hub.wait_for("b", lambda m: m["memory_state"] == "loaded")
    os.kill(a["pid"], signal.SIGKILL)
    t0 = time.monotonic()
    meta = await hub.wait_for("a", lambda m: m["memory_state"] == "unloaded", timeout=1.0)
    assert time.monotonic() - t0 < 1.0
    assert meta["exit_code"] == -9 and "exited unexpectedly" in meta["memory_last_error"]
    assert (await hub.model("b"))["pid"] == b["pid"]  # other models untouched
    status, body = await post_json(hub, chat("a"))
    assert status == 200 and body["fake_worker"]["pid"] != a["pid"]


async def test_worker_crash_mid_stream_ends_the_stream_with_an_error(hub_factory: HubFactory):
    hub = hub_factory([fake_model("a", default=True)])
    await hub.wait_for("a", lambda m: m["memory_state"] == "loaded")
    received = []
    async with openai.AsyncOpenAI(base_url=hub.url + "/v1", api_key="x", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="a",
            messages=[{"role": "user", "content": "x"}],
            stream=True,
            extra_body={"fake_chunks": 10, "fake_crash_after": 3},
        )
        # The hub sends an SSE error event, which the openai client raises as APIError.
        with pytest.raises(openai.APIError, match="failed mid-response"):
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    received.append(chunk.choices[0].delta.content)
    assert len(received) == 3
    await hub.wait_for("a", lambda m: m["memory_state"] == "unloaded", timeout=1.0)


async def test_three_failed_loads_mark_the_model_failed(hub_factory: HubFactory):
    hub = hub_factory(
        [fake_model("bad", jit_enabled=True, default=True, env={"FAKE_EXIT_AT_START": "1"})]
    )
    await hub.wait_for("bad", lambda m: m["process_state"] == "running")
    for attempt in range(3):
        status, body = await post_json(hub, chat("bad"))
        assert status == 503 and "failed to load" in body["error"]["message"], attempt
    meta = await hub.model("bad")
    assert meta["process_state"] == "failed" and meta["exit_code"] == 1
    status, body = await post_json(hub, chat("bad"))
    assert status == 503 and "start-model bad" in body["error"]["message"]
    assert (await hub.model("bad"))["failed_loads"] == 3  # no fourth attempt


async def test_a_restarted_hub_loads_without_waiting_for_launch_help(hub_factory: HubFactory):
    """The next hub reuses the stored `launch --help`; its background re-read is niced
    and ends with the hub."""
    hub = hub_factory([fake_model("m", jit_enabled=True, default=True)])
    status, _ = await post_json(hub, chat("m"))
    assert status == 200
    store = hub.log_path / "launch_help_cache.json"
    assert store.exists()
    assert hub.terminate() == 0

    # From now on reading the help takes a minute: a load that waited for it would time out.
    hub.env["FAKE_HELP_DELAY"] = "60"
    hub.start()
    await hub.wait_for("m", lambda m: m["process_state"] == "running")
    async with asyncio.timeout(20):
        status, body = await post_json(hub, chat("m"))
    assert status == 200, body
    helpers = [p for p in hub.leftovers() if "--help" in p.cmdline()]
    assert len(helpers) == 1 and helpers[0].nice() >= 10  # the re-read, in the background
    assert hub.terminate() == 0
    assert hub.leftovers() == []


async def test_reload_replacing_a_busy_model_keeps_the_group_cap(hub_factory: HubFactory):
    """A model a reload removes still holds its group slot until its worker is gone."""
    group = [{"name": "g", "max_loaded": 1}]
    hub = hub_factory([fake_model("a", default=True, group="g")], groups=group)
    a = await hub.wait_for("a", lambda m: m["memory_state"] == "loaded")
    busy = asyncio.create_task(post_json(hub, chat("a", fake_delay=2.5)))
    await hub.wait_for("a", lambda m: m["in_flight"] == 1)

    hub.write_config([fake_model("b", default=True, group="g")], groups=group)
    status, body = await hub.post("/hub/reload")
    assert status == 200 and body["started"] == ["b"] and body["stopped"] == ["a"]
    # While a's request runs, b must not get a worker: the cap is 1.
    while not busy.done():
        b = await hub.model("b")
        if b["pid"] is not None:
            assert not psutil.pid_exists(a["pid"]), "a and b were loaded at once"
        await asyncio.sleep(0.05)
    assert (await busy)[0] == 200  # a's request finished normally
    b = await hub.wait_for("b", lambda m: m["memory_state"] == "loaded")
    assert not psutil.pid_exists(a["pid"])
