"""One shard: the composition root that plays kubelet for the nodes of its slice.

It builds one apiserver client per purpose (stage writes; lease renewals on connections of
their own), the writer, discovery and the controllers, and wires them with callbacks, kwok's
shape (``pkg/kwok/controllers``), so no controller reaches into another:

- :mod:`~shardlet.controllers.stagesource`: which Stages are played (command line and cluster);
- :mod:`~shardlet.controllers.nodes`: which nodes are served, and their stages;
- :mod:`~shardlet.controllers.pods`: the pods on those nodes, their IPs and stages;
- :mod:`~shardlet.controllers.leases`: the served nodes' Leases;
- :mod:`~shardlet.controllers.stages`: one generic Stage controller per other resource a Stage
  names (resolved through discovery; a kind not served yet is looked up again every
  ``rediscover_every`` seconds, since a CRD may come).

What the shard serves is one :class:`~shardlet.ownership.Ownership`, handed to every controller
(the coordinator's table through the actor; everything when run alone). The shard also owns
what is reported: metrics, ``status()`` and the stage errors.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from shardlet import heap
from shardlet.api import ApiError, Kube
from shardlet.controllers.leases import LeaseController, LeaseControllerConfig
from shardlet.controllers.nodes import FAKE_ANNOTATION, NodeController, NodeControllerConfig, kubelet_port
from shardlet.controllers.pods import PodController, PodControllerConfig
from shardlet.controllers.stages import StageController, StageControllerConfig
from shardlet.controllers.stagesource import StageSource
from shardlet.discovery import Discovery, NotServed
from shardlet.kubeletserver import KubeletServer, KubeletServerConfig, LogSources, listen_address
from shardlet.metrics import ShardMetrics
from shardlet.ownership import EVERYTHING, Ownership
from shardlet.precedence import LeasesFirst
from shardlet.resourcemetrics import ResourceMetrics
from shardlet.satoken import TokenKeeper
from shardlet.stages.engine import StageEngine
from shardlet.stages.funcs import base_funcs
from shardlet.stages.model import Stage, profile_objects
from shardlet.supervise import Supervisor
from shardlet.watch import Reflector
from shardlet.writer import Writer

__all__ = ["FAKE_ANNOTATION", "Shard", "ShardConfig"]

log = structlog.get_logger("shardlet.shard")

NODE_AND_POD = (("v1", "Node"), ("v1", "Pod"))


@dataclass
class ShardConfig:
    name: str = "shardlet-0"
    # lease holderIdentity (default: name). Unique per instance and shard, so that two instances
    # fence each other; a holder "<instance>" or "<instance>/<shard>" is this run's own
    holder: str = ""
    instance: str = ""
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
    # the kubelet server (shardlet.kubeletserver): "host:port" to listen on ("": node_ip at
    # node_port; no server when that is 0 too); port 0 picks a free one, advertised
    server_address: str = ""
    tls_cert_file: str | None = None
    tls_private_key_file: str | None = None
    kubelet_client_ca: str | None = None
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
    create_rbac: bool = False                         # ... whose account this shard may create
    rbac_extra_rules: tuple[dict[str, Any], ...] = () # ... with these rules besides (--rbac-extra-rules)
    server_shard_filter: bool = True                  # generic controllers send a shardSelector
    generic_head_start: float = 5.0                   # seconds start() lets generic lists go before nodes


class Shard:
    def __init__(self, kube: Kube, config: ShardConfig, ownership: Ownership = EVERYTHING) -> None:
        self.kube = kube
        self.cfg = config
        self.own = ownership
        self.metrics = ShardMetrics(config.name)
        kube.on_request = self.metrics.request
        self.start_time = dt.datetime.now(dt.UTC)
        self.funcs: dict[str, Callable[..., Any]] = {
            **base_funcs(self.start_time),
            "NodeIP": lambda: config.node_ip, "NodeName": lambda: config.node_name,
            "NodePort": self._node_port}
        self.transitions = 0
        self.last_error = ""
        self.play_errors: dict[str, str] = {}      # stage -> its latest failure on some object
        self.kind_errors: dict[str, str] = {}      # "apiGroup/kind" -> why no controller plays it
        # sharded: the bucket of every node served, so the coordinator can balance node counts
        self.node_buckets: dict[str, int] = {}
        self.ready = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        # every long-lived loop of this shard: one that fails unexpectedly is restarted and counted
        self.supervisor = Supervisor(on_restart=self.metrics.task_restart)

        # leases get connections of their own, like the kubelet's heartbeat client: a backlog of
        # stage writes must not hold a renewal back until the node goes NotReady
        self.lease_kube = kube.sibling(max_connections=config.lease_concurrency, user_agent="shardlet-lease")
        self.holder = config.holder or config.name
        self.leases = LeaseController(
            self.lease_kube, LeaseControllerConfig(self.holder, max(1, config.lease_duration),
                                                   config.lease_concurrency),
            on_renew=self.metrics.renew, on_held=self._lease_held, on_lost=self._lease_lost,
            trusts=self._own_holder)
        # stage writes give way while renewals run behind (before that they go at full speed,
        # and renewals stretch a little)
        self.leases_first = LeasesFirst(self.leases.behind)
        self.token = TokenKeeper(kube, config.name, create=config.create_rbac,
                                 extra_rules=list(config.rbac_extra_rules))
        self.discovery = Discovery(kube)
        self.writer = Writer(kube, self.discovery, config.name)
        self.stages = StageSource(kube, shard=config.name, profiles=config.profiles, files=config.stage_files,
                                  watch=config.watch_stages, on_change=self._on_stages, supervisor=self.supervisor)
        self.log_sources = LogSources()
        self.kubelet: KubeletServer | None = None
        self.kubelet_error = ""
        self.advertised = 0         # nodes pointed at this shard's kubelet server after a hand-over
        self._advertising: set[str] = set()
        self.resource_metrics = ResourceMetrics(
            config.name, lambda n: self.pods.on_node(n), config.metric_files) if config.node_metrics else None
        self.nodes = NodeController(
            kube, self.writer,
            NodeControllerConfig(config.name, config.manage_all_nodes, config.node_annotation_selector,
                                 config.node_label_selector, config.buckets > 0, config.node_name,
                                 config.stage_concurrency),
            self.stages.engine, ownership, funcs=self.funcs, gate=self.leases_first.turn,
            on_seen=self._node_seen, on_ready=self._node_ready, on_adopt=self._node_adopted,
            on_acquire=self._node_acquired, on_release=self._node_released, on_forget=self._node_forgotten,
            on_event=self.metrics.watch_event, on_relist=lambda: self.metrics.relist("nodes"),
            on_transition=self._transition, on_error=self._stage_failed, held=self._held,
            supervisor=self.supervisor)
        self.pods = PodController(
            kube, self.writer,
            PodControllerConfig(config.name, config.cidr, config.node_ip, config.pod_watch, config.stage_concurrency),
            self.stages.engine, funcs=self.funcs, serves=self.nodes.plays, node=self.nodes.info,
            waiting=self._waiting,
            gate=self.leases_first.turn, on_seen=self._pod_seen, on_gone=self._pod_gone,
            on_count=self.metrics.pods.set, on_event=self.metrics.watch_event,
            on_relist=lambda: self.metrics.relist("pods"), on_transition=self._transition,
            on_error=self._stage_failed, supervisor=self.supervisor)
        self.controllers: dict[tuple[str, str], StageController] = {}
        self._controllers_lock = asyncio.Lock()
        self._sync_tasks: set[asyncio.Task[None]] = set()
        self._starting = "not started"           # what start() waits for (start_blocker)
        self._lost: set[str] = set()               # served nodes whose lease another holder took

    # -- wiring: what one controller tells the others -----------------------------------------
    def _on_stages(self, engine: StageEngine) -> None:
        self.nodes.set_engine(engine)
        self.pods.set_engine(engine)
        if self.ready.is_set():   # from the (synchronous) Stage watch: sync once the loop is free
            t = asyncio.create_task(self._sync_controllers())
            self._sync_tasks.add(t)
            t.add_done_callback(self._sync_tasks.discard)

    def _node_seen(self, name: str, node: dict[str, Any]) -> None:
        if self.resource_metrics is not None:
            self.resource_metrics.node_seen(name, node)
        if self.kubelet is not None and self.own.owns_node(name) and self._held(name):
            self._maybe_advertise(name, kubelet_port(node))   # e.g. a restarted worker's new port

    def _node_ready(self, name: str, ready: bool) -> None:
        if self.cfg.lease_duration > 0:
            self.leases.set_ready(name, ready)

    def _held(self, name: str) -> bool:
        """The node may be played here: its lease is ours (or leases are off)."""
        return self.cfg.lease_duration <= 0 or self.leases.holds(name)

    def _waiting(self, name: str) -> bool:
        """Served here once its lease is ours: its pods wait for that."""
        return self.nodes.serves(name) and not self._held(name)

    def _own_holder(self, holder: str) -> bool:
        """A holder of this run (another of its shards): the coordinator hands a node over only
        after its old owner released it or was killed, so its lease is taken over at once."""
        inst = self.cfg.instance
        return bool(inst) and (holder == inst or holder.startswith(inst + "/"))

    def _node_adopted(self, name: str, uid: str) -> None:
        if self.cfg.lease_duration > 0:
            self.leases.add(name, uid)
        if self.own.sharded:
            self.node_buckets[name] = self.own.node_bucket(name)
        self.metrics.nodes.set(len(self.nodes.served))
        if self._held(name):
            self.pods.node_adopted(name)

    def _lease_held(self, name: str) -> None:
        self.nodes.node_held(name)
        self.pods.node_adopted(name)
        info = self.nodes.info(name)
        if info is not None:
            self._maybe_advertise(name, info.port)
        if name in self._lost:     # its pods were dropped when the lease went: list them again
            self._lost.discard(name)
            t = asyncio.create_task(self.pods.node_acquired(name))
            self._sync_tasks.add(t)
            t.add_done_callback(self._sync_tasks.discard)

    def _maybe_advertise(self, name: str, port: int | None) -> None:
        """A node this shard plays that says its kubelet is elsewhere (handed over from another
        shard, or advertised by an earlier run): point it here. One never played (no port yet)
        gets the port from its stage."""
        if self.kubelet is None or port in (None, self.kubelet.port) or name in self._advertising:
            return
        self._advertising.add(name)
        t = asyncio.create_task(self._advertise(name))
        self._sync_tasks.add(t)
        t.add_done_callback(self._sync_tasks.discard)
        t.add_done_callback(lambda _t: self._advertising.discard(name))

    async def _advertise(self, name: str) -> None:
        assert self.kubelet is not None
        body = {"status": {"daemonEndpoints": {"kubeletEndpoint": {"Port": self.kubelet.port}}}}
        try:
            await self.kube.retrying(lambda: self.kube.patch(f"/api/v1/nodes/{name}/status", body, "merge"),
                                     what=f"node {name} kubelet port")
            self.advertised += 1
        except ApiError as e:
            log.warning("kubelet_port_not_advertised", shard=self.cfg.name, node=name, status=e.status,
                        error=e.message[:200])

    def _lease_lost(self, name: str) -> None:
        self.nodes.node_lost(name)
        self.pods.node_released(name)
        self._lost.add(name)

    async def _node_acquired(self, name: str) -> None:
        await self.pods.node_acquired(name)

    def _node_released(self, name: str) -> None:
        self.leases.remove(name)
        self._lost.discard(name)
        self.node_buckets.pop(name, None)
        self.pods.node_released(name)
        self.metrics.nodes.set(len(self.nodes.served))

    def _node_forgotten(self, name: str) -> None:
        self.pods.node_forgotten(name)
        if self.resource_metrics is not None:
            self.resource_metrics.node_gone(name)

    def _pod_seen(self, key: str, pod: dict[str, Any]) -> None:
        if self.resource_metrics is not None:
            self.resource_metrics.pod_seen(key, pod)

    def _pod_gone(self, key: str) -> None:
        if self.resource_metrics is not None:
            self.resource_metrics.pod_gone(key)

    def _transition(self, stage: str) -> None:
        self.transitions += 1
        self.metrics.transition(stage)

    def _stage_failed(self, stage: str, msg: str) -> None:
        """One stage failed on one object: counted, logged, and the latest per stage in status."""
        self.metrics.stage_error(stage or "plan")
        self.last_error = msg
        if stage in self.play_errors or len(self.play_errors) < 100:
            self.play_errors[stage] = f'stage "{stage}": {msg}' if stage else msg
        log.warning("stage_failed", shard=self.cfg.name, stage=stage, error=msg)

    # -- generic Stage controllers (every resource but Node and Pod) ------------------------
    async def _sync_controllers(self) -> None:
        """One controller per (apiGroup, kind) that a loaded Stage names; a kind the apiserver does
        not serve is reported and tried again every ``rediscover_every`` seconds (a CRD may come)."""
        async with self._controllers_lock:
            want: dict[tuple[str, str], list[Stage]] = {}
            for st in self.stages.engine.stages:
                if (st.api_group, st.kind) not in NODE_AND_POD:
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
                c = StageController(self.writer, StageControllerConfig(
                                        res, self.cfg.name, server_filter=self.cfg.server_shard_filter),
                                    stages, self.own,
                                    funcs=self.funcs, on_transition=self._transition, on_error=self._stage_failed,
                                    supervisor=self.supervisor)
                self.controllers[(group, kind)] = c
                await c.start()
                log.info("stage_controller_started", shard=self.cfg.name, resource=str(res), stages=c.stage_names)
            for k, msg in errors.items():
                if self.kind_errors.get(k) != msg:
                    log.warning("stage_kind_not_served", shard=self.cfg.name, error=msg)
            self.kind_errors = errors

    def list_errors(self) -> list[str]:
        """The generic resources that cannot be listed now, naming the Stages that want them."""
        return [f"stage {', '.join(c.stage_names)}: spec.resourceRef {c.res.kind} in {c.res.group_version}: "
                f"cannot list {c.res.plural}: {c.error}" for c in self.controllers.values() if c.error]

    async def _rediscover(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.rediscover_every)
            if self.kind_errors:
                await self._sync_controllers()

    # -- ownership (coordinator) -----------------------------------------------------------
    async def set_ownership(self, own: Ownership) -> None:
        """Switch every controller to a new slice (the same value for all)."""
        if own == self.own:
            return
        self.own = own
        await self.nodes.set_ownership(own)      # nodes first: their leases are what runs out
        for c in list(self.controllers.values()):
            await c.set_ownership(own)

    # -- the kubelet server ----------------------------------------------------------------
    def _node_port(self) -> int:
        """The port the node stages advertise: the kubelet server's, or the configured one."""
        return self.kubelet.port if self.kubelet is not None and self.kubelet.port else self.cfg.node_port

    async def _start_kubelet(self) -> None:
        where = listen_address(self.cfg.server_address, self.cfg.node_ip, self.cfg.node_port)
        if where is None:
            return
        server = KubeletServer(
            KubeletServerConfig(where[0], where[1], self.cfg.tls_cert_file, self.cfg.tls_private_key_file,
                                self.cfg.kubelet_client_ca),
            self.log_sources, pod_known=self.pods.plays)
        try:
            await server.start()
        except OSError as e:   # the port is taken (another kubelet, another instance): play on without
            self.kubelet_error = f"{where[0]}:{where[1]}: {e.strerror or e}"
            log.error("kubelet_server_failed", shard=self.cfg.name, address=f"{where[0]}:{where[1]}",
                      error=self.kubelet_error)
            return
        self.kubelet = server
        for plural, handler in (("logs", self.log_sources.on_logs), ("clusterlogs", self.log_sources.on_cluster_logs)):
            r = Reflector(self.kube, f"/apis/kwok.x-k8s.io/v1alpha1/{plural}", handler, name=plural,
                          supervisor=self.supervisor, poll_when_missing=30.0)
            self.tasks.append(self.supervisor.spawn("watch", plural, r.run))

    # -- run -------------------------------------------------------------------------------
    async def start(self) -> None:
        self._starting = "the service-account token"
        if self.cfg.token_exchange:
            await self.token.start()
        self._starting = "the kubelet server"
        await self._start_kubelet()
        if self.cfg.metrics_port >= 0:
            port = self.metrics.serve(self.cfg.metrics_port, self.cfg.metrics_addr)
            log.info("metrics_serving", shard=self.cfg.name, port=port)
        if self.cfg.lease_duration > 0:
            self.tasks.append(self.supervisor.spawn("leases", "leases", self.leases.run))
        self._starting = "the Stage list"
        await self.stages.start()
        self._starting = "the profiles' objects"
        if self.resource_metrics is not None:
            self.tasks.extend(self.supervisor.spawn("watch", r.name, r.run)
                              for r in self.resource_metrics.reflectors(self.kube))
        for p in self.cfg.profiles:
            for obj in profile_objects(p):
                try:
                    await self.writer.ensure(obj)
                except (ApiError, NotServed) as e:
                    log.warning("profile_object_failed", shard=self.cfg.name, profile=p, kind=obj.get("kind"),
                                name=(obj.get("metadata") or {}).get("name"), error=str(e))
        # generic controllers list before the nodes do (once nodes are served, one pod list per
        # node floods the connection pool, and a restarted shard counts as served only when
        # start() returns), but for a bounded head start only: a list that hangs (an aggregated
        # API that is down) must not keep the nodes' leases waiting
        generic = asyncio.create_task(self._sync_controllers())
        self._sync_tasks.add(generic)            # stop() ends it, should start() be given up
        generic.add_done_callback(self._sync_tasks.discard)
        self._starting = "the generic Stage controllers' first lists"
        await asyncio.wait({generic}, timeout=self.cfg.generic_head_start)
        if self.cfg.lease_duration > 0:
            self._starting = "the lease list"
            try:
                primed = await self.leases.prime(self.own.owns_node)
                log.info("leases_primed", shard=self.cfg.name, holder=self.holder, held=primed)
            except ApiError as e:   # each node's lease is then read when the node comes
                log.warning("leases_prime_failed", shard=self.cfg.name, status=e.status, error=e.message[:200])
        self._starting = "the node list"
        await self.nodes.start()
        self.leases.unprime()
        self._starting = "the pod list"
        await self.pods.start()
        self._starting = "the generic Stage controllers' first lists"
        await generic
        self.tasks.append(self.supervisor.spawn("rediscover", "rediscover", self._rediscover))
        heap.freeze()
        self.ready.set()
        log.info("shard_ready", shard=self.cfg.name, nodes=len(self.nodes.served), pods=len(self.pods))

    async def stop(self, release_leases: bool = False) -> None:
        for t in [*self.tasks, *self._sync_tasks]:
            t.cancel()
        await asyncio.gather(*self.tasks, *self._sync_tasks, return_exceptions=True)
        await self.stages.stop()
        await self.nodes.stop()
        await self.pods.stop()
        for c in self.controllers.values():
            await c.stop()
        if release_leases:
            await self.leases.release_all()
        if self.kubelet is not None:
            await self.kubelet.stop()
        await self.token.stop()
        await self.kube.close()
        await self.lease_kube.close()

    def start_blocker(self) -> str:
        """What start() waits for, in one line (for a start that does not finish)."""
        watch = {"the node list": self.nodes.watch, "the pod list": self.pods.watch,
                 "the Stage list": self.stages.reflector}.get(self._starting)
        return f"{self._starting} ({watch.error or 'no answer yet'})" if watch is not None else self._starting

    def node_metrics(self, path: str) -> tuple[int, str]:
        """kwok's /metrics/nodes/{node}/metrics/resource for a node this shard serves."""
        if self.resource_metrics is None:
            return 404, "node metrics are off (start shardlet with --node-metrics)\n"
        return self.resource_metrics.render(path, self.nodes.serves)

    def metric_targets(self) -> list[tuple[str, str]]:
        return self.resource_metrics.discovery(self.nodes.serves) if self.resource_metrics is not None else []

    def status(self) -> dict[str, Any]:
        h = self.metrics.lease_lag
        events = self.metrics.events_by_resource()
        return {
            "shard": self.cfg.name,
            "nodes": len(self.nodes.served),
            "pods": len(self.pods),
            "watch_events": sum(events.values()),
            # what the slice's own watches decoded (not the one-off unlabeled-node events)
            "slice_watch_events": sum(v for k, v in events.items() if k in ("nodes", "pods")),
            "transitions": self.transitions,
            "lease_renewals": self.leases.renewals,
            "lease_failures": self.leases.failures,
            "stage_writes_behind_leases": self.leases_first.deferred,
            "lease_renewals_skipped_not_ready": self.leases.skipped,
            "lease_holder": self.holder,
            "instance": self.cfg.instance,
            "leases_held": len(self.leases.held),
            # served nodes whose lease another holder keeps: not played until it expires
            "leases_held_elsewhere": len(self.leases.elsewhere),
            "leases_taken_over": self.leases.taken_over,
            "leases_lost": self.leases.lost,
            "lease_lag_p50": _hist_quantile(h, 0.5),
            "lease_lag_p99": _hist_quantile(h, 0.99),
            "queue": len(self.nodes.player) + len(self.pods.player),
            "buckets": len(self.own.mine) if self.own.sharded else None,
            # [bucket, nodes] pairs: msgpack maps between processes take str keys only
            "bucket_nodes": sorted(Counter(self.node_buckets.values()).items()) if self.own.sharded else None,
            "pod_watches": len(self.pods.node_watches) or (1 if self.pods.watch else 0),
            "orphan_pods": self.pods.orphan_pods,    # seen before their node, held until it comes
            # "token": short requests carry the service-account token (shardlet.satoken)
            "auth": self.kube.auth,
            "token_refused": self.kube.token_refused,
            "stage_errors": sorted([*self.stages.errors.values(), *self.kind_errors.values(),
                                    *self.play_errors.values(), *self.list_errors()]),
            "stage_controllers": {str(c.res): c.stage_names for c in self.controllers.values()},
            # per generic resource: who drops the objects of other shards ("server": the apiserver,
            # by shardSelector; "client": this shard; "none": unsharded) and the events received
            "shard_filter": {str(c.res): c.filtered_by for c in self.controllers.values()},
            "stage_watch_events": {str(c.res): c.reflector.events for c in self.controllers.values()},
            "node_metric_errors": sorted(self.resource_metrics.errors.values()) if self.resource_metrics else [],
            "last_error": self.last_error or self.leases.last_error,
            **self.supervisor.status(),
            "kubelet_server": ({"port": self.kubelet.port, "log_requests": self.kubelet.requests,
                                "nodes_readvertised": self.advertised}
                               if self.kubelet is not None else {"error": self.kubelet_error} if self.kubelet_error
                               else None),
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
