"""Plans objects of one resource with the stage engine and plays due stages: what every stage
controller (Node, Pod, and the generic one) shares, written once.

``plan(key, obj)`` asks the pure engine which Stage the object enters next and queues it in the
weighted delay queue after the stage's delay (a newer event replaces the pending job, as kwok
does). A due job renders the stage's steps and hands them to the :class:`~shardlet.writer.Writer`.
Failures never stop the player: a stage that fails to render or write is reported through
``on_error`` with the Stage, the object and the reason; a write that failed for a passing
reason (conflict, throttling, a restarting apiserver) is tried again after ``retry_after``. For
``immediateNextStage`` the object the last patch returned is handed to ``on_result`` (the
controller updates what it holds, e.g. tells its watch to expect that resourceVersion) and
planned again at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from shardlet.api import ApiError
from shardlet.delayqueue import DelayQueue
from shardlet.discovery import Resource
from shardlet.stages.engine import StageEngine
from shardlet.stages.model import Stage, StageError
from shardlet.writer import Writer

__all__ = ["RETRYABLE", "Funcs", "PlayerConfig", "StagePlayer", "no_gate"]

RETRYABLE = frozenset({0, 409, 429, 500, 502, 503, 504})

Funcs = Mapping[str, Callable[..., Any]]


@dataclass(frozen=True, slots=True)
class PlayerConfig:
    resource: Resource
    concurrency: int = 64       # stage writes in flight
    retry_after: float = 1.0    # seconds before a write that failed for a passing reason is tried again
    # the Stage's apiGroup is matched against the resource's group/version (the generic controller);
    # Node and Pod stages name "v1" and are matched by kind alone, as kwok does
    match_group: bool = False

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"stage player for {self.resource}: concurrency must be >= 1, got {self.concurrency}")
        if self.retry_after < 0:
            raise ValueError(f"stage player for {self.resource}: retry_after must be >= 0, got {self.retry_after}")


@dataclass(slots=True)
class _Job:
    obj: dict[str, Any]
    stage: Stage


def no_gate() -> AbstractAsyncContextManager[Any]:
    """A gate that never holds a write back (the default)."""
    return nullcontext()


class StagePlayer:
    def __init__(self, writer: Writer, config: PlayerConfig, engine: StageEngine, *,
                 funcs: Callable[[dict[str, Any]], Funcs],
                 wanted: Callable[[str], bool] = lambda _k: True,
                 gate: Callable[[], AbstractAsyncContextManager[Any]] = no_gate,
                 render_errors: tuple[type[Exception], ...] = (StageError,),
                 on_result: Callable[[str, dict[str, Any]], None] = lambda _k, _o: None,
                 on_transition: Callable[[str], None] = lambda _s: None,
                 on_error: Callable[[str, str], None] = lambda _s, _e: None,
                 clock: Callable[[], float] = time.time) -> None:
        self.writer = writer
        self.cfg = config
        self.res = config.resource
        self.engine = engine
        self.funcs = funcs
        self.wanted = wanted            # is the object still this controller's when its job is due
        self.gate = gate                # held around each write (stage writes give way to leases)
        self.render_errors = render_errors
        self.on_result = on_result
        self.on_transition = on_transition
        self.on_error = on_error
        self.clock = clock
        self.transitions = 0
        self.queue: DelayQueue[str, _Job] = DelayQueue(self._play, concurrency=config.concurrency,
                                                       name=f"stages:{self.res.plural}")

    def __len__(self) -> int:
        return len(self.queue)

    async def run(self) -> None:
        await self.queue.run()

    def plan(self, key: str, obj: dict[str, Any]) -> None:
        gv = self.res.group_version if self.cfg.match_group else None
        try:
            plan = self.engine.plan(self.res.kind, obj, self.clock(), gv)
        except StageError as e:
            self.on_error("", f"{self.res.kind} {key}: {e}")
            return
        finally:
            for name, msg in self.engine.take_refusals():
                self.on_error(name, f"{self.res.kind} {key}: {msg}")
        if plan is None:
            self.queue.cancel(key)
            return
        self.queue.put(key, _Job(obj, plan.stage), plan.delay)

    def cancel(self, key: str) -> None:
        self.queue.cancel(key)

    def retain(self, keep: Callable[[dict[str, Any]], bool]) -> None:
        """Drop the queued jobs whose object ``keep`` refuses."""
        self.queue.retain(lambda _k, job: keep(job.obj))

    def pending(self, key: str) -> tuple[Stage, dict[str, Any]] | None:
        job = self.queue.pending(key)
        return None if job is None else (job.stage, job.obj)

    async def _play(self, key: str, job: _Job, _due: float) -> None:
        if not self.wanted(key):
            return
        stage, obj = job.stage, job.obj
        try:
            actions = self.engine.actions(stage, obj, self.funcs(obj))
        except self.render_errors as e:
            self.on_error(stage.name, f"{self.res.kind} {key}: {e}")
            return
        try:
            async with self.gate():
                result = await self.writer.play(self.res, obj, actions, stage.name)
        except StageError as e:   # e.g. an apply of a kind the apiserver does not serve
            self.on_error(stage.name, f"{self.res.kind} {key}: {e}")
            return
        except ApiError as e:
            if e.status == 404:
                return   # the object is gone; its DELETED event cleans up
            self.on_error(stage.name, f"{self.res.kind} {key}: {e.status} {e.reason}: {e.message[:300]}")
            if e.status in RETRYABLE:
                self.queue.put(key, job, self.cfg.retry_after)   # again with the same stage
            return
        self.transitions += 1
        self.on_transition(stage.name)
        if actions.immediate_next and result is not None:
            self.on_result(key, result)
            self.plan(key, result)
