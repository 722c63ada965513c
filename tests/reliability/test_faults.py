"""Faults injected into a real hub and its fake workers, and what must survive them.

Already covered in tests/integration (not repeated): a SIGKILLed hub's leftover group is
ended by the next start, a killed worker is noticed within 1 s, a crash mid-stream
raises APIError in the openai client, SIGTERM and /hub/shutdown leave no process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from tests.conftest import Hub, HubFactory, fake_model

from . import figure

CHAT = "/v1/chat/completions"
IS_LINUX = sys.platform.startswith("linux")


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


async def post(hub: Hub, payload: dict[str, Any], path: str = CHAT) -> tuple[int, Any]:
    """POST JSON to the hub; (status, parsed body or text)."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(hub.url + path, json=payload) as resp,
    ):
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


async def read_stream(hub: Hub, payload: dict[str, Any]) -> tuple[list[str], str | None]:
    """Stream a chat; (data lines, the error that ended it, if any)."""
    lines: list[str] = []
    async with aiohttp.ClientSession() as session:
        try:
            async with session.post(hub.url + CHAT, json={**payload, "stream": True}) as resp:
                assert resp.status == 200, await resp.text()
                async for raw in resp.content:
                    line = raw.decode().strip()
                    if line.startswith("data: "):
                        lines.append(line[6:])
        except aiohttp.ClientError as exc:
            return lines, repr(exc)
    return lines, None


def content_of(lines: list[str]) -> str:
    """The text a chat stream carried."""
    text = ""
    for line in lines:
        if line == "[DONE]":
            continue
        chunk = json.loads(line)
        for choice in chunk.get("choices", []):
            text += choice.get("delta", {}).get("content") or ""
    return text


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def group_of(pgid: int) -> list[psutil.Process]:
    """The live processes of a process group."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(proc.pid) == pgid and alive(proc.pid):
                found.append(proc)
    return found


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `predicate` until true; the seconds it took."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


async def loaded(hub: Hub, *names: str) -> dict[str, dict[str, Any]]:
    return {n: await hub.wait_for(n, lambda m: m["memory_state"] == "loaded") for n in names}


# ----------------------------------------------------------- graceful stops


def _stop_with_sigterm(hub: Hub) -> Awaitable[Any]:
    assert hub.proc is not None
    hub.proc.send_signal(signal.SIGTERM)
    return asyncio.sleep(0)


def _stop_with_cli(hub: Hub) -> Awaitable[Any]:
    """`mlx-openai-server-hub stop`: asks the hub, then waits until it is gone."""
    argv = [sys.executable, "-m", "mlx_openai_server_hub", "--config", str(hub.config_path), "stop"]
    return asyncio.to_thread(
        subprocess.run, argv, env=hub.env, capture_output=True, timeout=60, check=True
    )


def _stop_with_page_button(hub: Hub) -> Awaitable[Any]:
    """The status page's Stop button posts /hub/service/stop."""
    return hub.post("/hub/service/stop")


STOPS = {
    "SIGTERM": _stop_with_sigterm,
    "`mlx-openai-server-hub stop`": _stop_with_cli,
    "the page's Stop": _stop_with_page_button,
}


@pytest.mark.parametrize("how", list(STOPS))
async def test_graceful_stop_lets_requests_in_flight_finish(hub_factory: HubFactory, how: str):
    """In-flight requests and streams finish; new requests get 503; nothing is left."""
    hub = hub_factory([fake_model("a", default=True)])
    await loaded(hub, "a")
    slow = asyncio.create_task(post(hub, chat("a", fake_delay=4)))
    stream = asyncio.create_task(read_stream(hub, chat("a", fake_chunks=12, fake_chunk_delay=0.3)))
    await hub.wait_for("a", lambda m: m["in_flight"] == 2)
    stopping = asyncio.ensure_future(STOPS[how](hub))

    # Until the stop request arrives (the CLI takes a moment to start) requests are
    # served; from then on they get 503 while the two in flight go on.
    deadline = time.monotonic() + 3
    while True:
        status, body = await post(hub, chat("a"))
        if status != 200 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert status == 503, body
    assert "shutting down" in body["error"]["message"]
    assert not slow.done() and not stream.done()
    assert (await hub.status())["status"] == "ok"  # the control API still answers

    status, body = await slow
    assert status == 200 and body["choices"][0]["message"]["content"] == "fake:/models/a:hi"
    lines, error = await stream
    assert error is None and lines[-1] == "[DONE]"
    assert content_of(lines) == "".join(f"tok{i} " for i in range(12))
    await stopping
    assert hub.proc is not None and hub.proc.wait(20) == 0
    assert hub.leftovers() == []
    figure(
        "Faults",
        f"graceful stop by {how} with 2 requests in flight",
        "both finished; new request 503; no process left",
    )


