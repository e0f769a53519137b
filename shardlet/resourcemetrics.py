"""The shard's side of node resource metrics (kwok's Metric / ResourceUsage /
ClusterResourceUsage): keeps a slim copy of its nodes and pods, watches those objects in the
cluster, and answers ``/metrics/nodes/{node}/metrics/resource`` for the nodes it serves.

Off unless asked for (``--node-metrics``): the shard otherwise keeps no pod objects at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import structlog
import yaml

from shardlet.api import Kube
from shardlet.nodemetrics.collector import NodeMetrics, Timestamp
from shardlet.nodemetrics.quantity import Quantity, QuantityError, ResourceList
from shardlet.watch import Reflector

log = structlog.get_logger("shardlet.resourcemetrics")

# kwok v0.8.0's kustomize/metrics: what `kwokctl create cluster --enable-metrics-server` installs
BUILTIN = ("metrics-resource.yaml", "usage-from-annotation.yaml")
RESOURCES = (("Metric", "metrics"), ("ResourceUsage", "resourceusages"),
             ("ClusterResourceUsage", "clusterresourceusages"))


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


# The copies look like kwok's typed objects in CEL: zero values where Go has them (so
# `"k" in pod.metadata.annotations` works without annotations), quantities as Quantity and
# creationTimestamp as a timestamp. Only these fields are kept; reading another is an error.
def _slim_meta(obj: dict[str, Any]) -> dict[str, Any]:
    m = _meta(obj)
    ts = m.get("creationTimestamp")
    try:
        created = Timestamp.parse(ts) if ts else Timestamp(0)
    except (AttributeError, ValueError):
        created = Timestamp(0)
    return {"name": m.get("name", ""), "namespace": m.get("namespace", ""), "uid": m.get("uid", ""),
            "resourceVersion": m.get("resourceVersion", ""), "creationTimestamp": created,
            "labels": m.get("labels") or {}, "annotations": m.get("annotations") or {}}


def _quantities(rl: Any) -> ResourceList:
    out = ResourceList()
    for k, v in (rl or {}).items() if isinstance(rl, dict) else ():
        try:
            out[str(k)] = Quantity.parse(str(v))
        except QuantityError:
            continue   # the apiserver validates quantities; a bad one is dropped, not fatal
    return out


def slim_container(c: dict[str, Any]) -> dict[str, Any]:
    res = c.get("resources") or {}
    return {"name": c.get("name", ""), "image": c.get("image", ""),
            "resources": {"requests": _quantities(res.get("requests")), "limits": _quantities(res.get("limits"))}}


def slim_pod(pod: dict[str, Any]) -> dict[str, Any]:
    spec = pod.get("spec") or {}
    containers = [slim_container(c) for c in spec.get("containers") or [] if isinstance(c, dict)]
    return {"kind": "Pod", "metadata": _slim_meta(pod),
            "spec": {"nodeName": spec.get("nodeName", ""), "containers": containers},
            "status": {"phase": (pod.get("status") or {}).get("phase", "")}}


def slim_node(node: dict[str, Any]) -> dict[str, Any]:
    st = node.get("status") or {}
    return {"kind": "Node", "metadata": _slim_meta(node),
            "status": {"capacity": _quantities(st.get("capacity")),
                       "allocatable": _quantities(st.get("allocatable"))}}


class ResourceMetrics:
    def __init__(self, shard: str, pods_of: Callable[[str], Iterable[str]], files: Iterable[str] = ()) -> None:
        self.shard = shard
        self.pods_of = pods_of            # node -> keys of the pods this shard holds for it
        self.nodes: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.errors: dict[str, str] = {}
        self.collector = NodeMetrics(self.nodes.get, self._pods, on_error=self._eval_error)
        self.static: dict[tuple[str, str], dict[str, Any]] = {}   # built-in and file objects by (kind, name)
        docs: list[Any] = []
        for f in BUILTIN:
            docs.extend(yaml.safe_load_all(resources.files("shardlet.nodemetrics").joinpath("profiles", f).read_text()))
        for f in files:
            docs.extend(yaml.safe_load_all(Path(f).read_text()))
        for d in docs:
            if isinstance(d, dict) and isinstance(_meta(d).get("name"), str):
                self.static[(str(d.get("kind")), _meta(d)["name"])] = d
        self._load(docs, "file")

    def _pods(self, node: str) -> list[dict[str, Any]]:
        return [p for k in self.pods_of(node) if (p := self.pods.get(k)) is not None]

    def _eval_error(self, msg: str) -> None:
        log.warning("node_metric_error", shard=self.shard, error=msg)

    def _load(self, docs: Iterable[Any], source: str) -> None:
        for e in self.collector.load(docs):
            who = str(e).split(":", 1)[0]
            self.errors[who] = str(e)
            log.error("node_metrics_rejected", shard=self.shard, source=source, error=str(e))

    # -- what the shard tells us -----------------------------------------------------------
    def node_seen(self, name: str, node: dict[str, Any]) -> None:
        self.nodes[name] = slim_node(node)

    def node_gone(self, name: str) -> None:
        self.nodes.pop(name, None)
        self.collector.forget_node(name)

    def pod_seen(self, key: str, pod: dict[str, Any]) -> None:
        self.pods[key] = slim_pod(pod)

    def pod_gone(self, key: str) -> None:
        pod = self.pods.pop(key, None)
        if pod is not None:
            self.collector.forget_pod(pod["metadata"]["namespace"], pod["metadata"]["name"])

    # -- Metric / ResourceUsage / ClusterResourceUsage objects in the cluster --------------
    def reflectors(self, kube: Kube) -> list[Reflector]:
        return [Reflector(kube, f"/apis/kwok.x-k8s.io/v1alpha1/{plural}", self._handler(kind), name=plural)
                for kind, plural in RESOURCES]

    def _handler(self, kind: str) -> Callable[[str, dict[str, Any]], None]:
        def on(typ: str, obj: dict[str, Any]) -> None:
            obj.setdefault("kind", kind)
            name, ns = _meta(obj).get("name", ""), _meta(obj).get("namespace")
            who = f"{kind.lower()} \"{ns + '/' if ns else ''}{name}\""
            self.errors.pop(who, None)
            self.collector.remove(kind, name, ns)
            if typ == "DELETED":
                static = self.static.get((kind, name))
                if static is not None:   # a deleted override brings back the built-in
                    self._load([static], "file")
                return
            self._load([obj], "cluster")
        return on

    # -- serving ---------------------------------------------------------------------------
    def discovery(self, serves: Callable[[str], bool]) -> list[tuple[str, str]]:
        """(Metric name, path) of every scrape target here: one per served node for a path
        with {nodeName}, as kwok's /discovery/prometheus lists them."""
        out: list[tuple[str, str]] = []
        for m in self.collector.metrics.values():
            if "{nodeName}" in m.path:
                out.extend((m.name, m.path.replace("{nodeName}", n)) for n in sorted(self.nodes) if serves(n))
            else:
                out.append((m.name, m.path))
        return out

    def render(self, path: str, serves: Callable[[str], bool]) -> tuple[int, str]:
        found = self.collector.lookup(path)
        if found is None:
            return 404, f"no Metric serves {path}\n"
        metric, node = found
        if node not in self.nodes or not serves(node):
            return 404, f"node {node!r} is not served by shard {self.shard}\n"
        return 200, self.collector.render(metric, node)
