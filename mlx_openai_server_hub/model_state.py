"""What a model's controller shares with the rest of the hub.

The controller (controller.py) owns a model's state; these are the shapes in
which others see it (`ModelSnapshot`, `Target`), hear about it (`Change`,
`ChangeSignal`) and how a request waits (`WhileWaiting`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Callable

import attrs

from .config import ModelConfig
from .request_queue import QueueStats
from .standby import StandbyInfo
from .states import MemoryState, ProcessState


class Change(enum.Enum):
    """What a controller announces."""

    STATE = "state"  # process or memory state, or a counter waiters may watch
    WORKER = "worker"  # a worker process appeared or went away


# Runs around a request's wait for a slot or a load (the proxy keeps streams alive).
WhileWaiting = Callable[[], contextlib.AbstractAsyncContextManager[None]]


@attrs.frozen
class Target:
    """Where the proxy sends a request for a loaded model."""

    name: str
    base_url: str
    upstream_model: str
    request_timeout: float
    # Seconds the request waited for a slot and its model's load.
    queue_wait: float = 0.0


@attrs.frozen
class ModelSnapshot:
    """One model's state at one moment, for status pages and listings."""

    config: ModelConfig
    process: ProcessState
    memory: MemoryState
    pid: int | None  # the worker's, else the standby's
    standby: StandbyInfo | None
    port: int | None
    started_at: float | None
    stopped_at: float | None
    exit_code: int | None
    memory_changed_at: float | None
    loaded_at: float | None
    unloaded_at: float | None
    memory_error: str | None
    in_flight: int
    queue: QueueStats
    last_request_at: float | None
    unload_at: float | None
    failed_loads: int
    warnings: tuple[str, ...]


class ChangeSignal:
    """Wakes everyone waiting for any model's change."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        """Wake every waiter (each then re-checks what it waits for)."""
        self._event.set()
        self._event = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float | None) -> None:
        """Wait until `predicate()` holds; TimeoutError after `timeout` seconds."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await self._event.wait()

    async def wait_any(self, timeout: float) -> None:
        """Wait for the next change, at most `timeout` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
