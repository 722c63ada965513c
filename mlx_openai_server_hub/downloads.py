"""Model downloads owned by the hub: one per repo, with real progress.

The manager fetches a repo-id model's snapshot into the standard Hugging
Face cache before its worker starts (so `startup_timeout` measures loading
only) and for `pull`. Hub calls block, so they run in the manager's own
thread pool; their progress comes back to the event loop through
`call_soon_threadsafe`, so `DownloadProgress` is only ever touched on the
loop thread. Callers asking for a repo already downloading join it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import attrs
from huggingface_hub import get_token

from . import hf_cache
from .hf_fetch import (
    DownloadError,
    HubSettings,
    RepoListing,
    cached_files,
    classify,
    fetch_file,
    list_remote,
    write_ref,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# Rate is measured over this recent window, so a stall shows as a falling rate.
RATE_WINDOW_S = 5.0
# Files fetched at once per repo (huggingface_hub's own default is 8; the
# hub shares the machine with running workers).
PARALLEL_FILES = 4


class DownloadState(enum.StrEnum):
    """Where a download is."""

    QUEUED = "queued"
    DOWNLOADING = "downloading"
    DONE = "done"
    FAILED = "failed"


@attrs.define
class DownloadProgress:
    """A download's numbers, updated on the loop thread only."""

    repo_id: str
    revision: str
    state: DownloadState = DownloadState.QUEUED
    bytes_done: int = 0
    bytes_total: int | None = None
    files_done: int = 0
    files_total: int | None = None
    error: str | None = None
    error_kind: str | None = None
    commit: str | None = None
    started_at: float = attrs.field(factory=time.time)
    finished_at: float | None = None
    # In-flight files: name -> [bytes done, total or None].
    files: dict[str, list[int | None]] = attrs.field(factory=dict)
    _samples: collections.deque[tuple[float, int]] = attrs.field(
        factory=lambda: collections.deque(maxlen=256), repr=False
    )

    def sample(self) -> None:
        """Record (now, bytes_done) for the rate."""
        now = time.monotonic()
        self._samples.append((now, self.bytes_done))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW_S:
            self._samples.popleft()

    @property
    def rate_bytes_per_s(self) -> float | None:
        """Bytes per second over the last few seconds (None before two samples)."""
        if self.state is not DownloadState.DOWNLOADING or len(self._samples) < 2:
            return None
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        now = time.monotonic()
        return max(b1 - b0, 0) / max(now - t0, t1 - t0, 1e-3)

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate, when that can be known."""
        rate = self.rate_bytes_per_s
        if not rate or self.bytes_total is None:
            return None
        return max(self.bytes_total - self.bytes_done, 0) / rate

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape used in `/hub/status` and by `pull`."""
        rate = self.rate_bytes_per_s
        eta = self.eta_s
        return {
            "repo_id": self.repo_id,
            "revision": self.revision,
            "state": self.state.value,
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total,
            "files_done": self.files_done,
            "files_total": self.files_total,
            "rate_bytes_per_s": round(rate, 1) if rate is not None else None,
            "eta_s": round(eta, 1) if eta is not None else None,
            "error": self.error,
            "error_kind": self.error_kind,
            "files": {n: {"bytes_done": d, "bytes_total": t} for n, (d, t) in self.files.items()},
        }


Env = Mapping[str, str] | None


def current_settings(env: Env = None) -> HubSettings:
    """Endpoint, cache and token as the environment (plus a model's `env`) says right now."""
    token = (env or {}).get("HF_TOKEN") or get_token()
    return HubSettings(hf_cache.hub_endpoint(env), hf_cache.hub_cache_dir(env), token)


def offline_error(
    repo_id: str, revision: str, name: str | None = None, env: Env = None
) -> DownloadError:
    """The immediate error for a missing snapshot while `HF_HUB_OFFLINE` is set."""
    target = name or repo_id
    return DownloadError(
        "offline",
        f"offline (HF_HUB_OFFLINE is set) and {repo_id}@{revision} is not complete "
        "in the Hugging Face "
        f"cache {hf_cache.hub_cache_dir(env)}; fetch it while online with "
        f"`mlx-openai-server-hub pull {target}` (or unset HF_HUB_OFFLINE)",
    )


def _on_disk(model_path: str, revision: str | None, env: Env) -> tuple[bool | None, Path | None]:
    """(is the snapshot complete, where it is): disk reads, run in a thread."""
    complete = hf_cache.snapshot_complete(model_path, revision, env=env)
    return complete, hf_cache.local_snapshot(model_path, revision, env=env)


