"""The fake ``mlx-openai-server`` command's texts and the two worker lines it imitates.

The ``launch --help`` texts are the real workers' output, kept once in ``tests/fixtures``
and read here, so the flags the fake accepts are exactly those of the real worker.
"""

from __future__ import annotations

from pathlib import Path

PROG = "mlx-openai-server"
VERSIONS = {"1.8.1": "1.8.1", "jit": "1.3.12"}
FLAVOR_ALIASES = {"": "1.8.1", "1.8.1": "1.8.1", "pypi": "1.8.1", "jit": "jit", "1.3.12": "jit"}

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
HELP_FILES = {
    "1.8.1": FIXTURES / "worker-pypi-1.8.1-launch-help.txt",
    "jit": FIXTURES / "worker-jit-branch-1.3.12-launch-help.txt",
}
HELPS = {flavor: path.read_text(encoding="utf-8") for flavor, path in HELP_FILES.items()}

GROUP_HELP = f"""\
Usage: {PROG} [OPTIONS] COMMAND [ARGS]...

  MLX OpenAI-compatible server (fake worker for the hub's tests).

Options:
  --version  Show the version and exit.
  --help     Show this message and exit.

Commands:
  launch  Start the server with the supplied flags.
"""
