"""The command against a real hub with fake workers, run as a user would run it."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.cli import REPO, cli_env, run_cli
from tests.conftest import Hub, HubFactory, fake_model

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def cli(hub: Hub, *args: str, env: dict[str, str] | None = None, timeout: float = 120):
    """Run the command against `hub`'s config with its token and test marker."""
    return run_cli(*args, config=hub.config_path, env=cli_env(env or hub.env), timeout=timeout)


def runtime_of(hub: Hub) -> dict:
    return json.loads((hub.log_path / "hub_runtime.json").read_text())


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def table(stdout: str) -> dict[str, list[str]]:
    """Rows of the status/watch table in `stdout`, by name, cells stripped."""
    rows: dict[str, list[str]] = {}
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("NAME "))
    for line in lines[start + 2 :]:
        if not line.startswith("  ") or "|" not in line:
            break
        cells = [c.strip() for c in line.split("|")]
        rows[cells[0]] = cells
    return rows


def run_in_pty(args: list[str], env: dict[str, str], timeout: float = 60) -> tuple[str, int]:
    """Run the command with a terminal as stdout/stderr; (everything it wrote, exit code)."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlx_openai_server_hub", *args],
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=secondary,
        env={**env, "TERM": "xterm"},
        cwd=REPO,
    )
    os.close(secondary)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([primary], [], [], 0.2)
        if ready:
            try:
                data = os.read(primary, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(primary)
    return b"".join(chunks).decode("utf-8", errors="replace"), proc.wait(timeout)


# --- start / status / stop ------------------------------------------------------------------


def test_detached_start_status_and_stop_leave_nothing_behind(hub_factory: HubFactory):
    hub = hub_factory(
        [
            fake_model("alpha", default=True, env={"FAKE_START_DELAY": "1"}),
            fake_model("beta", group="g1", jit_enabled=True, auto_unload_minutes=5),
            fake_model("gamma", model_type="embeddings"),
        ],
        start=False,
    )
    result = cli(hub, "start")
    assert result.returncode == 0, result.stderr + result.stdout
    lines = result.stdout.splitlines()
    assert lines[0] == "Starting hub manager..."
    hub_pid = int(re.fullmatch(r"Hub manager process started \(PID: (\d+)\)", lines[1])[1])
    assert lines[2] == "Hub manager is now running."
    assert re.fullmatch(r"\[ok\] alpha: loaded in \d+\.\ds", lines[3])
    assert lines[4:8] == [
        "Status page enabled: yes",
        f"Browse to http://127.0.0.1:{hub.port}/hub for the status dashboard",
        f"Hub log path: {hub.log_path}",
        "Models:",
    ]
    runtime = runtime_of(hub)
    assert runtime["pid"] == hub_pid and runtime["port"] == hub.port
    worker = runtime["workers"]["alpha"]
    rows = table(result.stdout)
    assert rows["alpha"][1:4] == [
        f"running (pid={worker['pid']}, port={worker['port']})",
        "yes",
        "-",
    ]
    assert rows["beta"][1:6] == ["stopped", "no", "5min", "lm", "g1"]
    assert rows["gamma"][1:3] == ["stopped", "no"]
    # Detached: its own session, so closing the terminal cannot take it down.
    assert os.getsid(hub_pid) == hub_pid
    assert (hub.log_path / "hub.log").stat().st_size > 0

    result = cli(hub, "status")
    assert result.returncode == 0, result.stderr
    assert table(result.stdout)["alpha"][1] == (
        f"running (pid={worker['pid']}, port={worker['port']})"
    )

    result = cli(hub, "start")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"Hub manager is already running (PID: {hub_pid})."
    assert "Starting hub manager" not in result.stdout

    result = cli(hub, "stop")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "[ok] Hub manager shutdown requested",
        f"[ok] Hub manager stopped (PID {hub_pid}) with its 1 worker(s)",
    ]
    # `stop` returned: the hub and its worker are already gone.
    assert gone(hub_pid) and gone(worker["pid"])
    assert hub.leftovers() == []
    assert not (hub.log_path / "hub_runtime.json").exists()

    result = cli(hub, "status")
    assert result.stdout.splitlines()[0] == "[warn] Hub daemon is not running"
    assert table(result.stdout)["alpha"][1] == "inactive"


def test_no_command_means_start(hub_factory: HubFactory):
    hub = hub_factory([fake_model("alpha", default=True)], start=False)
    result = cli(hub)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Starting hub manager...\n")
    assert "[ok] alpha: loaded in " in result.stdout
    assert cli(hub, "stop").returncode == 0
    assert hub.leftovers() == []


def test_start_also_starts_named_models_and_reports_failures(hub_factory: HubFactory):
    hub = hub_factory(
        [
            fake_model("alpha", default=True),
            fake_model("jit", jit_enabled=True),
            fake_model("broken", env={"FAKE_EXIT_AT_START": "3"}),
        ],
        start=False,
    )
    result = cli(hub, "start", "jit", "broken")
    assert result.returncode == 1, result.stdout
    out = result.stdout
    assert re.search(r"^\[ok\] alpha: loaded in \d+\.\ds$", out, re.M)
    assert re.search(r"^\[ok\] jit: started \(JIT: loads on first request\) in", out, re.M)
    assert "[err] broken: start failed (Daemon responded 503: {'error': {'message': " in out
    assert "exited with code 3" in out
    assert set(table(out)) == {"jit", "broken"}  # the names also filter the table
    assert table(out)["broken"][1] == "failed"
    assert result.stderr == "Error: One or more models failed to start\n"
    assert cli(hub, "stop").returncode == 0
    assert hub.leftovers() == []


def test_start_no_wait_returns_while_the_default_loads(hub_factory: HubFactory):
    hub = hub_factory(
        [fake_model("slow", default=True, env={"FAKE_START_DELAY": "8"})], start=False
    )
    began = time.monotonic()
    result = cli(hub, "start", "--no-wait")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - began < 8
    assert table(result.stdout)["slow"][1:3] == ["starting", "no"]
    result = cli(hub, "start-model", "slow")  # joins the load in progress
    assert result.stdout == "[ok] slow: start requested\n"
    assert cli(hub, "stop").returncode == 0
    assert hub.leftovers() == []


def test_the_token_file_is_found_and_a_wrong_token_is_reported(hub_factory: HubFactory):
    hub = hub_factory([fake_model("alpha")], start=False)
    env = {k: v for k, v in hub.env.items() if k != "MLX_HUB_TOKEN"}
    result = cli(hub, "start", env=env)
    assert result.returncode == 0, result.stderr
    token_file = hub.config_path.parent / "hub.token"
    assert token_file.exists()  # the hub made it; the CLI read it
    assert "[warn]" not in result.stdout

    result = cli(hub, "status", env={**env, "MLX_HUB_TOKEN": "wrong-token-0123456789"})
    assert result.returncode == 0
    assert result.stdout.startswith("[warn] Unable to fetch live status: Daemon responded 401: ")
    assert table(result.stdout)["alpha"][1] == "inactive"
    assert cli(hub, "stop", env=env).returncode == 0
    assert hub.leftovers() == []


def test_wildcard_host_is_reached_on_loopback(hub_factory: HubFactory):
    hub = hub_factory([fake_model("alpha", default=True)], start=False, host="0.0.0.0")
    result = cli(hub, "start")
    assert result.returncode == 0, result.stderr
    assert f"Browse to http://localhost:{hub.port}/hub for the status dashboard" in result.stdout
    result = cli(hub, "status")
    assert table(result.stdout)["alpha"][1].startswith("running (pid=")
    assert cli(hub, "stop").returncode == 0
    assert hub.leftovers() == []


def test_stop_waits_for_workers_that_ignore_sigterm(hub_factory: HubFactory):
    hub = hub_factory(
        [
            fake_model(
                "stubborn",
                default=True,
                env={"FAKE_IGNORE_SIGTERM": "1", "FAKE_SPAWN_CHILD": "1"},
            )
        ],
        start=False,
    )
    assert cli(hub, "start").returncode == 0
    runtime = runtime_of(hub)
    pgid = runtime["workers"]["stubborn"]["pgid"]
    result = cli(hub, "stop")
    assert result.returncode == 0, result.stderr
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)  # the worker and the helper it started are gone
    assert gone(runtime["pid"])
    assert hub.leftovers() == []


# --- commands against a running hub ---------------------------------------------------------


def test_model_commands(hub_factory: HubFactory):
    hub = hub_factory(
        [
            fake_model("alpha"),
            fake_model("beta", jit_enabled=True),
            # Longer than the reference's 5 s client timeout: we must wait it out.
            fake_model("slow", env={"FAKE_START_DELAY": "6"}),
        ]
    )
    result = cli(hub, "start-model", "alpha", "beta")
    assert (result.returncode, result.stdout) == (
        0,
        "[ok] alpha: start requested\n[ok] beta: start requested\n",
    )
    began = time.monotonic()
    result = cli(hub, "start-model", "slow")
    assert (result.returncode, result.stdout) == (0, "[ok] slow: start requested\n")
    assert time.monotonic() - began >= 6
    assert table(cli(hub, "status", "slow").stdout)["slow"][2] == "yes"

    result = cli(hub, "start-model", "alpha", "nope")
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "[ok] alpha: start requested",
        "[err] nope: start failed (Daemon responded 404: {'error': {'message': \"Model 'nope' "
        "not found. Registered models: alpha, beta, slow\", 'type': 'invalid_request_error', "
        "'param': None, 'code': '404'}})",
    ]
    assert result.stderr == "Error: One or more models failed to start\n"

    result = cli(hub, "load-model", "beta")
    assert (result.returncode, result.stdout) == (
        0,
        "[ok] beta: memory load requested (Model 'beta' memory load requested)\n",
    )
    assert table(cli(hub, "status").stdout)["beta"][2] == "yes"
    result = cli(hub, "unload-model", "beta", "nope")
    assert result.returncode == 1
    assert result.stdout.splitlines()[0] == (
        "[ok] beta: memory unload requested (Model 'beta' memory unload requested)"
    )
    assert result.stdout.splitlines()[1].startswith("[err] nope: Daemon responded 404: ")
    assert result.stderr == "Error: One or more memory actions failed\n"

    result = cli(hub, "stop-model", "alpha", "slow")
    assert result.returncode == 0
    assert result.stdout == "[ok] alpha: stop requested\n[ok] slow: stop requested\n"
    rows = table(cli(hub, "status").stdout)
    assert rows["alpha"][1:3] == ["stopped", "no"]
    result = cli(hub, "stop-model", "nope")
    assert result.returncode == 1
    assert result.stdout.startswith("[err] nope: stop failed (Daemon responded 404:")


def test_reload(hub_factory: HubFactory):
    hub = hub_factory([fake_model("alpha")])
    result = cli(hub, "reload")
    assert (result.returncode, result.stdout) == (
        0,
        "[info] Hub reload complete: started=none | stopped=none | unchanged=alpha | "
        "restarted=none\n",
    )
    hub.write_config([fake_model("alpha"), fake_model("beta", default=True)])
    result = cli(hub, "reload")
    assert result.returncode == 0
    assert result.stdout == (
        "[ok] Hub reload complete: started=beta | stopped=none | unchanged=alpha | restarted=none\n"
    )
    # The command reads hub.yaml first, so it reports the problem itself.
    hub.config_path.write_text("models: [unclosed\n")
    result = cli(hub, "reload")
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: Failed to parse hub config '{hub.config_path}'")
    assert "Traceback" not in result.stderr


def test_stop_works_after_hub_yaml_was_broken(hub_factory: HubFactory):
    hub = hub_factory([fake_model("alpha", default=True)], start=False)
    assert cli(hub, "start").returncode == 0
    text = hub.config_path.read_text()
    hub.config_path.write_text(text.replace("model_path:", "model_pth:"))
    result = cli(hub, "status")
    assert result.returncode == 1 and result.stderr.startswith("Error: ")
    result = cli(hub, "stop")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("[warn] ")
    assert lines[0].endswith(f"; stopping the hub found at http://127.0.0.1:{hub.port} anyway")
    assert lines[1:] == [
        "[ok] Hub manager shutdown requested",
        f"[ok] Hub manager stopped (PID {lines[2].split('PID ')[1].split(')')[0]}) "
        "with its 1 worker(s)",
    ]
    assert hub.leftovers() == []


def test_watch_shows_real_rows(hub_factory: HubFactory):
    hub = hub_factory([fake_model("alpha", default=True), fake_model("beta")])
    meta = _wait_loaded(hub, "alpha")
    result = cli(hub, "watch", "--count", "2", "--interval", "0.5")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Watching hub manager (press Ctrl+C to stop)..."
    summaries = [line for line in lines if line.startswith("[")]
    assert len(summaries) == 2
    assert re.fullmatch(
        r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] models=2 running=1 stopped=1 failed=0", summaries[0]
    )
    rows = table(result.stdout)
    assert rows["alpha"][:4] == ["alpha", "RUNNING", str(meta["pid"]), "-"]
    assert re.fullmatch(r"\d+s|\d+m\d\ds", rows["alpha"][4])
    assert re.fullmatch(r"\d+(\.\d)? [KMGT]?B|-", rows["alpha"][5])  # MEMORY
    assert rows["alpha"][6:] == ["-", "alpha.log"]
    assert rows["beta"][:6] == ["beta", "STOPPED", "-", "-", "-", "-"]


def test_watch_stops_on_ctrl_c(hub_factory: HubFactory):
    hub = hub_factory([fake_model("alpha")])
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlx_openai_server_hub", "--config", str(hub.config_path),
         "watch", "--interval", "0.5"],
        env=cli_env(hub.env),
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline() == "Watching hub manager (press Ctrl+C to stop)...\n"
    assert "models=1" in proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    rest = proc.stdout.read()
    assert proc.wait(10) == 0
    assert rest.endswith("\nStopped watching hub manager\n")


def _wait_loaded(hub: Hub, name: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = cli(hub, "status", name)
        if table(result.stdout).get(name, ["", "", "no"])[2] == "yes":
            runtime = runtime_of(hub)
            return runtime["workers"][name]
        time.sleep(0.2)
    pytest.fail(f"{name} never loaded")


# --- on a terminal --------------------------------------------------------------------------


def test_progress_and_colours_on_a_terminal(hub_factory: HubFactory):
    hub = hub_factory([fake_model("slow", env={"FAKE_START_DELAY": "2"})])
    env = cli_env(hub.env)
    out, code = run_in_pty(["--config", str(hub.config_path), "start-model", "slow"], env)
    assert code == 0, out
    assert "loading" in out  # the live line showed the state
    assert re.search(r"slow\s+loading\s+\d+\.\ds", ANSI.sub("", out))
    assert "\x1b[1F" in out  # redrawn in place
    assert "\x1b[32m[ok] slow: start requested\x1b[0m" in out  # green on a terminal

    out, code = run_in_pty(
        ["--config", str(hub.config_path), "watch", "--count", "2", "--interval", "0.5"], env
    )
    assert code == 0, out
    # The second snapshot moves the cursor back over the first instead of scrolling.
    frame_lines = 5  # summary, memory, header, divider, one row
    assert f"\x1b[{frame_lines}F" in out
    assert ANSI.sub("", out).count("models=1") == 2


def test_start_prints_a_login_link_only_on_a_terminal_and_for_a_lan_hub(hub_factory: HubFactory):
    # A hub listening on every interface: other machines may open its page.
    hub = hub_factory([fake_model("a")], host="0.0.0.0")
    env = cli_env(hub.env)
    out, code = run_in_pty(["--config", str(hub.config_path), "start", "--no-wait"], env)
    assert code == 0, out
    plain = ANSI.sub("", out)
    link = re.search(r"From another machine: (http://\S+/hub/login\?token=(\S+))", plain)
    assert link and link.group(2) == hub.token
    piped = cli(hub, "start", "--no-wait")
    assert piped.returncode == 0 and "login?token" not in piped.stdout
    assert hub.token not in piped.stdout
