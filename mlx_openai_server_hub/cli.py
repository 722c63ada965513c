"""The `mlx-openai-server-hub` command.

Mirrors the reference's `mlx-openai-server hub <command>` (same lines, tables and exit
codes) and fixes its gaps: no client timeouts that give up while the hub keeps working,
per-model failures exit 1, `stop` waits for the hub and its workers to be gone, `watch`
shows real rows.

Start-up must stay fast (`status` well under 300 ms), so this module is in two layers:

- the commands themselves (`cmd_*`), written against the standard library, the HTTP
  client and the config loader only; they print with `echo`/`flash` and end with
  `SystemExit`;
- the Typer surface (`build_app`), which imports Typer (and, through it, pydantic) only
  when it is needed. `main()` runs the common `status` invocation without it.

The server (`app`, aiohttp), the service helpers and the starter-config writer are
imported inside the commands that use them.
"""

import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

from mlx_openai_server_hub import __version__, tables
from mlx_openai_server_hub.client import (
    HubClient,
    HubClientError,
    HubHTTPError,
    HubLocation,
    HubUnreachable,
    browse_host,
    locate,
    pid_alive,
    url_host,
)

if TYPE_CHECKING:
    import subprocess

    import typer

    from mlx_openai_server_hub.config import HubConfig

PROG_NAME = "mlx-openai-server-hub"
# A fresh hub answers /health in a second or two; this only catches a wedged start-up.
STARTUP_TIMEOUT = 60.0
# How long `start` waits for a hub whose runtime file says it is alive to answer.
STARTING_GRACE = 15.0
LOG_TAIL_LINES = 30
CONFIG_HELP = (
    "Path to hub YAML (default: ~/mlx-openai-server-hub/hub.yaml, or $MLX_HUB_CONFIG_PATH)"
)


# --- output ----------------------------------------------------------------------------------

_COLOURS = {"cyan": 36, "green": 32, "yellow": 33, "red": 31}
_FLASH = {
    "info": ("[info]", "cyan"),
    "ok": ("[ok]", "green"),
    "warn": ("[warn]", "yellow"),
    "err": ("[err]", "red"),
}


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def echo(message: str = "", *, err: bool = False, colour: str | None = None) -> None:
    """Print a line; `colour` applies only when the stream is a terminal (like click)."""
    stream = sys.stderr if err else sys.stdout
    if colour and _isatty(stream):
        message = f"\x1b[{_COLOURS[colour]}m{message}\x1b[0m"
    stream.write(message + "\n")
    stream.flush()


def flash(kind: str, message: str) -> None:
    """Print a `[ok]`/`[info]`/`[warn]`/`[err]` line, coloured only on a terminal."""
    prefix, colour = _FLASH[kind]
    echo(f"{prefix} {message}", colour=colour)


def fail(message: str, code: int = 1) -> NoReturn:
    """`Error: <message>` on stderr, then exit with `code`."""
    echo(f"Error: {message}", err=True)
    raise SystemExit(code)


def interactive() -> bool:
    """True when stdout is a terminal that understands cursor movement."""
    return _isatty(sys.stdout) and os.environ.get("TERM", "") != "dumb"


def _utf8() -> bool:
    return "utf" in (getattr(sys.stdout, "encoding", None) or "").lower()


def _spinner_frames() -> str:
    return "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏" if _utf8() else "|/-\\"


def _marks() -> tuple[str, str]:
    return ("✓", "✗") if _utf8() else ("+", "x")


