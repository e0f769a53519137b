"""The generic Stage controller: kwok's ``StageController`` for one resource.

One runs for every resource that a loaded Stage names other than Node and Pod (which have
controllers of their own): PersistentVolumeClaims and PersistentVolumes for kwok's volume
stages, Namespaces, Stage objects themselves, any CRD. Each watches its resource, plans every
object it owns with the pure stage engine, and plays due stages through the shared
:class:`~shardlet.writer.Writer`: patches (as the Stage's impersonated user where it names one),
``apply``, deletes, events, and, for ``immediateNextStage``, the next stage at once from the
object the last patch returned.

Ownership: with several shards every object is played by exactly one of them. The shard hands
the controller an ``owns(obj)`` predicate (the object's uid hashed to a bucket of the table);
when the slice changes, :meth:`StageController.set_owned` drops the jobs of objects it no
longer owns and replays every object, so newly owned ones are planned.

Errors never stop the controller: a stage that fails to render or write is counted and logged
with the Stage, the object and the reason, and the other objects go on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shardlet.api import ApiError
from shardlet.delayqueue import DelayQueue
from shardlet.discovery import Resource
from shardlet.stages.engine import StageEngine
from shardlet.stages.model import Stage, StageError
from shardlet.watch import Reflector, obj_key
from shardlet.writer import Writer

RETRYABLE = frozenset({0, 409, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class StageControllerConfig:
    resource: Resource
    shard: str                  # log field and events' source
    concurrency: int = 16       # stage writes in flight
    retry_after: float = 1.0    # seconds before a write that failed for a passing reason is tried again

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"stage controller for {self.resource}: concurrency must be >= 1, got {self.concurrency}")
        if self.retry_after < 0:
            raise ValueError(f"stage controller for {self.resource}: retry_after must be >= 0")


@dataclass(slots=True)
class _Job:
    obj: dict[str, Any]
    stage: Stage


class StageController:
    def __init__(self, writer: Writer, config: StageControllerConfig, stages: Sequence[Stage], *,
                 funcs: Callable[[], Mapping[str, Callable[..., Any]]],
                 owns: Callable[[dict[str, Any]], bool] = lambda _o: True,
                 on_transition: Callable[[str], None] = lambda _s: None,
                 on_error: Callable[[str, str], None] = lambda _s, _e: None,
                 clock: Callable[[], float] = time.time) -> None:
        self.writer = writer
        self.cfg = config
        self.res = config.resource
        self.funcs = funcs
        self.owns = owns
        self.on_transition = on_transition
        self.on_error = on_error
        self.clock = clock
        self.engine = StageEngine(())
        self.set_stages(stages)
        self.queue: DelayQueue[str, _Job] = DelayQueue(self._play, concurrency=config.concurrency,
                                                       name=f"stages:{self.res.plural}")
        self.reflector = Reflector(writer.kube, self.res.path(), self._on_event, name=f"stage:{self.res.plural}")
        self.transitions = 0
        self._tasks: list[asyncio.Task[None]] = []

    def set_stages(self, stages: Sequence[Stage]) -> None:
        """Play these Stages from now on (each names this controller's resource). A Stage whose
        ``apiGroup`` is a bare group is matched at the version discovery resolved it to."""
        gv = self.res.group_version
        self.engine = StageEngine(s if s.api_group == gv else dataclasses.replace(s, api_group=gv) for s in stages)

    @property
    def stage_names(self) -> list[str]:
        return sorted(s.name for s in self.engine.stages)

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self.queue.run()), asyncio.create_task(self.reflector.run())]
        await self.reflector.synced.wait()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def set_owned(self, owns: Callable[[dict[str, Any]], bool]) -> None:
        """A new slice: forget the jobs of objects no longer owned, then replay every object."""
        self.owns = owns
        for t in self._tasks[1:]:
            t.cancel()
        await asyncio.gather(*self._tasks[1:], return_exceptions=True)
        self.reflector.known.clear()     # the relist hands every object over again
        self.reflector.synced.clear()
        self._tasks[1:] = [asyncio.create_task(self.reflector.run())]
        await self.reflector.synced.wait()

    # -- events ------------------------------------------------------------------------------
    def _on_event(self, typ: str, obj: dict[str, Any]) -> None:
        key = obj_key(obj)
        if typ == "DELETED":
            self.queue.cancel(key)
            return
        # list items come without them; templates (kwok's volume stages) read both
        obj.setdefault("apiVersion", self.res.group_version)
        obj.setdefault("kind", self.res.kind)
        if not self.owns(obj):
            self.queue.cancel(key)
            return
        self._plan(key, obj)

    def _plan(self, key: str, obj: dict[str, Any]) -> None:
        plan = self.engine.plan(self.res.kind, obj, self.clock(), self.res.group_version)
        if plan is None:
            self.queue.cancel(key)
            return
        self.queue.put(key, _Job(obj, plan.stage), plan.delay)

    # -- playing -----------------------------------------------------------------------------
    async def _play(self, key: str, job: _Job, _due: float) -> None:
        stage, obj = job.stage, job.obj
        try:
            actions = self.engine.actions(stage, obj, self.funcs())
            result = await self.writer.play(self.res, obj, actions, stage.name)
        except StageError as e:
            self._failed(stage, key, str(e))
            return
        except ApiError as e:
            if e.status == 404:
                return   # the object is gone; its DELETED event cleans up
            self._failed(stage, key, f"{e.status} {e.reason}: {e.message[:200]}")
            if e.status in RETRYABLE:
                self.queue.put(key, job, self.cfg.retry_after)
            return
        self.transitions += 1
        self.on_transition(stage.name)
        if actions.immediate_next and result is not None:
            self.reflector.known[key] = (result.get("metadata") or {}).get("resourceVersion", "")
            result.setdefault("apiVersion", self.res.group_version)
            result.setdefault("kind", self.res.kind)
            self._plan(key, result)

    def _failed(self, stage: Stage, key: str, why: str) -> None:
        """Reported through ``on_error`` (the shard counts, logs and shows it in status)."""
        self.on_error(stage.name, f"{self.res.kind} {key}: {why}")
