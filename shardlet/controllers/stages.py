"""The generic Stage controller: kwok's ``StageController`` for one resource.

One runs for every resource that a loaded Stage names other than Node and Pod (which have
controllers of their own): PersistentVolumeClaims and PersistentVolumes for kwok's volume
stages, Namespaces, Stage objects themselves, any CRD. Each watches its resource and plans and
plays every object it owns through a :class:`~shardlet.controllers.player.StagePlayer`:
patches (as the Stage's impersonated user where it names one), ``apply``, deletes, events,
and, for ``immediateNextStage``, the next stage at once from the object the last patch returned.

Ownership: with several shards every object is played by exactly one of them, the one that
owns the bucket of its uid (:meth:`~shardlet.ownership.Ownership.owns_object`). When the slice
changes, :meth:`StageController.set_ownership` drops the jobs of objects no longer owned and
replays every object, so newly owned ones are planned.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from shardlet.controllers.player import Funcs, PlayerConfig, StagePlayer
from shardlet.delayqueue import noop
from shardlet.discovery import Resource
from shardlet.ownership import EVERYTHING, Ownership
from shardlet.stages.engine import StageEngine
from shardlet.stages.model import Stage
from shardlet.watch import Reflector, obj_key
from shardlet.writer import Writer

__all__ = ["StageController", "StageControllerConfig"]


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



class StageController:
    def __init__(self, writer: Writer, config: StageControllerConfig, stages: Sequence[Stage],
                 ownership: Ownership = EVERYTHING, *,
                 funcs: Funcs,
                 on_transition: Callable[[str], None] = noop,
                 on_error: Callable[[str, str], None] = noop,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = config
        self.res = config.resource
        self.own = ownership
        self.player = StagePlayer(writer, PlayerConfig(self.res, config.concurrency, config.retry_after,
                                                       match_group=True),
                                  StageEngine(()), funcs=lambda _o: funcs, on_result=self._on_result,
                                  on_transition=on_transition, on_error=on_error, clock=clock)
        self.set_stages(stages)
        self.reflector = Reflector(writer.kube, self.res.path(), self._on_event, name=f"stage:{self.res.plural}")
        self._task: asyncio.Task[None] | None = None

    def set_stages(self, stages: Sequence[Stage]) -> None:
        """Play these Stages from now on (each names this controller's resource). A Stage whose
        ``apiGroup`` is a bare group is matched at the version discovery resolved it to."""
        gv = self.res.group_version
        self.player.engine = StageEngine(s if s.api_group == gv else dataclasses.replace(s, api_group=gv)
                                         for s in stages)

    @property
    def stage_names(self) -> list[str]:
        return sorted(s.name for s in self.player.engine.stages)

    @property
    def transitions(self) -> int:
        return self.player.transitions

    async def start(self) -> None:
        self._task = asyncio.create_task(self.player.run())
        self.reflector.start()
        await self.reflector.synced.wait()

    async def stop(self) -> None:
        await self.reflector.stop()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def set_ownership(self, own: Ownership) -> None:
        """A new slice: forget the jobs of objects no longer owned, then replay every object."""
        if own == self.own:
            return
        self.own = own
        await self.reflector.replay()

    # -- events ------------------------------------------------------------------------------
    def _on_event(self, typ: str, obj: dict[str, Any]) -> None:
        key = obj_key(obj)
        if typ == "DELETED":
            self.player.cancel(key)
            return
        self._complete(obj)
        if not self.own.owns_object(obj):
            self.player.cancel(key)
            return
        self.player.plan(key, obj)

    def _complete(self, obj: dict[str, Any]) -> None:
        # list items come without them; templates (kwok's volume stages) read both
        obj.setdefault("apiVersion", self.res.group_version)
        obj.setdefault("kind", self.res.kind)

    def _on_result(self, key: str, obj: dict[str, Any]) -> None:
        self.reflector.expect(key, (obj.get("metadata") or {}).get("resourceVersion", ""))
        self._complete(obj)
