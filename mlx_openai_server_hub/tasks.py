"""Background jobs the hub owns: named, logged when they fail, cancelled on shutdown.

Why not aiojobs: its `Scheduler.spawn` is a coroutine, but the hub starts jobs
from synchronous places (timer callbacks, the launch-help cache, reconciling a
reload) and needs the task object at once (a load is joined by every request
waiting for it). The one aiojobs feature we would use, `shield`, is `run_shielded`
below.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from .errors import HubError

logger = logging.getLogger("mlx_hub.tasks")
T = TypeVar("T")


class OwnedTasks:
    """A set of named tasks that end together."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = False

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Run `coro` as an owned task called `name`."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    async def run_shielded(self, coro: Coroutine[Any, Any, T], name: str) -> T:
        """Run `coro` as an owned task and wait for it; cancelling the caller
        (a client hanging up) does not cancel the task, closing the set does."""
        return await asyncio.shield(self.spawn(coro, name))

    async def close(self) -> None:
        """Cancel every task and wait until all have ended."""
        self.closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, HubError):
            logger.error("Task %s failed", task.get_name(), exc_info=exc)
