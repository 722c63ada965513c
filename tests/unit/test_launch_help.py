"""LaunchHelpCache: `launch --help` read once, stored for the next hub, refreshed quietly.

The worker is the fake worker behind a small shell script that records each call, so
the tests see exactly when the help was read. Real subprocesses throughout.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import psutil
import pytest

from mlx_openai_server_hub.launch_help import LaunchHelpCache
from tests.conftest import FAKE_WORKER
from tests.fake_worker import _HELPS


class Worker:
    """A worker command that logs each run to `calls`."""

    def __init__(self, folder: Path) -> None:
        self.calls = folder / "calls"
        self.script = folder / "worker.sh"
        run_fake = f'exec "{sys.executable}" "{FAKE_WORKER}" "$@"'
        self.script.write_text(f'#!/bin/sh\necho "$*" >> "{self.calls}"\n{run_fake}\n')
        self.script.chmod(0o755)
        self.command = [str(self.script)]

    @property
    def runs(self) -> int:
        return len(self.calls.read_text().splitlines()) if self.calls.exists() else 0


class Tasks:
    """The `spawn` a cache is given: keeps the background tasks for the test to await."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[Any]] = []

    def __call__(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self.tasks.append(task)
        return task


@pytest.fixture
def worker(tmp_path: Path) -> Worker:
    return Worker(tmp_path)


@pytest.fixture
async def tasks() -> AsyncIterator[Tasks]:
    """Background tasks of the caches in a test, cancelled and awaited at its end.

    As the hub's supervisor does at shutdown: on Python 3.11 a task left to
    asyncio.run's final clean-up while it creates a subprocess can hang there.
    """
    owned = Tasks()
    yield owned
    for task in owned.tasks:
        task.cancel()
    await asyncio.gather(*owned.tasks, return_exceptions=True)


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, **extra}


async def test_read_once_then_kept(worker: Worker, tmp_path: Path, tasks: Tasks) -> None:
    store = tmp_path / "launch_help_cache.json"
    cache = LaunchHelpCache(store, tasks)
    first = await cache.options_for(worker.command, env(), {})
    again = await cache.options_for(worker.command, env(), {})
    assert "--model-path" in first.flags and "--max-concurrency" not in first.flags
    assert again is first and worker.runs == 1
    assert list(json.loads(store.read_text()).values()) == [_HELPS["1.8.1"]]


async def test_next_hub_uses_the_stored_help_at_once_and_reads_it_again_behind(
    worker: Worker, tmp_path: Path, tasks: Tasks
) -> None:
    store = tmp_path / "launch_help_cache.json"
    await LaunchHelpCache(store, tasks).options_for(worker.command, env(), {})
    fresh = LaunchHelpCache(store, tasks)
    # This time reading the help would take 3 s: the options must not wait for it.
    options = await fresh.options_for(worker.command, env(FAKE_HELP_DELAY="3"), {})
    assert "--model-path" in options.flags
    [refresh] = tasks.tasks
    assert not refresh.done()
    await refresh
    assert worker.runs == 2


async def test_a_changed_help_replaces_the_stored_one(
    worker: Worker, tmp_path: Path, tasks: Tasks
) -> None:
    store = tmp_path / "launch_help_cache.json"
    await LaunchHelpCache(store, tasks).options_for(worker.command, env(), {})
    # Pretend the last hub saw the JIT branch's help (it has --max-concurrency).
    [key] = json.loads(store.read_text())
    store.write_text(json.dumps({key: _HELPS["jit"]}))
    fresh = LaunchHelpCache(store, tasks)
    stale = await fresh.options_for(worker.command, env(), {})
    assert "--max-concurrency" in stale.flags
    await asyncio.gather(*tasks.tasks)
    current = await fresh.options_for(worker.command, env(), {})
    assert "--max-concurrency" not in current.flags
    assert json.loads(store.read_text()) == {key: _HELPS["1.8.1"]}


async def test_a_rewritten_worker_file_is_read_again_before_use(
    worker: Worker, tmp_path: Path, tasks: Tasks
) -> None:
    store = tmp_path / "launch_help_cache.json"
    await LaunchHelpCache(store, tasks).options_for(worker.command, env(), {})
    stat = worker.script.stat()
    os.utime(worker.script, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    await LaunchHelpCache(store, tasks).options_for(worker.command, env(), {})
    assert worker.runs == 2 and tasks.tasks == []  # read before use, not behind
    assert len(json.loads(store.read_text())) == 2


async def test_model_env_and_python_variables_separate_entries(
    worker: Worker, tmp_path: Path, tasks: Tasks
) -> None:
    store = tmp_path / "launch_help_cache.json"
    cache = LaunchHelpCache(store, tasks)
    await cache.options_for(worker.command, env(), {})
    fresh = LaunchHelpCache(store, tasks)
    await fresh.options_for(
        worker.command, env(FAKE_WORKER_FLAVOR="jit"), {"FAKE_WORKER_FLAVOR": "jit"}
    )
    await fresh.options_for(worker.command, env(PYTHONPATH="/elsewhere"), {})
    assert worker.runs == 3
    # Other variables of the hub's own environment (a terminal's, launchd's) do not.
    await LaunchHelpCache(store, tasks).options_for(worker.command, env(TERM="dumb"), {})
    assert worker.runs == 3


@pytest.mark.parametrize("content", ["", "not json", "[1, 2]", '{"k": 3}'])
async def test_a_damaged_store_is_ignored_and_rewritten(
    worker: Worker, tmp_path: Path, tasks: Tasks, content: str
) -> None:
    store = tmp_path / "launch_help_cache.json"
    store.write_text(content)
    options = await LaunchHelpCache(store, tasks).options_for(worker.command, env(), {})
    assert "--model-path" in options.flags
    assert list(json.loads(store.read_text()).values()) == [_HELPS["1.8.1"]]


async def test_an_unwritable_store_only_costs_the_next_read(
    worker: Worker, tmp_path: Path, tasks: Tasks
) -> None:
    store = tmp_path / "missing-folder" / "launch_help_cache.json"
    options = await LaunchHelpCache(store, tasks).options_for(worker.command, env(), {})
    assert "--model-path" in options.flags and not store.parent.exists()


async def test_cancelling_a_read_ends_the_help_process(
    worker: Worker, tmp_path: Path, tasks: Tasks
) -> None:
    cache = LaunchHelpCache(tmp_path / "store.json", tasks)
    reading = asyncio.create_task(cache.options_for(worker.command, env(FAKE_HELP_DELAY="60"), {}))
    while worker.runs == 0:
        await asyncio.sleep(0.05)
    [child] = psutil.Process().children()
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    assert psutil.Process().children() == []
