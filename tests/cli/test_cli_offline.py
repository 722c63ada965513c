"""The command without a running hub: help, version, status from the config, bad configs,
`init`, `logs`, and the reference's "not running" wording."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlx_openai_server_hub import __version__
from tests.cli import REPO, cli_env, run_cli

COMMANDS = (
    "start", "status", "reload", "stop", "start-model", "stop-model", "load-model",
    "unload-model", "watch", "logs", "serve", "init", "service",
)  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "hub.yaml"
    doc = {
        "host": "127.0.0.1",
        "port": free_port(),
        "log_path": str(tmp_path / "logs"),
        "models": [
            {"name": "alpha", "model_path": "/models/alpha", "default": True},
            {
                "name": "beta",
                "model_path": "/models/beta",
                "group": "g1",
                "jit_enabled": True,
                "auto_unload_minutes": 5,
            },
            {"name": "gamma", "model_path": "org/gamma", "model_type": "embeddings"},
        ],
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def port_of(config: Path) -> int:
    return int(yaml.safe_load(config.read_text())["port"])


def test_version_and_help():
    result = run_cli("--version")
    assert (result.returncode, result.stdout) == (0, f"mlx-openai-server-hub {__version__}\n")
    result = run_cli("--help")
    assert result.returncode == 0
    assert "Manage hub-based multi-model deployments" in result.stdout
    for command in COMMANDS:
        assert f"\n  {command} " in result.stdout, command
    assert "--install-completion" in result.stdout  # shell completion


def test_status_with_the_hub_down_prints_the_config_table(config: Path, tmp_path: Path):
    result = run_cli("status", config=config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "[warn] Hub daemon is not running",
        f"Hub log path: {tmp_path / 'logs'}",
        "Status page enabled: yes",
        "Models:",
        "  NAME  | STATE    | LOADED | AUTO-UNLOAD | TYPE       | GROUP | DEFAULT | MEMORY "
        "| MODEL        ",
        "  ------+----------+--------+-------------+------------+-------+---------+--------"
        "+--------------",
        "  alpha | inactive | no     | -           | lm         | -     | ✓       | -      "
        "| /models/alpha",
        "  beta  | inactive | no     | 5min        | lm         | g1    | -       | -      "
        "| /models/beta ",
        "  gamma | inactive | no     | -           | embeddings | -     | -       | -      "
        "| org/gamma    ",
    ]  # no memory line: the hub is down
    assert not (tmp_path / "logs").exists()  # status creates nothing


def test_status_filters_by_name(config: Path):
    result = run_cli("status", " beta ", config=config)
    assert [line.split("|")[0].strip() for line in result.stdout.splitlines()[-1:]] == ["beta"]
    result = run_cli("status", "nope", config=config)
    assert result.returncode == 0
    assert result.stdout.splitlines()[-1] == "No matching models in hub config"


def test_config_comes_from_the_environment_variable(config: Path):
    result = run_cli("status", env=cli_env(MLX_HUB_CONFIG_PATH=str(config)))
    assert result.returncode == 0, result.stderr
    assert "alpha" in result.stdout


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "Hub config file not found: {path}"),
        ("models: [unclosed\n", "Failed to parse hub config '{path}'"),
        ("- a\n- b\n", "Hub config root must be a mapping"),
        ("models:\n  - name: a\n    model_path: /m\n    bogus: 1\n", "bogus"),
        (
            "models:\n  - name: a\n    model_path: /m\n    auto_unload_minutes: 5\n",
            "Auto-unload requires JIT loading to be enabled",
        ),
    ],
)
@pytest.mark.parametrize("command", ["status", "start", "stop", "reload"])
def test_a_config_problem_is_one_error_line(
    tmp_path: Path, text: str | None, message: str, command: str
):
    path = tmp_path / "hub.yaml"
    if text is not None:
        path.write_text(text)
    result = run_cli(command, config=path)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ")
    assert message.format(path=path) in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_actions_against_a_stopped_hub_use_the_reference_wording(config: Path):
    base = f"http://127.0.0.1:{port_of(config)}"
    refused = f"Failed to contact hub daemon at {base}: [Errno 111] Connection refused"

    result = run_cli("stop", config=config)
    assert (result.returncode, result.stdout) == (
        0,
        "[info] Hub manager is not running; nothing to stop\n",
    )
    result = run_cli("reload", config=config)
    assert result.returncode == 1
    assert result.stderr == f"Error: Hub reload failed: {refused}\n"

    result = run_cli("start-model", "alpha", config=config)
    assert result.returncode == 1
    assert result.stdout == f"[err] alpha: start failed ({refused})\n"
    assert result.stderr == "Error: One or more models failed to start\n"

    result = run_cli("unload-model", "alpha", config=config)
    assert result.returncode == 1
    assert result.stdout == f"[err] alpha: {refused}\n"
    assert result.stderr == "Error: One or more memory actions failed\n"

    result = run_cli("watch", "--count", "1", config=config)
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        "Watching hub manager (press Ctrl+C to stop)...",
        "Hub daemon is not running. Start it via 'mlx-openai-server-hub start'.",
    ]


def test_usage_errors_exit_2(config: Path):
    for command in ("start-model", "stop-model", "load-model", "unload-model"):
        result = run_cli(command, config=config)
        assert result.returncode == 2, command
        # As in the reference: the usage line and the error name `MODEL_NAMES...`.
        assert f"Usage: mlx-openai-server-hub {command} [OPTIONS] MODEL_NAMES..." in result.stderr
        assert "Error: Missing argument 'MODEL_NAMES...'." in result.stderr
    result = run_cli("start-model", " ", "", config=config)
    assert result.returncode == 2
    assert result.stdout.count("[warn] Skipping blank model name entry") == 2
    assert "Error: Missing argument 'MODEL_NAMES...'." in result.stderr
    result = run_cli("load-model", " ", config=config)
    assert result.returncode == 1
    assert result.stdout == "[warn] Skipping blank model name entry\n"
    assert result.stderr == "Error: One or more memory actions failed\n"
    result = run_cli("watch", "--interval", "0.1", config=config)
    assert result.returncode == 2


def test_logs(config: Path, tmp_path: Path):
    result = run_cli("logs", config=config)
    assert result.returncode == 1
    assert result.stderr == f"Error: No log file yet: {tmp_path / 'logs' / 'hub.log'}\n"
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "hub.log").write_text("".join(f"line {i}\n" for i in range(150)))
    (tmp_path / "logs" / "beta.log").write_text("beta 1\nbeta 2\n")
    result = run_cli("logs", config=config)
    assert result.stdout.splitlines() == [f"line {i}" for i in range(50, 150)]
    assert run_cli("logs", "-n", "2", config=config).stdout == "line 148\nline 149\n"
    assert len(run_cli("logs", "-n", "0", config=config).stdout.splitlines()) == 150
    assert run_cli("logs", "beta", config=config).stdout == "beta 1\nbeta 2\n"
    result = run_cli("logs", "nope", config=config)
    assert result.returncode == 1 and "Unknown model 'nope'" in result.stderr


def test_logs_follow_survives_rotation(config: Path, tmp_path: Path):
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "hub.log"
    log.write_text("old\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlx_openai_server_hub", "--config", str(config), "logs", "-f"],
        env=cli_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "old\n"
        with log.open("a") as fh:
            fh.write("appended\n")
        assert proc.stdout.readline() == "appended\n"
        log.rename(logs / "hub.log.1")  # what a rotating logger does
        log.write_text("fresh\n")
        assert proc.stdout.readline() == "fresh\n"
    finally:
        proc.send_signal(2)
        assert proc.wait(10) == 0


def test_init_writes_a_starter_config_and_refuses_to_overwrite(tmp_path: Path):
    path = tmp_path / "sub" / "hub.yaml"
    result = run_cli("init", config=path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"[ok] Wrote {path}",
        f"Next: mlx-openai-server-hub --config {path} start",
    ]
    text = path.read_text()
    assert "# port: 8000" in text and "models:" in text
    assert run_cli("status", config=path).returncode == 0  # the starter config loads

    path.write_text("mine\n")
    result = run_cli("init", config=path)
    assert result.returncode == 1
    assert result.stderr == f"Error: {path} already exists; not overwriting it\n"
    assert path.read_text() == "mine\n"


def test_init_demo_builds_the_model_with_the_workers_python(tmp_path: Path):
    # A stand-in worker venv: the worker's shebang names its python, which here only
    # records how demo_model.py was run and creates the output folder.
    venv = tmp_path / "worker-venv" / "bin"
    venv.mkdir(parents=True)
    record = tmp_path / "python.args"
    python = venv / "python3.11"
    python.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" > "{record}"\n'
        f'echo "HF_HUB_OFFLINE=$HF_HUB_OFFLINE" >> "{record}"\n'
        'mkdir -p "$2" && echo "$2"\n'
    )
    worker = venv / "mlx-openai-server"
    worker.write_text(f"#!{python}\nimport sys\n")
    for exe in (python, worker):
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR)

    path = tmp_path / "home" / "hub.yaml"
    result = run_cli("init", "--demo", "--worker-command", str(worker), config=path)
    assert result.returncode == 0, result.stderr
    model_dir = tmp_path / "home" / "models" / "tiny-demo"
    script = Path(__file__).resolve().parents[2] / "mlx_openai_server_hub" / "demo_model.py"
    assert record.read_text().splitlines() == [str(script), str(model_dir), "HF_HUB_OFFLINE=1"]
    doc = yaml.safe_load(path.read_text())
    assert doc["worker_command"] == [str(worker)]
    [entry] = doc["models"]
    assert entry["model_path"] == str(model_dir)
    assert entry["default"] is True
    assert entry["env"] == {"HF_HUB_OFFLINE": "1"}
    assert f"[ok] Wrote {path}" in result.stdout


def test_init_demo_without_a_worker_says_how_to_get_one(tmp_path: Path):
    path = tmp_path / "hub.yaml"
    env = cli_env(PATH="/nonexistent")
    result = run_cli("init", "--demo", config=path, env=env)
    if (Path(sys.executable).parent / "mlx-openai-server").exists():
        pytest.skip("a worker is installed beside this Python")
    assert result.returncode == 1
    assert "No mlx-openai-server worker found" in result.stderr
    assert "scripts/setup-worker.sh" in result.stderr
    assert not path.exists()


def test_start_reports_a_hub_that_dies_at_once(config: Path, tmp_path: Path):
    # Something else holds the hub's port: the hub exits; `start` must say so at once.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port_of(config)))
        holder.listen()
        result = run_cli("start", config=config, timeout=60)
    assert result.returncode == 1
    assert result.stdout.splitlines()[0] == "Starting hub manager..."
    assert "Hub manager process started (PID: " in result.stdout
    assert "Error: Hub manager exited during start-up (exit code 1)" in result.stderr
    assert "Cannot listen on 127.0.0.1" in result.stderr  # the log tail
    pid = int(result.stdout.split("PID: ")[1].split(")")[0])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_status_stays_off_typer_pydantic_and_aiohttp(config: Path):
    code = (
        "import sys\n"
        "from mlx_openai_server_hub.cli import main\n"
        f"main(['--config', {str(config)!r}, 'status'])\n"
        "heavy = {'typer', 'pydantic', 'aiohttp', 'psutil'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
