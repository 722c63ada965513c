"""Measured memory: each worker's footprint, its peaks, and what the hub has learned.

A worker's footprint is the sum over every process in its process group (the
worker is its group leader): on macOS each process's `phys_footprint` (what
Activity Monitor calls "Memory"; MLX weights live in unified memory and are
counted there), on Linux its PSS (shared pages split between the processes
that map them, so a forked helper's copy-on-write pages are not counted
twice). Sampling reads /proc or calls into the kernel once per process: it
runs in a thread (`sample_group`), never on the event loop.

`MemoryLedger` keeps, per model, `now` / `peak` (this load) / `learned` (the
largest peak across loads, kept in `<log_path>/memory_learned.json` so a
restarted hub knows it) / the on-disk `estimate`, and answers `need()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs
import psutil

from .atomic import write_atomic
from .memory_estimate import estimate_memory

logger = logging.getLogger("mlx_hub.memory")

SAMPLE_INTERVAL = 1.0
LEARNED_FILE = "memory_learned.json"
# A new peak is written to disk at most this often while a worker runs (and
# when it stops): a footprint creeping up by pages must not mean a write a second.
_SAVE_EVERY = 10.0

# --- one process -----------------------------------------------------------------


class _RusageInfoV2(ctypes.Structure):
    """`struct rusage_info_v2` from <sys/resource.h> (macOS)."""

    _fields_ = [("ri_uuid", ctypes.c_uint8 * 16)] + [
        (name, ctypes.c_uint64)
        for name in (
            "ri_user_time",
            "ri_system_time",
            "ri_pkg_idle_wkups",
            "ri_interrupt_wkups",
            "ri_pageins",
            "ri_wired_size",
            "ri_resident_size",
            "ri_phys_footprint",
            "ri_proc_start_abstime",
            "ri_proc_exit_abstime",
            "ri_child_user_time",
            "ri_child_system_time",
            "ri_child_pkg_idle_wkups",
            "ri_child_interrupt_wkups",
            "ri_child_pageins",
            "ri_child_elapsed_abstime",
            "ri_diskio_bytesread",
            "ri_diskio_byteswritten",
        )
    ]


_RUSAGE_INFO_V2 = 2


def _load_proc_pid_rusage() -> Callable[[int], int | None] | None:
    """`pid -> phys_footprint` through libproc's proc_pid_rusage, or None off macOS."""
    if sys.platform != "darwin":
        return None
    for library in ("/usr/lib/libproc.dylib", "/usr/lib/libSystem.B.dylib"):
        try:
            func = ctypes.CDLL(library, use_errno=True).proc_pid_rusage
            break
        except (OSError, AttributeError):
            continue
    else:
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_RusageInfoV2)]
    func.restype = ctypes.c_int

    def footprint(pid: int) -> int | None:
        info = _RusageInfoV2()
        if func(pid, _RUSAGE_INFO_V2, ctypes.byref(info)) != 0:
            return None
        return int(info.ri_phys_footprint)

    return footprint


_phys_footprint = _load_proc_pid_rusage()


def process_footprint(proc: psutil.Process) -> int:
    """One process's memory: phys_footprint on macOS, PSS on Linux, else USS, else RSS.

    Raises psutil.NoSuchProcess when it has gone.
    """
    if _phys_footprint is not None:
        value = _phys_footprint(proc.pid)
        if value is not None:
            return value
    try:
        full = proc.memory_full_info()
        return int(getattr(full, "pss", None) or full.uss)
    except psutil.AccessDenied:
        return int(proc.memory_info().rss)


def group_processes(pgid: int) -> list[psutil.Process]:
    """Every live process whose process group is `pgid` (the leader first)."""
    members = []
    for pid in psutil.pids():
        try:
            if os.getpgid(pid) == pgid:
                members.append(psutil.Process(pid))
        except (OSError, psutil.Error):
            continue  # gone between listing and asking, or not ours to see
    members.sort(key=lambda proc: proc.pid != pgid)
    return members


def group_footprint(pgid: int) -> int | None:
    """The summed footprint of a process group, or None when nothing of it is alive."""
    total, alive = 0, False
    for proc in group_processes(pgid):
        with contextlib.suppress(psutil.Error):
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            total += process_footprint(proc)
            alive = True
    return total if alive else None


