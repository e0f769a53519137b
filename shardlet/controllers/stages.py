"""The generic Stage controller: kwok's ``StageController`` for one resource.

One runs for every resource that a loaded Stage names other than Node and Pod (which have
controllers of their own): PersistentVolumeClaims and PersistentVolumes for kwok's volume
stages, Namespaces, Stage objects themselves, any CRD. Each watches its resource and plans and
plays every object it owns through a :class:`~shardlet.controllers.player.StagePlayer`:
patches (as the Stage's impersonated user where it names one), ``apply``, deletes, events,
and, for ``immediateNextStage``, the next stage at once from the object the last patch returned.

Ownership: with several shards every object is played by exactly one of them, the one that
owns the bucket of its uid (:meth:`~shardlet.ownership.Ownership.owns_object`). The watch asks
the apiserver for just that slice (``shardSelector``, Kubernetes 1.36's ShardedListAndWatch) so a
shard decodes about 1/S of the events, not all of them; whether the apiserver applied it is read
off the list (it echoes ``shardInfo``), and every event is checked here too, so an apiserver
without the gate costs events, never correctness. When the slice changes,
:meth:`StageController.set_ownership` lists with the new selector and replays every object:
jobs of objects no longer owned are dropped, newly owned ones planned.
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
from shardlet.supervise import Supervisor
from shardlet.watch import Reflector, obj_key
from shardlet.writer import Writer

__all__ = ["StageController", "StageControllerConfig"]


@dataclass(frozen=True, slots=True)
class StageControllerConfig:
    resource: Resource
    shard: str                  # log field and events' source
    concurrency: int = 16       # stage writes in flight
    retry_after: float = 1.0    # seconds before a write that failed for a passing reason is tried again
    server_filter: bool = True  # sharded: send the slice's shardSelector with the list and watch

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
                 supervisor: Supervisor | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = config
        self.supervisor = supervisor or Supervisor()
        self.res = config.resource
        self.own = ownership
        self.player = StagePlayer(writer, PlayerConfig(self.res, config.concurrency, config.retry_after,
                                                       match_group=True),
                                  StageEngine(()), funcs=lambda _o: funcs, on_result=self._on_result,
                                  on_transition=on_transition, on_error=on_error, clock=clock)
        self.set_stages(stages)
        self.reflector = Reflector(writer.kube, self.res.path(), self._on_event, name=f"stage:{self.res.plural}",
                                   shard_selector=self._shard_selector(ownership), supervisor=self.supervisor)
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
        """Start, and return once the first list was tried: a resource the apiserver refuses to
        list (RBAC, an aggregated API that is down) is reported in ``error`` and tried again in
        the background, never holding up the shard or the other controllers."""
        self._task = self.supervisor.spawn("player", f"player:{self.res.plural}", self.player.run)
        self.reflector.start()
        await self.reflector.tried.wait()

    @property
    def error(self) -> str:
        """Why this resource cannot be listed now ("" while it can)."""
        return self.reflector.error

    async def stop(self) -> None:
        await self.reflector.stop()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @property
    def filtered_by(self) -> str:
        """Who drops other shards' objects: "server", "client", or "none" (unsharded)."""
        if not self.own.sharded:
            return "none"
        return "server" if self.reflector.server_filtered else "client"

    def _shard_selector(self, own: Ownership) -> str | None:
        return own.shard_selector() if self.cfg.server_filter else None

    async def set_ownership(self, own: Ownership) -> None:
        """A new slice: list it (with its selector) and replay every object, which drops the jobs
        of objects no longer owned and plans the newly owned ones."""
        if own == self.own:
            return
        self.own = own
        # now, not when the new list arrives: a list that fails (and is retried) must not leave
        # jobs queued for objects another shard is about to acquire
        self.player.retain(own.owns_object)
        await self.reflector.replay({"shardSelector": self._shard_selector(own)})

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
