"""The fake worker's life as a process: start-up lines and knobs, signals, serving."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .help_text import PROG, VERSIONS
from .knobs import Knobs, hang_forever, hold_memory
from .options import LaunchArgs

if TYPE_CHECKING:
    from .app import FakeWorker

_CHILD_CODE = (
    "import signal, sys, time\n"
    "if sys.argv[1] == '1':\n"
    "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "time.sleep(3600)\n"
)
# Kept referenced for the life of the worker, which never stops them (see FAKE_SPAWN_CHILD).
_children: list[subprocess.Popen[bytes]] = []


def log(message: str) -> None:
    """A line on stdout, at once (the hub reads it through a pipe)."""
    print(message, flush=True)


def log_error(message: str) -> None:
    """A line on stderr, at once."""
    print(message, file=sys.stderr, flush=True)


def _exit_on_signal(signum: int, frame: object = None) -> None:
    os.write(2, f"INFO:     Shutting down (signal {signum})\n".encode())
    os._exit(0)


def _ignore_signal(signum: int, frame: object = None) -> None:
    os.write(2, f"WARNING:  ignoring signal {signum} (FAKE_IGNORE_SIGTERM=1)\n".encode())


def _signal_action(ignore: bool) -> Callable[..., None]:
    return _ignore_signal if ignore else _exit_on_signal


def _spawn_child(ignore_sigterm: bool) -> int:
    """A long sleeper in our process group, like the real worker's helper processes."""
    args = [sys.executable, "-c", _CHILD_CODE, "1" if ignore_sigterm else "0"]
    child = subprocess.Popen(args, stdin=subprocess.DEVNULL)
    _children.append(child)
    return child.pid


def _wait_start_delay(delay: float, model_path: str) -> None:
    deadline = time.monotonic() + delay
    while (remaining := deadline - time.monotonic()) > 0:
        time.sleep(min(0.5, remaining))
        waited = delay - max(0.0, deadline - time.monotonic())
        log(f"INFO:     Loading model {model_path}... {waited:.1f}/{delay:.1f}s")


async def _serve(worker: FakeWorker) -> int:
    from aiohttp import web  # already loaded by the app module, see run()

    loop = asyncio.get_running_loop()
    action = _signal_action(worker.knobs.ignore_sigterm)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, action, signum)
    runner = web.AppRunner(worker.make_app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    host, port = worker.launch.host, worker.launch.port
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        # like uvicorn: "[Errno 98] error while attempting to bind on address (...): ..."
        log_error(f"ERROR:    [Errno {exc.errno}] {exc.strerror or exc}")
        return 1
    log("INFO:     Application startup complete.")
    log(f"INFO:     Uvicorn running on http://{host}:{port} (Press CTRL+C to quit)")
    await hang_forever()


def run(launch: LaunchArgs, knobs: Knobs, flavor: str) -> int:
    """Start up like a real worker (with the start knobs applied), then serve until a signal."""
    action = _signal_action(knobs.ignore_sigterm)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, action)
    log(f"INFO:     Starting {PROG} {VERSIONS[flavor]} (fake worker, flavor {flavor})")
    log(f"fake worker pid={os.getpid()} port={launch.port}")
    log(f"INFO:     Loading model {launch.model_path} (type {launch.model_type})")
    if knobs.spawn_child:
        log(f"child pid={_spawn_child(knobs.ignore_sigterm)}")
    # Held for the life of the process: run() returns only when the worker ends.
    held = hold_memory(knobs.hold_mb)
    if knobs.hold_mb:
        log(f"holding {len(held) // 2**20} MB of resident memory")
    standby = flavor == "jit" and launch.jit
    delay = knobs.jit_start_delay if standby and knobs.jit_start_delay is not None else None
    _wait_start_delay(knobs.start_delay if delay is None else delay, launch.model_path)
    if knobs.exit_at_start is not None:
        log_error(f"ERROR: failed to load model {launch.model_path} (FAKE_EXIT_AT_START)")
        return knobs.exit_at_start
    log(f"INFO:     Model {launch.model_path} loaded")
    # aiohttp (about 0.3 s) is imported only to serve, so --help and flag errors stay instant.
    from .app import FakeWorker

    return asyncio.run(_serve(FakeWorker(launch, knobs, flavor)))