def _terminal_width() -> int:
    """Columns of the terminal (like shutil.get_terminal_size, without importing shutil)."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.stdout.fileno()).columns
        except (OSError, ValueError):
            columns = 0
    return columns or 80  # a fresh pty reports 0


class LiveBlock:
    """A block of lines redrawn in place on a terminal (lines are cut to the width)."""

    def __init__(self) -> None:
        self._count = 0
        self._lock = threading.Lock()

    def draw(self, lines: Sequence[str]) -> None:
        """Replace the block with `lines`."""
        width = max(_terminal_width() - 1, 20)
        parts = [f"\x1b[{self._count}F"] if self._count else []
        parts += [f"\x1b[2K{line[:width]}\n" for line in lines]
        parts.append("\x1b[J")
        with self._lock:
            sys.stdout.write("".join(parts))
            sys.stdout.flush()
            self._count = len(lines)

    def clear(self) -> None:
        """Erase the block, leaving the cursor where it began."""
        with self._lock:
            if self._count:
                sys.stdout.write(f"\x1b[{self._count}F\x1b[J")
                sys.stdout.flush()
            self._count = 0


@contextmanager
def spinner(label: str) -> Iterator[None]:
    """Show `⠋ <label> <elapsed>s` on a terminal while the body runs; nothing otherwise."""
    if not interactive():
        yield
        return
    block, done = LiveBlock(), threading.Event()
    frames, began = _spinner_frames(), time.monotonic()

    def run() -> None:
        tick = 0
        while not done.is_set():
            elapsed = time.monotonic() - began
            block.draw([f"{frames[tick % len(frames)]} {label} {elapsed:.0f}s"])
            tick += 1
            done.wait(0.1)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        block.clear()


# --- per-invocation state --------------------------------------------------------------------


@dataclass
class Cli:
    """Per-invocation state: the config path, and the config once loaded."""

    config_path: Path
    _config: "HubConfig | None" = None

    def config(self) -> "HubConfig":
        """The loaded hub.yaml; a config problem ends the command with `Error: <msg>`."""
        if self._config is None:
            from mlx_openai_server_hub.config import ConfigError, load_config

            try:
                self._config = load_config(self.config_path)
            except ConfigError as exc:
                fail(str(exc))
        return self._config

    def client(self) -> HubClient:
        """A client for the hub this config describes (its runtime file first)."""
        cfg = self.config()
        location = locate(cfg.host, cfg.port, cfg.runtime_path)
        return HubClient(location, token_path=cfg.token_path)


def make_cli(config: Path | str | None) -> Cli:
    """State for a command run with `--config config` (None: env var or default)."""
    from mlx_openai_server_hub.config import resolve_config_path

    return Cli(resolve_config_path(config))


# --- model actions with progress ------------------------------------------------------------


@dataclass
class Outcome:
    """The result of one model action."""

    name: str
    ok: bool = False
    result: Any = None
    error: HubClientError | None = None
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def elapsed(self) -> float:
        """Seconds the action took (so far)."""
        return (self.finished or time.monotonic()) - self.started


class StatusPoller:
    """Keeps the latest /hub/status metadata per model, for progress lines."""

    def __init__(self, client: HubClient, interval: float = 0.5) -> None:
        self.meta: dict[str, dict[str, Any]] = {}
        self._client, self._interval = client, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        """Begin polling in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop polling (the thread ends after its current request)."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                snapshot = self._client.status(timeout=5.0)
                self.meta = {
                    str(e.get("id")): tables.metadata_of(e) for e in snapshot.get("models") or ()
                }
            except (HubClientError, AttributeError):
                pass
            self._stop.wait(self._interval)


def phase_of(meta: dict[str, Any]) -> str:
    """A one-word progress state: starting, loading, loaded, stopping, failed..."""
    process, memory = meta.get("process_state"), meta.get("memory_state")
    if memory in ("loading", "unloading") or (process == "running" and memory == "loaded"):
        return str(memory)
    return str(process or "waiting")


_DONE_STATES = {"start": "loaded", "stop": "stopped", "load": "loaded", "unload": "unloaded"}


