"""Model downloads owned by the hub: one per repo, with real progress.

The manager fetches a repo-id model's snapshot into the standard Hugging
Face cache before its worker starts (so `startup_timeout` measures loading
only) and for `pull`. Each download runs in a child process of its own
(`download_process`, which says why), stopped like a worker (SIGTERM, a grace
period, SIGKILL to its group); its JSON-line events are applied here, on the
loop thread. Callers asking for a repo already downloading join it.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from . import hf_cache
from .download_protocol import READ_CHUNK_BYTES, DownloadError, DownloadRequest, encode_request
from .process_group import die_with_parent_preexec, terminate_group

log = logging.getLogger(__name__)

# Rate is measured over this recent window, so a stall shows as a falling rate.
RATE_WINDOW_S = 5.0
# Files fetched at once per repo (huggingface_hub's own default is 8; the
# hub shares the machine with running workers).
PARALLEL_FILES = 4
# A download child that ignores SIGTERM this long (a stalled read) is killed.
STOP_GRACE_S = 5.0
# Lines of the child's stderr kept for the error when it dies without saying why.
STDERR_TAIL = 5


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

    def apply(self, event: Mapping[str, Any]) -> None:
        """Take in one progress event of the download child (`listing`, `start`, ...)."""
        kind = event.get("event")
        if kind == "listing":
            self.commit = event["commit"]
            self.files_total, self.bytes_total = event["files_total"], event["bytes_total"]
            self.files_done, self.bytes_done = event["files_done"], event["bytes_done"]
            self.state = DownloadState.DOWNLOADING
        elif kind == "start":
            self.files[event["file"]] = [event["initial"], event["total"]]
            self.bytes_done += event["initial"]
        elif kind == "bytes":
            entry = self.files.get(event["file"])
            if entry is not None and entry[0] is not None:
                entry[0] += event["n"]
            self.bytes_done += event["n"]
        elif kind == "file_done":
            self.files_done += 1
            self.files.pop(event["file"], None)
        else:
            return
        self.sample()

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


class _DownloadChild:
    """One run of the download child process, from spawn to its last event."""

    def __init__(self, request: DownloadRequest, env: Env) -> None:
        self.request = request
        self.env = {**os.environ, **(env or {})}
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)

    async def run(self, progress: DownloadProgress) -> Path:
        """Download, applying progress as it comes; the snapshot's path, or DownloadError.

        Cancelled, the child is stopped (and reaped) before this returns.
        """
        proc = await self._spawn()
        stderr = asyncio.create_task(
            self._pump_stderr(proc), name=f"download-stderr {self.request.repo_id}"
        )
        try:
            return await self._follow(proc, progress)
        finally:
            if proc.returncode is None:
                await asyncio.shield(self._stop(proc))
            stderr.cancel()
            await asyncio.gather(stderr, return_exceptions=True)

    async def _spawn(self) -> asyncio.subprocess.Process:
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "mlx_openai_server_hub.download_process",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self.env,
                start_new_session=True,
                preexec_fn=die_with_parent_preexec(),
            )
        except OSError as exc:
            raise DownloadError("failed", f"cannot start a download process: {exc}") from exc
        assert proc.stdin is not None
        # stdin stays open: the child stops when it closes (this process gone).
        proc.stdin.write(encode_request(self.request))
        await proc.stdin.drain()
        return proc

    async def _follow(self, proc: asyncio.subprocess.Process, progress: DownloadProgress) -> Path:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            try:
                event = json.loads(line)
            except ValueError:  # not one of ours (the child sends library output to stderr)
                log.warning("download %s: %r", self.request.repo_id, line[:200])
                continue
            if event["event"] == "done":
                return Path(event["path"])
            if event["event"] == "error":
                raise DownloadError(event["kind"], event["message"])
            progress.apply(event)
        code = await proc.wait()
        said = " | ".join(self.stderr_tail) or "no output"
        raise DownloadError(
            "failed",
            f"the download process for {self.request.repo_id} ended (exit {code}): {said}",
        )

    async def _pump_stderr(self, proc: asyncio.subprocess.Process) -> None:
        """The child's warnings (huggingface_hub's) go to the hub's log."""
        assert proc.stderr is not None
        while raw := await proc.stderr.readline():
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self.stderr_tail.append(line)
                log.info("download %s: %s", self.request.repo_id, line)

    @staticmethod
    async def _stop(proc: asyncio.subprocess.Process) -> None:
        exited = asyncio.Event()
        waiter = asyncio.ensure_future(proc.wait())
        waiter.add_done_callback(lambda _: exited.set())
        await terminate_group(proc.pid, exited, STOP_GRACE_S)


class _Job:
    """One running (or finished) download and the callers waiting on it."""

    def __init__(self, progress: DownloadProgress, env: Env) -> None:
        self.progress = progress
        self.env = env
        self.task: asyncio.Task[Path] | None = None


class DownloadManager:
    """Starts, joins, reports and cancels snapshot downloads, one child process each."""

    def __init__(
        self, parallel_files: int = PARALLEL_FILES, read_chunk_bytes: int = READ_CHUNK_BYTES
    ) -> None:
        self._parallel = parallel_files
        self._read_chunk = read_chunk_bytes
        self._jobs: dict[tuple[str, str], _Job] = {}
        self._complete: dict[tuple[str, str], bool | None] = {}
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

    async def _run(self, job: _Job, revision: str | None, name: str | None) -> Path:
        progress = job.progress
        try:
            if hf_cache.hub_offline(job.env):
                return self._offline_result(job, name)
            request = DownloadRequest(
                progress.repo_id,
                revision,
                hf_cache.hub_endpoint(job.env),
                str(hf_cache.hub_cache_dir(job.env)),
                self._parallel,
                self._read_chunk,
            )
            path = await _DownloadChild(request, job.env).run(progress)
        except asyncio.CancelledError:
            self._fail(
                progress, DownloadError("cancelled", f"download of {progress.repo_id} was stopped")
            )
            raise
        except DownloadError as err:  # every failure becomes a status the user can read
            self._fail(progress, err)
            log.warning(
                "download %s@%s failed: %s", progress.repo_id, progress.revision, err.message
            )
            raise
        progress.state = DownloadState.DONE
        progress.finished_at = time.time()
        progress.files.clear()
        log.info(
            "download %s@%s done (%d bytes)",
            progress.repo_id,
            progress.revision,
            progress.bytes_done,
        )
        return path

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

    async def close(self) -> None:
        """Stop every download (hub shutdown); files not finished are fetched again next time."""
        self._closed = True
        running = [j for j in self._jobs.values() if j.task is not None and not j.task.done()]
        for job in running:
            assert job.task is not None
            job.task.cancel()  # each stops its child process before it ends
        await asyncio.gather(*(j.task for j in running if j.task), return_exceptions=True)
