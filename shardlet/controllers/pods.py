"""The Pod controller: kwok's PodController for the pods bound to the nodes one shard serves.

Pods are seen either through one cluster-wide watch of bound pods, kept when their node is
served here (kwok's way, ``watch="cluster"``), or through one field-selected watch per served
node (``watch="node"``), which keeps a shard's apiserver traffic and decoding proportional to
its slice. Which nodes are served is the Node controller's business: the shard tells this
controller through ``node_adopted`` / ``node_released`` / ``node_forgotten`` and hands it
``serves`` and ``node`` lookups, so neither reaches into the other.

A pod may be seen before its node (the watches race), or while its node's lease is not held
yet (``waiting``): it waits as an orphan and is played when its node is adopted. Orphans are bounded in count and bytes (pods naming nodes that never come
must not fill a shard): past the bound only the node's name is kept, and its pods are listed
when it comes. Pod IPs come from the node's pod CIDRs (or ``cidr``) through the IPAM, and
go back to it when the pod is deleted. Only the key, node and uid of a pod are kept; the object
itself lives only as long as a stage job needs it, so memory stays flat once pods are Running.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from shardlet.api import ApiError, Kube
from shardlet.controllers.nodes import NodeInfo
from shardlet.controllers.player import Funcs, PlayerConfig, StagePlayer, no_gate
from shardlet.delayqueue import noop
from shardlet.discovery import PODS
from shardlet.ipam import IPAM, IPAMError
from shardlet.stages.engine import StageEngine
from shardlet.stages.model import StageError
from shardlet.supervise import Supervisor
from shardlet.watch import Reflector, obj_key
from shardlet.writer import Writer

__all__ = ["PodController", "PodControllerConfig"]

log = structlog.get_logger("shardlet.controllers.pods")


def never(_node: str) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class PodControllerConfig:
    shard: str
    cidr: str = "10.0.0.0/24"       # pod IPs for nodes without pod CIDRs
    node_ip: str = "127.0.0.1"      # a node's IP when it reports none (and hostNetwork pods')
    watch: str = "cluster"          # "cluster" | "node"
    concurrency: int = 64
    retry_after: float = 1.0
    max_orphan_pods: int = 50_000   # pods held back until their node is seen, at most ...
    max_orphan_bytes: int = 64 << 20   # ... and their JSON size

    def __post_init__(self) -> None:
        if self.max_orphan_pods < 0 or self.max_orphan_bytes < 0:
            raise ValueError(f"pod controller {self.shard}: max_orphan_pods and max_orphan_bytes must be >= 0")
        if self.watch not in ("cluster", "node"):
            raise ValueError(f"pod controller {self.shard}: watch must be 'cluster' or 'node', got {self.watch!r}")
        if self.concurrency < 1:
            raise ValueError(f"pod controller {self.shard}: concurrency must be >= 1, got {self.concurrency}")




class PodController:
    def __init__(self, kube: Kube, writer: Writer, config: PodControllerConfig, engine: StageEngine, *,
                 funcs: Funcs,
                 serves: Callable[[str], bool],
                 node: Callable[[str], NodeInfo | None],
                 waiting: Callable[[str], bool] = never,
                 gate: Callable[[], AbstractAsyncContextManager[Any]] = no_gate,
                 on_seen: Callable[[str, dict[str, Any]], None] = noop,
                 on_gone: Callable[[str], None] = noop,
                 on_count: Callable[[int], None] = noop,
                 on_event: Callable[[str], None] = noop,
                 on_relist: Callable[[], None] = noop,
                 on_transition: Callable[[str], None] = noop,
                 on_error: Callable[[str, str], None] = noop,
                 supervisor: Supervisor | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.kube = kube
        self.cfg = config
        self.base_funcs = funcs
        self.supervisor = supervisor or Supervisor()
        self.serves = serves
        self.node = node
        self.waiting = waiting          # (node): served here once its lease is held
        self.on_seen = on_seen          # a served pod, as last seen (node metrics)
        self.on_gone = on_gone          # a pod no longer served here
        self.on_count = on_count        # pods served, after each change
        self.on_event = on_event
        self.on_relist = on_relist
        self.ipam = IPAM(config.cidr)   # raises ValueError naming a bad CIDR
        self.pods: dict[str, tuple[str, str]] = {}        # key -> (node, uid)
        self.by_node: dict[str, set[str]] = {}
        # node -> pods seen before their node (with their size); past the bound, the node's name in
        # `overflowed` (or, past that too, `overflowed_all`): its pods are listed when it comes
        self.orphans: dict[str, dict[str, tuple[dict[str, Any], int]]] = {}
        self.orphan_pods = 0
        self.orphan_bytes = 0
        self.overflowed: set[str] = set()
        self.overflowed_all = False
        self._listing: set[asyncio.Task[None]] = set()
        self.pod_ips: dict[str, list[str]] = {}            # pod uid -> IPs handed out
        self.player = StagePlayer(writer, PlayerConfig(PODS, config.concurrency, config.retry_after), engine,
                                  funcs=self.funcs, wanted=self.pods.__contains__, gate=gate,
                                  render_errors=(StageError, IPAMError), on_result=self._on_result,
                                  on_transition=on_transition, on_error=on_error, clock=clock)
        self.watch: Reflector | None = None
        self.node_watches: dict[str, Reflector] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def plays(self, namespace: str, name: str) -> bool:
        """Whether this controller plays the pod (the kubelet server answers only for those)."""
        return f"{namespace}/{name}" in self.pods

    def __len__(self) -> int:
        return len(self.pods)

    def set_engine(self, engine: StageEngine) -> None:
        self.player.engine = engine

    def on_node(self, node: str) -> set[str] | tuple[()]:
        """Keys of the pods served on ``node``."""
        return self.by_node.get(node, ())

    # -- events ------------------------------------------------------------------------------
    def on_pod(self, typ: str, pod: dict[str, Any]) -> None:
        key = obj_key(pod)
        node = (pod.get("spec") or {}).get("nodeName") or ""
        if typ == "DELETED":
            old = self.pods.pop(key, None)
            self.player.cancel(key)
            node = node or (old[0] if old else "")
            self.by_node.get(node, set()).discard(key)
            waiting = self.orphans.get(node)
            held = waiting.pop(key, None) if waiting is not None else None
            if held is not None:          # deleted before its node came: not replayed with it
                self._unhold(held)
                if not waiting:
                    del self.orphans[node]
            uid = (pod.get("metadata") or {}).get("uid") or (old[1] if old else "")
            if uid:
                self._release_ips(str(uid))
            self.on_gone(key)
            self.on_count(len(self.pods))
            return
        if not self.serves(node):
            if self.node(node) is None or self.waiting(node):   # its node (or its lease) has not come yet
                self._hold(node, key, pod)
            return
        self.pods[key] = (node, str((pod.get("metadata") or {}).get("uid", "")))
        self.by_node.setdefault(node, set()).add(key)
        self.on_seen(key, pod)
        self.on_count(len(self.pods))
        self.player.plan(key, pod)

    def _on_result(self, key: str, pod: dict[str, Any]) -> None:
        node = str((pod.get("spec") or {}).get("nodeName", ""))
        refl = self.node_watches.get(node) if self.cfg.watch == "node" else self.watch
        if refl is not None:
            refl.expect(key, (pod.get("metadata") or {}).get("resourceVersion", ""))
        self.pods[key] = (node, str((pod.get("metadata") or {}).get("uid", "")))

    # -- orphans ----------------------------------------------------------------------------
    def _hold(self, node: str, key: str, pod: dict[str, Any]) -> None:
        waiting = self.orphans.get(node)
        old = waiting.pop(key, None) if waiting is not None else None
        if old is not None:
            self._unhold(old)
        size = len(orjson.dumps(pod))
        if (self.orphan_pods + 1 > self.cfg.max_orphan_pods
                or self.orphan_bytes + size > self.cfg.max_orphan_bytes):
            if len(self.overflowed) < self.cfg.max_orphan_pods:
                self.overflowed.add(node)
            elif not self.overflowed_all:
                self.overflowed_all = True
                log.warning("orphans_full", shard=self.cfg.shard, pods=self.orphan_pods, bytes=self.orphan_bytes)
            return
        self.orphans.setdefault(node, {})[key] = (pod, size)
        self.orphan_pods += 1
        self.orphan_bytes += size

    def _unhold(self, held: tuple[dict[str, Any], int]) -> None:
        self.orphan_pods -= 1
        self.orphan_bytes -= held[1]

    def _drop_orphans(self, node: str) -> list[dict[str, Any]]:
        held = self.orphans.pop(node, {})
        for h in held.values():
            self._unhold(h)
        return [pod for pod, _ in held.values()]

    # -- the nodes served (from the Node controller, through the shard) -----------------------
    def node_adopted(self, node: str) -> None:
        if self.cfg.watch == "node" and node not in self.node_watches:
            r = Reflector(self.kube, "/api/v1/pods", self.on_pod, name=f"pods:{node}",
                          field_selector=f"spec.nodeName={node}", on_event=lambda _w: self.on_event("pods"),
                          supervisor=self.supervisor)
            self.node_watches[node] = r
            r.start()
        for pod in self._drop_orphans(node):
            self.on_pod("ADDED", pod)
        if self.cfg.watch == "cluster" and (self.overflowed_all or node in self.overflowed):
            self.overflowed.discard(node)     # some of its pods were not held: list them
            t = asyncio.create_task(self.node_acquired(node))
            self._listing.add(t)
            t.add_done_callback(self._listing.discard)

    async def node_acquired(self, node: str) -> None:
        """A node handed over by a re-slice: with one cluster-wide watch we never kept its pods,
        so list them once (a per-node watch lists them itself)."""
        if self.cfg.watch != "cluster":
            return
        try:
            items, _ = await self.kube.list_all("/api/v1/pods", fieldSelector=f"spec.nodeName={node}")
        except (ApiError, OSError, TimeoutError) as e:
            # the hand-off goes on; the node's pods are served from their next event
            log.warning("acquire_pods_failed", shard=self.cfg.shard, node=node, error=str(e)[:200])
            return
        for pod in items:
            self.on_pod("ADDED", pod)

    def node_released(self, node: str) -> None:
        self._drop_orphans(node)        # held while its lease was not ours
        for key in self.by_node.pop(node, set()):
            self.player.cancel(key)
            self.pods.pop(key, None)
            self.on_gone(key)
        r = self.node_watches.pop(node, None)
        if r is not None:
            r.cancel()
        self.on_count(len(self.pods))

    def node_forgotten(self, node: str) -> None:
        self._drop_orphans(node)
        self.overflowed.discard(node)

    # -- template functions ------------------------------------------------------------------
    def _node_ips(self, node: str) -> list[str]:
        info = self.node(node)
        return (info.ips if info and info.ips else None) or [self.cfg.node_ip]

    def _pod_ips(self, pod: dict[str, Any], node: str, host_network: Any, uid: Any, name: Any, ns: Any) -> list[str]:
        if host_network is True:
            return self._node_ips(node)
        key = str(uid or f"{ns}/{name}")
        have = self.pod_ips.get(key)
        if have:
            return have
        status = pod.get("status") or {}
        existing = [str(p["ip"]) for p in status.get("podIPs") or [] if isinstance(p, dict) and p.get("ip")]
        if not existing and status.get("podIP"):
            existing = [str(status["podIP"])]
        info = self.node(node)
        cidrs = info.cidrs if info else None
        if existing:
            # adopted after a restart or handoff: keep the IPs the pod already has
            self.ipam.adopt(key, existing, cidrs, self.cfg.cidr)
            ips = existing
        else:
            ips = self.ipam.allocate(key, cidrs, self.cfg.cidr)
        self.pod_ips[key] = ips
        return ips

    def _release_ips(self, uid: str) -> None:
        if self.pod_ips.pop(uid, None) is not None:
            self.ipam.release(uid)

    def funcs(self, pod: dict[str, Any]) -> Funcs:
        node = (pod.get("spec") or {}).get("nodeName", "")
        meta = pod.get("metadata") or {}
        return {
            **self.base_funcs,
            "NodeIPWith": lambda n: self._node_ips(n)[0],
            "NodeIPsWith": self._node_ips,
            "PodIPsWith": lambda n, hn, uid, name, ns: self._pod_ips(pod, n, hn, uid, name, ns),
            "PodIPWith": lambda n, hn, uid, name, ns: self._pod_ips(pod, n, hn, uid, name, ns)[0],
            "PodIP": lambda: self._pod_ips(pod, node, False, meta.get("uid"), meta.get("name"),
                                           meta.get("namespace"))[0],
        }

    # -- run ---------------------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks.append(self.supervisor.spawn("player", "player:pods", self.player.run))
        if self.cfg.watch == "cluster":
            self.watch = Reflector(self.kube, "/api/v1/pods", self.on_pod, name="pods",
                                   field_selector="spec.nodeName!=", on_event=lambda _w: self.on_event("pods"),
                                   on_relist=self.on_relist, supervisor=self.supervisor)
            self.watch.start()
            await self.watch.synced.wait()

    async def stop(self) -> None:
        for r in [*self.node_watches.values(), *([self.watch] if self.watch else [])]:
            await r.stop()
        for t in [*self._tasks, *self._listing]:
            t.cancel()
        await asyncio.gather(*self._tasks, *self._listing, return_exceptions=True)
