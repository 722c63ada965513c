"""hub.yaml: the data model and its loader.

`load_config(path)` is a pure function from a file to a `HubConfig` (or a
`ConfigError` whose message names the file and the key path). Nothing here
starts processes or probes ports: leasing ports is the supervisor's job.
"""

from __future__ import annotations

import difflib
import io
import math
import os
import re
import shlex
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml

from .contract import (
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_PATH,
    DEFAULT_HOST,
    DEFAULT_LOG_PATH,
    DEFAULT_PORT,
    runtime_path_for,
    token_path_for,
)
from .sizes import SizeSpec, parse_size, parse_size_or_share

# A hub.yaml is a few KB: anything far bigger is a mistake, not a config.
MAX_CONFIG_BYTES = 2**20

MODEL_TYPES = ("lm", "multimodal", "image-generation", "image-edit", "embeddings", "whisper")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(Exception):
    """A problem with hub.yaml, with a message fit to show a user as is."""


@attrs.frozen
class GroupConfig:
    """A `groups[]` entry: caps how many of its models may be loaded at once."""

    name: str
    max_loaded: int | None = None


@attrs.frozen
class ModelConfig:
    """A `models[]` entry, validated and with defaults resolved.

    Worker options that are None / False / empty were not configured and get
    no flag on the worker's command line (the worker's own default applies).
    """

    name: str
    model_path: str
    model_type: str = "lm"
    group: str | None = None
    default: bool = False
    # None: the worker binds 127.0.0.1 so nobody can bypass the hub's auth.
    host: str | None = None
    # An explicit port; None means "lease one from model_starting_port".
    port: int | None = None
    log_level: str = "INFO"
    # Resolved: `<log_path>/<name>.log` unless given or `no_log_file`.
    log_file: Path | None = None
    no_log_file: bool = False
    jit_enabled: bool = False
    auto_unload_minutes: float | None = None
    context_length: int | None = None
    max_concurrency: int | None = None
    # Also how long a request waits for a JIT load or a group slot.
    queue_timeout: int = 300
    queue_size: int | None = None
    quantize: int | None = None
    config_name: str | None = None
    lora_paths: tuple[str, ...] = ()
    lora_scales: tuple[float, ...] = ()
    disable_auto_resize: bool = False
    enable_auto_tool_choice: bool = False
    trust_remote_code: bool = False
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None
    # New in this project.
    worker_command: tuple[str, ...] | None = None
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = attrs.field(factory=dict)
    startup_timeout: float = 600.0
    # Longest silence from a worker while answering a request.
    request_timeout: float = 600.0
    # Bytes this model needs for memory admission (overrides learned and estimate).
    memory: int | None = None
    # The Hugging Face revision (branch, tag or commit) of a repo-id model_path.
    revision: str | None = None

    # What status shows about this entry (keys accepted but without effect).
    warnings: tuple[str, ...] = ()

    def worker_identity(self) -> dict[str, Any]:
        """Everything that, when changed, means the worker must be restarted."""
        return attrs.asdict(
            self,
            filter=lambda a, _v: (
                a.name not in ("default", "group", "auto_unload_minutes", "memory", "warnings")
            ),
        )


@attrs.frozen
class HubConfig:
    """The whole hub.yaml."""

    source_path: Path
    models: tuple[ModelConfig, ...]
    groups: tuple[GroupConfig, ...] = ()
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    model_starting_port: int = 47850
    log_level: str = "INFO"
    log_path: Path = attrs.field(factory=lambda: DEFAULT_LOG_PATH.expanduser())
    enable_status_page: bool = True
    # New in this project.
    worker_command: tuple[str, ...] | None = None
    api_keys: tuple[str, ...] = ()
    # Extra names clients may use for the hub (besides its hostnames and addresses).
    allowed_hosts: tuple[str, ...] = ()
    # How long a graceful shutdown lets requests in flight finish.
    shutdown_grace: float = 30.0
    # Serve /metrics without the control token (for a Prometheus on a trusted network).
    metrics_public: bool = False
    # Memory admission (memory.py, admission.py): None = no budget / the default margin.
    memory_budget: SizeSpec | None = None
    memory_safety_margin: SizeSpec | None = None

    def model(self, name: str) -> ModelConfig | None:
        """The model called `name`, or None."""
        return next((m for m in self.models if m.name == name), None)

    def group(self, name: str | None) -> GroupConfig | None:
        """The group called `name`, or None (also for models without a group)."""
        return next((g for g in self.groups if g.name == name), None)

    @property
    def token_path(self) -> Path:
        """`hub.token`, beside hub.yaml."""
        return token_path_for(self.source_path)

    @property
    def runtime_path(self) -> Path:
        """`<log_path>/hub_runtime.json`, written while the hub runs."""
        return runtime_path_for(self.log_path)

    @property
    def launch_help_path(self) -> Path:
        """`<log_path>/launch_help_cache.json`: each worker command's options, kept."""
        return self.log_path / "launch_help_cache.json"


