"""A CI-sized run of benchmarks/bench.py that fails only on a gross regression.

The real targets (added p50 ≤ 1 ms, ...) are checked by the full benchmark, not here:
on a shared 2-core CI machine, timing tests at that precision would be flaky. These
limits are about ten times the targets, so only a real slowdown (a blocking call on the
loop, per-chunk parsing, a lost connection pool) trips them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks" / "bench.py"

pytestmark = pytest.mark.bench

# metric: (limit, True when the value must stay at or below it)
GROSS_LIMITS: dict[str, tuple[float, bool]] = {
    "small.added_p50_ms": (10.0, True),
    "small.added_p99_ms": (50.0, True),
    "stream.ttfb_added_p50_ms": (10.0, True),
    "stream.throughput_ratio": (0.5, False),
    "conc64.errors": (0, True),
    "conc256.errors": (0, True),
    "conc256.hub_peak_rss_mb": (300.0, True),
    "traffic.queue64.errors": (0, True),
    # FIFO measures 0 here; a few allow for a loaded CI machine, a LIFO queue gives ~60.
    "traffic.queue64.fifo_worst_reordering": (5, True),
    # Three models that fit two at a time: no error, and never more than the budget holds.
    "memory.errors": (0, True),
    "memory.peak_over_allowed_mb": (0.0, True),
    "idle.hub_rss_mb": (200.0, True),
    "jit.cold_overhead_ms": (2000.0, True),
    "jit.warm_overhead_ms": (2000.0, True),
    "cli.status_ms": (3000.0, True),
}


def test_quick_benchmark_has_no_gross_regression(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--no-baseline", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    print(done.stdout)  # the table, for the CI log
    assert done.returncode == 0, f"bench.py failed ({done.returncode}):\n{done.stderr[-3000:]}"
    results = json.loads(out.read_text())["results"]
    failures = []
    for key, (limit, at_most) in GROSS_LIMITS.items():
        assert key in results, f"{key} missing from the benchmark's results"
        value = results[key]
        if (value > limit) if at_most else (value < limit):
            failures.append(f"{key} = {value} ({'>' if at_most else '<'} {limit})")
    assert not failures, "gross regressions:\n" + "\n".join(failures)