def _progress_lines(
    outcomes: Sequence[Outcome], poller: StatusPoller, action: str, tick: int
) -> list[str]:
    frames, (good, bad) = _spinner_frames(), _marks()
    width = max(len(o.name) for o in outcomes)
    lines = []
    for o in outcomes:
        if o.finished is None:
            mark, state = frames[tick % len(frames)], phase_of(poller.meta.get(o.name, {}))
            if action == "start" and state in ("stopped", "failed"):
                state = "waiting"  # the hub has not taken it up yet
        elif o.ok:
            mark, state = good, _DONE_STATES.get(action, "done")
            if action == "start" and poller.meta.get(o.name, {}).get("jit_enabled"):
                state = "started"
        else:
            mark, state = bad, "failed"
        lines.append(f"  {mark} {o.name.ljust(width)}  {state:<9} {o.elapsed:6.1f}s")
    return lines


def run_model_actions(
    client: HubClient,
    names: Sequence[str],
    action: str,
    report: Callable[[Outcome], None],
    *,
    concurrent: bool = False,
) -> list[Outcome]:
    """POST `action` for each model and wait for every answer, however long it takes.

    On a terminal a live block shows one line per model (state, elapsed time). `report` is
    called for each outcome: as each finishes when sequential, in `names` order at the end
    when concurrent.
    """
    outcomes = [Outcome(name) for name in names]

    def work(outcome: Outcome) -> None:
        outcome.started = time.monotonic()
        try:
            outcome.result = client.model_action(outcome.name, action)
            outcome.ok = True
        except HubClientError as exc:
            outcome.error = exc
        finally:
            outcome.finished = time.monotonic()

    live, block, poller = interactive(), LiveBlock(), StatusPoller(client)
    if live:
        poller.start()
    try:
        for batch in [outcomes] if concurrent else [[o] for o in outcomes]:
            threads = [threading.Thread(target=work, args=(o,), daemon=True) for o in batch]
            for thread in threads:
                thread.start()
            tick = 0
            while any(t.is_alive() for t in threads):
                if live:
                    block.draw(_progress_lines(batch, poller, action, tick))
                tick += 1
                for thread in threads:
                    thread.join(0.1 / len(threads))
            block.clear()
            if not concurrent:
                report(batch[0])
    except KeyboardInterrupt:
        block.clear()
        flash("warn", f"Stopped waiting; the hub carries on with the {action} request(s)")
        raise SystemExit(130) from None
    finally:
        poller.stop()
    if concurrent:
        for outcome in outcomes:
            report(outcome)
    return outcomes


def clean_names(names: Sequence[str] | None) -> list[str]:
    """Names stripped; blank entries are warned about and dropped."""
    cleaned = []
    for raw in names or ():
        if raw.strip():
            cleaned.append(raw.strip())
        else:
            flash("warn", "Skipping blank model name entry")
    return cleaned


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


