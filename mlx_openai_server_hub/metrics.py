"""Prometheus metrics of one hub (`GET /metrics`), with prometheus_client.

Each hub has its own `CollectorRegistry` (never the library's global one), so
tests and benchmarks can run several hubs in one process.

Two kinds of figures:

- events — requests, tokens, loads, unloads, evictions, crashes, failed loads —
  are counters and histograms updated when they happen. The hot path touches
  only pre-bound label children, cached per (model, endpoint), so a request
  costs a dict lookup and a few lock-protected additions;
- levels — requests in flight and queued, process and memory state, memory
  per model — are read from the supervisor when Prometheus scrapes
  (`live` callback), so keeping them costs the proxy nothing at all.

The hub's own process metrics (`process_cpu_seconds_total`, resident memory,
open fds …) come from prometheus_client's ProcessCollector where `/proc`
exists (Linux) and from psutil elsewhere (macOS).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator

import attrs
import psutil
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from .states import MemoryState, ProcessState

logger = logging.getLogger("mlx_hub.metrics")

NAMESPACE = "mlx_hub"
CONTENT_TYPE = CONTENT_TYPE_LATEST
# Seconds. Requests span a cached embedding (ms) to a long generation (minutes).
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
QUEUE_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
LOAD_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
# The label value of requests that name no (registered) model, e.g. `/hub/status`.
NO_MODEL = ""


@attrs.frozen
class ModelSample:
    """One model's levels at scrape time (from the supervisor's snapshots)."""

    name: str
    process_state: str
    memory_state: str
    active_requests: int = 0
    queued_requests: int = 0
    memory_bytes: int | None = None


LiveSource = Callable[[], Iterable[ModelSample]]


def status_class(status: int) -> str:
    """`2xx`, `4xx`, `5xx` … (the `status` label: bounded, unlike raw codes)."""
    return f"{status // 100}xx"


class _RequestChildren:
    """The label children of one (model, endpoint), bound once."""

    __slots__ = ("_by_status", "_labels", "_requests", "duration", "ttfb")

    def __init__(self, metrics: HubMetrics, model: str, endpoint: str) -> None:
        self._labels = (model, endpoint)
        self._requests = metrics.requests
        self._by_status: dict[str, Counter] = {}
        self.duration = metrics.request_duration.labels(model, endpoint)
        self.ttfb = metrics.ttfb.labels(model, endpoint)

    def status_classes(self) -> list[str]:
        """The status classes seen so far (their children exist)."""
        return list(self._by_status)

    def counter(self, status: int) -> Counter:
        cls = status_class(status)
        child = self._by_status.get(cls)
        if child is None:
            child = self._by_status[cls] = self._requests.labels(*self._labels, cls)
        return child


class ModelMetrics:
    """The event metrics of one model, pre-bound (what the supervisor and proxy call)."""

    def __init__(self, metrics: HubMetrics, model: str) -> None:
        self._metrics = metrics
        self.model = model
        self._endpoints: dict[str, _RequestChildren] = {}
        self._prompt_tokens = metrics.prompt_tokens.labels(model)
        self._completion_tokens = metrics.completion_tokens.labels(model)
        self._queue_wait = metrics.queue_wait.labels(model)
        self._loads = metrics.loads.labels(model)
        self._failed_loads = metrics.failed_loads.labels(model)
        self._unloads = metrics.unloads.labels(model)
        self._evictions = metrics.evictions.labels(model)
        self._crashes = metrics.crashes.labels(model)
        self._load_duration = metrics.load_duration.labels(model)

    def observe_request(
        self,
        endpoint: str,
        status: int,
        duration: float,
        ttfb: float | None = None,
        queue_wait: float | None = None,
    ) -> None:
        """One finished request (status as sent; seconds)."""
        children = self._endpoints.get(endpoint)
        if children is None:
            children = self._endpoints[endpoint] = _RequestChildren(
                self._metrics, self.model, endpoint
            )
        children.counter(status).inc()
        children.duration.observe(duration)
        if ttfb is not None:
            children.ttfb.observe(ttfb)
        if queue_wait is not None:
            self._queue_wait.observe(queue_wait)

    def endpoints(self) -> list[tuple[str, _RequestChildren]]:
        """The endpoints this model has answered on so far."""
        return list(self._endpoints.items())

    def add_tokens(self, prompt: int | None, completion: int | None) -> None:
        """The usage a worker reported for one request."""
        if prompt:
            self._prompt_tokens.inc(prompt)
        if completion:
            self._completion_tokens.inc(completion)

    def load_succeeded(self, seconds: float) -> None:
        """A worker came up with the weights in memory after `seconds`."""
        self._loads.inc()
        self._load_duration.observe(seconds)

    def load_failed(self) -> None:
        """A load ended without a ready worker."""
        self._failed_loads.inc()

    def unloaded(self) -> None:
        """The worker was stopped and its memory returned (any reason)."""
        self._unloads.inc()

    def evicted(self) -> None:
        """Unloaded to make room for another model (group cap or memory budget)."""
        self._evictions.inc()

    def crashed(self) -> None:
        """The worker exited on its own."""
        self._crashes.inc()


class HubMetrics:
    """Every metric of one hub, in its own registry."""

    def __init__(self, live: LiveSource | None = None) -> None:
        # No `*_created` series: they double the exposition and no dashboard uses them.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        self._models: dict[str, ModelMetrics] = {}
        reg = self.registry
        self.requests = Counter(
            "requests",
            "HTTP requests answered, by model, endpoint and status class.",
            ("model", "endpoint", "status"),
            namespace=NAMESPACE,
            registry=reg,
        )
        by_endpoint = ("model", "endpoint")
        self.request_duration = _histogram(
            "request_duration_seconds",
            "Time from the request's arrival to its last byte.",
            by_endpoint,
            REQUEST_BUCKETS,
            reg,
        )
        self.ttfb = _histogram(
            "time_to_first_byte_seconds",
            "Time from the request's arrival to the worker's first response byte.",
            by_endpoint,
            REQUEST_BUCKETS,
            reg,
        )
        self.queue_wait = _histogram(
            "queue_wait_seconds",
            "Time a request waited for a slot and for its model to load.",
            ("model",),
            QUEUE_BUCKETS,
            reg,
        )
        self.prompt_tokens = _model_counter("prompt_tokens", "Prompt tokens (worker usage).", reg)
        self.completion_tokens = _model_counter(
            "completion_tokens", "Completion tokens (worker usage).", reg
        )
        self.loads = _model_counter("model_loads", "Loads that ended with a ready worker.", reg)
        self.failed_loads = _model_counter("model_failed_loads", "Loads that failed.", reg)
        self.unloads = _model_counter("model_unloads", "Unloads, for any reason.", reg)
        self.evictions = _model_counter(
            "model_evictions", "Unloads to make room for another model.", reg
        )
        self.crashes = _model_counter("model_crashes", "Workers that exited on their own.", reg)
        self.load_duration = _histogram(
            "model_load_duration_seconds",
            "Time from a load's start until the worker was ready.",
            ("model",),
            LOAD_BUCKETS,
            reg,
        )
        self._live = _LiveCollector(live or (lambda: ()))
        self._render_lock = threading.Lock()
        reg.register(self._live)
        if os.path.exists("/proc/self/stat"):
            ProcessCollector(registry=reg)
        else:
            reg.register(_PsutilProcessCollector())

    def model(self, name: str | None) -> ModelMetrics:
        """The pre-bound metrics of a model (created on first use)."""
        key = name or NO_MODEL
        found = self._models.get(key)
        if found is None:
            found = self._models[key] = ModelMetrics(self, key)
        return found

    def forget(self, name: str) -> None:
        """Drop a model's series (it left hub.yaml on a reload)."""
        found = self._models.pop(name, None)
        if found is None:
            return
        for endpoint, children in found.endpoints():
            self.request_duration.remove(name, endpoint)
            self.ttfb.remove(name, endpoint)
            for cls in children.status_classes():
                self.requests.remove(name, endpoint, cls)
        for metric in (
            self.prompt_tokens,
            self.completion_tokens,
            self.queue_wait,
            self.loads,
            self.failed_loads,
            self.unloads,
            self.evictions,
            self.crashes,
            self.load_duration,
        ):
            metric.remove(name)

    def exposition(self) -> bytes:
        """The registry in Prometheus text format (levels read from `live` now)."""
        with self._render_lock:
            return generate_latest(self.registry)

    async def render(self) -> bytes:
        """`exposition()` for a scrape: levels read on the loop, the rest in a thread.

        The supervisor's state is only consistent on the event loop; formatting
        and the /proc reads of the process metrics are not done there.
        """
        samples = self._live.read()
        return await asyncio.to_thread(self._render_with, samples)

    def _render_with(self, samples: list[ModelSample]) -> bytes:
        with self._render_lock:
            self._live.frozen = samples
            try:
                return generate_latest(self.registry)
            finally:
                self._live.frozen = None


