"""pull.py: targets, exit codes, progress lines, and a local pull against the fake Hub."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlx_openai_server_hub import hf_cache
from mlx_openai_server_hub.pull import (
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_OFFLINE,
    EXIT_OK,
    ProgressView,
    PullTarget,
    PullUsageError,
    exit_code,
    human_bytes,
    human_eta,
    pull_locally,
    resolve_targets,
    terminal_lines,
)
from tests.fake_hf import FakeHub, make_repo, serving_in_thread

REPO = "fake-org/pull-model"


def test_formatting() -> None:
    assert human_bytes(14_200_000_000) == "14.2 GB"
    assert human_bytes(512) == "512 B"
    assert human_bytes(None) == "?"
    assert human_eta(65) == "1m05s" and human_eta(7300) == "2h01m" and human_eta(None) == "--"


def test_terminal_lines_show_overall_and_files() -> None:
    status: dict[str, Any] = {
        "state": "downloading",
        "bytes_done": 430,
        "bytes_total": 1000,
        "files_done": 1,
        "files_total": 3,
        "rate_bytes_per_s": 2_000_000.0,
        "eta_s": 12.0,
        "files": {"model.safetensors": {"bytes_done": 100, "bytes_total": 400}},
    }
    lines = terminal_lines({"qwen": status}, utf8=False)
    assert lines[0].startswith("qwen #") and " 43%" in lines[0]
    assert "2.0 MB/s" in lines[0] and "ETA 12s" in lines[0] and "files 1/3" in lines[0]
    assert "model.safetensors" in lines[1] and " 25%" in lines[1]


def test_exit_codes() -> None:
    done = {"state": "done"}
    assert exit_code({"a": done}) == EXIT_OK
    assert exit_code({"a": done, "b": {"state": "failed", "error_kind": "network"}}) == EXIT_FAILED
    assert exit_code({"a": {"state": "failed", "error_kind": "gated"}}) == EXIT_NOT_FOUND
    assert exit_code({"a": {"state": "failed", "error_kind": "offline"}}) == EXIT_OFFLINE


def test_resolve_targets_rejects_unknown_and_local() -> None:
    assert resolve_targets(None, ["org/name"]) == [PullTarget("org/name", "org/name")]
    with pytest.raises(PullUsageError, match="neither"):
        resolve_targets(None, ["qwen"])


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """The fake Hub on its own loop thread (pull_locally runs its own asyncio loop)."""
    hub = FakeHub(bytes_per_s=400_000)
    hub.add(make_repo(REPO, n_weights=2, weight_size=150_000))
    with serving_in_thread(hub) as endpoint:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        yield hub


def test_local_pull_plain_output(fake_hub: FakeHub) -> None:
    out: list[str] = []
    view = ProgressView(out.append, interval=0.1)
    code = pull_locally([PullTarget("tiny", REPO)], view, poll=0.05)
    assert code == EXIT_OK
    assert hf_cache.snapshot_complete(REPO) is True
    progress = [line for line in out if line.startswith("tiny: downloading")]
    assert progress, out
    assert out[-1].startswith("tiny: done, ") and "5 files" in out[-1]


def test_local_pull_terminal_frames(fake_hub: FakeHub) -> None:
    frames: list[list[str]] = []
    view = ProgressView(print, draw=frames.append, utf8=False)
    assert pull_locally([PullTarget("tiny", REPO)], view, poll=0.05) == EXIT_OK
    assert any("ETA" in frame[0] for frame in frames)
    assert any(len(frame) > 1 and ".safetensors" in frame[1] for frame in frames)
    assert frames[-1][0].startswith("tiny: done")


def test_local_pull_not_found_exit_code(fake_hub: FakeHub) -> None:
    out: list[str] = []
    code = pull_locally([PullTarget("x", "fake-org/missing")], ProgressView(out.append))
    assert code == EXIT_NOT_FOUND
    assert out[-1].startswith("x: failed: ") and "not found" in out[-1]
