"""The hub's log on stderr never holds up the hub: its own thread, a bounded queue."""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from pathlib import Path

import pytest

from mlx_openai_server_hub import logs
from mlx_openai_server_hub.logs import LogFiles


class _Reader:
    """Reads `fd` in a thread until it closes; `.seen` is what has arrived so far."""

    def __init__(self, fd: int) -> None:
        self.seen = bytearray()
        self._thread = threading.Thread(target=self._read, args=(fd,), daemon=True)
        self._thread.start()

    def _read(self, fd: int) -> None:
        while chunk := os.read(fd, 65536):
            self.seen.extend(chunk)

    def join(self, timeout: float) -> None:
        """Wait for the end of the pipe."""
        self._thread.join(timeout)


def test_a_console_nobody_reads_loses_console_lines_not_the_file_or_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "ECHO_QUEUE_LINES", 50)
    read_end, write_end = os.pipe()
    console = open(write_end, "w", buffering=1)  # noqa: SIM115 (closed below)
    files = LogFiles()
    try:
        log = files.open("mlx_hub.console_test", tmp_path / "hub.log")
        log.setLevel(logging.INFO)
        files.echo(console, log)

        # 2,000 lines of ~80 bytes: more than a pipe holds (64 KB) while nobody reads.
        def log_many() -> None:
            for i in range(2000):
                log.info("line %04d %s", i, "x" * 40)

        caller = threading.Thread(target=log_many, daemon=True)
        caller.start()
        caller.join(30)
        assert not caller.is_alive(), "logging blocked on a console nobody reads"

        # Once read again, the console goes on, first saying how much it missed. (A
        # line logged while the queue is still full is missed too: try until one shows.)
        reader = _Reader(read_end)
        afters = 0
        while b"after\n" not in reader.seen:
            assert afters < 300, bytes(reader.seen[-500:])
            log.info("after")
            afters += 1
            time.sleep(0.1)
        shown = reader.seen.decode()
        notices = [line for line in shown.splitlines() if "log lines not shown here" in line]
        missed = sum(int(notice.strip("[").split()[0]) for notice in notices)
        assert missed > 0
        assert shown.count(" line ") + shown.count(" after") + missed == 2000 + afters
    finally:
        files.close()
        console.close()  # the reader thread ends with the pipe
    reader.join(10)
    os.close(read_end)
    # The file has every line.
    written = (tmp_path / "hub.log").read_text()
    assert written.count(" line ") == 2000 and written.count(" after") == afters


def test_a_second_echo_replaces_the_first(tmp_path: Path) -> None:
    first_r, first_w = os.pipe()
    second_r, second_w = os.pipe()
    first, second = open(first_w, "w", buffering=1), open(second_w, "w", buffering=1)  # noqa: SIM115
    first_reader, second_reader = _Reader(first_r), _Reader(second_r)
    files = LogFiles()
    try:
        log = files.open("mlx_hub.console_test2", tmp_path / "hub.log")
        log.setLevel(logging.INFO)
        files.echo(first, log)
        log.info("one")
        files.echo(second, log)
        log.info("two")
    finally:
        files.close()  # stops the console thread once it has written what it has
        first.close()
        second.close()
    for reader, fd in ((first_reader, first_r), (second_reader, second_r)):
        reader.join(10)
        os.close(fd)
    assert first_reader.seen.decode().endswith("| one\n")
    assert second_reader.seen.decode().endswith("| two\n")
    assert second_reader.seen.count(b"\n") == 1


def test_a_stream_without_a_descriptor_is_written_directly(tmp_path: Path) -> None:
    stream = io.StringIO()  # what a test runner gives as stderr: it cannot block
    files = LogFiles()
    try:
        log = files.open("mlx_hub.console_test3", tmp_path / "hub.log")
        log.setLevel(logging.INFO)
        files.echo(stream, log)
        log.info("hello")
    finally:
        files.close()
    assert stream.getvalue().endswith("| INFO | hello\n")
