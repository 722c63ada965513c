"""Run the hub as a login service: a launchd LaunchAgent on macOS, a systemd user unit on Linux.

Both run `mlx-openai-server-hub --config <abs path> serve --no-stderr-log` with output
appended to `<log_path>/hub.log`, start it at login, and restart it after a crash but not
after a clean `stop` (launchd `KeepAlive = {SuccessfulExit: false}`, systemd
`Restart=on-failure`).
"""

from __future__ import annotations

import os
import plistlib
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import write_atomic
from .contract import CONFIG_ENV_VAR, serve_command
from .contract import package_pythonpath as package_pythonpath

DEFAULT_LABEL = "io.github.mlx-openai-server-hub"
SYSTEMD_UNIT = "mlx-openai-server-hub.service"
# Tests (and the curious on Linux) can force the manager: `launchd` or `systemd`.
MANAGER_ENV_VAR = "MLX_HUB_SERVICE_MANAGER"
# Appended after the directories the hub needs: a launchd agent starts with a bare PATH.
SYSTEM_PATH = ("/opt/homebrew/bin", "/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin")


class ServiceError(Exception):
    """A service-manager step failed; the message is fit to show as is."""


@dataclass(frozen=True)
class ServiceSpec:
    """What the service runs: command, environment and log file."""

    command: list[str]
    environment: dict[str, str]
    log_file: Path
    working_directory: Path


def service_manager(want_systemd: bool = False) -> str | None:
    """`launchd`, `systemd` or None (no supported manager on this platform)."""
    forced = os.environ.get(MANAGER_ENV_VAR, "").strip().lower()
    if forced in ("launchd", "systemd"):
        return forced
    if sys.platform == "darwin":
        return "launchd"
    if want_systemd and sys.platform.startswith("linux"):
        return "systemd"
    return None


def _worker_dirs(config: Any) -> list[str]:
    """Directories of the configured worker executables (hub-wide and per model)."""
    commands = [getattr(config, "worker_command", None)]
    commands += [getattr(m, "worker_command", None) for m in getattr(config, "models", ())]
    dirs: list[str] = []
    for command in commands:
        if command and os.path.isabs(command[0]):
            dirs.append(os.path.dirname(command[0]))
    # Where the default worker lives: beside this interpreter, as pip installs it.
    dirs.append(os.path.dirname(sys.executable))
    return dirs


def service_environment(config: Any) -> dict[str, str]:
    """Environment for the service: a PATH that finds the worker, and the config path."""
    path: list[str] = []
    for entry in [*_worker_dirs(config), *SYSTEM_PATH]:
        if entry not in path:
            path.append(entry)
    env = {
        "PATH": os.pathsep.join(path),
        CONFIG_ENV_VAR: str(config.source_path),
        "PYTHONUNBUFFERED": "1",
    }
    pythonpath = package_pythonpath()
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def service_spec(config: Any) -> ServiceSpec:
    """Everything both service managers need, from a loaded HubConfig."""
    config_path = Path(config.source_path).absolute()
    return ServiceSpec(
        command=serve_command(config_path),
        environment=service_environment(config),
        log_file=Path(config.log_path) / "hub.log",
        working_directory=config_path.parent,
    )


# --- launchd ---------------------------------------------------------------------------------


def plist_path(label: str = DEFAULT_LABEL) -> Path:
    """`~/Library/LaunchAgents/<label>.plist`."""
    return Path.home() / "Library" / "LaunchAgents" / f"{label}.plist"


def build_plist(spec: ServiceSpec, label: str = DEFAULT_LABEL) -> dict[str, Any]:
    """The LaunchAgent property list as a dict."""
    return {
        "Label": label,
        "ProgramArguments": spec.command,
        "WorkingDirectory": str(spec.working_directory),
        "EnvironmentVariables": spec.environment,
        "RunAtLoad": True,
        # Restart after a crash (non-zero exit), not after a clean `stop` (exit 0).
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 10,
        "ProcessType": "Interactive",
        "StandardOutPath": str(spec.log_file),
        "StandardErrorPath": str(spec.log_file),
    }


def render_plist(spec: ServiceSpec, label: str = DEFAULT_LABEL) -> bytes:
    """The LaunchAgent plist as XML bytes."""
    return plistlib.dumps(build_plist(spec, label), sort_keys=False)


def launchd_domain() -> str:
    """`gui/<uid>`: the logged-in user's GUI session domain."""
    return f"gui/{os.getuid()}"


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, check=False)
    except OSError as exc:
        raise ServiceError(f"cannot run {argv[0]}: {exc}") from exc


def _require(tool: str) -> None:
    if shutil.which(tool) is None:
        raise ServiceError(f"{tool} not found on PATH")


