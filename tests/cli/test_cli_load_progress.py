"""`start-model` and `load-model` show load progress while they wait (issue 14 §2)."""

from __future__ import annotations

import re

from mlx_openai_server_hub.cli import progress
from mlx_openai_server_hub.cli.progress import Outcome, PlainProgress, progress_of
from tests.cli import cli_env
from tests.cli.test_cli_hub import ANSI, cli, run_in_pty
from tests.conftest import Hub, HubFactory, fake_model

# The size is known (`memory`) and the worker holds most of it while it "loads", so the hub
# reports a load_progress share rather than only the seconds.
SIZED = {"memory": "400MB"}


def _model(name: str, delay: int) -> dict:
    env = {"FAKE_START_DELAY": str(delay), "FAKE_HOLD_MB": "300"}
    return fake_model(name, env=env, **SIZED)


def _jit_model(name: str, delay: int) -> dict:
    """A JIT model: `load-model` loads it into its running worker, taking `delay` s."""
    env = {"FAKE_START_DELAY": str(delay), "FAKE_HOLD_MB": "300"}
    return fake_model(name, jit_enabled=True, env=env, **SIZED)


def _pty(hub: Hub, *args: str) -> tuple[str, int]:
    out, code = run_in_pty(["--config", str(hub.config_path), *args], cli_env(hub.env))
    return ANSI.sub("", out), code


def test_a_terminal_sees_the_load_percent_then_the_same_result_line(hub_factory: HubFactory):
    hub = hub_factory([_model("slow", 3), _jit_model("other", 3)])
    out, code = _pty(hub, "start-model", "slow")
    assert code == 0, out
    assert re.search(r"slow\s+loading\s+\d+\.\ds  (?:[█░]+ )?(\d+ %|\d+ s)", out), out
    assert out.rstrip().splitlines()[-1] == "[ok] slow: start requested"

    assert cli(hub, "start-model", "other").returncode == 0
    out, code = _pty(hub, "load-model", "other")
    assert code == 0, out
    assert re.search(r"other\s+loading\s+\d+\.\ds  (?:[█░]+ )?(\d+ %|\d+ s)", out), out
    assert out.rstrip().splitlines()[-1].startswith("[ok] other: memory load requested")


def test_a_pipe_gets_plain_lines_on_stderr_and_stdout_is_unchanged(hub_factory: HubFactory):
    # Longer than the 5 s between plain lines (the first comes after 5 s, too).
    hub = hub_factory([_model("slow", 7), _jit_model("other", 7)])
    result = cli(hub, "start-model", "slow")
    assert (result.returncode, result.stdout) == (0, "[ok] slow: start requested\n")
    lines = result.stderr.splitlines()
    assert lines and all(re.fullmatch(r"slow: loading (\d+ %|\d+ s)", line) for line in lines)
    assert "\x1b" not in result.stderr
    assert len(lines) <= 2  # one per 5 s at most

    assert cli(hub, "start-model", "other").returncode == 0
    result = cli(hub, "load-model", "other")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("[ok] other: memory load requested")
    assert re.match(r"other: loading (\d+ %|\d+ s)\n", result.stderr), result.stderr


def test_quick_actions_print_no_progress(hub_factory: HubFactory):
    hub = hub_factory([fake_model("alpha")])
    result = cli(hub, "start-model", "alpha")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "[ok] alpha: start requested\n",
        "",
    )


# --- the lines themselves (no hub) ----------------------------------------------------------


class _Poller:
    def __init__(self, meta: dict) -> None:
        self.meta = meta


DOWNLOAD = {
    "state": "downloading",
    "bytes_done": 6_100_000_000,
    "bytes_total": 14_200_000_000,
    "rate_bytes_per_s": 12_000_000,
    "eta_s": 180,
    "files_done": 3,
    "files_total": 12,
}


def test_download_and_load_texts():
    assert progress_of({"download": DOWNLOAD, "memory_state": "unloaded"}) == (
        "downloading",
        " 43%  6.1 GB/14.2 GB  12.0 MB/s  ETA 3m00s  files 3/12",
        DOWNLOAD["bytes_done"] / DOWNLOAD["bytes_total"],
    )
    assert progress_of({"download": {"state": "queued"}}) == ("download", "queued", None)
    loading = {"memory_state": "loading", "download": {"state": "done"}}
    assert progress_of({**loading, "load_progress": 0.7, "load_elapsed_s": 3}) == (
        "loading",
        "70 %",
        0.7,
    )
    assert progress_of({**loading, "load_progress": None, "load_elapsed_s": 12.4}) == (
        "loading",
        "12 s",
        None,
    )
    assert progress_of({"memory_state": "loaded", "load_progress": None}) is None


def test_plain_lines_wait_their_interval_and_skip_repeats(monkeypatch, capsys):
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    outcome, view = Outcome("qwen", started=100.0), PlainProgress(interval=5.0)
    poller = _Poller({"qwen": {"memory_state": "loading", "load_progress": 0.5}})
    for now in (101.0, 104.9, 105.0, 107.0, 111.0):  # due at 105; 110+ has the same text
        clock[0] = now
        view.update([outcome], poller)
    poller.meta["qwen"]["load_progress"] = 0.8
    view.update([outcome], poller)
    assert capsys.readouterr() == ("", "qwen: loading 50 %\nqwen: loading 80 %\n")