def _kill_group(proc: "subprocess.Popen[bytes]") -> None:
    """End a hub we launched that never came up (its own session, so its own group)."""
    import signal
    import subprocess

    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except OSError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _spawn_hub(cfg: "HubConfig", log_file: Path) -> "subprocess.Popen[bytes]":
    """`serve` in its own session, stdin from /dev/null, output appended to hub.log."""
    import subprocess

    from mlx_openai_server_hub.service import package_pythonpath

    env = dict(os.environ)
    extra = package_pythonpath()
    if extra:  # a source checkout: the hub must import this very package from anywhere
        env["PYTHONPATH"] = os.pathsep.join(p for p in (extra, env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "mlx_openai_server_hub", "--config", str(cfg.source_path)]
    with log_file.open("ab") as out:
        return subprocess.Popen(
            [*command, "serve", "--no-stderr-log"],
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
                _kill_group(proc)
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
    if cfg.host in ("127.0.0.1", "localhost", "::1") or not _isatty(sys.stdout):
        return
    from .auth import read_token

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


# --- status ----------------------------------------------------------------------------------


def fetch_status(client: HubClient, unreachable: str | None) -> dict[str, Any] | None:
    """/hub/status, or None after a warning (`unreachable` None: "not running")."""
    try:
        snapshot = client.status()
    except HubUnreachable as exc:
        flash("warn", f"{unreachable}: {exc}" if unreachable else "Hub daemon is not running")
        return None
    except HubHTTPError as exc:
        flash("warn", f"Unable to fetch live status: {exc}")
        return None
    for warning in snapshot.get("warnings") or ():
        flash("warn", str(warning))
    return snapshot


def print_status(
    cfg: "HubConfig",
    snapshot: dict[str, Any] | None,
    names: Sequence[str] | None,
    *,
    with_status_page: bool = True,
) -> None:
    """`Hub log path`, `Status page enabled` and the models table (filtered by `names`)."""
    echo(f"Hub log path: {cfg.log_path}")
    if with_status_page:
        echo(f"Status page enabled: {'yes' if cfg.enable_status_page else 'no'}")
    rows = tables.status_rows(cfg.models, (snapshot or {}).get("models"))
    wanted = {n.strip() for n in names or () if n.strip()}
    if wanted:
        rows = [(name, row) for name, row in rows if name in wanted]
        if not rows:
            echo("No matching models in hub config")
            return
    echo("Models:")
    for line in tables.render_table(tables.STATUS_HEADERS, [row for _, row in rows]):
        echo(line)


def cmd_status(cli: Cli, model_names: Sequence[str] | None) -> None:
    """Print the status table (from the config alone when the hub is down)."""
    cfg = cli.config()
    print_status(cfg, fetch_status(cli.client(), None), model_names)


# --- reload / stop ---------------------------------------------------------------------------


def _names(values: Any) -> str:
    items = [str(v) for v in values or ()]
    return ", ".join(items) if items else "none"


def cmd_reload(cli: Cli) -> None:
    """POST /hub/reload and print what changes (the hub carries it out in the background)."""
    client = cli.client()
    try:
        with spinner("Reloading hub.yaml"):
            result = client.reload() or {}
    except HubClientError as exc:
        fail(f"Hub reload failed: {exc}")
    changed = any(result.get(k) for k in ("started", "stopped", "restarted"))
    message = (
        f"Hub reload complete: started={_names(result.get('started'))} | "
        f"stopped={_names(result.get('stopped'))} | "
        f"unchanged={_names(result.get('unchanged'))}"
    )
    if "restarted" in result:
        message += f" | restarted={_names(result.get('restarted'))}"
    flash("ok" if changed else "info", message)


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


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _wait_gone(client: HubClient, pids: list[int], groups: list[int], deadline: float) -> bool:
    """Wait until the hub stops answering and every pid and group is gone."""
    while time.monotonic() < deadline:
        # Without a runtime file the only sign of life is /health.
        hub_up = client.is_up(timeout=1.0) if not pids else False
        if not hub_up and not any(map(pid_alive, pids)) and not any(map(_group_alive, groups)):
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
        host, port = str(doc.get("host", "0.0.0.0")), int(doc.get("port", 8000))
        log_path = (
            config_path.parent
            / Path(str(doc.get("log_path", "~/mlx-openai-server-hub/logs"))).expanduser()
        )
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError):
        return None
    location = locate(host, port, log_path / "hub_runtime.json")
    return HubClient(location, token_path=config_path.parent / "hub.token"), log_path


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


# --- per-model commands ----------------------------------------------------------------------


def cmd_process_action(cli: Cli, names: Sequence[str], action: str) -> None:
    """start-model / stop-model: each name in turn; exit 1 if any failed."""

    def report(outcome: Outcome) -> None:
        if outcome.ok:
            flash("ok", f"{outcome.name}: {action} requested")
        else:
            flash("err", f"{outcome.name}: {action} failed ({outcome.error})")

    outcomes = run_model_actions(cli.client(), names, action, report)
    if not all(o.ok for o in outcomes):
        fail(f"One or more models failed to {action}")


def cmd_memory_action(cli: Cli, model_names: Sequence[str], action: str) -> None:
    """load-model / unload-model: each name in turn; a blank or failed one exits 1."""
    names = clean_names(model_names)
    failed = len(names) < len(model_names)

    def report(outcome: Outcome) -> None:
        if outcome.ok:
            result = outcome.result if isinstance(outcome.result, dict) else {}
            message = result.get("message") or f"Memory {action} requested"
            flash("ok", f"{outcome.name}: memory {action} requested ({message})")
        else:
            flash("err", f"{outcome.name}: {outcome.error}")

    if names:
        outcomes = run_model_actions(cli.client(), names, action, report)
        failed = failed or not all(o.ok for o in outcomes)
    if failed:
        fail("One or more memory actions failed")


# --- watch -----------------------------------------------------------------------------------


def _watch_lines(client: HubClient, live: bool) -> list[str]:
    try:
        return tables.watch_frame(client.status())
    except HubUnreachable:
        message = f"Hub daemon is not running. Start it via '{PROG_NAME} start'."
    except HubHTTPError as exc:
        message = f"Unable to fetch live status: {exc}"
    return [f"\x1b[33m{message}\x1b[0m" if live else message]


def cmd_watch(cli: Cli, interval: float, count: int) -> None:
    """Print a snapshot every `interval` seconds; redraw in place on a terminal."""
    client = cli.client()
    echo("Watching hub manager (press Ctrl+C to stop)...")
    live, block, shown = interactive(), LiveBlock(), 0
    try:
        while True:
            lines = _watch_lines(client, live)
            if live:
                block.draw(lines)
            else:
                for line in lines:
                    echo(line)
            shown += 1
            if count and shown >= count:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        echo()
        echo("Stopped watching hub manager")


# --- logs ------------------------------------------------------------------------------------


def _log_file(cfg: "HubConfig", model: str | None) -> Path:
    if model is None:
        return cfg.log_path / "hub.log"
    entry = cfg.model(model)
    if entry is None:
        fail(f"Unknown model '{model}' (not in {cfg.source_path})")
    if entry.log_file is None:
        fail(f"Model '{model}' has no log file (no_log_file is set)")
    return Path(entry.log_file)


def follow_file(path: Path, position: int, poll: float = 0.25) -> None:
    """Print what is appended to `path`, across rotation and truncation, until Ctrl+C."""
    fh = None
    try:
        while True:
            if fh is None:
                try:
                    fh = path.open("rb")
                    fh.seek(position)
                except OSError:
                    fh = None
            if fh is not None:
                chunk = fh.read()
                if chunk:
                    sys.stdout.write(chunk.decode("utf-8", errors="replace"))
                    sys.stdout.flush()
                    continue
                try:
                    current = path.stat()
                except OSError:
                    current = None
                # Rotated away (new inode) or truncated: start over on the new file.
                if current is None or current.st_ino != os.fstat(fh.fileno()).st_ino:
                    fh.close()
                    fh, position = None, 0
                elif current.st_size < fh.tell():
                    fh.seek(0)
            time.sleep(poll)
    except KeyboardInterrupt:
        pass
    finally:
        if fh is not None:
            fh.close()


def cmd_logs(cli: Cli, model: str | None, follow: bool, lines: int) -> None:
    """Print the end of the hub's (or a model's) log, and follow it with -f."""
    path = _log_file(cli.config(), model)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if not follow:
            fail(f"No log file yet: {path}")
        data = b""
    except OSError as exc:
        fail(f"Cannot read {path}: {exc}")
    text = data.decode("utf-8", errors="replace")
    if lines:
        text = "".join(text.splitlines(keepends=True)[-lines:])
    sys.stdout.write(text)
    sys.stdout.flush()
    if follow:
        follow_file(path, len(data))


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


# --- init ------------------------------------------------------------------------------------


def _default_worker() -> Path | None:
    from .worker import default_worker_executable  # the hub's own rule for finding it

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
    script = Path(__file__).resolve().parent / "demo_model.py"
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
    """Create `path` with `text`; refuse (exit 1) when it exists, even if created meanwhile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("x", encoding="utf-8") as fh:
            fh.write(text)
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


# --- service ---------------------------------------------------------------------------------


def cmd_service_install(cli: Cli, dry_run: bool, systemd: bool, label: str) -> None:
    """Install (launchd plist or systemd user unit) and start the hub as a login service."""
    from mlx_openai_server_hub import service

    cfg = cli.config()
    label = label or service.DEFAULT_LABEL
    manager = service.service_manager(want_systemd=systemd)
    spec = service.service_spec(cfg)
    if dry_run:
        if manager == "systemd":
            sys.stdout.write(service.render_unit(spec, cfg.shutdown_grace))
        else:
            sys.stdout.write(service.render_plist(spec, label).decode("utf-8"))
        return
    if manager is None:
        fail(
            "launchd is macOS-only, so `service install` needs macOS. On Linux use "
            "`service install --systemd` for a systemd user unit, or `start` to run the hub "
            "in the background. (`service install --dry-run` shows the plist.)"
        )
    runtime = locate(cfg.host, cfg.port, cfg.runtime_path).runtime
    if runtime is not None:
        fail(
            f"A hub is already running (PID {runtime.get('pid')}); stop it first with "
            f"'{PROG_NAME} stop', so that the service can take its port"
        )
    try:
        if manager == "launchd":
            path = service.launchd_install(spec, label)
            flash("ok", f"Installed {path}")
            flash("info", f"Loaded into {service.launchd_domain()}: the hub runs now and at login")
        else:
            path = service.systemd_install(spec, cfg.shutdown_grace)
            flash("ok", f"Installed {path}")
            flash("info", "Enabled and started: the hub runs now and at login")
    except service.ServiceError as exc:
        fail(str(exc))
    echo(f"Logs: {spec.log_file}")


def cmd_service_uninstall(label: str) -> None:
    """launchd: bootout and delete the plist; systemd: disable --now and delete the unit."""
    from mlx_openai_server_hub import service

    manager = service.service_manager(want_systemd=True)
    if manager is None:
        fail("No supported service manager here (launchd is macOS-only)")
    try:
        if manager == "launchd":
            removed = service.launchd_uninstall(label or service.DEFAULT_LABEL)
        else:
            removed = service.systemd_uninstall()
    except service.ServiceError as exc:
        fail(str(exc))
    if removed is None:
        flash("info", "The service is not installed; nothing to remove")
    else:
        flash("ok", f"Removed {removed}")


def cmd_service_status(label: str) -> None:
    """Print the service manager's view of the hub service."""
    from mlx_openai_server_hub import service

    manager = service.service_manager(want_systemd=True)
    if manager is None:
        echo("Service manager: none (launchd is macOS-only)")
        return
    echo(f"Service manager: {manager}")
    if manager == "launchd":
        info = service.launchd_status(label or service.DEFAULT_LABEL)
    else:
        info = service.systemd_status()
    for key, value in info.items():
        echo(f"{key}: {value}")


# --- the Typer surface -----------------------------------------------------------------------


def build_app() -> "typer.Typer":
    """The Typer application (imports Typer, and through it pydantic: ~0.2 s)."""
    import typer

    app = typer.Typer(
        name=PROG_NAME,
        help="Manage hub-based multi-model deployments",
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    def state(ctx: typer.Context) -> Cli:
        obj = ctx.find_root().obj
        assert isinstance(obj, Cli)
        return obj

    def required_names(ctx: typer.Context, names: list[str]) -> list[str]:
        cleaned = clean_names(names)
        if not cleaned:
            ctx.fail("Missing argument 'MODEL_NAMES'.")
        return cleaned

    def show_version(value: bool) -> None:
        if value:
            echo(f"{PROG_NAME} {__version__}")
            raise typer.Exit()

    model_names_arg = typer.Argument(help="Model names", metavar="MODEL_NAMES", show_default=False)
    optional_names_arg = typer.Argument(
        help="Only these models", metavar="MODEL_NAMES", show_default=False
    )

    @app.callback(invoke_without_command=True)
    def root(
        ctx: typer.Context,
        config: Annotated[
            Path | None,
            typer.Option("--config", metavar="PATH", help=CONFIG_HELP, show_default=False),
        ] = None,
        version: Annotated[
            bool,
            typer.Option("--version", callback=show_version, is_eager=True, help="Show version."),
        ] = False,
    ) -> None:
        """Manage hub-based multi-model deployments. With no command: `start`."""
        ctx.obj = make_cli(config)
        if ctx.invoked_subcommand is None:
            cmd_start(ctx.obj, None, no_wait=False)

    @app.command(help="Start the hub manager")
    def start(
        ctx: typer.Context,
        model_names: Annotated[
            list[str] | None,
            typer.Argument(
                help="Models to start as well as the defaults",
                metavar="MODEL_NAMES",
                show_default=False,
            ),
        ] = None,
        no_wait: Annotated[
            bool, typer.Option("--no-wait", help="Don't wait for models to finish loading.")
        ] = False,
    ) -> None:
        cmd_start(state(ctx), model_names, no_wait)

    @app.command(help="Show hub configuration and running processes")
    def status(
        ctx: typer.Context,
        model_names: Annotated[list[str] | None, optional_names_arg] = None,
    ) -> None:
        cmd_status(state(ctx), model_names)

    @app.command(help="Reload hub.yaml and reconcile model processes")
    def reload(ctx: typer.Context) -> None:
        cmd_reload(state(ctx))

    @app.command(help="Stop the hub manager and all models")
    def stop(ctx: typer.Context) -> None:
        cmd_stop(state(ctx))

    @app.command("start-model", help="Start one or more model processes")
    def start_model(ctx: typer.Context, model_names: Annotated[list[str], model_names_arg]) -> None:
        cmd_process_action(state(ctx), required_names(ctx, model_names), "start")

    @app.command("stop-model", help="Stop one or more model processes")
    def stop_model(ctx: typer.Context, model_names: Annotated[list[str], model_names_arg]) -> None:
        cmd_process_action(state(ctx), required_names(ctx, model_names), "stop")

    @app.command("load-model", help="Load handlers for one or more models into memory")
    def load_model(ctx: typer.Context, model_names: Annotated[list[str], model_names_arg]) -> None:
        cmd_memory_action(state(ctx), model_names, "load")

    @app.command("unload-model", help="Unload handlers for one or more models from memory")
    def unload_model(
        ctx: typer.Context, model_names: Annotated[list[str], model_names_arg]
    ) -> None:
        cmd_memory_action(state(ctx), model_names, "unload")

    @app.command(help="Continuously print live hub manager status")
    def watch(
        ctx: typer.Context,
        interval: Annotated[
            float, typer.Option(min=0.5, help="Seconds between snapshots (at least 0.5).")
        ] = 5.0,
        count: Annotated[
            int, typer.Option(min=0, help="Stop after this many snapshots (0: until Ctrl+C).")
        ] = 0,
    ) -> None:
        cmd_watch(state(ctx), interval, count)

    @app.command(help="Print or follow the hub's log, or a model's log")
    def logs(
        ctx: typer.Context,
        model: Annotated[
            str | None,
            typer.Argument(
                help="Show this model's log instead of the hub's",
                metavar="MODEL",
                show_default=False,
            ),
        ] = None,
        follow: Annotated[
            bool, typer.Option("--follow", "-f", help="Keep printing new lines (Ctrl+C stops).")
        ] = False,
        lines: Annotated[
            int, typer.Option("--lines", "-n", min=0, help="Lines from the end to show (0: all).")
        ] = 100,
    ) -> None:
        cmd_logs(state(ctx), model, follow, lines)

    @app.command(help="Run the hub in the foreground (what `start` runs in the background)")
    def serve(
        ctx: typer.Context,
        no_stderr_log: Annotated[
            bool, typer.Option("--no-stderr-log", help="Log only to <log_path>/hub.log.")
        ] = False,
    ) -> None:
        cmd_serve(state(ctx), no_stderr_log)

    @app.command(help="Write a commented starter hub.yaml (never overwrites one)")
    def init(
        ctx: typer.Context,
        demo: Annotated[
            bool,
            typer.Option("--demo", help="Also build a tiny local model and use it."),
        ] = False,
        worker_command: Annotated[
            Path | None,
            typer.Option(
                "--worker-command",
                metavar="PATH",
                help="The mlx-openai-server executable (default: beside this Python, "
                "else on PATH).",
                show_default=False,
            ),
        ] = None,
        model_path: Annotated[
            str | None,
            typer.Option(
                "--model-path",
                metavar="PATH",
                help="Model for the starter entry (a local folder or a Hugging Face id).",
                show_default=False,
            ),
        ] = None,
    ) -> None:
        cmd_init(state(ctx), demo, worker_command, model_path)

    app.add_typer(_build_service_app(typer, state), name="service")
    return app


def _build_service_app(typer: Any, state: Callable[[Any], Cli]) -> "typer.Typer":
    service_app = typer.Typer(
        help="Run the hub as a login service (launchd on macOS; --systemd on Linux)",
        rich_markup_mode=None,
        no_args_is_help=True,
    )
    label_option = typer.Option(
        "--label", metavar="LABEL", help="The launchd label.", show_default=False
    )

    @service_app.command("install", help="Install the hub as a login service and start it")
    def install(
        ctx: typer.Context,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Print the plist (or unit); change nothing.")
        ] = False,
        systemd: Annotated[
            bool, typer.Option("--systemd", help="Linux: install a systemd user unit.")
        ] = False,
        label: Annotated[str, label_option] = "",
    ) -> None:
        cmd_service_install(state(ctx), dry_run, systemd, label)

    @service_app.command("uninstall", help="Stop the login service and remove it")
    def uninstall(label: Annotated[str, label_option] = "") -> None:
        cmd_service_uninstall(label)

    @service_app.command("status", help="Show whether the login service is installed")
    def status(label: Annotated[str, label_option] = "") -> None:
        cmd_service_status(label)

    return service_app


def __getattr__(name: str) -> Any:
    """`cli.app`: the Typer application, built on first use (for typer.testing)."""
    if name == "app":
        return build_app()
    raise AttributeError(name)


# --- entry point -----------------------------------------------------------------------------


def _fast_status_args(argv: Sequence[str]) -> tuple[str | None, list[str]] | None:
    """(config, names) for a plain `[--config PATH] status [NAMES...]`, else None.

    Everything else (options, help, typos) goes through Typer.
    """
    args = list(argv)
    config = None
    if args and args[0].startswith("--config="):
        config = args.pop(0).partition("=")[2]
    elif len(args) >= 2 and args[0] == "--config":
        config = args[1]
        args = args[2:]
    if not args or args[0] != "status" or config == "":
        return None
    names = args[1:]
    if any(n.startswith("-") for n in names):
        return None
    return config, names


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        fast = _fast_status_args(args)
        if fast is not None:
            cmd_status(make_cli(fast[0]), fast[1])
            return
        build_app()(args=args, prog_name=PROG_NAME)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except BrokenPipeError:
        # `... | head`: the reader left; say nothing more and do not trace back.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(1) from None
