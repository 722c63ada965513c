"""The reported figures: their targets, the baseline comparison, the table, the JSON."""

from __future__ import annotations

import argparse
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil

DEFAULT_BASELINE = Path(__file__).resolve().parent / "baseline.json"


@dataclass(frozen=True)
class Metric:
    """One reported number: how to judge it against its target and its baseline."""

    key: str
    label: str
    unit: str
    lower_is_better: bool = True
    target: float | None = None
    # A change against the baseline counts as a regression beyond both tolerances.
    rel_tol: float = 0.5
    abs_tol: float = 0.0


M = Metric
METRICS: list[Metric] = [
    # key, label, unit, lower is better, target, baseline tolerance (relative, absolute)
    M("small.added_p50_ms", "small request: added p50", "ms", True, 1.0, 0.5, 0.3),
    M("small.added_p99_ms", "small request: added p99", "ms", True, 5.0, 0.5, 1.0),
    M("small.direct_p50_ms", "small request: direct p50", "ms", True, None, 0.5, 0.3),
    M("small.hub_p50_ms", "small request: hub p50", "ms", True, None, 0.5, 0.3),
    M("small.hub_p99_ms", "small request: hub p99", "ms", True, None, 0.5, 1.0),
    M("spaced.added_p50_ms", "requests 20 ms apart: added p50", "ms", True, None, 0.5, 0.5),
    M("spaced.added_p99_ms", "requests 20 ms apart: added p99", "ms", True, None, 0.5, 2.0),
    M("real.ratio_p50", "real worker: hub/direct p50", "x", True, None, 0.1, 0.05),
    M("real.ratio_p99", "real worker: hub/direct p99", "x", True, None, 0.2, 0.1),
    M("real.added_p50_ms", "real worker: added p50", "ms", True, None, 0.5, 1.0),
    M("real.stream_ttfb_added_ms", "real worker: first byte added p50", "ms", True, 1.0, 0.5, 0.5),
    M("stream.ttfb_added_p50_ms", "stream: first byte added p50", "ms", True, 1.0, 0.5, 0.3),
    M("stream.ttfb_added_p99_ms", "stream: first byte added p99", "ms", True, None, 0.5, 1.0),
    M("stream.throughput_ratio", "20k-chunk stream: hub/direct", "x", False, 0.90, 0.1, 0.05),
    M("stream.direct_chunks_per_s", "20k-chunk stream: direct", "chunk/s", False, None, 0.3),
    M("stream.hub_chunks_per_s", "20k-chunk stream: hub", "chunk/s", False, None, 0.3),
    M("conc64.ratio_p50", "64 streams @50/s: hub/direct p50", "x", True, None, 0.2, 0.1),
    M("conc64.ratio_p99", "64 streams @50/s: hub/direct p99", "x", True, None, 0.3, 0.15),
    M("conc64.hub_cpu_ms_per_req", "64 streams: hub CPU/request", "ms", True, None, 0.3, 0.2),
    M("conc64.hub_peak_rss_mb", "64 streams: hub peak RSS", "MB", True, 150.0, 0.15, 5),
    M("conc64.errors", "64 streams: errors", "", True, 0.0, 0.0, 0.0),
    M("conc256.ratio_p50", "256 streams @50/s: hub/direct p50", "x", True, None, 0.2, 0.1),
    M("conc256.ratio_p99", "256 streams @50/s: hub/direct p99", "x", True, None, 0.3, 0.15),
    M("conc256.hub_cpu_ms_per_req", "256 streams: hub CPU/request", "ms", True, None, 0.3, 0.2),
    M("conc256.hub_peak_rss_mb", "256 streams: hub peak RSS", "MB", True, 150.0, 0.15, 5),
    M("conc256.errors", "256 streams: errors", "", True, 0.0, 0.0, 0.0),
    M("saturated64.ratio_p50", "64 unpaced streams: hub/direct p50", "x", True, None, 0.3),
    M("saturated64.hub_cpu_ms_per_req", "64 unpaced streams: CPU/request", "ms", True, None, 0.3),
    M("traffic.queue64.errors", "64 clients, max_concurrency 2: errors", "", True, 0.0, 0.0, 0.0),
    M("traffic.queue64.fifo_worst_reordering", "queue: worst FIFO reordering", "req", True, 0.0),
    M("traffic.queue64.queue_wait_p50_ms", "queue: wait p50 (access log)", "ms", True, None, 0.3),
    M("traffic.queue64.queue_wait_p99_ms", "queue: wait p99 (access log)", "ms", True, None, 0.3),
    M("traffic.queue64.wall_s", "queue: 64 requests' wall time", "s", True, None, 0.2),
    M("traffic.queue64.hub_cpu_ms_per_req", "queue: hub CPU/request", "ms", True, None, 0.3, 0.2),
    M("traffic.plain.ratio_p50", "small request: hub/direct p50", "x", True, None, 0.2, 0.1),
    M("traffic.plain.ratio_p99", "small request: hub/direct p99", "x", True, None, 0.3, 0.2),
    M("traffic.queued.ratio_p50", "via the queue: hub/direct p50", "x", True, None, 0.2, 0.1),
    M("traffic.queued.ratio_p99", "via the queue: hub/direct p99", "x", True, None, 0.3, 0.2),
    M("traffic.plain.added_p50_us", "small request: added p50", "µs", True, None, 0.5, 300),
    M("traffic.queued.added_p50_us", "via the queue: added p50", "µs", True, None, 0.5, 300),
    M("traffic.plain.hub_cpu_ms_per_req", "small request: hub CPU/request", "ms", True, None, 0.3),
    M("traffic.queued.hub_cpu_ms_per_req", "via the queue: hub CPU/request", "ms", True, None, 0.3),
    M("traffic.observe.loop_us_per_req", "access log + metrics: loop", "µs", True, None, 0.5, 20),
    M("traffic.observe.id_loop_us_per_req", "  of which request id", "µs", True, None, 0.5, 10),
    M("traffic.observe.log_loop_us_per_req", "  of which access log", "µs", True, None, 0.5, 10),
    M("traffic.observe.metrics_loop_us_per_req", "  of which metrics", "µs", True, None, 0.5, 10),
    M("traffic.observe.cpu_us_per_req", "access log + metrics: CPU", "µs", True, None, 0.5, 20),
    M("traffic.observe.share_of_added", "access log + metrics / added", "x", True, None, 0.5, 0.1),
    M("memory.errors", "3 models, 2 fit: errors", "", True, 0.0, 0.0, 0.0),
    M("memory.peak_sum_mb", "memory: peak of summed footprints", "MB", True, None, 0.2, 20),
    M("memory.budget_mb", "memory: budget", "MB", True, None, 0.0, 0.0),
    M("memory.allowance_mb", "memory: sampling allowance", "MB", True, None, 1.0, 20),
    M("memory.peak_over_allowed_mb", "memory: peak - (budget + allow.)", "MB", True, 0.0, 0.0, 20),
    M("memory.hub_peak_used_mb", "memory: peak used (hub's view)", "MB", True, None, 0.2, 20),
    M("memory.evictions", "memory: evictions", "", True, None, 0.5, 2),
    M("memory.latency_p50_ms", "memory: request p50", "ms", True, None, 0.5, 1.0),
    M("memory.latency_p99_ms", "memory: request p99", "ms", True, None, 0.5, 200),
    M("memory.wall_s", "memory: wall time", "s", True, None, 0.3, 5),
    M("downloads.hub_mb_s", "download: through the hub", "MB/s", False, None, 0.5, 20),
    M("downloads.direct_mb_s", "download: snapshot_download", "MB/s", False, None, 0.5, 20),
    M("downloads.hub_direct_ratio", "download: hub/direct", "x", False, None, 0.3, 0.2),
    M("downloads.idle.added_p50_ms", "no download: added p50", "ms", True, None, 0.5, 0.3),
    M("downloads.idle.added_p99_ms", "no download: added p99", "ms", True, None, 0.5, 2),
    M("downloads.during.added_p50_ms", "downloading: added p50", "ms", True, None, 0.5, 0.3),
    M("downloads.during.added_p99_ms", "downloading: added p99", "ms", True, None, 0.5, 10),
    M("downloads.paced.added_p50_ms", "50 MB/s download: added p50", "ms", True, None, 0.5, 0.3),
    M("downloads.paced.added_p99_ms", "50 MB/s download: added p99", "ms", True, None, 0.5, 2),
    M("jit.cold_overhead_ms", "JIT first load: overhead", "ms", True, 300.0, 0.5, 100),
    M("jit.warm_overhead_ms", "JIT reload: overhead", "ms", True, 300.0, 0.5, 100),
    M("jit.at_hub_start_overhead_ms", "JIT at hub start: overhead", "ms", True, 300, 0.5, 100),
    M("jit.at_hub_restart_overhead_ms", "JIT at hub restart: overhead", "ms", True, 300, 0.5, 100),
    M("jit.worker_ready_ms", "JIT: worker's own spawn→ready", "ms", True, None, 0.5, 100),
    M("real.jit_cold_overhead_ms", "real JIT first load: overhead", "ms", True, 300, 0.5, 1e3),
    M("real.jit_warm_overhead_ms", "real JIT reload: overhead", "ms", True, 300, 0.5, 1e3),
    M("real.jit_at_hub_start_overhead_ms", "real JIT at hub start", "ms", True, 300, 0.5, 1e3),
    M("real.jit_at_hub_restart_overhead_ms", "real JIT at restart", "ms", True, 300, 0.5, 1e3),
    M("real.jit_worker_ready_ms", "real JIT: worker spawn→ready", "ms", True, None, 0.5, 1e3),
    M("idle.hub_rss_mb", "hub idle RSS", "MB", True, 80.0, 0.15, 5),
    M("idle.hub_rss_after_load_mb", "hub RSS after the load phases", "MB", True, None, 0.2, 5),
    M("cli.status_ms", "CLI `status` wall time (median)", "ms", True, 300.0, 0.3, 30),
]


