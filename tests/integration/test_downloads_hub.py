"""Downloads through a real hub: pull, status, JIT download-then-load, offline refusal.

The fake Hugging Face endpoint runs in the test's loop; the hub (a
subprocess) reaches it through `HF_ENDPOINT`, and models are served by the
fake worker once their snapshot is on disk.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from mlx_openai_server_hub import hf_cache
from tests.conftest import HubFactory, fake_model
from tests.fake_hf import FakeHub, make_repo, start

REPO = "fake-org/hub-model"


@pytest.fixture
async def fake_hf() -> AsyncIterator[FakeHub]:
    hub = FakeHub(bytes_per_s=1_500_000)
    hub.add(make_repo(REPO, n_weights=2, weight_size=1_500_000))
    runner, _ = await start(hub)
    try:
        yield hub
    finally:
        await runner.cleanup()


def _env(fake: FakeHub, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "HF_ENDPOINT": fake.endpoint,
        "HF_HUB_CACHE": str(tmp_path / "hf-cache"),
        "HF_TOKEN_PATH": str(tmp_path / "no-token"),
        "HF_HUB_OFFLINE": "0",
        **extra,
    }


def _total(fake: FakeHub) -> int:
    return sum(len(d) for d in fake.repos[REPO].files.values())


async def _watch_download(hub: Any, name: str, until: str, timeout: float = 30) -> list[dict]:
    """Status samples of a model's download until its state is `until`."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        meta = await hub.model(name)
        if meta.get("download"):
            seen.append(meta["download"])
            if meta["download"]["state"] in (until, "failed"):
                return seen
        await asyncio.sleep(0.1)
    pytest.fail(f"download of {name} never reached {until}: {seen[-1:]}")


async def test_pull_endpoint_reports_progress_in_status(
    hub_factory: HubFactory, fake_hf: FakeHub, tmp_path: Path
) -> None:
    hub = hub_factory([fake_model("tiny", model_path=REPO)], env=_env(fake_hf, tmp_path))
    meta = await hub.model("tiny")
    assert meta["downloaded"] is False and meta["download"] is None
    code, body = await hub.post("/hub/models/tiny/pull")
    assert code == 200, body
    assert body["download"]["state"] in ("queued", "downloading")
    # A second caller joins the same download.
    code, _ = await hub.post("/hub/models/tiny/pull")
    assert code == 200
    seen = await _watch_download(hub, "tiny", "done")
    assert seen[-1]["state"] == "done", seen[-1]
    assert seen[-1]["bytes_done"] == seen[-1]["bytes_total"] == _total(fake_hf)
    rising = [s["bytes_done"] for s in seen if s["state"] == "downloading"]
    assert len(set(rising)) >= 2 and rising == sorted(rising)
    assert any(s["rate_bytes_per_s"] for s in seen if s["state"] == "downloading")
    assert (await hub.model("tiny"))["downloaded"] is True
    assert all(n == 1 for n in fake_hf.gets.values()), fake_hf.gets


async def test_jit_request_downloads_then_loads(
    hub_factory: HubFactory, fake_hf: FakeHub, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    hub = hub_factory(
        [fake_model("tiny", model_path=REPO, jit_enabled=True, default=True, startup_timeout=5)],
        env=_env(fake_hf, tmp_path),
    )
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}

    async def ask() -> int:
        async with http.post(hub.url + "/v1/chat/completions", json=body, headers=hub.auth) as r:
            await r.read()
            return r.status

    # Two requests, one download; the download (~2 s) does not eat startup_timeout.
    requests = [asyncio.ensure_future(ask()) for _ in range(2)]
    seen = await _watch_download(hub, "tiny", "done")
    assert [await r for r in requests] == [200, 200]
    assert seen[-1]["state"] == "done"
    assert all(n == 1 for n in fake_hf.gets.values()), fake_hf.gets
    assert hf_cache.snapshot_complete(REPO, env={"HF_HUB_CACHE": str(tmp_path / "hf-cache")})


async def test_offline_missing_snapshot_is_refused_at_once(
    hub_factory: HubFactory, fake_hf: FakeHub, tmp_path: Path
) -> None:
    hub = hub_factory(
        [fake_model("tiny", model_path=REPO)], env=_env(fake_hf, tmp_path, HF_HUB_OFFLINE="1")
    )
    started = time.monotonic()
    code, body = await hub.post("/hub/models/tiny/pull")
    assert code == 503
    message = body["error"]["message"]
    assert "offline" in message and REPO in message and "pull tiny" in message
    code, body = await hub.post("/hub/models/tiny/start")
    assert code >= 400 and "offline" in body["error"]["message"]
    assert time.monotonic() - started < 5
    meta = await hub.model("tiny")
    assert meta["pid"] is None, "no worker was started to fail"
    assert fake_hf.requests == []


async def test_pull_of_missing_repo_is_a_clear_error(
    hub_factory: HubFactory, fake_hf: FakeHub, tmp_path: Path
) -> None:
    hub = hub_factory(
        [fake_model("ghost", model_path="fake-org/ghost")], env=_env(fake_hf, tmp_path)
    )
    code, body = await hub.post("/hub/models/ghost/pull?wait=1")
    assert code == 404 and "not found" in body["error"]["message"]
    meta = await hub.model("ghost")
    assert meta["download"]["state"] == "failed"
    assert meta["download"]["error_kind"] == "not_found"


async def test_a_stream_waiting_for_the_download_hears_its_progress(
    hub_factory: HubFactory, fake_hf: FakeHub, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    fake_hf.bytes_per_s = 500_000  # ~6 s: a few keep-alive lines
    hub = hub_factory(
        [fake_model("tiny", model_path=REPO, jit_enabled=True, default=True)],
        env=_env(fake_hf, tmp_path),
    )
    await hub.wait_for("tiny", lambda m: m["process_state"] == "running")
    body = {"model": "tiny", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    comments = []
    async with http.post(hub.url + "/v1/chat/completions", json=body, headers=hub.auth) as r:
        assert r.status == 200
        async for line in r.content:
            if line.startswith(b":"):
                comments.append(line.decode().strip())
    words = [c.split() for c in comments]
    shares = [int(w[3][:-1]) for w in words if w[1] == "downloading" and w[3].endswith("%")]
    assert shares and shares == sorted(shares) and all(0 <= s <= 100 for s in shares), comments
    assert fake_hf.gets and all(n == 1 for n in fake_hf.gets.values())


async def test_a_download_runs_in_a_child_that_dies_with_the_hub(
    hub_factory: HubFactory, fake_hf: FakeHub, tmp_path: Path
) -> None:
    fake_hf.gate = asyncio.Event()  # file bodies held: the download stays running
    hub = hub_factory([fake_model("tiny", model_path=REPO)], env=_env(fake_hf, tmp_path))
    code, _ = await hub.post("/hub/models/tiny/pull")
    assert code == 200
    await hub.wait_for("tiny", lambda m: (m["download"] or {}).get("state") == "downloading")
    assert hub.proc is not None
    children = psutil.Process(hub.proc.pid).children(recursive=True)
    downloaders = [p for p in children if "download_process" in " ".join(p.cmdline())]
    assert len(downloaders) == 1, [p.cmdline() for p in children]
    os.kill(hub.proc.pid, signal.SIGKILL)  # no shutdown code runs
    _, alive = psutil.wait_procs(downloaders, timeout=5)
    fake_hf.gate.set()
    assert alive == [], "the download child outlived the hub"
