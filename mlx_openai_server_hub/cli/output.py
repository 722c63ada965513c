"""Terminal output: lines, `[ok]`-style flashes, errors, live blocks and spinners.

Colour and cursor movement only on a terminal (like click), so pipes and logs get plain
text.
"""

import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

_COLOURS = {"cyan": 36, "green": 32, "yellow": 33, "red": 31}
_FLASH = {
    "info": ("[info]", "cyan"),
    "ok": ("[ok]", "green"),
    "warn": ("[warn]", "yellow"),
    "err": ("[err]", "red"),
}


def isatty(stream: Any) -> bool:
    """True when `stream` is a terminal (False for closed or fake streams)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def echo(message: str = "", *, err: bool = False, colour: str | None = None) -> None:
    """Print a line; `colour` applies only when the stream is a terminal (like click)."""
    stream = sys.stderr if err else sys.stdout
    if colour and isatty(stream):
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
    return isatty(sys.stdout) and os.environ.get("TERM", "") != "dumb"


def utf8_output() -> bool:
    """True when stdout takes UTF-8 (spinners, marks and bars use it then)."""
    return "utf" in (getattr(sys.stdout, "encoding", None) or "").lower()


def spinner_frames() -> str:
    """The spinner's frames: braille dots where the output takes UTF-8."""
    return "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏" if utf8_output() else "|/-\\"


def marks() -> tuple[str, str]:
    """(done, failed) marks for progress lines."""
    return ("✓", "✗") if utf8_output() else ("+", "x")


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
    frames, began = spinner_frames(), time.monotonic()

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
