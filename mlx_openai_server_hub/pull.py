"""`pull`: download models without loading them, with progress and exit codes.

With a running hub the CLI asks it (`POST /hub/models/{name}/pull`, then
polls `/hub/status`), so the status page shows the download too; without
one it downloads itself through the same `DownloadManager`. Drawing is
injected (`draw` redraws a block of lines on a terminal) so this module
does not depend on the CLI's own helpers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from .hf_cache import is_repo_id

if TYPE_CHECKING:
    from .client import HubClient
    from .config import HubConfig

# Exit codes scripts can rely on (also in docs/cli.md).
EXIT_OK = 0
EXIT_FAILED = 1  # network trouble, disk full, anything else: a retry may work
EXIT_USAGE = 2  # unknown model name, not a repo id
EXIT_NOT_FOUND = 3  # 404, unknown revision, gated repo without access: retrying will not help
EXIT_OFFLINE = 4  # HF_HUB_OFFLINE is set and the snapshot is missing
EXIT_INTERRUPTED = 130
_EXIT_OF_KIND = {
    "not_found": EXIT_NOT_FOUND,
    "revision_not_found": EXIT_NOT_FOUND,
    "gated": EXIT_NOT_FOUND,
    "offline": EXIT_OFFLINE,
    "cancelled": EXIT_INTERRUPTED,
}
FINAL_STATES = ("done", "failed")
PLAIN_INTERVAL_S = 5.0


@attrs.frozen
class PullTarget:
    """One thing to pull: a configured model (`name`) or a bare repo id."""

    label: str
    repo_id: str
    revision: str | None = None
    name: str | None = None  # set when the model is in hub.yaml
    env: Mapping[str, str] = attrs.field(factory=dict, repr=False)


class PullUsageError(Exception):
    """An argument that is neither a configured model nor a repo id."""


def resolve_targets(cfg: HubConfig | None, args: Sequence[str]) -> list[PullTarget]:
    """Turn `NAME|REPO` arguments into targets (configured names first)."""
    targets = []
    for arg in args:
        model = cfg.model(arg) if cfg is not None else None
        if model is not None:
            if not is_repo_id(model.model_path):
                raise PullUsageError(
                    f"model '{arg}' uses the local path {model.model_path}; nothing to pull"
                )
            revision = getattr(model, "revision", None)
            targets.append(PullTarget(arg, model.model_path, revision, arg, dict(model.env)))
        elif is_repo_id(arg):
            targets.append(PullTarget(arg, arg))
        else:
            raise PullUsageError(f"'{arg}' is neither a model in hub.yaml nor a repo id (org/name)")
    return targets


def exit_code(results: Mapping[str, dict[str, Any] | None]) -> int:
    """The worst outcome among finished downloads, as an exit code."""
    codes = [EXIT_OK]
    for status in results.values():
        if status is None or status.get("state") != "done":
            kind = (status or {}).get("error_kind")
            codes.append(_EXIT_OF_KIND.get(str(kind), EXIT_FAILED))
    return worst_exit(codes)


def worst_exit(codes: Sequence[int]) -> int:
    """The exit code that wins among several runs' codes (EXIT_OK for none)."""
    # Interrupted wins (the user asked), then "will not work", then transient.
    order = [EXIT_INTERRUPTED, EXIT_OFFLINE, EXIT_NOT_FOUND, EXIT_FAILED]
    return next((code for code in order if code in codes), EXIT_OK)


# --- formatting ------------------------------------------------------------------------


def human_bytes(n: float | None) -> str:
    """`6.1 GB` (decimal units, as the Hub shows sizes)."""
    if n is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def human_eta(seconds: float | None) -> str:
    """`2m05s`, `1h02m`, or `--` when unknown."""
    if seconds is None:
        return "--"
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _fraction(done: int | None, total: int | None) -> float | None:
    return min(done / total, 1.0) if total and done is not None else None


def bar(fraction: float | None, width: int, utf8: bool) -> str:
    """A `width`-cell progress bar, `████░░░░` (`####....` without UTF-8)."""
    full, empty = ("█", "░") if utf8 else ("#", ".")
    filled = round((fraction or 0.0) * width)
    return full * filled + empty * (width - filled)


def _percent(fraction: float | None) -> str:
    return f"{fraction * 100:3.0f}%" if fraction is not None else "  ?%"


def summary(status: Mapping[str, Any]) -> str:
    """`43%  6.1/14.2 GB  52.3 MB/s  ETA 2m40s  files 3/12`."""
    fraction = _fraction(status.get("bytes_done"), status.get("bytes_total"))
    rate = status.get("rate_bytes_per_s")
    return (
        f"{_percent(fraction)}  {human_bytes(status.get('bytes_done'))}"
        f"/{human_bytes(status.get('bytes_total'))}"
        f"  {human_bytes(rate) + '/s' if rate else '-- /s'}  ETA {human_eta(status.get('eta_s'))}"
        f"  files {status.get('files_done') or 0}/{status.get('files_total') or '?'}"
    )


def final_line(label: str, status: Mapping[str, Any] | None) -> str:
    """`qwen: done, 14.2 GB in 12 files` or `qwen: failed: <why>`."""
    if status is None:
        return f"{label}: no download"
    if status.get("state") == "done":
        return (
            f"{label}: done, {human_bytes(status.get('bytes_total'))}"
            f" in {status.get('files_total')} files"
        )
    return f"{label}: failed: {status.get('error') or 'unknown error'}"


