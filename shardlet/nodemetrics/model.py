"""Metric, ResourceUsage and ClusterResourceUsage documents, validated and compiled once.

Every problem raises :class:`NodeMetricsError` with one line naming the object and the
field, e.g. ``metric "metrics-resource": spec.metrics[2].value: undeclared reference to 'pdo'``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from shardlet.nodemetrics.quantity import QuantityError, parse_quantity
from shardlet.stages.selector import CelError, CelProgram, compile_cel

VARIABLES: Final = ("node", "pod", "container")
KINDS: Final = ("Metric", "ResourceUsage", "ClusterResourceUsage")
_METRIC_NAME: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

Functions = Mapping[str, Callable[..., Any]]


class NodeMetricsError(ValueError):
    """A Metric or (Cluster)ResourceUsage is invalid; one line naming the object and field."""


@dataclass(frozen=True)
class Label:
    name: str
    value: CelProgram


@dataclass(frozen=True)
class Bucket:
    le: float
    value: CelProgram
    hidden: bool


@dataclass(frozen=True)
class MetricConfig:
    name: str
    help: str
    kind: str                 # counter | gauge | histogram
    dimension: str            # node | pod | container
    labels: tuple[Label, ...]
    value: CelProgram | None  # counter and gauge
    buckets: tuple[Bucket, ...]


@dataclass(frozen=True)
class Metric:
    name: str
    path: str
    pattern: re.Pattern[str]  # the path with {nodeName} as a group
    metrics: tuple[MetricConfig, ...]

    def node_for(self, path: str) -> str | None:
        """The node a request path asks for, or None when the path is not this Metric's."""
        m = self.pattern.fullmatch(path)
        if m is None:
            return None
        return m.groupdict().get("nodeName") or self.name   # kwok: no {nodeName} -> the Metric's name


@dataclass(frozen=True)
class UsageValue:
    value: float | None
    expression: CelProgram | None


@dataclass(frozen=True)
class UsageContainer:
    containers: tuple[str, ...]   # empty: every container without its own entry
    usage: Mapping[str, UsageValue]


@dataclass(frozen=True)
class ResourceUsage:
    """A ResourceUsage (namespace set: the pod of that name) or a ClusterResourceUsage."""

    name: str
    namespace: str | None
    match_namespaces: tuple[str, ...]
    match_names: tuple[str, ...]
    usages: tuple[UsageContainer, ...]

    def matches(self, pod_name: str, pod_namespace: str) -> bool:
        if self.namespace is not None:
            return self.name == pod_name and self.namespace == pod_namespace
        return ((not self.match_namespaces or pod_namespace in self.match_namespaces)
                and (not self.match_names or pod_name in self.match_names))

    def for_container(self, container: str) -> UsageContainer | None:
        """kwok's findUsageInUsages: an entry naming the container, else the first without names."""
        default = None
        for u in self.usages:
            if not u.containers:
                default = default or u
            elif container in u.containers:
                return u
        return default


# --------------------------------------------------------------------------- parsing


