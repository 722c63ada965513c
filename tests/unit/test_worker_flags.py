"""Reading a worker's `launch --help` and building its command line, on both worker lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest

from mlx_openai_server_hub.config import ModelConfig
from mlx_openai_server_hub.worker_flags import LaunchOptions, build_launch_args, parse_launch_help

FIXTURES = Path(__file__).parent.parent / "fixtures"
PYPI = parse_launch_help((FIXTURES / "worker-pypi-1.8.1-launch-help.txt").read_text())
JIT_BRANCH = parse_launch_help((FIXTURES / "worker-jit-branch-1.3.12-launch-help.txt").read_text())

MODEL_TYPES = ("lm", "multimodal", "image-generation", "image-edit", "embeddings", "whisper")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
SHARED_FLAGS = {
    "--model-path",
    "--model-type",
    "--context-length",
    "--port",
    "--host",
    "--queue-timeout",
    "--queue-size",
    "--quantize",
    "--config-name",
    "--lora-paths",
    "--lora-scales",
    "--disable-auto-resize",
    "--log-file",
    "--no-log-file",
    "--log-level",
    "--enable-auto-tool-choice",
    "--tool-call-parser",
    "--reasoning-parser",
    "--trust-remote-code",
    "--help",
}

# Every option set, with values both worker lines accept where they can.
FULL = ModelConfig(
    name="full",
    model_path="/models/flux",
    model_type="image-generation",
    log_level="DEBUG",
    jit_enabled=True,
    auto_unload_minutes=5,
    context_length=8192,
    max_concurrency=2,
    queue_timeout=120,
    queue_size=50,
    quantize=4,
    config_name="flux-dev",
    lora_paths=("/l/a.safetensors", "/l/b.safetensors"),
    lora_scales=(0.5, 1.0),
    disable_auto_resize=True,
    enable_auto_tool_choice=True,
    trust_remote_code=True,
    tool_call_parser="qwen3",
    reasoning_parser="harmony",
    extra_args=("--max-tokens", "512"),
)


def test_parse_pypi_1_8_1() -> None:
    assert len(PYPI.flags) == 47
    assert PYPI.flags > SHARED_FLAGS | {
        "--served-model-name",
        "--config",
        "--max-tokens",
        "--repetition-context-size",
    }
    assert not {"--jit", "--auto-unload-minutes", "--max-concurrency"} & PYPI.flags
    assert PYPI.choices == {
        "--model-type": MODEL_TYPES,
        "--log-level": LOG_LEVELS,
        "--tool-call-parser": (
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
        ),
        "--reasoning-parser": (
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
        ),
    }


def test_parse_jit_branch_1_3_12() -> None:
    parsers = ("qwen3", "glm4_moe", "qwen3_moe", "qwen3_next", "qwen3_vl", "harmony", "minimax")
    assert JIT_BRANCH.flags == SHARED_FLAGS | {
        "--max-concurrency",
        "--jit",
        "--auto-unload-minutes",  # "INTEGER RANGE" metavar, help on the next line
    }
    assert JIT_BRANCH.choices == {
        "--model-type": MODEL_TYPES,
        "--config-name": ("flux-schnell", "flux-dev", "flux-krea-dev", "flux-kontext-dev"),
        "--log-level": LOG_LEVELS,
        "--tool-call-parser": (*parsers, "hermes"),
        "--reasoning-parser": (*parsers, "hermes"),
    }


def test_parse_other_click_shapes() -> None:
    help_text = (
        "Usage: x launch [OPTIONS]\n"
        "\n"
        "  --not-an-option in the description\n"
        "\n"
        "Options:\n"
        "  -p, --port INTEGER  Port\n"
        "  --color / --no-color  Colour output\n"
        "  --mode [a|b]        Mode. A wrapped line follows:\n"
        "                      --looks-like-a-flag but is help text\n"
        "  -h, --help          Show this message and exit.\n"
    )
    options = parse_launch_help(help_text)
    assert options.flags == {"-p", "--port", "--color", "--no-color", "--mode", "-h", "--help"}
    assert options.choices == {"--mode": ("a", "b")}


def test_parse_text_without_options() -> None:
    assert parse_launch_help("command not found") == LaunchOptions()


def test_full_model_on_the_jit_branch() -> None:
    argv, warnings = build_launch_args(FULL, "127.0.0.1", 47850, JIT_BRANCH)
    assert argv == [
        "launch",
        "--model-path", "/models/flux",
        "--model-type", "image-generation",
        "--host", "127.0.0.1",
        "--port", "47850",
        "--log-level", "DEBUG",
        "--no-log-file",
        "--context-length", "8192",
        "--max-concurrency", "2",
        "--queue-timeout", "120",
        "--queue-size", "50",
        "--quantize", "4",
        "--config-name", "flux-dev",
        "--lora-paths", "/l/a.safetensors,/l/b.safetensors",
        "--lora-scales", "0.5,1.0",
        "--disable-auto-resize",
        "--enable-auto-tool-choice",
        "--trust-remote-code",
        "--tool-call-parser", "qwen3",
        "--reasoning-parser", "harmony",
        "--max-tokens", "512",
    ]  # fmt: skip
    assert warnings == []


def test_full_model_on_pypi() -> None:
    argv, warnings = build_launch_args(FULL, "0.0.0.0", 5000, PYPI)
    assert argv == [
        "launch",
        "--model-path", "/models/flux",
        "--model-type", "image-generation",
        "--host", "0.0.0.0",
        "--port", "5000",
        "--log-level", "DEBUG",
        "--no-log-file",
        "--context-length", "8192",
        "--queue-timeout", "120",
        "--queue-size", "50",
        "--quantize", "4",
        "--config-name", "flux-dev",  # free text on 1.8.1
        "--lora-paths", "/l/a.safetensors,/l/b.safetensors",
        "--lora-scales", "0.5,1.0",
        "--disable-auto-resize",
        "--enable-auto-tool-choice",
        "--trust-remote-code",
        "--tool-call-parser", "qwen3",
        "--reasoning-parser", "harmony",
        "--max-tokens", "512",
    ]  # fmt: skip
    assert warnings == [
        "Model 'full': max_concurrency is not supported by this worker's launch command; ignored"
    ]


def test_minimal_model() -> None:
    minimal = ModelConfig(name="m", model_path="org/repo")
    for options in (PYPI, JIT_BRANCH):
        argv, warnings = build_launch_args(minimal, "127.0.0.1", 47851, options)
        assert argv == [
            "launch",
            "--model-path", "org/repo",
            "--model-type", "lm",
            "--host", "127.0.0.1",
            "--port", "47851",
            "--log-level", "INFO",
            "--no-log-file",
            "--queue-timeout", "300",  # always configured
        ]  # fmt: skip
        assert warnings == []


@pytest.mark.parametrize(
    ("options", "field", "value", "allowed"),
    [
        (PYPI, "tool_call_parser", "qwen3_next", "functiongemma, gemma4, glm4_moe"),
        (JIT_BRANCH, "tool_call_parser", "qwen3_coder", "qwen3, glm4_moe, qwen3_moe"),
        (JIT_BRANCH, "reasoning_parser", "step_35", "qwen3, glm4_moe, qwen3_moe"),
        (JIT_BRANCH, "config_name", "my-flux", "flux-schnell, flux-dev, flux-krea-dev"),
    ],
)
def test_values_outside_the_choices_are_left_out(
    options: LaunchOptions, field: str, value: str, allowed: str
) -> None:
    changes: dict[str, Any] = {field: value}
    model = attrs.evolve(ModelConfig(name="x", model_path="m"), **changes)
    argv, warnings = build_launch_args(model, "127.0.0.1", 5000, options)
    flag = "--" + field.replace("_", "-")
    assert flag not in argv
    assert value not in argv
    assert len(warnings) == 1
    assert warnings[0].startswith(
        f"Model 'x': {field} '{value}' is not accepted by this worker (choose from {allowed}"
    )
    assert warnings[0].endswith("); ignored")


@pytest.mark.parametrize("options", [PYPI, JIT_BRANCH], ids=["1.8.1", "1.3.12"])
def test_never_jit_or_auto_unload(options: LaunchOptions) -> None:
    # Loading on demand is the hub's job, even when the worker could do it.
    model = ModelConfig(name="j", model_path="m", jit_enabled=True, auto_unload_minutes=1)
    argv, warnings = build_launch_args(model, "127.0.0.1", 5000, options)
    assert "--jit" not in argv
    assert "--auto-unload-minutes" not in argv
    assert warnings == []


def test_worker_that_lists_nothing() -> None:
    # An unreadable --help: the essentials and extra_args still go through.
    model = ModelConfig(name="x", model_path="m", context_length=4, extra_args=("--a",))
    argv, warnings = build_launch_args(model, "h", 1, LaunchOptions())
    assert argv == [
        "launch", "--model-path", "m", "--model-type", "lm", "--host", "h", "--port", "1", "--a"
    ]  # fmt: skip
    assert warnings == [
        f"Model 'x': {field} is not supported by this worker's launch command; ignored"
        for field in ("context_length", "queue_timeout")
    ]


def test_extra_args_come_last_verbatim() -> None:
    model = ModelConfig(name="x", model_path="m", extra_args=("--temperature", "0.2", "--debug"))
    argv, _ = build_launch_args(model, "127.0.0.1", 5000, PYPI)
    assert argv[-3:] == ["--temperature", "0.2", "--debug"]
