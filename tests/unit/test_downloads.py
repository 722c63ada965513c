"""DownloadManager against the fake Hub endpoint, with the real huggingface_hub client."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mlx_openai_server_hub import hf_cache
from mlx_openai_server_hub.download_protocol import DownloadError, DownloadRequest
from mlx_openai_server_hub.downloads import (
    DownloadManager,
    DownloadProgress,
    DownloadState,
    _DownloadChild,
)
from tests.fake_hf import CHUNK, DEFAULT_TOKEN, FakeHub, make_repo, start

REPO = "fake-org/tiny-model"


@pytest.fixture
async def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeHub]:
    """A fake Hub with one repo, and HF_* pointing at it and at a private cache."""
    hub = FakeHub()
    hub.add(make_repo(REPO, n_weights=3, weight_size=300_000))
    runner, endpoint = await start(hub)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-token"))
    try:
        yield hub
    finally:
        await runner.cleanup()


@pytest.fixture
async def manager() -> AsyncIterator[DownloadManager]:
    # Small read chunks let small files show rising progress and the byte-exact resume.
    mgr = DownloadManager(read_chunk_bytes=CHUNK)
    try:
        yield mgr
    finally:
        await mgr.close()


def _total(hub: FakeHub, repo_id: str = REPO) -> int:
    return sum(len(d) for d in hub.repos[repo_id].files.values())


async def test_pull_downloads_snapshot_with_progress(
    fake_hub: FakeHub, manager: DownloadManager
) -> None:
    fake_hub.bytes_per_s = 500_000
    assert manager.downloaded(REPO) is None, "not looked at yet: no disk read on the loop"
    await manager.refresh_on_disk([(REPO, None, None)])
    assert manager.downloaded(REPO) is False
    progress = manager.start(REPO)
    seen: list[int] = []
    rates: list[float] = []
    while progress.state in (DownloadState.QUEUED, DownloadState.DOWNLOADING):
        seen.append(progress.bytes_done)
        rates.append(progress.rate_bytes_per_s or 0.0)
        await asyncio.sleep(0.05)
    assert progress.state is DownloadState.DONE, progress.error
    status = manager.status(REPO)
    assert status is not None
    assert status["bytes_done"] == status["bytes_total"] == _total(fake_hub)
    assert status["files_done"] == status["files_total"] == 6
    assert seen == sorted(seen), "progress never goes back"
    assert len(set(seen)) > 4, "progress rose in steps"
    assert max(rates) > 100_000
    snap = hf_cache.local_snapshot(REPO)
    assert snap is not None and (snap / "config.json").is_file()
    assert hf_cache.snapshot_complete(REPO) is True
    assert manager.downloaded(REPO) is True


async def test_concurrent_callers_share_one_download(
    fake_hub: FakeHub, manager: DownloadManager
) -> None:
    fake_hub.bytes_per_s = 3_000_000
    paths = await asyncio.gather(*(manager.ensure(REPO) for _ in range(4)))
    assert len(set(paths)) == 1
    for name, data in fake_hub.repos[REPO].files.items():
        assert fake_hub.gets[name] == 1, name
        assert fake_hub.bytes_served[name] == len(data)
    # Complete on disk: the next ensure does not touch the network.
    before = len(fake_hub.requests)
    assert await manager.ensure(REPO) == paths[0]
    assert len(fake_hub.requests) == before


async def test_dropped_connection_resumes_without_refetching(
    fake_hub: FakeHub, manager: DownloadManager
) -> None:
    fake_hub.drop_after = 6 * CHUNK
    path = await manager.pull(REPO)
    shard = "model-00001-of-00003.safetensors"
    assert (path / shard).read_bytes() == fake_hub.repos[REPO].files[shard]
    assert fake_hub.bytes_served[shard] == len(fake_hub.repos[REPO].files[shard])
    ranged = [r for r in fake_hub.requests if r["range"] and shard in r["path"]]
    assert ranged and ranged[0]["range"] == f"bytes={6 * CHUNK}-"
    assert manager.status(REPO)["bytes_done"] == _total(fake_hub)  # type: ignore[index]


async def test_failed_download_is_reported_and_next_try_skips_done_files(
    fake_hub: FakeHub, manager: DownloadManager
) -> None:
    fake_hub.drop_after = 10_000
    fake_hub.drops = 100  # more drops than the library retries
    small = {"config.json", "tokenizer.json", "model.safetensors.index.json"}
    with pytest.raises(DownloadError) as info:
        await manager.pull(REPO)
    assert info.value.kind == "network"
    status = manager.status(REPO)
    assert status is not None and status["state"] == "failed" and "resumes" in status["error"]
    await manager.refresh_on_disk([(REPO, None, None)])
    assert manager.downloaded(REPO) is False
    fake_hub.drop_after = None
    served_before = dict(fake_hub.bytes_served)
    await manager.pull(REPO)
    assert manager.status(REPO)["state"] == "done"  # type: ignore[index]
    for name in small:
        assert fake_hub.bytes_served[name] == served_before[name], f"{name} fetched twice"


async def test_offline_missing_snapshot_fails_at_once(
    fake_hub: FakeHub, manager: DownloadManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError) as info:
        await asyncio.wait_for(manager.ensure(REPO, name="tiny"), 2)
    assert info.value.kind == "offline"
    assert "offline" in info.value.message and REPO in info.value.message
    assert "pull tiny" in info.value.message
    assert fake_hub.requests == []


async def test_offline_with_snapshot_uses_it(
    fake_hub: FakeHub, manager: DownloadManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = await manager.pull(REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(fake_hub.requests)
    assert await manager.ensure(REPO) == path
    assert len(fake_hub.requests) == before


async def test_not_found_is_a_clear_error(fake_hub: FakeHub, manager: DownloadManager) -> None:
    with pytest.raises(DownloadError) as info:
        await manager.pull("fake-org/nope")
    assert info.value.kind == "not_found" and info.value.status == 404
    assert "fake-org/nope" in info.value.message
    assert manager.status("fake-org/nope")["error_kind"] == "not_found"  # type: ignore[index]


async def test_gated_without_token_then_with_token(
    fake_hub: FakeHub, manager: DownloadManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_hub.add(make_repo("fake-org/gated", n_weights=1, weight_size=1000, gated=True))
    with pytest.raises(DownloadError) as info:
        await manager.pull("fake-org/gated")
    assert info.value.kind == "gated" and "HF_TOKEN" in info.value.message
    monkeypatch.setenv("HF_TOKEN", DEFAULT_TOKEN)
    path = await manager.pull("fake-org/gated")
    assert (path / "config.json").is_file()
    assert DEFAULT_TOKEN not in str(manager.status("fake-org/gated"))


async def test_revision_is_passed_through(fake_hub: FakeHub, manager: DownloadManager) -> None:
    path = await manager.pull(REPO, revision="v2")
    assert path.name == fake_hub.repos[REPO].revisions["v2"]
    assert hf_cache.local_snapshot(REPO, "v2") == path
    assert hf_cache.local_snapshot(REPO) is None  # main was never fetched
    assert any("/revision/v2" in r["path"] for r in fake_hub.requests)
    with pytest.raises(DownloadError) as info:
        await manager.pull(REPO, revision="nope")
    assert info.value.kind == "revision_not_found"


async def test_close_cancels_a_running_download(fake_hub: FakeHub) -> None:
    fake_hub.gate = asyncio.Event()
    mgr = DownloadManager()
    progress = mgr.start(REPO)
    for _ in range(100):
        if progress.state is DownloadState.DOWNLOADING:
            break
        await asyncio.sleep(0.02)
    await asyncio.wait_for(mgr.close(), 5)
    fake_hub.gate.set()
    assert progress.state is DownloadState.FAILED and progress.error_kind == "cancelled"


async def test_a_stray_line_from_the_child_does_not_break_the_download(tmp_path: Path) -> None:
    """The hub reads the child's events past a line that is not one (and still finishes)."""
    listing = {"event": "listing", "commit": "c0", "files_total": 1, "bytes_total": 5}
    listing |= {"files_done": 0, "bytes_done": 0}
    lines = ["not json", json.dumps(listing), json.dumps({"event": "done", "path": "/snap"})]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", f"print({chr(10).join(lines)!r})", stdout=asyncio.subprocess.PIPE
    )
    child = _DownloadChild(DownloadRequest("org/m", None, "http://127.0.0.1:9", str(tmp_path)), {})
    progress = DownloadProgress("org/m", "main")
    assert await child._follow(proc, progress) == Path("/snap")
    assert (progress.commit, progress.files_total, progress.bytes_total) == ("c0", 1, 5)
    await proc.wait()
