#!/usr/bin/env python3
"""A fake ``mlx-openai-server`` worker for the hub's integration tests and benchmarks.

It mirrors the real worker's ``launch`` CLI and a minimal, valid OpenAI-compatible HTTP API
(the real ``openai`` client parses every answer), plus knobs that inject faults. It needs
only aiohttp and the standard library.

Launch
------
    python tests/fake_worker.py launch --model-path M --model-type lm \\
        --host 127.0.0.1 --port 8123 [any other flag of the real worker]

* The accepted flags are exactly those of ``mlx-openai-server launch --help`` of the PyPI
  1.8.1 worker, or of the 1.3.12 JIT branch when ``FAKE_WORKER_FLAVOR=jit``
  (``--jit``, ``--auto-unload-minutes``, ``--max-concurrency``; no ``--served-model-name``).
* ``launch --help`` prints that help text verbatim and exits 0; ``--version`` prints
  ``mlx-openai-server, version 1.8.1`` (or 1.3.12).
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
every response has headers ``x-fake-worker-pid`` and ``x-fake-worker-port``. Bad JSON gets
400 ``{"error": {"message": ..., "type": "invalid_request_error", "code": null}}``.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import dataclasses
import hashlib
import importlib
import itertools
import json
import math
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

if TYPE_CHECKING:
    from aiohttp import web

PROG = "mlx-openai-server"
VERSIONS = {"1.8.1": "1.8.1", "jit": "1.3.12"}
_FLAVOR_ALIASES = {"": "1.8.1", "1.8.1": "1.8.1", "pypi": "1.8.1", "jit": "jit", "1.3.12": "jit"}

# --- `launch --help` of the two real worker lines, verbatim ---------------------------------
# The two longest lines are rebuilt from tuples to stay within the line length.

_TOOL_CALL_PARSERS_1_8_1 = (
    "functiongemma",
    "gemma4",
    "glm4_moe",
    "harmony",
    "hermes",
    "iquest_coder_v1",
    "kimi_k2",
    "longcat_flash_lite",
    "minimax_m2",
    "nemotron3_nano",
    "qwen3",
    "qwen3_coder",
    "qwen3_moe",
    "qwen3_vl",
    "solar_open",
    "step_35",
)
_REASONING_PARSERS_1_8_1 = (
    "gemma4",
    "glm47_flash",
    "glm4_moe",
    "harmony",
    "hermes",
    "kimi_k2",
    "minimax_m2",
    "mixed_think_tool_handoff",
    "nemotron3_nano",
    "qwen3",
    "qwen3_5",
    "qwen3_moe",
    "qwen3_vl",
    "solar_open",
    "step_35",
)
_HELP_1_8_1_TEMPLATE = """\
Usage: mlx-openai-server launch [OPTIONS]

  Start the FastAPI/Uvicorn server with the supplied flags.

  When ``--config`` is provided the server launches in multi-handler mode,
  loading all models defined in the YAML file. In this mode per-model CLI
  flags (``--model-path``, ``--model-type``, etc.) are ignored.

  Otherwise the command builds a single-model ``MLXServerConfig`` and calls
  the async ``start`` routine.

