"""The real worker through the hub and direct: latency ratio and first byte added."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .core import Bench
from .loadgen import chat_body, interleaved, log, ms, no_gc, pct, timed_request, timed_stream


async def real(bench: Bench, model_path: str) -> None:
    """The real worker: hub/direct latency of small answers, first byte added to streams."""
    direct_url, hub_url = await bench.urls("real")
    from tests.e2e.worker_support import worker_secret_headers

    # The worker answers only the hub: the direct side sends the hub's secret too.
    port = urlsplit(direct_url).port or 0
    bench.client.headers_for[port] = "".join(
        f"{k}: {v}\r\n" for k, v in worker_secret_headers(port).items()
    )
    extra: dict[str, Any] = {"max_tokens": 8, "temperature": 0.0}
    direct_body = chat_body(model_path, **extra)
    hub_body = chat_body("real", **extra)
    log(f"real worker: {bench.plan.real_pairs} interleaved pairs")
    for _ in range(5):
        await timed_request(bench.client, direct_url, direct_body)
        await timed_request(bench.client, hub_url, hub_body)
    with no_gc():
        d, h = await interleaved(
            bench.plan.real_pairs,
            lambda: timed_request(bench.client, direct_url, direct_body),
            lambda: timed_request(bench.client, hub_url, hub_body),
        )
    bench.put("real.direct_p50_ms", ms(pct(d, 50)))
    bench.put("real.hub_p50_ms", ms(pct(h, 50)))
    bench.put("real.direct_p99_ms", ms(pct(d, 99)))
    bench.put("real.hub_p99_ms", ms(pct(h, 99)))
    bench.put("real.ratio_p50", pct(h, 50) / pct(d, 50))
    bench.put("real.ratio_p99", pct(h, 99) / pct(d, 99))
    bench.put("real.added_p50_ms", ms(pct(h, 50) - pct(d, 50)))
    direct_stream = chat_body(model_path, stream=True, **extra)
    hub_stream = chat_body("real", stream=True, **extra)

    async def first(url: str, body: bytes) -> float:
        return (await timed_stream(bench.client, url, body)).first_data_s

    with no_gc():
        d, h = await interleaved(
            max(10, bench.plan.real_pairs // 2),
            lambda: first(direct_url, direct_stream),
            lambda: first(hub_url, hub_stream),
        )
    bench.put("real.stream_ttfb_direct_ms", ms(pct(d, 50)))
    bench.put("real.stream_ttfb_hub_ms", ms(pct(h, 50)))
    bench.put("real.stream_ttfb_added_ms", ms(pct(h, 50) - pct(d, 50)))
