"""Helpers for end-to-end tests that drive the real mlx-openai-server worker.

Two worker lines are tested, each in its own virtualenv made by ``scripts/setup-worker.sh``:
PyPI's 1.8.1 (``setup-worker.sh pypi``, exported by the test script as
``MLX_HUB_TEST_WORKER``) and the JIT-and-Auto-Unload branch 1.3.12 (``setup-worker.sh jit``,
exported as ``MLX_HUB_TEST_JIT_WORKER``). A missing worker is a failure, never a skip: an
e2e run that silently skipped would hide a broken setup. The one exception is the JIT line
off Linux, whose build recipe is Linux-only: it is skipped there unless its variable is set.

The tiny model is built by ``mlx_openai_server_hub/demo_model.py`` run under the worker's own
Python (the hub's environment has no mlx on Linux).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import attrs
import psutil
import pytest

from mlx_openai_server_hub.cli import worker_python as cli_worker_python
from mlx_openai_server_hub.worker_shim import SECRET_ENV, SECRET_HEADER

WORKER_ENV_VAR = "MLX_HUB_TEST_WORKER"
JIT_WORKER_ENV_VAR = "MLX_HUB_TEST_JIT_WORKER"


@attrs.frozen
class WorkerLine:
    """A worker line the e2e suite runs against, and how it differs where tests look."""

    name: str  # "pypi" or "jit": the argument of scripts/setup-worker.sh
    env_var: str
    # 1.8.1 runs a spawn worker and a resource tracker in its process group; 1.3.12 is one
    # process, so stopping by group is only checked against helpers on 1.8.1.
    spawns_helpers: bool
    # Only 1.3.12's `launch` lists --max-concurrency (and reports it in /v1/queue/stats).
    takes_max_concurrency: bool


PYPI_LINE = WorkerLine("pypi", WORKER_ENV_VAR, spawns_helpers=True, takes_max_concurrency=False)
JIT_LINE = WorkerLine("jit", JIT_WORKER_ENV_VAR, spawns_helpers=False, takes_max_concurrency=True)
WORKER_LINES = {line.name: line for line in (PYPI_LINE, JIT_LINE)}


@attrs.frozen
class RealWorker:
    """An installed worker of one line."""

    line: WorkerLine
    command: list[str]


#: Environment the worker (and demo_model.py) should run with: nothing may be fetched from a
#: model hub, and the tokenizers thread pool must not warn after the worker forks/spawns.
WORKER_ENV_OVERRIDES: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

_DEMO_MODEL_TIMEOUT_S = 300


def _fail(message: str) -> None:
    pytest.fail(message, pytrace=False)


def real_worker_command(line: WorkerLine = PYPI_LINE) -> list[str]:
    """Return the command (``[executable]``) of the real worker of ``line``.

    Fails the test (not a skip) when its variable is unset or names no executable file;
    see the module docstring for the JIT line off Linux.
    """
    var = line.env_var
    value = os.environ.get(var, "").strip()
    if not value:
        setup = f"scripts/setup-worker.sh {line.name}"
        if line is JIT_LINE and sys.platform != "linux":
            pytest.skip(f"{var} is not set and `{setup}` builds the JIT worker on Linux only")
        _fail(
            f"{var} is not set. Run {setup} and export "
            f'{var}="$({setup} | tail -n1)" before the e2e tests.'
        )
    exe = Path(value).expanduser()
    if not exe.is_absolute():
        exe = Path.cwd() / exe
    if not exe.is_file():
        _fail(f"{var}={value!r}: no such file; re-run scripts/setup-worker.sh {line.name}.")
    if not os.access(exe, os.X_OK):
        _fail(f"{var}={value!r} is not executable.")
    return [str(exe)]


def worker_python(worker_exe: str | os.PathLike[str]) -> str:
    """The Python interpreter of the virtualenv that holds ``worker_exe``.

    The same rule `init --demo` uses, so the tests exercise it too.
    """
    found = cli_worker_python(Path(worker_exe).expanduser())
    if found is None:
        raise RuntimeError(f"cannot find the Python interpreter of the worker at {worker_exe}")
    return str(found)


def demo_model_script() -> Path:
    """Path of mlx_openai_server_hub/demo_model.py (run as a script, not imported)."""
    spec = importlib.util.find_spec("mlx_openai_server_hub.demo_model")
    if spec is not None and spec.origin:
        return Path(spec.origin)
    return Path(__file__).resolve().parents[2] / "mlx_openai_server_hub" / "demo_model.py"


def worker_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default: os.environ) with :data:`WORKER_ENV_OVERRIDES` applied."""
    env = dict(os.environ if base is None else base)
    env.update(WORKER_ENV_OVERRIDES)
    return env


def build_tiny_model(dest: Path, worker_exe: str | None = None) -> Path:
    """Build the tiny demo model into ``dest`` with the worker's Python; return ``dest``.

    Idempotent (demo_model.py returns at once when ``dest`` is already complete).
    """
    exe = worker_exe if worker_exe is not None else real_worker_command()[0]
    python = worker_python(exe)
    dest = Path(dest).resolve()
    cmd = [python, str(demo_model_script()), str(dest)]
    try:
        proc = subprocess.run(
            cmd,
            env=worker_env(),
            capture_output=True,
            text=True,
            timeout=_DEMO_MODEL_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        _fail(f"building the tiny model timed out after {_DEMO_MODEL_TIMEOUT_S} s: {cmd}")
        raise  # unreachable: pytest.fail raises
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout)
        _fail(
            f"building the tiny model failed (exit {proc.returncode}): {' '.join(cmd)}\n"
            f"{proc.stderr.strip()}"
        )
    if not (dest / "config.json").is_file() or not (dest / "model.safetensors").is_file():
        _fail(f"demo_model.py exited 0 but {dest} is not a complete model")
    return dest


def worker_secret_headers(port: int) -> dict[str, str]:
    """The header a direct request to the worker on `port` needs: the hub's worker secret,
    read from the environment the hub gave that worker (this user may read it)."""
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            secret = psutil.Process(conn.pid).environ().get(SECRET_ENV)
            assert secret, f"the worker on port {port} runs without {SECRET_ENV}"
            return {SECRET_HEADER: secret}
    raise AssertionError(f"no process listens on port {port}")