Options:
  --config PATH                   Path to a YAML config file for multi-handler
                                  mode. When provided, --model-path and other
                                  per-model flags are ignored.
  --model-path TEXT               Path to the model (required for lm,
                                  multimodal, embeddings, image-generation,
                                  image-edit, whisper model types). With
                                  `image-generation` or `image-edit` model
                                  types, it should be the local path to the
                                  model.
  --model-type [lm|multimodal|image-generation|image-edit|embeddings|whisper]
                                  Type of model to run (lm: text-only,
                                  multimodal: text+vision+audio, image-
                                  generation: flux image generation, image-
                                  edit: flux image edit, embeddings: text
                                  embeddings, whisper: audio transcription)
  --context-length INTEGER        Context length for language models. If not
                                  specified, uses model default. Only works
                                  with `lm` or `multimodal` model types.
  --served-model-name TEXT        Override the model name returned by
                                  /v1/models and accepted in request 'model'
                                  field. Defaults to model_path if not set.
  --port INTEGER                  Port to run the server on
  --host TEXT                     Host to run the server on
  --queue-timeout INTEGER         Request timeout in seconds
  --queue-size INTEGER            Maximum queue size for pending requests
  --quantize INTEGER              Quantization level for the model. Only used
                                  for image-generation and image-edit Flux
                                  models.
  --config-name CONFIG_NAME       Config name of the model. Only used for
                                  image-generation and image-edit models.
  --lora-paths TEXT               Path to the LoRA file(s). Multiple paths
                                  should be separated by commas.
  --lora-scales TEXT              Scale factor for the LoRA file(s). Multiple
                                  scales should be separated by commas.
  --disable-auto-resize           Disable automatic model resizing. Only work
                                  for Vision Language Models.
  --log-file TEXT                 Path to log file. If not specified, logs
                                  will be written to 'logs/app.log' by
                                  default.
  --no-log-file                   Disable file logging entirely. Only console
                                  output will be shown.
  --log-level [DEBUG|INFO|WARNING|ERROR|CRITICAL]
                                  Set the logging level. Default is INFO.
  --enable-auto-tool-choice       Enable automatic tool choice. Only works
                                  with language models.
  --tool-call-parser [{TOOL_CALL_PARSERS}]
                                  Specify tool call parser to use instead of
                                  auto-detection. Only works with language
                                  models.
  --reasoning-parser [{REASONING_PARSERS}]
                                  Specify reasoning parser to use instead of
                                  auto-detection. Only works with language
                                  models.
  --trust-remote-code             Enable trust_remote_code when loading
                                  models. This allows loading custom code from
                                  model repositories.
  --chat-template-file TEXT       Path to a custom chat template file. Only
                                  works with language models (lm) and
                                  multimodal models.
  --debug                         Enable debug mode for language models. Only
                                  works with language models (lm) and
                                  multimodal models.
  --prompt-cache-size INTEGER     Maximum number of prompt KV cache entries to
                                  store. Only works with language models (lm).
                                  Default is 10.
  --max-bytes INTEGER             Maximum total bytes retained by prompt KV
                                  caches before eviction. Only works with
                                  language models (lm).
  --prompt-cache-dir DIRECTORY    Directory for disk-backed prompt KV cache
                                  payloads. Defaults to a process-local
                                  temporary directory.
  --draft-model-path TEXT         Path to the draft model for speculative
                                  decoding. Only supported with model type
                                  'lm'. When set, --num-draft-tokens controls
                                  how many tokens the draft model generates
                                  per step.
  --num-draft-tokens INTEGER      Number of draft tokens per step when using
                                  speculative decoding (--draft-model-path).
                                  Only supported with model type 'lm'. Default
                                  is 2.
  --kv-bits INTEGER               Number of bits for KV cache quantization
                                  (e.g. 4, 8). Reduces memory usage at the
                                  cost of some quality. Only works with 'lm'
                                  and 'multimodal' model types.
  --kv-group-size INTEGER         Group size for KV cache quantization.
                                  Default is 64.
  --quantized-kv-start INTEGER    Step to begin using a quantized KV cache
                                  when --kv-bits is set. Default is 0.
  --decode-concurrency INTEGER    When a request is batchable, decode that
                                  many requests in parallel. Applies to 'lm'
                                  and 'multimodal' model types. Default is 32.
  --prompt-concurrency INTEGER    When a request is batchable, prefill that
                                  many prompts in parallel. Applies to 'lm'
                                  and 'multimodal' model types. Default is 8.
  --prefill-step-size INTEGER     Maximum tokens processed per prefill step
                                  during batched generation. Applies to 'lm'
                                  and 'multimodal' model types. Default is
                                  2048.
  --disable-batching              Disable continuous batching for LM/VLM
                                  models. Use this when per-request positive
                                  seeds must be honored.
  --max-tokens INTEGER            Default maximum number of tokens to
                                  generate. If omitted, uses model
                                  generation_config.json when available.
  --temperature FLOAT             Default sampling temperature.
  --top-p FLOAT                   Default nucleus sampling (top-p)
                                  probability.
  --top-k INTEGER                 Default top-k sampling parameter.
  --min-p FLOAT                   Default min-p sampling parameter.
  --repetition-penalty FLOAT      Default repetition penalty for token
                                  generation.
  --presence-penalty FLOAT        Default presence penalty for token
                                  generation.
  --xtc-probability FLOAT         Default XTC probability sampling parameter.
  --xtc-threshold FLOAT           Default XTC threshold sampling parameter.
  --seed INTEGER                  Default random seed for generation.
  --repetition-context-size INTEGER
                                  Default repetition context size parameter.
  --help                          Show this message and exit.
"""
_HELP_1_8_1 = _HELP_1_8_1_TEMPLATE.replace(
    "{TOOL_CALL_PARSERS}", "|".join(_TOOL_CALL_PARSERS_1_8_1)
).replace("{REASONING_PARSERS}", "|".join(_REASONING_PARSERS_1_8_1))

_HELP_JIT_1_3_12 = """\
Usage: mlx-openai-server launch [OPTIONS]

  Start the MLX OpenAI Server with the supplied flags

