"""Long-lived tasks that come back when they fail.

A shard is a handful of loops (watches, the stage players' delaying queues, lease renewals,
rediscovery) that must run for days. Each loop handles the failures it expects (a 410, a broken
connection, a refused write) itself; what it did not expect (a bug, an object no one foresaw)
used to end the task silently, and whatever it served stopped with it. A :class:`Supervisor`
restarts such a task with a growing backoff, logs the exception whole, and counts it, so that
``status`` and the metrics show a loop that keeps failing instead of one that is quietly gone.

``fail`` is the fire drill (``POST /debug/fail-task`` on the status endpoint): it ends running
tasks with :class:`InjectedFault` through the same path as a real failure, so an operator can
see the restart, the log line and the alert it raises without waiting for a bug.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import structlog

__all__ = ["InjectedFault", "Supervisor"]

log = structlog.get_logger("shardlet.supervise")


def _noop(_kind: str) -> None:
    return None


class InjectedFault(RuntimeError):
    """What :meth:`Supervisor.fail` ends a task with."""


class Supervisor:
    """Runs coroutines as tasks and restarts one that raises; ``kind`` groups the tasks for the
    counts (one per watch would be thousands of labels), ``name`` tells them apart in the log."""

    def __init__(self, on_restart: Callable[[str], None] = _noop, *, first_backoff: float = 0.5,
                 max_backoff: float = 30.0, healthy_after: float = 60.0,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < first_backoff <= max_backoff:
            raise ValueError(f"Supervisor: first_backoff {first_backoff} must be > 0 and <= max_backoff {max_backoff}")
        self.on_restart = on_restart
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.healthy_after = healthy_after
        self.sleep = sleep
        self.clock = clock
        self.restarts: Counter[str] = Counter()     # kind -> restarts
        self.errors: dict[str, str] = {}            # name -> the latest failure (kept to the last 20)
        self._tasks: set[asyncio.Task[None]] = set()
        self._faults: dict[str, InjectedFault] = {}   # task name -> the fault its cancel stands for
        self._running: set[str] = set()                # names of tasks inside run() (not backing off)

    def spawn(self, kind: str, name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run ``run()`` until it returns or the task is cancelled, restarting it when it raises."""
        t = asyncio.create_task(self._keep(kind, name, run), name=name)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    async def _keep(self, kind: str, name: str, run: Callable[[], Awaitable[None]]) -> None:
        backoff = self.first_backoff
        while True:
            started = self.clock()
            try:
                self._running.add(name)
                try:
                    await run()
                    return
                except asyncio.CancelledError:
                    fault, task = self._faults.pop(name, None), asyncio.current_task()
                    if fault is None or task is None:
                        raise
                    task.uncancel()   # a drill, not a stop: fail like a task whose code raised
                    raise fault from None
                finally:
                    self._running.discard(name)
            except Exception as e:
                if self.clock() - started >= self.healthy_after:
                    backoff = self.first_backoff     # a failure after a good run starts afresh
                log.exception("task_failed", task=name, kind=kind, restart_in=round(backoff, 2))
                self.restarts[kind] += 1
                self.errors.pop(name, None)
                self.errors[name] = f"{type(e).__name__}: {e}"[:300]
                while len(self.errors) > 20:
                    del self.errors[next(iter(self.errors))]
                self.on_restart(kind)
            await self.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    def fail(self, prefix: str, why: str = "injected") -> list[str]:
        """End every running task whose name starts with ``prefix`` with :class:`InjectedFault`
        (they restart as after any failure); the names of those hit."""
        hit = []
        for t in self._tasks:
            name = t.get_name()
            if name.startswith(prefix) and name in self._running and name not in self._faults:
                self._faults[name] = InjectedFault(f"{why} into {name}")
                t.cancel()
                hit.append(name)
        return sorted(hit)

    async def stop(self) -> None:
        """Cancel every task still running and wait for them."""
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def status(self) -> dict[str, object]:
        return {"task_restarts": dict(sorted(self.restarts.items())), "task_errors": dict(self.errors)}
