"""Log files written off the event loop.

The hub's own log and every worker's output go through one queue to one
background thread that owns the rotating files, so a slow or full disk never
stalls the event loop. A failing file is remembered and shown as a warning in
`/hub/status` while the hub keeps serving. The copy of the hub's log on stderr
(`serve` in a terminal) has a thread and a bounded queue of its own: a terminal
or pipe that stops reading loses console lines, never the files or the loop.

Logs hold prompts' traces and paths: files are 0600 and a folder the hub makes
is 0700, whatever the umask.
"""

from __future__ import annotations

import contextlib
import io
import logging
import logging.handlers
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

HUB_LOGGER = "mlx_hub"
LOG_FORMAT = "%(asctime)s | %(levelname)s | %(message)s"
MAX_BYTES = 10 * 1024 * 1024
BACKUP_COUNT = 3
FILE_MODE = 0o600
FOLDER_MODE = 0o700
# Console lines waiting for a stderr that does not read; past this, new ones are dropped.
ECHO_QUEUE_LINES = 10_000
# At exit, how long the console thread may take to write what it still has.
ECHO_CLOSE_SECONDS = 1.0

logger = logging.getLogger(HUB_LOGGER)


class _FileHandler(logging.handlers.RotatingFileHandler):
    """A rotating file that reports write errors to its owner instead of stderr."""

    def __init__(self, path: Path, owner: LogFiles) -> None:
        self._owner = owner
        self._failed = False
        # delay=True: opening (and creating the folder) happens in the writer thread.
        super().__init__(path, maxBytes=MAX_BYTES, backupCount=BACKUP_COUNT, delay=True)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            Path(self.baseFilename).parent.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
        except OSError as exc:
            self._owner.record_error(self.baseFilename, exc)
            return
        # A failed write does not raise: the base class calls handleError and returns.
        self._failed = False
        super().emit(record)
        if not self._failed:
            self._owner.record_ok(self.baseFilename)

    def _open(self) -> io.TextIOWrapper:
        # Created 0600 (not 0666 minus umask); a file an older hub left 0644 is tightened.
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        with contextlib.suppress(OSError):  # not ours to change: keep logging to it
            os.fchmod(fd, FILE_MODE)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)

    def handleError(self, record: logging.LogRecord) -> None:
        self._failed = True
        exc = sys.exc_info()[1]
        self._owner.record_error(self.baseFilename, exc)


class _Dispatch(logging.Handler):
    """Runs in the writer thread: sends each record to the file for its logger."""

    def __init__(self, owner: LogFiles) -> None:
        super().__init__()
        self._owner = owner

    def emit(self, record: logging.LogRecord) -> None:
        handler = self._owner.handler_for(record.name)
        if handler is not None:
            handler.handle(record)


class _DroppingQueueHandler(logging.handlers.QueueHandler):
    """Queues records for the console thread; drops (and counts) them once it is full."""

    def __init__(self, bounded: queue.Queue[logging.LogRecord | None]) -> None:
        super().__init__(bounded)
        self.dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1  # a count, not a lock: off by one in a race is harmless