Options:
  --model-path TEXT               Path to the model (required for lm,
                                  multimodal, embeddings, image-generation,
                                  image-edit, whisper model types). Can be a
                                  local path or Hugging Face repository ID
                                  (e.g., 'blackforestlabs/FLUX.1-dev').
                                  [required]
  --model-type [lm|multimodal|image-generation|image-edit|embeddings|whisper]
                                  Type of model to run (lm: text-only,
                                  multimodal: text+vision+audio, image-
                                  generation: flux image generation, image-
                                  edit: flux image edit, embeddings: text
                                  embeddings, whisper: audio transcription)
  --context-length INTEGER        Context length for language models. Only
                                  works with `lm` or `multimodal` model types.
  --port INTEGER                  Port to run the server on
  --host TEXT                     Host to run the server on
  --max-concurrency INTEGER       Maximum number of concurrent requests
  --queue-timeout INTEGER         Request timeout in seconds
  --queue-size INTEGER            Maximum queue size for pending requests
  --quantize INTEGER              Quantization level for the model. Only used
                                  for image-generation and image-edit Flux
                                  models.
  --config-name [flux-schnell|flux-dev|flux-krea-dev|flux-kontext-dev]
                                  Config name of the model. Only used for
                                  image-generation and image-edit Flux models.
  --lora-paths TEXT               Path to the LoRA file(s). Multiple paths
                                  should be separated by commas.
  --lora-scales TEXT              Scale factor for the LoRA file(s). Multiple
                                  scales should be separated by commas.
  --disable-auto-resize           Disable automatic model resizing. Only work
                                  for Vision Language Models.
  --log-file TEXT                 Path to log file. If not specified, logs
                                  will be written to 'logs/app.log' by
                                  default.
  --no-log-file                   Disable file logging entirely. Only console
                                  output will be shown.
  --log-level [DEBUG|INFO|WARNING|ERROR|CRITICAL]
                                  Set the logging level. Default is INFO.
  --enable-auto-tool-choice       Enable automatic tool choice. Only works
                                  with language models.
  --tool-call-parser [qwen3|glm4_moe|qwen3_moe|qwen3_next|qwen3_vl|harmony|minimax|hermes]
                                  Specify tool call parser to use instead of
                                  auto-detection. Only works with language
                                  models.
  --reasoning-parser [qwen3|glm4_moe|qwen3_moe|qwen3_next|qwen3_vl|harmony|minimax|hermes]
                                  Specify reasoning parser to use instead of
                                  auto-detection. Only works with language
                                  models.
  --trust-remote-code             Enable trust_remote_code when loading
                                  models. This allows loading custom code from
                                  model repositories.
  --jit                           Enable just-in-time model loading. Models
                                  load on first request instead of startup.
  --auto-unload-minutes INTEGER RANGE
                                  When JIT is enabled, unload the model after
                                  idle for this many minutes.  [x>=1]
  --help                          Show this message and exit.
