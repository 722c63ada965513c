"""How much memory a model will need before it has ever been loaded: its weights on disk.

The worker memory-maps or reads its weight files into unified memory, so the
bytes of those files plus the runtime's own baseline is a fair first guess.
Not downloaded yet, or a download that stopped part-way, is "unknown" (None),
never an error. Everything here reads the disk: call it via asyncio.to_thread.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import attrs

from . import hf_cache

# Python + MLX + the HTTP server with no weights, as measured for the worker
# (the footprint of a `--jit` standby): added so small models are not underrated.
RUNTIME_BASELINE_BYTES = 256 * 2**20
# Formats in order of preference: a repo that ships both .safetensors and
# pytorch .bin files is loaded from the safetensors, so only they count.
WEIGHT_FORMATS: tuple[tuple[str, ...], ...] = (
    (".safetensors",),
    (".npz",),
    (".gguf",),
    (".bin", ".pt", ".pth", ".ckpt"),
)
_INDEX_SUFFIX = ".index.json"
# diffusers repos keep weights in unet/, vae/, text_encoder/ ...; deeper is not a model layout.
_MAX_DEPTH = 3

SnapshotLookup = Callable[[str, str | None], Path | None]


@attrs.frozen
class Estimate:
    """A memory estimate from weight files on disk."""

    bytes: int
    weights_bytes: int
    files: int
    source: Path

    @property
    def label(self) -> str:
        """Where the estimate came from, for status."""
        return f"weights on disk ({self.files} files in {self.source})"


class _Incomplete(Exception):
    """A weight file is missing or a dangling link: the download is not finished."""


def _weight_files(root: Path) -> list[Path]:
    """Weight-like files under `root` (not hidden folders), to `_MAX_DEPTH` levels."""
    found: list[Path] = []
    base_depth = len(root.parts)
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if len(here.parts) - base_depth >= _MAX_DEPTH:
            dirs[:] = []
        found.extend(here / name for name in files if not name.startswith("."))
    return found


def _pick_format(files: list[Path]) -> list[Path]:
    for suffixes in WEIGHT_FORMATS:
        chosen = [f for f in files if f.name.endswith(suffixes)]
        if chosen:
            return chosen
    return []


def _check_indexes(files: list[Path]) -> None:
    """Every shard a `*.index.json` lists is present (else the download is partial)."""
    for index in (f for f in files if f.name.endswith(_INDEX_SUFFIX)):
        try:
            weight_map = json.loads(index.read_text()).get("weight_map", {})
        except (OSError, ValueError, AttributeError):
            raise _Incomplete(str(index)) from None
        for shard in set(weight_map.values()) if isinstance(weight_map, dict) else ():
            if not (index.parent / str(shard)).is_file():
                raise _Incomplete(str(index.parent / str(shard)))


def weights_size(root: Path) -> tuple[int, int] | None:
    """(bytes, file count) of the weights under `root` (a folder or one file), or None.

    Symlinks (the HF cache's snapshots) are followed; a dangling one means the
    download is incomplete, and so does a shard listed in an index but absent.
    """
    if root.is_file():
        return root.stat().st_size, 1
    if not root.is_dir():
        return None
    files = _weight_files(root)
    try:
        _check_indexes(files)
        total = 0
        chosen = _pick_format(files)
        for path in chosen:
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                raise _Incomplete(str(path)) from None
    except _Incomplete:
        return None
    return (total, len(chosen)) if chosen else None


def estimate_memory(
    model_path: str,
    revision: str | None = None,
    lookup: SnapshotLookup = hf_cache.local_snapshot,
) -> Estimate | None:
    """The memory a model will need from its weights on disk, or None when unknown.

    `model_path` is a local folder (or weight file) or a Hugging Face repo id
    looked up in the local cache only (never the network).
    """
    path = Path(model_path).expanduser()
    root = path if path.is_file() else lookup(model_path, revision)
    if root is None:
        return None
    try:
        found = weights_size(root)
    except OSError:
        return None
    if found is None:
        return None
    weights, files = found
    return Estimate(weights + RUNTIME_BASELINE_BYTES, weights, files, root)
