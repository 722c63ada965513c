"""`<log_path>/hub_runtime.json`: where the running hub is, and its workers.

The CLI reads it to find the hub. The hub itself reads it at start-up to end
workers that a previous run left behind when it was killed (SIGKILL, power
cut): their process groups are recorded here while they run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

import attrs
import cattrs
import psutil

logger = logging.getLogger("mlx_hub.runtime")
_converter = cattrs.Converter()


@attrs.define
class WorkerRecord:
    """A worker process group the hub started."""

    pid: int
    pgid: int
    port: int
    create_time: float = 0.0


@attrs.define
class RuntimeState:
    """The content of hub_runtime.json."""

    pid: int
    host: str
    port: int
    started_at: str = attrs.field(factory=lambda: dt.datetime.now(dt.UTC).isoformat())
    workers: dict[str, WorkerRecord] = attrs.field(factory=dict)


def write_runtime(path: Path, state: RuntimeState) -> None:
    """Write the file atomically (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_converter.unstructure(state)) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_runtime(path: Path) -> RuntimeState | None:
    """The recorded state, or None when there is no readable file."""
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
        return _converter.structure(raw, RuntimeState)
    except (OSError, ValueError, TypeError, cattrs.BaseValidationError):
        return None


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
        if _group_is_ours(record):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(record.pgid, signal.SIGKILL)
                ended.append(f"{name} (pid {record.pid}, port {record.port})")
    return ended


def _group_is_ours(record: WorkerRecord) -> bool:
    """Guard against pid reuse: the group must still hold what our worker started.

    The worker itself may be gone while helpers it started live on in its
    group; those were all created after the worker.
    """
    members = []
    for proc in psutil.process_iter(["pid", "create_time"]):
        with contextlib.suppress(OSError):
            if os.getpgid(proc.info["pid"]) == record.pgid:
                members.append(proc)
    return bool(members) and all(
        (p.info["create_time"] or 0) >= record.create_time - 1.0 for p in members
    )
