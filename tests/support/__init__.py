"""Helpers shared by the tests and the benchmark (`benchmarks/`), kept in one place.

- `hubs`: free ports, fake-worker model entries, and a real hub subprocess
  (`HubProcess`: hub.yaml, `serve`, wait until it listens, stop it and every worker
  it started).

The real worker and its tiny model live in `tests/e2e/worker_support.py`.
"""
