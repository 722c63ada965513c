"""End-to-end fixtures: the real mlx-openai-server worker serving a tiny model made here.

Every test that takes `real_worker` runs once per worker line (PyPI 1.8.1 and the
JIT-and-Auto-Unload branch 1.3.12); a test meaningful for one line only narrows it with
`only_line()`, which names the reason. The tiny model is built once per test session (about
8 s) into a temporary folder. The hubs themselves come from `hub_factory` in
tests/conftest.py; `real_model()` makes the hub.yaml entry that points a model at the real
worker.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.e2e.worker_support import (
    WORKER_ENV_OVERRIDES,
    WORKER_LINES,
    RealWorker,
    build_tiny_model,
    real_worker_command,
)

#: The real worker is ready ~9 s after spawn on a 2-core machine; leave plenty of room.
STARTUP_TIMEOUT_S = 120


@pytest.fixture(scope="session", params=list(WORKER_LINES))
def real_worker(request: pytest.FixtureRequest) -> RealWorker:
    """The real worker of one line (fails, never skips, when it is not installed)."""
    line = WORKER_LINES[request.param]
    return RealWorker(line, real_worker_command(line))


def only_line(name: str, reason: str) -> pytest.MarkDecorator:
    """Run a test against worker line `name` only; `reason` says why the others do not apply."""
    assert name in WORKER_LINES and reason
    return pytest.mark.parametrize("real_worker", [name], indirect=True)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the tiny llama model, built once for the whole session.

    Built with the 1.8.1 worker's Python; both lines load the same files.
    """
    return build_tiny_model(tmp_path_factory.mktemp("e2e-model") / "tiny")


def real_model(name: str, model_dir: Path, worker: RealWorker, **extra: Any) -> dict[str, Any]:
    """A hub.yaml model entry served by the real worker (keys in `extra` win).

    Cold starts unless a test asks for `warm_standby` (the standby path has its own
    tests), so every test sees the same process lifecycle on both lines."""
    entry: dict[str, Any] = {
        "name": name,
        "model_path": str(model_dir),
        "worker_command": list(worker.command),
        "env": dict(WORKER_ENV_OVERRIDES),
        "startup_timeout": STARTUP_TIMEOUT_S,
        "warm_standby": False,
    }
    entry.update(extra)
    return entry


def group_members(pgid: int) -> list[psutil.Process]:
    """Live processes in process group `pgid` (zombies count as gone)."""
    members = []
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(proc.pid) != pgid or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            members.append(proc)
    return members


def port_listening(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:`port`."""
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def port_bindable(port: int) -> bool:
    """True when a new listener could bind 127.0.0.1:`port` (as the hub checks it)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
