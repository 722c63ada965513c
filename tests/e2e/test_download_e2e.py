"""A repo id end to end: the stand-in Hugging Face endpoint serves the tiny model's real
files, the hub downloads them into its cache, and the real worker loads them and answers.

The worker runs online against the stand-in (a model's `env` is also what the hub's own
download honours, so `HF_HUB_OFFLINE=1` there would refuse the download); the stand-in's
byte counters prove it loaded from the cache: every file went over the wire once, for the
hub's download.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mlx_openai_server_hub import hf_cache
from tests.conftest import HubFactory
from tests.e2e.conftest import real_model
from tests.e2e.test_real_worker import chat_once, chat_stream, is_state, openai_client
from tests.e2e.worker_support import WORKER_ENV_OVERRIDES, RealWorker
from tests.fake_hf import FakeHub, repo_from_folder, start

REPO = "fake-org/tiny"
LOAD_TIMEOUT_S = 150


@pytest.fixture
async def tiny_hf(tiny_model: Path) -> AsyncIterator[FakeHub]:
    """The stand-in endpoint on 127.0.0.1 serving the tiny model as `REPO`."""
    fake = FakeHub()
    fake.add(repo_from_folder(REPO, tiny_model))
    runner, _ = await start(fake)
    try:
        yield fake
    finally:
        await runner.cleanup()


@pytest.mark.e2e
async def test_repo_id_is_downloaded_then_served_by_the_real_worker(
    hub_factory: HubFactory, tiny_hf: FakeHub, real_worker: RealWorker, tmp_path: Path
) -> None:
    cache = tmp_path / "hf-cache"
    hub_env = {
        "HF_ENDPOINT": tiny_hf.endpoint,
        "HF_HUB_CACHE": str(cache),
        "HF_HUB_OFFLINE": "0",
        "HF_TOKEN_PATH": str(tmp_path / "none"),
    }
    worker_env = {**WORKER_ENV_OVERRIDES, "HF_HUB_OFFLINE": "0"}
    entry = real_model("tiny", Path(REPO), real_worker, model_path=REPO, env=worker_env)
    hub = hub_factory([entry], env=hub_env)
    meta = await hub.model("tiny")
    assert meta["downloaded"] is False and meta["download"] is None

    code, body = await hub.post("/hub/models/tiny/start")
    assert code in (200, 202), body
    downloads: list[dict[str, Any]] = []
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    while not is_state("running", "loaded")(meta := await hub.model("tiny")):
        assert time.monotonic() < deadline, f"never loaded: {meta}\n{hub.output()}"
        assert meta["process_state"] != "failed", f"{meta}\n{hub.output()}"
        if meta.get("download"):
            downloads.append(meta["download"])
        await asyncio.sleep(0.1)

    final = (await hub.model("tiny"))["download"] or downloads[-1]
    total = sum(len(data) for data in tiny_hf.repos[REPO].files.values())
    assert final["state"] == "done", final
    assert final["bytes_done"] == final["bytes_total"] == total
    assert meta["downloaded"] is True
    assert hf_cache.snapshot_complete(REPO, None, env=hub_env)

    async with openai_client(hub) as client:
        await chat_once(client, "tiny")
        await chat_stream(client, "tiny")
    # Each file crossed the wire once, for the hub: the worker read the cache.
    assert dict(tiny_hf.bytes_served) == {
        name: len(data) for name, data in tiny_hf.repos[REPO].files.items()
    }
