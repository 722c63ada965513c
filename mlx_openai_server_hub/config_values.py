"""hub.yaml's value parsers: one raw YAML value in, its typed value out.

A parser turns a raw YAML value into its typed value, or raises `Invalid`
with a message that starts with `label` (the key, or a phrase such as
"Hub port"). The config loader adds the file and key path, so parsers stay
small and know nothing of where the value sits.
"""

from __future__ import annotations

import math
import os
import re
import shlex
from collections.abc import Callable
from typing import Any

from .sizes import SizeSpec, parse_size, parse_size_or_share

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
    }
)
# Loading on demand and idle unload are the hub's: the worker's own idle timer
# ignores requests in flight.
_HUB_LOADING_FLAGS = frozenset({"--jit", "--auto-unload-minutes"})

Parser = Callable[[Any, str], Any]


class Invalid(Exception):
    """A value failed validation; `at` extends the key path into it ("[2]", ".HOME")."""

    def __init__(self, message: str, at: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.at = at


def as_int(value: Any) -> int | None:
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


def as_number(value: Any) -> int | float | None:
    """`value` as a finite int or float (numeric strings too), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    if isinstance(value, str):
        integer = as_int(value)  # "10" reads as 10, like the YAML literal
        value = value if integer is None else integer
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    if not math.isfinite(number):
        return None
    return value if isinstance(value, int) else number


def boolean(value: Any, label: str) -> bool:
    """true or false."""
    # Strict: the reference took `default: "false"` as true.
    if isinstance(value, bool):
        return value
    raise Invalid(f"{label} must be true or false")


def text(value: Any, label: str) -> str:
    """A non-empty string, stripped."""
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"{label} must be a non-empty string")
    if "\0" in value:  # cannot be passed on a command line or in the environment
        raise Invalid(f"{label} must not contain a NUL character")
    return value.strip()


def user_path(value: Any, label: str) -> str:
    """A path, with "~" expanded."""
    # The worker gets argv without a shell, so it would not expand "~" itself.
    return os.path.expanduser(text(value, label))


def int_between(low: int, high: int) -> Parser:
    """A parser of integers from `low` to `high`."""

    def parse(value: Any, label: str) -> int:
        number = as_int(value)
        if number is None:
            raise Invalid(f"{label} must be an integer")
        if not low <= number <= high:
            raise Invalid(f"{label} must be between {low} and {high}")
        return number

    return parse


def positive_int(qualifier: str = "") -> Parser:
    """A parser of integers from 1 to 2**31 - 1."""

    def parse(value: Any, label: str) -> int:
        number = as_int(value)
        if number is None:
            raise Invalid(f"{label} must be an integer")
        if number < 1:
            raise Invalid(f"{label} must be a positive integer{qualifier}")
        if number > _MAX_INT:
            raise Invalid(f"{label} must be at most {_MAX_INT}")
        return number

    return parse


def positive_number(value: Any, label: str) -> int | float:
    """A finite number above zero."""
    number = as_number(value)
    if number is None or number <= 0:
        raise Invalid(f"{label} must be a positive number")
    return number


def non_negative_number(value: Any, label: str) -> int | float:
    """A finite number, zero or above."""
    number = as_number(value)
    if number is None or number < 0:
        raise Invalid(f"{label} must be a non-negative number")
    return number


def one_of(choices: tuple[str, ...], *, fold_case: bool = False) -> Parser:
    """A parser of one of `choices` (upper-cased first if `fold_case`)."""

    def parse(value: Any, label: str) -> str:
        if isinstance(value, str):
            stripped = value.strip().upper() if fold_case else value.strip()
            if stripped in choices:
                return stripped
        raise Invalid(f"{label} must be one of {', '.join(choices)}")

    return parse


def slug(value: Any, label: str) -> str:
    """A name: alphanumeric with hyphen/underscore separators."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # `name: 123` is a fine name, as in the reference
    if isinstance(value, str):
        stripped = value.strip()
        if not stripped:
            raise Invalid(f"{label} cannot be empty")
        if _SLUG.fullmatch(stripped):
            return stripped
    raise Invalid(f"{label} must be alphanumeric with optional hyphen/underscore separators")


def group_ref(value: Any, label: str) -> str | None:
    """A group name, or None for an empty string."""
    # The reference treats `group: ''` as no group.
    return None if value == "" else slug(value, label)


def _argv(value: Any, label: str, *, numbers: bool = False) -> tuple[str, ...]:
    """A command-line fragment: a string split like a shell would, or a list."""
    if isinstance(value, str):
        try:
            items: list[Any] = shlex.split(value)
        except ValueError as exc:
            raise Invalid(f"{label} is not a valid command line: {exc}") from None
    elif isinstance(value, list):
        items = value
    else:
        raise Invalid(f"{label} must be a string or a list of strings")
    args = []
    for index, item in enumerate(items):
        if numbers and isinstance(item, int | float) and not isinstance(item, bool):
            item = str(item)  # `[--max-tokens, 512]`: YAML made 512 an int
        if not isinstance(item, str) or not item or "\0" in item:
            at = f"[{index}]" if isinstance(value, list) else ""
            raise Invalid(f"{label} entries must be non-empty strings", at)
        args.append(item)
    return tuple(args)


def command(value: Any, label: str) -> tuple[str, ...]:
    """A program and its arguments, the program with "~" expanded."""
    argv = _argv(value, label)
    if not argv:
        raise Invalid(f"{label} must not be empty")
    # Started without a shell, a program under "~" would not be found.
    return (os.path.expanduser(argv[0]), *argv[1:])


def extra_args(value: Any, label: str) -> tuple[str, ...]:
    """Worker arguments, none of them an option the hub sets itself."""
    args = _argv(value, label, numbers=True)
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag in _HUB_MANAGED_FLAGS:
            raise Invalid(f"{label} must not contain {flag}: the hub sets it itself")
        if flag in _HUB_LOADING_FLAGS:
            raise Invalid(
                f"{label} must not contain {flag}: the hub manages loading and idle unload "
                "(jit_enabled, auto_unload_minutes, warm_standby)"
            )
    return args


def strings(value: Any, label: str) -> tuple[str, ...]:
    """A list of non-empty strings, stripped."""
    if not isinstance(value, list):
        raise Invalid(f"{label} must be a list of non-empty strings")
    for index, item in enumerate(value):
        # No number coercion: YAML reads an unquoted 0123 as 83.
        if not isinstance(item, str) or not item.strip():
            raise Invalid(f"{label} must be a list of non-empty strings", f"[{index}]")
    # Stripped: a Bearer token arrives without surrounding spaces.
    return tuple(item.strip() for item in value)


def env(value: Any, label: str) -> dict[str, str]:
    """Environment variables: names to string values."""
    if not isinstance(value, dict):
        raise Invalid(f"{label} must be a mapping of variable names to values")
    env = {}
    for name, item in value.items():
        at = f".{name}"
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            raise Invalid(f"{label} variable names must be non-empty strings without '='", at)
        if isinstance(item, bool):
            env[name] = "true" if item else "false"
        elif isinstance(item, int | float):
            env[name] = str(item)
        elif isinstance(item, str) and "\0" not in item:
            env[name] = item
        else:
            raise Invalid(f"{label} values must be strings, numbers or booleans", at)
    return env


def lora_paths(value: Any, label: str) -> tuple[str, ...]:
    """LoRA adapter paths: a list or a comma-separated string."""
    items = [part.strip() for part in value.split(",")] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise Invalid(f"{label} must be a list of paths or a comma-separated string")
    paths = []
    for item in items:
        if not isinstance(item, str) or not item.strip() or "\0" in item:
            raise Invalid(f"{label} must be a list of paths or a comma-separated string")
        path = os.path.expanduser(item.strip())
        if "," in path:
            raise Invalid(f"{label} entries cannot contain ',': the worker splits on commas")
        paths.append(path)
    return tuple(paths)


def lora_scales(value: Any, label: str) -> tuple[float, ...]:
    """LoRA scales: a list of numbers or a comma-separated string."""
    items = value.split(",") if isinstance(value, str) else value
    numbers = [as_number(item) for item in items] if isinstance(items, list) else [None]
    if None in numbers:
        raise Invalid(f"{label} must be a list of numbers or a comma-separated string")
    return tuple(float(number) for number in numbers if number is not None)


def size(value: Any, label: str) -> int:
    """A byte size such as `12GB`."""
    try:
        return parse_size(value, label)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def size_or_share(*, allow_zero: bool = False) -> Parser:
    """A parser of a byte size or a share of memory such as `75%`."""

    def parse(value: Any, label: str) -> SizeSpec:
        try:
            return parse_size_or_share(value, label, allow_zero=allow_zero)
        except ValueError as exc:
            raise Invalid(str(exc)) from None

    return parse