class _Console:
    """The console thread: writes the hub's records to stderr from a bounded queue.

    Not a logging handler, whose lock, held by a blocked write, would stop
    `logging.shutdown` at exit; and it writes with os.write to its own copy of the
    descriptor, so a blocked write holds no lock of `sys.stderr` either.
    """

    def __init__(self, stream: TextIO) -> None:
        self._fd = os.dup(stream.fileno())  # first: raises if `stream` has no descriptor
        self._queue: queue.Queue[logging.LogRecord | None] = queue.Queue(ECHO_QUEUE_LINES)
        self.handler = _DroppingQueueHandler(self._queue)
        self._format = logging.Formatter(LOG_FORMAT).format
        self._reported = 0
        self._thread = threading.Thread(target=self._run, name="console-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while (record := self._queue.get()) is not None:
                text = self._format(record) + "\n"
                dropped = self.handler.dropped
                if dropped > self._reported:
                    text = (
                        f"[{dropped - self._reported} log lines not shown here: stderr was "
                        f"not being read; the log file has them]\n{text}"
                    )
                    self._reported = dropped
                data = text.encode("utf-8", "replace")
                while data:
                    data = data[os.write(self._fd, data) :]
        except OSError:
            pass  # the terminal or pipe is gone: nothing left to show lines on
        finally:
            os.close(self._fd)

    def stop(self) -> None:
        """Let the thread write what it has, for ECHO_CLOSE_SECONDS at most (a daemon
        thread blocked on a stderr that does not read must not hold up the exit)."""
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(ECHO_CLOSE_SECONDS)


class LogFiles:
    """Owns every log file of the hub, keyed by logger name."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self._handlers: dict[str, _FileHandler] = {}
        self._lock = threading.Lock()
        self._errors: dict[str, str] = {}
        self._listener = logging.handlers.QueueListener(self._queue, _Dispatch(self))
        self._listener.start()
        self._echo: tuple[_Console, list[logging.Logger]] | None = None
        self._joined: dict[str, str] = {}  # logger name → the logger whose file it shares

    def open(self, logger_name: str, path: Path) -> logging.Logger:
        """A logger whose records are appended to `path` (rotated by size)."""
        handler = _FileHandler(path, self)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        with self._lock:
            old = self._handlers.pop(logger_name, None)
            self._handlers[logger_name] = handler
        if old is not None:
            old.close()
        log = logging.getLogger(logger_name)
        # Each file gets only its own records (a worker's output stays out of hub.log).
        if logger_name != HUB_LOGGER:
            log.propagate = False
        if not any(type(h) is logging.handlers.QueueHandler for h in log.handlers):
            log.addHandler(logging.handlers.QueueHandler(self._queue))
        return log

    def join(self, logger_name: str, into: str) -> logging.Logger:
        """Send `logger_name`'s records to the file of the logger `into` (opened)."""
        with self._lock:
            self._joined[logger_name] = into
        log = logging.getLogger(logger_name)
        log.propagate = False
        if not any(type(h) is logging.handlers.QueueHandler for h in log.handlers):
            log.addHandler(logging.handlers.QueueHandler(self._queue))
        return log

    def echo(self, stream: TextIO, *logs: logging.Logger) -> None:
        """Copy the records of `logs` to `stream` too, from a thread of their own
        (replacing an earlier copy)."""
        self._stop_echo()
        try:
            console = _Console(stream)
        except (AttributeError, OSError, ValueError):
            # No descriptor (an in-memory stream, as a test runner gives): it cannot block.
            in_memory = logging.StreamHandler(stream)
            in_memory.setFormatter(logging.Formatter(LOG_FORMAT))
            for log in logs:
                log.addHandler(in_memory)
            return
        self._echo = console, list(logs)
        for log in logs:
            log.addHandler(console.handler)

    def _stop_echo(self) -> None:
        if self._echo is None:
            return
        console, logs = self._echo
        for log in logs:
            log.removeHandler(console.handler)
        console.stop()
        self._echo = None

    def handler_for(self, logger_name: str) -> _FileHandler | None:
        """The file handler for a logger name (or its closest parent)."""
        with self._lock:
            name = logger_name
            while name:
                name = self._joined.get(name, name)
                if name in self._handlers:
                    return self._handlers[name]
                name = name.rpartition(".")[0]
        return None

    def record_error(self, path: str, exc: BaseException | None) -> None:
        """Remember that writing `path` failed (shown in the hub's warnings)."""
        with self._lock:
            self._errors[path] = f"{type(exc).__name__}: {exc}" if exc else "write failed"

    def record_ok(self, path: str) -> None:
        """Forget an earlier failure of `path` once a write succeeds."""
        if path in self._errors:
            with self._lock:
                self._errors.pop(path, None)

    def warnings(self) -> list[str]:
        """One line per file (logs, hub_runtime.json) that cannot be written right now."""
        with self._lock:
            return [f"Cannot write {p}: {e}" for p, e in sorted(self._errors.items())]

    def close(self) -> None:
        """Flush everything and close the files."""
        self._listener.stop()
        self._stop_echo()
        with self._lock:
            handlers = list(self._handlers.values())
            self._handlers.clear()
        for handler in handlers:
            handler.close()


def setup_hub_logging(level: str, log_files: LogFiles, log_path: Path, to_stderr: bool) -> None:
    """Send the hub's own records to `<log_path>/hub.log` and, if asked, stderr.

    aiohttp's warnings and errors (a request its parser refused, with the traceback)
    go there too, rather than straight to stderr through logging's last resort.
    """
    hub_log = log_files.open(HUB_LOGGER, log_path / "hub.log")
    web_log = log_files.join("aiohttp", into=HUB_LOGGER)
    web_log.setLevel(logging.WARNING)
    hub_log.setLevel(level)
    hub_log.propagate = False
    for handler in list(hub_log.handlers):
        if isinstance(handler, logging.StreamHandler) and not isinstance(
            handler, logging.handlers.QueueHandler
        ):
            hub_log.removeHandler(handler)
    if to_stderr:
        log_files.echo(sys.stderr, hub_log, web_log)


def utc_stamp() -> str:
    """A compact local timestamp for marker lines in worker logs."""
    return time.strftime("%Y-%m-%d %H:%M:%S")