"""

_HELPS = {"1.8.1": _HELP_1_8_1, "jit": _HELP_JIT_1_3_12}

_GROUP_HELP = f"""\
Usage: {PROG} [OPTIONS] COMMAND [ARGS]...

  MLX OpenAI-compatible server (fake worker for the hub's tests).

Options:
  --version  Show the version and exit.
  --help     Show this message and exit.

Commands:
  launch  Start the server with the supplied flags.
"""

_MAX_BODY = 1 << 30
_DONE = b"data: [DONE]\n\n"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
_CHILD_CODE = (
    "import signal, sys, time\n"
    "if sys.argv[1] == '1':\n"
    "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "time.sleep(3600)\n"
)
_children: list[subprocess.Popen[bytes]] = []

T = TypeVar("T")


class UsageError(Exception):
    """A click-style usage error: printed with the usage header, exit code 2."""


class KnobError(Exception):
    """An environment knob has a value that does not parse."""


class BadRequest(Exception):
    """A request the fake answers with 400 and an OpenAI error envelope."""


# --- value converters shared by env knobs and per-request fields ----------------------------


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool | int | float):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _to_count(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"not an integer: {value!r}")
    number = int(value)
    if number < 0:
        raise ValueError(f"negative: {number}")
    return number


def _to_seconds(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"not a duration: {number}")
    return number


def _env(env: Mapping[str, str], name: str, convert: Callable[[str], T], default: T) -> T:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return convert(raw)
    except ValueError:
        raise KnobError(f"invalid {name}={raw!r}") from None


@dataclass(frozen=True)
class Knobs:
    """Fault knobs from the FAKE_* environment variables (see the module docstring)."""

    start_delay: float = 0.0
    exit_at_start: int | None = None
    ignore_sigterm: bool = False
    spawn_child: bool = False
    strict_model: bool = False
    stream_chunks: int = 5
    chunk_delay: float = 0.0
    crash_after_chunks: int | None = None
    hang: bool = False
    response_delay: float = 0.0
    jit_unloaded: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Knobs:
        return cls(
            start_delay=_env(env, "FAKE_START_DELAY", _to_seconds, 0.0),
            exit_at_start=_env(env, "FAKE_EXIT_AT_START", int, None),
            ignore_sigterm=_env(env, "FAKE_IGNORE_SIGTERM", _to_bool, False),
            spawn_child=_env(env, "FAKE_SPAWN_CHILD", _to_bool, False),
            strict_model=_env(env, "FAKE_STRICT_MODEL", _to_bool, False),
            stream_chunks=_env(env, "FAKE_STREAM_CHUNKS", _to_count, 5),
            chunk_delay=_env(env, "FAKE_CHUNK_DELAY", _to_seconds, 0.0),
            crash_after_chunks=_env(env, "FAKE_CRASH_AFTER_CHUNKS", _to_count, None),
            hang=_env(env, "FAKE_HANG", _to_bool, False),
            response_delay=_env(env, "FAKE_RESPONSE_DELAY", _to_seconds, 0.0),
            jit_unloaded=_env(env, "FAKE_JIT_UNLOADED", _to_bool, False),
        )


@dataclass(frozen=True, slots=True)
class RequestKnobs:
    """The knobs that one request may override with ``fake_*`` body or form fields."""

    chunks: int
    chunk_delay: float
    crash_after: int | None
    hang: bool
    delay: float
    crash: bool = False


_REQUEST_FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "fake_chunks": ("chunks", _to_count),
    "fake_chunk_delay": ("chunk_delay", _to_seconds),
    "fake_crash_after": ("crash_after", _to_count),
    "fake_hang": ("hang", _to_bool),
    "fake_delay": ("delay", _to_seconds),
    "fake_crash": ("crash", _to_bool),
}


def request_knobs(fields: Mapping[str, Any], defaults: RequestKnobs) -> RequestKnobs:
    """Apply a request's ``fake_*`` fields over the defaults; BadRequest if one is invalid."""
    changes: dict[str, Any] = {}
    for name, (attr, convert) in _REQUEST_FIELDS.items():
        raw = fields.get(name)
        if raw is None:
            continue
        try:
            changes[attr] = convert(raw)
        except (TypeError, ValueError):
            raise BadRequest(f"invalid {name}: {raw!r}") from None
    return dataclasses.replace(defaults, **changes) if changes else defaults


# --- the launch command line, checked against the help text ---------------------------------

_OPTION_LINE = re.compile(r"^  (--[a-z0-9-]+)(?: ([^ ].*?))?(?: {2,}(.*))?$")


@dataclass(frozen=True)
class OptionSpec:
    """One ``--option`` of a help text; ``metavar`` is None for a boolean flag."""

    name: str
    metavar: str | None
    description: str

    @property
    def dest(self) -> str:
        return self.name[2:].replace("-", "_")

    @property
    def choices(self) -> list[str] | None:
        if self.metavar and self.metavar.startswith("["):
            return self.metavar[1:-1].split("|")
        return None

    @property
    def kind(self) -> str:
        return (self.metavar or "").split(" ")[0]

    @property
    def min_value(self) -> int | None:
        found = re.search(r"\[x>=(-?\d+)\]", self.description)
        return int(found.group(1)) if found else None


def parse_help_options(help_text: str) -> dict[str, OptionSpec]:
    """The options listed under ``Options:`` in a click help text, by name."""
    specs: dict[str, OptionSpec] = {}
    current: list[str] | None = None  # [name, metavar or "", description...]
    lines = help_text.splitlines()
    start = lines.index("Options:") + 1
    for line in [*lines[start:], "  --end-of-options"]:
        found = _OPTION_LINE.match(line)
        if not found:
            if current is not None:
                current.append(line.strip())
            continue
        if current is not None:
            name, metavar, *description = current
            specs[name] = OptionSpec(name, metavar or None, " ".join(description).strip())
        current = [found.group(1), found.group(2) or "", found.group(3) or ""]
    return specs


class _ClickLikeParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        found = re.match(r"argument (--[\w-]+): (expected one argument|ignored explicit)", message)
        if found and found.group(2).startswith("expected"):
            raise UsageError(f"Option '{found.group(1)}' requires an argument.")
        if found:
            raise UsageError(f"Option '{found.group(1)}' does not take a value.")
        raise UsageError(message)


def _convert_option(spec: OptionSpec, raw: str) -> Any:
    prefix = f"Invalid value for '{spec.name}':"
    choices = spec.choices
    if choices is not None:
        if raw not in choices:
            allowed = ", ".join(repr(choice) for choice in choices)
            raise UsageError(f"{prefix} {raw!r} is not one of {allowed}.")
        return raw
    if spec.kind == "INTEGER":
        try:
            number = int(raw)
        except ValueError:
            raise UsageError(f"{prefix} {raw!r} is not a valid integer.") from None
        low = spec.min_value
        if low is not None and number < low:
            raise UsageError(f"{prefix} {number} is not in the range x>={low}.")
        return number
    if spec.kind == "FLOAT":
        try:
            return float(raw)
        except ValueError:
            raise UsageError(f"{prefix} {raw!r} is not a valid float.") from None
    return raw


@dataclass(frozen=True)
class LaunchArgs:
    """The parsed ``launch`` flags; ``options`` holds every flag by dest (None if absent)."""

    model_path: str
    model_type: str
    host: str
    port: int
    served_model_name: str | None
    jit: bool
    max_concurrency: int
    options: dict[str, Any] = field(default_factory=dict)


def parse_launch_args(argv: list[str], flavor: str) -> LaunchArgs:
    """Parse ``launch`` flags like click would for the flavor's help text (UsageError)."""
    specs = parse_help_options(_HELPS[flavor])
    parser = _ClickLikeParser(prog=f"{PROG} launch", add_help=False, allow_abbrev=False)
    for spec in specs.values():
        if spec.name == "--help":
            continue
        if spec.metavar is None:
            parser.add_argument(spec.name, dest=spec.dest, action="store_true")
        else:
            parser.add_argument(spec.name, dest=spec.dest, default=None)
    namespace, unknown = parser.parse_known_args(argv)
    for arg in unknown:
        if arg.startswith("-"):
            raise UsageError(f"No such option: {arg.split('=', 1)[0]}")
        raise UsageError(f"Got unexpected extra argument ({arg})")
    options: dict[str, Any] = {}
    for spec in specs.values():
        value = getattr(namespace, spec.dest, None)
        if spec.metavar is not None and value is not None:
            value = _convert_option(spec, value)
        options[spec.dest] = value
    if options.get("config"):
        raise UsageError("--config (multi-handler mode) is not supported by the fake worker.")
    if not options.get("model_path"):
        raise UsageError("Missing option '--model-path'.")
    return LaunchArgs(
        model_path=options["model_path"],
        model_type=options.get("model_type") or "lm",
        host=options.get("host") or "0.0.0.0",
        port=8000 if options.get("port") is None else options["port"],
        served_model_name=options.get("served_model_name"),
        jit=bool(options.get("jit")),
        max_concurrency=options.get("max_concurrency") or 1,
        options=options,
    )


# --- small helpers for the HTTP answers -----------------------------------------------------


def _tiny_png() -> bytes:
    """A valid 1x1 red RGB PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


_PNG_B64 = base64.b64encode(_tiny_png()).decode()


def _text_of(content: Any) -> str:
    """Text of a message content: a string, or the text of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _last_user_text(messages: Any) -> str:
    if isinstance(messages, str):
        return messages
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role", "user") == "user":
            return _text_of(message.get("content"))
    return ""


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        return " ".join(item for item in prompt if isinstance(item, str))
    return ""


def _embedding_inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(item, int) for item in value):
            return [" ".join(map(str, value))]
        if all(isinstance(item, str) for item in value):
            return value
        if all(isinstance(item, list) for item in value):
            return [" ".join(map(str, item)) for item in value]
    raise BadRequest("'input' must be a string, a list of strings or of token lists")