def compare(
    results: dict[str, float], baseline: dict[str, float] | None, widen: float = 1.0
) -> tuple[list[list[str]], list[str], list[str]]:
    """Table rows, missed targets, regressions against the baseline (tolerances × widen)."""
    rows: list[list[str]] = []
    missed: list[str] = []
    regressed: list[str] = []
    for metric in METRICS:
        if metric.key not in results:
            continue
        value = results[metric.key]
        target = ""
        verdict = ""
        if metric.target is not None:
            sign = "≤" if metric.lower_is_better else "≥"
            target = f"{sign} {metric.target:g}"
            ok = value <= metric.target if metric.lower_is_better else value >= metric.target
            verdict = "ok" if ok else "MISS"
            if not ok:
                missed.append(metric.key)
        base_text = ""
        if baseline is not None and metric.key in baseline:
            base = baseline[metric.key]
            if metric.lower_is_better:
                # Added times can come out below zero by noise; never demand that again.
                base = max(base, 0.0)
            slack = max(abs(base) * metric.rel_tol, metric.abs_tol) * widen
            worse = value > base + slack if metric.lower_is_better else value < base - slack
            base_text = f"{base:g}" + (" REGRESSED" if worse else "")
            if worse:
                regressed.append(metric.key)
        rows.append([metric.label, f"{value:g} {metric.unit}".strip(), target, verdict, base_text])
    return rows, missed, regressed


