"""Table rendering: the reference's layout, real worker columns, the watch summary."""

from __future__ import annotations

import time
from types import SimpleNamespace

from mlx_openai_server_hub import tables


def model(name: str, **kw: object) -> SimpleNamespace:
    base = {
        "name": name,
        "model_type": "lm",
        "group": None,
        "default": False,
        "auto_unload_minutes": None,
        "model_path": f"/models/{name}",
    }
    base.update(kw)
    return SimpleNamespace(**base)


def entry(name: str, **meta: object) -> dict:
    return {"id": name, "object": "model", "metadata": meta}


def test_status_table_matches_the_reference_layout():
    models = [
        model("alpha", default=True),
        model("beta", group="g1", default=True, auto_unload_minutes=5),
        model("gamma", model_type="embeddings", model_path="org/gamma"),
    ]
    live = [
        entry(
            "alpha",
            process_state="running",
            memory_state="loaded",
            pid=None,
            memory_bytes=int(4.2 * 2**30),
            queued_requests=3,
        ),
        entry("beta", process_state="running", memory_state="unloaded", memory_bytes=None),
        entry("gamma", process_state="stopped", memory_state="unloaded"),
    ]
    rows = [row for _, row in tables.status_rows(models, live)]
    assert tables.render_table(tables.STATUS_HEADERS, rows) == [
        "  NAME  | STATE   | LOADED | AUTO-UNLOAD | TYPE       | GROUP | DEFAULT "
        "| MEMORY           | MODEL        ",
        "  ------+---------+--------+-------------+------------+-------+---------"
        "+------------------+--------------",
        "  alpha | running | yes    | -           | lm         | -     | ✓       "
        "| 4.2 GB, 3 queued | /models/alpha",
        "  beta  | running | no     | 5min        | lm         | g1    | ✓       "
        "| -                | /models/beta ",
        "  gamma | stopped | no     | -           | embeddings | -     | -       "
        "| -                | org/gamma    ",
    ]


def test_memory_cell_shows_the_size_and_queued_requests():
    assert tables.memory_cell({}) == "-"
    assert tables.memory_cell({"memory_bytes": 0, "queued_requests": 0}) == "-"
    assert tables.memory_cell({"memory_bytes": 800 * 2**20}) == "800.0 MB"
    assert tables.memory_cell({"memory_bytes": None, "queued_requests": 2}) == "2 queued"


def test_memory_summary_line():
    budget = {"memory": {"used_bytes": 12 * 2**30, "budget_bytes": 24 * 2**30}}
    assert tables.memory_summary(budget) == "Memory: used 12.0 GB / budget 24.0 GB"
    unbudgeted = {"memory": {"used_bytes": 0, "budget_bytes": None}}
    assert tables.memory_summary(unbudgeted) == "Memory: used 0 B (no budget)"
    assert tables.memory_summary(None) is None  # no hub
    assert tables.memory_summary({"models": []}) is None  # a hub that reports no memory


def test_running_worker_shows_pid_and_port():
    rows = tables.status_rows(
        [model("a")], [entry("a", process_state="running", pid=4242, port=47850)]
    )
    assert rows[0][1][1] == "running (pid=4242, port=47850)"


def test_without_a_hub_every_model_is_inactive_and_config_values_show():
    rows = tables.status_rows([model("a", auto_unload_minutes=0.5, group="g")], None)
    assert rows == [("a", ["a", "inactive", "no", "0.5min", "lm", "g", "-", "-", "/models/a"])]


def test_models_only_the_hub_knows_come_last():
    rows = tables.status_rows(
        [model("a")],
        [entry("b", process_state="running", model_path="/m/b"), entry("a")],
    )
    assert [name for name, _ in rows] == ["a", "b"]
    assert rows[1][1][-1] == "/m/b"


def test_uptime_formats():
    assert tables.format_uptime(None) == "-"
    assert tables.format_uptime(-1) == "-"
    assert tables.format_uptime(7) == "7s"
    assert tables.format_uptime(61) == "1m01s"
    assert tables.format_uptime(3 * 3600 + 5 * 60 + 9) == "3h05m"


def test_watch_frame_shows_real_rows_sorted_by_name():
    now = time.time()
    snapshot = {
        "timestamp": int(now),
        "models": [
            entry(
                "zeta",
                process_state="failed",
                exit_code=3,
                log_path="/logs/zeta.log",
                started_at=now - 30,
            ),
            entry(
                "alpha",
                process_state="running",
                pid=123,
                group="g1",
                started_at=now - 75,
                exit_code=None,
                log_path="/logs/alpha.log",
                memory_bytes=3 * 2**30,
                queued_requests=1,
            ),
            entry("mid", process_state="stopped", exit_code=0),
        ],
        "memory": {"used_bytes": 3 * 2**30, "budget_bytes": 8 * 2**30},
    }
    summary, memory, header, _divider, *rows = tables.watch_frame(snapshot, now=now)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(now)))
    assert summary == f"[{stamp}] models=3 running=1 stopped=1 failed=1"
    assert memory == "Memory: used 3.0 GB / budget 8.0 GB"
    assert header.split("|")[0].strip() == "NAME"
    assert [c.strip() for c in header.split("|")] == list(tables.WATCH_HEADERS)
    cells = [[c.strip() for c in row.split("|")] for row in rows]
    assert cells == [
        ["alpha", "RUNNING", "123", "g1", "1m15s", "3.0 GB, 1 queued", "-", "alpha.log"],
        ["mid", "STOPPED", "-", "-", "-", "-", "-", "-"],
        ["zeta", "FAILED", "-", "-", "-", "-", "3", "zeta.log"],
    ]


def test_watch_frame_without_models():
    assert tables.watch_frame({"timestamp": 0, "models": []})[1] == "  (no managed processes)"
    memory = {"used_bytes": 0, "budget_bytes": None}
    assert tables.watch_frame({"timestamp": 0, "models": [], "memory": memory})[1:] == [
        "Memory: used 0 B (no budget)",
        "  (no managed processes)",
    ]
