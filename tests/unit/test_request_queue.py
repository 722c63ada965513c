"""The per-model admission queue: FIFO, 429 when full, 503 on timeout, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from mlx_openai_server_hub.errors import HubError
from mlx_openai_server_hub.request_queue import (
    QueueLimits,
    RequestQueue,
    Ticket,
    limits_from,
)


async def _settle() -> None:
    """Let every ready task run (grants are handed over via futures)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def _hold(queue: RequestQueue, order: list[int], i: int, gate: asyncio.Event) -> None:
    async with queue.slot() as ticket:
        queue.start(ticket)
        order.append(i)
        await gate.wait()


async def test_waiters_are_admitted_in_arrival_order():
    queue = RequestQueue("m", QueueLimits(max_concurrency=2, queue_size=50, queue_timeout=30))
    gate = asyncio.Event()
    order: list[int] = []
    tasks = []
    for i in range(20):
        tasks.append(asyncio.create_task(_hold(queue, order, i, gate)))
        await asyncio.sleep(0)
    await _settle()
    assert order == [0, 1]
    assert (queue.active, queue.queued) == (2, 18)
    gate.set()
    await asyncio.gather(*tasks)
    assert order == list(range(20))
    assert (queue.active, queue.queued, queue.busy) == (0, 0, False)


async def test_a_newcomer_never_overtakes_a_waiter():
    queue = RequestQueue("m", QueueLimits(max_concurrency=1, queue_size=5, queue_timeout=30))
    first = await queue.admit()
    waiter = asyncio.create_task(queue.admit())
    await _settle()
    queue.release(first)
    # The slot went to the waiter before the newcomer could look at it.
    newcomer = asyncio.create_task(queue.admit())
    await _settle()
    assert waiter.done() and not newcomer.done()
    queue.release(waiter.result())
    queue.release(await newcomer)
    assert queue.stats().active_requests == 0


async def test_a_full_queue_answers_429_with_retry_after_naming_model_and_queue():
    queue = RequestQueue("qwen", QueueLimits(max_concurrency=1, queue_size=2, queue_timeout=30))
    held = await queue.admit()
    waiters = [asyncio.create_task(queue.admit()) for _ in range(2)]
    await _settle()
    with pytest.raises(HubError) as caught:
        await queue.admit()
    err = caught.value
    assert err.status == 429
    assert err.error_type == "rate_limit_error"
    assert "qwen" in err.message and "queue_size 2" in err.message
    assert int(err.headers["Retry-After"]) >= 1
    response = err.response()
    assert response.status == 429 and response.headers["Retry-After"] == err.headers["Retry-After"]
    queue.release(held)
    for task in waiters:
        queue.release(await task)


async def test_queue_size_zero_refuses_at_once_when_busy():
    queue = RequestQueue("m", QueueLimits(max_concurrency=1, queue_size=0, queue_timeout=30))
    held = await queue.admit()
    with pytest.raises(HubError, match="queue is full"):
        await queue.admit()
    queue.release(held)
    queue.release(await queue.admit())


async def test_a_waiter_past_queue_timeout_gets_503_and_leaves_the_queue():
    queue = RequestQueue("m", QueueLimits(max_concurrency=1, queue_size=5, queue_timeout=0.05))
    held = await queue.admit()
    with pytest.raises(HubError) as caught:
        await queue.admit()
    assert caught.value.status == 503
    assert "queue_timeout" in caught.value.message and "'m'" in caught.value.message
    assert queue.queued == 1  # only the held, not-yet-started ticket
    queue.start(held)
    assert queue.queued == 0
    queue.release(held)
    assert not queue.busy


async def test_a_cancelled_waiter_leaves_at_once_and_the_next_one_gets_the_slot():
    queue = RequestQueue("m", QueueLimits(max_concurrency=1, queue_size=5, queue_timeout=30))
    held = await queue.admit()
    queue.start(held)
    gone = asyncio.create_task(queue.admit())
    nxt = asyncio.create_task(queue.admit())
    await _settle()
    assert queue.queued == 2
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    assert queue.queued == 1  # left at once, not when a slot frees
    queue.release(held)
    await _settle()
    assert nxt.done()
    queue.release(nxt.result())
    assert not queue.busy


async def test_a_slot_granted_to_a_waiter_cancelled_in_the_same_instant_is_passed_on():
    queue = RequestQueue("m", QueueLimits(max_concurrency=1, queue_size=5, queue_timeout=30))
    held = await queue.admit()
    first = asyncio.create_task(queue.admit())
    second = asyncio.create_task(queue.admit())
    await _settle()
    queue.release(held)  # grants `first` ...
    first.cancel()  # ... which is cancelled before it resumes
    await asyncio.gather(first, return_exceptions=True)
    await _settle()
    assert first.cancelled()
    assert second.done()
    assert queue.active + queue.queued == 1
    queue.release(second.result())
    assert not queue.busy


async def test_no_max_concurrency_never_waits_but_still_counts():
    queue = RequestQueue("m", QueueLimits(max_concurrency=None, queue_size=0))
    tickets = [await queue.admit() for _ in range(50)]
    assert queue.queued == 50  # admitted, none started (e.g. all waiting for a JIT load)
    for ticket in tickets[:10]:
        queue.start(ticket)
    assert (queue.active, queue.queued) == (10, 40)
    for ticket in tickets:
        queue.release(ticket)
        queue.release(ticket)  # idempotent
    assert (queue.active, queue.queued, queue.busy) == (0, 0, False)


async def test_raising_max_concurrency_on_reload_admits_waiters():
    queue = RequestQueue("m", QueueLimits(max_concurrency=1, queue_size=5, queue_timeout=30))
    held = await queue.admit()
    waiters = [asyncio.create_task(queue.admit()) for _ in range(3)]
    await _settle()
    queue.reconfigure(QueueLimits(max_concurrency=3, queue_size=5, queue_timeout=30))
    await _settle()
    assert [t.done() for t in waiters] == [True, True, False]
    queue.release(held)
    await _settle()
    assert waiters[2].done()
    for task in waiters:
        queue.release(task.result())


async def test_wait_seconds_covers_the_slot_and_the_load():
    now = [100.0]
    queue = RequestQueue("m", QueueLimits(max_concurrency=1), clock=lambda: now[0])
    ticket = await queue.admit()
    now[0] = 103.0  # e.g. a JIT load
    assert ticket.wait_seconds(now[0]) == pytest.approx(3.0)
    queue.start(ticket)
    now[0] = 110.0
    assert ticket.wait_seconds(now[0]) == pytest.approx(3.0)
    queue.release(ticket)


async def test_retry_after_follows_how_long_slots_are_held():
    now = [0.0]
    queue = RequestQueue(
        "m", QueueLimits(max_concurrency=1, queue_size=0, queue_timeout=300), clock=lambda: now[0]
    )
    for _ in range(5):
        ticket = await queue.admit()
        queue.start(ticket)
        now[0] += 4.0
        queue.release(ticket)
    held = await queue.admit()
    with pytest.raises(HubError) as caught:
        await queue.admit()
    assert caught.value.headers["Retry-After"] == "8"  # 4 s a request, 2 ahead of a retry
    queue.release(held)


def test_limits_from_config_defaults():
    assert limits_from(None, None, None) == QueueLimits(None, 100, 300.0)
    assert limits_from(2, 5, 10) == QueueLimits(2, 5, 10.0)
    assert Ticket(1.0).wait_seconds(3.5) == pytest.approx(2.5)