async def test_grace_period_bounds_the_drain(hub_factory: HubFactory):
    """A request longer than shutdown_grace does not hold the hub: it stops on time."""
    hub = hub_factory([fake_model("a", default=True)], shutdown_grace=1)
    await loaded(hub, "a")
    endless = asyncio.create_task(post(hub, chat("a", fake_delay=60)))
    await hub.wait_for("a", lambda m: m["in_flight"] == 1)
    assert hub.proc is not None
    t0 = time.monotonic()
    hub.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(hub.proc.wait, 15) == 0
    took = time.monotonic() - t0
    assert 1.0 <= took < 4.0, took
    with contextlib.suppress(aiohttp.ClientError):
        status, _ = await endless
        assert status >= 500  # cut off: never a clean 200
    assert hub.leftovers() == []
    figure(
        "Faults",
        "SIGTERM with a 60 s request in flight, shutdown_grace 1 s",
        f"hub gone after {took:.1f} s; no process left",
    )


# -------------------------------------------------------------------- reload


async def test_reload_with_requests_in_flight(hub_factory: HubFactory):
    """Unchanged: untouched. Changed: restarted after its requests. Removed: drained."""
    models = [fake_model(n, default=True) for n in ("same", "changed", "removed")]
    hub = hub_factory(models)
    before = await loaded(hub, "same", "changed", "removed")
    pids = {n: m["pid"] for n, m in before.items()}
    in_flight = {
        n: asyncio.create_task(post(hub, chat(n, fake_delay=2)))
        for n in ("same", "changed", "removed")
    }
    streams = {
        n: asyncio.create_task(read_stream(hub, chat(n, fake_chunks=10, fake_chunk_delay=0.2)))
        for n in ("same", "changed", "removed")
    }
    for name in in_flight:
        await hub.wait_for(name, lambda m: m["in_flight"] == 2)

    hub.write_config(
        [fake_model("same", default=True), fake_model("changed", default=True, context_length=64)]
    )
    status, diff = await hub.post("/hub/reload")
    assert status == 200, diff
    assert (diff["unchanged"], diff["restarted"], diff["stopped"]) == (
        ["changed", "same"],
        ["changed"],
        ["removed"],
    )
    # While the old requests run, new ones to the unchanged model are served as usual.
    extra = await asyncio.gather(*(post(hub, chat("same")) for _ in range(20)))
    assert [s for s, _ in extra] == [200] * 20
    assert {b["fake_worker"]["pid"] for _, b in extra} == {pids["same"]}
    # Nothing was restarted or stopped under a request.
    assert (await hub.model("changed"))["pid"] == pids["changed"]
    assert alive(pids["removed"])

    for name, task in in_flight.items():
        status, body = await task
        assert status == 200, (name, body)
        assert body["fake_worker"]["pid"] == pids[name]
    for name, task in streams.items():
        lines, error = await task
        assert error is None and lines[-1] == "[DONE]", (name, error)
        assert {json.loads(x)["fake_worker"]["pid"] for x in lines[:-1]} == {pids[name]}

    meta = await hub.wait_for(
        "changed", lambda m: m["memory_state"] == "loaded" and m["pid"] != pids["changed"]
    )
    assert "--context-length" in psutil.Process(meta["pid"]).cmdline()
    assert (await hub.model("same"))["pid"] == pids["same"]
    await wait_until(lambda: not alive(pids["removed"]), 10, "removed model's worker stops")
    figure(
        "Faults",
        "reload with 6 requests in flight (unchanged, changed, removed model) + 20 new",
        "26/26 succeeded; the changed model restarted and the removed one stopped only "
        "after their requests",
    )


