"""`<log_path>/hub_runtime.json`: where the running hub is, and its workers.

The CLI reads it to find the hub. The hub itself reads it at start-up to end
workers that a previous run left behind when it was killed (SIGKILL, power
cut): their process groups are recorded here while they run.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import psutil

from .atomic import write_atomic
from .contract import RuntimeState as RuntimeState
from .contract import WorkerRecord as WorkerRecord
from .contract import read_runtime_file as read_runtime
from .contract import runtime_to_json
from .process_group import group_started_since, signal_group


def write_runtime(path: Path, state: RuntimeState) -> None:
    """Write the file atomically (readers never see half a file), private (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, runtime_to_json(state), mode=0o600)


def remove_runtime(path: Path, pid: int) -> None:
    """Remove the file if it is ours."""
    state = read_runtime(path)
    if state is not None and state.pid == pid:
        with contextlib.suppress(OSError):
            path.unlink()


def hub_alive(state: RuntimeState) -> bool:
    """True when the recorded hub process still runs (and is not us)."""
    if state.pid == os.getpid():
        return False
    try:
        cmdline = " ".join(psutil.Process(state.pid).cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True
    # A reused pid belongs to some other program.
    return "mlx_openai_server_hub" in cmdline or "mlx-openai-server-hub" in cmdline


def reap_leftover_workers(state: RuntimeState) -> list[str]:
    """SIGKILL the process groups of a dead hub's workers; return what was ended."""
    ended = []
    for name, record in state.workers.items():
        # A group created before the worker is not ours any more (pid reuse).
        if group_started_since(record.pgid, record.create_time) and signal_group(
            record.pgid, signal.SIGKILL
        ):
            ended.append(f"{name} (pid {record.pid}, port {record.port})")
    return ended
