"""The Ray actor face of a shard: `assign`, `status`, `stop`, nothing else.

The coordinator never sends node lists: it sends the bucket table (shardlet.ownership) and a
phase. In the release phase a shard keeps only nodes it owns under both the old and the new
table; in the acquire phase it takes everything the new table gives it. Because a node's bucket
is a pure function of its name, every shard reads the same owner from one table, so no node is
served by two shards in one epoch. Messages are msgpack bytes (coordinator.messages).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from typing import Any

import structlog

from coordinator.messages import Slice, pack, unpack
from shardlet.api import Kube
from shardlet.ownership import Ownership, Table
from shardlet.shard import Shard, ShardConfig

log = structlog.get_logger("shardlet.actor")


class ShardActor:
    """Plain class; `coordinator.driver` wraps it with `ray.remote` and its restart options."""

    def __init__(self, shard_id: str, holder: str, config: bytes, kubeconfig_text: str | None) -> None:
        from shardlet import heap, logs

        heap.tune()
        logs.configure(os.environ.get("SHARDLET_LOG_LEVEL", "info"), os.environ.get("SHARDLET_LOG_FORMAT", "json"))
        self.id = shard_id              # its name on the ring
        cfg = unpack(config)
        cfg["name"] = holder            # metrics label, log field
        # lease holderIdentity: the instance's, per shard (a restarted worker gets the same one)
        cfg["holder"] = f"{cfg['instance']}/{shard_id}" if cfg.get("instance") else holder
        cfg["profiles"] = tuple(cfg.get("profiles", ()))
        cfg["stage_files"] = tuple(cfg.get("stage_files", ()))
        self.cfg = ShardConfig(**cfg)
        self.kubeconfig: str | None = None
        if kubeconfig_text is not None:
            # a directory of its own, 0700 and new (mkdtemp: O_EXCL semantics, an unpredictable
            # name), and the file created in it, never through a link another user planted
            d = tempfile.mkdtemp(prefix=f"shardlet-{holder}-")
            path = os.path.join(d, "kubeconfig")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(kubeconfig_text)
            self.kubeconfig = path
        self.shard: Shard | None = None
        self.table: Table | None = None
        self.epoch = 0
        self.phase = "none"
        self.started_at = time.time()
        self._lock = asyncio.Lock()


    async def assign(self, msg: bytes) -> bytes:
        s = Slice.from_bytes(msg)
        new = s.table
        async with self._lock:
            if new.epoch < self.epoch or (new.epoch == self.epoch and s.phase == self.phase):
                return pack({"ok": new.epoch == self.epoch, "epoch": self.epoch, "shard": self.id})
            if self.shard is None:
                # first assignment (or after a restart): serve the new slice straight away
                own = Ownership.of(self.id, new) if s.phase == "acquire" else Ownership.of(self.id, new, self.table or new)
                self.shard = Shard(Kube.from_kubeconfig(self.kubeconfig), self.cfg, own)
                await self.shard.start()
            else:
                own = Ownership.of(self.id, self.table or new, new) if s.phase == "release" else Ownership.of(self.id, new)
                await self.shard.set_ownership(own)
            if s.phase == "acquire":
                self.table = new
            self.epoch, self.phase = new.epoch, s.phase
            log.info("slice_assigned", shard=self.id, epoch=new.epoch, phase=s.phase, buckets=len(own.mine),
                     nodes=self.shard.status()["nodes"])
            return pack({"ok": True, "epoch": self.epoch, "shard": self.id})

    async def status(self) -> bytes:
        st: dict[str, Any] = self.shard.status() if self.shard else {"shard": self.cfg.name, "nodes": 0, "pods": 0}
        import ray

        st.update(epoch=self.epoch, phase=self.phase, pid=os.getpid(), started=self.shard is not None,
                  ray_node=ray.get_runtime_context().get_node_id(), up_since=self.started_at,
                  table={"shards": list(self.table.shards), "owners": list(self.table.owners)} if self.table else None)
        return pack(st)

    async def metrics(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.shard.metrics.registry) if self.shard else b""

    async def node_metrics(self, path: str) -> bytes:
        code, text = self.shard.node_metrics(path) if self.shard else (503, "shard not started\n")
        return pack([code, text])

    async def metric_targets(self) -> bytes:
        return pack(self.shard.metric_targets() if self.shard else [])

    async def stop(self, release_leases: bool = False) -> bool:
        if self.shard is not None:
            await self.shard.stop(release_leases=release_leases)
            self.shard = None
        if self.kubeconfig:
            try:
                os.unlink(self.kubeconfig)
                os.rmdir(os.path.dirname(self.kubeconfig))
            except OSError:
                pass
        return True
