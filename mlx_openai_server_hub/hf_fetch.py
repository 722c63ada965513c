"""Blocking Hugging Face Hub calls, run in the download child process (`download_process`).

Everything here may block for minutes (network, disk) and must never run in the
hub's process, let alone on its event loop. Files are fetched one `hf_hub_download`
call each, so every file gets its own progress (snapshot_download only reports an
aggregate) and lands in the standard cache exactly as the worker expects it.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from .download_protocol import DownloadError
from .hf_cache import DEFAULT_REVISION, repo_cache_dir

# Called from download threads with (file name, bytes just received); a
# negative count means the library rolled back bytes it must fetch again.
ByteSink = Callable[[str, int], None]
# Called once per file when its transfer starts: (file name, total, resumed bytes).
FileStart = Callable[[str, int | None, int], None]

# Progress is reported at most this often per file (plus once at the end), so
# a fast download does not flood the hub's event loop with progress lines.
REPORT_INTERVAL_S = 0.1


class DownloadCancelled(Exception):
    """Raised inside a download thread when the hub asked it to stop."""


@attrs.frozen
class RemoteFile:
    """One file of a repo snapshot as the Hub lists it."""

    name: str
    size: int | None


@attrs.frozen
class RepoListing:
    """A repo revision resolved to its commit and file list."""

    repo_id: str
    revision: str
    commit: str
    files: tuple[RemoteFile, ...]

    @property
    def bytes_total(self) -> int:
        """Sum of the known file sizes."""
        return sum(f.size or 0 for f in self.files)


@attrs.frozen
class HubSettings:
    """Where and how to reach the Hub, read from the environment once per download."""

    endpoint: str
    cache_dir: Path
    token: str | None = attrs.field(default=None, repr=False)  # never printed


def list_remote(repo_id: str, revision: str | None, settings: HubSettings) -> RepoListing:
    """Resolve `revision` to a commit and list the snapshot's files with sizes."""
    api = HfApi(endpoint=settings.endpoint, token=settings.token)
    info = api.model_info(repo_id, revision=revision, files_metadata=True, token=settings.token)
    if not info.sha:
        raise DownloadError("failed", f"{settings.endpoint} gave no commit for {repo_id}")
    files = tuple(RemoteFile(s.rfilename, s.size) for s in info.siblings or [])
    return RepoListing(repo_id, revision or DEFAULT_REVISION, info.sha, files)


def cached_files(listing: RepoListing, cache_dir: Path) -> set[str]:
    """Names of the listing's files already in the cached snapshot."""
    snap = repo_cache_dir(listing.repo_id, cache_dir) / "snapshots" / listing.commit
    return {f.name for f in listing.files if (snap / f.name).is_file()}


def _progress_class(
    name: str, on_start: FileStart, on_bytes: ByteSink, cancel: threading.Event
) -> type:
    """A tqdm stand-in that forwards one file's progress to the manager.

    huggingface_hub creates it with `total`/`initial` and calls `update(n)`
    per chunk; raising from `update` is how a cancelled download stops
    mid-file (the library removes its temporary file). Bytes are batched
    and forwarded every `REPORT_INTERVAL_S`, and whatever is left when the
    library closes the bar (before `hf_hub_download` returns).
    """

    class _FileProgress:
        def __init__(
            self, *args: Any, total: int | None = None, initial: int = 0, **kwargs: Any
        ) -> None:
            self.total, self.n = total, initial
            self._pending, self._reported_at = 0, time.monotonic()
            on_start(name, total, initial)

        def update(self, n: float | None = 1) -> None:
            if cancel.is_set():
                raise DownloadCancelled(name)
            self.n += int(n or 0)
            self._pending += int(n or 0)
            # A rollback (negative n) is passed on at once so the total never overshoots.
            due = time.monotonic() - self._reported_at >= REPORT_INTERVAL_S
            if due or (n or 0) < 0:
                self._flush()

        def _flush(self) -> None:
            if self._pending:
                on_bytes(name, self._pending)
            self._pending, self._reported_at = 0, time.monotonic()

        def __enter__(self) -> _FileProgress:
            return self

        def __exit__(self, *exc: object) -> None:
            self._flush()

        def _ignore(self, *args: Any, **kwargs: Any) -> None:
            return None

        # Having `update_transfer` makes huggingface_hub's Xet reporter route
        # network bytes into this one bar instead of making a second bar
        # from this class (which would count every byte twice).
        update_transfer = set_transfer_postfix_str = _ignore
        refresh = set_postfix_str = set_description = set_description_str = _ignore

        def close(self) -> None:
            self._flush()

    return _FileProgress


def fetch_file(
    listing: RepoListing,
    name: str,
    settings: HubSettings,
    on_start: FileStart,
    on_bytes: ByteSink,
    cancel: threading.Event,
) -> None:
    """Download one file of the snapshot into the cache (a no-op when it is there)."""
    if cancel.is_set():
        raise DownloadCancelled(name)
    hf_hub_download(
        listing.repo_id,
        name,
        revision=listing.commit,
        cache_dir=settings.cache_dir,
        endpoint=settings.endpoint,
        token=settings.token,
        tqdm_class=_progress_class(name, on_start, on_bytes, cancel),
    )


def write_ref(listing: RepoListing, cache_dir: Path) -> None:
    """Point `refs/<revision>` at the commit, as snapshot_download does, atomically."""
    if listing.revision == listing.commit:
        return
    refs = repo_cache_dir(listing.repo_id, cache_dir) / "refs"
    target = refs / listing.revision
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(listing.commit)
    os.replace(tmp, target)


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and everything it was raised from."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _is_network(exc: BaseException) -> bool:
    """Connection refused/reset, DNS, timeouts: whatever the HTTP library calls them."""
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    name = type(exc).__name__
    return any(
        word in name
        for word in ("Connect", "Timeout", "RemoteProtocol", "ReadError", "NetworkError")
    )


def classify(
    exc: BaseException, repo_id: str, settings: HubSettings, has_token: bool
) -> DownloadError:
    """Turn whatever a download raised into a `DownloadError` a user can act on."""
    chain = _chain(exc)
    where = f"{repo_id} from {settings.endpoint}"
    for err in chain:
        if isinstance(err, DownloadError):
            return err
        if isinstance(err, DownloadCancelled):
            return DownloadError(
                "cancelled", f"download of {repo_id} was stopped; the next try resumes"
            )
        if isinstance(err, GatedRepoError):
            fix = (
                "your token has no access: accept the model's terms on its page"
                if has_token
                else "accept the model's terms on its page and set a token "
                "(HF_TOKEN or `hf auth login`)"
            )
            return DownloadError("gated", f"{repo_id} is a gated repo: {fix}")
        if isinstance(err, RevisionNotFoundError):
            return DownloadError(
                "revision_not_found", f"revision not found for {where}: check `revision`"
            )
        if isinstance(err, RepositoryNotFoundError):
            return DownloadError(
                "not_found",
                f"{where}: repository not found (404); check `model_path` "
                "(a private repo needs a token)",
            )
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return DownloadError(
                "disk_full",
                f"disk full while downloading {repo_id} into {settings.cache_dir}: "
                "free space and retry",
            )
    for err in chain:
        if _is_network(err):
            return DownloadError("network", f"cannot download {where}: {err}; the next try resumes")
        if isinstance(err, HfHubHTTPError):
            return DownloadError("failed", f"cannot download {where}: {str(err).splitlines()[0]}")
    return DownloadError("failed", f"cannot download {where}: {type(exc).__name__}: {exc}")
