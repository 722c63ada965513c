"""Reloads while a model is busy: a changed model restarts in place; a model removed
and added back runs as a second copy of the same name while the first one retires.

Either way, the model that serves keeps its port lease (no other model gets that
port, even while it is unloaded) and hub_runtime.json lists every live worker, so
the next start could end them all if the hub were killed.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import psutil

from tests.conftest import Hub, HubFactory, fake_model

# A stream of 24 chunks 0.25 s apart: the copy serving it stays busy for 6 s.
SLOW_STREAM = {"stream": True, "fake_chunks": 24, "fake_chunk_delay": 0.25}


async def _slow_stream(hub: Hub, model: str) -> str:
    """Stream a slow chat completion through the hub; the whole body."""
    payload = {"model": model, "messages": [{"role": "user", "content": "hi"}], **SLOW_STREAM}
    async with (
        aiohttp.ClientSession() as session,
        session.post(hub.url + "/v1/chat/completions", json=payload) as resp,
    ):
        assert resp.status == 200
        return await resp.text()


def _recorded_pids(hub: Hub) -> set[int]:
    """The worker pids hub_runtime.json records now."""
    runtime = json.loads((hub.log_path / "hub_runtime.json").read_text())
    return {record["pid"] for record in runtime["workers"].values()}


async def _wait_recorded(hub: Hub, pids: set[int], timeout: float = 5.0) -> None:
    """Wait until hub_runtime.json records exactly `pids` (it is written off the loop)."""
    deadline = time.monotonic() + timeout
    while (recorded := _recorded_pids(hub)) != pids:
        assert time.monotonic() < deadline, f"hub_runtime.json has {recorded}, not {pids}"
        await asyncio.sleep(0.05)


async def _wait_gone(pid: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, f"worker {pid} still runs"
        await asyncio.sleep(0.05)


async def _reload(hub: Hub, models: list[dict[str, Any]]) -> dict[str, list[str]]:
    hub.write_config(models)
    status, body = await hub.post("/hub/reload")
    assert status == 200, body
    return dict(body)


async def _assert_port_reserved(hub: Hub, a: dict[str, Any], a_entry: dict[str, Any]) -> None:
    """With `a` unloaded but started, a model `b` asking for a's port is refused."""
    assert (await hub.post("/hub/models/a/unload"))[0] == 200
    await hub.wait_for("a", lambda m: m["memory_state"] == "unloaded")
    reloaded = await _reload(hub, [a_entry, fake_model("b", port=a["port"])])
    assert "a" in reloaded["unchanged"] and not reloaded["restarted"]
    status, body = await hub.post("/hub/models/b/start")
    assert status == 409, f"b was given a's port {a['port']}: {status} {body}"
    assert "conflicts with another model" in body["error"]["message"]


async def test_a_model_added_back_while_its_old_copy_retires(hub_factory: HubFactory):
    hub = hub_factory([fake_model("a", default=True)])
    old = await hub.wait_for("a", lambda m: m["memory_state"] == "loaded")
    stream = asyncio.create_task(_slow_stream(hub, "a"))
    await hub.wait_for("a", lambda m: m["in_flight"] == 1)

    assert (await _reload(hub, [fake_model("b")]))["stopped"] == ["a"]
    changed = fake_model("a", default=True, env={"FAKE_STREAM_CHUNKS": "3"})
    assert (await _reload(hub, [changed, fake_model("b")]))["started"] == ["a"]
    new = await hub.wait_for(
        "a", lambda m: m["memory_state"] == "loaded" and m["pid"] != old["pid"]
    )
    assert new["port"] != old["port"]  # the old copy still holds its port
    assert not stream.done(), "the old copy finished too soon for this test"
    # Both copies run now: a hub killed at this moment must leave neither behind.
    await _wait_recorded(hub, {old["pid"], new["pid"]})

    assert "[DONE]" in await stream  # the old copy finished its request
    await _wait_gone(old["pid"])
    await _wait_recorded(hub, {new["pid"]})
    assert (await hub.model("a"))["port"] == new["port"]
    await _assert_port_reserved(hub, new, changed)


async def test_a_changed_model_restarts_in_place_once_idle(hub_factory: HubFactory):
    hub = hub_factory([fake_model("a", default=True)])
    old = await hub.wait_for("a", lambda m: m["memory_state"] == "loaded")
    stream = asyncio.create_task(_slow_stream(hub, "a"))
    await hub.wait_for("a", lambda m: m["in_flight"] == 1)

    changed = fake_model("a", default=True, env={"FAKE_STREAM_CHUNKS": "3"})
    assert (await _reload(hub, [changed]))["restarted"] == ["a"]
    assert (await hub.model("a"))["pid"] == old["pid"]  # its request is not cut
    assert "[DONE]" in await stream
    new = await hub.wait_for(
        "a", lambda m: m["memory_state"] == "loaded" and m["pid"] != old["pid"]
    )
    assert new["port"] == old["port"]  # one controller: its lease is kept
    await _wait_gone(old["pid"])
    await _wait_recorded(hub, {new["pid"]})
    await _assert_port_reserved(hub, new, changed)
