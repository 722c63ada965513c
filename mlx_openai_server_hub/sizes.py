"""Memory sizes as people write them in hub.yaml ("12GB", "800MB", "75%") and as the hub shows them.

Units are binary, as memory is sold and as Activity Monitor shows it: "16GB"
and "16GiB" are both 16 × 2**30 bytes (a "16 GB" Mac has 2**34 bytes).
"""

from __future__ import annotations

import math
import re

import attrs

_UNITS = {
    "": 1,
    "b": 1,
    "k": 2**10,
    "kb": 2**10,
    "kib": 2**10,
    "m": 2**20,
    "mb": 2**20,
    "mib": 2**20,
    "g": 2**30,
    "gb": 2**30,
    "gib": 2**30,
    "t": 2**40,
    "tb": 2**40,
    "tib": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-zA-Z]*)\s*$")
_SHARE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
# Far beyond any machine: a bigger figure is a typo, and floats lose bytes past 2**53.
MAX_SIZE = 2**50


def parse_size(value: object, label: str, *, allow_zero: bool = False) -> int:
    """Bytes from "12GB", "800MB", "1.5GiB" or a whole number of bytes.

    Raises ValueError whose message starts with `label` (the key's name).
    """
    hint = f'{label} must be a size such as "12GB", "800MB" or a number of bytes'
    if isinstance(value, bool):  # YAML `true` is an int to Python, never a size
        raise ValueError(hint)
    if isinstance(value, int):
        number: float = value
    elif isinstance(value, float) and value.is_integer():
        number = value
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        unit = _UNITS.get(match.group(2).lower())
        if unit is None:
            raise ValueError(f"{hint} (unknown unit {match.group(2)!r})")
        number = float(match.group(1)) * unit
    else:
        raise ValueError(hint)
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        raise ValueError(f"{label} must be {'zero or more' if allow_zero else 'more than zero'}")
    if number > MAX_SIZE:
        raise ValueError(f"{label} must be at most {format_size(MAX_SIZE)}")
    return int(number)


@attrs.frozen
class SizeSpec:
    """A size in bytes or a share of physical memory ("75%"), resolved once the machine is known."""

    bytes: int | None = None
    share: float | None = None  # 0 < share <= 1

    def resolve(self, total_bytes: int) -> int:
        """The size in bytes on a machine with `total_bytes` of physical memory."""
        if self.bytes is not None:
            return self.bytes
        return int(total_bytes * (self.share or 0.0))

    def __str__(self) -> str:
        if self.bytes is not None:
            return format_size(self.bytes)
        return f"{(self.share or 0.0) * 100:g}%"


def parse_size_or_share(value: object, label: str, *, allow_zero: bool = False) -> SizeSpec:
    """A `SizeSpec` from a size (see `parse_size`) or a share of physical memory "75%"."""
    if isinstance(value, str) and (match := _SHARE.match(value)):
        percent = float(match.group(1))
        low_ok = percent >= 0 if allow_zero else percent > 0
        if not low_ok or percent > 100:
            raise ValueError(
                f"{label} as a share of physical memory must be above 0% and at most 100%"
            )
        return SizeSpec(share=percent / 100)
    try:
        return SizeSpec(bytes=parse_size(value, label, allow_zero=allow_zero))
    except ValueError as exc:
        if "must be a size" in str(exc):
            raise ValueError(f'{exc}, or a share of physical memory such as "75%"') from None
        raise


def format_size(count: int | float | None) -> str:
    """A byte count as a person reads it: "4.2 GB", "800 MB", "512 B" (binary units)."""
    if count is None:
        return "unknown"
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit in ("B", "KB") else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"
