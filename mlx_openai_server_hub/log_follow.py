"""The last lines of a log file, and the lines appended to it afterwards, across rotation.

The hub's logs rotate by size (logs.py: `hub.log` is renamed `hub.log.1` and
a new `hub.log` is created on the next write). A follower keeps the file it
has open until the path names another file, reads the old one to its end,
then continues with the new one from its start, so no line is lost or shown
twice; a file truncated in place is read again from its start.

`FileFollower` is the synchronous core (the CLI's file fallback uses it as
is); `follow_lines` runs it in a worker thread, one short step per poll, so
the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

POLL_SECONDS = 0.25
# One read step returns at most this much, so a burst is streamed, not buffered whole.
READ_CHUNK = 256 * 1024
# A "line" this long without a newline is passed on as it is.
MAX_LINE_BYTES = 64 * 1024
_BLOCK = 8192


class FileFollower:
    """Reads what is appended to `path`, surviving rotation and truncation."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: BinaryIO | None = None
        self._position = 0

    def last_lines(self, count: int) -> list[bytes]:
        """The file's last `count` lines; following starts right after them."""
        self.close()
        fh = self._open()
        if fh is None:
            return []
        end = fh.seek(0, os.SEEK_END)
        self._position = end
        if count <= 0:
            return []
        data = b""
        start = end
        # Read backwards block by block until enough newlines are seen.
        while start > 0 and data.count(b"\n") <= count:
            step = min(_BLOCK, start)
            start -= step
            fh.seek(start)
            data = fh.read(step) + data
        lines = data.splitlines(keepends=True)
        if lines and not lines[-1].endswith(b"\n"):
            # Being written right now: it is followed (whole) once its end arrives.
            self._position = end - len(lines.pop())
        fh.seek(self._position)
        if start > 0 and lines:
            lines = lines[1:]  # the first one is probably cut
        return lines[-count:]

    def read_new(self) -> bytes:
        """Everything appended since the last call (up to READ_CHUNK), or b""."""
        if self._fh is None:
            self._fh = self._open()
            if self._fh is None:
                return b""
            self._fh.seek(min(self._position, os.fstat(self._fh.fileno()).st_size))
        data = self._fh.read(READ_CHUNK)
        if data:
            return data
        try:
            current = os.stat(self.path)
        except OSError:
            return b""  # rotated away and not yet re-created: keep the old file for now
        opened = os.fstat(self._fh.fileno())
        if (current.st_ino, current.st_dev) != (opened.st_ino, opened.st_dev):
            # The old file was read to its end above: go on with the new one.
            self.close()
            self._position = 0
            return self.read_new()
        if current.st_size < self._fh.tell():
            self._fh.seek(0)  # truncated in place
            return self._fh.read(READ_CHUNK)
        return b""

    def close(self) -> None:
        """Close the open file (a later read opens the path again)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _open(self) -> BinaryIO | None:
        try:
            self._fh = self.path.open("rb")
        except OSError:
            self._fh = None
        return self._fh


class LineSplitter:
    """Bytes in, complete text lines out (a partial last line waits for its end)."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[str]:
        """The complete lines now available, each ending in a newline."""
        pending = self._pending + data
        *complete, rest = pending.split(b"\n")
        if len(rest) > MAX_LINE_BYTES:
            complete.append(rest)
            rest = b""
        self._pending = rest
        return [line.decode("utf-8", "replace") + "\n" for line in complete]


async def tail_lines(path: Path, count: int) -> list[str]:
    """The last `count` lines of a file ([] if it does not exist), read off the loop."""
    follower = FileFollower(path)
    try:
        raw = await asyncio.to_thread(follower.last_lines, count)
    finally:
        follower.close()
    return [line.decode("utf-8", "replace") for line in raw]


async def follow_lines(
    path: Path,
    count: int,
    poll: float = POLL_SECONDS,
    stop: asyncio.Event | None = None,
    heartbeat: float | None = None,
) -> AsyncIterator[str]:
    """The last `count` lines, then every new line as it is written.

    Ends when `stop` is set (the hub is shutting down) or the caller stops
    iterating. With `heartbeat`, an empty string is yielded after that many
    quiet seconds, so a caller can keep an idle connection alive.
    """
    follower = FileFollower(path)
    splitter = LineSplitter()
    loop = asyncio.get_running_loop()
    try:
        for line in await asyncio.to_thread(follower.last_lines, count):
            yield line.decode("utf-8", "replace")
        quiet_since = loop.time()
        while stop is None or not stop.is_set():
            data = await asyncio.to_thread(follower.read_new)
            if data:
                quiet_since = loop.time()
                for text in splitter.feed(data):
                    yield text
                continue
            if heartbeat is not None and loop.time() - quiet_since >= heartbeat:
                quiet_since = loop.time()
                yield ""
            await asyncio.sleep(poll)
    finally:
        follower.close()