def launchd_install(spec: ServiceSpec, label: str = DEFAULT_LABEL) -> Path:
    """Write the plist and bootstrap it into the user's GUI domain; return the plist path."""
    _require("launchctl")
    path = plist_path(label)
    path.parent.mkdir(parents=True, exist_ok=True)
    spec.log_file.parent.mkdir(parents=True, exist_ok=True)
    # bootstrap refuses a label that is already loaded: take the old one out first.
    _run(["launchctl", "bootout", f"{launchd_domain()}/{label}"])
    write_atomic(path, render_plist(spec, label))
    result = _run(["launchctl", "bootstrap", launchd_domain(), str(path)])
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        raise ServiceError(f"launchctl bootstrap failed ({result.returncode}): {detail}")
    return path


def launchd_uninstall(label: str = DEFAULT_LABEL) -> Path | None:
    """Boot the agent out and delete its plist; return the removed path (None if absent)."""
    _require("launchctl")
    path = plist_path(label)
    result = _run(["launchctl", "bootout", f"{launchd_domain()}/{label}"])
    if not path.exists():
        return None
    if result.returncode not in (0, 3, 113):  # 3 / 113: "no such process" (not loaded)
        detail = (result.stderr or result.stdout).strip()
        if "No such process" not in detail and "Could not find" not in detail:
            raise ServiceError(f"launchctl bootout failed ({result.returncode}): {detail}")
    path.unlink()
    return path


def launchd_status(label: str = DEFAULT_LABEL) -> dict[str, str]:
    """Fields of `launchctl print gui/<uid>/<label>`: installed, loaded, state, pid, ..."""
    path = plist_path(label)
    info = {"plist": str(path), "installed": "yes" if path.exists() else "no", "loaded": "no"}
    if shutil.which("launchctl") is None:
        return info
    result = _run(["launchctl", "print", f"{launchd_domain()}/{label}"])
    if result.returncode != 0:
        return info
    info["loaded"] = "yes"
    for line in result.stdout.splitlines():
        key, sep, value = line.strip().partition(" = ")
        if sep and key in ("state", "pid", "last exit code", "runs"):
            info.setdefault(key, value.strip())
    return info


# --- systemd (user) --------------------------------------------------------------------------


def unit_path() -> Path:
    """`~/.config/systemd/user/mlx-openai-server-hub.service` (honours XDG_CONFIG_HOME)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user" / SYSTEMD_UNIT


def _unit_quote(arg: str) -> str:
    """Quote one word for a unit file (`%` is a specifier there, so it is doubled)."""
    arg = arg.replace("%", "%%")
    if arg and not any(c.isspace() or c in "\"'\\" for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(spec: ServiceSpec, shutdown_grace: float = 30.0) -> str:
    """The systemd user unit text."""
    env_lines = "\n".join(
        f"Environment={_unit_quote(f'{k}={v}')}" for k, v in spec.environment.items()
    )
    return (
        "[Unit]\n"
        "Description=mlx-openai-server-hub: MLX models behind one OpenAI-compatible port\n"
        "After=network.target\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={' '.join(_unit_quote(a) for a in spec.command)}\n"
        f"WorkingDirectory={_unit_quote(str(spec.working_directory))}\n"
        f"{env_lines}\n"
        f"StandardOutput=append:{spec.log_file}\n"
        f"StandardError=append:{spec.log_file}\n"
        "# Restart after a crash, not after a clean `mlx-openai-server-hub stop`.\n"
        "Restart=on-failure\n"
        "RestartSec=10\n"
        "# SIGTERM goes to the hub alone: it stops its workers itself.\n"
        "KillMode=mixed\n"
        f"TimeoutStopSec={int(shutdown_grace) + 60}\n"
        "\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


def _systemctl(*args: str) -> subprocess.CompletedProcess[str]:
    return _run(["systemctl", "--user", *args])


def systemd_install(spec: ServiceSpec, shutdown_grace: float = 30.0) -> Path:
    """Write the user unit, then `daemon-reload` and `enable --now` it."""
    _require("systemctl")
    path = unit_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    spec.log_file.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, render_unit(spec, shutdown_grace))
    for args in (("daemon-reload",), ("enable", "--now", SYSTEMD_UNIT)):
        result = _systemctl(*args)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip()
            raise ServiceError(f"systemctl --user {shlex.join(args)} failed: {detail}")
    return path


def systemd_uninstall() -> Path | None:
    """`disable --now` the unit and delete it; return the removed path (None if absent)."""
    _require("systemctl")
    path = unit_path()
    if not path.exists():
        return None
    _systemctl("disable", "--now", SYSTEMD_UNIT)
    path.unlink()
    _systemctl("daemon-reload")
    return path


def systemd_status() -> dict[str, str]:
    """Installed / active state and main pid of the user unit."""
    path = unit_path()
    info = {"unit": str(path), "installed": "yes" if path.exists() else "no"}
    if shutil.which("systemctl") is None:
        return info
    result = _systemctl("show", SYSTEMD_UNIT, "-p", "ActiveState,SubState,MainPID,ExecMainStatus")
    for line in result.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            info[key] = value
    return info