def terminal_lines(
    statuses: Mapping[str, Mapping[str, Any] | None], utf8: bool = True
) -> list[str]:
    """A bar per model and per file in flight, for a terminal."""
    lines = []
    for label, status in statuses.items():
        if status is None or status.get("state") in FINAL_STATES:
            lines.append(final_line(label, status) if status else f"{label}: waiting")
            continue
        fraction = _fraction(status.get("bytes_done"), status.get("bytes_total"))
        lines.append(f"{label} {bar(fraction, 24, utf8)} {summary(status)}")
        for name, file in (status.get("files") or {}).items():
            part = _fraction(file.get("bytes_done"), file.get("bytes_total"))
            lines.append(
                f"  {name[-40:]:<40} {bar(part, 12, utf8)} {_percent(part)}"
                f"  {human_bytes(file.get('bytes_done'))}/{human_bytes(file.get('bytes_total'))}"
            )
    return lines


def plain_line(label: str, status: Mapping[str, Any]) -> str:
    """`qwen: downloading 43%  6.1/14.2 GB ...` for logs and pipes."""
    return f"{label}: {status.get('state')} {summary(status)}"


class ProgressView:
    """Shows progress: redrawn bars on a terminal, periodic plain lines otherwise."""

    def __init__(
        self,
        write: Callable[[str], None],
        draw: Callable[[list[str]], None] | None = None,
        utf8: bool = True,
        interval: float = PLAIN_INTERVAL_S,
    ) -> None:
        self._write, self._draw, self._utf8, self._interval = write, draw, utf8, interval
        self._last_plain = 0.0
        self._reported: set[str] = set()
        self._begun: set[str] = set()

    def update(self, statuses: Mapping[str, Mapping[str, Any] | None]) -> None:
        """Show the latest numbers; finished models get one final line each."""
        if self._draw is not None:
            self._draw(terminal_lines(statuses, self._utf8))
            return
        now = time.monotonic()
        periodic = now - self._last_plain >= self._interval
        for label, status in statuses.items():
            if status is None or label in self._reported:
                continue
            if status.get("state") in FINAL_STATES:
                self._reported.add(label)
                self._write(final_line(label, status))
            # Queued has no numbers yet; the first line comes as the transfer begins.
            elif status.get("state") == "downloading" and (periodic or label not in self._begun):
                self._begun.add(label)
                self._write(plain_line(label, status))
        if periodic:
            self._last_plain = now

    def finish(self, statuses: Mapping[str, Mapping[str, Any] | None]) -> None:
        """The last frame, then the final lines if the terminal block hid them."""
        self.update(statuses)
        if self._draw is None:
            for label, status in statuses.items():
                if status is None and label not in self._reported:
                    self._write(final_line(label, status))


# --- running -----------------------------------------------------------------------------


def pull_locally(targets: Sequence[PullTarget], view: ProgressView, poll: float = 0.2) -> int:
    """Download in this process (no hub running); returns the exit code."""
    from .downloads import DownloadManager

    statuses: dict[str, dict[str, Any] | None] = {t.label: None for t in targets}

    async def run() -> None:
        manager = DownloadManager()
        try:
            jobs = [manager.start(t.repo_id, t.revision, t.name, t.env) for t in targets]
            while True:
                for target, job in zip(targets, jobs, strict=True):
                    statuses[target.label] = job.as_dict()
                view.update(statuses)
                if all(job.state.value in FINAL_STATES for job in jobs):
                    return
                await asyncio.sleep(poll)
        finally:
            await manager.close()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        view.finish(statuses)
        return EXIT_INTERRUPTED
    view.finish(statuses)
    return exit_code(statuses)


def _hub_download(client: HubClient, name: str) -> dict[str, Any] | None:
    snapshot = client.status(timeout=10.0)
    for entry in snapshot.get("models") or ():
        if entry.get("id") == name:
            meta = entry.get("metadata") or {}
            download = meta.get("download")
            return download if isinstance(download, dict) else None
    return None


def pull_via_hub(
    client: HubClient, targets: Sequence[PullTarget], view: ProgressView, poll: float = 0.5
) -> int:
    """Ask a running hub to download configured models, showing its progress."""
    from .client import HubHTTPError

    statuses: dict[str, dict[str, Any] | None] = {}
    for target in targets:
        assert target.name is not None
        try:
            reply = client.request("POST", f"/hub/models/{target.name}/pull")
            statuses[target.label] = (reply or {}).get("download")
        except HubHTTPError as exc:
            kind = _kind_of_status(exc.status)
            statuses[target.label] = {"state": "failed", "error": exc.message, "error_kind": kind}
    try:
        while True:
            for target in targets:
                current = statuses.get(target.label)
                if current is None or current.get("state") not in FINAL_STATES:
                    statuses[target.label] = _hub_download(client, str(target.name)) or current
            view.update(statuses)
            if all((s or {}).get("state") in FINAL_STATES for s in statuses.values()):
                break
            time.sleep(poll)
    except KeyboardInterrupt:
        # The hub keeps downloading (others may be waiting on it); only this view stops.
        view.finish(statuses)
        return EXIT_INTERRUPTED
    view.finish(statuses)
    return exit_code(statuses)


def _kind_of_status(status: int) -> str:
    return {404: "not_found", 403: "gated", 503: "offline"}.get(status, "failed")