# ------------------------------------------------------------ hangs, crashes


async def test_hanging_worker_times_out_and_the_rest_stays_responsive(hub_factory: HubFactory):
    """A worker that accepts and never answers: 504 after request_timeout; nothing else waits."""
    hub = hub_factory(
        [
            fake_model("hung", default=True, request_timeout=1, env={"FAKE_HANG": "1"}),
            fake_model("ok", default=True),
        ]
    )
    await loaded(hub, "hung", "ok")
    t0 = time.monotonic()
    hung = [asyncio.create_task(post(hub, chat("hung"))) for _ in range(10)]
    hung += [asyncio.create_task(post(hub, chat("hung", stream=True))) for _ in range(5)]
    await hub.wait_for("hung", lambda m: m["in_flight"] == 15)

    # Meanwhile the status and the other model answer at once.
    t1 = time.monotonic()
    await hub.status()
    ok = await asyncio.gather(*(post(hub, chat("ok")) for _ in range(10)))
    others_took = time.monotonic() - t1
    assert [s for s, _ in ok] == [200] * 10
    assert others_took < 0.8, others_took

    results = await asyncio.gather(*hung)
    took = time.monotonic() - t0
    for status, body in results:
        assert status == 504, body
        assert body["error"]["type"] == "timeout_error"
        assert "did not answer within 1 s (request_timeout)" in body["error"]["message"]
    assert took < 3.0, took
    meta = await hub.model("hung")
    assert meta["in_flight"] == 0 and meta["memory_state"] == "loaded"
    figure(
        "Faults",
        "worker that never answers (request_timeout 1 s), 15 requests",
        f"15 × 504 after {took:.1f} s; status + 10 requests to another model "
        f"in {others_took * 1000:.0f} ms",
    )


async def test_a_stream_that_stalls_mid_way_ends_with_an_error(hub_factory: HubFactory):
    """Silence longer than request_timeout in the middle of a stream: SSE error, broken end."""
    hub = hub_factory([fake_model("a", default=True, request_timeout=1)])
    await loaded(hub, "a")
    # Chunks every 0.3 s pass; then the worker goes silent for 3 s.
    lines, error = await read_stream(hub, chat("a", fake_chunks=3, fake_chunk_delay=0.3))
    assert error is None and lines[-1] == "[DONE]"
    t0 = time.monotonic()
    lines, error = await read_stream(hub, chat("a", fake_chunks=3, fake_chunk_delay=3))
    took = time.monotonic() - t0
    assert error is not None, lines  # not a clean end
    assert "[DONE]" not in lines
    last = json.loads(lines[-1])
    assert last["error"]["type"] == "service_unavailable" or last["error"]["code"] == "502"
    assert "did not answer within 1 s" in last["error"]["message"]
    assert took < 2.5, took
    assert (await hub.model("a"))["in_flight"] == 0


async def test_a_crash_mid_stream_leaves_other_models_streaming(hub_factory: HubFactory):
    """One worker dies mid-stream: its client sees an error; a stream on another model finishes."""
    hub = hub_factory([fake_model("a", default=True), fake_model("b", default=True)])
    before = await loaded(hub, "a", "b")
    other = asyncio.create_task(read_stream(hub, chat("b", fake_chunks=20, fake_chunk_delay=0.05)))
    await hub.wait_for("b", lambda m: m["in_flight"] == 1)
    lines, error = await read_stream(hub, chat("a", fake_chunks=10, fake_crash_after=3))
    crashed_at = time.monotonic()
    assert error is not None and "[DONE]" not in lines
    assert "failed mid-response" in json.loads(lines[-1])["error"]["message"]
    assert content_of(lines[:-1]) == "tok0 tok1 tok2 "
    noticed = await hub.wait_for("a", lambda m: m["memory_state"] == "unloaded", timeout=2)
    noticed_after = time.monotonic() - crashed_at
    assert noticed_after < 1.0 and noticed["exit_code"] == 1
    b_lines, b_error = await other
    assert b_error is None and b_lines[-1] == "[DONE]"
    assert (await hub.model("b"))["pid"] == before["b"]["pid"]
    figure(
        "Faults",
        "worker killed mid-stream (another model streaming meanwhile)",
        f"client got an SSE error and a broken stream; noticed in "
        f"{noticed_after * 1000:.0f} ms; the other stream complete",
    )


