"""hub.yaml: the data model and its loader.

`load_config(path)` is a pure function from a file to a `HubConfig` (or a
`ConfigError` whose message names the file and the key path). Nothing here
starts processes or probes ports: leasing ports is the supervisor's job.

How each key is read lives in config_keys.py (the tables) and
config_values.py (the parsers); reading and parsing the file in config_yaml.py.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from .config_keys import (
    GROUP_KEYS,
    GROUP_TABLE,
    LOG_LEVELS,
    MODEL_KEY_ALIASES,
    MODEL_KEYS,
    MODEL_TABLE,
    MODEL_TYPES,
    NO_EFFECT_MODEL_KEYS,
    SECTIONS,
    TOP_LEVEL_KEYS,
    TOP_LEVEL_TABLE,
    Key,
    written,
)
from .config_values import Invalid
from .config_yaml import PARSE_ERRORS, parse_yaml, read_config_file
from .contract import (
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_PATH,
    DEFAULT_HOST,
    DEFAULT_LOG_PATH,
    DEFAULT_PORT,
    runtime_path_for,
    token_path_for,
)
from .sizes import SizeSpec

__all__ = [
    "DEFAULT_LOG_PATH",
    "GROUP_KEYS",
    "LOG_LEVELS",
    "MODEL_KEYS",
    "MODEL_KEY_ALIASES",
    "MODEL_TYPES",
    "TOP_LEVEL_KEYS",
    "ConfigError",
    "GroupConfig",
    "HubConfig",
    "ModelConfig",
    "load_config",
    "load_config_text",
    "resolve_config_path",
]


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
    # Keep a `--jit` standby while unloaded: None = yes where the worker has --jit
    # (and no warning if it has not), True = asked for explicitly, False = never.
    warm_standby: bool | None = None

    # What status shows about this entry (keys accepted but without effect).
    warnings: tuple[str, ...] = ()

    def worker_identity(self) -> dict[str, Any]:
        """Everything that, when changed, means the worker must be restarted."""
        return attrs.asdict(
            self,
            filter=lambda a, _v: a.name not in _NOT_WORKER_IDENTITY,
        )


# Model keys that change how the hub treats a worker, not the worker itself.
_NOT_WORKER_IDENTITY = frozenset(
    {"default", "group", "auto_unload_minutes", "memory", "warnings", "warm_standby"}
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
    # The models' default for warm_standby (see ModelConfig).
    warm_standby: bool | None = None

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
        text = read_config_file(source)
    except FileNotFoundError:
        raise ConfigError(f"Hub config file not found: {source}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Failed to read hub config '{source}': {exc}") from None
    return load_config_text(text, source)


def load_config_text(text: str, source_path: Path) -> HubConfig:
    """Validate hub.yaml's `text` as if read from `source_path` (used in messages and
    to resolve relative paths); raise ConfigError on any mistake."""
    site = _Site(source_path)
    try:
        document = parse_yaml(text, source_path)
    except PARSE_ERRORS as exc:
        raise ConfigError(f"Failed to parse hub config '{source_path}': {exc}") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise site.error("Hub config root must be a mapping")
    settings = {key: value for key, value in document.items() if key not in SECTIONS}
    # extra_known: so that a typo such as `model:` suggests `models`.
    top = _read_mapping(settings, TOP_LEVEL_TABLE, site, extra_known=SECTIONS)
    if "log_path" in top:
        top["log_path"] = _resolve_path(top["log_path"], source_path.parent)
    groups = _groups(document.get("groups"), site.key("groups"))
    hub = HubConfig(source_path=source_path, models=(), groups=groups, **top)
    return attrs.evolve(hub, models=_models(document.get("models"), hub, site.key("models")))


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
    table: Mapping[str, Key],
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
        except Invalid as exc:
            raise site.key(written[0]).error(exc.message, exc.at) from None
    return values


def _reject_unknown_keys(mapping: dict[Any, Any], known: list[str], site: _Site) -> None:
    for key in mapping:
        if key not in known:
            name = str(key)
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise site.key(name).error(f"Unknown key '{name}'{hint}")


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
        group = GroupConfig(**_read_mapping(entry, GROUP_TABLE, entry_site, required))
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
    values = _read_mapping(entry, MODEL_TABLE, site, required, tuple(NO_EFFECT_MODEL_KEYS))
    values["warnings"] = tuple(
        site.key(key).message(f"Model '{values['name']}': {why}")
        for key, why in NO_EFFECT_MODEL_KEYS.items()
        if key in entry
    )
    if "auto_unload_minutes" in values and not values.get("jit_enabled"):
        raise site.key("auto_unload_minutes").error(
            "Auto-unload requires JIT loading to be enabled"
        )
    scales = values.get("lora_scales", ())
    if scales and len(scales) != len(values.get("lora_paths", ())):
        key = written(entry, "lora_scales")
        raise site.key(key).error(f"{key} must have one value per entry in lora_paths")
    values.setdefault("log_level", hub.log_level)
    values.setdefault("worker_command", hub.worker_command)
    values.setdefault("warm_standby", hub.warm_standby)
    values["log_file"] = _model_log_file(values, hub)
    return ModelConfig(**values)


def _model_log_file(values: dict[str, Any], hub: HubConfig) -> Path | None:
    if values.get("no_log_file"):
        return None
    if "log_file" in values:
        return _resolve_path(values["log_file"], hub.source_path.parent)
    return hub.log_path / f"{values['name']}.log"
