"""The shared client/server contract, atomic writes and process-group helpers."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlx_openai_server_hub import contract, process_group
from mlx_openai_server_hub.atomic import replacing, write_atomic


def test_runtime_file_round_trips_and_ignores_keys_it_does_not_know(tmp_path: Path) -> None:
    state = contract.RuntimeState(
        pid=12, host="::", port=8000, workers={"a": contract.WorkerRecord(13, 13, 47850, 1.5)}
    )
    path = tmp_path / contract.RUNTIME_FILE_NAME
    path.write_text(contract.runtime_to_json(state))
    assert contract.read_runtime_file(path) == state

    raw = json.loads(path.read_text())
    raw["later_field"] = 1
    raw["workers"]["a"]["later_field"] = 2
    assert contract.runtime_from_json(json.dumps(raw)) == state


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[]",
        '{"host": "::", "port": 1}',  # no pid
        '{"pid": "12", "host": "::", "port": 1}',
        '{"pid": 12, "host": "::", "port": 1, "workers": []}',
        '{"pid": 12, "host": "::", "port": 1, "workers": {"a": {"pid": 1}}}',
    ],
)
def test_a_file_that_is_not_a_runtime_record_reads_as_none(text: str) -> None:
    assert contract.runtime_from_json(text) is None


def test_wildcard_binds_are_reached_on_loopback_and_ipv6_is_bracketed() -> None:
    for host in ("0.0.0.0", "::", "[::]", "", None):
        assert contract.is_wildcard(host)
        assert contract.connect_host(host) == "127.0.0.1"
        assert contract.browse_host(host) == "localhost"
    assert contract.connect_host("[::1]") == "::1"
    assert contract.base_url_for(contract.connect_host("[::1]"), 9) == "http://[::1]:9"


def test_serve_command_runs_this_interpreter_on_the_given_config(tmp_path: Path) -> None:
    command = contract.serve_command(tmp_path / "hub.yaml")
    assert command[0] == sys.executable
    assert command[1:] == [
        "-m",
        "mlx_openai_server_hub",
        "--config",
        str(tmp_path / "hub.yaml"),
        "serve",
        "--no-stderr-log",
    ]


def test_atomic_write_replaces_the_file_and_sets_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_text("old")
    write_atomic(path, "new", mode=0o600)
    assert path.read_text() == "new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    write_atomic(path, b"bytes")
    assert path.read_bytes() == b"bytes"
    assert os.listdir(tmp_path) == ["f.json"]  # no temporary file left behind


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_text("old")
    with pytest.raises(RuntimeError), replacing(path) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".safetensors")
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_a_group_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    code = (
        "import pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "pathlib.Path(sys.argv[1]).touch()\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(ready)], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process_group.group_alive(proc.pid) and process_group.pid_alive(proc.pid)
        started = time.monotonic()
        process_group.terminate_popen_group(proc, grace=0.3, kill_wait=10)
        assert proc.returncode == -signal.SIGKILL
        assert time.monotonic() - started < 10
        assert not process_group.group_alive(proc.pid)
        assert not process_group.signal_group(proc.pid, signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux only")
def test_children_get_a_parent_death_signal_on_linux() -> None:
    preexec = process_group.die_with_parent_preexec()
    assert preexec is not None
    # /proc/self/status has no parent-death field: ask prctl(PR_GET_PDEATHSIG) in the child.
    code = (
        "import ctypes; libc = ctypes.CDLL('libc.so.6'); sig = ctypes.c_int()\n"
        "libc.prctl(2, ctypes.byref(sig)); print(sig.value)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], preexec_fn=preexec, capture_output=True, text=True
    )
    assert out.stdout.strip() == str(int(signal.SIGKILL))