def resolve_config_path(cli_value: str | os.PathLike[str] | None = None) -> Path:
    """The hub.yaml to use: `--config`, else `MLX_HUB_CONFIG_PATH`, else the default."""
    raw = cli_value or os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH
    return Path(raw).expanduser().absolute()


def load_config(path: str | os.PathLike[str]) -> HubConfig:
    """Read and validate hub.yaml at `path`; raise ConfigError on any mistake.

    Pure: no directories are created and no ports are probed.
    """
    source = Path(path).expanduser().absolute()
    try:
        # Not a FIFO (the read would block forever) nor a device such as /dev/zero (it
        # would never end): a reload must not hang or exhaust the hub's memory.
        if not stat.S_ISREG(source.stat().st_mode):
            raise OSError("not a regular file")
        with source.open("rb") as stream:
            raw = stream.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise OSError(f"larger than {MAX_CONFIG_BYTES // 2**20} MB")
        # utf-8-sig: editors on some systems save a byte-order mark.
        text = raw.decode("utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"Hub config file not found: {source}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Failed to read hub config '{source}': {exc}") from None
    return load_config_text(text, source)


_YAML_MERGE_TAG = "tag:yaml.org,2002:merge"


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key written twice in one mapping.

    PyYAML silently keeps the last one, so a second `port:` further down would win
    without a word. Keys brought in by a merge (`<<: *base`) may still be overridden.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _YAML_MERGE_TAG:
                continue
            key = self.construct_object(key_node)
            if key in first_seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r} (first given on line {first_seen[key].line + 1})",
                    key_node.start_mark,
                )
            first_seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


def load_config_text(text: str, source_path: Path) -> HubConfig:
    """Validate hub.yaml's `text` as if read from `source_path` (used in messages and
    to resolve relative paths); raise ConfigError on any mistake."""
    site = _Site(source_path)
    stream = io.StringIO(text)
    stream.name = str(source_path)  # so YAML error marks name the file
    try:
        document = yaml.load(stream, Loader=_UniqueKeyLoader)
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        # ValueError: an integer literal too long to convert; RecursionError: absurd nesting.
        raise ConfigError(f"Failed to parse hub config '{source_path}': {exc}") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise site.error("Hub config root must be a mapping")
    settings = {key: value for key, value in document.items() if key not in _SECTIONS}
    # extra_known: so that a typo such as `model:` suggests `models`.
    top = _read_mapping(settings, _TOP_LEVEL_TABLE, site, extra_known=_SECTIONS)
    if "log_path" in top:
        top["log_path"] = _resolve_path(top["log_path"], source_path.parent)
    groups = _groups(document.get("groups"), site.key("groups"))
    hub = HubConfig(source_path=source_path, models=(), groups=groups, **top)
    return attrs.evolve(hub, models=_models(document.get("models"), hub, site.key("models")))


# --- Key parsers ------------------------------------------------------------
# A parser turns a raw YAML value into its typed value, or raises `_Invalid`
# with a message that starts with `label` (the key, or a phrase such as
# "Hub port"). `_read_mapping` adds the file and key path, so parsers stay
# small and know nothing of where the value sits.

_SLUG = re.compile(r"[a-z0-9]+(?:[-_][a-z0-9]+)*", re.IGNORECASE)
# Counts and seconds above this are typos, and far bigger ints overflow the
# float arithmetic of timers.
_MAX_INT = 2**31 - 1
# Worker options the hub sets itself; repeated in extra_args they would break
# routing, log capture or on-demand loading.
_HUB_MANAGED_FLAGS = frozenset(
    {
        "--model-path",
        "--model-type",
        "--host",
        "--port",
        "--config",
        "--log-file",
        "--no-log-file",
        "--jit",
        "--auto-unload-minutes",
    }
)