# --------------------------------------------------- every way the hub ends


@pytest.mark.parametrize("sig", ["SIGINT", "SIGHUP"])
async def test_other_signals_stop_the_hub_cleanly(hub_factory: HubFactory, sig: str):
    """Ctrl+C, or the terminal closing: workers stopped, runtime file removed."""
    hub = hub_factory([fake_model("a", default=True, env={"FAKE_SPAWN_CHILD": "1"})])
    await loaded(hub, "a")
    assert hub.proc is not None
    hub.proc.send_signal(getattr(signal, sig))
    assert await asyncio.to_thread(hub.proc.wait, 20) == 0
    assert hub.leftovers() == []
    assert not (hub.log_path / "hub_runtime.json").exists()
    figure("Faults", f"hub ended by {sig}", "exit 0; workers and their helpers gone")


async def test_second_signal_kills_stubborn_workers_at_once(hub_factory: HubFactory):
    """A worker ignoring SIGTERM would take 10 s; a second Ctrl+C ends it now."""
    stubborn = {"FAKE_IGNORE_SIGTERM": "1", "FAKE_SPAWN_CHILD": "1"}
    hub = hub_factory([fake_model("a", default=True, env=stubborn)])
    await loaded(hub, "a")
    assert hub.proc is not None
    t0 = time.monotonic()
    hub.proc.send_signal(signal.SIGINT)
    await asyncio.sleep(0.5)
    hub.proc.send_signal(signal.SIGINT)
    assert await asyncio.to_thread(hub.proc.wait, 20) == 0
    took = time.monotonic() - t0
    assert took < 3.0, took
    assert hub.leftovers() == []
    figure(
        "Faults",
        "two Ctrl+C with a worker that ignores SIGTERM",
        f"hub and workers gone after {took:.1f} s",
    )


async def test_sigkill_during_a_load_leaves_nothing(hub_factory: HubFactory):
    """Killed while a worker loads: the runtime file names it; nothing outlives the next start."""
    slow = {"FAKE_START_DELAY": "30", "FAKE_SPAWN_CHILD": "1"}
    hub = hub_factory([fake_model("a", default=True, env=slow), fake_model("b", default=True)])
    meta = await hub.wait_for("a", lambda m: m["memory_state"] == "loading" and m["pid"])
    await loaded(hub, "b")
    runtime = json.loads((hub.log_path / "hub_runtime.json").read_text())
    record = runtime["workers"]["a"]
    assert (record["pid"], record["pgid"], record["port"]) == (
        meta["pid"],
        meta["pid"],
        meta["port"],
    )
    group = group_of(meta["pid"])
    assert len(group) == 2  # the worker and its helper

    assert hub.proc is not None
    hub.proc.send_signal(signal.SIGKILL)
    hub.proc.wait()
    if IS_LINUX:
        # The workers themselves die with the hub (PR_SET_PDEATHSIG); helpers may linger.
        await wait_until(lambda: not alive(meta["pid"]), 2, "worker dies with its hub")
    hub.start()
    await wait_until(lambda: not any(alive(p.pid) for p in group), 5, "leftovers ended")
    log = (hub.log_path / "hub.log").read_text()
    assert "left behind by a previous hub run" in log
    await loaded(hub, "b")
    figure(
        "Faults",
        "hub SIGKILLed while a worker loads",
        "worker group recorded in hub_runtime.json and ended by the next start",
    )


