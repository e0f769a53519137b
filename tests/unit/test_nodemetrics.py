"""Node resource metrics (kwok's Metric / ResourceUsage / ClusterResourceUsage), no cluster."""

from __future__ import annotations

from decimal import Decimal
from importlib import resources
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from shardlet.nodemetrics.collector import NodeMetrics
from shardlet.nodemetrics.model import NodeMetricsError, compile_docs
from shardlet.nodemetrics.quantity import Quantity, QuantityError, parse_quantity
from shardlet.stages.selector import CelError, compile_cel

PATH = "/metrics/nodes/n1/metrics/resource"


def builtin_docs() -> list[Any]:
    docs: list[Any] = []
    for f in ("metrics-resource.yaml", "usage-from-annotation.yaml"):
        docs.extend(yaml.safe_load_all(resources.files("shardlet.nodemetrics").joinpath("profiles", f).read_text()))
    return docs


def pod(name: str, ns: str = "default", containers: tuple[str, ...] = ("a",), ann: dict[str, str] | None = None,
        phase: str = "Running") -> dict[str, Any]:
    return {"kind": "Pod", "metadata": {"name": name, "namespace": ns, "creationTimestamp": "1970-01-01T00:15:00Z",
                                        "annotations": ann or {}, "labels": {}},
            "spec": {"nodeName": "n1", "containers": [{"name": c} for c in containers]}, "status": {"phase": phase}}


NODE = {"kind": "Node", "metadata": {"name": "n1", "creationTimestamp": "1970-01-01T00:10:00Z",
                                     "annotations": {}, "labels": {}}}


class Rig:
    def __init__(self, pods: list[dict[str, Any]], docs: list[Any] | None = None) -> None:
        self.t = 1000.0
        self.pods = pods
        self.errors: list[str] = []
        self.nm = NodeMetrics(lambda n: NODE if n == "n1" else None, lambda n: self.pods if n == "n1" else [],
                              clock=lambda: self.t, on_error=self.errors.append)
        assert self.nm.load(builtin_docs() if docs is None else docs) == []

    def scrape(self, path: str = PATH) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        found = self.nm.lookup(path)
        assert found is not None
        text = self.nm.render(*found)
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out


def test_quantities_parse_like_kubernetes() -> None:
    assert parse_quantity("250m") == Decimal("0.25")
    assert parse_quantity("1Mi") == 2**20
    assert parse_quantity("1.5Gi") == Decimal(3 * 2**29)
    assert parse_quantity("2k") == 2000
    assert parse_quantity("1e3") == 1000
    assert parse_quantity("-100n") == Decimal("-1E-7")
    assert parse_quantity(".5") == Decimal("0.5")
    for bad in ("", "m", "1.2.3", "1 Mi", "1mi", "1Kb", "abc", "0x10"):
        with pytest.raises(QuantityError):
            parse_quantity(bad)


def test_quantity_arithmetic_follows_kwok() -> None:
    q = Quantity.parse("250m")
    assert (q.cel_arith("+", Quantity.parse("750m"))).cel_double() == 1.0
    assert q.cel_arith("*", 3).milli() == 750
    assert Quantity.parse("1").cel_arith("/", 3).milli() == 333        # milli-units, truncated
    assert Quantity.parse("1").cel_arith("*", 0.5).cel_double() == 0.5
    assert q.cel_arith("neg", None).cel_double() == -0.25
    assert Quantity.parse("1.0001m").milli() == 2                       # MilliValue rounds up
    with pytest.raises(CelError):
        q.cel_arith("+", 1)
    with pytest.raises(CelError):
        q.cel_arith("/", 0)


@given(st.text(max_size=20))
def test_quantity_parser_raises_only_its_own_error(s: str) -> None:
    try:
        parse_quantity(s)
    except QuantityError:
        pass


def test_cel_extension_functions_and_methods() -> None:
    fns = {"Quantity": Quantity.parse, "Twice": lambda o, n: 2 * n}
    p = compile_cel('pod.Twice(3) + 2000', variables=("pod",), functions=fns)
    assert p.eval_vars({"pod": {}}) == 2006
    with pytest.raises(CelError):   # as in kwok: a Quantity has no double() or string()
        compile_cel('double(Quantity("2k"))', variables=(), functions=fns).eval_vars({})
    # reserved words are fine as field names (kwok writes pod.metadata.namespace)
    assert compile_cel("pod.metadata.namespace", variables=("pod",)).eval_vars(
        {"pod": {"metadata": {"namespace": "x"}}}) == "x"
    with pytest.raises(CelError, match="reserved identifier"):
        compile_cel("namespace + 1", variables=("pod",))
    with pytest.raises(CelError, match="no matching overload for 'Twice'"):
        compile_cel("Twice(1, 2, 3)", variables=(), functions=fns).eval_vars({})
    assert compile_cel('Quantity("1") < Quantity("2Mi")', variables=(), functions=fns).eval_vars({}) is True