def render(rows: list[list[str]]) -> str:
    """The rows of `compare` as an aligned text table with a header."""
    header = ["metric", "result", "target", "", "baseline"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """What the figures were measured on (for the JSON and the baseline)."""
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "aiohttp": aiohttp.__version__,
        "loop": loop,
    }


def load_baseline(path: Path, mode: str) -> dict[str, float] | None:
    """The stored results of `mode` (`full` or `quick`) in `path`, if any."""
    if not path.is_file():
        return None
    loaded = json.loads(path.read_text())
    # A quick run is only compared with a quick baseline (fewer samples, other sizes).
    return loaded.get(mode, {}).get("results") if mode in loaded else None


def summarize(report: dict[str, Any], args: argparse.Namespace) -> int:
    """Judge and print a run, write its JSON, maybe store it; the exit code."""
    meta = report["meta"]
    mode = meta["mode"]
    base_path = Path(args.baseline)
    baseline = None if args.no_baseline else load_baseline(base_path, mode)
    # A quick run takes fewer samples: allow it twice the noise.
    rows, missed, regressed = compare(report["results"], baseline, 2.0 if args.quick else 1.0)
    report["missed_targets"] = missed
    report["regressions"] = regressed
    print(
        f"\nmlx-openai-server-hub benchmark ({mode}, {meta['cpus']} CPUs, "
        f"hub on {meta['hub_loop']}, {meta['seconds']} s)"
    )
    print(render(rows))
    if baseline is None:
        print(f"(no {mode} baseline in {base_path})")
    print(f"\nmissed targets: {', '.join(missed) or 'none'}")
    print(f"regressions vs baseline: {', '.join(regressed) or 'none'}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    if args.save_baseline:
        stored = json.loads(base_path.read_text()) if base_path.is_file() else {}
        stored[mode] = {"meta": meta, "results": report["results"]}
        base_path.write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n")
        print(f"saved as the {mode} baseline in {base_path}")
    return 1 if args.strict and (missed or regressed) else 0
