"""From a ModelConfig to the worker's `launch` command line.

Two worker lines exist with different `launch` options (PyPI 1.8.x has no
`--max-concurrency`; the JIT branch 1.3.12 has it, and narrower parser
choices), so the hub reads the installed worker's `launch --help` and only
passes what it accepts. Pure functions: running `--help` is the caller's job.
"""

from __future__ import annotations

import re

import attrs

from .config import ModelConfig

# Click indents option rows by two spaces and their wrapped help much deeper.
_OPTION_ROW = re.compile(r"^ {1,8}(-\S.*)$")
# The declaration ends where click pads the gap before the help text.
_HELP_GAP = re.compile(r"\s{2,}")

# Worker options taken from ModelConfig fields of the same name
# (`context_length` -> `--context-length`), in the order they are passed.
# Never `--auto-unload-minutes`: the worker's idle clock ignores requests in
# flight; the hub's idle timer is the only one. `--jit` only for a warm standby.
_FORWARDED_FIELDS = (
    "context_length",
    "max_concurrency",
    "queue_timeout",
    "queue_size",
    "quantize",
    "config_name",
    "lora_paths",
    "lora_scales",
    "disable_auto_resize",
    "enable_auto_tool_choice",
    "trust_remote_code",
    "tool_call_parser",
    "reasoning_parser",
)


@attrs.frozen
class LaunchOptions:
    """What a worker's `launch` command accepts."""

    # Every option name, e.g. "--model-path" (and short forms such as "-h").
    flags: frozenset[str] = frozenset()
    # Options restricted to fixed values, e.g. "--model-type" -> ("lm", ...).
    choices: dict[str, tuple[str, ...]] = attrs.field(factory=dict)


def parse_launch_help(text: str) -> LaunchOptions:
    """Parse click's `launch --help` output into the options it lists."""
    flags: set[str] = set()
    choices: dict[str, tuple[str, ...]] = {}
    in_options = False
    for line in text.splitlines():
        if not in_options:
            in_options = line.strip() == "Options:"
            continue
        row = _OPTION_ROW.match(line)
        if row is None:
            continue
        declaration = _HELP_GAP.split(row.group(1), maxsplit=1)[0]
        names, values = _parse_declaration(declaration)
        flags.update(names)
        if values:
            choices.update(dict.fromkeys(names, values))
    return LaunchOptions(frozenset(flags), choices)


def _parse_declaration(declaration: str) -> tuple[list[str], tuple[str, ...]]:
    """Option names and choices of one row, such as `-h, --help`,
    `--jit / --no-jit` or `--model-type [lm|multimodal]`."""
    names: list[str] = []
    values: tuple[str, ...] = ()
    for token in declaration.split():
        if token.startswith("-"):
            names.append(token.rstrip(","))
        elif token.startswith("[") and token.endswith("]") and "|" in token:
            values = tuple(token[1:-1].split("|"))
    return names, values


JIT_FLAG = "--jit"


def build_launch_args(
    model: ModelConfig, host: str, port: int, options: LaunchOptions, standby: bool = False
) -> tuple[list[str], list[str]]:
    """The worker's argv after its command (from "launch" on), and warnings about
    configured options this worker cannot take (those are left out). A `standby`
    worker starts with `--jit`: imports done, weights loaded on its first request."""
    argv = [
        "launch",
        "--model-path",
        model.model_path,
        "--model-type",
        model.model_type,
        "--host",
        host,
        "--port",
        str(port),
    ]
    if "--log-level" in options.flags:
        argv += ["--log-level", model.log_level]
    if "--no-log-file" in options.flags:
        # The hub writes the worker's output to the model's log itself; the
        # worker would otherwise also write logs/app.log into its cwd.
        argv.append("--no-log-file")
    if standby and JIT_FLAG in options.flags:
        argv.append(JIT_FLAG)
    warnings: list[str] = []
    for field in _FORWARDED_FIELDS:
        value = getattr(model, field)
        if value is None or value is False or value == ():
            continue  # not configured: the worker's own default applies
        flag = "--" + field.replace("_", "-")
        if flag not in options.flags:
            warnings.append(
                f"Model '{model.name}': {field} is not supported by this worker's"
                " launch command; ignored"
            )
        elif value is True:
            argv.append(flag)
        else:
            text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            allowed = options.choices.get(flag)
            if allowed is not None and text not in allowed:
                warnings.append(
                    f"Model '{model.name}': {field} '{text}' is not accepted by this worker"
                    f" (choose from {', '.join(allowed)}); ignored"
                )
            else:
                argv += [flag, text]
    argv += model.extra_args
    return argv, warnings
