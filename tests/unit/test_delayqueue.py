"""The keyed delay queue: ordering, replacement, cancel, bounded concurrency."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from shardlet.delayqueue import DelayQueue


async def _run_until(q: DelayQueue[str, int], done: asyncio.Event, timeout: float = 5) -> None:
    t = asyncio.create_task(q.run())
    try:
        await asyncio.wait_for(done.wait(), timeout)
    finally:
        t.cancel()
        await asyncio.gather(t, return_exceptions=True)


async def test_due_order_and_replacement() -> None:
    seen: list[tuple[str, int]] = []
    done = asyncio.Event()

    async def run(key: str, item: int, _due: float) -> None:
        seen.append((key, item))
        if len(seen) == 2:
            done.set()
    q: DelayQueue[str, int] = DelayQueue(run)
    q.put("b", 1, 0.05)
    q.put("a", 1, 0.02)
    q.put("b", 2, 0.01)     # replaces b/1: only the newest job of a key runs
    await _run_until(q, done)
    assert seen == [("b", 2), ("a", 1)]
    assert len(q) == 0


async def test_cancel() -> None:
    seen: list[str] = []
    done = asyncio.Event()

    async def run(key: str, _item: int, _due: float) -> None:
        seen.append(key)
        done.set()
    q: DelayQueue[str, int] = DelayQueue(run)
    q.put("x", 0, 0.01)
    q.put("y", 0, 0.03)
    q.cancel("x")
    assert q.pending("x") is None and q.pending("y") == 0
    await _run_until(q, done)
    assert seen == ["y"]


async def test_concurrency_bound_and_failures_do_not_stop_the_queue() -> None:
    active = peak = finished = 0
    done = asyncio.Event()

    async def run(key: str, _item: int, _due: float) -> None:
        nonlocal active, peak, finished
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        finished += 1
        if finished == 40:
            done.set()
        if key.endswith("7"):
            raise RuntimeError("a bad job")
    q: DelayQueue[str, int] = DelayQueue(run, concurrency=4)
    for i in range(40):
        q.put(f"k{i}", i)
    t0 = time.monotonic()
    await _run_until(q, done)
    assert peak == 4
    assert time.monotonic() - t0 >= 0.09   # 40 jobs of 10 ms, 4 at a time


async def test_tick_releases_items_due_within_one_tick_together_never_early() -> None:
    tick = 0.2
    ran: dict[str, float] = {}
    dues: dict[str, float] = {}
    done = asyncio.Event()

    async def run(key: str, _item: int, due: float) -> None:
        # recorded, not asserted here: the queue logs and swallows a job's exception
        ran[key], dues[key] = time.monotonic(), due
        if len(ran) == 7:
            done.set()
    q: DelayQueue[str, int] = DelayQueue(run, tick=tick)
    t = asyncio.create_task(q.run())
    await asyncio.sleep(0)
    start = time.monotonic()
    q.put("now", 0, 0.0)                      # no delay: runs at once, not at the next tick
    await asyncio.wait_for(_until(lambda: "now" in ran), 1)
    assert ran["now"] - start < tick / 2
    # due at spread times inside one tick: they leave together at that tick's end
    base = (int(time.monotonic() / tick) + 2) * tick
    for i in range(6):
        q.put(f"k{i}", i, base + 0.01 + 0.03 * i - time.monotonic())
    try:
        await asyncio.wait_for(done.wait(), 3)
    finally:
        t.cancel()
        await asyncio.gather(t, return_exceptions=True)
    assert all(ran[k] >= dues[k] for k in ran), "never before it is due"
    times = [ran[f"k{i}"] for i in range(6)]
    assert max(times) - min(times) < 0.05, times
    assert min(times) >= base + tick - 0.001, (min(times), base + tick)


async def test_no_tick_runs_each_item_when_due() -> None:
    ran: dict[str, float] = {}
    done = asyncio.Event()

    async def run(key: str, _item: int, _due: float) -> None:
        ran[key] = time.monotonic()
        if len(ran) == 2:
            done.set()
    q: DelayQueue[str, int] = DelayQueue(run)
    q.put("a", 0, 0.02)
    q.put("b", 0, 0.15)
    await _run_until(q, done)
    assert ran["b"] - ran["a"] > 0.1


async def _until(cond: Callable[[], bool], step: float = 0.005) -> None:
    while not cond():
        await asyncio.sleep(step)


@asynccontextmanager
async def _held_queue(concurrency: int) -> AsyncIterator[tuple[DelayQueue[str, int], asyncio.Event]]:
    """A running queue whose jobs all wait until the event is set."""
    release = asyncio.Event()

    async def run(_key: str, _item: int, _due: float) -> None:
        await release.wait()
    q: DelayQueue[str, int] = DelayQueue(run, concurrency=concurrency)
    t = asyncio.create_task(q.run())
    try:
        yield q, release
    finally:
        release.set()
        t.cancel()
        await asyncio.gather(t, return_exceptions=True)


async def test_backlog_age_is_how_long_the_oldest_due_job_has_waited_for_a_slot() -> None:
    async with _held_queue(1) as (q, release):
        q.put("a", 0)                     # takes the one slot
        q.put("b", 1)                     # due now, waits for it
        await asyncio.wait_for(_until(lambda: q.backlog_age() >= 0.2), 2)
        assert q.inflight == 1
        release.set()                     # slot free: nobody waits any more
        await asyncio.wait_for(_until(lambda: q.backlog_age() == 0.0 and not len(q)), 2)
    assert q.backlog_age() == 0.0


async def test_no_backlog_while_slots_are_free() -> None:
    async with _held_queue(8) as (q, _release):
        for i in range(4):
            q.put(f"k{i}", i)
        await asyncio.wait_for(_until(lambda: q.inflight == 4), 2)
        assert q.backlog_age() == 0.0


async def test_a_queue_behind_runs_its_due_jobs_in_due_order_in_the_tasks_it_has() -> None:
    order: list[str] = []
    tasks: set[asyncio.Task[object] | None] = set()
    done = asyncio.Event()

    async def run(key: str, _item: int, _due: float) -> None:
        order.append(key)
        tasks.add(asyncio.current_task())
        await asyncio.sleep(0.005)
        if len(order) == 20:
            done.set()
    q: DelayQueue[str, int] = DelayQueue(run, concurrency=2)
    for i in range(20):   # all due at once, oldest first: the queue is behind
        q.put(f"k{i:02d}", i, 0.001 * i)
    await asyncio.sleep(0.03)
    await _run_until(q, done)
    assert order == [f"k{i:02d}" for i in range(20)]
    # a finished job took the next due one in its own task: two tasks, not twenty
    assert len(tasks) == 2


async def test_a_job_put_while_every_slot_is_busy_runs_when_one_frees() -> None:
    ran: list[str] = []
    done = asyncio.Event()

    async with _held_queue(2) as (q, release):
        q.put("a", 0)
        q.put("b", 0)
        await asyncio.wait_for(_until(lambda: q.inflight == 2), 2)
        q._run = _record(ran, done)   # type: ignore[method-assign]
        q.put("c", 0)                  # no slot: waits, counted as backlog
        await asyncio.wait_for(_until(lambda: q.backlog_age() > 0.05), 2)
        release.set()
        await asyncio.wait_for(done.wait(), 2)
    assert ran == ["c"]


def _record(ran: list[str], done: asyncio.Event) -> Callable[[str, int, float], Any]:
    async def run(key: str, _item: int, _due: float) -> None:
        ran.append(key)
        done.set()
    return run
