"""Many streams at once: latency ratio, hub CPU per request, hub peak RSS, errors."""

from __future__ import annotations

import asyncio

from .core import Bench
from .loadgen import chat_body, log, ms, no_gc, pct, timed_stream


async def _crowd(
    bench: Bench, url: str, body: bytes, clients: int, rounds: int
) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0

    async def client() -> None:
        nonlocal errors
        for _ in range(rounds):
            try:
                latencies.append((await timed_stream(bench.client, url, body)).total_s)
            except Exception as exc:
                errors += 1
                if errors <= 3:
                    log(f"  error: {exc!r}")

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, errors


async def concurrency(
    bench: Bench, key: str, clients: int, rounds: int, chunks: int, delay: float
) -> None:
    """`clients` streams at once, `rounds` times per side, direct and hub alternating."""
    direct_url, hub_url = await bench.urls("fast")
    extra = {"fake_chunks": chunks, "fake_chunk_delay": delay}
    direct_body = chat_body("/models/fast", stream=True, **extra)
    hub_body = chat_body("fast", stream=True, **extra)
    log(f"{clients} concurrent streams of {chunks} chunks every {delay * 1000:g} ms, x{rounds}")
    # Open the connection pools first so both sides start warm.
    await _crowd(bench, direct_url, direct_body, clients, 1)
    await _crowd(bench, hub_url, hub_body, clients, 1)
    d: list[float] = []
    h: list[float] = []
    errors = {"direct": 0, "hub": 0}
    cpu = peak = 0.0
    with no_gc():
        for index in range(rounds):
            sides = [("direct", direct_url, direct_body, d), ("hub", hub_url, hub_body, h)]
            for side, url, body, bucket in sides if index % 2 == 0 else sides[::-1]:
                if side == "hub":
                    bench.watch.begin()
                latencies, failed = await _crowd(bench, url, body, clients, 1)
                if side == "hub":
                    used, top = await bench.watch.end()
                    cpu, peak = cpu + used, max(peak, top)
                bucket += latencies
                errors[side] += failed
    if d and h:
        bench.put(f"{key}.direct_p50_ms", ms(pct(d, 50)))
        bench.put(f"{key}.hub_p50_ms", ms(pct(h, 50)))
        bench.put(f"{key}.direct_p99_ms", ms(pct(d, 99)))
        bench.put(f"{key}.hub_p99_ms", ms(pct(h, 99)))
        bench.put(f"{key}.ratio_p50", pct(h, 50) / pct(d, 50))
        bench.put(f"{key}.ratio_p99", pct(h, 99) / pct(d, 99))
    bench.put(f"{key}.hub_cpu_s", cpu)
    bench.put(f"{key}.hub_cpu_ms_per_req", ms(cpu / max(1, clients * rounds)))
    bench.put(f"{key}.hub_peak_rss_mb", peak)
    bench.put(f"{key}.errors", errors["hub"])
    bench.put(f"{key}.direct_errors", errors["direct"])
