"""Plain-text tables of the CLI: `status` and `watch`, laid out as the reference does.

Every line has a 2-space indent; cells are left-justified to the column width and joined
with ` | `; the divider joins dashes with `-+-`. Cells keep their trailing padding.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

from .sizes import format_size

# The reference's columns, with MEMORY added late so scripts reading the others by
# position (and MODEL, the last) keep working.
STATUS_HEADERS = (
    "NAME", "STATE", "LOADED", "AUTO-UNLOAD", "TYPE", "GROUP", "DEFAULT", "MEMORY", "MODEL",
)  # fmt: skip
WATCH_HEADERS = ("NAME", "STATE", "PID", "GROUP", "UPTIME", "MEMORY", "EXIT", "LOG")
INDENT = "  "


def render_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Lines of a table: header, divider, one line per row."""
    rows = [list(map(str, row)) for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return INDENT + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))

    divider = INDENT + "-+-".join("-" * w for w in widths)
    return [line(headers), divider, *(line(r) for r in rows)]


def metadata_of(entry: dict[str, Any] | None) -> dict[str, Any]:
    """`metadata` of a /hub/status model entry (empty for none)."""
    if not entry:
        return {}
    meta = entry.get("metadata")
    return meta if isinstance(meta, dict) else {}


def format_minutes(value: Any) -> str:
    """`5min`, `0.5min`, or `-` when auto-unload is off."""
    if value is None or value is False:
        return "-"
    try:
        return f"{float(value):g}min"
    except (TypeError, ValueError):
        return str(value)


def state_cell(meta: dict[str, Any]) -> str:
    """STATE: the process state; `running (pid=…, port=…)` for a live worker."""
    state = str(meta.get("process_state") or "inactive")
    pid = meta.get("pid")
    if state == "running" and pid is not None:
        return f"running (pid={pid}, port={meta.get('port')})"
    return state


def memory_cell(meta: dict[str, Any]) -> str:
    """MEMORY: the worker's measured footprint (`4.2 GB`), `-` when there is none, and
    the requests waiting for the model when any (`4.2 GB, 3 queued`)."""
    size = meta.get("memory_bytes")
    parts = [format_size(size)] if isinstance(size, int | float) and size > 0 else []
    queued = meta.get("queued_requests")
    if isinstance(queued, int) and queued > 0:
        parts.append(f"{queued} queued")
    return ", ".join(parts) or "-"


def memory_summary(snapshot: dict[str, Any] | None) -> str | None:
    """`Memory: used 12.0 GB / budget 24.0 GB` (or `... (no budget)`) from /hub/status;
    None when the snapshot says nothing about memory (no hub, or an older one)."""
    memory = (snapshot or {}).get("memory")
    if not isinstance(memory, dict) or not isinstance(memory.get("used_bytes"), int | float):
        return None
    line = f"Memory: used {format_size(memory['used_bytes'])}"
    budget = memory.get("budget_bytes")
    return line + (f" / budget {format_size(budget)}" if budget is not None else " (no budget)")


def status_row(name: str, meta: dict[str, Any], fallback: Any = None) -> list[str]:
    """One status-table row from live metadata, using config values for missing keys.

    `fallback` is the model's config entry (attributes `model_type`, `group`, `default`,
    `auto_unload_minutes`, `model_path`) or None.
    """

    def pick(key: str, attr: str | None = None) -> Any:
        if key in meta:
            return meta[key]
        return getattr(fallback, attr or key, None) if fallback is not None else None

    group = pick("group")
    return [
        name,
        state_cell(meta),
        "yes" if meta.get("memory_state") == "loaded" else "no",
        format_minutes(pick("auto_unload_minutes")),
        str(pick("model_type") or "-"),
        str(group) if group else "-",
        "✓" if pick("default") else "-",
        memory_cell(meta),
        str(pick("model_path") or "-"),
    ]


def status_rows(
    config_models: Sequence[Any], live_models: Sequence[dict[str, Any]] | None
) -> list[tuple[str, list[str]]]:
    """(name, row) pairs: configured models in file order, then models only the hub knows.

    A model only the hub knows was removed from hub.yaml but not yet reloaded away.
    """
    live = {str(e.get("id")): e for e in live_models or () if isinstance(e, dict)}
    rows = [(m.name, status_row(m.name, metadata_of(live.get(m.name)), m)) for m in config_models]
    configured = {m.name for m in config_models}
    rows += [
        (name, status_row(name, metadata_of(entry)))
        for name, entry in live.items()
        if name not in configured
    ]
    return rows


def format_uptime(seconds: float | None) -> str:
    """`<h>h<mm>m`, `<m>m<ss>s` or `<s>s`; `-` for missing or negative."""
    if seconds is None or seconds < 0:
        return "-"
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


# States in which a worker process exists, so "uptime" means something.
_ALIVE_STATES = frozenset({"starting", "running", "stopping"})


def watch_row(entry: dict[str, Any], now: float) -> list[str]:
    """One watch-table row from a /hub/status model entry."""
    meta = metadata_of(entry)
    state = str(meta.get("process_state") or "unknown")
    started_at = meta.get("started_at")
    uptime = None
    if state in _ALIVE_STATES and isinstance(started_at, int | float):
        uptime = now - started_at
    exit_code = meta.get("exit_code")
    log_path = meta.get("log_path")
    return [
        str(entry.get("id") or "?"),
        state.upper(),
        str(meta.get("pid") or "-"),
        str(meta.get("group") or "-"),
        format_uptime(uptime),
        memory_cell(meta),
        "-" if exit_code in (None, 0) else str(exit_code),
        os.path.basename(str(log_path)) if log_path else "-",
    ]


def watch_counts(models: Sequence[dict[str, Any]]) -> dict[str, int]:
    """models / running / stopped / failed, as the reference's watch summary counts them."""
    metas = [metadata_of(e) for e in models]
    return {
        "models": len(metas),
        "running": sum(m.get("process_state") == "running" for m in metas),
        "stopped": sum(m.get("process_state") == "stopped" for m in metas),
        "failed": sum(
            m.get("process_state") == "failed" or m.get("exit_code") not in (None, 0) for m in metas
        ),
    }


def watch_frame(snapshot: dict[str, Any], now: float | None = None) -> list[str]:
    """The summary line, the memory line (when the hub reports memory) and the table for
    one /hub/status snapshot."""
    now = time.time() if now is None else now
    models = [e for e in snapshot.get("models") or () if isinstance(e, dict)]
    stamp = snapshot.get("timestamp")
    when = time.localtime(stamp if isinstance(stamp, int | float) else now)
    counts = watch_counts(models)
    summary = (
        f"[{time.strftime('%Y-%m-%d %H:%M:%S', when)}] models={counts['models']} "
        f"running={counts['running']} stopped={counts['stopped']} failed={counts['failed']}"
    )
    memory = memory_summary(snapshot)
    head = [summary] if memory is None else [summary, memory]
    if not models:
        return [*head, INDENT + "(no managed processes)"]
    rows = [watch_row(e, now) for e in sorted(models, key=lambda e: str(e.get("id")))]
    return [*head, *render_table(WATCH_HEADERS, rows)]
