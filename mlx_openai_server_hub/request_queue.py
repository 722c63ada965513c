"""A per-model admission queue: at most `max_concurrency` requests in flight, the rest wait FIFO.

The hub enforces a model's `max_concurrency` itself, whatever the installed
worker does with the flag (mlx-openai-server 1.8.x only warns about it):

- a request is admitted at once when a slot is free *and nobody is waiting*
  (so a newcomer never overtakes the queue);
- otherwise it waits in arrival order; a released slot is handed straight to
  the oldest waiter, never put back up for grabs;
- the `queue_size + 1`-th waiter gets a 429 with `Retry-After`; a waiter that
  sees no slot within `queue_timeout` gets a 503; a waiter whose client hangs
  up (its task is cancelled) leaves the queue at once.

A ticket that holds a slot but is still waiting for its model to load counts
as *queued* until `RequestQueue.start(ticket)`: from the client's side it is waiting,
and idle/eviction logic must not see it as work in flight. Without a
`max_concurrency` nothing waits here (a worker that batches concurrent
requests keeps doing so); the counts are still kept for status and metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable

import attrs

from .errors import HubError

DEFAULT_QUEUE_SIZE = 100
DEFAULT_QUEUE_TIMEOUT = 300.0
# Weight of the newest slot hold time in the running average behind Retry-After.
_HOLD_EWMA_WEIGHT = 0.2
_RETRY_AFTER_MAX_SECONDS = 60


@attrs.frozen
class QueueLimits:
    """A model's queue settings (`max_concurrency` None: no hub-side limit)."""

    max_concurrency: int | None = None
    queue_size: int = DEFAULT_QUEUE_SIZE
    queue_timeout: float = DEFAULT_QUEUE_TIMEOUT


@attrs.frozen
class QueueStats:
    """What `/v1/queue/stats` and `/hub/status` report for one model."""

    active_requests: int
    queued_requests: int
    max_concurrency: int | None
    queue_size: int
    queue_timeout: float


def limits_from(
    max_concurrency: int | None, queue_size: int | None, queue_timeout: float | None
) -> QueueLimits:
    """QueueLimits from a model's hub.yaml keys, unset ones taking the defaults."""
    return QueueLimits(
        max_concurrency=max_concurrency,
        queue_size=DEFAULT_QUEUE_SIZE if queue_size is None else queue_size,
        queue_timeout=DEFAULT_QUEUE_TIMEOUT if queue_timeout is None else float(queue_timeout),
    )


class Ticket:
    """One request's place: waiting for a slot, then holding one until released."""

    __slots__ = ("_started", "admitted_at", "arrived_at", "released", "started_at")

    def __init__(self, now: float) -> None:
        self.arrived_at = now
        self.admitted_at: float | None = None
        self.started_at: float | None = None
        self._started = False
        self.released = False

    @property
    def is_started(self) -> bool:
        """True once the request is being served (no longer waiting for slot or load)."""
        return self._started

    def wait_seconds(self, now: float) -> float:
        """Seconds spent queued: until started, or until `now` if still waiting."""
        end = self.started_at if self.started_at is not None else now
        return max(0.0, end - self.arrived_at)


