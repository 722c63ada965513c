"""Log tail and follow: last lines, new lines, rotation by the hub's own LogFiles, truncation."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from mlx_openai_server_hub import logs
from mlx_openai_server_hub.log_follow import (
    FileFollower,
    LineSplitter,
    follow_lines,
    tail_lines,
)


async def _collect(lines, expected: int, timeout: float = 10.0) -> list[str]:
    got: list[str] = []

    async def take() -> None:
        async for line in lines:
            got.append(line)
            if len(got) >= expected:
                return

    await asyncio.wait_for(take(), timeout)
    return got


async def test_tail_returns_the_last_lines(tmp_path: Path):
    path = tmp_path / "a.log"
    path.write_text("".join(f"line {i}\n" for i in range(5000)))
    assert await tail_lines(path, 3) == ["line 4997\n", "line 4998\n", "line 4999\n"]
    assert await tail_lines(path, 0) == []
    assert len(await tail_lines(path, 10_000)) == 5000
    assert await tail_lines(tmp_path / "missing.log", 5) == []


def test_a_line_being_written_is_not_split(tmp_path: Path):
    path = tmp_path / "a.log"
    path.write_bytes(b"one\ntwo\nthr")
    follower = FileFollower(path)
    assert follower.last_lines(5) == [b"one\n", b"two\n"]
    with path.open("ab") as fh:
        fh.write(b"ee\n")
    assert follower.read_new() == b"three\n"
    follower.close()


async def test_follow_survives_the_hub_log_rotation(tmp_path: Path, monkeypatch):
    # The real writer of hub.log, rotating every ~2 KB.
    monkeypatch.setattr(logs, "MAX_BYTES", 2000)
    files = logs.LogFiles()
    log = files.open("mlx_hub_test_follow", tmp_path / "hub.log")
    log.setLevel(logging.INFO)
    try:
        log.info("before follow")
        for _ in range(100):
            if (tmp_path / "hub.log").exists():
                break
            await asyncio.sleep(0.02)
        following = follow_lines(tmp_path / "hub.log", 1, poll=0.02)
        first = await _collect(following, 1)
        assert first[0].endswith("before follow\n")
        total = 200  # ~60 bytes each: several rotations (only 3 backups are kept)

        async def write() -> None:
            for i in range(total):
                log.info("message %04d", i)
                if i % 10 == 0:
                    await asyncio.sleep(0.03)

        writer = asyncio.create_task(write())
        got = await _collect(following, total, timeout=30)
        await writer
        await following.aclose()
    finally:
        files.close()
    numbers = [int(line.rsplit(" ", 1)[1]) for line in got]
    assert numbers == list(range(total))  # none lost, none twice, in order
    assert (tmp_path / "hub.log.1").exists()


async def test_follow_waits_for_a_missing_file_and_reads_a_truncated_one_again(tmp_path: Path):
    path = tmp_path / "late.log"
    following = follow_lines(path, 10, poll=0.02)
    first = asyncio.ensure_future(_collect(following, 2))
    await asyncio.sleep(0.1)
    path.write_text("a\nb\n")
    assert await first == ["a\n", "b\n"]
    path.write_text("c\n")  # truncated and rewritten in place (same inode)
    assert await _collect(following, 1) == ["c\n"]
    await following.aclose()


def test_line_splitter_keeps_partial_lines_and_bounds_long_ones():
    split = LineSplitter()
    assert split.feed(b"ab") == []
    assert split.feed(b"c\nde") == ["abc\n"]
    assert split.feed(b"\n") == ["de\n"]
    assert split.feed("é\n".encode()[:1]) == []
    assert split.feed("é\n".encode()[1:]) == ["é\n"]
    huge = split.feed(b"x" * 70_000)
    assert len(huge) == 1 and len(huge[0]) == 70_001


@pytest.mark.parametrize("count", [1, 2, 7])
def test_last_lines_across_block_boundaries(tmp_path: Path, count: int):
    path = tmp_path / "b.log"
    lines = [f"{i:05d} " + "y" * (i % 3000) + "\n" for i in range(40)]
    path.write_text("".join(lines))
    follower = FileFollower(path)
    assert [x.decode() for x in follower.last_lines(count)] == lines[-count:]
    follower.close()


async def test_follow_ends_when_the_hub_stops_and_sends_heartbeats(tmp_path: Path):
    path = tmp_path / "quiet.log"
    path.write_text("only\n")
    stop = asyncio.Event()
    got: list[str] = []

    async def run() -> None:
        async for line in follow_lines(path, 5, poll=0.01, stop=stop, heartbeat=0.05):
            got.append(line)
            if got.count("") == 2:
                stop.set()

    await asyncio.wait_for(run(), 5)
    assert got == ["only\n", "", ""]