def _model_counter(name: str, doc: str, registry: CollectorRegistry) -> Counter:
    return Counter(name, doc, ("model",), namespace=NAMESPACE, registry=registry)


def _histogram(
    name: str,
    doc: str,
    labels: tuple[str, ...],
    buckets: tuple[float, ...],
    registry: CollectorRegistry,
) -> Histogram:
    return Histogram(name, doc, labels, namespace=NAMESPACE, registry=registry, buckets=buckets)


class _LiveCollector(Collector):
    """Levels read from the supervisor at scrape time."""

    def __init__(self, live: LiveSource) -> None:
        self._live = live
        # Samples read beforehand on the loop, for a render in another thread.
        self.frozen: list[ModelSample] | None = None

    def read(self) -> list[ModelSample]:
        """The current levels (call on the event loop)."""
        try:
            return list(self._live())
        except Exception:  # a broken snapshot must not break the whole scrape
            logger.exception("Cannot read the models' state for /metrics")
            return []

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        samples = self.frozen if self.frozen is not None else self.read()
        return iter(self._families(samples))

    @staticmethod
    def _families(samples: Iterable[ModelSample] = ()) -> list[Metric]:
        ns = NAMESPACE
        in_flight = GaugeMetricFamily(
            f"{ns}_requests_in_flight",
            "Requests being served by the model's worker.",
            labels=("model",),
        )
        queued = GaugeMetricFamily(
            f"{ns}_requests_queued",
            "Requests waiting for a slot or for the model to load.",
            labels=("model",),
        )
        process = GaugeMetricFamily(
            f"{ns}_model_process_state",
            "1 for the model's current process state, 0 for the others.",
            labels=("model", "state"),
        )
        memory = GaugeMetricFamily(
            f"{ns}_model_memory_state",
            "1 for the model's current memory state, 0 for the others.",
            labels=("model", "state"),
        )
        memory_bytes = GaugeMetricFamily(
            f"{ns}_model_memory_bytes",
            "Memory held by the model's worker (when measured).",
            labels=("model",),
        )
        for s in samples:
            in_flight.add_metric((s.name,), s.active_requests)
            queued.add_metric((s.name,), s.queued_requests)
            for state in ProcessState:
                process.add_metric((s.name, str(state)), float(s.process_state == state))
            for mstate in MemoryState:
                memory.add_metric((s.name, str(mstate)), float(s.memory_state == mstate))
            if s.memory_bytes is not None:
                memory_bytes.add_metric((s.name,), s.memory_bytes)
        return [in_flight, queued, process, memory, memory_bytes]


class _PsutilProcessCollector(Collector):
    """The standard `process_*` metrics where there is no /proc (macOS)."""

    def __init__(self) -> None:
        self._proc = psutil.Process()

    def collect(self) -> Iterator[Metric]:
        proc = self._proc
        try:
            with proc.oneshot():
                times = proc.cpu_times()
                mem = proc.memory_info()
                fds = proc.num_fds()
                started = proc.create_time()
        except psutil.Error:
            return iter(())
        cpu = CounterMetricFamily(
            "process_cpu_seconds", "Total user and system CPU time spent in seconds."
        )
        cpu.add_metric((), times.user + times.system)
        gauges = [
            ("process_resident_memory_bytes", "Resident memory size in bytes.", mem.rss),
            ("process_virtual_memory_bytes", "Virtual memory size in bytes.", mem.vms),
            ("process_open_fds", "Number of open file descriptors.", fds),
            ("process_start_time_seconds", "Start time of the process since epoch.", started),
        ]
        families: list[Metric] = [cpu]
        families.extend(GaugeMetricFamily(name, doc, value=value) for name, doc, value in gauges)
        return iter(families)
