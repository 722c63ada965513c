"""The starter hub.yaml: it loads, lists every key, and its defaults are the real ones."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlx_openai_server_hub.config import (
    GROUP_KEYS,
    MODEL_KEY_ALIASES,
    MODEL_KEYS,
    TOP_LEVEL_KEYS,
    ConfigError,
    HubConfig,
    load_config,
    load_config_text,
)
from mlx_openai_server_hub.starter_config import SAMPLE_MODEL_PATH, render_starter_config

SOURCE = Path("/cfg/hub.yaml")
STARTER = render_starter_config()
# "# key: value  # comment", indented or not; inside the commented-out groups
# block also "#   - key:" and "#     key:".
OPTIONAL_LINE = re.compile(r"^(\s*)# (\s*(?:- )?)([a-z_]+):(?=\s|$)")
GROUPS_BLOCK = ("groups", "name", "max_loaded")
KEYS = {*TOP_LEVEL_KEYS, *GROUP_KEYS, *MODEL_KEYS}


def load(text: str) -> HubConfig:
    return load_config_text(text, SOURCE)


def uncomment(text: str, line_number: int) -> str:
    lines = text.splitlines()
    lines[line_number] = OPTIONAL_LINE.sub(r"\1\2\3:", lines[line_number])
    return "\n".join(lines)


def optional_lines(text: str) -> list[tuple[int, str, str]]:
    """(line number, key, line) of each commented-out key."""
    found = []
    for number, line in enumerate(text.splitlines()):
        match = OPTIONAL_LINE.match(line)
        if match and match.group(3) in KEYS:
            found.append((number, match.group(3), line))
    return found


def test_without_arguments() -> None:
    config = load(STARTER)
    assert config == load("models: [{name: qwen3-4b-4bit, model_path: " + SAMPLE_MODEL_PATH + "}]")
    assert config.models[0].default is False
    assert config.worker_command is None


def test_with_a_model_and_a_worker_command(tmp_path: Path) -> None:
    text = render_starter_config(
        "/Users/me/My Models/Llama-3.2-1B-Instruct-4bit/",
        ["/opt/worker venv/bin/mlx-openai-server", "--flag"],
    )
    path = tmp_path / "hub.yaml"
    path.write_text(text)
    config = load_config(path)  # as `init --demo` then reads it
    (only,) = config.models
    assert only.name == "llama-3-2-1b-instruct-4bit"
    assert only.model_path == "/Users/me/My Models/Llama-3.2-1B-Instruct-4bit/"
    assert only.default is True
    expected_command = ("/opt/worker venv/bin/mlx-openai-server", "--flag")
    assert config.worker_command == only.worker_command == expected_command


@pytest.mark.parametrize(
    ("model_path", "name"),
    [
        ("mlx-community/Qwen3-4B-4bit", "qwen3-4b-4bit"),
        ('C:\\models\\we"ird: #1', "we-ird-1"),
        ("/models/模型", "model"),
        ("yes", "yes"),  # YAML would read both unquoted as non-strings
        ("123", "123"),
        ("a\u2028b", "a-b"),
    ],
)
def test_awkward_model_paths_round_trip(model_path: str, name: str) -> None:
    (only,) = load(render_starter_config(model_path)).models
    assert (only.model_path, only.name) == (model_path, name)


def test_every_key_is_listed() -> None:
    listed = {key for _, key, _ in optional_lines(STARTER)}
    listed |= set(re.findall(r"^\s*(?:- )?([a-z_]+):", STARTER, re.MULTILINE))
    assert listed >= KEYS
    for alias in MODEL_KEY_ALIASES:
        assert alias in STARTER


def test_every_optional_line_has_a_comment() -> None:
    for _, key, line in optional_lines(STARTER):
        if key == "groups":
            continue  # the block's header
        assert re.search(r"\S\s+# \S", line.split(f"{key}:", 1)[1]), line


def test_shown_defaults_are_the_real_defaults() -> None:
    # A line whose comment does not say "e.g." shows the default: setting it
    # changes nothing.
    baseline = load(STARTER)
    checked = 0
    for number, key, line in optional_lines(STARTER):
        if "e.g." not in line and key not in GROUPS_BLOCK:
            assert load(uncomment(STARTER, number)) == baseline, line
            checked += 1
    assert checked >= 18


# Examples that need another key set too.
NEEDS_ANOTHER_KEY = {"auto_unload_minutes": "jit_enabled", "lora_scales": "lora_paths"}


def test_examples_load() -> None:
    for number, key, _ in optional_lines(STARTER):
        if key in GROUPS_BLOCK:
            continue  # see test_groups_block_loads
        text = uncomment(STARTER, number)
        if key in NEEDS_ANOTHER_KEY:
            with pytest.raises(ConfigError):
                load(text)
            other = next(n for n, k, _ in optional_lines(text) if k == NEEDS_ANOTHER_KEY[key])
            text = uncomment(text, other).replace("jit_enabled: false", "jit_enabled: true")
        load(text)


def test_groups_block_loads() -> None:
    text = STARTER
    for number, key, _ in optional_lines(STARTER):
        if key in (*GROUPS_BLOCK, "group"):
            text = uncomment(text, number)
    config = load(text)
    assert [(g.name, g.max_loaded) for g in config.groups] == [("large", 1)]
    assert config.models[0].group == "large"
