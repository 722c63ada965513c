"""hf_cache: repo ids, cached snapshots and completeness, checked against real downloads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from huggingface_hub import snapshot_download

from mlx_openai_server_hub import hf_cache
from tests.fake_hf import FakeHub, make_repo, start

REPO = "fake-org/cache-model"


@pytest.fixture
async def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeHub]:
    hub = FakeHub()
    hub.add(make_repo(REPO, n_weights=2, weight_size=5000))
    runner, _ = await start(hub)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    try:
        yield hub
    finally:
        await runner.cleanup()


def _download(hub: FakeHub, tmp_path: Path, revision: str | None = None) -> Path:
    """What a worker (or `hf download`) would leave in the cache."""
    return Path(
        snapshot_download(
            REPO, revision=revision, cache_dir=tmp_path / "cache", endpoint=hub.endpoint
        )
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("mlx-community/Qwen3-30B-A3B-4bit", True),
        ("org/name.v2_x", True),
        ("/models/qwen", False),
        ("./org/name", False),
        ("~/models/x", False),
        ("gpt2", False),
        ("a/b/c", False),
        ("org/../etc", False),
        ("", False),
    ],
)
def test_is_repo_id(value: str, expected: bool) -> None:
    assert hf_cache.is_repo_id(value) is expected


def test_existing_local_directory_is_not_a_repo_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "org" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert hf_cache.is_repo_id("org/name") is False
    assert hf_cache.local_snapshot("org/name") == Path("org/name")
    assert hf_cache.snapshot_complete("org/name") is True


def test_cache_dir_follows_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hf_cache.hub_cache_dir() == tmp_path / "home" / "hub"
    assert hf_cache.hub_cache_dir({"HF_HUB_CACHE": str(tmp_path / "c")}) == tmp_path / "c"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hf_cache.hub_offline() is True
    assert hf_cache.hub_offline({"HF_HUB_OFFLINE": "0"}) is False


def test_missing_snapshot(fake_hub: FakeHub) -> None:
    assert hf_cache.local_snapshot(REPO) is None
    assert hf_cache.snapshot_complete(REPO) is False
    assert hf_cache.local_snapshot("/does/not/exist") is None


async def test_downloaded_snapshot_is_found_and_complete(fake_hub: FakeHub, tmp_path: Path) -> None:
    path = await asyncio.to_thread(_download, fake_hub, tmp_path)
    assert hf_cache.local_snapshot(REPO) == path
    assert hf_cache.snapshot_complete(REPO) is True
    assert hf_cache.snapshot_complete(REPO, expected_files=list(fake_hub.repos[REPO].files))
    assert hf_cache.local_snapshot(REPO, "v2") is None
    commit = fake_hub.repos[REPO].revisions["main"]
    assert hf_cache.local_snapshot(REPO, commit) == path
    # Another cache (a model's own HF_HOME) does not see it.
    assert hf_cache.local_snapshot(REPO, env={"HF_HUB_CACHE": str(tmp_path / "other")}) is None


async def test_missing_shard_or_partial_blob_is_incomplete(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    path = await asyncio.to_thread(_download, fake_hub, tmp_path)
    shard = path / "model-00002-of-00002.safetensors"
    shard.unlink()
    assert hf_cache.snapshot_complete(REPO) is False
    assert hf_cache.snapshot_complete(REPO, expected_files=["config.json"]) is True
    blobs = hf_cache.repo_cache_dir(REPO) / "blobs"
    (blobs / "abc.incomplete").write_bytes(b"x")
    assert hf_cache.snapshot_complete(REPO) is False


async def test_unknowable_without_index(fake_hub: FakeHub, tmp_path: Path) -> None:
    path = await asyncio.to_thread(_download, fake_hub, tmp_path)
    (path / "model.safetensors.index.json").unlink()
    for shard in path.glob("*.safetensors"):
        shard.unlink()
    assert hf_cache.snapshot_complete(REPO) is None