def test_kwok_metrics_resource_with_usage_from_annotation() -> None:
    r = Rig([pod("p1", containers=("a", "b"), ann={"kwok.x-k8s.io/usage-cpu": "250m",
                                                   "kwok.x-k8s.io/usage-memory": "64Mi"}),
             pod("p2", ns="x", containers=("c",))])
    first = r.scrape()
    cpu = ("container_cpu_usage_seconds_total", (("container", "a"), ("namespace", "default"), ("pod", "p1")))
    assert first[cpu] == 0                                # cumulative: nothing yet at the first scrape
    assert first[("node_memory_working_set_bytes", ())] == 2 * 64 * 2**20 + 2**20
    assert first[("pod_memory_working_set_bytes", (("namespace", "x"), ("pod", "p2")))] == 2**20   # default 1Mi
    assert first[("container_start_time_seconds", (("container", "c"), ("namespace", "x"), ("pod", "p2")))] == 100
    assert first[("scrape_error", ())] == 0
    r.t += 10
    later = r.scrape()
    assert later[cpu] == pytest.approx(2.5)               # 250m for 10 s
    assert later[("pod_cpu_usage_seconds_total", (("namespace", "default"), ("pod", "p1")))] == pytest.approx(5.0)
    assert later[("node_cpu_usage_seconds_total", ())] == pytest.approx(5.01)   # + p2's default 1m
    assert not r.errors


def test_cumulative_counters_are_per_resource_and_forgotten_with_their_object() -> None:
    r = Rig([pod("p1", ns="n1", ann={"kwok.x-k8s.io/usage-cpu": "1"})])
    cpu = ("pod_cpu_usage_seconds_total", (("namespace", "n1"), ("pod", "p1")))
    r.scrape()
    r.t += 4
    assert r.scrape()[cpu] == pytest.approx(4.0)
    r.nm.forget_node("n1")          # a node named like the pod's namespace: the pod keeps its counter
    r.t += 1
    assert r.scrape()[cpu] == pytest.approx(5.0)
    r.nm.forget_pod("n1", "p1")     # the pod is gone; a new pod of that name starts from 0
    assert r.scrape()[cpu] == 0
    kinds = {k.split("/")[0] for k in r.nm._cumulative}
    assert kinds == {"pod", "node"}
    assert {k for k in r.nm._cumulative if k.startswith("node/")} == {"node/n1/cpu"}


def test_resource_usage_beats_cluster_usage_and_names_containers() -> None:
    docs = [*builtin_docs(), {
        "apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "ResourceUsage",
        "metadata": {"name": "p1", "namespace": "default"},
        "spec": {"usages": [{"containers": ["b"], "usage": {"memory": {"value": "1Gi"}}},
                            {"usage": {"memory": {"expression": 'Quantity("2Mi") * 2'}}}]}}, {
        "apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "ClusterResourceUsage",
        "metadata": {"name": "a-only-ns-y"},
        "spec": {"selector": {"matchNamespaces": ["y"]}, "usages": [{"usage": {"memory": {"value": "3Mi"}}}]}}]
    r = Rig([pod("p1", containers=("a", "b")), pod("p3", ns="y")], docs)
    got = r.scrape()
    mem = "container_memory_working_set_bytes"
    assert got[(mem, (("container", "b"), ("namespace", "default"), ("pod", "p1")))] == 2**30
    assert got[(mem, (("container", "a"), ("namespace", "default"), ("pod", "p1")))] == 4 * 2**20
    # ClusterResourceUsages are tried in order: "a-only-ns-y" was loaded after usage-from-annotation
    assert got[(mem, (("container", "a"), ("namespace", "y"), ("pod", "p3")))] == 2**20
    r.nm.remove("ClusterResourceUsage", "usage-from-annotation")
    assert r.scrape()[(mem, (("container", "a"), ("namespace", "y"), ("pod", "p3")))] == 3 * 2**20


def test_histogram_hidden_buckets_and_path_without_node() -> None:
    doc = {"kind": "Metric", "metadata": {"name": "fleet"}, "spec": {"path": "/metrics/fleet", "metrics": [
        {"name": "pods_started", "kind": "histogram", "dimension": "node", "labels": [
            {"name": "node", "value": "node.metadata.name"}],
         "buckets": [{"le": 1, "value": "2"}, {"le": 5, "value": "3", "hidden": True}, {"le": 10, "value": "1"}]},
        {"name": "started", "kind": "counter", "value": "StartedContainersTotal(node)"}]}}
    r = Rig([pod("p1", containers=("a", "b")), pod("p2", phase="Pending")], [doc])
    assert r.nm.lookup("/metrics/fleet") is not None and r.nm.lookup("/metrics/fleet")[1] == "fleet"
    # a Metric without {nodeName} is asked for with its own name as node (kwok); none such here
    assert r.nm.render(*r.nm.lookup("/metrics/fleet")) == ""
    fleet = {**NODE, "metadata": {**NODE["metadata"], "name": "fleet"}}
    r.nm.node = lambda n: fleet if n == "fleet" else None
    r.nm.pods = lambda n: r.pods
    got = r.scrape("/metrics/fleet")
    assert got[("pods_started_bucket", (("le", "1"), ("node", "fleet")))] == 2
    assert ("pods_started_bucket", (("le", "5"), ("node", "fleet"))) not in got
    assert got[("pods_started_bucket", (("le", "10"), ("node", "fleet")))] == 6
    assert got[("pods_started_count", (("node", "fleet"),))] == 6
    assert got[("pods_started_sum", (("node", "fleet"),))] == 2 * 1 + 3 * 5 + 10
    assert got[("started_total", ())] == 2                # Running pod's 2 containers; the Pending one not


