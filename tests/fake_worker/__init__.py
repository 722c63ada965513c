"""A fake ``mlx-openai-server`` worker for the hub's integration tests and benchmarks.

It mirrors the real worker's ``launch`` CLI and a minimal, valid OpenAI-compatible HTTP API
(the real ``openai`` client parses every answer), plus knobs that inject faults. It needs
only aiohttp and the standard library.

Run it as ``python tests/fake_worker ...`` (the folder; what the tests put in a model's
``worker_command``) or ``python -m tests.fake_worker ...`` from the repository root.
Modules: ``help_text`` (the command's texts), ``options`` (the ``launch`` flags),
``knobs`` (the fault knobs), ``payloads`` (answer bodies and stream plans), ``app`` (the
aiohttp handlers), ``process`` (start-up, signals, serving) and ``cli`` (``main``).

Launch
------
    python tests/fake_worker launch --model-path M --model-type lm \\
        --host 127.0.0.1 --port 8123 [any other flag of the real worker]

* The accepted flags are exactly those of ``mlx-openai-server launch --help`` of the PyPI
  1.8.1 worker, or of the 1.3.12 JIT branch when ``FAKE_WORKER_FLAVOR=jit``
  (``--jit``, ``--auto-unload-minutes``, ``--max-concurrency``; no ``--served-model-name``).
* ``launch --help`` prints that help text verbatim (the files in ``tests/fixtures``, read
  at start) and exits 0; ``--version`` prints ``mlx-openai-server, version 1.8.1`` (or 1.3.12).
* Like click: an unknown flag prints ``Error: No such option: --x`` on stderr and exits 2;
  bad INTEGER/FLOAT/choice values (``Error: Invalid value for '--port': ...``) and a missing
  value or ``--model-path`` exit 2 too. ``--config`` (multi-handler mode) is not supported.
* Startup lines on stdout include ``fake worker pid=<pid> port=<port>``; once bound it prints
  ``Uvicorn running on http://H:N``. A port in use prints ``ERROR: [Errno 98] ...`` on
  stderr and exits 1. SIGTERM and SIGINT exit 0 at once, whatever the stage.

Environment knobs (read once at start)
--------------------------------------
FAKE_WORKER_FLAVOR       ``1.8.1`` (default, alias ``pypi``) or ``jit`` (alias ``1.3.12``).
FAKE_START_DELAY         Seconds (float, default 0) of "model loading" before the port is
                         bound: until then connections are refused. Prints progress.
FAKE_EXIT_AT_START       Exit code (int): after FAKE_START_DELAY print
                         ``ERROR: failed to load model <path>`` to stderr and exit with it.
FAKE_IGNORE_SIGTERM      1: log and ignore SIGTERM and SIGINT; only SIGKILL ends the worker.
                         The FAKE_SPAWN_CHILD child then ignores SIGTERM too.
FAKE_SPAWN_CHILD         1: start a child (``python -c "time.sleep(3600)"``) in the worker's
                         process group, like the real worker's multiprocessing helpers, and
                         print ``child pid=<pid>``. The worker never stops it and it inherits
                         stdout/stderr: stop the worker by signalling its process group.
FAKE_STRICT_MODEL        1: like the real 1.8.1 worker, a /v1 request whose ``model`` is not
                         the served name (``--served-model-name``, else ``--model-path``) gets
                         404 ``model_not_found``.
FAKE_STREAM_CHUNKS       Content chunks per stream (int, default 5): ``tok0 ``, ``tok1 ``, ...
FAKE_CHUNK_DELAY         Seconds (float, default 0) slept before each content chunk.
FAKE_CRASH_AFTER_CHUNKS  Int: in a stream, after that many content chunks the process dies
                         with ``os._exit(1)``. A crashing stream never completes: if the
                         stream is shorter, it dies before the finish chunk. No ``[DONE]``.
FAKE_HANG                1: accept every /v1/* request and never answer; /health still works.
FAKE_RESPONSE_DELAY      Seconds (float, default 0) slept before a non-streaming /v1 POST answer.
FAKE_JIT_UNLOADED        1: /health reports ``model_status`` ``"unloaded"`` forever.
FAKE_JIT_START_DELAY     Seconds: FAKE_START_DELAY for a worker started with ``--jit``
                         (jit flavor), so a standby can start slower (or faster) than a cold one.
FAKE_LOAD_DELAY          Seconds (float, default 0) of a ``--jit`` worker's in-process load,
                         on its first /v1 POST or ``GET /v1/queue/stats`` (one load for all).
FAKE_HOLD_MB             MiB (int, default 0) allocated and written at start (before
                         FAKE_START_DELAY) and held until exit: real resident memory, so the
                         hub's sampled footprint (RSS/PSS) is about this plus ~30 MB of Python.
FAKE_HELP_DELAY          Seconds (float, default 0) slept before ``launch --help`` prints
                         (the real worker takes ~3.6 s: it imports its whole stack).

Per-request overrides: extra JSON body fields (openai client: ``extra_body={...}``), or form
fields on the multipart endpoints. ``fake_chunks`` (int), ``fake_chunk_delay`` (float),
``fake_crash_after`` (int), ``fake_hang`` (bool), ``fake_delay`` (float, non-streaming), and
``fake_crash`` (bool: die with ``os._exit(1)`` before answering, on any /v1 POST). A null
field keeps the default; an invalid one gets 400.

HTTP API
--------
GET  /health                ``{"status": "ok", "model_id": <model path>, "model_status": S}``;
                            S is ``"initialized (1 model(s))"`` (1.8.1) or ``"initialized"``
                            (jit flavor; ``"unloaded"`` with ``--jit`` until the first /v1 POST).
GET  /v1/models             one model; id is the served name.
GET  /v1/queue/stats        ``{"queue_stats": {"running": <requests in flight>, "queued": 0,
                            "max_concurrency": <--max-concurrency or 1>}}``
POST /v1/chat/completions   content ``fake:<model path>:<last user message>``.
POST /v1/completions        text ``fake:<model path>:<prompt>``.
POST /v1/responses          a completed Response with output text ``fake:<model path>:<input>``.
POST /v1/embeddings         deterministic vectors, 8 floats (or ``dimensions``); base64 too.
POST /v1/images/generations ``b64_json`` of a 1x1 PNG, ``n`` times.
POST /v1/images/edits       multipart; same answer, plus the received files in fake_worker.
POST /v1/audio/transcriptions  multipart;
                            ``{"text": "fake transcription of <filename> (<n> bytes) by <model>"}``

With ``"stream": true``, chat and completions answer Server-Sent Events, written as they
are produced: one chunk per content token (the first chat delta carries the role), a finish
chunk (``finish_reason`` ``"stop"``), a usage chunk if ``stream_options.include_usage``,
then ``data: [DONE]``. /v1/responses streams typed ``event:`` frames (response.created,
output_item.added, content_part.added, one output_text.delta per token, then the *.done
frames and response.completed) and ends with ``data: [DONE]`` too.

Every JSON answer to a /v1 POST (each chunk, for streams) has an extra top-level field
``"fake_worker": {"pid": <pid>, "port": <port>, "model": <the request's model field>}``;
every response has headers ``x-fake-worker-pid`` and ``x-fake-worker-port`` (and
``x-fake-worker-request-id``: the ``X-Request-ID`` it received, if any). Bad JSON gets
400 ``{"error": {"message": ..., "type": "invalid_request_error", "code": null}}``.
"""

from tests.fake_worker.help_text import HELPS as _HELPS

# The launch help texts by flavor, as tests/unit/test_launch_help.py imports them.
__all__ = ["_HELPS"]
