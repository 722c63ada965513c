"""The download child process: fetches one repo snapshot and reports progress as JSON lines.

Why a process of its own: huggingface_hub reads, writes and hashes every chunk in Python,
and run in threads of the hub's process those chunks took the GIL from the event loop
serving requests (the proxy's added p99 went from 1.7 to 15.7 ms during a loopback-speed
download). A child has its own interpreter, runs at a lower CPU priority, and is stopped
as a process group like a worker.

The protocol, and the request it reads, are in `download_protocol`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, TextIO

from huggingface_hub import constants, get_token

from .download_protocol import DownloadError, DownloadRequest, decode_request
from .hf_cache import repo_cache_dir
from .hf_fetch import (
    HubSettings,
    RepoListing,
    cached_files,
    classify,
    fetch_file,
    list_remote,
    write_ref,
)

# How often the main thread wakes to notice a cancel while files transfer, and how
# long the other files get to stop (a read stalled on the network never returns).
_POLL_S = 0.2
_UNWIND_S = 1.0


class _Events:
    """Writes events to stdout, one whole line at a time from any thread."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    def emit(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields})
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()


def _stop_on_hangup_or_term(cancel: threading.Event) -> None:
    """Set `cancel` on SIGTERM or when the hub closes our stdin."""
    signal.signal(signal.SIGTERM, lambda *_: cancel.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the hub decides; a terminal's ^C is its

    def watch_stdin() -> None:
        with contextlib.suppress(OSError, ValueError):
            while sys.stdin.buffer.read(4096):
                pass
        cancel.set()

    threading.Thread(target=watch_stdin, name="stdin-watch", daemon=True).start()


def _fetch_files(
    listing: RepoListing,
    names: list[str],
    request: DownloadRequest,
    settings: HubSettings,
    events: _Events,
    cancel: threading.Event,
) -> None:
    """Fetch `names` in parallel; the first failure stops the rest and is raised."""

    def on_start(name: str, total: int | None, initial: int) -> None:
        events.emit("start", file=name, total=total, initial=initial)

    def on_bytes(name: str, n: int) -> None:
        events.emit("bytes", file=name, n=n)

    def one(name: str) -> None:
        fetch_file(listing, name, settings, on_start, on_bytes, cancel)
        events.emit("file_done", file=name)

    pool = ThreadPoolExecutor(request.parallel_files, thread_name_prefix="fetch")
    pending: set[Future[None]] = {pool.submit(one, n) for n in names}
    try:
        while pending:
            # Woken every _POLL_S so a SIGTERM (handled on this thread) is seen.
            finished, pending = wait(pending, _POLL_S, return_when=FIRST_EXCEPTION)
            failed = [f for f in finished if f.exception() is not None]
            if failed:
                raise failed[0].exception()  # type: ignore[misc]
            if cancel.is_set():
                raise DownloadError("cancelled", f"download of {listing.repo_id} was stopped")
    finally:
        cancel.set()  # the other files stop at their next chunk...
        pool.shutdown(wait=False, cancel_futures=True)
        wait(pending, _UNWIND_S)  # ...and one stalled in a read is left to `os._exit`


def download(
    request: DownloadRequest, settings: HubSettings, events: _Events, cancel: threading.Event
) -> Path:
    """List the snapshot, fetch what the cache lacks, point the ref at it; return its path."""
    listing = list_remote(request.repo_id, request.revision, settings)
    have = cached_files(listing, settings.cache_dir)
    events.emit(
        "listing",
        commit=listing.commit,
        files_total=len(listing.files),
        bytes_total=listing.bytes_total,
        files_done=len(have),
        bytes_done=sum(f.size or 0 for f in listing.files if f.name in have),
    )
    todo = [f.name for f in listing.files if f.name not in have]
    _fetch_files(listing, todo, request, settings, events, cancel)
    write_ref(listing, settings.cache_dir)
    return repo_cache_dir(listing.repo_id, settings.cache_dir) / "snapshots" / listing.commit


def _take_stdout() -> TextIO:
    """stdout for the events alone: anything else printed there goes to stderr instead.

    A stray line from a library (a print, a progress bar) would otherwise be read by
    the hub as a broken event.
    """
    events = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return events


def main() -> int:
    """Read the request, download, report; exit 0 on success, 1 on a reported error."""
    cancel = threading.Event()
    events = _Events(_take_stdout())
    request = decode_request(sys.stdin.buffer.readline())
    _stop_on_hangup_or_term(cancel)
    with contextlib.suppress(OSError):
        os.nice(request.niceness)
    constants.DOWNLOAD_CHUNK_SIZE = request.read_chunk_bytes  # read by the library per call
    settings = HubSettings(request.endpoint, Path(request.cache_dir), get_token())
    try:
        path = download(request, settings, events, cancel)
    except Exception as exc:  # every failure becomes an error the hub can show
        err = classify(exc, request.repo_id, settings, settings.token is not None)
        events.emit("error", kind=err.kind, message=err.message)
        return 1
    events.emit("done", path=str(path))
    return 0


if __name__ == "__main__":
    exit_code = main()
    sys.stdout.flush()
    os._exit(exit_code)  # not sys.exit: that would join a fetch thread stalled in a read