def _fake_vector(text: str, dims: int) -> list[float]:
    """Deterministic values in [-1, 1), exact in float32 (multiples of 1/128)."""
    values: list[float] = []
    for counter in itertools.count():
        if len(values) >= dims:
            break
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        values.extend((byte - 128) / 128 for byte in digest)
    return values[:dims]


def _usage(prompt: str, completion_tokens: int) -> dict[str, int]:
    prompt_tokens = len(prompt.split())
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _sse(data: Any, event: str | None = None) -> bytes:
    payload = b"data: " + json.dumps(data).encode() + b"\n\n"
    return payload if event is None else b"event: " + event.encode() + b"\n" + payload


def _include_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _crash(reason: str) -> NoReturn:
    os.write(2, f"fake worker: crashing abruptly ({reason})\n".encode())
    os._exit(1)


async def _hang_forever() -> NoReturn:
    await asyncio.get_running_loop().create_future()
    raise AssertionError("unreachable")


@dataclass
class StreamPlan:
    """What one SSE stream sends: fixed head frames, content chunk i, tail frames (given n)."""

    head: list[bytes]
    chunk: Callable[[int], bytes]
    tail: Callable[[int], list[bytes]]


if TYPE_CHECKING:
    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
    Builder = Callable[
        [web.Request, Mapping[str, Any], RequestKnobs], Awaitable[web.StreamResponse]
    ]


def _import_aiohttp() -> None:
    """Import aiohttp (about 0.3 s) only to serve, so --help and flag errors stay instant."""
    global web
    web = importlib.import_module("aiohttp.web")


# --- the fake server ------------------------------------------------------------------------


