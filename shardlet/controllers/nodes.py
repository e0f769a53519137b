"""The Node controller: kwok's NodeController for the nodes of one shard's slice.

It watches Nodes, decides which it manages (kwok's ``kwok.x-k8s.io/node=fake`` annotation, or
all), keeps what other controllers need of each (uid, addresses, pod CIDRs) and plays the node
stages. Which managed nodes it *serves* is the shard's :class:`~shardlet.ownership.Ownership`;
when a node starts or stops being served, the controller says so through callbacks
(``on_adopt``, ``on_release``, ``on_forget``) and the shard wires those to the Lease and Pod
controllers, so no controller reaches into another. A served node is *played* only while
``held`` says its lease is this shard's (kwok's fencing, shardlet.controllers.leases): until
then its latest object waits here, and ``node_held`` plays it.

Label-sharded (``label_buckets``), each managed node carries its bucket as a label and the node
watch selects only this slice's buckets, so a shard decodes the events of its own nodes, not of
the cluster. A second watch sees nodes that carry no bucket label yet; the shard owning the
bucket labels them (its own small queue, behind lease renewals). Without labels every shard
watches every node and keeps only the ones it owns.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import structlog

from shardlet.api import ApiError, Kube, path_for
from shardlet.conditions import node_ready
from shardlet.controllers.player import Funcs, PlayerConfig, StagePlayer, no_gate
from shardlet.delayqueue import DelayQueue, noop
from shardlet.discovery import NODES
from shardlet.ownership import EVERYTHING, Ownership
from shardlet.stages.engine import StageEngine
from shardlet.supervise import Supervisor
from shardlet.watch import Reflector
from shardlet.writer import Writer

__all__ = ["BUCKET_LABEL", "FAKE_ANNOTATION", "NodeController", "NodeControllerConfig", "NodeInfo",
           "parse_annotation_selector"]

log = structlog.get_logger("shardlet.controllers.nodes")

FAKE_ANNOTATION = "kwok.x-k8s.io/node=fake"
BUCKET_LABEL = "shardlet.x-k8s.io/bucket"


def always(_name: str) -> bool:
    return True


def parse_annotation_selector(sel: str) -> tuple[tuple[str, str | None], ...]:
    out: list[tuple[str, str | None]] = []
    for part in filter(None, (p.strip() for p in sel.split(","))):
        if "!=" in part:
            raise ValueError(f"node annotation selector {sel!r}: only k=v and k are supported, got {part!r}")
        k, eq, v = part.partition("=")
        out.append((k.strip(), v.strip().lstrip("=") if eq else None))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class NodeControllerConfig:
    shard: str
    manage_all: bool = False
    annotation_selector: str = FAKE_ANNOTATION   # "k=v,k2" matched client-side, like kwok
    label_selector: str = ""                     # sent to the server
    label_buckets: bool = False                  # label nodes with their bucket, watch only the slice's
    node_name: str = ""                          # kwok's --node-name (NodeName in templates)
    concurrency: int = 64
    label_concurrency: int = 16
    retry_after: float = 1.0
    label_retry_after: float = 5.0               # a bucket label that could not be written: again after
    annotations: tuple[tuple[str, str | None], ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.label_concurrency < 1:
            raise ValueError(f"node controller {self.shard}: concurrency must be >= 1")
        if self.label_retry_after <= 0:
            raise ValueError(f"node controller {self.shard}: label_retry_after must be > 0")
        sel = () if self.manage_all else parse_annotation_selector(self.annotation_selector)
        object.__setattr__(self, "annotations", sel)


@dataclass(slots=True)
class NodeInfo:
    uid: str
    ips: list[str]
    cidrs: list[str]
    managed: bool
    port: int | None = None      # status.daemonEndpoints.kubeletEndpoint.Port: where it says its kubelet is


def node_ips(node: Mapping[str, Any]) -> list[str]:
    addrs = (node.get("status") or {}).get("addresses") or []
    for typ in ("InternalIP", "ExternalIP"):
        ips = [str(a["address"]) for a in addrs
               if isinstance(a, dict) and a.get("type") == typ and a.get("address")]
        if ips:
            return ips
    return []


def kubelet_port(node: Mapping[str, Any]) -> int | None:
    port = (((node.get("status") or {}).get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
    return port if isinstance(port, int) and not isinstance(port, bool) and port > 0 else None


def node_cidrs(node: Mapping[str, Any]) -> list[str]:
    spec = node.get("spec") or {}
    cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    return [c for c in cidrs if isinstance(c, str)]




class NodeController:
    def __init__(self, kube: Kube, writer: Writer, config: NodeControllerConfig, engine: StageEngine,
                 ownership: Ownership = EVERYTHING, *,
                 funcs: Funcs,
                 gate: Callable[[], AbstractAsyncContextManager[Any]] = no_gate,
                 on_seen: Callable[[str, dict[str, Any]], None] = noop,
                 on_ready: Callable[[str, bool], None] = noop,
                 on_adopt: Callable[[str, str], None] = noop,
                 on_acquire: Callable[[str], Awaitable[None]] | None = None,
                 on_release: Callable[[str], None] = noop,
                 on_forget: Callable[[str], None] = noop,
                 on_event: Callable[[str], None] = noop,
                 on_relist: Callable[[], None] = noop,
                 on_transition: Callable[[str], None] = noop,
                 on_error: Callable[[str, str], None] = noop,
                 held: Callable[[str], bool] = always,
                 supervisor: Supervisor | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.kube = kube
        self.cfg = config
        self.own = ownership
        self.held = held                # (name): this shard holds the node's lease, so may play it
        self.supervisor = supervisor or Supervisor()
        self.base_funcs = funcs
        self.gate = gate
        self.on_seen = on_seen          # a managed node, as last seen (node metrics)
        self.on_ready = on_ready        # a served node's Ready condition (lease controller)
        self.on_adopt = on_adopt        # (name, uid): this shard serves the node from now on
        self.on_acquire = on_acquire    # async (name): a node handed over by a re-slice, without labels
        self.on_release = on_release    # no longer served here (another shard's, or unmanaged)
        self.on_forget = on_forget      # deleted, or out of this shard's watch
        self.on_event = on_event        # (watch) one event decoded
        self.nodes: dict[str, NodeInfo] = {}
        self.served: set[str] = set()
        self.waiting: dict[str, dict[str, Any]] = {}   # served, lease not held yet: the latest object
        self._reading: set[asyncio.Task[None]] = set()
        self.labeled = 0
        self.player = StagePlayer(writer, PlayerConfig(NODES, config.concurrency, config.retry_after), engine,
                                  funcs=self._funcs, wanted=self.plays, gate=gate,
                                  on_result=self._on_result, on_transition=on_transition,
                                  on_error=on_error, clock=clock)
        self.watch = Reflector(kube, "/api/v1/nodes", self.on_node, name="nodes",
                               label_selector=self._selector(), on_event=lambda _w: on_event("nodes"),
                               on_relist=on_relist, supervisor=self.supervisor)
        self.unlabeled: Reflector | None = None
        self.labels: DelayQueue[str, None] = DelayQueue(self._label, concurrency=config.label_concurrency,
                                                        name="labels")
        self._tasks: list[asyncio.Task[None]] = []

    # -- what is served ----------------------------------------------------------------------
    def manages(self, node: Mapping[str, Any]) -> bool:
        if self.cfg.manage_all:
            return True
        ann = (node.get("metadata") or {}).get("annotations") or {}
        for k, v in self.cfg.annotations:
            if k not in ann or (v is not None and ann[k] != v):
                return False
        return True

    def serves(self, name: str) -> bool:
        return name in self.served

    def plays(self, name: str) -> bool:
        return name in self.served and self.held(name)

    def info(self, name: str) -> NodeInfo | None:
        return self.nodes.get(name)

    def set_engine(self, engine: StageEngine) -> None:
        self.player.engine = engine

    def _label_mode(self) -> bool:
        return self.cfg.label_buckets and self.own.sharded

    def _selector(self) -> str | None:
        parts = [self.cfg.label_selector] if self.cfg.label_selector else []
        if self._label_mode():
            parts.append(self.own.bucket_selector(BUCKET_LABEL))
        return ",".join(parts) or None

    # -- events ------------------------------------------------------------------------------
    def on_node(self, typ: str, node: dict[str, Any]) -> None:
        meta = node.get("metadata") or {}
        name = meta.get("name")
        if not isinstance(name, str):
            raise ValueError("node without metadata.name")
        if typ == "DELETED":
            self._forget(name)
            return
        managed = self.manages(node)
        self.nodes[name] = NodeInfo(str(meta.get("uid", "")), node_ips(node), node_cidrs(node), managed,
                                    kubelet_port(node))
        if managed:
            self.on_seen(name, node)
        if not managed or not self.own.owns_node(name):
            if name in self.served:
                self._release(name)
            return
        self.on_ready(name, node_ready(node))
        if name not in self.served:
            self._adopt(name)
        self._plan(name, node)

    def _plan(self, name: str, node: dict[str, Any]) -> None:
        if self.held(name):
            self.waiting.pop(name, None)
            self.player.plan(name, node)
        else:
            self.waiting[name] = node

    def node_held(self, name: str) -> None:
        """Its lease is ours now: play the node (read it, if no copy waits here)."""
        node = self.waiting.pop(name, None)
        if name not in self.served:
            return
        if node is not None:
            self.player.plan(name, node)
            return
        t = asyncio.create_task(self._read_and_plan(name))
        self._reading.add(t)
        t.add_done_callback(self._reading.discard)

    def node_lost(self, name: str) -> None:
        """Its lease is someone else's now: stop playing it."""
        self.player.cancel(name)

    async def _read_and_plan(self, name: str) -> None:
        # we hold no copy of a node we did not play: read it once to plan its stages
        try:
            node = await self.kube.get(path_for("Node", name))
        except ApiError as e:
            log.warning("adopt_read_failed", shard=self.cfg.shard, node=name, status=e.status)
            return
        if name in self.served:
            self._plan(name, node)

    def _adopt(self, name: str) -> None:
        self.served.add(name)
        self.on_adopt(name, self.nodes[name].uid)

    def _release(self, name: str) -> None:
        self.served.discard(name)
        self.waiting.pop(name, None)
        self.player.cancel(name)
        self.on_release(name)

    def _forget(self, name: str) -> None:
        if name in self.served:
            self._release(name)
        self.nodes.pop(name, None)
        self.on_forget(name)

    def _on_result(self, name: str, node: dict[str, Any]) -> None:
        self.watch.expect(name, (node.get("metadata") or {}).get("resourceVersion", ""))

    def _funcs(self, node: dict[str, Any]) -> Funcs:
        if self.cfg.node_name:
            return self.base_funcs
        # kwok's NodeName is one global value, often empty; then the node-initialize template
        # renders a null address list that deletes the node's addresses. A kubelet reports its
        # own hostname, so with no --node-name a node stage gets the node's name.
        own = (node.get("metadata") or {}).get("name", "")
        return {**self.base_funcs, "NodeName": lambda: own}

    # -- bucket labels -----------------------------------------------------------------------
    def _on_unlabeled(self, typ: str, node: dict[str, Any]) -> None:
        """New nodes carry no bucket yet: the shard owning the bucket labels them."""
        name = node["metadata"]["name"]
        if typ == "DELETED" or not self.manages(node):
            self.labels.cancel(name)
            return
        if self.own.owns_node(name):
            self.labels.put(name, None, 0.0)

    async def _label(self, name: str, _: None, _due: float) -> None:
        b = self.own.node_bucket(name)
        try:
            async with self.gate():
                await self.kube.retrying(lambda: self.kube.patch(
                    path_for("Node", name), {"metadata": {"labels": {BUCKET_LABEL: str(b)}}}, "merge"),
                    what=f"label {name}")
            self.labeled += 1
        except (ApiError, OSError, TimeoutError) as e:
            if isinstance(e, ApiError) and e.status == 404:
                return   # the node is gone
            # no watch event brings an unlabeled node back: dropped, it would never be served
            log.warning("label_failed", shard=self.cfg.shard, node=name, error=str(e)[:200],
                        retry_in=self.cfg.label_retry_after)
            if self.own.owns_node(name):
                self.labels.put(name, None, self.cfg.label_retry_after)

    # -- ownership ---------------------------------------------------------------------------
    async def set_ownership(self, own: Ownership) -> None:
        """Switch to a new slice: release the nodes no longer owned, adopt the newly owned ones.

        Label-sharded, the node watch is re-selected to the new buckets; its fresh list brings
        the newly owned nodes and reports the others as gone."""
        if own == self.own:
            return   # the same slice: nothing to release, adopt or re-select
        old, self.own = self.own, own
        for name in [n for n in self.served if not own.owns_node(n)]:
            self._release(name)
        if self._label_mode():
            await self.watch.reselect(self._selector())
            return
        for name, info in list(self.nodes.items()):
            if info.managed and own.owns_node(name) and not old.owns_node(name) and name not in self.served:
                self._adopt(name)
                if self.on_acquire is not None:
                    await self.on_acquire(name)
                await self._read_and_plan(name)

    # -- run ---------------------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks = [self.supervisor.spawn("player", "player:nodes", self.player.run),
                       self.supervisor.spawn("labels", "labels", self.labels.run)]
        if self.cfg.label_buckets and self.own.sharded:
            unl = ",".join(filter(None, [self.cfg.label_selector, f"!{BUCKET_LABEL}"]))
            self.unlabeled = Reflector(self.kube, "/api/v1/nodes", self._on_unlabeled, name="unlabeled-nodes",
                                       label_selector=unl, on_event=lambda _w: self.on_event("nodes-unlabeled"),
                                       supervisor=self.supervisor)
            self.unlabeled.start()
        self.watch.start()
        await self.watch.synced.wait()

    async def stop(self) -> None:
        await self.watch.stop()
        if self.unlabeled is not None:
            await self.unlabeled.stop()
        for t in [*self._tasks, *self._reading]:
            t.cancel()
        await asyncio.gather(*self._tasks, *self._reading, return_exceptions=True)
