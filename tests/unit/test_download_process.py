"""The download child process on its own: its events, priority, and how it stops.

The real child (`python -m mlx_openai_server_hub.download_process`) against the fake Hub
endpoint on 127.0.0.1, spoken to over its pipes as the hub does.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from mlx_openai_server_hub.download_protocol import NICENESS, DownloadRequest, encode_request
from tests.fake_hf import CHUNK, FakeHub, make_repo, start

REPO = "fake-org/child-model"


@pytest.fixture
async def fake_hub() -> AsyncIterator[tuple[FakeHub, str]]:
    hub = FakeHub()
    hub.add(make_repo(REPO, n_weights=2, weight_size=200_000))
    runner, endpoint = await start(hub)
    try:
        yield hub, endpoint
    finally:
        await runner.cleanup()


async def _spawn(endpoint: str, cache: Path) -> asyncio.subprocess.Process:
    request = DownloadRequest(REPO, None, endpoint, str(cache), read_chunk_bytes=CHUNK)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mlx_openai_server_hub.download_process",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "HF_HUB_OFFLINE": "0"},
        start_new_session=True,
    )
    assert proc.stdin is not None
    proc.stdin.write(encode_request(request))
    await proc.stdin.drain()
    return proc


async def _events(proc: asyncio.subprocess.Process, until: str) -> list[dict[str, Any]]:
    """Events up to and including the first of kind `until` (or the end of output)."""
    assert proc.stdout is not None
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(30):
        while line := await proc.stdout.readline():
            seen.append(json.loads(line))
            if seen[-1]["event"] == until:
                break
    return seen


async def _ends_within(proc: asyncio.subprocess.Process, seconds: float) -> float:
    started = time.monotonic()
    try:
        await asyncio.wait_for(proc.wait(), seconds)
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    return time.monotonic() - started


async def test_events_add_up_to_the_snapshot(fake_hub: tuple[FakeHub, str], tmp_path: Path) -> None:
    hub, endpoint = fake_hub
    hub.bytes_per_s = 2_000_000
    proc = await _spawn(endpoint, tmp_path / "cache")
    events = await _events(proc, "done")
    await _ends_within(proc, 10)
    assert proc.returncode == 0
    kinds = [e["event"] for e in events]
    assert kinds[0] == "listing" and kinds[-1] == "done"
    listing = events[0]
    total = sum(len(d) for d in hub.repos[REPO].files.values())
    assert listing["bytes_total"] == total and listing["files_done"] == 0
    assert sum(e["n"] for e in events if e["event"] == "bytes") == total
    assert kinds.count("file_done") == listing["files_total"] == len(hub.repos[REPO].files)
    snapshot = Path(events[-1]["path"])
    assert (snapshot / "config.json").read_bytes() == hub.repos[REPO].files["config.json"]


async def test_runs_at_a_lower_priority(fake_hub: tuple[FakeHub, str], tmp_path: Path) -> None:
    hub, endpoint = fake_hub
    hub.gate = asyncio.Event()  # hold the file bodies: the child waits mid-download
    proc = await _spawn(endpoint, tmp_path / "cache")
    await _events(proc, "listing")
    try:
        assert psutil.Process(proc.pid).nice() == min(
            os.getpriority(os.PRIO_PROCESS, 0) + NICENESS, 19
        )
    finally:
        hub.gate.set()
        await _ends_within(proc, 10)


@pytest.mark.parametrize("how", ["sigterm", "stdin closed"])
async def test_stops_mid_file_when_told_or_when_the_hub_is_gone(
    fake_hub: tuple[FakeHub, str], tmp_path: Path, how: str
) -> None:
    hub, endpoint = fake_hub
    hub.gate = asyncio.Event()  # every file read stalls: only a forced stop ends it
    proc = await _spawn(endpoint, tmp_path / "cache")
    await _events(proc, "listing")
    if how == "sigterm":
        proc.send_signal(signal.SIGTERM)
    else:
        assert proc.stdin is not None
        proc.stdin.close()  # what the hub's death looks like from the child
    rest = await _events(proc, "error")
    took = await _ends_within(proc, 5)
    hub.gate.set()
    assert rest[-1] == {
        "event": "error",
        "kind": "cancelled",
        "message": f"download of {REPO} was stopped; the next try resumes",
    }
    assert proc.returncode == 1 and took < 3


def test_only_events_reach_stdout() -> None:
    """A library's print in the child goes to stderr, not into the hub's event stream."""
    script = (
        "from mlx_openai_server_hub.download_process import _Events, _take_stdout\n"
        "events = _Events(_take_stdout())\n"
        "print('a stray line', flush=True)\n"
        "events.emit('done', path='/x')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    assert [json.loads(line) for line in done.stdout.splitlines()] == [
        {"event": "done", "path": "/x"}
    ]
    assert "a stray line" in done.stderr
