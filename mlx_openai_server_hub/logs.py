"""Log files written off the event loop.

The hub's own log and every worker's output go through one queue to one
background thread that owns the rotating files, so a slow or full disk never
stalls the event loop. A failing file is remembered and shown as a warning in
`/hub/status` while the hub keeps serving.

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

HUB_LOGGER = "mlx_hub"
LOG_FORMAT = "%(asctime)s | %(levelname)s | %(message)s"
MAX_BYTES = 10 * 1024 * 1024
BACKUP_COUNT = 3
FILE_MODE = 0o600
FOLDER_MODE = 0o700

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


class LogFiles:
    """Owns every log file of the hub, keyed by logger name."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self._handlers: dict[str, _FileHandler] = {}
        self._lock = threading.Lock()
        self._errors: dict[str, str] = {}
        self._listener = logging.handlers.QueueListener(self._queue, _Dispatch(self))
        self._listener.start()

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
        if not any(isinstance(h, logging.handlers.QueueHandler) for h in log.handlers):
            log.addHandler(logging.handlers.QueueHandler(self._queue))
        return log

    def handler_for(self, logger_name: str) -> _FileHandler | None:
        """The file handler for a logger name (or its closest parent)."""
        with self._lock:
            name = logger_name
            while name:
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
        with self._lock:
            handlers = list(self._handlers.values())
            self._handlers.clear()
        for handler in handlers:
            handler.close()


def setup_hub_logging(level: str, log_files: LogFiles, log_path: Path, to_stderr: bool) -> None:
    """Send the hub's own records to `<log_path>/hub.log` and, if asked, stderr."""
    hub_log = log_files.open(HUB_LOGGER, log_path / "hub.log")
    hub_log.setLevel(level)
    hub_log.propagate = False
    for handler in list(hub_log.handlers):
        if isinstance(handler, logging.StreamHandler) and not isinstance(
            handler, logging.handlers.QueueHandler
        ):
            hub_log.removeHandler(handler)
    if to_stderr:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter(LOG_FORMAT))
        hub_log.addHandler(stream)


def utc_stamp() -> str:
    """A compact local timestamp for marker lines in worker logs."""
    return time.strftime("%Y-%m-%d %H:%M:%S")
