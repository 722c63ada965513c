"""Model actions with progress: POST each one, show a live line per model while it runs."""

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlx_openai_server_hub import tables
from mlx_openai_server_hub.cli.output import LiveBlock, flash, interactive, marks, spinner_frames
from mlx_openai_server_hub.client import HubClient, HubClientError


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


_DONE_STATES = {"start": "loaded", "stop": "stopped", "load": "loaded", "unload": "unloaded"}


def _progress_lines(
    outcomes: Sequence[Outcome], poller: StatusPoller, action: str, tick: int
) -> list[str]:
    frames, (good, bad) = spinner_frames(), marks()
    width = max(len(o.name) for o in outcomes)
    lines = []
    for o in outcomes:
        if o.finished is None:
            mark, state = frames[tick % len(frames)], phase_of(poller.meta.get(o.name, {}))
            if action == "start" and state in ("stopped", "failed"):
                state = "waiting"  # the hub has not taken it up yet
        elif o.ok:
            mark, state = good, _DONE_STATES.get(action, "done")
            if action == "start" and poller.meta.get(o.name, {}).get("jit_enabled"):
                state = "started"
        else:
            mark, state = bad, "failed"
        lines.append(f"  {mark} {o.name.ljust(width)}  {state:<9} {o.elapsed:6.1f}s")
    return lines


def run_model_actions(
    client: HubClient,
    names: Sequence[str],
    action: str,
    report: Callable[[Outcome], None],
    *,
    concurrent: bool = False,
) -> list[Outcome]:
    """POST `action` for each model and wait for every answer, however long it takes.

    On a terminal a live block shows one line per model (state, elapsed time). `report` is
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
    if live:
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
