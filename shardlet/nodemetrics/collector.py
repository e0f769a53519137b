"""Evaluate Metrics for one node and write them as Prometheus text (format 0.0.4).

Follows kwok v0.8.0 (``pkg/kwok/server/metrics*.go``, ``pkg/kwok/metrics``):

* usage of a container comes from the pod's ResourceUsage (same name and namespace), else
  from the first ClusterResourceUsage whose selector matches; a pod's is the sum of its
  containers', a node's the sum over its pods;
* ``CumulativeUsage`` integrates usage over wall time between scrapes (the first scrape is 0);
* a Metric without ``{nodeName}`` in its path is asked for with its own name as the node.

The shard gives it two lookups, ``node(name)`` and ``pods(node)``, returning plain dicts.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from shardlet.nodemetrics.model import (
    Metric,
    MetricConfig,
    NodeMetricsError,
    ResourceUsage,
    UsageValue,
    compile_docs,
)
from shardlet.nodemetrics.quantity import Quantity, QuantityError
from shardlet.stages.selector import CelError, CelValue

Obj = Mapping[str, Any]


class Timestamp(CelValue):
    """CEL timestamp from Now(): compares, and UnixSecond() turns it into seconds."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def cel_key(self) -> Any:
        return self.seconds

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Timestamp) and other.seconds == self.seconds

    def __hash__(self) -> int:
        return hash(self.seconds)

    def __str__(self) -> str:
        return dt.datetime.fromtimestamp(self.seconds, dt.UTC).isoformat().replace("+00:00", "Z")

    @classmethod
    def parse(cls, s: str) -> Timestamp:
        """An RFC 3339 time as the apiserver writes it ("2026-11-01T10:00:00Z"); ValueError if not."""
        return cls(dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp())


def _created(obj: Any) -> float:
    ts = ((obj or {}).get("metadata") or {}).get("creationTimestamp") if isinstance(obj, Mapping) else None
    if isinstance(ts, Timestamp):
        return ts.seconds
    if not isinstance(ts, str):
        raise CelError("object has no metadata.creationTimestamp")
    try:
        return Timestamp.parse(ts).seconds
    except ValueError:
        raise CelError(f"invalid creationTimestamp {ts!r}") from None


def as_float(v: Any) -> float:
    """kwok's cel.AsFloat64."""
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, Quantity):
        return v.cel_double()
    raise CelError(f"cel.AsFloat64 unsupported type: {type(v).__name__}")


def _overload(obj: Any, resource: Any, container: Any) -> tuple[str | None, Obj, str | None]:
    """kwok's Usage/CumulativeUsage overloads: (node, res), (pod, res), (pod, res, container).
    Returns (node name or None, pod, container name or None); TypeError for any other call."""
    if not isinstance(obj, Mapping) or not isinstance(resource, str):
        raise TypeError
    if obj.get("kind") == "Node":
        if container is not None:
            raise TypeError
        return _name(obj), obj, None
    if container is not None and not isinstance(container, str):
        raise TypeError
    return None, obj, container


def _name(o: Obj) -> str:
    return str((o.get("metadata") or {}).get("name", ""))


def _ns(o: Obj) -> str:
    return str((o.get("metadata") or {}).get("namespace", ""))


