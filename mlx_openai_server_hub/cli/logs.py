"""`logs`: print the end of the hub's or a model's log file, and follow it."""

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mlx_openai_server_hub.cli.output import fail
from mlx_openai_server_hub.cli.state import Cli

if TYPE_CHECKING:
    from mlx_openai_server_hub.config import HubConfig


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
