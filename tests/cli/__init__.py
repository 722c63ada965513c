"""Tests of the `mlx-openai-server-hub` command, its client, tables and service files.

`run_cli` runs the real command (`python -m mlx_openai_server_hub`) in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def cli_env(extra: Mapping[str, str] | None = None, **overrides: str) -> dict[str, str]:
    """The environment for a CLI run: no stray config path, token or colour settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLX_HUB_")}
    # The package is not installed in the venv: make it importable from any directory.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(extra or {})
    env.update(overrides)
    return env


def run_cli(
    *args: str,
    config: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """`mlx-openai-server-hub [--config CONFIG] ARGS...`; stdout and stderr captured."""
    command = [sys.executable, "-m", "mlx_openai_server_hub"]
    if config is not None:
        command += ["--config", str(config)]
    return subprocess.run(
        [*command, *args],
        env=dict(env) if env is not None else cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or REPO,
        check=False,
    )