class FakeWorker:
    """The aiohttp application of one fake worker."""

    def __init__(self, launch: LaunchArgs, knobs: Knobs, flavor: str) -> None:
        self.launch = launch
        self.knobs = knobs
        self.flavor = flavor
        self.pid = os.getpid()
        self.served_name = launch.served_model_name or launch.model_path
        self.in_flight = 0
        self.loaded = not (flavor == "jit" and launch.jit)
        self.created = int(time.time())
        self._ids = itertools.count(1)
        self.headers = {"x-fake-worker-pid": str(self.pid), "x-fake-worker-port": str(launch.port)}
        self.sse_headers = {
            **self.headers,
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
        }
        self.defaults = RequestKnobs(
            chunks=knobs.stream_chunks,
            chunk_delay=knobs.chunk_delay,
            crash_after=knobs.crash_after_chunks,
            hang=knobs.hang,
            delay=knobs.response_delay,
        )

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/v1/queue/stats", self.queue_stats)
        json_routes: dict[str, Builder] = {
            "/v1/chat/completions": self._chat,
            "/v1/completions": self._completion,
            "/v1/responses": self._responses,
            "/v1/embeddings": self._embeddings,
            "/v1/images/generations": self._image_generation,
        }
        for path, build in json_routes.items():
            app.router.add_post(path, self._json_endpoint(build))
        app.router.add_post("/v1/images/edits", self._form_endpoint(self._image_edit))
        app.router.add_post("/v1/audio/transcriptions", self._form_endpoint(self._transcription))
        return app

    # -- plumbing ------------------------------------------------------------------------

    def _json(self, data: Any, status: int = 200) -> web.Response:
        return web.Response(
            body=json.dumps(data).encode(),
            status=status,
            content_type="application/json",
            headers=self.headers,
        )

    def _error(self, status: int, message: str, code: str | None = None) -> web.Response:
        error = {"message": message, "type": "invalid_request_error", "code": code}
        return self._json({"error": error}, status)

    def _who(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        return {"pid": self.pid, "port": self.launch.port, "model": fields.get("model")}

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-fake-{self.pid}-{next(self._ids)}"

    def _json_endpoint(self, build: Builder) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                body = json.loads(await request.read())
            except ValueError as exc:
                return self._error(400, f"Invalid JSON in request body: {exc}")
            if not isinstance(body, dict):
                return self._error(400, "The request body must be a JSON object")
            return await self._dispatch(request, body, build)

        return handler

    def _form_endpoint(self, build: Builder) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                form = await request.post()
            except ValueError as exc:
                return self._error(400, f"Invalid form body: {exc}")
            return await self._dispatch(request, form, build)

        return handler

    async def _dispatch(
        self, request: web.Request, fields: Mapping[str, Any], build: Builder
    ) -> web.StreamResponse:
        self.in_flight += 1
        try:
            knobs = request_knobs(fields, self.defaults)
            if knobs.hang:
                await _hang_forever()
            model = fields.get("model")
            if self.knobs.strict_model and model != self.served_name:
                message = f"The model `{model}` does not exist"
                return self._error(404, message, "model_not_found")
            self.loaded = True
            if knobs.crash:
                _crash("fake_crash")
            if knobs.delay and fields.get("stream") is not True:
                await asyncio.sleep(knobs.delay)
            return await build(request, fields, knobs)
        except BadRequest as exc:
            return self._error(400, str(exc))
        finally:
            self.in_flight -= 1

    async def _stream(
        self, request: web.Request, knobs: RequestKnobs, plan: StreamPlan
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers=self.sse_headers)
        await response.prepare(request)
        crash_after = knobs.crash_after
        try:
            for frame in plan.head:
                await response.write(frame)
            for index in range(knobs.chunks):
                if crash_after is not None and index >= crash_after:
                    _crash(f"after {index} chunks")
                if knobs.chunk_delay:
                    await asyncio.sleep(knobs.chunk_delay)
                await response.write(plan.chunk(index))
            if crash_after is not None:
                _crash(f"after {knobs.chunks} chunks, before the end of the stream")
            for frame in plan.tail(knobs.chunks):
                await response.write(frame)
            await response.write(_DONE)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away
        return response

    # -- GET endpoints -------------------------------------------------------------------

    def _model_status(self) -> str:
        if self.knobs.jit_unloaded or not self.loaded:
            return "unloaded"
        return "initialized (1 model(s))" if self.flavor == "1.8.1" else "initialized"

    async def health(self, request: web.Request) -> web.Response:
        status = self._model_status()
        return self._json(
            {"status": "ok", "model_id": self.launch.model_path, "model_status": status}
        )

    async def models(self, request: web.Request) -> web.Response:
        if self.knobs.hang:
            await _hang_forever()
        model = {
            "id": self.served_name,
            "object": "model",
            "created": self.created,
            "owned_by": "mlx-openai-server",
        }
        return self._json({"object": "list", "data": [model]})

    async def queue_stats(self, request: web.Request) -> web.Response:
        if self.knobs.hang:
            await _hang_forever()
        stats = {
            "running": self.in_flight,
            "queued": 0,
            "max_concurrency": self.launch.max_concurrency,
        }
        return self._json({"queue_stats": stats})

    # -- text endpoints ------------------------------------------------------------------

    async def _chat(
        self, request: web.Request, body: Mapping[str, Any], knobs: RequestKnobs
    ) -> web.StreamResponse:
        if body.get("stream") is True:
            return await self._stream(request, knobs, self._chat_stream(body))
        prompt = _last_user_text(body.get("messages"))
        content = f"fake:{self.launch.model_path}:{prompt}"
        message = {"role": "assistant", "content": content}
        return self._json(
            {
                "id": self._new_id("chatcmpl"),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.served_name,
                "choices": [
                    {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
                ],
                "usage": _usage(prompt, len(content.split())),
                "fake_worker": self._who(body),
            }
        )

    def _chat_stream(self, body: Mapping[str, Any]) -> StreamPlan:
        base = {
            "id": self._new_id("chatcmpl"),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.served_name,
        }
        who = self._who(body)

        def chunk(index: int) -> bytes:
            delta = {"content": f"tok{index} "}
            if index == 0:
                delta = {"role": "assistant", **delta}
            choice = {"index": 0, "delta": delta, "finish_reason": None}
            return _sse({**base, "choices": [choice], "fake_worker": who})

        def tail(count: int) -> list[bytes]:
            choice = {"index": 0, "delta": {}, "finish_reason": "stop"}
            frames = [_sse({**base, "choices": [choice], "fake_worker": who})]
            if _include_usage(body):
                usage = _usage(_last_user_text(body.get("messages")), count)
                frames.append(_sse({**base, "choices": [], "usage": usage, "fake_worker": who}))
            return frames

        return StreamPlan([], chunk, tail)

    async def _completion(
        self, request: web.Request, body: Mapping[str, Any], knobs: RequestKnobs
    ) -> web.StreamResponse:
        if body.get("stream") is True:
            return await self._stream(request, knobs, self._completion_stream(body))
        prompt = _prompt_text(body.get("prompt"))
        text = f"fake:{self.launch.model_path}:{prompt}"
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}
        return self._json(
            {
                "id": self._new_id("cmpl"),
                "object": "text_completion",
                "created": int(time.time()),
                "model": self.served_name,
                "choices": [choice],
                "usage": _usage(prompt, len(text.split())),
                "fake_worker": self._who(body),
            }
        )

    def _completion_stream(self, body: Mapping[str, Any]) -> StreamPlan:
        base = {
            "id": self._new_id("cmpl"),
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.served_name,
        }
        who = self._who(body)

        def frame(text: str, finish: str | None) -> bytes:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
            return _sse({**base, "choices": [choice], "fake_worker": who})

        def tail(count: int) -> list[bytes]:
            frames = [frame("", "stop")]
            if _include_usage(body):
                usage = _usage(_prompt_text(body.get("prompt")), count)
                frames.append(_sse({**base, "choices": [], "usage": usage, "fake_worker": who}))
            return frames

        return StreamPlan([], lambda index: frame(f"tok{index} ", None), tail)

    def _response_object(
        self, ids: tuple[str, str], text: str | None, prompt: str, who: dict[str, Any]
    ) -> dict[str, Any]:
        """A Responses API object; ``text`` None means in progress (no output yet)."""
        response_id, message_id = ids
        output = []
        if text is not None:
            part = {"type": "output_text", "text": text, "annotations": []}
            message = {
                "type": "message",
                "id": message_id,
                "status": "completed",
                "role": "assistant",
                "content": [part],
            }
            output.append(message)
        output_tokens = 0 if text is None else len(text.split())
        input_tokens = len(prompt.split())
        return {
            "id": response_id,
            "object": "response",
            "created_at": self.created,
            "status": "in_progress" if text is None else "completed",
            "model": self.served_name,
            "output": output,
            "parallel_tool_calls": False,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            },
            "fake_worker": who,
        }

    async def _responses(
        self, request: web.Request, body: Mapping[str, Any], knobs: RequestKnobs
    ) -> web.StreamResponse:
        ids = (self._new_id("resp"), self._new_id("msg"))
        prompt = _last_user_text(body.get("input"))
        who = self._who(body)
        if body.get("stream") is True:
            return await self._stream(request, knobs, self._responses_stream(ids, prompt, who))
        text = f"fake:{self.launch.model_path}:{prompt}"
        return self._json(self._response_object(ids, text, prompt, who))

    def _responses_stream(
        self, ids: tuple[str, str], prompt: str, who: dict[str, Any]
    ) -> StreamPlan:
        message_id = ids[1]
        where = {"item_id": message_id, "output_index": 0, "content_index": 0}
        in_progress = {"type": "message", "id": message_id, "status": "in_progress"}
        item = {**in_progress, "role": "assistant", "content": []}
        empty_part = {"type": "output_text", "text": "", "annotations": []}

        def event(kind: str, sequence: int, **data: Any) -> bytes:
            return _sse({"type": kind, "sequence_number": sequence, **data}, event=kind)

        head = [
            event("response.created", 0, response=self._response_object(ids, None, prompt, who)),
            event("response.output_item.added", 1, output_index=0, item=item),
            event("response.content_part.added", 2, part=empty_part, **where),
        ]

        def chunk(index: int) -> bytes:
            delta = f"tok{index} "
            return event("response.output_text.delta", 3 + index, delta=delta, logprobs=[], **where)

        def tail(count: int) -> list[bytes]:
            text = "".join(f"tok{index} " for index in range(count))
            done = self._response_object(ids, text, prompt, who)
            message = done["output"][0]
            seq = 3 + count
            return [
                event("response.output_text.done", seq, text=text, logprobs=[], **where),
                event("response.content_part.done", seq + 1, part=message["content"][0], **where),
                event("response.output_item.done", seq + 2, output_index=0, item=message),
                event("response.completed", seq + 3, response=done),
            ]

        return StreamPlan(head, chunk, tail)

    # -- other endpoints -----------------------------------------------------------------

    async def _embeddings(
        self, request: web.Request, body: Mapping[str, Any], knobs: RequestKnobs
    ) -> web.StreamResponse:
        inputs = _embedding_inputs(body.get("input"))
        dims = body.get("dimensions") or 8
        if not isinstance(dims, int) or not 0 < dims <= 8192:
            raise BadRequest(f"invalid dimensions: {dims!r}")
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(inputs):
            vector: Any = _fake_vector(text, dims)
            if as_base64:
                vector = base64.b64encode(array.array("f", vector).tobytes()).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        tokens = sum(len(text.split()) for text in inputs)
        return self._json(
            {
                "object": "list",
                "data": data,
                "model": self.served_name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                "fake_worker": self._who(body),
            }
        )

    def _images(self, fields: Mapping[str, Any], who: dict[str, Any]) -> web.Response:
        try:
            count = max(1, min(10, int(fields.get("n") or 1)))
        except (TypeError, ValueError):
            raise BadRequest(f"invalid n: {fields.get('n')!r}") from None
        data = [{"b64_json": _PNG_B64} for _ in range(count)]
        return self._json({"created": int(time.time()), "data": data, "fake_worker": who})

    async def _image_generation(
        self, request: web.Request, body: Mapping[str, Any], knobs: RequestKnobs
    ) -> web.StreamResponse:
        return self._images(body, self._who(body))

    async def _image_edit(
        self, request: web.Request, form: Mapping[str, Any], knobs: RequestKnobs
    ) -> web.StreamResponse:
        files = [
            {"field": name, "filename": value.filename, "bytes": len(value.file.read())}
            for name, value in form.items()
            if isinstance(value, web.FileField)
        ]
        if not files:
            raise BadRequest("an 'image' file is required (multipart/form-data)")
        return self._images(form, {**self._who(form), "files": files})

    async def _transcription(
        self, request: web.Request, form: Mapping[str, Any], knobs: RequestKnobs
    ) -> web.StreamResponse:
        upload = form.get("file")
        if not isinstance(upload, web.FileField):
            raise BadRequest("a 'file' is required (multipart/form-data)")
        size = len(upload.file.read())
        model = form.get("model")
        text = f"fake transcription of {upload.filename} ({size} bytes) by {model}"
        if form.get("response_format") in ("text", "srt", "vtt"):
            return web.Response(text=text, content_type="text/plain", headers=self.headers)
        return self._json({"text": text, "fake_worker": self._who(form)})


