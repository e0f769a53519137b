"""One shard: plays kubelet for every managed node in its slice.

Watch events feed the pure stage engine; the engine's plan goes into a keyed delay queue; due
jobs render the stage's `next` into writes (events, patches, deletes) sent to the apiserver.
Leases of owned nodes are renewed by the LeaseRenewer. Which nodes are "owned" is decided by the
coordinator (`assign`); a shard run alone owns every managed node.

Pods are seen either through one cluster-wide watch filtered by node (kwok's way, `pod_watch=
"cluster"`) or through one field-selected watch per owned node (`pod_watch="node"`), which keeps
a shard's apiserver traffic and decoding proportional to its slice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from shardlet import heap
from shardlet.api import ApiError, Kube, path_for
from shardlet.conditions import node_ready
from shardlet.delayqueue import DelayQueue
from shardlet.discovery import NODES, PODS, Discovery, NotServed
from shardlet.ipam import IPAM, IPAMError
from shardlet.lease import LeaseRenewer
from shardlet.metrics import ShardMetrics
from shardlet.ownership import bucket as bucket_of
from shardlet.precedence import LeasesFirst
from shardlet.resourcemetrics import ResourceMetrics
from shardlet.satoken import TokenKeeper
from shardlet.stagecontroller import StageController, StageControllerConfig
from shardlet.stages.engine import StageEngine
from shardlet.stages.funcs import base_funcs
from shardlet.stages.model import (
    Stage,
    StageError,
    load_profile,
    load_stage_yaml,
    load_stages,
    profile_objects,
)
from shardlet.watch import Reflector, obj_key
from shardlet.writer import Writer

log = structlog.get_logger("shardlet.shard")

FAKE_ANNOTATION = "kwok.x-k8s.io/node=fake"
BUCKET_LABEL = "shardlet.x-k8s.io/bucket"


@dataclass
class ShardConfig:
    name: str = "shardlet-0"
    manage_all_nodes: bool = False
    node_annotation_selector: str = FAKE_ANNOTATION   # "k=v,k2=v2,k3" matched client-side like kwok
    node_label_selector: str = ""                     # sent to the server
    lease_duration: int = 40                          # 0 disables leases
    profiles: tuple[str, ...] = ("fast",)
    stage_files: tuple[str, ...] = ()
    watch_stages: bool = True
    cidr: str = "10.0.0.0/24"
    node_ip: str = "127.0.0.1"
    node_name: str = ""
    node_port: int = 10250
    stage_concurrency: int = 64
    lease_concurrency: int = 64
    pod_watch: str = "cluster"                        # "cluster" | "node"
    buckets: int = 0                                  # >0: label nodes with a stable bucket and
                                                      # watch only the buckets of this slice
    metrics_port: int = -1                            # -1 off, 0 any free port
    metrics_addr: str = "127.0.0.1"
    node_metrics: bool = False                        # serve kwok's Metric/ResourceUsage (keeps slim pods)
    metric_files: tuple[str, ...] = ()
    rediscover_every: float = 5.0                     # seconds between lookups of kinds not served yet
    token_exchange: bool = True                       # a client certificate is swapped for a
                                                      # service-account token (shardlet.satoken)


@dataclass
class NodeInfo:
    uid: str
    ips: list[str]
    cidrs: list[str]
    managed: bool


@dataclass
class Job:
    kind: str
    obj: dict[str, Any]
    stage: Stage | None     # None for the bucket-label job


def parse_annotation_selector(sel: str) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for part in filter(None, (p.strip() for p in sel.split(","))):
        if "!=" in part:
            raise ValueError(f"node annotation selector {sel!r}: only k=v and k are supported, got {part!r}")
        k, eq, v = part.partition("=")
        out.append((k.strip(), v.strip().lstrip("=") if eq else None))
    return out


def _node_ips(node: dict[str, Any]) -> list[str]:
    addrs = (node.get("status") or {}).get("addresses") or []
    for typ in ("InternalIP", "ExternalIP"):
        ips = [a.get("address") for a in addrs if isinstance(a, dict) and a.get("type") == typ and a.get("address")]
        if ips:
            return ips
    return []


def _node_cidrs(node: dict[str, Any]) -> list[str]:
    spec = node.get("spec") or {}
    cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    return [c for c in cidrs if isinstance(c, str)]


class Shard:
    def __init__(self, kube: Kube, config: ShardConfig, *, owned: Callable[[str], bool] | None = None,
                 buckets: frozenset[int] | None = None, bucket_count: int = 0) -> None:
        self.kube = kube
        self.cfg = config
        self.owned: Callable[[str], bool] = owned or (lambda _n: True)
        self.metrics = ShardMetrics(config.name)
        kube.on_request = self.metrics.request
        self._annotation_sel = [] if config.manage_all_nodes else parse_annotation_selector(config.node_annotation_selector)
        self.start_time = dt.datetime.now(dt.UTC)
        self.base_funcs = base_funcs(self.start_time)
        self.stage_errors: dict[str, str] = {}
        self.static_stages = self._load_static_stages()
        self.static_stage_errors = dict(self.stage_errors)   # --stage-file's, kept across CRD reloads
        self.crd_stages: list[Stage] = []
        self.crd_stage_objs: dict[str, dict[str, Any]] = {}
        self.engine = StageEngine(self.static_stages)
        self.nodes: dict[str, NodeInfo] = {}
        # key -> (node, uid) of pods on owned nodes: the object itself lives only as long as a
        # stage job needs it (memory stays flat once pods are Running)
        self.pods: dict[str, tuple[str, str]] = {}
        self.pods_by_node: dict[str, set[str]] = {}
        self.orphans: dict[str, dict[str, dict[str, Any]]] = {}   # node -> pods seen before their node
        self.pod_ips: dict[str, list[str]] = {}            # pod uid -> IPs handed out
        self.ipam = IPAM(config.cidr)
        self.queue: DelayQueue[tuple[str, str], Job] = DelayQueue(
            self._play, concurrency=config.stage_concurrency, name="stages")
        # leases get connections of their own, like the kubelet's heartbeat client: a backlog of
        # stage writes must not hold a renewal back until the node goes NotReady
        self.lease_kube = kube.sibling(max_connections=config.lease_concurrency, user_agent="shardlet-lease")
        self.leases = LeaseRenewer(self.lease_kube, config.name, duration=config.lease_duration,
                                   concurrency=config.lease_concurrency, on_renew=self.metrics.renew)
        # stage writes give way while renewals run behind (before that they go at full speed,
        # and renewals stretch a little)
        self.leases_first = LeasesFirst(self.leases.behind)
        self.token = TokenKeeper(kube, config.name)
        self.discovery = Discovery(kube)
        self.writer = Writer(kube, self.discovery, config.name)
        self.controllers: dict[tuple[str, str], StageController] = {}
        self._controllers_lock = asyncio.Lock()
        self._sync_tasks: set[asyncio.Task[None]] = set()
        self.kind_errors: dict[str, str] = {}      # "apiGroup/kind" -> why no controller plays it
        self.play_errors: dict[str, str] = {}      # stage -> its latest failure on some object
        self.node_watch: Reflector | None = None
        self.node_watch_task: asyncio.Task[None] | None = None
        self.my_buckets: frozenset[int] | None = buckets   # sharded: the buckets of this slice
        # sharded: the bucket of every node served, so the coordinator can balance node counts
        self.bucket_count = bucket_count
        self.node_buckets: dict[str, int] = {}
        self.labeled = 0
        self.pod_watch: Reflector | None = None
        self.per_node_watches: dict[str, asyncio.Task[None]] = {}
        self.per_node_reflectors: dict[str, Reflector] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.transitions = 0
        self.last_error = ""
        self.ready = asyncio.Event()
        # other kinds get no node- or pod-specific functions: build their map once
        self._generic_funcs = self._funcs("", {})
        self.resource_metrics = ResourceMetrics(
            config.name, lambda n: self.pods_by_node.get(n, ()), config.metric_files) if config.node_metrics else None

    # -- stages ----------------------------------------------------------------------------
    def _load_static_stages(self) -> list[Stage]:
        stages: list[Stage] = []
        for p in self.cfg.profiles:
            stages.extend(load_profile(p))
        for f in self.cfg.stage_files:
            good, bad = load_stage_yaml(Path(f).read_text())
            for err in bad:
                log.error("stage_rejected", shard=self.cfg.name, source=f, error=str(err))
                self.stage_errors[f"{f}:{err}"] = str(err)
            stages.extend(good)
        return stages

    def _rebuild_engine(self) -> None:
        # a Stage object in the cluster replaces a built-in/file Stage of the same name
        names = {s.name for s in self.crd_stages}
        merged = [s for s in self.static_stages if s.name not in names] + self.crd_stages
        self.engine = StageEngine(merged)
        log.info("stages_loaded", shard=self.cfg.name, stages=sorted(s.name for s in merged))
        self._resync_controllers()

    def _on_stage(self, typ: str, obj: dict[str, Any]) -> None:
        name = (obj.get("metadata") or {}).get("name", "")
        if typ == "DELETED":
            self.crd_stage_objs.pop(name, None)
        else:
            self.crd_stage_objs[name] = obj
        good, bad = load_stages(self.crd_stage_objs.values())
        self.stage_errors = {**self.static_stage_errors, **{str(e).split(":", 1)[0]: str(e) for e in bad}}
        for e in bad:
            log.error("stage_rejected", shard=self.cfg.name, error=str(e))
        self.crd_stages = good
        self._rebuild_engine()

    # -- nodes -----------------------------------------------------------------------------
    def _manages(self, node: dict[str, Any]) -> bool:
        if self.cfg.manage_all_nodes:
            return True
        ann = (node.get("metadata") or {}).get("annotations") or {}
        for k, v in self._annotation_sel:
            if k not in ann or (v is not None and ann[k] != v):
                return False
        return True

    def _on_node(self, typ: str, node: dict[str, Any]) -> None:
        meta = node.get("metadata") or {}
        name = meta.get("name")
        if not isinstance(name, str):
            raise ValueError("node without metadata.name")
        if typ == "DELETED":
            self._forget_node(name)
            return
        managed = self._manages(node)
        prev = self.nodes.get(name)
        self.nodes[name] = NodeInfo(str(meta.get("uid", "")), _node_ips(node), _node_cidrs(node), managed)
        if self.resource_metrics is not None and managed:
            self.resource_metrics.node_seen(name, node)
        if not managed or not self.owned(name):
            if prev is not None and prev.managed:
                self._release_node(name)
            return
        if self.cfg.lease_duration > 0:
            self.leases.set_ready(name, node_ready(node))
        if prev is None or not prev.managed:
            self._adopt_node(name)
        self._plan("Node", node)

    def _adopt_node(self, name: str) -> None:
        info = self.nodes[name]
        if self.cfg.lease_duration > 0:
            self.leases.add(name, info.uid)
        if self.bucket_count:
            self.node_buckets[name] = bucket_of(name, self.bucket_count)
        self.metrics.nodes.set(self._owned_count())
        if self.cfg.pod_watch == "node":
            self._start_node_pod_watch(name)
        for pod in self.orphans.pop(name, {}).values():
            self._on_pod("ADDED", pod)

    def _release_node(self, name: str) -> None:
        """Stop serving a node (handed to another shard or no longer managed)."""
        self.leases.remove(name)
        self.node_buckets.pop(name, None)
        self.queue.cancel(("Node", name))
        for key in self.pods_by_node.pop(name, set()):
            self.queue.cancel(("Pod", key))
            self.pods.pop(key, None)
            if self.resource_metrics is not None:
                self.resource_metrics.pod_gone(key)
        t = self.per_node_watches.pop(name, None)
        if t is not None:
            t.cancel()
        self.per_node_reflectors.pop(name, None)
        self.metrics.nodes.set(self._owned_count())
        self.metrics.pods.set(len(self.pods))

    def _forget_node(self, name: str) -> None:
        self._release_node(name)
        self.nodes.pop(name, None)
        self.orphans.pop(name, None)
        if self.resource_metrics is not None:
            self.resource_metrics.node_gone(name)

    def _owned_count(self) -> int:
        return len(self.leases) if self.cfg.lease_duration > 0 else sum(
            1 for n, i in self.nodes.items() if i.managed and self.owned(n))

    def serves(self, node_name: str) -> bool:
        info = self.nodes.get(node_name)
        return info is not None and info.managed and self.owned(node_name)

    # -- pods ------------------------------------------------------------------------------
    def _on_pod(self, typ: str, pod: dict[str, Any]) -> None:
        key = obj_key(pod)
        node = (pod.get("spec") or {}).get("nodeName") or ""
        if typ == "DELETED":
            old = self.pods.pop(key, None)
            self.queue.cancel(("Pod", key))
            node = node or (old[0] if old else "")
            self.pods_by_node.get(node, set()).discard(key)
            waiting = self.orphans.get(node)
            if waiting is not None and waiting.pop(key, None) is not None and not waiting:
                del self.orphans[node]   # deleted before its node came: not replayed with it
            uid = (pod.get("metadata") or {}).get("uid") or (old[1] if old else "")
            if uid:
                self._release_ips(str(uid))
            if self.resource_metrics is not None:
                self.resource_metrics.pod_gone(key)
            self.metrics.pods.set(len(self.pods))
            return
        if not self.serves(node):
            if node not in self.nodes and len(self.orphans) < 10000:
                self.orphans.setdefault(node, {})[key] = pod   # its node event has not come yet
            return
        self.pods[key] = (node, str((pod.get("metadata") or {}).get("uid", "")))
        self.pods_by_node.setdefault(node, set()).add(key)
        if self.resource_metrics is not None:
            self.resource_metrics.pod_seen(key, pod)
        self.metrics.pods.set(len(self.pods))
        self._plan("Pod", pod)

    def _start_node_pod_watch(self, node: str) -> None:
        if node in self.per_node_watches:
            return
        r = Reflector(self.kube, "/api/v1/pods", self._on_pod, name=f"pods:{node}",
                      field_selector=f"spec.nodeName={node}", on_event=lambda _n: self.metrics.watch_event("pods"))
        self.per_node_reflectors[node] = r
        self.per_node_watches[node] = asyncio.create_task(r.run())

    # -- IPs -------------------------------------------------------------------------------
    def _node_ips_with(self, node: str) -> list[str]:
        info = self.nodes.get(node)
        return (info.ips if info and info.ips else None) or [self.cfg.node_ip]

    def _pod_ips_with(self, pod: dict[str, Any], node: str, host_network: Any, uid: Any, name: Any, ns: Any) -> list[str]:
        if host_network is True:
            return self._node_ips_with(node)
        key = str(uid or f"{ns}/{name}")
        have = self.pod_ips.get(key)
        if have:
            return have
        status = pod.get("status") or {}
        existing = [p.get("ip") for p in status.get("podIPs") or [] if isinstance(p, dict) and p.get("ip")]
        if not existing and status.get("podIP"):
            existing = [status["podIP"]]
        info = self.nodes.get(node)
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

    def _funcs(self, kind: str, obj: dict[str, Any]) -> dict[str, Callable[..., Any]]:
        f = dict(self.base_funcs)
        cfg = self.cfg
        f["NodeIP"] = lambda: cfg.node_ip
        # kwok's NodeName is one global value, often empty; then the node-initialize template
        # renders a null address list that deletes the node's addresses. A kubelet reports its
        # own hostname, so with no --node-name a node stage gets the node's name.
        own = (obj.get("metadata") or {}).get("name", "") if kind == "Node" else ""
        f["NodeName"] = lambda: cfg.node_name or own
        f["NodePort"] = lambda: cfg.node_port
        if kind == "Pod":
            node = (obj.get("spec") or {}).get("nodeName", "")
            f["NodeIPWith"] = lambda n: self._node_ips_with(n)[0]
            f["NodeIPsWith"] = self._node_ips_with
            f["PodIPsWith"] = lambda n, hn, uid, name, ns: self._pod_ips_with(obj, n, hn, uid, name, ns)
            f["PodIPWith"] = lambda n, hn, uid, name, ns: self._pod_ips_with(obj, n, hn, uid, name, ns)[0]
            meta = obj.get("metadata") or {}
            f["PodIP"] = lambda: self._pod_ips_with(obj, node, False, meta.get("uid"), meta.get("name"),
                                                    meta.get("namespace"))[0]
        return f

    def _stage_failed(self, stage: str, msg: str) -> None:
        """One stage failed on one object: counted, logged, and the latest per stage in status."""
        self.metrics.stage_error(stage)
        self.last_error = msg
        if stage in self.play_errors or len(self.play_errors) < 100:
            self.play_errors[stage] = msg
        log.warning("stage_failed", shard=self.cfg.name, stage=stage, error=msg)

    # -- generic stage controllers (every resource but Node and Pod) ----------------------
    def _owns_object(self, obj: dict[str, Any]) -> bool:
        """Sharded, an object of a generic resource belongs to the shard owning its uid's bucket."""
        if not self.bucket_count or self.my_buckets is None:
            return True
        uid = (obj.get("metadata") or {}).get("uid") or obj_key(obj)
        return bucket_of(str(uid), self.bucket_count) in self.my_buckets

    async def _sync_controllers(self) -> None:
        """One controller per (apiGroup, kind) that a loaded Stage names; a kind the apiserver does
        not serve is reported and tried again every `rediscover_every` seconds (a CRD may come)."""
        async with self._controllers_lock:
            want: dict[tuple[str, str], list[Stage]] = {}
            for st in self.engine.stages:
                if (st.api_group, st.kind) not in (("v1", "Node"), ("v1", "Pod")):
                    want.setdefault((st.api_group, st.kind), []).append(st)
            for key in [k for k in self.controllers if k not in want]:
                await self.controllers.pop(key).stop()
            errors: dict[str, str] = {}
            for (group, kind), stages in want.items():
                c = self.controllers.get((group, kind))
                if c is not None:
                    c.set_stages(stages)
                    continue
                try:
                    res = await self.discovery.resolve(group, kind)
                except (NotServed, ApiError) as e:
                    names = ", ".join(sorted(s.name for s in stages))
                    errors[f"{group}/{kind}"] = f"stage {names}: spec.resourceRef {kind} in {group}: {e}"
                    continue
                c = StageController(self.writer, StageControllerConfig(res, self.cfg.name), stages,
                                    funcs=lambda: self._generic_funcs, owns=self._owns_object,
                                    on_transition=self._generic_transition, on_error=self._stage_failed)
                self.controllers[(group, kind)] = c
                await c.start()
                log.info("stage_controller_started", shard=self.cfg.name, resource=str(res),
                         stages=c.stage_names)
            for k, msg in errors.items():
                if self.kind_errors.get(k) != msg:
                    log.warning("stage_kind_not_served", shard=self.cfg.name, error=msg)
            self.kind_errors = errors

    def _generic_transition(self, stage: str) -> None:
        self.transitions += 1
        self.metrics.transition(stage)

    async def _rediscover(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.rediscover_every)
            if self.kind_errors:
                await self._sync_controllers()

    def _resync_controllers(self) -> None:
        """From a (synchronous) watch handler: sync the controllers once the loop is free."""
        if self.ready.is_set():
            t = asyncio.create_task(self._sync_controllers())
            self._sync_tasks.add(t)
            t.add_done_callback(self._sync_tasks.discard)

    # -- stage jobs ------------------------------------------------------------------------
    def _plan(self, kind: str, obj: dict[str, Any]) -> None:
        key = (kind, obj_key(obj))
        try:
            plan = self.engine.plan(kind, obj, time.time())
        except StageError as e:
            self.last_error = str(e)
            log.warning("stage_plan_failed", shard=self.cfg.name, kind=kind, object=key[1], error=str(e))
            return
        if plan is None:
            self.queue.cancel(key)
            return
        self.queue.put(key, Job(kind, obj, plan.stage), plan.delay)

    async def _play(self, key: tuple[str, str], job: Job, _due: float) -> None:
        kind, okey = key
        if kind == "Label":
            try:
                async with self.leases_first.turn():
                    await self._label(okey)
            except ApiError as e:
                if e.status != 404:
                    log.warning("label_failed", shard=self.cfg.name, node=okey, status=e.status)
            return
        obj = job.obj
        if kind == "Node" and not self.serves(okey):
            return
        if kind == "Pod" and okey not in self.pods:
            return
        stage = job.stage
        assert stage is not None
        try:
            actions = self.engine.actions(stage, obj, self._funcs(kind, obj))
        except (StageError, IPAMError) as e:
            self._stage_failed(stage.name, f"{kind} {okey}: {e}")
            return
        try:
            async with self.leases_first.turn():
                result = await self.writer.play(NODES if kind == "Node" else PODS, obj, actions, stage.name)
        except StageError as e:   # an apply of a kind the apiserver does not serve
            self._stage_failed(stage.name, str(e))
            return
        except ApiError as e:
            if e.status == 404:
                return   # the object is gone; its DELETED event cleans up
            self._stage_failed(stage.name, f'stage "{stage.name}" on {kind} {okey}: {e.status} {e.reason}: {e.message[:200]}')
            if e.status == 409 or e.status in (429, 500, 502, 503, 504) or e.status == 0:
                self.queue.put(key, job, 1.0)   # retry with the same stage
            return
        self.transitions += 1
        self.metrics.transition(stage.name)
        if actions.immediate_next and result is not None:
            refl = self.node_watch if kind == "Node" else self._pod_reflector(result)
            if refl is not None:
                refl.known[okey] = (result.get("metadata") or {}).get("resourceVersion", "")
            if kind == "Pod":
                self.pods[okey] = (str((result.get("spec") or {}).get("nodeName", "")),
                                   str((result.get("metadata") or {}).get("uid", "")))
            self._plan(kind, result)

    def _pod_reflector(self, pod: dict[str, Any]) -> Reflector | None:
        if self.cfg.pod_watch == "node":
            return self.per_node_reflectors.get((pod.get("spec") or {}).get("nodeName", ""))
        return self.pod_watch

    # -- ownership (coordinator) -----------------------------------------------------------
    async def set_owned(self, owned: Callable[[str], bool], buckets: frozenset[int] | None = None) -> None:
        """Switch to a new slice: release nodes no longer owned, adopt the newly owned ones.

        In label-sharded mode the node watch is re-selected to the new buckets; its relist
        brings the newly owned nodes (and reports the others as gone)."""
        if buckets is not None and buckets == self.my_buckets:
            return   # the same slice: nothing to release, adopt or re-select
        old = self.owned
        self.owned = owned
        self.my_buckets = buckets
        for c in list(self.controllers.values()):
            await c.set_owned(self._owns_object)
        if self.cfg.buckets > 0 and buckets is not None:
            for name, info in list(self.nodes.items()):
                if info.managed and old(name) and not owned(name):
                    self._release_node(name)
            await self._restart_node_watch()
            return
        for name, info in list(self.nodes.items()):
            if not info.managed:
                continue
            was, now = old(name), owned(name)
            if was and not now:
                self._release_node(name)
            elif now and not was:
                self._adopt_node(name)
                if self.cfg.pod_watch == "cluster":
                    await self._relist_node_pods(name)
                try:  # we hold no copy of a node we did not own: read it once to plan its stages
                    self._plan("Node", await self.kube.get(path_for("Node", name)))
                except ApiError as e:
                    log.warning("adopt_read_failed", shard=self.cfg.name, node=name, status=e.status)

    async def _relist_node_pods(self, node: str) -> None:
        items, _ = await self.kube.list_all("/api/v1/pods", fieldSelector=f"spec.nodeName={node}")
        for pod in items:
            self._on_pod("ADDED", pod)

    # -- label-sharded node watch ----------------------------------------------------------
    def _node_selector(self) -> str | None:
        parts = [self.cfg.node_label_selector] if self.cfg.node_label_selector else []
        if self.cfg.buckets > 0:
            mine = sorted(self.my_buckets or ())
            # an empty slice selects nothing: a bucket value no node carries
            parts.append(f"{BUCKET_LABEL} in ({','.join(map(str, mine)) or 'none'})")
        return ",".join(parts) or None

    async def _restart_node_watch(self) -> None:
        assert self.node_watch is not None
        if self.node_watch_task is not None:
            self.node_watch_task.cancel()
            await asyncio.gather(self.node_watch_task, return_exceptions=True)
        sel = self._node_selector()
        if sel:
            self.node_watch.params["labelSelector"] = sel
        self.node_watch.synced.clear()
        self.node_watch.lists = 0          # a re-slice is not a relist storm
        self.node_watch_task = asyncio.create_task(self.node_watch.run())
        await self.node_watch.synced.wait()

    def _on_unlabeled(self, typ: str, node: dict[str, Any]) -> None:
        """New nodes carry no bucket yet: the shard owning the bucket labels them."""
        if typ == "DELETED" or not self._manages(node):
            return
        name = node["metadata"]["name"]
        b = bucket_of(name, self.cfg.buckets)
        if self.my_buckets is None or b not in self.my_buckets:
            return
        self.queue.put(("Label", name), Job("Label", node, None), 0.0)  # type: ignore[arg-type]

    async def _label(self, name: str) -> None:
        b = bucket_of(name, self.cfg.buckets)
        await self.kube.retrying(lambda: self.kube.patch(
            path_for("Node", name), {"metadata": {"labels": {BUCKET_LABEL: str(b)}}}, "merge"), what=f"label {name}")
        self.labeled += 1

    # -- run -------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.cfg.token_exchange:
            await self.token.start()
        if self.cfg.metrics_port >= 0:
            port = self.metrics.serve(self.cfg.metrics_port, self.cfg.metrics_addr)
            log.info("metrics_serving", shard=self.cfg.name, port=port)
        self.tasks.append(asyncio.create_task(self.queue.run()))
        if self.cfg.lease_duration > 0:
            self.tasks.append(asyncio.create_task(self.leases.run()))
        if self.cfg.watch_stages:
            sw = Reflector(self.kube, "/apis/kwok.x-k8s.io/v1alpha1/stages", self._on_stage, name="stages")
            self.tasks.append(asyncio.create_task(sw.run()))
            try:
                await asyncio.wait_for(sw.synced.wait(), 10)
            except TimeoutError:
                log.info("no_stage_crd", shard=self.cfg.name)
        if self.resource_metrics is not None:
            self.tasks.extend(asyncio.create_task(r.run()) for r in self.resource_metrics.reflectors(self.kube))
        self.node_watch = Reflector(
            self.kube, "/api/v1/nodes", self._on_node, name="nodes",
            label_selector=self._node_selector(),
            on_event=lambda _n: self.metrics.watch_event("nodes"),
            on_relist=lambda: self.metrics.relist("nodes"))
        self.node_watch_task = asyncio.create_task(self.node_watch.run())
        if self.cfg.buckets > 0:
            unl = ",".join(filter(None, [self.cfg.node_label_selector, f"!{BUCKET_LABEL}"]))
            uw = Reflector(self.kube, "/api/v1/nodes", self._on_unlabeled, name="unlabeled-nodes",
                           label_selector=unl, on_event=lambda _n: self.metrics.watch_event("nodes-unlabeled"))
            self.tasks.append(asyncio.create_task(uw.run()))
        await self.node_watch.synced.wait()
        if self.cfg.pod_watch == "cluster":
            self.pod_watch = Reflector(
                self.kube, "/api/v1/pods", self._on_pod, name="pods", field_selector="spec.nodeName!=",
                on_event=lambda _n: self.metrics.watch_event("pods"),
                on_relist=lambda: self.metrics.relist("pods"))
            self.tasks.append(asyncio.create_task(self.pod_watch.run()))
            await self.pod_watch.synced.wait()
        for p in self.cfg.profiles:
            for obj in profile_objects(p):
                try:
                    await self.writer.ensure(obj)
                except (ApiError, NotServed) as e:
                    log.warning("profile_object_failed", shard=self.cfg.name, profile=p, kind=obj.get("kind"),
                                name=(obj.get("metadata") or {}).get("name"), error=str(e))
        await self._sync_controllers()
        self.tasks.append(asyncio.create_task(self._rediscover()))
        heap.freeze()
        self.ready.set()
        log.info("shard_ready", shard=self.cfg.name, nodes=self._owned_count(), pods=len(self.pods))

    async def stop(self, release_leases: bool = False) -> None:
        tasks = [*self.tasks, *self.per_node_watches.values()]
        if self.node_watch_task is not None:
            tasks.append(self.node_watch_task)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in self.controllers.values():
            await c.stop()
        if release_leases:
            await self.leases.release_all()
        await self.token.stop()
        await self.kube.close()
        await self.lease_kube.close()

    def node_metrics(self, path: str) -> tuple[int, str]:
        """kwok's /metrics/nodes/{node}/metrics/resource for a node this shard serves."""
        if self.resource_metrics is None:
            return 404, "node metrics are off (start shardlet with --node-metrics)\n"
        return self.resource_metrics.render(path, self.serves)

    def metric_targets(self) -> list[tuple[str, str]]:
        return self.resource_metrics.discovery(self.serves) if self.resource_metrics is not None else []

    def status(self) -> dict[str, Any]:
        h = self.metrics.lease_lag
        return {
            "shard": self.cfg.name,
            "nodes": self._owned_count(),
            "pods": len(self.pods),
            "watch_events": sum(self.metrics.events_by_resource().values()),
            # what the slice's own watches decoded (not the one-off unlabeled-node events)
            "slice_watch_events": sum(v for k, v in self.metrics.events_by_resource().items()
                                      if k in ("nodes", "pods")),
            "transitions": self.transitions,
            "lease_renewals": self.leases.renewals,
            "lease_failures": self.leases.failures,
            "stage_writes_behind_leases": self.leases_first.deferred,
            "lease_renewals_skipped_not_ready": self.leases.skipped,
            "lease_lag_p50": _hist_quantile(h, 0.5),
            "lease_lag_p99": _hist_quantile(h, 0.99),
            "queue": len(self.queue),
            "buckets": len(self.my_buckets) if self.my_buckets is not None else None,
            # [bucket, nodes] pairs: msgpack maps between processes take str keys only
            "bucket_nodes": sorted(Counter(self.node_buckets.values()).items()) if self.bucket_count else None,
            "pod_watches": len(self.per_node_watches) or (1 if self.pod_watch else 0),
            # "token": short requests carry the service-account token (shardlet.satoken)
            "auth": "token" if self.kube.token_in_use else ("cert" if self.kube.client_cert else "kubeconfig"),
            "token_fallbacks": self.kube.token_fallbacks,
            "stage_errors": sorted([*self.stage_errors.values(), *self.kind_errors.values(), *self.play_errors.values()]),
            "stage_controllers": {str(c.res): c.stage_names for c in self.controllers.values()},
            "node_metric_errors": sorted(self.resource_metrics.errors.values()) if self.resource_metrics else [],
            "last_error": self.last_error or self.leases.last_error,
        }


def _hist_quantile(h: Any, q: float) -> float | None:
    """Quantile estimate from a prometheus Histogram child's buckets (upper bound of the bucket)."""
    buckets = [(float(b), c.get()) for b, c in zip(h._upper_bounds, h._buckets, strict=False)]
    total = sum(c for _, c in buckets)
    if total == 0:
        return None
    acc = 0.0
    for ub, c in buckets:
        acc += c
        if acc >= q * total:
            return ub
    return buckets[-1][0]