BASE = {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Metric", "metadata": {"name": "m"},
        "spec": {"path": "/metrics/nodes/{nodeName}/x", "metrics": [
            {"name": "ok", "kind": "gauge", "value": "1"}]}}


def _with(path: str, value: Any) -> dict[str, Any]:
    doc = yaml.safe_load(yaml.safe_dump(BASE))
    cur = doc
    keys = path.split(".")
    for k in keys[:-1]:
        cur = cur[int(k)] if isinstance(cur, list) else cur[k]
    last = keys[-1]
    if isinstance(cur, list):
        cur[int(last)] = value
    else:
        cur[last] = value
    return doc


@pytest.mark.parametrize("path,value,field", [
    ("spec.path", "/stats/x", "spec.path"),
    ("spec.path", "/metrics/{node}/x", "spec.path"),
    ("spec.metrics.0.kind", "summary", "spec.metrics[0].kind"),
    ("spec.metrics.0.dimension", "cluster", "spec.metrics[0].dimension"),
    ("spec.metrics.0.name", "1bad", "spec.metrics[0].name"),
    ("spec.metrics.0.value", "pod.metadata.", "spec.metrics[0].value"),
    ("spec.metrics.0.value", "Usage(", "spec.metrics[0].value"),
    ("spec.metrics.0.value", "nosuch", "spec.metrics[0].value"),
    ("spec.metrics.0.labels", [{"name": "le", "value": "'x'"}], "spec.metrics[0].labels[0].name"),
    ("spec.metrics.0.labels", [{"name": "pod", "value": "'x"}], "spec.metrics[0].labels[0].value"),
    ("spec.metrics", "not-a-list", "spec.metrics"),
    ("spec.metrics.0", {"name": "h", "kind": "histogram"}, "spec.metrics[0].buckets"),
    ("spec.metrics.0", {"name": "h", "kind": "histogram", "buckets": [{"le": "x", "value": "1"}]},
     "spec.metrics[0].buckets[0].le"),
])
def test_bad_metric_named_by_object_and_field(path: str, value: Any, field: str) -> None:
    metrics, _, bad = compile_docs([_with(path, value), {**BASE, "metadata": {"name": "good"}}], {})
    assert [m.name for m in metrics] == ["good"]          # the broken one loses nothing else
    assert len(bad) == 1
    msg = str(bad[0])
    assert msg.startswith(f'metric "m": {field}:'), msg
    assert "\n" not in msg


@pytest.mark.parametrize("usage,field", [
    ({"cpu": {"value": "lots"}}, "spec.usages[0].usage.cpu.value"),
    ({"cpu": {"expression": "1 +"}}, "spec.usages[0].usage.cpu.expression"),
    ({"cpu": {}}, "spec.usages[0].usage.cpu"),
    ({"cpu": "1"}, "spec.usages[0].usage.cpu"),
])
def test_bad_resource_usage_named_by_object_and_field(usage: dict[str, Any], field: str) -> None:
    doc = {"kind": "ResourceUsage", "metadata": {"name": "p", "namespace": "ns"}, "spec": {"usages": [{"usage": usage}]}}
    _, usages, bad = compile_docs([doc], {})
    assert usages == [] and len(bad) == 1
    assert str(bad[0]).startswith(f'resourceusage "ns/p": {field}:'), str(bad[0])


def test_evaluation_errors_are_reported_not_raised() -> None:
    doc = {"kind": "Metric", "metadata": {"name": "m"}, "spec": {"path": "/metrics/nodes/{nodeName}/x", "metrics": [
        {"name": "bad", "kind": "gauge", "dimension": "pod", "value": "pod.metadata.nosuch"},
        {"name": "good", "kind": "gauge", "dimension": "pod", "value": "pod.SinceSecond()"}]}}
    r = Rig([pod("p1")], [doc])
    got = r.scrape("/metrics/nodes/n1/x")
    assert list(got) == [("good", ())] and got[("good", ())] == 100
    assert r.errors and "no such key: nosuch" in r.errors[0] and r.errors[0].startswith('metric "m": bad:')


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(
                        ["kind", "metadata", "name", "spec", "path", "metrics", "value", "usages", "usage",
                         "labels", "buckets", "le", "expression", "containers", "selector"]), c, max_size=4),
                    max_leaves=20),
       st.sampled_from(["Metric", "ResourceUsage", "ClusterResourceUsage"]))
def test_any_document_compiles_or_is_rejected_cleanly(spec: Any, kind: str) -> None:
    try:
        compile_docs([{"kind": kind, "metadata": {"name": "x"}, "spec": spec}], {})
    except NodeMetricsError:
        pytest.fail("compile_docs reports bad documents, it does not raise")
