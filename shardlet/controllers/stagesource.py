"""Where a shard's Stages come from, and which wins.

Two sources, as in kwok: Stages given on the command line (built-in ``--profile`` sets and
``--stage-file`` YAMLs, loaded once) and Stage objects in the cluster (watched). kwok v0.8.0
plays one or the other (its ``--config`` stages, or the Stage CRD when ``--enable-crds=Stage``,
and refuses both at once). shardlet's default plays both, and the rule is fixed: a Stage object
in the cluster replaces a command-line Stage of the same name, and adds the others. The runner's
``--stages-from config`` (no watch) and ``--stages-from cluster`` (no profile, no files: exactly
the cluster's Stage objects, kwok's CRD behaviour) give either one alone.

A Stage that does not load is reported (``errors``, naming the Stage and the field) and left out;
the others are played.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from shardlet.api import Kube
from shardlet.stages.engine import StageEngine
from shardlet.stages.model import Stage, load_profile, load_stage_yaml, load_stages
from shardlet.supervise import Supervisor
from shardlet.watch import Reflector

__all__ = ["STAGES_PATH", "StageSource"]

log = structlog.get_logger("shardlet.controllers.stagesource")

STAGES_PATH = "/apis/kwok.x-k8s.io/v1alpha1/stages"


class StageSource:
    def __init__(self, kube: Kube, *, shard: str, profiles: Sequence[str] = (), files: Sequence[str] = (),
                 watch: bool = True, on_change: Callable[[StageEngine], None] = lambda _e: None,
                 crd_wait: float = 10.0, supervisor: Supervisor | None = None) -> None:
        self.shard = shard
        self.watch = watch
        self.on_change = on_change
        self.crd_wait = crd_wait      # seconds start() waits for the first list of Stage objects
        self.static_errors: dict[str, str] = {}
        self.static = self._load_static(profiles, files)
        self.errors: dict[str, str] = dict(self.static_errors)
        self.objects: dict[str, dict[str, Any]] = {}
        self.cluster: list[Stage] = []
        self.engine = StageEngine(self.static)
        self.reflector = Reflector(kube, STAGES_PATH, self.on_stage, name="stages", supervisor=supervisor,
                                   poll_when_missing=30.0) if watch else None

    def _load_static(self, profiles: Sequence[str], files: Sequence[str]) -> list[Stage]:
        stages: list[Stage] = []
        for p in profiles:
            stages.extend(load_profile(p))
        for f in files:
            good, bad = load_stage_yaml(Path(f).read_text())
            for err in bad:
                log.error("stage_rejected", shard=self.shard, source=f, error=str(err))
                self.static_errors[f"{f}:{err}"] = str(err)
            stages.extend(good)
        return stages

    def on_stage(self, typ: str, obj: dict[str, Any]) -> None:
        name = (obj.get("metadata") or {}).get("name", "")
        if typ == "DELETED":
            self.objects.pop(name, None)
        else:
            self.objects[name] = obj
        good, bad = load_stages(self.objects.values())
        self.errors = {**self.static_errors, **{str(e).split(":", 1)[0]: str(e) for e in bad}}
        for e in bad:
            log.error("stage_rejected", shard=self.shard, error=str(e))
        self.cluster = good
        names = {s.name for s in good}
        merged = [s for s in self.static if s.name not in names] + good
        self.engine = StageEngine(merged)
        log.info("stages_loaded", shard=self.shard, stages=sorted(s.name for s in merged))
        self.on_change(self.engine)

    async def start(self) -> None:
        if self.reflector is None:
            return
        self.reflector.start()
        try:
            await asyncio.wait_for(self.reflector.synced.wait(), self.crd_wait)
        except TimeoutError:
            log.info("no_stage_crd", shard=self.shard)

    async def stop(self) -> None:
        if self.reflector is not None:
            await self.reflector.stop()
