"""The hub's Prometheus metrics: own registry per hub, events, levels, process metrics."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from mlx_openai_server_hub.metrics import HubMetrics, ModelSample, status_class


def _samples(metrics: HubMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by name and sorted labels (parsed, not grepped)."""
    text = metrics.exposition().decode("utf-8")
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_requests_are_counted_by_model_endpoint_and_status_class():
    metrics = HubMetrics()
    chat = metrics.model("qwen")
    for status in (200, 200, 201, 429, 503):
        chat.observe_request("/v1/chat/completions", status, 0.2, ttfb=0.05, queue_wait=0.0)
    metrics.model(None).observe_request("/hub/status", 200, 0.001)
    got = _samples(metrics)
    ep = "/v1/chat/completions"
    assert _value(got, "mlx_hub_requests_total", model="qwen", endpoint=ep, status="2xx") == 3
    assert _value(got, "mlx_hub_requests_total", model="qwen", endpoint=ep, status="4xx") == 1
    assert _value(got, "mlx_hub_requests_total", model="qwen", endpoint=ep, status="5xx") == 1
    assert _value(got, "mlx_hub_requests_total", model="", endpoint="/hub/status", status="2xx")
    assert _value(got, "mlx_hub_request_duration_seconds_count", model="qwen", endpoint=ep) == 5
    assert (
        _value(got, "mlx_hub_request_duration_seconds_bucket", model="qwen", endpoint=ep, le="0.1")
        == 0
    )
    assert (
        _value(got, "mlx_hub_request_duration_seconds_bucket", model="qwen", endpoint=ep, le="0.25")
        == 5
    )
    assert _value(got, "mlx_hub_time_to_first_byte_seconds_count", model="qwen", endpoint=ep) == 5
    assert _value(got, "mlx_hub_queue_wait_seconds_count", model="qwen") == 5
    # No TTFB for a request that never reached a worker.
    assert (
        "mlx_hub_time_to_first_byte_seconds_count",
        (("endpoint", "/hub/status"), ("model", "")),
    ) in got
    assert (
        _value(got, "mlx_hub_time_to_first_byte_seconds_count", model="", endpoint="/hub/status")
        == 0
    )


def test_tokens_and_lifecycle_events():
    metrics = HubMetrics()
    model = metrics.model("qwen")
    model.add_tokens(12, 30)
    model.add_tokens(3, None)  # an embeddings request reports prompt tokens only
    model.load_succeeded(2.5)
    model.load_succeeded(40.0)
    model.load_failed()
    model.unloaded()
    model.evicted()
    model.crashed()
    got = _samples(metrics)
    assert _value(got, "mlx_hub_prompt_tokens_total", model="qwen") == 15
    assert _value(got, "mlx_hub_completion_tokens_total", model="qwen") == 30
    assert _value(got, "mlx_hub_model_loads_total", model="qwen") == 2
    assert _value(got, "mlx_hub_model_failed_loads_total", model="qwen") == 1
    assert _value(got, "mlx_hub_model_unloads_total", model="qwen") == 1
    assert _value(got, "mlx_hub_model_evictions_total", model="qwen") == 1
    assert _value(got, "mlx_hub_model_crashes_total", model="qwen") == 1
    assert _value(got, "mlx_hub_model_load_duration_seconds_count", model="qwen") == 2
    assert _value(got, "mlx_hub_model_load_duration_seconds_bucket", model="qwen", le="5.0") == 1
    assert _value(got, "mlx_hub_model_load_duration_seconds_sum", model="qwen") == 42.5


def test_levels_are_read_at_scrape_time():
    current = [ModelSample("a", "running", "loaded", 2, 5, 123456)]
    metrics = HubMetrics(live=lambda: current)
    got = _samples(metrics)
    assert _value(got, "mlx_hub_requests_in_flight", model="a") == 2
    assert _value(got, "mlx_hub_requests_queued", model="a") == 5
    assert _value(got, "mlx_hub_model_process_state", model="a", state="running") == 1
    assert _value(got, "mlx_hub_model_process_state", model="a", state="stopped") == 0
    assert _value(got, "mlx_hub_model_memory_state", model="a", state="loaded") == 1
    assert _value(got, "mlx_hub_model_memory_bytes", model="a") == 123456
    current[:] = [ModelSample("a", "running", "unloaded")]
    got = _samples(metrics)
    assert _value(got, "mlx_hub_model_memory_state", model="a", state="unloaded") == 1
    assert _value(got, "mlx_hub_model_memory_state", model="a", state="loaded") == 0
    assert _value(got, "mlx_hub_requests_in_flight", model="a") == 0
    assert ("mlx_hub_model_memory_bytes", (("model", "a"),)) not in got


def test_a_broken_live_source_does_not_break_the_scrape():
    def broken():
        raise RuntimeError("boom")

    metrics = HubMetrics(live=broken)
    metrics.model("a").add_tokens(1, 1)
    got = _samples(metrics)
    assert _value(got, "mlx_hub_prompt_tokens_total", model="a") == 1


def test_each_hub_has_its_own_registry_and_process_metrics():
    one, two = HubMetrics(), HubMetrics()
    one.model("a").add_tokens(5, 0)
    got_one, got_two = _samples(one), _samples(two)
    assert _value(got_one, "mlx_hub_prompt_tokens_total", model="a") == 5
    assert ("mlx_hub_prompt_tokens_total", (("model", "a"),)) not in got_two
    assert _value(got_two, "process_cpu_seconds_total") > 0
    assert _value(got_two, "process_resident_memory_bytes") > 1_000_000
    assert not any(name.endswith("_created") for name, _ in got_one)


def test_forget_drops_a_model_series():
    metrics = HubMetrics()
    gone, kept = metrics.model("gone"), metrics.model("kept")
    for model in (gone, kept):
        model.observe_request("/v1/embeddings", 200, 0.01, 0.01, 0.0)
        model.add_tokens(1, 0)
        model.load_succeeded(1.0)
    metrics.forget("gone")
    metrics.forget("never-seen")
    got = _samples(metrics)
    assert not any(dict(labels).get("model") == "gone" for _, labels in got)
    assert _value(got, "mlx_hub_prompt_tokens_total", model="kept") == 1
    # A model that comes back starts from zero.
    metrics.model("gone").add_tokens(2, 0)
    assert _value(_samples(metrics), "mlx_hub_prompt_tokens_total", model="gone") == 2


def test_status_class():
    assert [status_class(s) for s in (200, 299, 404, 429, 500, 504)] == [
        "2xx",
        "2xx",
        "4xx",
        "4xx",
        "5xx",
        "5xx",
    ]


def test_the_psutil_process_collector_used_without_proc():
    from prometheus_client import CollectorRegistry, generate_latest

    from mlx_openai_server_hub.metrics import _PsutilProcessCollector

    registry = CollectorRegistry()
    registry.register(_PsutilProcessCollector())
    names = {
        sample.name
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }
    assert {
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    } <= names


async def test_render_reads_levels_on_the_loop_and_formats_in_a_thread():
    import threading

    seen: list[str] = []

    def live():
        seen.append(threading.current_thread().name)
        return [ModelSample("a", "running", "loaded", 1, 0)]

    metrics = HubMetrics(live=live)
    seen.clear()
    text = (await metrics.render()).decode()
    assert 'mlx_hub_requests_in_flight{model="a"} 1.0' in text
    assert seen == [threading.main_thread().name]
