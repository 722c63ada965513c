"""The real hub against fake workers: routing, control API, auth, workers' lives."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time

import aiohttp
import openai
import psutil
import pytest

from tests.conftest import TEST_TOKEN, HubFactory, fake_model


def openai_client(hub, **kwargs) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=hub.url + "/v1", api_key="unused", **kwargs)


def port_listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_default_model_serves_openai_client_by_name_and_path(hub_factory: HubFactory):
    hub = hub_factory([fake_model("alpha", default=True, env={"FAKE_STRICT_MODEL": "1"})])
    meta = await hub.wait_for("alpha", lambda m: m["memory_state"] == "loaded")
    assert meta["process_state"] == "running"
    assert psutil.pid_exists(meta["pid"]) and port_listening(meta["port"])

    async with openai_client(hub) as client:
        await _chat_by_name_path_and_stream(client)


async def _chat_by_name_path_and_stream(client: openai.AsyncOpenAI) -> None:
    for model in ("alpha", "/models/alpha"):
        reply = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hello"}]
        )
        # The strict worker only accepts its model path: the hub rewrote the field.
        assert reply.choices[0].message.content == "fake:/models/alpha:hello"

    stream = await client.chat.completions.create(
        model="alpha", messages=[{"role": "user", "content": "x"}], stream=True
    )
    pieces = [c.choices[0].delta.content async for c in stream if c.choices[0].delta.content]
    assert pieces == [f"tok{i} " for i in range(5)]

    models = await client.models.list()
    assert [m.id for m in models.data] == ["alpha"]


async def test_every_openai_endpoint_is_routed(hub_factory: HubFactory, http):
    hub = hub_factory([fake_model("alpha", default=True, env={"FAKE_STRICT_MODEL": "1"})])
    await hub.wait_for("alpha", lambda m: m["memory_state"] == "loaded")
    async with openai_client(hub) as client:
        await _call_every_endpoint(client)
    async with http.get(hub.url + "/v1/queue/stats", params={"model": "alpha"}) as r:
        assert r.status == 200
        assert "queue_stats" in await r.json()


async def _call_every_endpoint(client: openai.AsyncOpenAI) -> None:
    emb = await client.embeddings.create(model="alpha", input=["a", "b"])
    assert len(emb.data) == 2
    done = await client.completions.create(model="alpha", prompt="hi")
    assert done.choices
    resp = await client.responses.create(model="alpha", input="hi")
    assert resp.id
    img = await client.images.generate(model="alpha", prompt="cat")
    assert img.data[0].b64_json
    audio = await client.audio.transcriptions.create(
        model="alpha", file=("clip.wav", b"RIFF" + b"\0" * 100, "audio/wav")
    )
    assert "clip.wav" in audio.text and "/models/alpha" in audio.text
    edit = await client.images.edit(
        model="alpha", image=("in.png", b"\x89PNG" + b"\0" * 10, "image/png"), prompt="x"
    )
    assert edit.data


async def test_model_errors_use_the_openai_envelope(hub_factory: HubFactory, http):
    hub = hub_factory([fake_model("alpha"), fake_model("beta")])
    url = hub.url + "/v1/chat/completions"
    async with http.post(url, json={"messages": []}) as r:
        body = await r.json()
        assert r.status == 400
        assert body["error"]["message"].startswith("Model selection is required")
        assert body["error"]["type"] == "invalid_request_error"
    async with http.post(url, json={"model": "nope"}) as r:
        body = await r.json()
        assert r.status == 404
        assert "alpha, beta" in body["error"]["message"]
    async with http.post(url, json={"model": "alpha"}) as r:
        body = await r.json()
        assert r.status == 503
        assert "start-model alpha" in body["error"]["message"]
    async with http.post(url, data=b"{not json") as r:
        assert r.status == 400
        error = (await r.json())["error"]
        assert set(error) == {"message", "type", "param", "code", "request_id"}
        assert error["request_id"] == r.headers["X-Request-ID"]


async def test_control_api_requires_the_token(hub_factory: HubFactory, http):
    hub = hub_factory([fake_model("alpha")])
    async with http.get(hub.url + "/health") as r:
        assert await r.json() == {"status": "ok", "model_id": None, "model_status": "controller"}
    async with http.get(hub.url + "/hub/status") as r:
        assert r.status == 401
        assert (await r.json())["error"]["type"] == "authentication_error"
    async with http.get(hub.url + "/hub/status", headers={"Authorization": "Bearer wrong"}) as r:
        assert r.status == 401
    async with http.post(hub.url + "/hub/models/alpha/start") as r:
        assert r.status == 401
    assert (await hub.model("alpha"))["process_state"] == "stopped"


async def test_api_keys_protect_v1(hub_factory: HubFactory, http):
    hub = hub_factory([fake_model("alpha", default=True)], api_keys=["sk-one", "sk-two"])
    await hub.wait_for("alpha", lambda m: m["memory_state"] == "loaded")
    payload = {"model": "alpha", "messages": [{"role": "user", "content": "x"}]}
    async with http.post(hub.url + "/v1/chat/completions", json=payload) as r:
        assert r.status == 401
    headers = {"Authorization": "Bearer sk-two"}
    async with http.post(hub.url + "/v1/chat/completions", json=payload, headers=headers) as r:
        assert r.status == 200
    # The control token is not an API key, and an API key is not the control token.
    async with http.get(hub.url + "/hub/status", headers=headers) as r:
        assert r.status == 401


async def test_start_stop_load_unload_over_http(hub_factory: HubFactory):
    hub = hub_factory([fake_model("alpha")])
    status, body = await hub.post("/hub/models/alpha/start")
    assert status == 200, body
    assert body == {
        "status": "ok",
        "action": "start",
        "model": "alpha",
        "message": "Model 'alpha' start requested",
    }
    meta = await hub.model("alpha")
    assert (meta["process_state"], meta["memory_state"]) == ("running", "loaded")
    first_pid, port = meta["pid"], meta["port"]

    status, body = await hub.post("/hub/models/alpha/unload")
    assert status == 200 and body["message"] == "Model 'alpha' memory unload requested"
    meta = await hub.model("alpha")
    assert (meta["process_state"], meta["memory_state"], meta["pid"]) == (
        "running",
        "unloaded",
        None,
    )
    assert not psutil.pid_exists(first_pid)
    assert meta["port"] == port  # a started model keeps its port

    status, _ = await hub.post("/hub/models/alpha/vram/load")
    assert status == 200
    meta = await hub.model("alpha")
    assert meta["memory_state"] == "loaded" and meta["pid"] != first_pid

    status, _ = await hub.post("/hub/models/alpha/stop")
    assert status == 200
    meta = await hub.model("alpha")
    assert (meta["process_state"], meta["pid"], meta["port"]) == ("stopped", None, None)
    assert not port_listening(port)

    status, body = await hub.post("/hub/models/alpha/load")
    assert status == 400 and "not started" in body["error"]["message"]
    status, body = await hub.post("/hub/models/ghost/start")
    assert status == 404 and "ghost" in body["error"]["message"]


async def test_options_the_worker_lacks_become_warnings(hub_factory: HubFactory):
    # The fake worker rejects unknown flags like click does: the hub must not pass them.
    hub = hub_factory([fake_model("alpha", default=True, max_concurrency=2, context_length=64)])
    meta = await hub.wait_for("alpha", lambda m: m["memory_state"] == "loaded")
    status = await hub.status()
    assert any("max_concurrency" in w for w in status["warnings"])
    cmdline = psutil.Process(meta["pid"]).cmdline()
    assert "--context-length" in cmdline and "--max-concurrency" not in cmdline
    assert "--jit" not in cmdline and "127.0.0.1" in cmdline


async def test_jit_branch_worker_gets_its_own_flags(hub_factory: HubFactory):
    model = fake_model("alpha", default=True, max_concurrency=2, env={"FAKE_WORKER_FLAVOR": "jit"})
    hub = hub_factory([model])
    meta = await hub.wait_for("alpha", lambda m: m["memory_state"] == "loaded")
    cmdline = psutil.Process(meta["pid"]).cmdline()
    assert cmdline[cmdline.index("--max-concurrency") + 1] == "2"
    assert "--jit" not in cmdline


async def test_worker_that_fails_at_start_reports_exit_code_and_output(hub_factory: HubFactory):
    hub = hub_factory([fake_model("alpha", env={"FAKE_EXIT_AT_START": "3"})])
    status, body = await hub.post("/hub/models/alpha/start")
    assert status == 503
    assert "exited with code 3" in body["error"]["message"]
    assert "failed to load model /models/alpha" in body["error"]["message"]
    meta = await hub.model("alpha")
    assert meta["process_state"] == "failed" and meta["exit_code"] == 3
    assert "failed to load model" in meta["memory_last_error"]


async def test_status_answers_while_a_model_loads(hub_factory: HubFactory):
    hub = hub_factory([fake_model("slow", env={"FAKE_START_DELAY": "3"})])
    start = asyncio.create_task(hub.post("/hub/models/slow/start"))
    meta = await hub.wait_for("slow", lambda m: m["memory_state"] == "loading")
    assert meta["process_state"] == "starting"
    t0 = time.monotonic()
    await hub.status()
    assert time.monotonic() - t0 < 0.5
    status, _ = await start
    assert status == 200
    assert (await hub.model("slow"))["process_state"] == "running"


async def test_load_survives_a_client_that_hangs_up(hub_factory: HubFactory):
    hub = hub_factory([fake_model("slow", env={"FAKE_START_DELAY": "2"})])
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await hub.post("/hub/models/slow/start")
    meta = await hub.wait_for("slow", lambda m: m["memory_state"] == "loaded")
    assert meta["process_state"] == "running"


async def test_worker_ignoring_sigterm_is_killed_after_grace(hub_factory: HubFactory):
    hub = hub_factory(
        [
            fake_model(
                "stubborn", default=True, env={"FAKE_IGNORE_SIGTERM": "1", "FAKE_SPAWN_CHILD": "1"}
            )
        ]
    )
    meta = await hub.wait_for("stubborn", lambda m: m["memory_state"] == "loaded")
    group = [p for p in psutil.process_iter() if _pgid(p.pid) == meta["pid"]]
    assert len(group) >= 2  # the worker and its child
    t0 = time.monotonic()
    status, _ = await hub.post("/hub/models/stubborn/stop")
    elapsed = time.monotonic() - t0
    assert status == 200
    assert 9.5 <= elapsed <= 11.5
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in group)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


async def test_reload_reconciles_and_refuses_a_bad_file(hub_factory: HubFactory):
    hub = hub_factory([fake_model("keep", default=True), fake_model("drop", default=True)])
    keep = await hub.wait_for("keep", lambda m: m["memory_state"] == "loaded")
    drop = await hub.wait_for("drop", lambda m: m["memory_state"] == "loaded")

    hub.config_path.write_text("models: [\n")  # broken YAML
    status, body = await hub.post("/hub/reload")
    assert status == 400 and "Failed to parse hub config" in body["error"]["message"]
    assert (await hub.model("drop"))["pid"] == drop["pid"]

    hub.write_config([fake_model("keep", default=True), fake_model("new", default=True)])
    status, body = await hub.post("/hub/reload")
    assert status == 200
    assert (body["started"], body["stopped"], body["unchanged"]) == (["new"], ["drop"], ["keep"])
    await hub.wait_for("new", lambda m: m["memory_state"] == "loaded")
    assert (await hub.model("keep"))["pid"] == keep["pid"]  # untouched
    status_doc = await hub.status()
    assert [m["id"] for m in status_doc["models"]] == ["keep", "new"]
    deadline = time.monotonic() + 5
    while psutil.pid_exists(drop["pid"]) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not psutil.pid_exists(drop["pid"])

    # Changed worker options restart a loaded model.
    hub.write_config(
        [fake_model("keep", default=True, context_length=128), fake_model("new", default=True)]
    )
    status, body = await hub.post("/hub/reload")
    assert body["restarted"] == ["keep"]
    meta = await hub.wait_for(
        "keep", lambda m: m["memory_state"] == "loaded" and m["pid"] not in (None, keep["pid"])
    )
    assert "--context-length" in psutil.Process(meta["pid"]).cmdline()


async def test_shutdown_endpoint_stops_everything(hub_factory: HubFactory):
    hub = hub_factory(
        [fake_model("a", default=True, env={"FAKE_SPAWN_CHILD": "1"}), fake_model("b")]
    )
    await hub.wait_for("a", lambda m: m["memory_state"] == "loaded")
    runtime = hub.log_path / "hub_runtime.json"
    record = json.loads(runtime.read_text())
    assert record["pid"] == hub.proc.pid and record["port"] == hub.port
    status, body = await hub.post("/hub/shutdown")
    assert status == 200 and body["message"] == "Shutdown requested"
    assert hub.proc.wait(20) == 0
    assert not runtime.exists()
    assert hub.leftovers() == []


async def test_sigterm_stops_every_worker(hub_factory: HubFactory):
    hub = hub_factory([fake_model("a", default=True), fake_model("b", default=True)])
    await hub.wait_for("a", lambda m: m["memory_state"] == "loaded")
    await hub.wait_for("b", lambda m: m["memory_state"] == "loaded")
    assert hub.terminate() == 0
    assert hub.leftovers() == []


async def test_next_start_ends_workers_of_a_killed_hub(hub_factory: HubFactory):
    hub = hub_factory([fake_model("a", default=True, env={"FAKE_SPAWN_CHILD": "1"})])
    meta = await hub.wait_for("a", lambda m: m["memory_state"] == "loaded")
    group_before = [p for p in psutil.process_iter() if _pgid(p.pid) == meta["pid"]]
    hub.proc.send_signal(signal.SIGKILL)
    hub.proc.wait()
    hub.start()
    await hub.wait_for("a", lambda m: m["memory_state"] == "loaded")
    await asyncio.sleep(0.2)
    alive = [p for p in group_before if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == []
    assert "left behind by a previous hub run" in (hub.log_path / "hub.log").read_text() or (
        not group_before
    )


async def test_oversized_upload_is_refused(hub_factory: HubFactory, http):
    hub = hub_factory([fake_model("a", default=True)])
    body = b"x" * (100 * 1024 * 1024 + 10)
    async with http.post(hub.url + "/v1/chat/completions", data=body) as r:
        assert r.status == 413
        assert (await r.json())["error"]["code"] == "413"
    async with http.get(hub.url + "/health") as r:
        assert r.status == 200


async def test_client_disconnect_frees_the_model(hub_factory: HubFactory):
    hub = hub_factory([fake_model("a", default=True)])
    await hub.wait_for("a", lambda m: m["memory_state"] == "loaded")
    payload = {"model": "a", "stream": True, "fake_chunks": 100, "fake_chunk_delay": 0.1}
    async with aiohttp.ClientSession() as session:
        resp = await session.post(hub.url + "/v1/chat/completions", json=payload)
        await resp.content.readline()
        assert (await hub.model("a"))["in_flight"] == 1
        resp.close()
    meta = await hub.wait_for("a", lambda m: m["in_flight"] == 0, timeout=3)
    assert meta["last_request_at"] is not None


def test_token_file_is_created_private(hub_factory: HubFactory):
    env = {"MLX_HUB_TOKEN": ""}
    hub = hub_factory([fake_model("a")], env=env)
    token_file = hub.config_path.parent / "hub.token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert len(token_file.read_text().strip()) >= 32
    assert TEST_TOKEN not in token_file.read_text()


async def test_allowed_hosts_adds_names_the_hub_answers_to(hub_factory: HubFactory, http):
    hub = hub_factory([fake_model("a")], allowed_hosts=["Studio.LAN"])
    async with http.get(hub.url + "/v1/models", headers={"Host": "studio.lan:8000"}) as r:
        assert r.status == 200
    async with http.get(hub.url + "/v1/models", headers={"Host": "other.lan"}) as r:
        assert r.status == 403
        assert "other.lan" in (await r.json())["error"]["message"]


async def test_listings_carry_the_reference_fields(hub_factory: HubFactory, http):
    """/v1/models has the reference's metadata; unloaded queue stats say "status": "ok";
    `counts.started` counts running models only; a per-model enable_status_page warns."""
    hub = hub_factory(
        [
            fake_model("alpha", default=True, context_length=4096),
            fake_model("jit", jit_enabled=True, enable_status_page=False),
            fake_model("slow", env={"FAKE_START_DELAY": "30"}),
        ]
    )
    assert any("enable_status_page" in w for w in (await hub.status())["warnings"])
    await hub.wait_for("alpha", lambda m: m["memory_state"] == "loaded")
    await hub.post("/hub/models/jit/start")
    starting = asyncio.create_task(hub.post("/hub/models/slow/start"))
    await hub.wait_for("slow", lambda m: m["process_state"] == "starting")
    assert (await hub.status())["counts"] == {"registered": 3, "started": 2, "loaded": 1}
    starting.cancel()

    async with http.get(hub.url + "/v1/models") as r:
        listing = {m["id"]: m for m in (await r.json())["data"]}
    alpha, jit = listing["alpha"]["metadata"], listing["jit"]["metadata"]
    assert alpha["vram_loaded"] is True and isinstance(alpha["vram_last_load_ts"], int)
    assert alpha["context_length"] == 4096 and alpha["status"] == "loaded"
    assert alpha["active_requests"] == 0 and alpha["vram_load_error"] is None
    assert jit["vram_loaded"] is False and jit["vram_last_load_ts"] is None
    assert jit["context_length"] == 32768  # the reference's default
    assert set(alpha) >= {"vram_last_unload_ts", "vram_last_request_ts", "model_path"}

    async with http.get(hub.url + "/v1/queue/stats", params={"model": "jit"}) as r:
        body = await r.json()
    assert body["status"] == "ok" and body["model"] == "jit" and "worker" not in body
    reference_fields = {"running": 0, "queued": 0, "loaded": False, "memory_state": "unloaded"}
    assert body["queue_stats"].items() >= reference_fields.items()
