"""Replace a file in one step: readers see the old content or the new, never half a file.

The new content goes to a temporary file beside the target (same file system, so the
rename is atomic), is flushed to disk, then renamed over the target.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(path: Path, *, exclusive: bool = False) -> Iterator[Path]:
    """A fresh temporary path beside `path` for the block to write; then it replaces `path`.

    For writers that want a file name (a tokenizer's `save`, `mx.save_safetensors`): the
    name keeps `path`'s suffix. When the block raises, `path` is left as it was.
    `exclusive`: never replace; raise FileExistsError when `path` exists by then.
    """
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the data is on disk before the name points at it
        finally:
            os.close(fd)
        if exclusive:
            os.link(tmp, path)  # atomic like a rename, but fails on an existing name
        else:
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()  # still there when something failed, or after a link


def write_atomic(
    path: Path, data: str | bytes, *, mode: int | None = None, exclusive: bool = False
) -> None:
    """Write `data` (str as UTF-8) to `path` atomically.

    `mode`: the file's permissions; it is private (0600) until they are set. Without it the
    file gets the usual permissions (0666 less the umask). `exclusive`: create `path` only
    if it does not exist (else FileExistsError), never half-written.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with replacing(path, exclusive=exclusive) as tmp:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        fd = os.open(tmp, flags, 0o666 if mode is None else 0o600)
        with os.fdopen(fd, "wb") as fh:
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            fh.write(payload)
