"""hub.yaml loading: defaults, coercions, every error message, and robustness."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mlx_openai_server_hub.config import (
    DEFAULT_LOG_PATH,
    GROUP_KEYS,
    LOG_LEVELS,
    MODEL_KEY_ALIASES,
    MODEL_KEYS,
    TOP_LEVEL_KEYS,
    ConfigError,
    HubConfig,
    ModelConfig,
    load_config,
    load_config_text,
)

SOURCE = Path("/cfg/hub.yaml")


def model(**keys: Any) -> dict[str, Any]:
    """A valid model entry, with `keys` added or overriding."""
    return {"name": "a", "model_path": "m", **keys}


def hub(*models: Any, **keys: Any) -> dict[str, Any]:
    """A hub.yaml document with `models` (one valid model if none given)."""
    return {**keys, "models": list(models) if models else [model()]}


def load(document: Any) -> HubConfig:
    return load_config_text(yaml.safe_dump(document), SOURCE)


def load_error(document: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load(document)
    return str(caught.value)


# --- Defaults and coercions ---------------------------------------------------


def test_defaults() -> None:
    config = load(hub())
    log_path = DEFAULT_LOG_PATH.expanduser()
    assert config.source_path == SOURCE
    assert (config.host, config.port, config.model_starting_port) == ("0.0.0.0", 8000, 47850)
    assert config.log_level == "INFO"
    assert config.log_path == log_path
    assert config.enable_status_page is True
    assert config.groups == ()
    assert config.worker_command is None
    assert config.api_keys == ()
    assert config.shutdown_grace == 30
    assert config.models == (ModelConfig(name="a", model_path="m", log_file=log_path / "a.log"),)
    only = config.models[0]
    assert only.host is None  # the worker then binds 127.0.0.1
    assert only.queue_timeout == 300
    assert (only.startup_timeout, only.request_timeout) == (600, 600)
    for worker_option in ("context_length", "max_concurrency", "queue_size", "quantize"):
        assert getattr(only, worker_option) is None
    assert (only.config_name, only.tool_call_parser, only.reasoning_parser) == (None,) * 3


def test_empty_mapping_and_nulls_mean_defaults() -> None:
    nulls = {key: None for key in ("host", "port", "log_level", "shutdown_grace")}
    model_nulls = {key: None for key in ("port", "jit_enabled", "default", "env", "group")}
    assert load(hub(model(**model_nulls), **nulls)) == load(hub())


@pytest.mark.parametrize(
    ("top", "entry", "attribute", "expected"),
    [
        ({"port": "8001"}, {}, "hub.port", 8001),
        ({"port": 8001.0}, {}, "hub.port", 8001),
        ({"log_level": "debug"}, {}, "hub.log_level", "DEBUG"),
        ({"log_level": "debug"}, {}, "log_level", "DEBUG"),  # inherited
        ({"log_level": "debug"}, {"log_level": "Error"}, "log_level", "ERROR"),
        ({"host": "127.0.0.1"}, {}, "host", None),  # not inherited
        ({}, {"host": "0.0.0.0"}, "host", "0.0.0.0"),
        ({"shutdown_grace": 0}, {}, "hub.shutdown_grace", 0),
        ({"api_keys": ["k1", " k2 "]}, {}, "hub.api_keys", ("k1", "k2")),
        ({"enable_status_page": False}, {}, "hub.enable_status_page", False),
        ({}, {"name": 123}, "name", "123"),
        ({}, {"name": " Qwen3_4B-x "}, "name", "Qwen3_4B-x"),
        ({}, {"group": ""}, "group", None),
        ({}, {"group": "anything"}, "group", "anything"),  # no groups: any group
        ({}, {"default": True}, "default", True),
        ({}, {"is_default_model": True}, "default", True),
        ({}, {"jit_enabled": True, "auto_unload_minutes": 0.5}, "auto_unload_minutes", 0.5),
        ({}, {"jit_enabled": True, "auto_unload_minutes": "10"}, "auto_unload_minutes", 10),
        ({}, {"model_type": "embeddings"}, "model_type", "embeddings"),
        ({}, {"port": "5000"}, "port", 5000),
        ({}, {"context_length": "32768"}, "context_length", 32768),
        ({}, {"queue_timeout": 30}, "queue_timeout", 30),
        (
            {},
            {"lora_paths": "a.safetensors, b.safetensors"},
            "lora_paths",
            ("a.safetensors", "b.safetensors"),
        ),
        ({}, {"lora_paths_str": "a,b"}, "lora_paths", ("a", "b")),
        ({}, {"lora_paths": ["a", "b"], "lora_scales": "0.5, 1"}, "lora_scales", (0.5, 1.0)),
        ({}, {"lora_paths": ["a", "b"], "lora_scales": [0.5, "1"]}, "lora_scales", (0.5, 1.0)),
        ({}, {"lora_paths": "a", "lora_scales_str": "2"}, "lora_scales", (2.0,)),
        (
            {},
            {"worker_command": "python -m 'my app'"},
            "worker_command",
            ("python", "-m", "my app"),
        ),
        ({}, {"worker_command": ["w", "--x"]}, "worker_command", ("w", "--x")),
        ({"worker_command": "hubw"}, {}, "worker_command", ("hubw",)),  # falls back
        ({"worker_command": "hubw"}, {"worker_command": "own"}, "worker_command", ("own",)),
        (
            {},
            {"extra_args": ["--max-tokens", 512, 0.5]},
            "extra_args",
            ("--max-tokens", "512", "0.5"),
        ),
        (
            {},
            {"extra_args": "--chat-template-file 'a b.jinja'"},
            "extra_args",
            ("--chat-template-file", "a b.jinja"),
        ),
        (
            {},
            {"env": {"A": 1, "B": True, "C": "x", "D": 1.5, "E": ""}},
            "env",
            {"A": "1", "B": "true", "C": "x", "D": "1.5", "E": ""},
        ),
        ({}, {"startup_timeout": 12.5}, "startup_timeout", 12.5),
        ({}, {"request_timeout": "30"}, "request_timeout", 30),
        ({}, {"no_log_file": True}, "log_file", None),
        ({}, {"no_log_file": True, "log_file": "x.log"}, "log_file", None),
        ({}, {"log_file": "x.log"}, "log_file", Path("/cfg/x.log")),  # beside hub.yaml
        ({}, {"log_file": "/var/log/a.log"}, "log_file", Path("/var/log/a.log")),
        ({"log_path": "logs"}, {}, "hub.log_path", Path("/cfg/logs")),
        ({"log_path": "logs"}, {}, "log_file", Path("/cfg/logs/a.log")),
        ({"log_path": "/var/hub"}, {}, "log_file", Path("/var/hub/a.log")),
    ],
)
def test_coercions(
    top: dict[str, Any], entry: dict[str, Any], attribute: str, expected: Any
) -> None:
    config = load(hub(model(**entry), **top))
    if attribute.startswith("hub."):
        value = getattr(config, attribute.removeprefix("hub."))
    else:
        value = getattr(config.models[0], attribute)
    assert value == expected
    assert type(value) is type(expected)


def test_home_is_expanded() -> None:
    home = os.path.expanduser("~")
    config = load(
        hub(
            model(model_path="~/models/x", log_file="~/a.log", worker_command="~/bin/w --v"),
            log_path="~/hub-logs",
        )
    )
    assert config.log_path == Path(home, "hub-logs")
    only = config.models[0]
    assert only.model_path == f"{home}/models/x"
    assert only.log_file == Path(home, "a.log")
    assert only.worker_command == (f"{home}/bin/w", "--v")


def test_yaml_11_booleans_are_booleans() -> None:
    assert (
        load_config_text("models: [{name: a, model_path: m, default: yes}]", SOURCE)
        .models[0]
        .default
    )


def test_groups_are_read() -> None:
    config = load(
        hub(
            model(group="big"),
            model(name="b", group="small"),
            groups=[
                {"name": "big", "max_loaded": "2"},
                {"name": "small"},
            ],
        )
    )
    assert [(g.name, g.max_loaded) for g in config.groups] == [("big", 2), ("small", None)]
    assert config.group("big") is config.groups[0]
    assert [m.group for m in config.models] == ["big", "small"]


def test_model_ports_may_repeat_the_auto_range() -> None:
    # No port probing and no auto-assignment at load time: explicit ports only.
    config = load(hub(model(port=47850), model(name="b")))
    assert [m.port for m in config.models] == [47850, None]


# --- Errors -----------------------------------------------------------------

PORT_RANGE = "must be between 1024 and 65535"
SLUG = "must be alphanumeric with optional hyphen/underscore separators"
LEVELS = "must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
TYPES = "must be one of lm, multimodal, image-generation, image-edit, embeddings, whisper"

ERRORS: list[tuple[Any, str]] = [
    # Document
    ([1, 2], "Hub config root must be a mapping"),
    ("text", "Hub config root must be a mapping"),
    ({}, "models: Hub config must include at least one model entry"),
    ({"models": None}, "models: Hub config must include at least one model entry"),
    ({"models": []}, "models: Hub config must include at least one model entry"),
    ({"models": {"a": 1}}, "models: models must be a list of mappings"),
    (hub(groups="g"), "groups: groups must be a list of mappings"),
    (hub(prot=1), "prot: Unknown key 'prot' (did you mean 'port'?)"),
    (hub(zzz=1), "zzz: Unknown key 'zzz'"),
    ({1: 2, "models": [model()]}, "1: Unknown key '1'"),
    # Top-level keys
    (hub(port="abc"), "port: Hub port must be an integer"),
    (hub(port=True), "port: Hub port must be an integer"),
    (hub(port=[1]), "port: Hub port must be an integer"),
    (hub(port=8000.5), "port: Hub port must be an integer"),
    (hub(port=70000), "port: Hub port must be between 1 and 65535"),
    (hub(port=0), "port: Hub port must be between 1 and 65535"),
    (hub(model_starting_port="x"), "model_starting_port: model_starting_port must be an integer"),
    (hub(model_starting_port=80), f"model_starting_port: model_starting_port {PORT_RANGE}"),
    (hub(log_level="verbose"), f"log_level: log_level {LEVELS}"),
    (hub(log_level=10), f"log_level: log_level {LEVELS}"),
    (hub(enable_status_page="no"), "enable_status_page: enable_status_page must be true or false"),
    (hub(host=5), "host: host must be a non-empty string"),
    (hub(host=" "), "host: host must be a non-empty string"),
    (hub(log_path=[]), "log_path: log_path must be a non-empty string"),
    (hub(log_path="a\0b"), "log_path: log_path must not contain a NUL character"),
    (hub(worker_command=""), "worker_command: worker_command must not be empty"),
    (hub(worker_command=[]), "worker_command: worker_command must not be empty"),
    (
        hub(worker_command="w 'x"),
        "worker_command: worker_command is not a valid command line: No closing quotation",
    ),
    (
        hub(worker_command=["w", 1]),
        "worker_command[1]: worker_command entries must be non-empty strings",
    ),
    (
        hub(worker_command=["w", ""]),
        "worker_command[1]: worker_command entries must be non-empty strings",
    ),
    (
        hub(worker_command={"a": 1}),
        "worker_command: worker_command must be a string or a list of strings",
    ),
    (hub(api_keys="k"), "api_keys: api_keys must be a list of non-empty strings"),
    (hub(api_keys=["k", 123]), "api_keys[1]: api_keys must be a list of non-empty strings"),
    (hub(api_keys=[""]), "api_keys[0]: api_keys must be a list of non-empty strings"),
    (hub(shutdown_grace=-1), "shutdown_grace: shutdown_grace must be a non-negative number"),
    (hub(shutdown_grace="x"), "shutdown_grace: shutdown_grace must be a non-negative number"),
    # Groups
    (hub(groups=[1]), "groups[0]: Group entry #1 must be a mapping"),
    (hub(groups=[{"max_loaded": 1}]), "groups[0]: Group entry #1 is missing required 'name'"),
    (hub(groups=[{"name": ""}]), "groups[0].name: group name cannot be empty"),
    (hub(groups=[{"name": "a--b"}]), f"groups[0].name: group name {SLUG}"),
    (hub(groups=[{"name": {"x": 1}}]), f"groups[0].name: group name {SLUG}"),
    (
        hub(groups=[{"name": "g", "max_loaded": "x"}]),
        "groups[0].max_loaded: max_loaded must be an integer",
    ),
    (
        hub(groups=[{"name": "g", "max_loaded": 0}]),
        "groups[0].max_loaded: max_loaded must be a positive integer when provided",
    ),
    (
        hub(groups=[{"name": "g", "max_load": 1}]),
        "groups[0].max_load: Unknown key 'max_load' (did you mean 'max_loaded'?)",
    ),
    (
        hub(groups=[{"name": "big"}, {"name": "Big"}]),
        "groups[1].name: Duplicate group name 'Big' detected",
    ),
    # Model entries
    (hub(1), "models[0]: Model entry #1 must be a mapping"),
    (hub(model(), ["a"]), "models[1]: Model entry #2 must be a mapping"),
    (hub({}), "models[0]: Model entry #1 is missing required 'model_path'"),
    (hub({"name": "a"}), "models[0]: Model entry #1 is missing required 'model_path'"),
    (hub({"model_path": "m"}), "models[0]: Model entry #1 is missing required 'name'"),
    (hub(model(name=None)), "models[0]: Model entry #1 is missing required 'name'"),
    (hub(model(name="")), "models[0].name: model name cannot be empty"),
    (hub(model(name="  ")), "models[0].name: model name cannot be empty"),
    (hub(model(name="qwen3.5")), f"models[0].name: model name {SLUG}"),
    (hub(model(name="bad slug")), f"models[0].name: model name {SLUG}"),
    (hub(model(name={"a": 1})), f"models[0].name: model name {SLUG}"),
    (hub(model(name=True)), f"models[0].name: model name {SLUG}"),
    (hub(model(model_path=5)), "models[0].model_path: model_path must be a non-empty string"),
    (hub(model(model_path="")), "models[0].model_path: model_path must be a non-empty string"),
    (hub(model(model_type="llm")), f"models[0].model_type: model_type {TYPES}"),
    (hub(model(group="bad slug")), f"models[0].group: group {SLUG}"),
    (
        hub(model(group="g2"), groups=[{"name": "g1"}]),
        "models[0].group: Model 'a' references group 'g2' which is not defined in hub config",
    ),
    (hub(model(default="false")), "models[0].default: default must be true or false"),
    (hub(model(default=1)), "models[0].default: default must be true or false"),
    (
        hub(model(is_default_model="yes")),
        "models[0].is_default_model: is_default_model must be true or false",
    ),
    (
        hub(model(default=True, is_default_model=True)),
        "models[0].is_default_model: Both 'default' and 'is_default_model' are set;"
        " they are the same key, keep one",
    ),
    (hub(model(host=["h"])), "models[0].host: host must be a non-empty string"),
    (hub(model(port="x")), "models[0].port: Model 'a' port must be an integer"),
    (hub(model(port=[1])), "models[0].port: Model 'a' port must be an integer"),
    (hub(model(port=80)), f"models[0].port: Model 'a' port {PORT_RANGE}"),
    (hub(model(port=65536)), f"models[0].port: Model 'a' port {PORT_RANGE}"),
    (
        hub(model(port=8000)),
        "models[0].port: Model 'a' port 8000 conflicts with another model or the controller",
    ),
    (
        hub(model(port=9000), port=9000),
        "models[0].port: Model 'a' port 9000 conflicts with another model or the controller",
    ),
    (
        hub(model(port=5000), model(name="b", port=5000)),
        "models[1].port: Model 'b' port 5000 conflicts with another model or the controller",
    ),
    (
        hub(model(name="w"), model(name="v"), model(name="x", port=99)),
        f"models[2].port: Model 'x' port {PORT_RANGE}",
    ),
    (hub(model(log_level="loud")), f"models[0].log_level: log_level {LEVELS}"),
    (hub(model(log_file=3)), "models[0].log_file: log_file must be a non-empty string"),
    (hub(model(no_log_file="true")), "models[0].no_log_file: no_log_file must be true or false"),
    (hub(model(jit_enabled=1)), "models[0].jit_enabled: jit_enabled must be true or false"),
    (
        hub(model(auto_unload_minutes=5)),
        "models[0].auto_unload_minutes: Auto-unload requires JIT loading to be enabled",
    ),
    (
        hub(model(auto_unload_minutes=5, jit_enabled=False)),
        "models[0].auto_unload_minutes: Auto-unload requires JIT loading to be enabled",
    ),
    (
        hub(model(auto_unload_minutes=0, jit_enabled=True)),
        "models[0].auto_unload_minutes: Auto-unload minutes must be a positive number",
    ),
    (
        hub(model(auto_unload_minutes="soon", jit_enabled=True)),
        "models[0].auto_unload_minutes: Auto-unload minutes must be a positive number",
    ),
    (
        hub(model(auto_unload_minutes=float("inf"), jit_enabled=True)),
        "models[0].auto_unload_minutes: Auto-unload minutes must be a positive number",
    ),
    (
        hub(model(context_length=0)),
        "models[0].context_length: context_length must be a positive integer",
    ),
    (hub(model(context_length=1.5)), "models[0].context_length: context_length must be an integer"),
    (
        hub(model(max_concurrency="x")),
        "models[0].max_concurrency: max_concurrency must be an integer",
    ),
    (
        hub(model(queue_timeout=-1)),
        "models[0].queue_timeout: queue_timeout must be a positive integer",
    ),
    (hub(model(queue_size=2**40)), "models[0].queue_size: queue_size must be at most 2147483647"),
    (hub(model(quantize=False)), "models[0].quantize: quantize must be an integer"),
    (hub(model(config_name="")), "models[0].config_name: config_name must be a non-empty string"),
    (
        hub(model(lora_paths=5)),
        "models[0].lora_paths: lora_paths must be a list of paths or a comma-separated string",
    ),
    (
        hub(model(lora_paths=["a", ""])),
        "models[0].lora_paths: lora_paths must be a list of paths or a comma-separated string",
    ),
    (
        hub(model(lora_paths="a,,b")),
        "models[0].lora_paths: lora_paths must be a list of paths or a comma-separated string",
    ),
    (
        hub(model(lora_paths=["a,b"])),
        "models[0].lora_paths: lora_paths entries cannot contain ',': the worker splits on commas",
    ),
    (
        hub(model(lora_paths="a", lora_paths_str="b")),
        "models[0].lora_paths_str: Both 'lora_paths' and 'lora_paths_str' are set;"
        " they are the same key, keep one",
    ),
    (
        hub(model(lora_paths="a", lora_scales="x")),
        "models[0].lora_scales: lora_scales must be a list of numbers or a comma-separated string",
    ),
    (
        hub(model(lora_paths="a", lora_scales_str={"a": 1})),
        "models[0].lora_scales_str: lora_scales_str must be a list of numbers"
        " or a comma-separated string",
    ),
    (
        hub(model(lora_paths=["a"], lora_scales=[1, 2])),
        "models[0].lora_scales: lora_scales must have one value per entry in lora_paths",
    ),
    (
        hub(model(lora_scales_str="1")),
        "models[0].lora_scales_str: lora_scales_str must have one value per entry in lora_paths",
    ),
    (
        hub(model(tool_call_parser=5)),
        "models[0].tool_call_parser: tool_call_parser must be a non-empty string",
    ),
    (
        hub(model(reasoning_parser=[])),
        "models[0].reasoning_parser: reasoning_parser must be a non-empty string",
    ),
    (hub(model(worker_command=[])), "models[0].worker_command: worker_command must not be empty"),
    (
        hub(model(extra_args={"a": 1})),
        "models[0].extra_args: extra_args must be a string or a list of strings",
    ),
    (
        hub(model(extra_args=["--x", None])),
        "models[0].extra_args[1]: extra_args entries must be non-empty strings",
    ),
    (
        hub(model(extra_args=["--x", True])),
        "models[0].extra_args[1]: extra_args entries must be non-empty strings",
    ),
    (
        hub(model(extra_args=["--port", "1"])),
        "models[0].extra_args: extra_args must not contain --port: the hub sets it itself",
    ),
    (
        hub(model(extra_args="--port=1")),
        "models[0].extra_args: extra_args must not contain --port: the hub sets it itself",
    ),
    (
        hub(model(extra_args=["--jit"])),
        "models[0].extra_args: extra_args must not contain --jit: the hub manages loading and "
        "idle unload (jit_enabled, auto_unload_minutes, warm_standby)",
    ),
    (
        hub(model(extra_args=["--auto-unload-minutes=5"])),
        "models[0].extra_args: extra_args must not contain --auto-unload-minutes: the hub "
        "manages loading and idle unload (jit_enabled, auto_unload_minutes, warm_standby)",
    ),
    (hub(model(env="x")), "models[0].env: env must be a mapping of variable names to values"),
    (hub(model(env=["A=1"])), "models[0].env: env must be a mapping of variable names to values"),
    (
        hub(model(env={"A": {"b": 1}})),
        "models[0].env.A: env values must be strings, numbers or booleans",
    ),
    (
        hub(model(env={"A": None})),
        "models[0].env.A: env values must be strings, numbers or booleans",
    ),
    (
        hub(model(env={"A=B": "1"})),
        "models[0].env.A=B: env variable names must be non-empty strings without '='",
    ),
    (
        hub(model(env={1: "x"})),
        "models[0].env.1: env variable names must be non-empty strings without '='",
    ),
    (
        hub(model(startup_timeout=0)),
        "models[0].startup_timeout: startup_timeout must be a positive number",
    ),
    (
        hub(model(request_timeout="nan")),
        "models[0].request_timeout: request_timeout must be a positive number",
    ),
    (
        hub(model(request_timeout=[1])),
        "models[0].request_timeout: request_timeout must be a positive number",
    ),
    (
        hub(model(jit_enable=True)),
        "models[0].jit_enable: Unknown key 'jit_enable' (did you mean 'jit_enabled'?)",
    ),
    (
        hub(model(lora_path="a")),
        "models[0].lora_path: Unknown key 'lora_path' (did you mean 'lora_paths'?)",
    ),
    (hub(model(zzzz=1)), "models[0].zzzz: Unknown key 'zzzz'"),
    (hub(model(), model(name="A")), "models[1].name: Duplicate model name 'A' detected"),
    (
        hub(model(), model(name="a", model_path="n")),
        "models[1].name: Duplicate model name 'a' detected",
    ),
]


@pytest.mark.parametrize(("document", "message"), ERRORS)
def test_errors(document: Any, message: str) -> None:
    assert load_error(document) == f"{SOURCE}: {message}"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"^Hub config file not found: .*nope\.yaml$"):
        load_config(path)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^Failed to read hub config '"):
        load_config(tmp_path)  # a directory


@pytest.mark.parametrize(
    "text",
    [
        "models: [",
        "a: b: c",
        "port: " + "9" * 5000,  # too many digits for int()
        "[" * 5000,  # nesting deeper than the parser's recursion
        "? [a, b]\n: c",  # unhashable key
    ],
)
def test_parse_errors(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, SOURCE)
    assert str(caught.value).startswith(f"Failed to parse hub config '{SOURCE}': ")


def test_parse_error_names_file_and_line() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text("models:\n  - name: a\n    model_path: [m\n", SOURCE)
    assert f'in "{SOURCE}", line 3' in str(caught.value)


@pytest.mark.parametrize(
    ("text", "key", "lines"),
    [
        ("port: 8000\nhost: 127.0.0.1\nport: 9000\n", "'port'", (1, 3)),
        ("models:\n  - name: a\n    model_path: m\n    name: b\n", "'name'", (2, 4)),
        ("groups:\n  - {name: g, max_loaded: 1, max_loaded: 2}\n", "'max_loaded'", (2, 2)),
    ],
)
def test_a_key_given_twice_is_an_error(text: str, key: str, lines: tuple[int, int]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, SOURCE)
    message = str(caught.value)
    first, second = lines
    assert message.startswith(f"Failed to parse hub config '{SOURCE}': ")
    assert f"found duplicate key {key} (first given on line {first})" in message
    assert f'in "{SOURCE}", line {second}' in message


def test_merge_keys_may_be_overridden() -> None:
    text = (
        "models:\n"
        "  - &base {name: a, model_path: m, model_type: embeddings, jit_enabled: true}\n"
        "  - <<: *base\n"
        "    name: b\n"
        "    jit_enabled: false\n"
    )
    first, second = load_config_text(text, SOURCE).models
    assert (first.name, first.jit_enabled) == ("a", True)
    assert (second.name, second.model_type, second.jit_enabled) == ("b", "embeddings", False)


def test_load_config_reads_a_file_without_side_effects(tmp_path: Path) -> None:
    path = tmp_path / "hub.yaml"
    # With a byte-order mark, as some editors save it.
    path.write_text("\ufefflog_path: logs\nmodels: [{name: a, model_path: m}]\n", encoding="utf-8")
    config = load_config(path)
    assert config.source_path == path
    assert config.log_path == tmp_path / "logs"
    assert config.token_path == tmp_path / "hub.token"
    assert not config.log_path.exists()  # loading creates nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub.yaml"]


def test_load_config_makes_the_path_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "hub.yaml").write_text("models: [{name: a, model_path: m}]\n")
    monkeypatch.chdir(tmp_path)
    assert load_config("hub.yaml").source_path == tmp_path / "hub.yaml"


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text("")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: models: Hub config must include at least one model entry"


def test_the_documented_example_loads(tmp_path: Path) -> None:
    docs = Path(__file__).parents[2] / "docs" / "configuration.md"
    section = docs.read_text().split("## A complete example", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "hub.yaml"
    path.write_text(example)
    names = [m.name for m in load_config(path).models]
    assert names == ["qwen3-4b", "llama-70b", "qwen3-32b", "embed", "flux"]


def test_public_key_lists() -> None:
    assert TOP_LEVEL_KEYS[-2:] == ("groups", "models")
    assert GROUP_KEYS == ("name", "max_loaded")
    assert MODEL_KEY_ALIASES == {
        "is_default_model": "default",
        "lora_paths_str": "lora_paths",
        "lora_scales_str": "lora_scales",
    }
    # Every model key is a ModelConfig field and vice versa (but the derived warnings).
    assert set(MODEL_KEYS) == {field.name for field in attrs.fields(ModelConfig)} - {"warnings"}


# --- Robustness -------------------------------------------------------------

_AWKWARD = [
    "",
    " ",
    "0",
    "-1",
    "8000",
    "1e999",
    "nan",
    "false",
    "yes",
    "lm",
    "DEBUG",
    "a,b",
    "0.5,x",
    "--port",
    "--jit",
    "~/x",
    "a b",
    "'",
    "g1",
    "a=b",
    "x\0y",
    "qwen3.5",
]
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=10),
    st.sampled_from(_AWKWARD),
)
_KNOWN = sorted({*TOP_LEVEL_KEYS, *GROUP_KEYS, *MODEL_KEYS, *MODEL_KEY_ALIASES})
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(_KNOWN) | st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
# A valid value or two per key, so that documents often get past the first key
# and reach the later checks (ports, groups, duplicates, auto-unload).
_PLAUSIBLE: dict[str, list[Any]] = {
    "host": ["127.0.0.1", "0.0.0.0"],
    "port": [8001, "5000", 5001],
    "model_starting_port": [50000],
    "log_level": ["debug", "ERROR"],
    "log_path": ["logs", "~/l"],
    "enable_status_page": [False],
    "worker_command": ["w --x", ["w"]],
    "api_keys": [["k"]],
    "allowed_hosts": [["studio.lan"]],
    "shutdown_grace": [0, 1.5],
    "max_loaded": [1, "2"],
    "model_type": ["lm", "whisper"],
    "group": ["g1", "g2", ""],
    "default": [True],
    "is_default_model": [False],
    "log_file": ["x.log"],
    "no_log_file": [True],
    "jit_enabled": [True],
    "auto_unload_minutes": [0.5, 3],
    "context_length": [4096],
    "max_concurrency": [1],
    "queue_timeout": [5],
    "queue_size": [10],
    "quantize": [4],
    "config_name": ["flux-dev"],
    "lora_paths": [["a"], "a,b"],
    "lora_paths_str": ["a"],
    "lora_scales": [[1.0], "0.5"],
    "lora_scales_str": ["1"],
    "disable_auto_resize": [True],
    "enable_auto_tool_choice": [True],
    "trust_remote_code": [True],
    "tool_call_parser": ["qwen3"],
    "reasoning_parser": ["qwen3"],
    "extra_args": [["--max-tokens", 5], "--a b"],
    "env": [{"A": 1}],
    "startup_timeout": [5],
    "request_timeout": [5.5],
    "memory_budget": ["75%", "48GB", 1024],
    "metrics_public": [True, False],
    "memory_safety_margin": [0, "1GB"],
    "memory": ["12GB", 800],
    "revision": ["main", "a1b2c3d"],
    "warm_standby": [True, False],
}


def _mostly(
    good: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any] = _VALUES
) -> st.SearchStrategy[Any]:
    """`good` four times in five, else `hostile`."""
    return st.integers(0, 4).flatmap(lambda n: hostile if n == 0 else good)


Strategies = dict[str, st.SearchStrategy[Any]]


def _some_of(
    keys: list[str], fixed: Strategies, optional: Strategies | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    """Mappings with `fixed`, maybe `optional`, and a few of `keys`, each set to a
    plausible or a hostile value."""

    def mappings(chosen: list[str]) -> st.SearchStrategy[dict[str, Any]]:
        chosen_values: Strategies = {k: _mostly(st.sampled_from(_PLAUSIBLE[k])) for k in chosen}
        return st.fixed_dictionaries({**fixed, **chosen_values}, optional=optional or {})

    return st.lists(st.sampled_from(keys), max_size=4, unique=True).flatmap(mappings)


_GROUP_ENTRY = _mostly(_some_of(["max_loaded"], {"name": st.sampled_from(["g1", "g2", "G1"])}))
_MODEL_ENTRY = _mostly(
    _some_of(
        [k for k in (*MODEL_KEYS, *MODEL_KEY_ALIASES) if k not in ("name", "model_path")],
        {"name": st.sampled_from(["a", "b", "A"]), "model_path": st.just("m")},
    )
)
_DOCUMENTS = _mostly(
    _some_of(
        [k for k in TOP_LEVEL_KEYS if k not in ("groups", "models")],
        {"models": _mostly(st.lists(_MODEL_ENTRY, min_size=1, max_size=3))},
        {"groups": _mostly(st.lists(_GROUP_ENTRY, max_size=3))},
    )
)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(_DOCUMENTS)
def test_any_document_gives_a_config_or_a_config_error(document: Any) -> None:
    try:
        config = load(document)
    except ConfigError as exc:
        assert str(exc).startswith(f"{SOURCE}: ")
        return
    names = [m.name.casefold() for m in config.models]
    assert len(set(names)) == len(names) > 0
    assert 1 <= config.port <= 65535
    for entry in config.models:
        assert entry.log_level in LOG_LEVELS
        assert entry.port is None or 1024 <= entry.port <= 65535
        assert entry.auto_unload_minutes is None or entry.jit_enabled
        assert all(isinstance(v, str) for v in entry.env.values())


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_any_text_gives_a_config_or_a_config_error(text: str) -> None:
    with contextlib.suppress(ConfigError):
        load_config_text(text, SOURCE)


def test_per_model_enable_status_page_is_accepted_with_a_warning(tmp_path: Path):
    text = (
        "models:\n  - {name: a, model_path: /m, enable_status_page: false}\n"
        "  - {name: b, model_path: /n}\n"
    )
    config = load_config_text(text, tmp_path / "hub.yaml")
    a, b = config.models
    (warning,) = a.warnings
    assert "models[0].enable_status_page" in warning and "no effect per model" in warning
    assert b.warnings == () and config.enable_status_page is True
    assert "warnings" not in a.worker_identity()  # a warning alone never restarts a worker
