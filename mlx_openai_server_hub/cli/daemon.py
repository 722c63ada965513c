"""The hub process itself: `start` (launch it detached, wait for it), `stop`, `serve`."""

import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from mlx_openai_server_hub.cli.fast_status import fetch_status, print_status
from mlx_openai_server_hub.cli.output import echo, fail, flash, isatty, spinner
from mlx_openai_server_hub.cli.progress import Outcome, run_model_actions
from mlx_openai_server_hub.cli.state import PROG_NAME, Cli
from mlx_openai_server_hub.client import (
    HubClient,
    HubHTTPError,
    HubLocation,
    HubUnreachable,
    browse_host,
    locate,
    url_host,
)
from mlx_openai_server_hub.contract import (
    DEFAULT_HOST,
    DEFAULT_LOG_PATH,
    DEFAULT_PORT,
    package_pythonpath,
    read_token,
    runtime_path_for,
    serve_command,
    token_path_for,
)
from mlx_openai_server_hub.process_group import group_alive, pid_alive, terminate_popen_group

if TYPE_CHECKING:
    import subprocess

    from mlx_openai_server_hub.config import HubConfig

# A fresh hub answers /health in a second or two; this only catches a wedged start-up.
STARTUP_TIMEOUT = 60.0
# How long `start` waits for a hub whose runtime file says it is alive to answer.
STARTING_GRACE = 15.0
LOG_TAIL_LINES = 30


# --- start -----------------------------------------------------------------------------------


def _tail(path: Path, lines: int, offset: int = 0) -> list[str]:
    """The last `lines` lines of `path` after byte `offset` (empty when unreadable)."""
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(offset, size - 64 * 1024))
            data = fh.read()
    except OSError:
        return []
    return data.decode("utf-8", errors="replace").splitlines()[-lines:]


def _spawn_hub(cfg: "HubConfig", log_file: Path) -> "subprocess.Popen[bytes]":
    """`serve` in its own session, stdin from /dev/null, output appended to hub.log."""
    import subprocess

    env = dict(os.environ)
    extra = package_pythonpath()
    if extra:  # a source checkout: the hub must import this very package from anywhere
        env["PYTHONPATH"] = os.pathsep.join(p for p in (extra, env.get("PYTHONPATH")) if p)
    with log_file.open("ab") as out:
        return subprocess.Popen(
            serve_command(cfg.source_path),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            # Not wherever `start` ran: a daemon must not pin (or depend on) that folder.
            cwd=cfg.source_path.parent,
            env=env,
        )


