"""The Ray actor face of a shard: `assign`, `status`, `stop`, nothing else.

The coordinator never sends node lists: it sends the bucket table (shardlet.ownership) and a
phase. In the release phase a shard keeps only nodes it owns under both the old and the new
table; in the acquire phase it takes everything the new table gives it. Because a node's bucket
is a pure function of its name, every shard reads the same owner from one table, so no node is
served by two shards in one epoch. Messages are msgpack bytes (coordinator.messages).

Credentials never travel as the user's: the actor is built with either nothing (it then waits for
``credentials``: the apiserver's address and CA, and a short-lived token of the least-privilege
ServiceAccount that the coordinator requests and pushes again before it expires, also to a
restarted worker) or the path of a kubeconfig the user placed on every Ray host (``run
--shard-kubeconfig``; in a pod, its own service account). Nothing is written to disk.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from typing import Any

import structlog

from coordinator.messages import Slice, pack, unpack
from shardlet.api import Kube, token_credentials
from shardlet.kubeletserver import listen_address
from shardlet.ownership import Ownership, Table
from shardlet.shard import Shard, ShardConfig

log = structlog.get_logger("shardlet.actor")


class ShardActor:
    """Plain class; `coordinator.driver` wraps it with `ray.remote` and its restart options."""

    def __init__(self, shard_id: str, holder: str, config: bytes, kubeconfig: str | None) -> None:
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
        cfg["rbac_extra_rules"] = tuple(cfg.get("rbac_extra_rules", ()))
        self.cfg = ShardConfig(**cfg)
        where = listen_address(self.cfg.server_address, self.cfg.node_ip, self.cfg.node_port)
        if where is not None:
            # shards share hosts: each kubelet server on a free port, which its nodes advertise
            host = f"[{where[0]}]" if ":" in where[0] else where[0]
            self.cfg = dataclasses.replace(self.cfg, server_address=f"{host}:0")
        self.kubeconfig = kubeconfig    # a path on this host (None: in-cluster), unless pushed credentials come
        self.trust: dict[str, Any] | None = None
        self.token: str | None = None
        self.shard: Shard | None = None
        self.table: Table | None = None
        self.epoch = 0
        self.phase = "none"
        self.started_at = time.time()
        self._lock = asyncio.Lock()


    async def credentials(self, msg: bytes) -> bool:
        """The apiserver's address and CA and a token to use for every request (first, and each
        renewal: a running shard switches at once)."""
        d = unpack(msg)
        self.trust, self.token = d["trust"], str(d["token"])
        if self.shard is not None:
            self.shard.kube.set_bearer(self.token)
        return True

    def _kube(self) -> Kube:
        if self.trust is None:
            return Kube.from_kubeconfig(self.kubeconfig)
        kube = Kube(token_credentials(self.trust))
        assert self.token is not None
        kube.set_bearer(self.token)
        return kube

    async def assign(self, msg: bytes) -> bytes:
        s = Slice.from_bytes(msg)
        new = s.table
        async with self._lock:
            if new.epoch < self.epoch or (new.epoch == self.epoch and s.phase == self.phase):
                return pack({"ok": new.epoch == self.epoch, "epoch": self.epoch, "shard": self.id})
            if self.shard is None:
                # first assignment (or after a restart): serve the new slice straight away
                own = Ownership.of(self.id, new) if s.phase == "acquire" else Ownership.of(self.id, new, self.table or new)
                self.shard = Shard(self._kube(), self.cfg, own)
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

    async def fail_task(self, prefix: str) -> list[str]:
        return self.shard.supervisor.fail(prefix, "injected by POST /debug/fail-task") if self.shard else []

    async def stop(self, release_leases: bool = False) -> bool:
        if self.shard is not None:
            await self.shard.stop(release_leases=release_leases)
            self.shard = None
        return True
