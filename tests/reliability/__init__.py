"""Reliability and security tests: faults, bad input, hostile config, load; with figures.

Helpers shared by the modules here:

- `module_hub(folder, models, **top)`: a real hub (tests/conftest.py's `Hub`) for a
  whole test module, ended with everything it started when the module is done.
  `tune={"mlx_openai_server_hub.bodies.BODY_IDLE_SECONDS": 1.5}` starts it with module
  constants changed, so that timeouts of a minute can be tested in seconds.
- `figure(section, item, result)`: one row of the table in docs/reliability.md. It is
  printed (visible with `pytest -s`) and, when `MLX_HUB_FIGURES` names a file,
  appended to it as a JSON line; `scripts/reliability-report.sh` prints the table.
- `ProcessSample`: open files, threads, child processes and memory of a process.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import psutil

from tests.conftest import MARKER_ENV, TEST_TOKEN, Hub, free_port

FIGURES_ENV = "MLX_HUB_FIGURES"


def figure(section: str, item: str, result: Any) -> None:
    """Record one figure: `section` (Faults, Bad input, ...), what was tried, what happened."""
    row = {"section": section, "item": item, "result": str(result)}
    print(f"FIGURE | {section} | {item} | {result}")
    target = os.environ.get(FIGURES_ENV)
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")


# Runs `serve` after setting module constants: argv is [json of {module.NAME: value}, config].
_TUNED_SERVE = """
import importlib, json, sys
for target, value in json.loads(sys.argv[1]).items():
    module, _, name = target.rpartition(".")
    setattr(importlib.import_module(module), name, value)
from mlx_openai_server_hub.cli import main
main(["--config", sys.argv[2], "serve"])
"""


class TunedHub(Hub):
    """A `Hub` whose process starts with some module constants changed."""

    def __init__(self, *args: Any, tune: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tune = tune

    def start(self, wait: bool = True) -> None:
        """Like `Hub.start`, through `_TUNED_SERVE`."""
        with open(self.config_path.parent / "serve.out", "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _TUNED_SERVE, json.dumps(self.tune), str(self.config_path)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        if wait:
            self.wait_healthy()


def new_hub(
    folder: Path,
    models: list[dict[str, Any]],
    env: dict[str, str] | None = None,
    tune: dict[str, Any] | None = None,
    **top: Any,
) -> Hub:
    """A hub in `folder` with its hub.yaml written, not started yet."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = uuid.uuid4().hex
    full_env = {**os.environ, "MLX_HUB_TOKEN": TEST_TOKEN, MARKER_ENV: marker}
    full_env.pop("MLX_HUB_CONFIG_PATH", None)
    full_env.update(env or {})
    args = (folder / "hub.yaml", free_port(), marker, full_env)
    hub = TunedHub(*args, tune=tune) if tune else Hub(*args)
    hub.write_config(models, **top)
    return hub


@contextlib.contextmanager
def module_hub(
    folder: Path,
    models: list[dict[str, Any]],
    env: dict[str, str] | None = None,
    tune: dict[str, Any] | None = None,
    **top: Any,
) -> Iterator[Hub]:
    """Start one hub in `folder` and end it (and every worker it started) afterwards."""
    hub = new_hub(folder, models, env, tune, **top)
    try:
        hub.start()
        yield hub
    finally:
        hub.kill_everything()


@attrs.frozen
class ProcessSample:
    """What a process holds at one moment (the figures of the leak checks)."""

    fds: int
    threads: int
    children: int
    rss_mb: float

    @classmethod
    def of(cls, pid: int) -> ProcessSample:
        """Sample `pid` now (children: every live, non-zombie descendant)."""
        proc = psutil.Process(pid)
        children = [
            c for c in proc.children(recursive=True) if _alive(c)
        ]  # zombies hold no memory or ports
        return cls(
            fds=proc.num_fds(),
            threads=proc.num_threads(),
            children=len(children),
            rss_mb=round(proc.memory_info().rss / 2**20, 1),
        )


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