class NodeMetrics:
    def __init__(self, node: Callable[[str], Obj | None], pods: Callable[[str], Iterable[Obj]], *,
                 clock: Callable[[], float] = time.time, rand: Callable[[], float] = random.random,
                 on_error: Callable[[str], None] | None = None) -> None:
        self.node, self.pods, self.clock, self.on_error = node, pods, clock, on_error
        self.functions: dict[str, Callable[..., Any]] = {
            "Now": lambda: Timestamp(self.clock()), "now": lambda: Timestamp(self.clock()),
            "Rand": rand,
            "SinceSecond": lambda o: self.clock() - _created(o),
            "UnixSecond": self._unix_second,
            "Quantity": self._quantity,
            "Usage": self._usage_fn,
            "CumulativeUsage": self._cumulative_fn,
            "StartedContainersTotal": self._started, "startedContainersTotal": self._started,
        }
        self.metrics: dict[str, Metric] = {}
        self.usages: dict[str, ResourceUsage] = {}       # "ns/name" of ResourceUsage objects
        self.cluster_usages: dict[str, ResourceUsage] = {}
        self._cumulative: dict[str, tuple[float, float]] = {}   # key -> (time, value)

    # -- objects -------------------------------------------------------------------------
    def load(self, docs: Iterable[Any]) -> list[NodeMetricsError]:
        """Add (or replace, by name) the Metric/(Cluster)ResourceUsage objects among ``docs``."""
        metrics, usages, bad = compile_docs(docs, self.functions)
        for m in metrics:
            self.metrics[m.name] = m
        for u in usages:
            if u.namespace is None:
                self.cluster_usages[u.name] = u
            else:
                self.usages[f"{u.namespace}/{u.name}"] = u
        return bad

    def remove(self, kind: str, name: str, namespace: str | None = None) -> None:
        if kind == "Metric":
            self.metrics.pop(name, None)
        elif kind == "ClusterResourceUsage":
            self.cluster_usages.pop(name, None)
        else:
            self.usages.pop(f"{namespace or 'default'}/{name}", None)

    def forget_node(self, name: str) -> None:
        """Drop the cumulative counters of a node that is gone."""
        self._forget(f"node/{name}/")

    def forget_pod(self, namespace: str, name: str) -> None:
        """Drop the cumulative counters of a pod that is gone."""
        self._forget(f"pod/{namespace}/{name}/")

    def _forget(self, prefix: str) -> None:
        for k in [k for k in self._cumulative if k.startswith(prefix)]:
            del self._cumulative[k]

    # -- functions -----------------------------------------------------------------------
    @staticmethod
    def _unix_second(t: Any) -> float:
        if not isinstance(t, Timestamp):
            raise TypeError
        return t.seconds

    @staticmethod
    def _quantity(s: Any) -> Quantity:
        if not isinstance(s, str):
            raise TypeError
        try:
            return Quantity.parse(s)
        except QuantityError as e:
            raise CelError(str(e)) from None

    def _usage_fn(self, obj: Any, resource: Any, container: Any = None) -> float:
        node, pod, ctr = _overload(obj, resource, container)
        if node is not None:
            return self.node_usage(resource, node)
        return self.pod_usage(resource, pod) if ctr is None else self.container_usage(resource, pod, ctr)

    def _cumulative_fn(self, obj: Any, resource: Any, container: Any = None) -> float:
        node, pod, ctr = _overload(obj, resource, container)
        if node is not None:
            return self.node_cumulative(resource, node)
        return self.pod_cumulative(resource, pod) if ctr is None else self.container_cumulative(resource, pod, ctr)

    def _started(self, node: Any) -> float:
        name = _name(node) if isinstance(node, Mapping) else node
        if not isinstance(name, str):
            raise TypeError
        return float(sum(len(self._container_names(p)) for p in self.pods(name)
                         if (p.get("status") or {}).get("phase") in ("Running", "Succeeded", "Failed")))

    # -- usage ---------------------------------------------------------------------------
    @staticmethod
    def _container_names(pod: Obj) -> list[str]:
        return [str(c.get("name", "")) for c in ((pod.get("spec") or {}).get("containers") or [])
                if isinstance(c, Mapping)]

    def _usage_for(self, pod: Obj, container: str, resource: str) -> UsageValue | None:
        name, ns = _name(pod), _ns(pod)
        own = self.usages.get(f"{ns}/{name}")   # a pod's own ResourceUsage hides every cluster one
        candidates = [own] if own is not None else [u for u in self.cluster_usages.values() if u.matches(name, ns)]
        for u in candidates:
            entry = u.for_container(container)
            if entry is not None:
                return entry.usage.get(resource)
        return None

    def container_usage(self, resource: str, pod: Obj, container: str) -> float:
        v = self._usage_for(pod, container, resource)
        if v is None:
            return 0.0
        if v.value is not None:
            return v.value
        assert v.expression is not None
        node = self.node(str((pod.get("spec") or {}).get("nodeName", "")))
        if node is None:
            return 0.0
        c = next((c for c in (pod.get("spec") or {}).get("containers") or [] if c.get("name") == container), None)
        try:
            return as_float(v.expression.eval_vars({"node": node, "pod": pod, "container": c}))
        except CelError as e:
            self._error(f"pod \"{_ns(pod)}/{_name(pod)}\" container {container!r}: usage {resource}: {e}")
            return 0.0

    def pod_usage(self, resource: str, pod: Obj) -> float:
        return sum(self.container_usage(resource, pod, c) for c in self._container_names(pod))

    def node_usage(self, resource: str, node: str) -> float:
        return sum(self.pod_usage(resource, p) for p in self.pods(node))

    def container_cumulative(self, resource: str, pod: Obj, container: str) -> float:
        key = f"pod/{_ns(pod)}/{_name(pod)}/{container}/{resource}"
        return self._integrate(key, self.container_usage(resource, pod, container))

    def pod_cumulative(self, resource: str, pod: Obj) -> float:
        return sum(self.container_cumulative(resource, pod, c) for c in self._container_names(pod))

    def node_cumulative(self, resource: str, node: str) -> float:
        return self._integrate(f"node/{node}/{resource}", self.node_usage(resource, node))

    def _integrate(self, key: str, rate: float) -> float:
        now = self.clock()
        t, v = self._cumulative.get(key, (now, 0.0))
        v += max(0.0, now - t) * rate
        self._cumulative[key] = (now, v)
        return v

    def _error(self, msg: str) -> None:
        if self.on_error is not None:
            self.on_error(msg)

    # -- rendering -----------------------------------------------------------------------
    def lookup(self, path: str) -> tuple[Metric, str] | None:
        for m in self.metrics.values():
            node = m.node_for(path)
            if node is not None:
                return m, node
        return None

    def render(self, metric: Metric, node_name: str) -> str:
        """The Prometheus text of ``metric`` for one node; "" when the node is not known here."""
        node = self.node(node_name)
        if node is None:
            return ""
        pods = list(self.pods(node_name))
        families: dict[str, tuple[MetricConfig, list[str]]] = {}
        for mc in metric.metrics:
            fam = families.setdefault(mc.name, (mc, []))
            for data in _rows(mc.dimension, node, pods):
                try:
                    fam[1].extend(self._samples(mc, data))
                except CelError as e:
                    self._error(f"metric \"{metric.name}\": {mc.name}: {e}")
        out: list[str] = []
        for name in sorted(families):
            mc, lines = families[name]
            if not lines:
                continue
            out.append(f"# HELP {name} {_esc_help(mc.help)}")
            out.append(f"# TYPE {name} {mc.kind}")
            out.extend(sorted(lines))
        return "\n".join(out) + ("\n" if out else "")

    def _samples(self, mc: MetricConfig, data: dict[str, Any]) -> list[str]:
        labels = []
        for lb in mc.labels:
            v = lb.value.eval_vars(data)
            if not isinstance(v, str):
                raise CelError(f"label {lb.name}: cel.AsString unsupported type: {type(v).__name__}")
            labels.append((lb.name, v))
        if mc.kind != "histogram":
            assert mc.value is not None
            return [f"{mc.name}{_labels(labels)} {_num(as_float(mc.value.eval_vars(data)))}"]
        counts = [(b.le, b.hidden, as_float(b.value.eval_vars(data))) for b in mc.buckets]
        counts.sort(key=lambda x: x[0])
        lines, acc, total_sum = [], 0, 0.0
        for le, hidden, c in counts:
            n = int(c) if math.isfinite(c) and c > 0 else 0   # Go: uint64(value)
            acc += n
            total_sum += le * n
            if not hidden:
                lines.append(f"{mc.name}_bucket{_labels(labels, _num(le))} {acc}")
        lines.append(f"{mc.name}_bucket{_labels(labels, '+Inf')} {acc}")
        lines.append(f"{mc.name}_sum{_labels(labels)} {_num(total_sum)}")
        lines.append(f"{mc.name}_count{_labels(labels)} {acc}")
        return lines


def _rows(dimension: str, node: Obj, pods: list[Obj]) -> Iterable[dict[str, Any]]:
    if dimension == "node":
        yield {"node": node, "pod": None, "container": None}
        return
    for pod in pods:
        if dimension == "pod":
            yield {"node": node, "pod": pod, "container": None}
            continue
        for c in (pod.get("spec") or {}).get("containers") or []:
            yield {"node": node, "pod": pod, "container": c}


def _esc_help(s: str) -> str:
    return s.replace("\\", "\\\\").replace("\n", "\\n")


def _esc_label(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: list[tuple[str, str]], le: str | None = None) -> str:
    """Labels sorted by name as client_golang writes const labels, ``le`` last."""
    pairs = sorted(labels) + ([("le", le)] if le is not None else [])
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_esc_label(v)}"' for k, v in pairs) + "}"


def _num(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


__all__ = ["NodeMetrics", "NodeMetricsError", "Timestamp", "as_float"]
