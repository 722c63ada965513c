"""`service install | uninstall | status`: the launchd plist, a fake launchctl, systemd."""

from __future__ import annotations

import os
import plistlib
import stat
import sys
from pathlib import Path

import pytest
import yaml

from tests.cli import cli_env, run_cli

LABEL = "io.github.mlx-openai-server-hub"


def write_config(folder: Path, **top: object) -> Path:
    config = folder / "hub.yaml"
    doc = {
        "host": "127.0.0.1",
        "port": 18555,
        "log_path": str(folder / "logs"),
        "worker_command": ["/opt/worker-venv/bin/mlx-openai-server"],
        "models": [{"name": "alpha", "model_path": "/models/alpha"}],
    }
    doc.update(top)
    config.write_text(yaml.safe_dump(doc))
    return config


def fake_tool(bin_dir: Path, name: str, record: Path, stdout: str = "") -> None:
    """An executable that appends its arguments (one run per line) to `record`."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / name
    script.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{record}"\ncat <<\'OUT\'\n{stdout}\nOUT\nexit 0\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    folder = tmp_path / "home"
    folder.mkdir()
    return folder


def env_for(home: Path, bin_dir: Path | None = None, **extra: str) -> dict[str, str]:
    path = os.environ.get("PATH", "")
    if bin_dir is not None:
        path = f"{bin_dir}{os.pathsep}{path}"
    return cli_env(HOME=str(home), PATH=path, XDG_CONFIG_HOME=str(home / ".config"), **extra)


def test_dry_run_prints_a_plist_that_runs_serve(tmp_path: Path, home: Path):
    config = write_config(tmp_path)
    result = run_cli("service", "install", "--dry-run", config=config, env=env_for(home))
    assert result.returncode == 0, result.stderr
    plist = plistlib.loads(result.stdout.encode())
    assert plist["Label"] == LABEL
    assert plist["ProgramArguments"] == [
        sys.executable,
        "-m",
        "mlx_openai_server_hub",
        "--config",
        str(config),
        "serve",
        "--no-stderr-log",
    ]
    assert plist["RunAtLoad"] is True
    # Restart after a crash, not after a clean `stop`.
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["StandardOutPath"] == str(tmp_path / "logs" / "hub.log")
    assert plist["StandardErrorPath"] == str(tmp_path / "logs" / "hub.log")
    path_dirs = plist["EnvironmentVariables"]["PATH"].split(os.pathsep)
    assert path_dirs[0] == "/opt/worker-venv/bin"  # the worker's folder comes first
    assert os.path.dirname(sys.executable) in path_dirs and "/usr/bin" in path_dirs
    assert plist["EnvironmentVariables"]["MLX_HUB_CONFIG_PATH"] == str(config)
    assert not (home / "Library").exists()  # a dry run changes nothing


def test_install_writes_the_agent_and_bootstraps_it(tmp_path: Path, home: Path):
    config = write_config(tmp_path)
    record = tmp_path / "launchctl.args"
    fake_tool(tmp_path / "bin", "launchctl", record)
    env = env_for(home, tmp_path / "bin", MLX_HUB_SERVICE_MANAGER="launchd")

    result = run_cli("service", "install", config=config, env=env)
    assert result.returncode == 0, result.stderr
    plist_file = home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    assert f"[ok] Installed {plist_file}" in result.stdout
    plist = plistlib.loads(plist_file.read_bytes())
    assert plist["ProgramArguments"][-3:] == [str(config), "serve", "--no-stderr-log"]
    uid = os.getuid()
    assert record.read_text().splitlines() == [
        f"bootout gui/{uid}/{LABEL}",
        f"bootstrap gui/{uid} {plist_file}",
    ]
    assert (tmp_path / "logs").is_dir()  # launchd would not create the log folder

    record.unlink()
    result = run_cli("service", "uninstall", config=config, env=env)
    assert result.returncode == 0, result.stderr
    assert f"[ok] Removed {plist_file}" in result.stdout
    assert not plist_file.exists()
    assert record.read_text().splitlines() == [f"bootout gui/{uid}/{LABEL}"]

    result = run_cli("service", "uninstall", config=config, env=env)
    assert "[info] The service is not installed; nothing to remove" in result.stdout


def test_install_with_a_custom_label(tmp_path: Path, home: Path):
    config = write_config(tmp_path)
    fake_tool(tmp_path / "bin", "launchctl", tmp_path / "record")
    env = env_for(home, tmp_path / "bin", MLX_HUB_SERVICE_MANAGER="launchd")
    result = run_cli("service", "install", "--label", "com.example.hub", config=config, env=env)
    assert result.returncode == 0, result.stderr
    plist = plistlib.loads((home / "Library/LaunchAgents/com.example.hub.plist").read_bytes())
    assert plist["Label"] == "com.example.hub"


def test_status_reads_launchctl_print(tmp_path: Path, home: Path):
    config = write_config(tmp_path)
    printed = "gui/501/x = {\n\tstate = running\n\tpid = 4321\n\tlast exit code = 0\n}"
    fake_tool(tmp_path / "bin", "launchctl", tmp_path / "record", stdout=printed)
    env = env_for(home, tmp_path / "bin", MLX_HUB_SERVICE_MANAGER="launchd")
    result = run_cli("service", "status", config=config, env=env)
    assert result.returncode == 0, result.stderr
    assert "Service manager: launchd" in result.stdout
    assert "installed: no" in result.stdout
    assert "state: running" in result.stdout and "pid: 4321" in result.stdout


@pytest.mark.skipif(sys.platform == "darwin", reason="checks the non-macOS message")
def test_install_on_linux_explains_that_launchd_is_macos_only(tmp_path: Path, home: Path):
    config = write_config(tmp_path)
    result = run_cli("service", "install", config=config, env=env_for(home))
    assert result.returncode == 1
    assert "launchd is macOS-only" in result.stderr
    assert "--systemd" in result.stderr
    assert not (home / "Library").exists()


def test_systemd_user_unit(tmp_path: Path, home: Path):
    config = write_config(tmp_path, shutdown_grace=10)
    dry = run_cli(
        "service",
        "install",
        "--systemd",
        "--dry-run",
        config=config,
        env=env_for(home, MLX_HUB_SERVICE_MANAGER="systemd"),
    )
    assert dry.returncode == 0, dry.stderr
    assert f"--config {config} serve --no-stderr-log" in dry.stdout
    assert "Restart=on-failure" in dry.stdout
    assert f"StandardOutput=append:{tmp_path / 'logs' / 'hub.log'}" in dry.stdout
    assert "TimeoutStopSec=70" in dry.stdout

    record = tmp_path / "systemctl.args"
    fake_tool(tmp_path / "bin", "systemctl", record)
    env = env_for(home, tmp_path / "bin", MLX_HUB_SERVICE_MANAGER="systemd")
    result = run_cli("service", "install", "--systemd", config=config, env=env)
    assert result.returncode == 0, result.stderr
    unit = home / ".config" / "systemd" / "user" / "mlx-openai-server-hub.service"
    assert unit.read_text() == dry.stdout
    assert record.read_text().splitlines() == [
        "--user daemon-reload",
        "--user enable --now mlx-openai-server-hub.service",
    ]
    result = run_cli("service", "uninstall", config=config, env=env)
    assert result.returncode == 0, result.stderr
    assert not unit.exists()


def test_install_refuses_while_a_hub_runs(tmp_path: Path, home: Path):
    config = write_config(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    # Our own pid is alive and its command line names the package (pytest imports it).
    (logs / "hub_runtime.json").write_text(
        f'{{"pid": {os.getpid()}, "host": "127.0.0.1", "port": 18555}}'
    )
    fake_tool(tmp_path / "bin", "launchctl", tmp_path / "record")
    env = env_for(home, tmp_path / "bin", MLX_HUB_SERVICE_MANAGER="launchd")
    result = run_cli("service", "install", config=config, env=env)
    assert result.returncode == 1
    assert f"A hub is already running (PID {os.getpid()})" in result.stderr
    assert not (tmp_path / "record").exists()