async def sample_group(pgid: int) -> int | None:
    """`group_footprint` in a worker thread (psutil calls are blocking syscalls)."""
    return await asyncio.to_thread(group_footprint, pgid)


@attrs.frozen
class SystemMemory:
    """The machine's memory right now."""

    total_bytes: int
    available_bytes: int


def read_system_memory() -> SystemMemory:
    """Physical memory and what is available without swapping (psutil)."""
    vm = psutil.virtual_memory()
    return SystemMemory(int(vm.total), int(vm.available))


# --- learned sizes, on disk ----------------------------------------------------------


def fingerprint(model_path: str, **settings: Any) -> str:
    """What a learned size belongs to: a changed path or quantisation is another model."""
    extras = ",".join(f"{k}={settings[k]}" for k in sorted(settings) if settings[k] is not None)
    return f"{model_path}|{extras}"


class LearnedStore:
    """`{name: {"bytes", "fingerprint", "updated_at"}}` in a small JSON file, written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}

    def load(self) -> None:
        """Read the file; a missing or damaged one starts empty (it is only a hint)."""
        try:
            data = json.loads(self.path.read_text())
            models = data.get("models", {}) if isinstance(data, dict) else {}
        except (OSError, ValueError) as exc:
            if not isinstance(exc, FileNotFoundError):
                logger.warning("ignoring unreadable %s: %s", self.path, exc)
            models = {}
        self.entries = {
            str(name): entry
            for name, entry in models.items()
            if isinstance(entry, dict) and isinstance(entry.get("bytes"), int)
        }

    def get(self, name: str, print_: str) -> int | None:
        """The learned size of `name` if it was learned for the same fingerprint."""
        entry = self.entries.get(name)
        if entry is None or entry.get("fingerprint") != print_:
            return None
        return int(entry["bytes"])

    def put(self, name: str, print_: str, size: int) -> None:
        """Remember `size` for `name` (in memory; `save` writes it)."""
        self.entries[name] = {"bytes": int(size), "fingerprint": print_, "updated_at": time.time()}

    def save(self) -> None:
        """Write the file atomically (a temporary file renamed over it), private (0600)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"version": 1, "models": self.entries}, indent=1, sort_keys=True)
        write_atomic(self.path, body, mode=0o600)


# --- per model -------------------------------------------------------------------------


@attrs.define
class ModelMemory:
    """What the hub knows of one model's memory."""

    fingerprint: str = ""
    configured_bytes: int | None = None  # the model's `memory` key
    now_bytes: int | None = None
    peak_bytes: int | None = None  # this load (kept after unload until the next one)
    learned_bytes: int | None = None
    estimate_bytes: int | None = None
    estimate_source: str | None = None
    sampled_at: float | None = None
    last_error: str | None = None

    def need(self) -> tuple[int, str]:
        """(bytes, source) admission reserves: `memory`, else learned, else estimate, else 0."""
        if self.configured_bytes is not None:
            return self.configured_bytes, "config"
        if self.learned_bytes is not None:
            return self.learned_bytes, "learned"
        if self.estimate_bytes is not None:
            return self.estimate_bytes, "estimate"
        return 0, "unknown"

    def status(self) -> dict[str, Any]:
        """The `memory_*` fields of /hub/status for this model."""
        need, source = self.need()
        return {
            "memory_bytes": self.now_bytes,
            "memory_peak_bytes": self.peak_bytes,
            "memory_learned_bytes": self.learned_bytes,
            "memory_estimate_bytes": self.estimate_bytes,
            "memory_estimate_source": self.estimate_source,
            "memory_configured_bytes": self.configured_bytes,
            "memory_need_bytes": need,
            "memory_need_source": source,
        }


@attrs.frozen
class MemorySubject:
    """What the ledger needs to know of a configured model (decoupled from config.py)."""

    name: str
    model_path: str
    configured_bytes: int | None = None
    revision: str | None = None
    settings: dict[str, Any] = attrs.field(factory=dict)


