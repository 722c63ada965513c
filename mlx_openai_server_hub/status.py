"""What the hub says about its models: `/hub/status` and `GET /v1/models`.

Both are built here, from typed `ModelSnapshot`s, so the two never disagree
and nobody re-parses the other's JSON.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from .config import HubConfig, ModelConfig
from .downloads import DownloadManager
from .hf_cache import is_repo_id
from .hub_memory import HubMemory
from .model_state import ModelSnapshot
from .states import SERVABLE, MemoryState, ProcessState

# A load is not done until the worker says it is ready, whatever is resident.
MAX_LOAD_PROGRESS = 0.99
# The reference's per-model context length when hub.yaml sets none.
REFERENCE_CONTEXT_LENGTH = 32768


def hub_status(
    config: HubConfig,
    snapshots: Sequence[ModelSnapshot],
    warnings: list[str],
    memory: HubMemory,
    downloads: DownloadManager,
) -> dict[str, Any]:
    """The `/hub/status` document."""
    created = config_mtime(config)
    models = [full_entry(snap, created, memory, downloads) for snap in snapshots]
    return {
        "status": "ok",
        "timestamp": int(time.time()),
        "host": config.host,
        "port": config.port,
        "models": models,
        "counts": {
            "registered": len(snapshots),
            # As in the reference: running models only, not those still starting.
            "started": sum(snap.process == ProcessState.RUNNING for snap in snapshots),
            "loaded": sum(snap.memory == MemoryState.LOADED for snap in snapshots),
        },
        "warnings": [w for snap in snapshots for w in (*snap.config.warnings, *snap.warnings)]
        + warnings,
        "memory": memory.status(),
        "controller_available": True,
    }


def full_entry(
    snap: ModelSnapshot, created: int, memory: HubMemory, downloads: DownloadManager
) -> dict[str, Any]:
    """One model in `/hub/status`, with its memory, load and download figures."""
    entry = model_entry(snap, created)
    memory_fields = memory.model_status(snap.config.name)
    entry["metadata"].update(memory_fields)
    entry["metadata"].update(load_progress(snap, memory_fields))
    entry["metadata"]["standby"] = _standby(snap, memory_fields)
    entry["metadata"].update(download_fields(downloads, snap.config))
    return entry


def wait_note(meta: dict[str, Any], name: str) -> str:
    """What a request waiting for model `name` waits for, with progress where known:
    "downloading qwen 43%", "loading qwen 70%", "loading qwen" (a stream's keep-alive)."""
    download = meta.get("download") or {}
    if download.get("state") in ("queued", "downloading"):
        done, total = download.get("bytes_done"), download.get("bytes_total")
        share = f" {done * 100 // total}%" if done is not None and total else ""
        return f"downloading {name}{share}"
    progress = meta.get("load_progress")
    return f"loading {name}" + (f" {int(progress * 100)}%" if progress is not None else "")


def model_entry(snap: ModelSnapshot, created: int) -> dict[str, Any]:
    """One model in `/hub/status`."""
    cfg = snap.config
    return {
        "id": cfg.name,
        "object": "model",
        "created": created,
        "owned_by": "hub",
        "metadata": {
            "status": str(snap.process),
            "process_state": str(snap.process),
            "memory_state": str(snap.memory),
            "group": cfg.group,
            "default": cfg.default,
            "model_type": cfg.model_type,
            "model_path": cfg.model_path,
            "log_path": str(cfg.log_file) if cfg.log_file else None,
            "pid": snap.pid,
            "port": snap.port,
            "started_at": snap.started_at,
            "stopped_at": snap.stopped_at,
            "exit_code": snap.exit_code,
            "auto_unload_minutes": cfg.auto_unload_minutes,
            "jit_enabled": cfg.jit_enabled,
            "memory_last_transition_at": snap.memory_changed_at,
            "memory_last_error": snap.memory_error,
            "in_flight": snap.in_flight,
            "active_requests": snap.queue.active_requests,
            "queued_requests": snap.queue.queued_requests,
            "last_request_at": snap.last_request_at,
            "unload_at": snap.unload_at,
            "failed_loads": snap.failed_loads,
        },
    }


def openai_models(config: HubConfig, snapshots: Sequence[ModelSnapshot]) -> dict[str, Any]:
    """`GET /v1/models`: the started models, by hub name.

    Each entry also carries the reference's metadata fields (`vram_*`,
    `context_length`, `active_requests`, `status`) with live values, so
    scripts and model pickers written for it keep working.
    """
    created = config_mtime(config)
    data = [
        {
            "id": snap.config.name,
            "object": "model",
            "created": created,
            "owned_by": "hub",
            "metadata": _listing_metadata(snap),
        }
        for snap in snapshots
        if snap.process in SERVABLE
    ]
    return {"object": "list", "data": data}


def _listing_metadata(snap: ModelSnapshot) -> dict[str, Any]:
    cfg = snap.config
    return {
        "model_path": cfg.model_path,
        "model_type": cfg.model_type,
        "process_state": str(snap.process),
        "memory_state": str(snap.memory),
        "group": cfg.group,
        "context_length": cfg.context_length or REFERENCE_CONTEXT_LENGTH,
        "status": str(snap.memory),
        "vram_loaded": snap.memory == MemoryState.LOADED,
        "vram_last_load_ts": _whole_seconds(snap.loaded_at),
        "vram_last_unload_ts": _whole_seconds(snap.unloaded_at),
        "vram_last_request_ts": _whole_seconds(snap.last_request_at),
        "vram_load_error": snap.memory_error,
        "active_requests": snap.in_flight,
    }


def load_progress(snap: ModelSnapshot, memory_fields: dict[str, Any]) -> dict[str, Any]:
    """While loading: `load_elapsed_s`, and `load_progress`, the share of the model's
    need (learned size or on-disk estimate) resident in its worker now, held below 1
    until the worker is ready; null when its size is not known."""
    if snap.memory != MemoryState.LOADING or snap.memory_changed_at is None:
        return {"load_progress": None, "load_elapsed_s": None}
    need, now = memory_fields.get("memory_need_bytes"), memory_fields.get("memory_bytes")
    progress = min(now / need, MAX_LOAD_PROGRESS) if need and now is not None else None
    return {
        "load_progress": None if progress is None else round(progress, 3),
        "load_elapsed_s": round(max(0.0, time.time() - snap.memory_changed_at), 1),
    }


def _standby(snap: ModelSnapshot, memory_fields: dict[str, Any]) -> dict[str, Any] | None:
    if snap.standby is None:
        return None
    held = memory_fields.get("memory_bytes") if snap.memory == MemoryState.UNLOADED else None
    return {"pid": snap.standby.pid, "since": snap.standby.since, "memory_bytes": held}


def download_fields(downloads: DownloadManager, cfg: ModelConfig) -> dict[str, Any]:
    """`download` (the latest download's progress, or None) and `downloaded` (the
    snapshot is complete on disk: true, false, or null when it cannot be told)."""
    if not is_repo_id(cfg.model_path):
        return {"download": None, "downloaded": True}
    return {
        "download": downloads.status(cfg.model_path, cfg.revision),
        "downloaded": downloads.downloaded(cfg.model_path, cfg.revision, cfg.env),
    }


def _whole_seconds(at: float | None) -> int | None:
    return None if at is None else int(at)


def config_mtime(config: HubConfig) -> int:
    """hub.yaml's modification time: the `created` of every model entry."""
    try:
        return int(config.source_path.stat().st_mtime)
    except OSError:
        return int(time.time())