def _obj(doc: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(doc, Mapping):
        raise NodeMetricsError(f"{where}: must be an object, got {type(doc).__name__}")
    return doc


def _list(v: Any, where: str) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise NodeMetricsError(f"{where}: must be a list, got {type(v).__name__}")
    return v


def _str(v: Any, where: str, *, required: bool = True) -> str:
    if v is None and not required:
        return ""
    if not isinstance(v, str) or (required and not v):
        raise NodeMetricsError(f"{where}: must be a non-empty string")
    return v


def _cel(src: Any, where: str, functions: Functions) -> CelProgram:
    src = _str(src, where)
    try:
        return compile_cel(src, variables=VARIABLES, functions=functions)
    except CelError as e:
        raise NodeMetricsError(f"{where}: {e}") from None


def _path_pattern(path: str, where: str) -> re.Pattern[str]:
    if not path.startswith("/metrics"):
        raise NodeMetricsError(f"{where}: must start with /metrics, got {path!r}")
    out, pos = [], 0
    for m in re.finditer(r"\{([^{}]*)\}", path):
        if m.group(1) != "nodeName":
            raise NodeMetricsError(f"{where}: unknown parameter {{{m.group(1)}}} (only {{nodeName}})")
        out.append(re.escape(path[pos:m.start()]))
        out.append("(?P<nodeName>[^/]+)")
        pos = m.end()
    out.append(re.escape(path[pos:]))
    return re.compile("".join(out))


def compile_metric(doc: Any, functions: Functions) -> Metric:
    doc = _obj(doc, "metric")
    name = (doc.get("metadata") or {}).get("name") if isinstance(doc.get("metadata"), Mapping) else None
    if not isinstance(name, str) or not name:
        raise NodeMetricsError("metric: metadata.name: must be a non-empty string")
    who = f"metric {name!r}".replace("'", '"')
    try:
        spec = _obj(doc.get("spec"), "spec")
        path = _str(spec.get("path"), "spec.path")
        pattern = _path_pattern(path, "spec.path")
        configs = []
        seen: set[str] = set()
        for i, mc in enumerate(_list(spec.get("metrics"), "spec.metrics")):
            configs.append(_metric_config(mc, f"spec.metrics[{i}]", functions, seen))
    except NodeMetricsError as e:
        raise NodeMetricsError(f"{who}: {e}") from None
    return Metric(name=name, path=path, pattern=pattern, metrics=tuple(configs))


def _metric_config(mc: Any, p: str, functions: Functions, seen: set[str]) -> MetricConfig:
    mc = _obj(mc, p)
    name = _str(mc.get("name"), f"{p}.name")
    if not _METRIC_NAME.fullmatch(name):
        raise NodeMetricsError(f"{p}.name: {name!r} is not a valid Prometheus metric name")
    kind = mc.get("kind")
    if kind not in ("counter", "gauge", "histogram"):
        raise NodeMetricsError(f"{p}.kind: must be counter, gauge or histogram, got {kind!r}")
    dim = mc.get("dimension") or "node"
    if dim not in ("node", "pod", "container"):
        raise NodeMetricsError(f"{p}.dimension: must be node, pod or container, got {dim!r}")
    labels = []
    for j, lb in enumerate(_list(mc.get("labels"), f"{p}.labels")):
        lb = _obj(lb, f"{p}.labels[{j}]")
        ln = _str(lb.get("name"), f"{p}.labels[{j}].name")
        if not _LABEL_NAME.fullmatch(ln) or ln == "le":
            raise NodeMetricsError(f"{p}.labels[{j}].name: {ln!r} is not a valid label name")
        labels.append(Label(ln, _cel(lb.get("value"), f"{p}.labels[{j}].value", functions)))
    value = None
    buckets = []
    if kind == "histogram":
        for j, b in enumerate(_list(mc.get("buckets"), f"{p}.buckets")):
            b = _obj(b, f"{p}.buckets[{j}]")
            le = b.get("le")
            if isinstance(le, bool) or not isinstance(le, int | float) or math.isnan(le):
                raise NodeMetricsError(f"{p}.buckets[{j}].le: must be a number")
            buckets.append(Bucket(float(le), _cel(b.get("value"), f"{p}.buckets[{j}].value", functions),
                                  bool(b.get("hidden", False))))
        if not buckets:
            raise NodeMetricsError(f"{p}.buckets: a histogram needs at least one bucket")
    else:
        value = _cel(mc.get("value"), f"{p}.value", functions)
    key = f"{name}/{dim}"
    if key in seen:
        raise NodeMetricsError(f"{p}.name: {name!r} appears twice")
    seen.add(key)
    return MetricConfig(name=name, help=_str(mc.get("help"), f"{p}.help", required=False).strip(),
                        kind=kind, dimension=dim, labels=tuple(labels), value=value, buckets=tuple(buckets))


def compile_usage(doc: Any, functions: Functions) -> ResourceUsage:
    doc = _obj(doc, "resourceusage")
    kind = doc.get("kind") or "ResourceUsage"
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), Mapping) else {}
    name = meta.get("name")
    ns = meta.get("namespace") if kind == "ResourceUsage" else None
    if kind == "ResourceUsage" and not ns:
        ns = "default"
    if not isinstance(name, str) or not name:
        raise NodeMetricsError(f"{kind.lower()}: metadata.name: must be a non-empty string")
    who = f"{kind.lower()} \"{ns + '/' if ns else ''}{name}\""
    try:
        spec = _obj(doc.get("spec") or {}, "spec")
        mns: tuple[str, ...] = ()
        mnames: tuple[str, ...] = ()
        if kind == "ClusterResourceUsage" and spec.get("selector") is not None:
            sel = _obj(spec["selector"], "spec.selector")
            mns = tuple(_str(x, f"spec.selector.matchNamespaces[{i}]")
                        for i, x in enumerate(_list(sel.get("matchNamespaces"), "spec.selector.matchNamespaces")))
            mnames = tuple(_str(x, f"spec.selector.matchNames[{i}]")
                           for i, x in enumerate(_list(sel.get("matchNames"), "spec.selector.matchNames")))
        usages = []
        for i, u in enumerate(_list(spec.get("usages"), "spec.usages")):
            p = f"spec.usages[{i}]"
            u = _obj(u, p)
            containers = tuple(_str(c, f"{p}.containers[{j}]")
                               for j, c in enumerate(_list(u.get("containers"), f"{p}.containers")))
            per: dict[str, UsageValue] = {}
            for res, v in _obj(u.get("usage") or {}, f"{p}.usage").items():
                per[str(res)] = _usage_value(v, f"{p}.usage.{res}", functions)
            usages.append(UsageContainer(containers, per))
    except NodeMetricsError as e:
        raise NodeMetricsError(f"{who}: {e}") from None
    return ResourceUsage(name=name, namespace=ns, match_namespaces=mns, match_names=mnames, usages=tuple(usages))


def _usage_value(v: Any, p: str, functions: Functions) -> UsageValue:
    v = _obj(v, p)
    if v.get("value") is not None:
        raw = v["value"]
        try:
            q: Decimal = parse_quantity(str(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else raw)
        except QuantityError as e:
            raise NodeMetricsError(f"{p}.value: {e}") from None
        return UsageValue(float(q), None)
    if v.get("expression") is not None:
        return UsageValue(None, _cel(v["expression"], f"{p}.expression", functions))
    raise NodeMetricsError(f"{p}: needs 'value' or 'expression'")


def compile_docs(docs: Iterable[Any], functions: Functions) -> tuple[list[Metric], list[ResourceUsage],
                                                                   list[NodeMetricsError]]:
    """Compile the Metric/(Cluster)ResourceUsage documents among ``docs``; others are skipped."""
    metrics: list[Metric] = []
    usages: list[ResourceUsage] = []
    bad: list[NodeMetricsError] = []
    for doc in docs:
        if not isinstance(doc, Mapping) or doc.get("kind") not in KINDS:
            continue
        try:
            if doc["kind"] == "Metric":
                metrics.append(compile_metric(doc, functions))
            else:
                usages.append(compile_usage(doc, functions))
        except NodeMetricsError as e:
            bad.append(e)
    return metrics, usages, bad