# --- process life -------------------------------------------------------------------------


def _log(message: str) -> None:
    print(message, flush=True)


def _log_error(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _exit_on_signal(signum: int, frame: object = None) -> None:
    os.write(2, f"INFO:     Shutting down (signal {signum})\n".encode())
    os._exit(0)


def _ignore_signal(signum: int, frame: object = None) -> None:
    os.write(2, f"WARNING:  ignoring signal {signum} (FAKE_IGNORE_SIGTERM=1)\n".encode())


def _install_signal_handlers(ignore: bool) -> None:
    handler = _ignore_signal if ignore else _exit_on_signal
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)


def _spawn_child(ignore_sigterm: bool) -> int:
    """A long sleeper in our process group, like the real worker's helper processes."""
    args = [sys.executable, "-c", _CHILD_CODE, "1" if ignore_sigterm else "0"]
    child = subprocess.Popen(args, stdin=subprocess.DEVNULL)
    _children.append(child)
    return child.pid


def _wait_start_delay(delay: float, model_path: str) -> None:
    deadline = time.monotonic() + delay
    while (remaining := deadline - time.monotonic()) > 0:
        time.sleep(min(0.5, remaining))
        waited = delay - max(0.0, deadline - time.monotonic())
        _log(f"INFO:     Loading model {model_path}... {waited:.1f}/{delay:.1f}s")


