"""`init`: write a starter hub.yaml; with `--demo`, build a tiny local model for it."""

import os
from pathlib import Path

from mlx_openai_server_hub.cli.output import echo, fail, flash, spinner
from mlx_openai_server_hub.cli.state import PROG_NAME, Cli


def _default_worker() -> Path | None:
    # The hub's own rule for finding it.
    from mlx_openai_server_hub.worker import default_worker_executable

    return default_worker_executable()


def _shebang_python(exe: Path) -> str | None:
    """The interpreter a console script names (plain shebang or pip's /bin/sh trampoline)."""
    try:
        with exe.open("rb") as fh:
            head = fh.read(1024).decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None
    if not head or not head[0].startswith("#!"):
        return None
    first = head[0][2:].strip().split()
    if first and first[0].endswith("/sh") and len(head) > 1:
        # pip writes  #!/bin/sh  +  '''exec' "/long/path/python" "$0" "$@"  for long paths.
        parts = head[1].split('"')
        return parts[1] if len(parts) > 1 and parts[1] else None
    return first[0] if first else None


def worker_python(exe: Path) -> Path | None:
    """The Python of the worker's environment: its shebang, else a sibling `python`."""
    shebang = _shebang_python(exe)
    if shebang and Path(shebang).is_file():
        return Path(shebang)
    for name in ("python", "python3"):
        sibling = exe.parent / name
        if sibling.is_file() and os.access(sibling, os.X_OK):
            return sibling
    return None


def build_demo_model(worker: Path, outdir: Path) -> None:
    """Run demo_model.py under the worker's Python (which has mlx) to build the tiny model."""
    import subprocess

    python = worker_python(worker)
    if python is None:
        fail(f"Cannot find the Python interpreter of the worker {worker}")
    script = Path(__file__).resolve().parents[1] / "demo_model.py"
    echo(f"Building the tiny demo model in {outdir} (with {python})...")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with spinner("Building the tiny demo model"):
        result = subprocess.run(
            [str(python), str(script), str(outdir)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    if result.returncode != 0:
        echo(result.stderr.rstrip(), err=True)
        fail(f"Building the demo model failed (exit code {result.returncode})")
    flash("ok", f"Demo model ready: {outdir}")


def _demo_env(text: str) -> str:
    """Give the demo model `env: {HF_HUB_OFFLINE: "1"}`: it is local, never fetch anything."""
    marker = "    # env: {HF_HUB_OFFLINE"
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith(marker):
            lines.insert(i, '    env: {HF_HUB_OFFLINE: "1"}  # the demo model is local\n')
            return "".join(lines)
    anchor = next(i for i, line in enumerate(lines) if "model_path:" in line)
    lines.insert(anchor + 1, '    env: {HF_HUB_OFFLINE: "1"}\n')
    return "".join(lines)


def _write_new(path: Path, text: str) -> None:
    """Create `path` with `text`; refuse (exit 1) when it exists, even if created meanwhile.

    The file is 0600 and a new folder 0700: hub.yaml may come to hold `api_keys`.
    """
    from mlx_openai_server_hub.atomic import write_atomic

    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        write_atomic(path, text, mode=0o600, exclusive=True)
    except FileExistsError:
        fail(f"{path} already exists; not overwriting it")


def cmd_init(cli: Cli, demo: bool, worker_command: Path | None, model_path: str | None) -> None:
    """Write a starter hub.yaml; with --demo, build the tiny model first and use it."""
    from mlx_openai_server_hub.starter_config import render_starter_config

    path = cli.config_path
    if path.exists():
        fail(f"{path} already exists; not overwriting it")
    worker = worker_command.expanduser().absolute() if worker_command else None
    if demo:
        worker = worker or _default_worker()
        if worker is None or not worker.is_file():
            fail(
                "No mlx-openai-server worker found; pass --worker-command PATH "
                "(on Linux, scripts/setup-worker.sh installs one and prints its path)"
            )
        model_path = str(path.parent / "models" / "tiny-demo")
        build_demo_model(worker, Path(model_path))
    text = render_starter_config(
        model_path=model_path, worker_command=[str(worker)] if worker else None
    )
    if demo:
        text = _demo_env(text)
    _write_new(path, text)
    flash("ok", f"Wrote {path}")
    echo(f"Next: {PROG_NAME}{_config_flag(path)} start")


def _config_flag(path: Path) -> str:
    """` --config PATH` unless PATH is what the command would find anyway."""
    from mlx_openai_server_hub.config import resolve_config_path

    return "" if path == resolve_config_path(None) else f" --config {path}"