class MemoryLedger:
    """Every model's memory figures, the learned store, and the per-worker samplers."""

    def __init__(self, log_path: Path, sampler: Callable[[int], int | None] = group_footprint):
        self.store = LearnedStore(log_path / LEARNED_FILE)
        self.models: dict[str, ModelMemory] = {}
        self._subjects: dict[str, MemorySubject] = {}
        self._sampler = sampler
        self._dirty = False
        self._saved_at = 0.0

    def configure(self, subjects: Iterable[MemorySubject]) -> None:
        """Adopt the configured models (at start and on reload); figures of kept models stay."""
        wanted = {s.name: s for s in subjects}
        for name in set(self.models) - set(wanted):
            del self.models[name]
        for name, subject in wanted.items():
            print_ = fingerprint(subject.model_path, **subject.settings)
            entry = self.models.get(name)
            if entry is None or entry.fingerprint != print_:
                entry = self.models[name] = ModelMemory(fingerprint=print_)
            stored = self.store.get(name, print_)
            if stored is not None and stored > (entry.learned_bytes or 0):
                entry.learned_bytes = stored
            entry.configured_bytes = subject.configured_bytes
        self._subjects = wanted

    def get(self, name: str) -> ModelMemory:
        """The figures of `name` (an empty record for an unknown name)."""
        return self.models.setdefault(name, ModelMemory())

    async def open(self) -> None:
        """Read learned sizes and estimate every model from disk (both off the loop)."""
        await asyncio.to_thread(self.store.load)
        self.configure(list(self._subjects.values()))
        await self.refresh_estimates()

    async def refresh_estimates(self, names: Iterable[str] | None = None) -> None:
        """Re-read weight sizes on disk (after a download, a reload, before a first load)."""
        for name in list(names if names is not None else self._subjects):
            subject = self._subjects.get(name)
            if subject is None:
                continue
            found = await asyncio.to_thread(estimate_memory, subject.model_path, subject.revision)
            entry = self.get(name)
            entry.estimate_bytes = found.bytes if found else None
            entry.estimate_source = found.label if found else None

    def begin_load(self, name: str) -> None:
        """A new worker for `name` starts: this load's figures start over."""
        entry = self.get(name)
        entry.now_bytes = entry.peak_bytes = entry.sampled_at = None

    def end_load(self, name: str) -> None:
        """The worker of `name` is gone: it holds nothing now."""
        self.get(name).now_bytes = None

    def record(self, name: str, size: int, at: float | None = None) -> None:
        """One sample of `name`'s footprint: updates now, peak and learned."""
        entry = self.get(name)
        entry.now_bytes = size
        entry.sampled_at = time.time() if at is None else at
        entry.peak_bytes = max(entry.peak_bytes or 0, size)
        if size > (entry.learned_bytes or 0):
            entry.learned_bytes = size
            self._dirty = True

    async def flush(self, force: bool = False) -> None:
        """Write learned sizes if they changed (at most every few seconds unless `force`)."""
        if not self._dirty or (not force and time.monotonic() - self._saved_at < _SAVE_EVERY):
            return
        for name, entry in self.models.items():
            if entry.learned_bytes is not None:
                self.store.put(name, entry.fingerprint, entry.learned_bytes)
        self._dirty = False
        self._saved_at = time.monotonic()
        try:
            await asyncio.to_thread(self.store.save)
        except OSError as exc:
            logger.warning("cannot write %s: %s", self.store.path, exc)

    async def measure(self, pgid: int) -> int | None:
        """One footprint reading of a worker group, in a thread (blocking syscalls)."""
        return await asyncio.to_thread(self._sampler, pgid)

    async def run_sampler(self, name: str, pgid: int, interval: float = SAMPLE_INTERVAL) -> None:
        """Sample `name`'s worker group every `interval` s until it is gone or cancelled."""
        try:
            while True:
                size = await self.measure(pgid)
                if size is None:
                    return
                self.record(name, size)
                await self.flush()
                await asyncio.sleep(interval)
        finally:
            self.end_load(name)
            with contextlib.suppress(Exception):
                await asyncio.shield(self.flush(force=True))

    def used_bytes(self) -> int:
        """The summed measured footprint of every model now."""
        return sum(entry.now_bytes or 0 for entry in self.models.values())