class RequestQueue:
    """The admission queue of one model. All methods run on the event loop."""

    def __init__(
        self, model: str, limits: QueueLimits, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.model = model
        self.limits = limits
        self._clock = clock
        self._waiters: dict[Ticket, asyncio.Future[None]] = {}  # insertion order = FIFO
        self._holding = 0  # tickets holding a slot, started or not
        self._pending = 0  # tickets holding a slot but not yet started
        self._hold_ewma: float | None = None

    # ----------------------------------------------------------- counts

    @property
    def active(self) -> int:
        """Requests being served (holding a slot and started)."""
        return self._holding - self._pending

    @property
    def queued(self) -> int:
        """Requests waiting: for a slot, or holding one while their model loads."""
        return len(self._waiters) + self._pending

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot (not those holding one while their model loads)."""
        return len(self._waiters)

    @property
    def busy(self) -> bool:
        """True while any request is served or waiting (the model is not idle)."""
        return self._holding > 0 or bool(self._waiters)

    def would_wait(self) -> bool:
        """True when a request arriving now would have to wait for a slot."""
        return bool(self._waiters) or not self._has_free_slot()

    def stats(self) -> QueueStats:
        """A snapshot of the counts and limits."""
        return QueueStats(
            active_requests=self.active,
            queued_requests=self.queued,
            max_concurrency=self.limits.max_concurrency,
            queue_size=self.limits.queue_size,
            queue_timeout=self.limits.queue_timeout,
        )

    def reconfigure(self, limits: QueueLimits) -> None:
        """New limits (a reload); a raised `max_concurrency` admits waiters at once."""
        self.limits = limits
        self._grant_waiters()

    # -------------------------------------------------------- admission

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[Ticket]:
        """Wait for a slot (FIFO) and hold it for the block; see `admit`."""
        ticket = await self.admit()
        try:
            yield ticket
        finally:
            self.release(ticket)

    async def admit(self) -> Ticket:
        """A ticket holding a slot; raises HubError 429 (queue full) or 503 (timed out).

        A cancelled caller (client disconnect) leaves the queue before the
        CancelledError propagates; a slot granted in that same instant is
        passed on to the next waiter.
        """
        ticket = Ticket(self._clock())
        if not self._waiters and self._has_free_slot():
            self._take_slot(ticket)
            return ticket
        if len(self._waiters) >= self.limits.queue_size:
            raise self._full_error()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[ticket] = future
        try:
            async with asyncio.timeout(self.limits.queue_timeout):
                await future
        except BaseException as exc:
            if self._waiters.pop(ticket, None) is None and future.done():
                # Granted just as the wait ended: this ticket holds a slot it will not use.
                self.release(ticket)
            if isinstance(exc, TimeoutError):
                raise self._timeout_error() from None
            raise
        return ticket

    def release(self, ticket: Ticket) -> None:
        """Give the ticket's slot back (idempotent); the oldest waiter gets it."""
        if ticket.released or ticket.admitted_at is None:
            return
        ticket.released = True
        now = self._clock()
        self._holding -= 1
        if ticket.started_at is not None:
            held = now - ticket.started_at
            self._hold_ewma = (
                held
                if self._hold_ewma is None
                else self._hold_ewma + _HOLD_EWMA_WEIGHT * (held - self._hold_ewma)
            )
        else:
            self._pending -= 1
        self._grant_waiters()

    def start(self, ticket: Ticket) -> None:
        """The ticket's request is now served (its model is loaded): queued → active."""
        if ticket.is_started or ticket.released or ticket.admitted_at is None:
            return
        ticket._started = True
        ticket.started_at = self._clock()
        self._pending -= 1

    # ---------------------------------------------------------- internals

    def _has_free_slot(self) -> bool:
        cap = self.limits.max_concurrency
        return cap is None or self._holding < cap

    def _take_slot(self, ticket: Ticket) -> None:
        ticket.admitted_at = self._clock()
        self._holding += 1
        self._pending += 1

    def _grant_waiters(self) -> None:
        while self._waiters and self._has_free_slot():
            ticket = next(iter(self._waiters))
            future = self._waiters.pop(ticket)
            if future.done():  # its task was cancelled; the except block cleans up
                continue
            self._take_slot(ticket)
            future.set_result(None)

    def retry_after(self) -> int:
        """Whole seconds after which a retry may find room (the `Retry-After` value)."""
        cap = self.limits.max_concurrency or 1
        per_request = self._hold_ewma if self._hold_ewma is not None else 1.0
        estimate = per_request * (self.queued + 1) / cap
        ceiling = min(_RETRY_AFTER_MAX_SECONDS, max(1, math.ceil(self.limits.queue_timeout)))
        return max(1, min(ceiling, math.ceil(estimate)))

    def _full_error(self) -> HubError:
        limits = self.limits
        seconds = self.retry_after()
        return HubError(
            f"Model '{self.model}' is busy: its request queue is full "
            f"({len(self._waiters)} waiting, queue_size {limits.queue_size}; "
            f"{self._holding} in flight, max_concurrency {limits.max_concurrency}). "
            f"Retry after {seconds} s.",
            429,
            "rate_limit_error",
            headers={"Retry-After": str(seconds)},
        )

    def _timeout_error(self) -> HubError:
        limits = self.limits
        return HubError(
            f"Model '{self.model}': no free slot within {limits.queue_timeout:g} s "
            f"(queue_timeout) in its request queue ({self._holding} in flight, "
            f"max_concurrency {limits.max_concurrency}; {len(self._waiters)} waiting)",
            503,
            "service_unavailable",
        )