def launch_hub(cfg: "HubConfig") -> HubClient:
    """Run `serve` detached, wait for /health; on death or timeout show the log, exit 1."""
    echo("Starting hub manager...")
    log_file = cfg.log_path / "hub.log"
    try:
        cfg.log_path.mkdir(parents=True, exist_ok=True)
        offset = log_file.stat().st_size if log_file.exists() else 0
        proc = _spawn_hub(cfg, log_file)
    except OSError as exc:
        fail(f"Failed to start hub manager: {exc}")
    echo(f"Hub manager process started (PID: {proc.pid})")
    client = HubClient(HubLocation(cfg.host, cfg.port), token_path=cfg.token_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    with spinner("Waiting for the hub to answer"):
        # A short timeout: a dying hub must be noticed even if something else holds the port.
        while not client.is_up(timeout=0.5):
            code = proc.poll()
            if code is not None:
                _startup_died(code, log_file, offset)
            if time.monotonic() > deadline:
                terminate_popen_group(proc)
                fail(
                    f"Hub manager failed to start within {STARTUP_TIMEOUT:.0f} seconds.\n"
                    f"See {log_file}, or run it in the foreground:\n"
                    f"  {PROG_NAME} --config {cfg.source_path} serve"
                )
            time.sleep(0.1)
    echo("Hub manager is now running.")
    # Popen would warn at exit about a child still running: it is meant to outlive us.
    proc.returncode = 0
    return client


def _startup_died(code: int, log_file: Path, offset: int) -> NoReturn:
    echo(
        f"Error: Hub manager exited during start-up (exit code {code}). Last lines of {log_file}:",
        err=True,
    )
    for line in _tail(log_file, LOG_TAIL_LINES, offset) or ["(the log is empty)"]:
        echo(f"  {line}", err=True)
    raise SystemExit(1)


def running_hub(cfg: "HubConfig") -> HubClient | None:
    """A client for the hub if one answers; waits a little for one that is starting."""
    client = HubClient(locate(cfg.host, cfg.port, cfg.runtime_path), token_path=cfg.token_path)
    if client.is_up():
        return client
    pid = client.location.pid
    if pid is None:
        return None
    # Its runtime file says it lives: it may be starting up (or wedged).
    with spinner(f"Waiting for the hub (PID {pid}) to answer"):
        if client.wait_until_up(time.monotonic() + STARTING_GRACE):
            return client
    if not pid_alive(pid):
        return None
    fail(
        f"A hub process (PID {pid}) is running but does not answer at {client.base_url}; "
        f"see {cfg.log_path / 'hub.log'}"
    )


def _start_reporter(cfg: "HubConfig") -> Callable[[Outcome], None]:
    def report(outcome: Outcome) -> None:
        if not outcome.ok:
            flash("err", f"{outcome.name}: start failed ({outcome.error})")
            return
        model = cfg.model(outcome.name)
        # A JIT model is servable at once and loads on its first request.
        done = "started (JIT: loads on first request)" if model and model.jit_enabled else "loaded"
        flash("ok", f"{outcome.name}: {done} in {outcome.elapsed:.1f}s")

    return report


def _start_without_waiting(client: HubClient, names: Sequence[str]) -> bool:
    """Send start requests and wait a second for each; True when one was refused."""
    failed = False
    for name in names:
        try:
            client.model_action(name, "start", timeout=1.0)
            flash("ok", f"{name}: start requested")
        except HubUnreachable as exc:
            if exc.reason != "timed out":
                fail(str(exc))
            # The hub owns the action: it carries on after we hang up.
            flash("info", f"{name}: start requested (not waiting for it)")
        except HubHTTPError as exc:
            flash("err", f"{name}: start failed ({exc})")
            failed = True
    return failed


def _print_status_page(cfg: "HubConfig") -> None:
    echo(f"Status page enabled: {'yes' if cfg.enable_status_page else 'no'}")
    if cfg.enable_status_page:
        host = url_host(browse_host(cfg.host))
        echo(f"Browse to http://{host}:{cfg.port}/hub for the status dashboard")
        _print_login_link(cfg)


def _print_login_link(cfg: "HubConfig") -> None:
    """On a terminal, when other machines can reach the page: a link that signs them in.

    Never printed into a pipe or a file, where the token could end up in a log.
    """
    if cfg.host in ("127.0.0.1", "localhost", "::1") or not isatty(sys.stdout):
        return
    token = read_token(cfg.token_path)
    if token:
        lan_host = url_host(socket.gethostname())
        echo(f"From another machine: http://{lan_host}:{cfg.port}/hub/login?token={token}")


def cmd_start(cli: Cli, model_names: Sequence[str] | None, no_wait: bool) -> None:
    """Start the hub in the background unless it runs; wait for its models; print status."""
    cfg = cli.config()
    names = [n.strip() for n in model_names or () if n.strip()]
    client = running_hub(cfg)
    awaited: list[str] = []
    if client is None:
        client = launch_hub(cfg)
        awaited = [m.name for m in cfg.models if m.default]
    else:
        pid = client.location.pid
        echo(f"Hub manager is already running{f' (PID: {pid})' if pid else ''}.")
    awaited += [n for n in names if n not in awaited]
    failed = False
    if no_wait:
        failed = _start_without_waiting(client, names)
    elif awaited:
        outcomes = run_model_actions(
            client, awaited, "start", _start_reporter(cfg), concurrent=True
        )
        failed = not all(o.ok for o in outcomes)
    _print_status_page(cfg)
    snapshot = fetch_status(client, "Unable to fetch live status")
    print_status(cfg, snapshot, model_names, with_status_page=False)
    if failed:
        fail("One or more models failed to start")


# --- stop ------------------------------------------------------------------------------------


def hub_processes(runtime: dict[str, Any] | None) -> tuple[list[int], list[int]]:
    """(pids, process groups) the hub's runtime file names: the hub, then its workers."""
    if not runtime:
        return [], []
    pids = [runtime["pid"]] if isinstance(runtime.get("pid"), int) else []
    groups = []
    workers = runtime.get("workers")
    for info in workers.values() if isinstance(workers, dict) else ():
        if isinstance(info, dict):
            pids += [info["pid"]] if isinstance(info.get("pid"), int) else []
            groups += [info["pgid"]] if isinstance(info.get("pgid"), int) else []
    return pids, groups


def _wait_gone(client: HubClient, pids: list[int], groups: list[int], deadline: float) -> bool:
    """Wait until the hub stops answering and every pid and group is gone."""
    while time.monotonic() < deadline:
        # Without a runtime file the only sign of life is /health.
        hub_up = client.is_up(timeout=1.0) if not pids else False
        if not hub_up and not any(map(pid_alive, pids)) and not any(map(group_alive, groups)):
            return True
        time.sleep(0.1)
    return False


def _stop_target(cli: Cli) -> tuple[HubClient, float, Path]:
    """(client, shutdown grace, log folder) of the hub to stop.

    A hub.yaml broken since the hub started must not keep anyone from stopping it: when
    it fails validation but still parses, and a hub runs where its `host`, `port` and
    `log_path` say, that hub is stopped.
    """
    from mlx_openai_server_hub.config import ConfigError, load_config

    try:
        cfg = load_config(cli.config_path)
    except ConfigError as exc:
        fallback = _lenient_location(cli.config_path)
        if fallback is None or not (fallback[0].location.runtime or fallback[0].is_up()):
            fail(str(exc))  # no hub to stop: the config problem is the news
        client, log_path = fallback
        flash("warn", f"{exc}; stopping the hub found at {client.base_url} anyway")
        return client, 30.0, log_path
    location = locate(cfg.host, cfg.port, cfg.runtime_path)
    return HubClient(location, token_path=cfg.token_path), cfg.shutdown_grace, cfg.log_path


def _lenient_location(config_path: Path) -> tuple[HubClient, Path] | None:
    """A client from hub.yaml's top-level keys alone, if they make sense; else None."""
    import yaml

    try:
        doc = yaml.safe_load(config_path.read_text(encoding="utf-8-sig"))
        host, port = str(doc.get("host", DEFAULT_HOST)), int(doc.get("port", DEFAULT_PORT))
        log_path = (
            config_path.parent / Path(str(doc.get("log_path", DEFAULT_LOG_PATH))).expanduser()
        )
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError):
        return None
    location = locate(host, port, runtime_path_for(log_path))
    return HubClient(location, token_path=token_path_for(config_path)), log_path


