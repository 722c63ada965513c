"""`logs` through a running hub's `/hub/logs`, and from the files when no hub answers."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import yaml

from mlx_openai_server_hub import logs_api
from mlx_openai_server_hub.cli.logs import HUB_MAX_LINES
from mlx_openai_server_hub.client import sse_data
from tests.cli import REPO, cli_env, run_cli
from tests.conftest import TEST_TOKEN, Hub, HubFactory, fake_model, free_port


def remote_config(folder: Path, port: int) -> Path:
    """A hub.yaml on "another machine": the hub's address, but a log folder of its own
    (empty), so whatever `logs` prints came over HTTP."""
    folder.mkdir()
    path = folder / "hub.yaml"
    doc = {
        "host": "127.0.0.1",
        "port": port,
        "log_path": str(folder / "logs"),
        "models": [{"name": "alpha", "model_path": "/models/alpha"}],
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def logs_cli(config: Path, *args: str, token: str = TEST_TOKEN):
    return run_cli("logs", *args, config=config, env=cli_env(MLX_HUB_TOKEN=token))


def follower(config: Path, *args: str) -> subprocess.Popen[str]:
    """`logs -f ARGS` running, its output piped."""
    command = [sys.executable, "-m", "mlx_openai_server_hub", "--config", str(config)]
    return subprocess.Popen(
        [*command, "logs", "-f", *args],
        env=cli_env(MLX_HUB_TOKEN=TEST_TOKEN),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def started_hub(hub_factory: HubFactory) -> tuple[Hub, Path]:
    hub = hub_factory([fake_model("alpha"), fake_model("beta", no_log_file=True)])
    log = hub.log_path / "alpha.log"
    log.write_text("".join(f"line {i}\n" for i in range(5)))
    return hub, log


def test_logs_come_from_the_hub(hub_factory: HubFactory, tmp_path: Path):
    hub, _log = started_hub(hub_factory)
    config = remote_config(tmp_path / "client", hub.port)

    result = logs_cli(config, "alpha", "-n", "2")
    assert (result.returncode, result.stdout) == (0, "line 3\nline 4\n"), result.stderr
    result = logs_cli(config, "alpha", "-n", "0")  # all (up to the hub's maximum)
    assert result.stdout.splitlines() == [f"line {i}" for i in range(5)]
    result = logs_cli(config, "alpha", "-n", str(HUB_MAX_LINES + 1))
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 5
    # The hub's own log: it exists on the hub's side only.
    result = logs_cli(config, "-n", "3")
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 3

    # The hub's refusals, in its words.
    result = logs_cli(config, "nope")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: Model 'nope' not found.")
    result = logs_cli(config, "beta")
    assert result.returncode == 1
    assert result.stderr == "Error: Model 'beta' has no log file (no_log_file is set)\n"
    result = logs_cli(config, "alpha", token="wrong-token-0123456789")
    assert result.returncode == 1 and result.stderr.startswith("Error: ")
    assert "line" not in result.stdout


def test_logs_follow_through_the_hub_across_rotation(hub_factory: HubFactory, tmp_path: Path):
    hub, log = started_hub(hub_factory)
    config = remote_config(tmp_path / "client", hub.port)
    proc = follower(config, "alpha", "-n", "1")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "line 4\n"
        with log.open("a") as fh:
            fh.write("appended\nbar 10%\rbar 20%\n")
        assert proc.stdout.readline() == "appended\n"
        # A bare CR ends an SSE field: the hub sends two, the command prints two lines.
        assert [proc.stdout.readline(), proc.stdout.readline()] == ["bar 10%\n", "bar 20%\n"]
        log.rename(log.with_name("alpha.log.1"))  # what a rotating logger does
        log.write_text("fresh\n")
        assert proc.stdout.readline() == "fresh\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.wait()


def test_logs_follow_ends_when_the_hub_stops(hub_factory: HubFactory, tmp_path: Path):
    hub, _log = started_hub(hub_factory)
    proc = follower(remote_config(tmp_path / "client", hub.port), "alpha", "-n", "5")
    try:
        assert proc.stdout is not None
        assert [proc.stdout.readline() for _ in range(5)] == [f"line {i}\n" for i in range(5)]
        assert hub.terminate() == 0
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0 and out == ""
        assert "The hub ended the log stream" in err
    finally:
        proc.kill()
        proc.wait()


def test_without_a_hub_the_files_are_read(tmp_path: Path):
    # Nothing listens on the configured port: the local files are read, as before.
    config = remote_config(tmp_path / "here", free_port())
    logs = tmp_path / "here" / "logs"
    logs.mkdir()
    # A last line still being written, and a character cut between two reads would be
    # whole in the output all the same.
    (logs / "alpha.log").write_bytes("one\ntwo\nthré\nfour".encode())
    assert logs_cli(config, "alpha", "-n", "2").stdout == "thré\nfour"
    assert logs_cli(config, "alpha", "-n", "0").stdout == "one\ntwo\nthré\nfour"
    result = logs_cli(config, "-n", "1")
    assert result.returncode == 1
    assert result.stderr == f"Error: No log file yet: {logs / 'hub.log'}\n"
    result = logs_cli(config, "nope")
    assert result.returncode == 1 and "Unknown model 'nope'" in result.stderr


def test_sse_data_joins_lines_and_skips_comments():
    stream = [
        b": keep-alive\n",
        b"\n",
        b"data: one\n",
        b"\n",
        b"data: two\r\n",
        b"data:three\n",
        b"id: 7\n",
        b"\n",
        b"data: \n",
        b"\n",
        b"data: cut off",
    ]
    assert list(sse_data(stream)) == ["one", "two\nthree", ""]


def test_the_cli_asks_for_at_most_what_the_hub_sends():
    assert HUB_MAX_LINES == logs_api.MAX_LINES
