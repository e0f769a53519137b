"""A keyed delay queue: one timer heap, a bounded number of jobs in flight.

`put(key, item, delay)` replaces whatever was pending for that key (kwok cancels the old stage
job when a newer event arrives); cancelled entries are dropped lazily when they come due, so
put and cancel are O(log n) and O(1). Due items run as tasks, at most `concurrency` at once: no
task per pending key sleeping, no thread per node. A job that finishes while others are due takes
the next one in the same task and slot: a queue that runs behind (a saturated apiserver) costs no
task and no wake-up of the dispatcher per item (task creation and the slot handoff were 11% of a
shard's busy samples renewing 716 leases a second, py-spy).

With `tick` > 0 the queue sleeps until tick boundaries only (timer slack), so items that come
due within one tick leave together: a burst of requests wakes the apiserver and this loop once,
where the same requests spread evenly cost each a wake-up of both (measured: a lease PUT at
200/s costs this process ~600 us of CPU spread evenly, ~290 us in 0.25 s ticks). Items put with
no delay still run at once.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

import structlog

log = structlog.get_logger("shardlet.delayqueue")

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class DelayQueue(Generic[K, T]):
    def __init__(self, run: Callable[[K, T, float], Awaitable[None]], *, concurrency: int = 32,
                 name: str = "queue", tick: float = 0.0) -> None:
        self._run = run                      # (key, item, due time) -> None
        self._heap: list[tuple[float, int, K]] = []
        self._pending: dict[K, tuple[int, T]] = {}
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._sem = asyncio.Semaphore(concurrency)
        self._inflight: set[asyncio.Task[None]] = set()
        self._starved = False                    # the dispatcher waits for a slot
        self.name = name
        self.tick = tick

    def __len__(self) -> int:
        return len(self._pending)

    def put(self, key: K, item: T, delay: float = 0.0) -> None:
        seq = next(self._seq)
        due = time.monotonic() + max(0.0, delay)
        self._pending[key] = (seq, item)
        heapq.heappush(self._heap, (due, seq, key))
        if self._heap[0][1] == seq:
            self._wake.set()

    def cancel(self, key: K) -> None:
        self._pending.pop(key, None)

    def retain(self, keep: Callable[[K, T], bool]) -> None:
        """Drop every queued item that ``keep`` refuses (items in flight are past recall)."""
        for k in [k for k, (_seq, item) in self._pending.items() if not keep(k, item)]:
            del self._pending[k]

    def pending(self, key: K) -> T | None:
        e = self._pending.get(key)
        return e[1] if e else None

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def backlog_age(self) -> float:
        """How long the oldest due job has waited for a slot (0 when none waits): every job
        behind it in the heap is due later, so this is the queue's lag."""
        if not self._starved:
            return 0.0
        now = time.monotonic()
        head = self._head()
        return now - head if head is not None and head <= now else 0.0

    def _head(self) -> float | None:
        """Due time of the first live entry, dropping cancelled or replaced ones above it."""
        heap = self._heap
        while heap:
            due, seq, key = heap[0]
            entry = self._pending.get(key)
            if entry is not None and entry[0] == seq:
                return due
            heapq.heappop(heap)
        return None

    def _pop_due(self, now: float) -> tuple[K, T, float] | None:
        head = self._head()
        if head is None or head > now:
            return None
        due, _, key = heapq.heappop(self._heap)
        return key, self._pending.pop(key)[1], due

    async def run(self) -> None:
        try:
            while True:
                # a slot first, then the next due job for it: a job popped before its slot could
                # wait behind the ones that running jobs take for themselves
                self._starved = True   # seen only while acquire waits: a free slot does not yield
                try:
                    await self._sem.acquire()
                finally:
                    self._starved = False
                try:
                    job = await self._next()
                except BaseException:
                    self._sem.release()
                    raise
                t = asyncio.create_task(self._one(*job))
                self._inflight.add(t)
                t.add_done_callback(self._inflight.discard)
        finally:
            for t in list(self._inflight):
                t.cancel()

    async def _next(self) -> tuple[K, T, float]:
        while True:
            job = self._pop_due(time.monotonic())
            if job is not None:
                return job
            self._wake.clear()
            head = self._head()
            timeout = self._wake_at(head) - time.monotonic() if head is not None else 3600.0
            if timeout > 0:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel that
                # lands as the wait ends, and this loop would then outlive its shard
                try:
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    def _wake_at(self, due: float) -> float:
        """When to wake for an item due at `due`: then, or at the tick boundary after it."""
        if self.tick <= 0:
            return due
        return math.ceil(due / self.tick) * self.tick

    async def _one(self, key: K, item: T, due: float) -> None:
        try:
            while True:
                try:
                    await self._run(key, item, due)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("job_failed", queue=self.name, key=str(key))
                job = self._pop_due(time.monotonic())
                if job is None:
                    return
                key, item, due = job
        finally:
            self._sem.release()


def noop(*_: Any) -> None:
    """Does nothing: the default of every callback a controller takes."""
    return None
