"""Model actions with progress: POST each one, show a live line per model while it runs.

While an action waits, /hub/status is polled for the model's download and load progress:
a bar redrawn in place on a terminal, otherwise a plain line on stderr at most every
`PLAIN_INTERVAL_S` (stdout keeps only the result lines scripts read).
"""

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlx_openai_server_hub import tables
from mlx_openai_server_hub.cli.output import (
    LiveBlock,
    echo,
    flash,
    interactive,
    marks,
    spinner_frames,
    utf8_output,
)
from mlx_openai_server_hub.client import HubClient, HubClientError

PLAIN_INTERVAL_S = 5.0
_BAR_WIDTH = 20
_WITH_PROGRESS = ("start", "load")  # the actions that may download and load


@dataclass
class Outcome:
    """The result of one model action."""

    name: str
    ok: bool = False
    result: Any = None
    error: HubClientError | None = None
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def elapsed(self) -> float:
        """Seconds the action took (so far)."""
        return (self.finished or time.monotonic()) - self.started


class StatusPoller:
    """Keeps the latest /hub/status metadata per model, for progress lines."""

    def __init__(self, client: HubClient, interval: float = 0.5) -> None:
        self.meta: dict[str, dict[str, Any]] = {}
        self._client, self._interval = client, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        """Begin polling in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop polling (the thread ends after its current request)."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                snapshot = self._client.status(timeout=5.0)
                self.meta = {
                    str(e.get("id")): tables.metadata_of(e) for e in snapshot.get("models") or ()
                }
            except (HubClientError, AttributeError):
                pass
            self._stop.wait(self._interval)


def phase_of(meta: dict[str, Any]) -> str:
    """A one-word progress state: starting, loading, loaded, stopping, failed..."""
    process, memory = meta.get("process_state"), meta.get("memory_state")
    if memory in ("loading", "unloading") or (process == "running" and memory == "loaded"):
        return str(memory)
    return str(process or "waiting")


def progress_of(meta: dict[str, Any]) -> tuple[str, str, float | None] | None:
    """(phase, detail, fraction) of a download or load under way, from a model's status
    metadata: `downloading`, ` 43%  6.1 GB/14.2 GB ...`; `loading`, `70 %`; or `loading`,
    `12 s` when the model's size is not known. None when neither is under way; the
    fraction is None when there is no share to draw."""
    from mlx_openai_server_hub.pull import summary  # asyncio: only once there is progress

    download = meta.get("download")
    if isinstance(download, dict) and download.get("state") == "downloading":
        done, total = download.get("bytes_done"), download.get("bytes_total")
        fraction = min(done / total, 1.0) if total and done is not None else None
        return "downloading", summary(download), fraction
    if isinstance(download, dict) and download.get("state") == "queued":
        return "download", "queued", None
    if meta.get("memory_state") != "loading":
        return None
    share, elapsed = meta.get("load_progress"), meta.get("load_elapsed_s")
    if isinstance(share, int | float):
        return "loading", f"{share * 100:.0f} %", float(share)
    return "loading", f"{elapsed:.0f} s" if isinstance(elapsed, int | float) else "", None


_DONE_STATES = {"start": "loaded", "stop": "stopped", "load": "loaded", "unload": "unloaded"}


def _progress_lines(
    outcomes: Sequence[Outcome], poller: StatusPoller, action: str, tick: int
) -> list[str]:
    from mlx_openai_server_hub.pull import bar

    frames, (good, bad) = spinner_frames(), marks()
    width = max(len(o.name) for o in outcomes)
    lines = []
    for o in outcomes:
        meta, extra = poller.meta.get(o.name, {}), ""
        if o.finished is None:
            mark, state = frames[tick % len(frames)], phase_of(meta)
            if action == "start" and state in ("stopped", "failed"):
                state = "waiting"  # the hub has not taken it up yet
            progress = progress_of(meta) if action in _WITH_PROGRESS else None
            if progress is not None:
                state, detail, fraction = progress
                drawn = "" if fraction is None else bar(fraction, _BAR_WIDTH, utf8_output()) + " "
                extra = f"  {drawn}{detail}"
        elif o.ok:
            mark, state = good, _DONE_STATES.get(action, "done")
            if action == "start" and meta.get("jit_enabled"):
                state = "started"
        else:
            mark, state = bad, "failed"
        lines.append(f"  {mark} {o.name.ljust(width)}  {state:<11} {o.elapsed:6.1f}s{extra}")
    return lines


class PlainProgress:
    """Progress as plain lines (no terminal): one per model at most every `interval`
    seconds, the first after `interval` too (quick actions print nothing), and none
    while the text stays the same."""

    def __init__(self, interval: float = PLAIN_INTERVAL_S) -> None:
        self._interval = interval
        self._last: dict[str, tuple[float, str]] = {}

    def update(self, outcomes: Sequence[Outcome], poller: StatusPoller) -> None:
        """Print the lines due now, on stderr."""
        now = time.monotonic()
        for o in outcomes:
            progress = progress_of(poller.meta.get(o.name, {})) if o.finished is None else None
            if progress is None:
                continue
            text = " ".join(part for part in progress[:2] if part)
            since, shown = self._last.get(o.name, (o.started, ""))
            if text != shown and now - since >= self._interval:
                self._last[o.name] = (now, text)
                echo(f"{o.name}: {text}", err=True)


def run_model_actions(
    client: HubClient,
    names: Sequence[str],
    action: str,
    report: Callable[[Outcome], None],
    *,
    concurrent: bool = False,
) -> list[Outcome]:
    """POST `action` for each model and wait for every answer, however long it takes.

    On a terminal a live block shows one line per model (state, elapsed time, and a bar
    while it downloads or loads); otherwise `start` and `load` print plain progress lines
    on stderr now and then (see `PlainProgress`). `report` is
    called for each outcome: as each finishes when sequential, in `names` order at the end
    when concurrent.
    """
    outcomes = [Outcome(name) for name in names]

    def work(outcome: Outcome) -> None:
        outcome.started = time.monotonic()
        try:
            outcome.result = client.model_action(outcome.name, action)
            outcome.ok = True
        except HubClientError as exc:
            outcome.error = exc
        finally:
            outcome.finished = time.monotonic()

    live, block, poller = interactive(), LiveBlock(), StatusPoller(client)
    plain = None if live or action not in _WITH_PROGRESS else PlainProgress()
    if live or plain is not None:
        poller.start()
    try:
        for batch in [outcomes] if concurrent else [[o] for o in outcomes]:
            threads = [threading.Thread(target=work, args=(o,), daemon=True) for o in batch]
            for thread in threads:
                thread.start()
            tick = 0
            while any(t.is_alive() for t in threads):
                if live:
                    block.draw(_progress_lines(batch, poller, action, tick))
                elif plain is not None:
                    plain.update(batch, poller)
                tick += 1
                for thread in threads:
                    thread.join(0.1 / len(threads))
            block.clear()
            if not concurrent:
                report(batch[0])
    except KeyboardInterrupt:
        block.clear()
        flash("warn", f"Stopped waiting; the hub carries on with the {action} request(s)")
        raise SystemExit(130) from None
    finally:
        poller.stop()
    if concurrent:
        for outcome in outcomes:
            report(outcome)
    return outcomes


def clean_names(names: Sequence[str] | None) -> list[str]:
    """Names stripped; blank entries are warned about and dropped."""
    cleaned = []
    for raw in names or ():
        if raw.strip():
            cleaned.append(raw.strip())
        else:
            flash("warn", "Skipping blank model name entry")
    return cleaned