async def _serve(worker: FakeWorker) -> int:
    loop = asyncio.get_running_loop()
    ignore = worker.knobs.ignore_sigterm
    for signum in (signal.SIGTERM, signal.SIGINT):
        action = _ignore_signal if ignore else _exit_on_signal
        loop.add_signal_handler(signum, action, signum)
    runner = web.AppRunner(worker.make_app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    host, port = worker.launch.host, worker.launch.port
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        # like uvicorn: "[Errno 98] error while attempting to bind on address (...): ..."
        _log_error(f"ERROR:    [Errno {exc.errno}] {exc.strerror or exc}")
        return 1
    _log("INFO:     Application startup complete.")
    _log(f"INFO:     Uvicorn running on http://{host}:{port} (Press CTRL+C to quit)")
    await _hang_forever()


def run(launch: LaunchArgs, knobs: Knobs, flavor: str) -> int:
    """Start up like a real worker (with the start knobs applied), then serve until a signal."""
    _install_signal_handlers(knobs.ignore_sigterm)
    _log(f"INFO:     Starting {PROG} {VERSIONS[flavor]} (fake worker, flavor {flavor})")
    _log(f"fake worker pid={os.getpid()} port={launch.port}")
    _log(f"INFO:     Loading model {launch.model_path} (type {launch.model_type})")
    if knobs.spawn_child:
        _log(f"child pid={_spawn_child(knobs.ignore_sigterm)}")
    _wait_start_delay(knobs.start_delay, launch.model_path)
    if knobs.exit_at_start is not None:
        _log_error(f"ERROR: failed to load model {launch.model_path} (FAKE_EXIT_AT_START)")
        return knobs.exit_at_start
    _log(f"INFO:     Model {launch.model_path} loaded")
    _import_aiohttp()
    return asyncio.run(_serve(FakeWorker(launch, knobs, flavor)))


def _usage_error(message: str, command: str = "launch") -> int:
    usage = f"{PROG} {command} [OPTIONS]" if command else f"{PROG} [OPTIONS] COMMAND [ARGS]..."
    hint = f"{PROG} {command} --help" if command else f"{PROG} --help"
    sys.stderr.write(f"Usage: {usage}\nTry '{hint}' for help.\n\nError: {message}\n")
    return 2


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    flavor = _FLAVOR_ALIASES.get(os.environ.get("FAKE_WORKER_FLAVOR", "").strip().lower())
    if flavor is None:
        _log_error(f"fake worker: unknown FAKE_WORKER_FLAVOR (use one of {list(_FLAVOR_ALIASES)})")
        return 2
    if not args or args[0] == "--help":
        sys.stdout.write(_GROUP_HELP)
        return 0
    if args[0] == "--version":
        _log(f"{PROG}, version {VERSIONS[flavor]}")
        return 0
    if args[0] != "launch":
        if args[0].startswith("-"):
            return _usage_error(f"No such option: {args[0]}", command="")
        return _usage_error(f"No such command '{args[0]}'.", command="")
    if "--help" in args[1:]:
        time.sleep(float(os.environ.get("FAKE_HELP_DELAY") or 0))
        sys.stdout.write(_HELPS[flavor])
        return 0
    try:
        launch = parse_launch_args(args[1:], flavor)
        knobs = Knobs.from_env(os.environ)
    except UsageError as exc:
        return _usage_error(str(exc))
    except KnobError as exc:
        _log_error(f"fake worker: {exc}")
        return 2
    return run(launch, knobs, flavor)


if __name__ == "__main__":
    sys.exit(main())
