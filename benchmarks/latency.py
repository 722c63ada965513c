"""Added latency of small requests (back to back and spaced) and of streams."""

from __future__ import annotations

import asyncio
import statistics

from .core import Bench
from .loadgen import chat_body, interleaved, log, ms, no_gc, pct, timed_request, timed_stream


async def small(bench: Bench) -> None:
    """Small non-streaming requests back to back: added latency, p50 and p99."""
    plan = bench.plan
    direct_url, hub_url = await bench.urls("fast")
    direct_body = chat_body("/models/fast")
    hub_body = chat_body("fast")
    log(f"small requests: {plan.latency_pairs} interleaved pairs")
    for _ in range(plan.latency_warmup):
        await timed_request(bench.client, direct_url, direct_body)
        await timed_request(bench.client, hub_url, hub_body)
    with no_gc(), bench.loadgen_cpu("small"):
        d, h = await interleaved(
            plan.latency_pairs,
            lambda: timed_request(bench.client, direct_url, direct_body),
            lambda: timed_request(bench.client, hub_url, hub_body),
        )
    for side, values in (("direct", d), ("hub", h)):
        bench.put(f"small.{side}_p50_ms", ms(pct(values, 50)))
        bench.put(f"small.{side}_p99_ms", ms(pct(values, 99)))
    bench.put("small.added_p50_ms", ms(pct(h, 50) - pct(d, 50)))
    bench.put("small.added_p99_ms", ms(pct(h, 99) - pct(d, 99)))
    diffs = [b - a for a, b in zip(d, h, strict=True)]
    bench.put("small.paired_added_median_ms", ms(statistics.median(diffs)))


async def spaced(bench: Bench) -> None:
    """Small requests 20 ms apart: each one meets a CPU that has gone idle.

    Back to back, caches stay warm; a client that pauses between requests (most
    of them) pays for waking the machine up on both sides. The hub's share of that
    is what this measures.
    """
    direct_url, hub_url = await bench.urls("fast")
    direct_body = chat_body("/models/fast")
    hub_body = chat_body("fast")
    pairs = bench.plan.spaced_pairs
    log(f"spaced small requests: {pairs} interleaved pairs, 20 ms apart")

    async def after_pause(url: str, body: bytes) -> float:
        await asyncio.sleep(0.02)
        return await timed_request(bench.client, url, body)

    with no_gc():
        d, h = await interleaved(
            pairs,
            lambda: after_pause(direct_url, direct_body),
            lambda: after_pause(hub_url, hub_body),
        )
    bench.put("spaced.direct_p50_ms", ms(pct(d, 50)))
    bench.put("spaced.hub_p50_ms", ms(pct(h, 50)))
    bench.put("spaced.added_p50_ms", ms(pct(h, 50) - pct(d, 50)))
    bench.put("spaced.added_p99_ms", ms(pct(h, 99) - pct(d, 99)))


async def ttfb(bench: Bench) -> None:
    """Short streams: time to the first body byte (and to the headers), added."""
    direct_url, hub_url = await bench.urls("fast")
    direct_body = chat_body("/models/fast", stream=True, fake_chunks=5)
    hub_body = chat_body("fast", stream=True, fake_chunks=5)
    log(f"time to first byte: {bench.plan.ttfb_pairs} interleaved pairs")
    heads: dict[str, list[float]] = {"direct": [], "hub": []}

    async def first(url: str, body: bytes, side: str) -> float:
        answer = await timed_stream(bench.client, url, body)
        heads[side].append(answer.headers_s)
        return answer.first_data_s

    for _ in range(20):
        await first(direct_url, direct_body, "direct")
        await first(hub_url, hub_body, "hub")
    heads = {"direct": [], "hub": []}
    with no_gc():
        d, h = await interleaved(
            bench.plan.ttfb_pairs,
            lambda: first(direct_url, direct_body, "direct"),
            lambda: first(hub_url, hub_body, "hub"),
        )
    bench.put("stream.ttfb_direct_p50_ms", ms(pct(d, 50)))
    bench.put("stream.ttfb_hub_p50_ms", ms(pct(h, 50)))
    bench.put("stream.ttfb_added_p50_ms", ms(pct(h, 50) - pct(d, 50)))
    bench.put("stream.ttfb_added_p99_ms", ms(pct(h, 99) - pct(d, 99)))
    added_headers = pct(heads["hub"], 50) - pct(heads["direct"], 50)
    bench.put("stream.headers_added_p50_ms", ms(added_headers))


async def throughput(bench: Bench) -> None:
    """One long stream at a time: chunks per second, hub against direct."""
    chunks = bench.plan.stream_chunks
    direct_url, hub_url = await bench.urls("fast")
    direct_body = chat_body("/models/fast", stream=True, fake_chunks=chunks)
    hub_body = chat_body("fast", stream=True, fake_chunks=chunks)
    log(f"stream throughput: {chunks} chunks x {bench.plan.stream_reps} rep(s) each side")
    warm = chat_body("/models/fast", stream=True, fake_chunks=500)
    await timed_stream(bench.client, direct_url, warm)
    d: list[float] = []
    h: list[float] = []
    size = 0
    with no_gc(), bench.loadgen_cpu("stream"):
        for rep in range(bench.plan.stream_reps):
            order = [(d, direct_url, direct_body), (h, hub_url, hub_body)]
            for bucket, url, body in order if rep % 2 == 0 else order[::-1]:
                answer = await timed_stream(bench.client, url, body)
                bucket.append(answer.total_s)
                size = answer.size
    direct_rate = chunks / statistics.median(d)
    hub_rate = chunks / statistics.median(h)
    bench.put("stream.direct_chunks_per_s", direct_rate)
    bench.put("stream.hub_chunks_per_s", hub_rate)
    bench.put("stream.payload_bytes", size)
    bench.put("stream.throughput_ratio", hub_rate / direct_rate)