_Parser = Callable[[Any, str], Any]


class _Invalid(Exception):
    """A value failed validation; `at` extends the key path into it ("[2]", ".HOME")."""

    def __init__(self, message: str, at: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.at = at


def _as_int(value: Any) -> int | None:
    """`value` as an int when it is one, an integral float or a decimal string."""
    if isinstance(value, bool):  # YAML `true` is an int to Python, never to a user
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _as_number(value: Any) -> int | float | None:
    """`value` as a finite int or float (numeric strings too), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    if isinstance(value, str):
        as_int = _as_int(value)  # "10" reads as 10, like the YAML literal
        value = value if as_int is None else as_int
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    if not math.isfinite(number):
        return None
    return value if isinstance(value, int) else number


def _boolean(value: Any, label: str) -> bool:
    # Strict: the reference took `default: "false"` as true.
    if isinstance(value, bool):
        return value
    raise _Invalid(f"{label} must be true or false")


def _text(value: Any, label: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"{label} must be a non-empty string")
    if "\0" in value:  # cannot be passed on a command line or in the environment
        raise _Invalid(f"{label} must not contain a NUL character")
    return value.strip()


def _user_path(value: Any, label: str) -> str:
    # The worker gets argv without a shell, so it would not expand "~" itself.
    return os.path.expanduser(_text(value, label))


def _int_between(low: int, high: int) -> _Parser:
    def parse(value: Any, label: str) -> int:
        number = _as_int(value)
        if number is None:
            raise _Invalid(f"{label} must be an integer")
        if not low <= number <= high:
            raise _Invalid(f"{label} must be between {low} and {high}")
        return number

    return parse


def _positive_int(qualifier: str = "") -> _Parser:
    def parse(value: Any, label: str) -> int:
        number = _as_int(value)
        if number is None:
            raise _Invalid(f"{label} must be an integer")
        if number < 1:
            raise _Invalid(f"{label} must be a positive integer{qualifier}")
        if number > _MAX_INT:
            raise _Invalid(f"{label} must be at most {_MAX_INT}")
        return number

    return parse


def _positive_number(value: Any, label: str) -> int | float:
    number = _as_number(value)
    if number is None or number <= 0:
        raise _Invalid(f"{label} must be a positive number")
    return number


def _non_negative_number(value: Any, label: str) -> int | float:
    number = _as_number(value)
    if number is None or number < 0:
        raise _Invalid(f"{label} must be a non-negative number")
    return number


def _one_of(choices: tuple[str, ...], *, fold_case: bool = False) -> _Parser:
    def parse(value: Any, label: str) -> str:
        if isinstance(value, str):
            text = value.strip().upper() if fold_case else value.strip()
            if text in choices:
                return text
        raise _Invalid(f"{label} must be one of {', '.join(choices)}")

    return parse


def _slug(value: Any, label: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # `name: 123` is a fine name, as in the reference
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise _Invalid(f"{label} cannot be empty")
        if _SLUG.fullmatch(text):
            return text
    raise _Invalid(f"{label} must be alphanumeric with optional hyphen/underscore separators")


def _group_ref(value: Any, label: str) -> str | None:
    # The reference treats `group: ''` as no group.
    return None if value == "" else _slug(value, label)


def _argv(value: Any, label: str, *, numbers: bool = False) -> tuple[str, ...]:
    """A command-line fragment: a string split like a shell would, or a list."""
    if isinstance(value, str):
        try:
            items: list[Any] = shlex.split(value)
        except ValueError as exc:
            raise _Invalid(f"{label} is not a valid command line: {exc}") from None
    elif isinstance(value, list):
        items = value
    else:
        raise _Invalid(f"{label} must be a string or a list of strings")
    args = []
    for index, item in enumerate(items):
        if numbers and isinstance(item, int | float) and not isinstance(item, bool):
            item = str(item)  # `[--max-tokens, 512]`: YAML made 512 an int
        if not isinstance(item, str) or not item or "\0" in item:
            at = f"[{index}]" if isinstance(value, list) else ""
            raise _Invalid(f"{label} entries must be non-empty strings", at)
        args.append(item)
    return tuple(args)


def _command(value: Any, label: str) -> tuple[str, ...]:
    argv = _argv(value, label)
    if not argv:
        raise _Invalid(f"{label} must not be empty")
    # Started without a shell, a program under "~" would not be found.
    return (os.path.expanduser(argv[0]), *argv[1:])


def _extra_args(value: Any, label: str) -> tuple[str, ...]:
    args = _argv(value, label, numbers=True)
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag in _HUB_MANAGED_FLAGS:
            raise _Invalid(f"{label} must not contain {flag}: the hub sets it itself")
    return args


def _strings(value: Any, label: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Invalid(f"{label} must be a list of non-empty strings")
    for index, item in enumerate(value):
        # No number coercion: YAML reads an unquoted 0123 as 83.
        if not isinstance(item, str) or not item.strip():
            raise _Invalid(f"{label} must be a list of non-empty strings", f"[{index}]")
    # Stripped: a Bearer token arrives without surrounding spaces.
    return tuple(item.strip() for item in value)


def _env(value: Any, label: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _Invalid(f"{label} must be a mapping of variable names to values")
    env = {}
    for name, item in value.items():
        at = f".{name}"
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            raise _Invalid(f"{label} variable names must be non-empty strings without '='", at)
        if isinstance(item, bool):
            env[name] = "true" if item else "false"
        elif isinstance(item, int | float):
            env[name] = str(item)
        elif isinstance(item, str) and "\0" not in item:
            env[name] = item
        else:
            raise _Invalid(f"{label} values must be strings, numbers or booleans", at)
    return env


def _lora_paths(value: Any, label: str) -> tuple[str, ...]:
    items = [part.strip() for part in value.split(",")] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise _Invalid(f"{label} must be a list of paths or a comma-separated string")
    paths = []
    for item in items:
        if not isinstance(item, str) or not item.strip() or "\0" in item:
            raise _Invalid(f"{label} must be a list of paths or a comma-separated string")
        path = os.path.expanduser(item.strip())
        if "," in path:
            raise _Invalid(f"{label} entries cannot contain ',': the worker splits on commas")
        paths.append(path)
    return tuple(paths)


def _lora_scales(value: Any, label: str) -> tuple[float, ...]:
    items = value.split(",") if isinstance(value, str) else value
    numbers = [_as_number(item) for item in items] if isinstance(items, list) else [None]
    if None in numbers:
        raise _Invalid(f"{label} must be a list of numbers or a comma-separated string")
    return tuple(float(number) for number in numbers if number is not None)


def _size(value: Any, label: str) -> int:
    try:
        return parse_size(value, label)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


def _size_or_share(*, allow_zero: bool = False) -> _Parser:
    def parse(value: Any, label: str) -> SizeSpec:
        try:
            return parse_size_or_share(value, label, allow_zero=allow_zero)
        except ValueError as exc:
            raise _Invalid(str(exc)) from None

    return parse


_LOG_LEVEL = _one_of(LOG_LEVELS, fold_case=True)


@attrs.frozen
class _Key:
    """How one YAML key is read."""

    parse: _Parser
    # The subject of its error messages (default: the key as written);
    # "{name}" becomes the model's name.
    label: str | None = None
    # Other spellings accepted for the same key.
    aliases: tuple[str, ...] = ()


_SECTIONS = ("groups", "models")

_TOP_LEVEL_TABLE: dict[str, _Key] = {
    "host": _Key(_text),
    "port": _Key(_int_between(1, 65535), label="Hub port"),
    "model_starting_port": _Key(_int_between(1024, 65535)),
    "log_level": _Key(_LOG_LEVEL),
    "log_path": _Key(_text),  # made a Path relative to hub.yaml's folder
    "enable_status_page": _Key(_boolean),
    "worker_command": _Key(_command),
    "api_keys": _Key(_strings),
    "allowed_hosts": _Key(_strings),
    "shutdown_grace": _Key(_non_negative_number),
    "metrics_public": _Key(_boolean),
    "memory_budget": _Key(_size_or_share()),
    "memory_safety_margin": _Key(_size_or_share(allow_zero=True)),
}

_GROUP_TABLE: dict[str, _Key] = {
    "name": _Key(_slug, label="group name"),
    "max_loaded": _Key(_positive_int(" when provided")),
}

# Keys are read in this order: model_path before name (as in the reference),
# and name before port, whose messages name the model.
_MODEL_TABLE: dict[str, _Key] = {
    "model_path": _Key(_user_path),
    "name": _Key(_slug, label="model name"),
    "model_type": _Key(_one_of(MODEL_TYPES)),
    "group": _Key(_group_ref),
    "default": _Key(_boolean, aliases=("is_default_model",)),
    "host": _Key(_text),
    "port": _Key(_int_between(1024, 65535), label="Model '{name}' port"),
    "log_level": _Key(_LOG_LEVEL),
    "log_file": _Key(_text),  # made a Path relative to hub.yaml's folder
    "no_log_file": _Key(_boolean),
    "jit_enabled": _Key(_boolean),
    "auto_unload_minutes": _Key(_positive_number, label="Auto-unload minutes"),
    "context_length": _Key(_positive_int()),
    "max_concurrency": _Key(_positive_int()),
    "queue_timeout": _Key(_positive_int()),
    "queue_size": _Key(_positive_int()),
    "quantize": _Key(_positive_int()),
    "config_name": _Key(_text),
    "lora_paths": _Key(_lora_paths, aliases=("lora_paths_str",)),
    "lora_scales": _Key(_lora_scales, aliases=("lora_scales_str",)),
    "disable_auto_resize": _Key(_boolean),
    "enable_auto_tool_choice": _Key(_boolean),
    "trust_remote_code": _Key(_boolean),
    "tool_call_parser": _Key(_text),
    "reasoning_parser": _Key(_text),
    "worker_command": _Key(_command),
    "extra_args": _Key(_extra_args),
    "env": _Key(_env),
    "startup_timeout": _Key(_positive_number),
    "request_timeout": _Key(_positive_number),
    "memory": _Key(_size),
    "revision": _Key(_text),
}

TOP_LEVEL_KEYS: tuple[str, ...] = (*_TOP_LEVEL_TABLE, *_SECTIONS)
GROUP_KEYS: tuple[str, ...] = tuple(_GROUP_TABLE)
MODEL_KEYS: tuple[str, ...] = tuple(_MODEL_TABLE)
# Accepted in a model entry, as the reference did, but with no effect there.
_NO_EFFECT_MODEL_KEYS: dict[str, str] = {
    "enable_status_page": "has no effect per model; the status page is on or off for the "
    "whole hub (the top-level enable_status_page)",
}
# Alternative spellings of model keys: alias -> key.
MODEL_KEY_ALIASES: dict[str, str] = {
    alias: key for key, spec in _MODEL_TABLE.items() for alias in spec.aliases
}


# --- Reading sections -------------------------------------------------------


@attrs.frozen
class _Site:
    """Where a value sits: the file and a key path such as `models[2].port`."""

    file: Path
    keys: str = ""

    def key(self, name: str) -> _Site:
        return _Site(self.file, f"{self.keys}.{name}" if self.keys else name)

    def index(self, index: int) -> _Site:
        return _Site(self.file, f"{self.keys}[{index}]")

    def message(self, message: str, at: str = "") -> str:
        keys = self.keys + at
        return f"{self.file}: {keys}: {message}" if keys else f"{self.file}: {message}"

    def error(self, message: str, at: str = "") -> ConfigError:
        return ConfigError(self.message(message, at))


def _read_mapping(
    mapping: dict[Any, Any],
    table: Mapping[str, _Key],
    site: _Site,
    required: Mapping[str, str] | None = None,
    extra_known: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Parse the keys of `table` found in `mapping`; absent or null keys are left out
    (the class default applies) unless `required` gives the message to raise."""
    known = [name for key, spec in table.items() for name in (key, *spec.aliases)]
    _reject_unknown_keys(mapping, [*known, *extra_known], site)
    values: dict[str, Any] = {}
    for key, spec in table.items():
        written = [name for name in (key, *spec.aliases) if name in mapping]
        if len(written) > 1:
            raise site.key(written[1]).error(
                f"Both '{written[0]}' and '{written[1]}' are set; they are the same key, keep one"
            )
        raw = mapping[written[0]] if written else None
        if raw is None:
            if required and key in required:
                raise site.error(required[key])
            continue
        label = spec.label.format(name=values.get("name")) if spec.label else written[0]
        try:
            values[key] = spec.parse(raw, label)
        except _Invalid as exc:
            raise site.key(written[0]).error(exc.message, exc.at) from None
    return values


def _reject_unknown_keys(mapping: dict[Any, Any], known: list[str], site: _Site) -> None:
    for key in mapping:
        if key not in known:
            name = str(key)
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise site.key(name).error(f"Unknown key '{name}'{hint}")


def _written(mapping: dict[Any, Any], key: str) -> str:
    """The spelling of model key `key` used in `mapping` (it may be an alias)."""
    return next((name for name in (key, *_MODEL_TABLE[key].aliases) if name in mapping), key)


def _resolve_path(text: str, base: Path) -> Path:
    # Relative to hub.yaml's folder, not to whichever folder the hub was started from.
    return base / Path(text).expanduser()


def _groups(raw: Any, site: _Site) -> tuple[GroupConfig, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise site.error("groups must be a list of mappings")
    groups: list[GroupConfig] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        entry_site = site.index(index)
        number = f"Group entry #{index + 1}"
        if not isinstance(entry, dict):
            raise entry_site.error(f"{number} must be a mapping")
        required = {"name": f"{number} is missing required 'name'"}
        group = GroupConfig(**_read_mapping(entry, _GROUP_TABLE, entry_site, required))
        if group.name.casefold() in seen:
            raise entry_site.key("name").error(f"Duplicate group name '{group.name}' detected")
        seen.add(group.name.casefold())
        groups.append(group)
    return tuple(groups)


def _models(raw: Any, hub: HubConfig, site: _Site) -> tuple[ModelConfig, ...]:
    if raw is not None and not isinstance(raw, list):
        raise site.error("models must be a list of mappings")
    if not raw:
        raise site.error("Hub config must include at least one model entry")
    group_names = {group.name for group in hub.groups}
    seen: set[str] = set()
    # Explicit ports only: leasing the others is the supervisor's job.
    taken_ports = {hub.port}
    models: list[ModelConfig] = []
    for index, entry in enumerate(raw):
        entry_site = site.index(index)
        model = _model(entry, index, hub, entry_site)
        if model.name.casefold() in seen:
            raise entry_site.key("name").error(f"Duplicate model name '{model.name}' detected")
        if group_names and model.group and model.group not in group_names:
            raise entry_site.key("group").error(
                f"Model '{model.name}' references group '{model.group}'"
                " which is not defined in hub config"
            )
        if model.port is not None:
            if model.port in taken_ports:
                raise entry_site.key("port").error(
                    f"Model '{model.name}' port {model.port}"
                    " conflicts with another model or the controller"
                )
            taken_ports.add(model.port)
        seen.add(model.name.casefold())
        models.append(model)
    return tuple(models)


def _model(entry: Any, index: int, hub: HubConfig, site: _Site) -> ModelConfig:
    number = f"Model entry #{index + 1}"
    if not isinstance(entry, dict):
        raise site.error(f"{number} must be a mapping")
    required = {
        "model_path": f"{number} is missing required 'model_path'",
        "name": f"{number} is missing required 'name'",
    }
    values = _read_mapping(entry, _MODEL_TABLE, site, required, tuple(_NO_EFFECT_MODEL_KEYS))
    values["warnings"] = tuple(
        site.key(key).message(f"Model '{values['name']}': {why}")
        for key, why in _NO_EFFECT_MODEL_KEYS.items()
        if key in entry
    )
    if "auto_unload_minutes" in values and not values.get("jit_enabled"):
        raise site.key("auto_unload_minutes").error(
            "Auto-unload requires JIT loading to be enabled"
        )
    scales = values.get("lora_scales", ())
    if scales and len(scales) != len(values.get("lora_paths", ())):
        key = _written(entry, "lora_scales")
        raise site.key(key).error(f"{key} must have one value per entry in lora_paths")
    values.setdefault("log_level", hub.log_level)
    values.setdefault("worker_command", hub.worker_command)
    values["log_file"] = _model_log_file(values, hub)
    return ModelConfig(**values)


def _model_log_file(values: dict[str, Any], hub: HubConfig) -> Path | None:
    if values.get("no_log_file"):
        return None
    if "log_file" in values:
        return _resolve_path(values["log_file"], hub.source_path.parent)
    return hub.log_path / f"{values['name']}.log"
