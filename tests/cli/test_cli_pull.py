"""`pull` as a user runs it: through a running hub or on its own, on a terminal or not.

The fake Hugging Face endpoint runs on a loop thread of its own (the tests
block on subprocesses); the command and the hub reach it through
`HF_ENDPOINT`, and it counts every byte it serves.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlx_openai_server_hub import hf_cache
from mlx_openai_server_hub.download_protocol import READ_CHUNK_BYTES
from mlx_openai_server_hub.pull import EXIT_INTERRUPTED, EXIT_NOT_FOUND, EXIT_OFFLINE, EXIT_USAGE
from tests.cli import REPO as SOURCE_TREE
from tests.cli import cli_env, run_cli
from tests.cli.test_cli_hub import ANSI, run_in_pty
from tests.conftest import HubFactory, fake_model
from tests.fake_hf import FakeHub, make_repo, serving_in_thread

REPO = "fake-org/cli-model"
SMALL_FILES = ("config.json", "tokenizer.json", "model.safetensors.index.json")


@pytest.fixture
def fake_hf() -> Iterator[FakeHub]:
    """The fake Hub serving REPO, on its own event loop thread."""
    hub = FakeHub(bytes_per_s=1_500_000)
    hub.add(make_repo(REPO, n_weights=2, weight_size=1_500_000))
    with serving_in_thread(hub):
        yield hub


def _hf_env(fake: FakeHub, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "HF_ENDPOINT": fake.endpoint,
        "HF_HUB_CACHE": str(tmp_path / "hf-cache"),
        "HF_TOKEN_PATH": str(tmp_path / "no-token"),
        "HF_HUB_OFFLINE": "0",
        **extra,
    }


def _complete(tmp_path: Path) -> bool | None:
    return hf_cache.snapshot_complete(REPO, env={"HF_HUB_CACHE": str(tmp_path / "hf-cache")})


def _served_once(fake: FakeHub) -> None:
    """Every file arrived exactly once: no byte was fetched twice."""
    for name, data in fake.repos[REPO].files.items():
        assert fake.bytes_served[name] == len(data), (name, fake.bytes_served)


def test_pull_through_a_running_hub_on_a_terminal(
    hub_factory: HubFactory, fake_hf: FakeHub, tmp_path: Path
) -> None:
    env = _hf_env(fake_hf, tmp_path)
    hub = hub_factory([fake_model("tiny", model_path=REPO)], env=env)
    out, code = run_in_pty(["--config", str(hub.config_path), "pull", "tiny"], cli_env(hub.env))
    assert code == 0, out
    plain = ANSI.sub("", out)
    assert "\x1b[2K" in out and "F\x1b[2K" in out, "bars are redrawn in place"
    assert re.search(r"tiny [█░#.]{24} ", plain), "an overall bar"
    assert ".safetensors" in plain and "ETA" in plain and "MB/s" in plain, "per-file bars, rate"
    assert "tiny: done, 3.0 MB in 5 files" in plain
    # The hub did the download (its status shows it), not the command.
    meta = asyncio.run(hub.model("tiny"))
    assert meta["download"]["state"] == "done" and meta["downloaded"] is True
    assert _complete(tmp_path) is True
    _served_once(fake_hf)


def test_pull_on_its_own_prints_plain_lines_and_resumes_a_dropped_file(
    hub_factory: HubFactory, fake_hf: FakeHub, tmp_path: Path
) -> None:
    # No hub running: the command downloads itself. Slow enough for a periodic line
    # (every 5 s), and each weight file's first GET is cut off part-way (on a read chunk
    # boundary: huggingface_hub resumes from the last whole chunk it handed on).
    fake_hf.bytes_per_s = 300_000
    fake_hf.drop_after = 3 * READ_CHUNK_BYTES
    hub = hub_factory([fake_model("tiny", model_path=REPO)], start=False)
    result = run_cli(
        "pull", "tiny", config=hub.config_path, env=cli_env(_hf_env(fake_hf, tmp_path))
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "\x1b" not in result.stdout
    lines = result.stdout.splitlines()
    periodic = [line for line in lines if line.startswith("tiny: downloading ")]
    assert len(periodic) >= 2, lines
    assert re.search(r"\d [kMG]?B/s  ETA \S+  files [0-5]/5$", periodic[-1]), periodic
    assert lines[-1] == "tiny: done, 3.0 MB in 5 files"
    assert _complete(tmp_path) is True
    # The dropped files were resumed with a Range request, not fetched again.
    resumed = [r for r in fake_hf.requests if r["range"]]
    expected = f"bytes={3 * READ_CHUNK_BYTES}-"
    assert len(resumed) == 2 and all(r["range"] == expected for r in resumed), resumed
    _served_once(fake_hf)


def test_a_second_pull_after_ctrl_c_continues(fake_hf: FakeHub, tmp_path: Path) -> None:
    fake_hf.bytes_per_s = 300_000
    env = cli_env(_hf_env(fake_hf, tmp_path))
    no_config = ["--config", str(tmp_path / "none.yaml")]  # a bare repo id needs no hub.yaml
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlx_openai_server_hub", *no_config, "pull", REPO],
        env=env,
        cwd=SOURCE_TREE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    small = {n: len(fake_hf.repos[REPO].files[n]) for n in SMALL_FILES}

    def small_done_weights_begun() -> bool:
        served = fake_hf.bytes_served
        return all(served[n] == size for n, size in small.items()) and (
            max(served.values(), default=0) >= 300_000
        )

    try:
        deadline = time.monotonic() + 30
        while not small_done_weights_begun():
            assert time.monotonic() < deadline and proc.poll() is None, fake_hf.bytes_served
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED, out
    assert _complete(tmp_path) is False
    fake_hf.bytes_per_s = None
    again = run_cli(*no_config, "pull", REPO, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.splitlines()[-1] == f"{REPO}: done, 3.0 MB in 5 files"
    assert _complete(tmp_path) is True
    for name in SMALL_FILES:  # what had arrived is not fetched again
        assert fake_hf.gets[name] == 1, (name, fake_hf.gets)


def test_exit_codes_for_scripts(hub_factory: HubFactory, fake_hf: FakeHub, tmp_path: Path) -> None:
    env = _hf_env(fake_hf, tmp_path)
    models = [fake_model("tiny", model_path=REPO), fake_model("ghost", model_path="fake-org/ghost")]
    hub = hub_factory(models, env=env)

    # Through the hub: a missing repo; a name nobody configured.
    result = run_cli("pull", "ghost", config=hub.config_path, env=cli_env(hub.env))
    assert result.returncode == EXIT_NOT_FOUND, result.stdout + result.stderr
    assert "ghost: failed: " in result.stdout and "not found" in result.stdout
    result = run_cli("pull", "nonsense", config=hub.config_path, env=cli_env(hub.env))
    assert result.returncode == EXIT_USAGE and "neither a model" in result.stderr

    # On its own: a missing repo id, then offline with nothing in the cache.
    no_config = tmp_path / "none.yaml"
    result = run_cli("pull", "fake-org/ghost", config=no_config, env=cli_env(env))
    assert result.returncode == EXIT_NOT_FOUND, result.stdout + result.stderr
    offline = cli_env(env, HF_HUB_OFFLINE="1")
    started = time.monotonic()
    result = run_cli("pull", REPO, config=no_config, env=offline)
    assert result.returncode == EXIT_OFFLINE, result.stdout + result.stderr
    assert "offline" in result.stdout and f"pull {REPO}" in result.stdout
    assert time.monotonic() - started < 10
    assert not any(REPO in r["path"] for r in fake_hf.requests), "offline means no network"


def test_offline_through_the_hub(hub_factory: HubFactory, fake_hf: FakeHub, tmp_path: Path) -> None:
    hub = hub_factory(
        [fake_model("tiny", model_path=REPO)], env=_hf_env(fake_hf, tmp_path, HF_HUB_OFFLINE="1")
    )
    result = run_cli("pull", "tiny", config=hub.config_path, env=cli_env(hub.env))
    assert result.returncode == EXIT_OFFLINE, result.stdout + result.stderr
    assert "tiny: failed: offline" in result.stdout and "pull tiny" in result.stdout
    assert fake_hf.requests == []
