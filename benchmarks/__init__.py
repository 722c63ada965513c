"""How much does the hub cost? The same worker, reached directly and through the hub.

One command (``python -m benchmarks`` from the repository works too)::

    .venv/bin/python benchmarks/bench.py [--quick] [--real-worker PATH] [--real-jit N]
        [--json out.json] [--baseline benchmarks/baseline.json] [--strict] [--save-baseline]

It starts a real hub (``python -m mlx_openai_server_hub serve``) on a free loopback port
with fake workers (``tests/fake_worker``, and the real ``mlx-openai-server`` with a
tiny model when ``--real-worker`` is given). Every comparison sends the same bytes to the
same worker process, once to the worker's own port and once through the hub, in the same
run and interleaved where the phase allows it, so machine noise hits both sides alike:

- small non-streaming requests, one at a time: added latency (hub minus direct, p50/p99),
  and the hub/direct ratio with the real worker;
- streaming: time to the first body byte (added), throughput of a 20,000-chunk stream;
- 64 and 256 concurrent streams at 50 chunks/s each (and, in a full run, 64 unpaced
  streams): latency ratio, hub CPU time per request, hub peak RSS, errors;
- the hub's request queue: 64 clients on a model with ``max_concurrency: 2`` (errors,
  worst FIFO reordering, queue wait from the access log, hub CPU), and what the access log
  and the metrics cost a request (hub/direct ratios, and that work timed in process);
- JIT: request to first answer byte through the hub, minus what the same worker command
  needs on its own (spawn → /health ready → first answer), for a first load, reloads, and
  a request sent the moment a fresh hub listens;
- memory: three models that fit two at a time under ``memory_budget``, 3,000 requests
  alternating between pairs of them from 8 clients: errors, the peak of the workers'
  summed footprints against the budget, evictions, latency;
- downloads: a repo pulled through the hub against ``huggingface_hub.snapshot_download``
  on the stand-in endpoint (MB/s), and the added latency while a download runs;
- the hub's idle RSS and the wall time of ``mlx-openai-server-hub status``.

It prints a table (targets, results, baseline), writes JSON, and with ``--strict`` exits 1
when a target is missed or a metric regressed against the baseline. See
docs/performance.md for the method and the numbers.

This process is the load generator: uvloop and a minimal keep-alive HTTP/1.1 client
(`loadgen.RawClient`), cheap enough never to be the bottleneck. The hub and each worker
are separate processes. On a 2-core machine the three compete for CPU: the hub's numbers
include that contention, which is the honest cost on such a machine.

Modules: `__main__` (command line), `runner` (the order of the phases), `core` (what
the phases share), `latency`, `concurrency`, `jit`, `real`, `footprint`, `traffic`, `memory`,
`downloads` (one per family of figures), `loadgen` (the timed client), `hubs` (the hub
and its models, built on tests/support/hubs.py, which the tests use too), `plans` (phase
sizes) and `report` (targets, baseline, table).
"""
