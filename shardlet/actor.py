"""The Ray actor face of a shard: `assign`, `status`, `stop`, nothing else.

The coordinator never sends node lists: it sends the ring (shard ids, vnodes, epoch) and a
phase. In the release phase a shard keeps only nodes it owns under both the old and the new
ring; in the acquire phase it takes everything the new ring gives it. Because every shard
computes ownership with the same deterministic ring, no node is served by two shards in one
epoch. Messages are msgpack bytes (coordinator.messages).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from typing import Any

import msgpack
import structlog

from coordinator.messages import Slice
from coordinator.ring import Ring, bucket, bucket_key, node_owner
from shardlet.api import Kube
from shardlet.shard import Shard, ShardConfig

log = structlog.get_logger("shardlet.actor")


class ShardActor:
    """Plain class; `coordinator.driver` wraps it with `ray.remote` and its restart options."""

    def __init__(self, shard_id: str, holder: str, config: bytes, kubeconfig_text: str | None) -> None:
        from shardlet import heap, logs

        heap.tune()
        logs.configure(os.environ.get("SHARDLET_LOG_LEVEL", "info"), os.environ.get("SHARDLET_LOG_FORMAT", "json"))
        self.id = shard_id              # its name on the ring
        cfg = msgpack.unpackb(config)
        cfg["name"] = holder            # lease holderIdentity, metrics label, log field
        cfg["profiles"] = tuple(cfg.get("profiles", ()))
        cfg["stage_files"] = tuple(cfg.get("stage_files", ()))
        self.cfg = ShardConfig(**cfg)
        self.kubeconfig: str | None = None
        if kubeconfig_text is not None:
            # one fixed path per shard: a restarted worker overwrites what a killed one left
            path = os.path.join(tempfile.gettempdir(), f"shardlet-{holder}.kubeconfig")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(kubeconfig_text)
            os.chmod(path, 0o600)
            self.kubeconfig = path
        self.shard: Shard | None = None
        self.ring: Ring | None = None
        self.epoch = 0
        self.phase = "none"
        self.started_at = time.time()
        self._lock = asyncio.Lock()

    def _slice(self, *rings: Ring) -> tuple[Any, frozenset[int] | None]:
        """Ownership under every ring given (one ring, or old and new during a release).

        With bucket labels the ring hashes bucket ids and a node belongs to its bucket's owner,
        so a shard can ask the apiserver for exactly its buckets."""
        me = self.id
        nb = self.cfg.buckets
        if nb > 0:
            mine = frozenset(b for b in range(nb) if all(r.owner(bucket_key(b)) == me for r in rings))
            return (lambda node: bucket(node, nb) in mine), mine
        return (lambda node: all(node_owner(r, node) == me for r in rings)), None

    async def assign(self, msg: bytes) -> bytes:
        s = Slice.from_bytes(msg)
        async with self._lock:
            if s.epoch < self.epoch or (s.epoch == self.epoch and s.phase == self.phase):
                return msgpack.packb({"ok": s.epoch == self.epoch, "epoch": self.epoch, "shard": self.id})
            new = Ring(s.shards, epoch=s.epoch, vnodes=s.vnodes)
            if self.shard is None:
                # first assignment (or after a restart): serve the new slice straight away
                pred, mine = self._slice(new) if s.phase == "acquire" else self._slice(new, self.ring or new)
                self.shard = Shard(Kube.from_kubeconfig(self.kubeconfig), self.cfg, owned=pred, buckets=mine)
                await self.shard.start()
            else:
                old = self.ring or new
                pred, mine = self._slice(old, new) if s.phase == "release" else self._slice(new)
                await self.shard.set_owned(pred, mine)
            if s.phase == "acquire":
                self.ring = new
            self.epoch, self.phase = s.epoch, s.phase
            log.info("slice_assigned", shard=self.id, epoch=s.epoch, phase=s.phase,
                     nodes=self.shard.status()["nodes"])
            return msgpack.packb({"ok": True, "epoch": self.epoch, "shard": self.id})

    async def status(self) -> bytes:
        st: dict[str, Any] = self.shard.status() if self.shard else {"shard": self.cfg.name, "nodes": 0, "pods": 0}
        import ray

        st.update(epoch=self.epoch, phase=self.phase, pid=os.getpid(), started=self.shard is not None,
                  ray_node=ray.get_runtime_context().get_node_id(), up_since=self.started_at,
                  ring=list(self.ring.shards) if self.ring else [])
        return msgpack.packb(st)

    async def metrics(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.shard.metrics.registry) if self.shard else b""

    async def node_metrics(self, path: str) -> bytes:
        code, text = self.shard.node_metrics(path) if self.shard else (503, "shard not started\n")
        return msgpack.packb([code, text])

    async def metric_targets(self) -> bytes:
        return msgpack.packb(self.shard.metric_targets() if self.shard else [])

    async def stop(self, release_leases: bool = False) -> bool:
        if self.shard is not None:
            await self.shard.stop(release_leases=release_leases)
            self.shard = None
        if self.kubeconfig:
            try:
                os.unlink(self.kubeconfig)
            except OSError:
                pass
        return True
