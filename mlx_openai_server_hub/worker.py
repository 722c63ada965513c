"""One `mlx-openai-server launch ...` subprocess: spawn, readiness, output, stop.

A worker runs in its own process group (it starts helper processes of its
own), so stopping it signals the whole group: SIGTERM, a grace period, then
SIGKILL. Its output goes line by line to the model's log and to a short tail
kept for error messages.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import aiohttp
import psutil

from .contract import base_url_for, connect_host
from .errors import HubError
from .process_group import die_with_parent_preexec, signal_group, terminate_group

logger = logging.getLogger("mlx_hub.worker")

WORKER_EXECUTABLE = "mlx-openai-server"
STOP_GRACE_SECONDS = 10.0
READY_POLL_SECONDS = 0.2
# A line of worker output (uvicorn's "Uvicorn running on ..." comes right after it
# binds) triggers a readiness probe at once, but not more often than this.
READY_MIN_PROBE_GAP_SECONDS = 0.01
TAIL_LINES = 20
PROGRESS_EVERY_SECONDS = 15.0
# Workers colour their output even into a pipe; logs and error messages want text.
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class WorkerStartError(Exception):
    """The worker exited or timed out before it became ready."""

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def default_worker_executable() -> Path | None:
    """`mlx-openai-server` installed beside this Python, else the one on PATH."""
    beside = Path(sys.executable).parent / WORKER_EXECUTABLE
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    on_path = shutil.which(WORKER_EXECUTABLE)
    return Path(on_path) if on_path else None


def resolve_worker_command(configured: Sequence[str] | None, config_path: Path) -> list[str]:
    """The worker command: as configured, else beside our Python, else on PATH."""
    if configured:
        return list(configured)
    found = default_worker_executable()
    if found is not None:
        return [str(found)]
    raise HubError(
        f"No '{WORKER_EXECUTABLE}' found beside {sys.executable} or on PATH. Install "
        f"mlx-openai-server, or set 'worker_command' in {config_path}.",
        status=503,
    )


class _ExitWatchingProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Reports the process's exit at once.

    `Process.wait()` also waits for the output pipe to close, which never
    happens while a helper the worker started still holds it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, on_exit: Callable[[], None]) -> None:
        super().__init__(limit=2**16, loop=loop)
        self._on_exit = on_exit

    def process_exited(self) -> None:
        super().process_exited()
        self._on_exit()


class WorkerProcess:
    """A running worker subprocess and what the hub knows about it."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        host: str,
        port: int,
        log: logging.Logger | None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.host = connect_host(host)
        self.port = port
        self.log = log
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at: float | None = None
        self.create_time: float | None = None
        self.exited = asyncio.Event()
        self._last_health: str | None = None  # the last model_status /health gave
        # Set for each line the worker prints: wakes `wait_ready` to probe now rather
        # than at the next poll (a JIT request waits for that probe).
        self._output = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        """The worker's pid (also its process group id)."""
        return self.proc.pid if self.proc else None

    @property
    def returncode(self) -> int | None:
        """The exit code once the worker has exited."""
        return self.proc.returncode if self.proc else None

    @property
    def base_url(self) -> str:
        """Where the worker's HTTP API is reached."""
        return base_url_for(self.host, self.port)

    async def spawn(self) -> None:
        """Start the subprocess in its own process group."""
        self._mark(f"starting worker: {' '.join(self.argv)} (port {self.port})")
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.subprocess_exec(
                lambda: _ExitWatchingProtocol(loop, self._on_exit),
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                preexec_fn=die_with_parent_preexec(),
            )
        except OSError as exc:
            raise WorkerStartError(f"Cannot start worker {self.argv[0]!r}: {exc}") from exc
        self.proc = asyncio.subprocess.Process(transport, protocol, loop)
        self.started_at = time.time()
        with contextlib.suppress(psutil.Error):
            self.create_time = psutil.Process(self.proc.pid).create_time()
        self._mark(f"worker started: pid {self.proc.pid}, port {self.port}")
        self._pump = asyncio.create_task(self._pump_output(), name=f"worker-output:{self.name}")

    def _on_exit(self) -> None:
        self._mark(f"worker exited: pid {self.pid}, exit code {self.returncode}")
        self.exited.set()

    async def _pump_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        stream = self.proc.stdout
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line longer than the buffer: take what is there
                raw = await stream.read(64 * 1024)
            if not raw:
                return
            line = _ANSI_ESCAPE.sub("", raw.decode("utf-8", "replace")).rstrip()
            if not line:
                continue
            self.tail.append(line)
            self._output.set()
            if self.log is not None:
                self.log.info(line)

    def _mark(self, message: str) -> None:
        logger.info("[%s] %s", self.name, message)
        if self.log is not None:
            self.log.info("[hub] %s", message)

    def tail_text(self, lines: int = 8) -> str:
        """The last lines the worker printed, joined for an error message."""
        return "\n".join(list(self.tail)[-lines:])

    async def wait_ready(
        self, session: aiohttp.ClientSession, timeout: float, loaded: bool = True
    ) -> None:
        """Return once `/health` says the model is in memory (or, with `loaded=False`,
        once it answers at all: a `--jit` standby); raise WorkerStartError if not."""
        started = time.monotonic()
        deadline = started + timeout
        next_note = started + PROGRESS_EVERY_SECONDS
        probe = aiohttp.ClientTimeout(total=2)
        while True:
            if time.monotonic() >= next_note:  # long loads: say it is still going
                self._mark(f"still loading ({time.monotonic() - started:.0f} s)")
                next_note += PROGRESS_EVERY_SECONDS
            if self.exited.is_set():
                raise WorkerStartError(
                    f"Worker for '{self.name}' exited with code {self.returncode} before it "
                    f"was ready. Last output:\n{self.tail_text()}",
                    exit_code=self.returncode,
                )
            if time.monotonic() >= deadline:
                raise WorkerStartError(self._not_ready_message(timeout))
            self._output.clear()
            probed_at = time.monotonic()
            status = await self._health_status(session, probe)
            if status is not None and (not loaded or not status.startswith("unloaded")):
                self._mark("worker ready" if loaded else "standby ready (model not loaded)")
                return
            await self._wait_for_news(READY_POLL_SECONDS)
            gap = probed_at + READY_MIN_PROBE_GAP_SECONDS - time.monotonic()
            if gap > 0:
                await asyncio.sleep(gap)

    def _not_ready_message(self, timeout: float) -> str:
        if self._last_health is not None and self._last_health.startswith("unloaded"):
            # Quoting the hub's own probe lines would hide what is wrong.
            return (
                f"Worker for '{self.name}' was not ready within {timeout:g} s "
                "(startup_timeout): the worker answers but reports its model unloaded; "
                "is it running with --jit?"
            )
        return (
            f"Worker for '{self.name}' was not ready within {timeout:g} s "
            f"(startup_timeout). Last output:\n{self.tail_text()}"
        )

    async def _wait_for_news(self, timeout: float) -> None:
        """Wait until the worker prints a line or exits, at most `timeout` seconds."""
        waits = {
            asyncio.ensure_future(self.exited.wait()),
            asyncio.ensure_future(self._output.wait()),
        }
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def _health_status(
        self, session: aiohttp.ClientSession, probe: aiohttp.ClientTimeout
    ) -> str | None:
        """The lower-cased `model_status` of a 200 `/health`, or None if it did not answer."""
        try:
            async with session.get(self.base_url + "/health", timeout=probe) as resp:
                if resp.status != 200:
                    return None
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        # The JIT branch answers 200 with "unloaded" before its model is in memory.
        status = str(body.get("model_status", "")) if isinstance(body, dict) else ""
        self._last_health = status.lower()
        return self._last_health

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> int | None:
        """SIGTERM the process group, SIGKILL it after `grace` seconds, reap it."""
        if self.proc is None:
            return None
        pgid = self.proc.pid
        if not self.exited.is_set():
            self._mark(f"stopping worker (SIGTERM to process group {pgid})")
        await terminate_group(
            pgid,
            self.exited,
            grace,
            on_escalate=lambda: self._mark(
                f"worker ignored SIGTERM for {grace:g} s; sending SIGKILL"
            ),
        )
        await self._finish_pump()
        return self.proc.returncode

    async def _finish_pump(self) -> None:
        """Let the output reader drain what is left; the group is dead, EOF is near."""
        if self._pump is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._pump), 2.0)
        except TimeoutError:
            self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump

    def kill_now(self) -> None:
        """SIGKILL the whole group at once (last resort, e.g. on hub exit)."""
        if self.proc is not None:
            signal_group(self.proc.pid, signal.SIGKILL)