class _Job:
    """One running (or finished) download and the callers waiting on it."""

    def __init__(self, progress: DownloadProgress, env: Env) -> None:
        self.progress = progress
        self.env = env
        self.cancel = threading.Event()
        self.task: asyncio.Task[Path] | None = None


class DownloadManager:
    """Starts, joins, reports and cancels snapshot downloads."""

    def __init__(self, parallel_files: int = PARALLEL_FILES) -> None:
        self._parallel = parallel_files
        self._jobs: dict[tuple[str, str], _Job] = {}
        self._complete: dict[tuple[str, str], bool | None] = {}
        self._executor = ThreadPoolExecutor(
            max_workers=parallel_files + 1, thread_name_prefix="hf-download"
        )
        self._closed = False

    @staticmethod
    def _key(repo_id: str, revision: str | None) -> tuple[str, str]:
        return repo_id, revision or hf_cache.DEFAULT_REVISION

    def progress(self, repo_id: str, revision: str | None = None) -> DownloadProgress | None:
        """The latest download of this repo revision, if any."""
        job = self._jobs.get(self._key(repo_id, revision))
        return job.progress if job else None

    def status(self, model_path: str, revision: str | None = None) -> dict[str, Any] | None:
        """`download: {...}` for a model's status, or None when none ran."""
        progress = self.progress(model_path, revision)
        return progress.as_dict() if progress else None

    def downloaded(
        self, model_path: str, revision: str | None = None, env: Env = None
    ) -> bool | None:
        """Whether the snapshot is complete on disk (None: cannot tell offline, or not
        looked at yet). Never reads the disk: `refresh_on_disk` does, in a thread."""
        progress = self.progress(model_path, revision)
        if progress is not None and progress.state is DownloadState.DONE:
            return True
        if progress is not None and progress.state is DownloadState.DOWNLOADING:
            return False
        return self._complete.get(self._key(model_path, revision))

    async def refresh_on_disk(self, models: list[tuple[str, str | None, Env]]) -> None:
        """Look at the cache for these (repo id, revision, env): what `downloaded` says."""

        def look() -> dict[tuple[str, str], bool | None]:
            return {
                self._key(path, rev): hf_cache.snapshot_complete(path, rev, env=env)
                for path, rev, env in models
                if hf_cache.is_repo_id(path)
            }

        self._complete.update(await asyncio.to_thread(look))

    def start(
        self, repo_id: str, revision: str | None = None, name: str | None = None, env: Env = None
    ) -> DownloadProgress:
        """Start a download of `repo_id` (or join the one running) and return its progress.

        `env` is the model's own environment overrides (HF_HOME, HF_TOKEN, ...).
        """
        return self._job(repo_id, revision, name, env).progress

    async def pull(
        self, repo_id: str, revision: str | None = None, name: str | None = None, env: Env = None
    ) -> Path:
        """Download (or join the download of) a snapshot and return its directory.

        Cancelling the caller does not stop the download for other callers.
        """
        job = self._job(repo_id, revision, name, env)
        assert job.task is not None
        return await asyncio.shield(job.task)

    async def ensure(
        self, model_path: str, revision: str | None = None, name: str | None = None, env: Env = None
    ) -> Path | None:
        """Make sure a model's files are on disk before its worker starts.

        A local path is left alone (None). A complete cached snapshot returns
        at once, without the network. Offline with no usable snapshot raises
        `DownloadError("offline")` immediately.
        """
        if not hf_cache.is_repo_id(model_path):
            return None
        complete, snap = await asyncio.to_thread(_on_disk, model_path, revision, env)
        if complete and snap is not None:
            return snap
        if hf_cache.hub_offline(env):
            # Offline, a snapshot we cannot verify is the best there is: let the worker try it.
            if complete is None and snap is not None:
                return snap
            raise offline_error(model_path, revision or hf_cache.DEFAULT_REVISION, name, env)
        return await self.pull(model_path, revision, name, env)

    def _job(self, repo_id: str, revision: str | None, name: str | None, env: Env) -> _Job:
        if self._closed:
            raise DownloadError("cancelled", "the hub is shutting down")
        key = self._key(repo_id, revision)
        job = self._jobs.get(key)
        if job is not None and job.task is not None and not job.task.done():
            return job
        job = _Job(DownloadProgress(repo_id, key[1]), env)
        job.task = asyncio.get_running_loop().create_task(
            self._run(job, revision, name), name=f"download {repo_id}@{key[1]}"
        )
        # A failed download is reported through status; nobody awaiting it is fine.
        job.task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self._jobs[key] = job
        return job

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _run(self, job: _Job, revision: str | None, name: str | None) -> Path:
        progress = job.progress
        settings = current_settings(job.env)
        try:
            if hf_cache.hub_offline(job.env):
                return self._offline_result(job, name)
            listing = await self._in_thread(list_remote, progress.repo_id, revision, settings)
            await self._fetch_all(job, listing, settings)
            await self._in_thread(write_ref, listing, settings.cache_dir)
        except asyncio.CancelledError:
            job.cancel.set()
            self._fail(
                progress, DownloadError("cancelled", f"download of {progress.repo_id} was stopped")
            )
            raise
        except Exception as exc:  # every failure becomes a status the user can read
            err = classify(exc, progress.repo_id, settings, settings.token is not None)
            self._fail(progress, err)
            log.warning(
                "download %s@%s failed: %s", progress.repo_id, progress.revision, err.message
            )
            raise err from None
        progress.state = DownloadState.DONE
        progress.finished_at = time.time()
        progress.files.clear()
        log.info(
            "download %s@%s done (%d bytes)",
            progress.repo_id,
            progress.revision,
            progress.bytes_done,
        )
        return (
            settings.cache_dir
            / f"models--{progress.repo_id.replace('/', '--')}"
            / "snapshots"
            / listing.commit
        )

    @staticmethod
    def _offline_result(job: _Job, name: str | None) -> Path:
        """Offline, a pull succeeds only on what the cache already holds."""
        progress = job.progress
        snap = hf_cache.local_snapshot(progress.repo_id, progress.revision, env=job.env)
        complete = hf_cache.snapshot_complete(progress.repo_id, progress.revision, env=job.env)
        if snap is None or complete is False:
            raise offline_error(progress.repo_id, progress.revision, name, job.env)
        progress.state = DownloadState.DONE
        progress.commit = snap.name
        progress.finished_at = time.time()
        return snap

    @staticmethod
    def _fail(progress: DownloadProgress, err: DownloadError) -> None:
        progress.state = DownloadState.FAILED
        progress.error = err.message
        progress.error_kind = err.kind
        progress.finished_at = time.time()
        progress.files.clear()

    async def _fetch_all(self, job: _Job, listing: RepoListing, settings: HubSettings) -> None:
        progress = job.progress
        have = await self._in_thread(cached_files, listing, settings.cache_dir)
        progress.commit = listing.commit
        progress.files_total = len(listing.files)
        progress.bytes_total = listing.bytes_total
        progress.files_done = len(have)
        progress.bytes_done = sum(f.size or 0 for f in listing.files if f.name in have)
        progress.state = DownloadState.DOWNLOADING
        progress.sample()
        todo = [f.name for f in listing.files if f.name not in have]
        loop = asyncio.get_running_loop()
        on_start, on_bytes = self._sinks(loop, progress)
        gate = asyncio.Semaphore(self._parallel)

        async def one(file_name: str) -> None:
            async with gate:
                await self._in_thread(
                    fetch_file, listing, file_name, settings, on_start, on_bytes, job.cancel
                )
            progress.files_done += 1
            progress.files.pop(file_name, None)

        tasks = [asyncio.ensure_future(one(n)) for n in todo]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            job.cancel.set()  # stop the sibling files too, then let them unwind
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    @staticmethod
    def _sinks(
        loop: asyncio.AbstractEventLoop, progress: DownloadProgress
    ) -> tuple[Callable[[str, int | None, int], None], Callable[[str, int], None]]:
        """Thread-side callbacks that apply progress on the loop thread."""

        def started(name: str, total: int | None, initial: int) -> None:
            progress.files[name] = [initial, total]
            progress.bytes_done += initial

        def advanced(name: str, n: int) -> None:
            entry = progress.files.get(name)
            if entry is not None and entry[0] is not None:
                entry[0] += n
            progress.bytes_done += n
            progress.sample()

        def post(fn: Callable[..., None]) -> Callable[..., None]:
            def call(*args: Any) -> None:
                with contextlib.suppress(RuntimeError):  # loop already closed at shutdown
                    loop.call_soon_threadsafe(fn, *args)

            return call

        return post(started), post(advanced)

    async def close(self) -> None:
        """Stop every download (hub shutdown); partial files are discarded by huggingface_hub."""
        self._closed = True
        running = [j for j in self._jobs.values() if j.task is not None and not j.task.done()]
        for job in running:
            job.cancel.set()
            assert job.task is not None
            job.task.cancel()
        await asyncio.gather(*(j.task for j in running if j.task), return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)
