"""The fault knobs: FAKE_* environment variables, per-request ``fake_*`` fields, and the
two faults that end or stall the process (the package docstring lists every knob)."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})

T = TypeVar("T")


class KnobError(Exception):
    """An environment knob has a value that does not parse."""


class BadRequest(Exception):
    """A request the fake answers with 400 and an OpenAI error envelope."""


# --- value converters shared by env knobs and per-request fields ----------------------------


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool | int | float):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _to_count(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"not an integer: {value!r}")
    number = int(value)
    if number < 0:
        raise ValueError(f"negative: {number}")
    return number


def _to_seconds(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"not a duration: {number}")
    return number


def _env(env: Mapping[str, str], name: str, convert: Callable[[str], T], default: T) -> T:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return convert(raw)
    except ValueError:
        raise KnobError(f"invalid {name}={raw!r}") from None


@dataclass(frozen=True)
class Knobs:
    """Fault knobs from the FAKE_* environment variables (see the package docstring)."""

    start_delay: float = 0.0
    exit_at_start: int | None = None
    ignore_sigterm: bool = False
    spawn_child: bool = False
    strict_model: bool = False
    stream_chunks: int = 5
    chunk_delay: float = 0.0
    crash_after_chunks: int | None = None
    hang: bool = False
    response_delay: float = 0.0
    jit_unloaded: bool = False
    hold_mb: int = 0
    load_delay: float = 0.0
    jit_start_delay: float | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Knobs:
        return cls(
            start_delay=_env(env, "FAKE_START_DELAY", _to_seconds, 0.0),
            exit_at_start=_env(env, "FAKE_EXIT_AT_START", int, None),
            ignore_sigterm=_env(env, "FAKE_IGNORE_SIGTERM", _to_bool, False),
            spawn_child=_env(env, "FAKE_SPAWN_CHILD", _to_bool, False),
            strict_model=_env(env, "FAKE_STRICT_MODEL", _to_bool, False),
            stream_chunks=_env(env, "FAKE_STREAM_CHUNKS", _to_count, 5),
            chunk_delay=_env(env, "FAKE_CHUNK_DELAY", _to_seconds, 0.0),
            crash_after_chunks=_env(env, "FAKE_CRASH_AFTER_CHUNKS", _to_count, None),
            hang=_env(env, "FAKE_HANG", _to_bool, False),
            response_delay=_env(env, "FAKE_RESPONSE_DELAY", _to_seconds, 0.0),
            jit_unloaded=_env(env, "FAKE_JIT_UNLOADED", _to_bool, False),
            hold_mb=_env(env, "FAKE_HOLD_MB", _to_count, 0),
            load_delay=_env(env, "FAKE_LOAD_DELAY", _to_seconds, 0.0),
            jit_start_delay=_env(env, "FAKE_JIT_START_DELAY", _to_seconds, None),
        )


@dataclass(frozen=True, slots=True)
class RequestKnobs:
    """The knobs that one request may override with ``fake_*`` body or form fields."""

    chunks: int
    chunk_delay: float
    crash_after: int | None
    hang: bool
    delay: float
    crash: bool = False


_REQUEST_FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "fake_chunks": ("chunks", _to_count),
    "fake_chunk_delay": ("chunk_delay", _to_seconds),
    "fake_crash_after": ("crash_after", _to_count),
    "fake_hang": ("hang", _to_bool),
    "fake_delay": ("delay", _to_seconds),
    "fake_crash": ("crash", _to_bool),
}


def request_knobs(fields: Mapping[str, Any], defaults: RequestKnobs) -> RequestKnobs:
    """Apply a request's ``fake_*`` fields over the defaults; BadRequest if one is invalid."""
    changes: dict[str, Any] = {}
    for name, (attr, convert) in _REQUEST_FIELDS.items():
        raw = fields.get(name)
        if raw is None:
            continue
        try:
            changes[attr] = convert(raw)
        except (TypeError, ValueError):
            raise BadRequest(f"invalid {name}: {raw!r}") from None
    return dataclasses.replace(defaults, **changes) if changes else defaults


_PAGE = 4096


def hold_memory(megabytes: int) -> bytearray:
    """A block of `megabytes` MiB with every page written, so it is resident, not reserved.

    The caller keeps the block alive for as long as the memory should stay held.
    """
    block = bytearray(megabytes * 2**20)
    # bytearray() may map fresh zero pages lazily; a write to each makes it count in RSS/PSS.
    block[::_PAGE] = b"\x01" * len(range(0, len(block), _PAGE))
    return block


def crash(reason: str) -> NoReturn:
    """Die at once, like a worker killed mid-request: no answer, no cleanup, exit code 1."""
    os.write(2, f"fake worker: crashing abruptly ({reason})\n".encode())
    os._exit(1)


async def hang_forever() -> NoReturn:
    """Wait until cancelled (a hung worker, or serving until a signal ends the process)."""
    await asyncio.get_running_loop().create_future()
    raise AssertionError("unreachable")
