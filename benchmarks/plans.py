"""How much of each phase a run does: `FULL` (the default) or `QUICK` (``--quick``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    """How much of each phase to run."""

    latency_pairs: int
    latency_warmup: int
    ttfb_pairs: int
    spaced_pairs: int
    stream_chunks: int
    stream_reps: int
    # Concurrent streams at a token-like pace (20 ms a chunk: 50 tokens/s per stream).
    conc_chunks: int
    conc_rounds: dict[int, int]
    # 64 streams as fast as the worker goes (rounds; 0: skip): the 2-core worst case.
    saturated_rounds: int
    jit_warm_rounds: int
    status_runs: int
    real_pairs: int
    real_jit_rounds: int
    # Traffic: rounds of 64 clients on a queued model, direct/hub pairs, in-process calls.
    traffic_rounds: int
    traffic_pairs: int
    traffic_calls: int
    # Memory: requests over three models that fit two at a time, clients, requests per pair.
    memory_requests: int
    memory_clients: int
    memory_phase: int
    # Downloads: rounds of hub pull vs snapshot_download, MB per shard (4 shards a repo).
    download_rounds: int
    download_shard_mb: int


FULL = Plan(
    latency_pairs=2000,
    latency_warmup=200,
    ttfb_pairs=500,
    spaced_pairs=150,
    stream_chunks=20_000,
    stream_reps=7,
    conc_chunks=32,
    conc_rounds={64: 4, 256: 2},
    saturated_rounds=4,
    jit_warm_rounds=3,
    status_runs=7,
    real_pairs=150,
    real_jit_rounds=3,
    traffic_rounds=3,
    traffic_pairs=1000,
    traffic_calls=20_000,
    memory_requests=3000,
    memory_clients=8,
    memory_phase=150,
    download_rounds=3,
    download_shard_mb=32,
)
QUICK = Plan(
    latency_pairs=300,
    latency_warmup=50,
    ttfb_pairs=100,
    spaced_pairs=40,
    stream_chunks=20_000,
    stream_reps=3,
    conc_chunks=8,
    conc_rounds={64: 2, 256: 2},
    saturated_rounds=0,
    jit_warm_rounds=1,
    status_runs=3,
    real_pairs=40,
    real_jit_rounds=-1,  # no real-worker JIT timing (about 10 s per load)
    traffic_rounds=1,
    traffic_pairs=200,
    traffic_calls=5000,
    memory_requests=600,
    memory_clients=4,
    memory_phase=100,
    download_rounds=1,
    download_shard_mb=2,
)
