"""The commented starter hub.yaml written by `init`."""

from __future__ import annotations

import math
import re
from string import Template
from typing import Any

import yaml

SAMPLE_MODEL_PATH = "mlx-community/Qwen3-4B-4bit"

# Every key, with its default or (where the comment says "e.g.") an example.
# Optional keys are commented out; `render_starter_config` fills in the
# $-placeholders. Keep in step with config.py and docs/configuration.md.
_TEMPLATE = Template("""\
# mlx-openai-server-hub configuration (hub.yaml)
#
# Every key is listed. A line "# key: value" is optional: the value shown is
# the default, or an example where the comment says "e.g.". Remove the "# "
# to set it. A misspelled key is an error, not silently ignored.
# Reference: docs/configuration.md

# --- The hub ----------------------------------------------------------------
# host: 0.0.0.0              # address the hub listens on; 127.0.0.1 = this machine only
# port: 8000                 # the one OpenAI-compatible port (1-65535)
# model_starting_port: 47850 # models without a port get free ports from here up
# log_level: INFO            # DEBUG, INFO, WARNING, ERROR or CRITICAL; models inherit it
# log_path: ~/mlx-openai-server-hub/logs  # hub log and one <name>.log per model
# enable_status_page: true   # serve the dashboard at /hub
$worker_command_line
# api_keys: [change-me]      # e.g.; keys clients send as "Authorization: Bearer <key>"
# allowed_hosts: [studio.lan]  # e.g.; extra names clients use for this machine (Host header)
# shutdown_grace: 30         # seconds requests in flight get to finish on shutdown
# metrics_public: false      # true = /metrics without the token (Prometheus on a trusted net)
# warm_standby: false       # e.g.; no warm --jit worker for unloaded models (default: one
#                            where the worker has --jit, i.e. the JIT-and-Auto-Unload line)
# memory_budget: 75%         # e.g.; most memory all models may hold together; unset = no budget
# memory_safety_margin: 3GB  # e.g.; memory a load must leave available; default 2GB

# --- Groups (optional) ------------------------------------------------------
# A group caps how many of its models are loaded at once.
# groups:
#   - name: large            # required; letters and digits, "-" or "_" between
#     max_loaded: 1          # e.g.; at most this many loaded at once; unset = no cap

# --- Models (at least one) --------------------------------------------------
models:
  - name: $model_name  # required, unique; the "model" clients ask for
    model_path: $model_path  # required; Hugging Face repo id or local folder
    # model_type: lm         # lm, multimodal, image-generation, image-edit, embeddings, whisper
    # group: large           # e.g.; a name from groups (any name while groups is empty)
$default_line
    # host: 127.0.0.1        # e.g.; address the worker binds; unset = 127.0.0.1 (via the hub only)
    # port: 47900            # e.g.; fixed worker port (1024-65535); unset = leased
    # log_level: INFO        # default: the hub's log_level
    # log_file: $log_file  # e.g.; default: <log_path>/<name>.log
    # no_log_file: false     # true = keep no log for this model
    # jit_enabled: false     # true = load on the first request instead of at start
    # auto_unload_minutes: 30  # e.g.; unload after this many idle minutes (needs jit_enabled)
    # context_length: 32768  # e.g.; unset = the worker's default (lm, multimodal)
    # max_concurrency: 1     # e.g.; requests the worker runs at once (not every worker has it)
    # queue_timeout: 300     # seconds a request may wait, also for a load or a group slot
    # queue_size: 100        # e.g.; requests the worker queues; unset = the worker's default
    # quantize: 8            # e.g.; quantization (image-generation, image-edit)
    # config_name: flux-schnell  # e.g.; model config (image-generation, image-edit)
    # lora_paths: [/path/to/lora.safetensors]  # e.g.; LoRA files (or lora_paths_str: "a,b")
    # lora_scales: [1.0]     # e.g.; one scale per LoRA file (or lora_scales_str: "1.0")
    # disable_auto_resize: false      # true = no automatic image resizing (vision models)
    # enable_auto_tool_choice: false  # true = automatic tool choice (language models)
    # trust_remote_code: false        # true = run custom code from the model repository
    # tool_call_parser: qwen3         # e.g.; unset = the worker detects it
    # reasoning_parser: qwen3         # e.g.; unset = the worker detects it
    # worker_command: mlx-openai-server  # e.g.; unset = the top-level worker_command
    # extra_args: [--max-tokens, "512"]  # e.g.; more launch options, passed as they are
    # env: {HF_HUB_OFFLINE: "1"}         # e.g.; extra environment variables for the worker
    # startup_timeout: 600   # seconds a worker gets to become healthy
    # request_timeout: 600   # longest silence from a worker while it answers
    # memory: 12GB           # e.g.; what this model needs; unset = measured, else estimated
    # revision: main         # e.g.; Hugging Face branch, tag or commit of a repo-id model_path
    # warm_standby: false    # e.g.; default: the top-level warm_standby
""")


def render_starter_config(
    model_path: str | None = None, worker_command: list[str] | None = None
) -> str:
    """A commented starter hub.yaml listing every key.

    With `model_path`, the sample model serves it and starts with the hub
    (`default: true`); with `worker_command`, that command runs the workers.
    """
    default_comment = "# start this model with the hub (alias: is_default_model)"
    if model_path is None:
        default_line = f"    # default: false         {default_comment}"
    else:
        default_line = f"    default: true            {default_comment}"
    if worker_command is None:
        worker_command_line = (
            '# worker_command: mlx-openai-server  # e.g.; runs a worker ("launch ..." is'
            " appended); unset = mlx-openai-server beside the hub's Python, else on PATH"
        )
    else:
        worker_command_line = (
            f'worker_command: {_flow(worker_command)}  # runs a worker; "launch ..." is appended'
        )
    path = SAMPLE_MODEL_PATH if model_path is None else model_path
    name = _model_name(path)
    return _TEMPLATE.substitute(
        worker_command_line=worker_command_line,
        model_name=_flow(name),
        model_path=_flow(path),
        default_line=default_line,
        log_file=f"~/mlx-openai-server-hub/logs/{name}.log",
    )


def _model_name(model_path: str) -> str:
    """A valid model name from the path's last part: "org/Qwen3-4B-4bit" -> "qwen3-4b-4bit"."""
    last = model_path.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]
    return re.sub(r"[^a-z0-9]+", "-", last.lower()).strip("-") or "model"


def _flow(value: Any) -> str:
    """`value` as one line of YAML, quoted only where YAML needs it (`yes`, `123`)."""
    dumped = _dump(value, style=None).removesuffix("...\n").strip()
    if len(dumped.splitlines()) > 1:  # a line break inside: escape it instead
        dumped = _dump(value, style='"').strip()
    return dumped


def _dump(value: Any, style: str | None) -> str:
    return yaml.safe_dump(
        value, default_flow_style=True, default_style=style, width=math.inf, allow_unicode=True
    )