def cmd_stop(cli: Cli) -> None:
    """Ask the hub to shut down, then wait until it and its workers have exited."""
    client, grace, log_path = _stop_target(cli)
    pids, groups = hub_processes(client.location.runtime)
    try:
        client.shutdown()
    except HubUnreachable:
        flash("info", "Hub manager is not running; nothing to stop")
        return
    except HubHTTPError as exc:
        fail(f"Hub shutdown failed: {exc}")
    flash("ok", "Hub manager shutdown requested")
    wait = grace + 60.0
    with spinner("Waiting for the hub and its workers to exit"):
        gone = _wait_gone(client, pids, groups, time.monotonic() + wait)
    if not gone:
        fail(
            f"The hub is still running {wait:.0f}s after the shutdown request; "
            f"see {log_path / 'hub.log'}"
        )
    detail = f" (PID {pids[0]})" if pids else ""
    if len(pids) > 1:
        detail += f" with its {len(pids) - 1} worker(s)"
    flash("ok", f"Hub manager stopped{detail}")


# --- serve -----------------------------------------------------------------------------------


def cmd_serve(cli: Cli, no_stderr_log: bool) -> None:
    """Run the hub in the foreground until it is told to stop; exit with its exit code."""
    from mlx_openai_server_hub.app import serve as run_hub
    from mlx_openai_server_hub.config import ConfigError

    try:
        code = run_hub(cli.config_path, log_to_stderr=not no_stderr_log)
    except ConfigError as exc:
        fail(str(exc))
    raise SystemExit(code)
