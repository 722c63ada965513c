"""Read-only look-ups in the standard Hugging Face cache.

Nothing here touches the network: these answer "is this model on disk, and
where" so the hub can decide whether a download is needed and the memory
estimate can read a snapshot's size. Settings are read from the environment
at call time (not from ``huggingface_hub.constants``, which freezes them at
import) so a test or a config reload that changes ``HF_HUB_CACHE`` is seen.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

# "org/name" as the Hub spells repo ids; a single segment ("gpt2") is also a
# valid legacy id, but a bare word is far more likely a typo'd local path, so
# the hub only treats the two-segment form as a repo id.
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_TRUE = {"1", "on", "yes", "true"}
DEFAULT_REVISION = "main"
_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def hf_env(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment with a model's own `env` on top (what its worker sees)."""
    return {**os.environ, **(overrides or {})}


def hub_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """The Hugging Face hub cache directory, resolved the way huggingface_hub does."""
    env = hf_env(env)
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(var):
            return Path(env[var]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    xdg = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def hub_offline(env: Mapping[str, str] | None = None) -> bool:
    """Whether ``HF_HUB_OFFLINE`` asks for no network access."""
    return hf_env(env).get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def hub_endpoint(env: Mapping[str, str] | None = None) -> str:
    """The Hub endpoint (``HF_ENDPOINT``), without a trailing slash."""
    return (hf_env(env).get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def is_repo_id(model_path: str) -> bool:
    """True when ``model_path`` names a Hub repo rather than a local directory."""
    if not model_path or model_path.startswith(("/", "./", "../", "~", ".\\")):
        return False
    if Path(model_path).expanduser().exists():
        return False
    return bool(_REPO_ID.match(model_path)) and ".." not in model_path and "--" not in model_path


def repo_cache_dir(repo_id: str, cache_dir: Path | None = None) -> Path:
    """The cache folder of a model repo (``models--org--name``)."""
    root = cache_dir if cache_dir is not None else hub_cache_dir()
    return root / ("models--" + repo_id.replace("/", "--"))


def _commit_for(repo_dir: Path, revision: str | None) -> str | None:
    """The commit a revision points to in the cache, or None when unknown."""
    rev = revision or DEFAULT_REVISION
    if _COMMIT.match(rev):
        return rev
    ref = repo_dir / "refs" / rev
    try:
        commit = ref.read_text().strip()
    except OSError:
        return None
    return commit or None


def local_snapshot(
    model_path: str, revision: str | None = None, *, env: Mapping[str, str] | None = None
) -> Path | None:
    """Where a model's files are on disk, without any network access.

    A local directory is returned as is; a repo id gives its cached snapshot
    directory for ``revision`` (default ``main``); otherwise None. ``env``
    is the model's own environment overrides (e.g. ``HF_HOME``).
    """
    path = Path(model_path).expanduser()
    if path.is_dir():
        return path
    if not is_repo_id(model_path):
        return None
    repo_dir = repo_cache_dir(model_path, hub_cache_dir(env))
    commit = _commit_for(repo_dir, revision)
    if commit is None:
        return None
    snap = repo_dir / "snapshots" / commit
    return snap if snap.is_dir() else None


def has_incomplete_blobs(repo_id: str, cache_dir: Path | None = None) -> bool:
    """True when a download of this repo stopped part-way (``*.incomplete`` blobs)."""
    blobs = repo_cache_dir(repo_id, cache_dir) / "blobs"
    try:
        return any(p.name.endswith(".incomplete") for p in blobs.iterdir())
    except OSError:
        return False


def _all_present(snap: Path, names: Iterable[str]) -> bool:
    """Every named file exists in the snapshot (a dangling symlink counts as missing)."""
    return all((snap / name).is_file() for name in names)


def _indexed_shards(snap: Path) -> set[str] | None:
    """Weight shards a sharded checkpoint's index lists, or None without an index."""
    for name in _INDEX_FILES:
        index = snap / name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text()).get("weight_map", {})
            except (OSError, ValueError):
                return {"<unreadable index>"}
            return set(weight_map.values())
    return None


def snapshot_complete(
    model_path: str,
    revision: str | None = None,
    expected_files: Iterable[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> bool | None:
    """Whether a model's files are all on disk.

    True/False when it can be told; None when it cannot without asking the
    Hub (a snapshot exists, but with no file list and no shard index there
    is no way to know offline whether every file arrived). Pass
    ``expected_files`` (from the repo's file list) for an exact answer.
    """
    if not is_repo_id(model_path):
        return Path(model_path).expanduser().is_dir()
    snap = local_snapshot(model_path, revision, env=env)
    if snap is None:
        return False
    if expected_files is not None:
        return _all_present(snap, expected_files)
    if has_incomplete_blobs(model_path, hub_cache_dir(env)):
        return False
    shards = _indexed_shards(snap)
    if shards is not None:
        return _all_present(snap, shards | {"config.json"})
    if (snap / "config.json").is_file() and any(snap.glob("*.safetensors")):
        return _all_present(snap, [p.name for p in snap.glob("*.safetensors")])
    return None