def test_reaping_never_touches_a_reused_pid(hub_factory: HubFactory, tmp_path: Path):
    """A stale runtime file naming a process group that is not ours: it is left alone."""
    hub = hub_factory([fake_model("a")], start=False)
    stranger = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        dead_hub = subprocess.Popen([sys.executable, "-c", "pass"])
        dead_hub.wait()
        created = psutil.Process(stranger.pid).create_time()
        record = {
            "pid": dead_hub.pid,
            "host": "127.0.0.1",
            "port": hub.port,
            "started_at": "2020-01-01T00:00:00+00:00",
            # Our worker (by this record) started an hour after the stranger: pid reused.
            "workers": {
                "a": {
                    "pid": stranger.pid,
                    "pgid": stranger.pid,
                    "port": 1,
                    "create_time": created + 3600,
                }
            },
        }
        hub.log_path.mkdir(parents=True, exist_ok=True)
        (hub.log_path / "hub_runtime.json").write_text(json.dumps(record))
        hub.start()
        time.sleep(0.5)
        assert stranger.poll() is None  # still running
        assert "left behind" not in (hub.log_path / "hub.log").read_text()
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{",
        b"\xff\xfe\x00",
        b"[]",
        b'{"pid": "x"}',
        b'{"pid": 1, "host": 1, "port": 1, "workers": {"a": 5}}',
    ],
)
def test_a_broken_runtime_file_does_not_stop_the_start(hub_factory: HubFactory, content: bytes):
    """Whatever a crash left in hub_runtime.json, the next start goes ahead (and rewrites it)."""
    hub = hub_factory([fake_model("a")], start=False)
    hub.log_path.mkdir(parents=True, exist_ok=True)
    (hub.log_path / "hub_runtime.json").write_bytes(content)
    hub.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with contextlib.suppress(ValueError, OSError):
            if json.loads((hub.log_path / "hub_runtime.json").read_text())["pid"] == hub.proc.pid:  # type: ignore[union-attr]
                return
        time.sleep(0.05)
    pytest.fail("hub_runtime.json was not rewritten")


# ------------------------------------------------------------ log disk faults


def _warnings(hub: Hub) -> list[str]:
    return list(asyncio.run(hub.status())["warnings"])


async def test_log_path_under_a_regular_file(hub_factory: HubFactory, tmp_path: Path):
    """log_path cannot exist (its parent is a file): the hub serves, and says so."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    hub = hub_factory([fake_model("a", default=True)], log_path=str(blocker / "logs"))
    await loaded(hub, "a")
    for _ in range(20):
        status, body = await post(hub, chat("a"))
        assert status == 200, body
    warnings = (await hub.status())["warnings"]
    for name in ("hub.log", "a.log", "hub_runtime.json"):
        assert any(name in w and "Not a directory" in w for w in warnings), (name, warnings)
    figure(
        "Faults",
        "log_path unwritable (its parent is a regular file)",
        "serving; warnings name hub.log, a.log and hub_runtime.json",
    )


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
async def test_a_full_disk_for_a_model_log(hub_factory: HubFactory):
    """A model's log_file on /dev/full (every write: ENOSPC): served, and in the warnings."""
    hub = hub_factory([fake_model("a", default=True, log_file="/dev/full")])
    await loaded(hub, "a")
    for _ in range(20):
        status, _ = await post(hub, chat("a"))
        assert status == 200
    warnings = (await hub.status())["warnings"]
    assert any("/dev/full" in w and "No space left" in w for w in warnings), warnings
    figure(
        "Faults",
        "a model's log on a full disk (/dev/full)",
        "serving; warning 'No space left on device'",
    )


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KB tmpfs (needs root and mount rights; skipped where there are none)."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


async def test_disk_fills_up_then_frees(hub_factory: HubFactory, tiny_tmpfs: Path):
    """log_path on a tiny disk that fills up: warnings appear, serving goes on; freed: they go."""
    hub = hub_factory([fake_model("a", default=True)], log_path=str(tiny_tmpfs / "logs"))
    await loaded(hub, "a")
    filler = tiny_tmpfs / "filler"
    with contextlib.suppress(OSError), open(filler, "wb") as out:
        while True:
            out.write(b"x" * 4096)
            out.flush()

    async def churn() -> None:
        # Unload and load: log lines in hub.log and a.log.
        for action in ("unload", "load"):
            status, body = await hub.post(f"/hub/models/a/{action}")
            assert status == 200, body
        status, _ = await post(hub, chat("a"))
        assert status == 200

    await churn()
    warnings = (await hub.status())["warnings"]
    assert any("No space left" in w for w in warnings), warnings
    filler.unlink()
    await churn()
    await asyncio.sleep(0.3)
    assert not any("Cannot write" in w for w in (await hub.status())["warnings"])
    figure(
        "Faults",
        "log disk fills up (256 KB tmpfs), then space is freed",
        "serving throughout; warning shown, then cleared",
    )
