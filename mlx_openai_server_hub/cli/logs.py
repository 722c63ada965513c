"""`logs`: print the end of the hub's or a model's log, and follow it.

Through the hub's `GET /hub/logs` when a hub answers (so a hub on another
machine works too: its host, port and token come as for every command), else
straight from the log files on this machine.
"""

import codecs
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mlx_openai_server_hub.cli.output import echo, fail
from mlx_openai_server_hub.cli.state import Cli
from mlx_openai_server_hub.client import HubClientError, HubHTTPError, HubUnreachable

if TYPE_CHECKING:
    from mlx_openai_server_hub.config import HubConfig

# The most lines `/hub/logs` sends back (logs_api.MAX_LINES; the CLI does not import the
# server's modules): `-n 0` (all) and larger counts ask for this many.
HUB_MAX_LINES = 10_000


def _log_file(cfg: "HubConfig", model: str | None) -> Path:
    if model is None:
        return cfg.log_path / "hub.log"
    entry = cfg.model(model)
    if entry is None:
        fail(f"Unknown model '{model}' (not in {cfg.source_path})")
    if entry.log_file is None:
        fail(f"Model '{model}' has no log file (no_log_file is set)")
    return Path(entry.log_file)


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def print_file(path: Path, follow: bool, lines: int) -> None:
    """The last `lines` lines of `path` (0: all), then with `follow` what is appended,
    across rotation and truncation, until Ctrl+C."""
    if not follow:
        try:
            path.open("rb").close()
        except FileNotFoundError:
            fail(f"No log file yet: {path}")
        except OSError as exc:
            fail(f"Cannot read {path}: {exc}")
    # Imported here: it brings asyncio (15 ms), which no other command needs.
    from mlx_openai_server_hub.log_follow import POLL_SECONDS, FileFollower

    follower = FileFollower(path)
    # A chunk may end inside a multi-byte character: decode across chunks.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    try:
        if lines:
            tail = follower.last_lines(lines)
            rest = follower.read_new()  # a last line still being written, if any
            if rest and len(tail) == lines:
                tail = tail[1:]  # which counts as one of the `lines`
            _write(decoder.decode(b"".join(tail) + rest))
        # After the last lines (or from the start for all): the rest, then what follows.
        while True:
            data = follower.read_new()
            if data:
                _write(decoder.decode(data))
            elif not follow:
                return
            else:
                time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        pass
    finally:
        follower.close()


def _print_from_hub(cli: Cli, model: str | None, follow: bool, lines: int) -> bool:
    """Print the log through the hub; False when no hub answers (nothing was printed)."""
    client = cli.client()
    count = HUB_MAX_LINES if lines == 0 else min(lines, HUB_MAX_LINES)
    try:
        if not follow:
            _write(client.log_tail(model, count))
            return True
        events = client.follow_log(model, count)
    except HubUnreachable:
        return False
    except HubHTTPError as exc:
        fail(exc.message)
    try:
        for line in events:
            _write(line + "\n")
    except KeyboardInterrupt:
        return True
    except HubClientError as exc:
        fail(f"Lost the log stream: {exc}")
    echo("The hub ended the log stream (it is shutting down).", err=True)
    return True


def cmd_logs(cli: Cli, model: str | None, follow: bool, lines: int) -> None:
    """Print the end of the hub's (or a model's) log, and follow it with -f."""
    cfg = cli.config()
    if not _print_from_hub(cli, model, follow, lines):
        print_file(_log_file(cfg, model), follow, lines)
