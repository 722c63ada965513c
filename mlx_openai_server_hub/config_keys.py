"""hub.yaml's keys: for each section, the keys it accepts and how each is read.

The order of a table is the order keys are read in; the public key lists
(what the docs and the tests check against) are derived from the tables.
"""

from __future__ import annotations

import attrs

from . import config_values as parse
from .config_values import Parser

MODEL_TYPES = ("lm", "multimodal", "image-generation", "image-edit", "embeddings", "whisper")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_LOG_LEVEL = parse.one_of(LOG_LEVELS, fold_case=True)


@attrs.frozen
class Key:
    """How one YAML key is read."""

    parse: Parser
    # The subject of its error messages (default: the key as written);
    # "{name}" becomes the model's name.
    label: str | None = None
    # Other spellings accepted for the same key.
    aliases: tuple[str, ...] = ()


SECTIONS = ("groups", "models")

TOP_LEVEL_TABLE: dict[str, Key] = {
    "host": Key(parse.text),
    "port": Key(parse.int_between(1, 65535), label="Hub port"),
    "model_starting_port": Key(parse.int_between(1024, 65535)),
    "log_level": Key(_LOG_LEVEL),
    "log_path": Key(parse.text),  # made a Path relative to hub.yaml's folder
    "enable_status_page": Key(parse.boolean),
    "worker_command": Key(parse.command),
    "api_keys": Key(parse.strings),
    "allowed_hosts": Key(parse.strings),
    "shutdown_grace": Key(parse.non_negative_number),
    "metrics_public": Key(parse.boolean),
    "warm_standby": Key(parse.boolean),
    "memory_budget": Key(parse.size_or_share()),
    "memory_safety_margin": Key(parse.size_or_share(allow_zero=True)),
}

GROUP_TABLE: dict[str, Key] = {
    "name": Key(parse.slug, label="group name"),
    "max_loaded": Key(parse.positive_int(" when provided")),
}

# Keys are read in this order: model_path before name (as in the reference),
# and name before port, whose messages name the model.
MODEL_TABLE: dict[str, Key] = {
    "model_path": Key(parse.user_path),
    "name": Key(parse.slug, label="model name"),
    "model_type": Key(parse.one_of(MODEL_TYPES)),
    "group": Key(parse.group_ref),
    "default": Key(parse.boolean, aliases=("is_default_model",)),
    "host": Key(parse.text),
    "port": Key(parse.int_between(1024, 65535), label="Model '{name}' port"),
    "log_level": Key(_LOG_LEVEL),
    "log_file": Key(parse.text),  # made a Path relative to hub.yaml's folder
    "no_log_file": Key(parse.boolean),
    "jit_enabled": Key(parse.boolean),
    "auto_unload_minutes": Key(parse.positive_number, label="Auto-unload minutes"),
    "context_length": Key(parse.positive_int()),
    "max_concurrency": Key(parse.positive_int()),
    "queue_timeout": Key(parse.positive_int()),
    "queue_size": Key(parse.positive_int()),
    "quantize": Key(parse.positive_int()),
    "config_name": Key(parse.text),
    "lora_paths": Key(parse.lora_paths, aliases=("lora_paths_str",)),
    "lora_scales": Key(parse.lora_scales, aliases=("lora_scales_str",)),
    "disable_auto_resize": Key(parse.boolean),
    "enable_auto_tool_choice": Key(parse.boolean),
    "trust_remote_code": Key(parse.boolean),
    "tool_call_parser": Key(parse.text),
    "reasoning_parser": Key(parse.text),
    "worker_command": Key(parse.command),
    "extra_args": Key(parse.extra_args),
    "env": Key(parse.env),
    "startup_timeout": Key(parse.positive_number),
    "request_timeout": Key(parse.positive_number),
    "memory": Key(parse.size),
    "revision": Key(parse.text),
    "warm_standby": Key(parse.boolean),
}

TOP_LEVEL_KEYS: tuple[str, ...] = (*TOP_LEVEL_TABLE, *SECTIONS)
GROUP_KEYS: tuple[str, ...] = tuple(GROUP_TABLE)
MODEL_KEYS: tuple[str, ...] = tuple(MODEL_TABLE)
# Accepted in a model entry, as the reference did, but with no effect there.
NO_EFFECT_MODEL_KEYS: dict[str, str] = {
    "enable_status_page": "has no effect per model; the status page is on or off for the "
    "whole hub (the top-level enable_status_page)",
}
# Alternative spellings of model keys: alias -> key.
MODEL_KEY_ALIASES: dict[str, str] = {
    alias: key for key, spec in MODEL_TABLE.items() for alias in spec.aliases
}


def written(mapping: dict[object, object], key: str) -> str:
    """The spelling of model key `key` used in `mapping` (it may be an alias)."""
    return next((name for name in (key, *MODEL_TABLE[key].aliases) if name in mapping), key)
