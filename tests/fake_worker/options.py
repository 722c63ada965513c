"""The ``launch`` command line, parsed like click would from the flavor's help text."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from typing import Any, NoReturn

from .help_text import HELPS, PROG


class UsageError(Exception):
    """A click-style usage error: printed with the usage header, exit code 2."""


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
    specs = parse_help_options(HELPS[flavor])
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
