"""Differential test: kwok v0.8.0's own CEL environment for node metrics
(sigs.k8s.io/kwok/pkg/kwok/metrics, built from the module by tests/unit/nodemetrics_diff)
and shardlet's evaluate the same expressions over the same objects and must agree.

Go gets the full typed objects; Python gets the slim copies the shard keeps
(shardlet.resourcemetrics), so this also proves the copies hold what the expressions read.
Usage callbacks are the same deterministic functions on both sides.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from shardlet.nodemetrics.collector import NodeMetrics, as_float
from shardlet.nodemetrics.model import VARIABLES
from shardlet.resourcemetrics import slim_node, slim_pod
from shardlet.stages.selector import CelError, compile_cel

GO_SRC = Path(__file__).with_name("nodemetrics_diff")


def usage(res: str, ns: str, pod: str, ctr: str) -> float:
    return float(len(res) * 1000 + len(ns) * 100 + len(pod) * 10 + len(ctr))


class Mirror(NodeMetrics):
    """NodeMetrics whose usage numbers are the Go program's deterministic callbacks."""

    def container_usage(self, resource: str, pod: Any, container: str) -> float:
        return usage(resource, pod["metadata"]["namespace"], pod["metadata"]["name"], container)

    def pod_usage(self, resource: str, pod: Any) -> float:
        return usage(resource, pod["metadata"]["namespace"], pod["metadata"]["name"], "") + 0.5

    def node_usage(self, resource: str, node: str) -> float:
        return usage(resource, "", node, "") + 0.25

    def container_cumulative(self, resource: str, pod: Any, container: str) -> float:
        return 2 * self.container_usage(resource, pod, container)

    def node_cumulative(self, resource: str, node: str) -> float:
        return 3 * self.node_usage(resource, node)

    def _started(self, node: Any) -> float:
        name = node["metadata"]["name"] if isinstance(node, dict) else node
        if not isinstance(name, str):
            raise TypeError
        return float(len(name))


NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {
    "name": "kwok-node-7", "uid": "u-n", "creationTimestamp": "2026-11-01T10:00:00Z", "labels": {"type": "kwok"}},
    "spec": {"podCIDR": "10.0.7.0/24"},
    "status": {"capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
               "allocatable": {"cpu": "31500m", "memory": "250Gi", "pods": "110"}}}
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {
    "name": "web-5d8f", "namespace": "shop", "uid": "u-p", "creationTimestamp": "2026-11-02T10:00:00Z",
    "labels": {"app": "web"}, "annotations": {"kwok.x-k8s.io/usage-cpu": "250m", "note": "x"}},
    "spec": {"nodeName": "kwok-node-7", "containers": [
        {"name": "app", "image": "nginx", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                                         "limits": {"memory": "128Mi"}}},
        {"name": "sidecar", "image": "envoy"}]},
    "status": {"phase": "Running", "podIP": "10.0.7.3"}}
BARE = {"apiVersion": "v1", "kind": "Pod", "metadata": {
    "name": "bare", "namespace": "default", "creationTimestamp": "2026-11-03T10:00:00Z"},
    "spec": {"nodeName": "kwok-node-7", "containers": [{"name": "c", "image": "busybox"}]},
    "status": {"phase": "Pending"}}

FLOAT_EXPRS = [
    # kwok's own metrics-resource.yaml and usage-from-annotation.yaml
    '0',
    'pod.CumulativeUsage("cpu", container.name)', 'pod.Usage("memory", container.name)',
    'pod.CumulativeUsage("cpu")', 'pod.Usage("memory")',
    'node.CumulativeUsage("cpu")', 'node.Usage("memory")',
    '"kwok.x-k8s.io/usage-cpu" in pod.metadata.annotations ? Quantity(pod.metadata.annotations["kwok.x-k8s.io/usage-cpu"]) : Quantity("1m")',
    '"kwok.x-k8s.io/usage-memory" in pod.metadata.annotations ? Quantity(pod.metadata.annotations["kwok.x-k8s.io/usage-memory"]) : Quantity("1Mi")',
    # quantities
    'Quantity("1Gi")', 'Quantity("250m")', 'Quantity("1.5")', 'Quantity("2k")', 'Quantity("1e3")',
    'Quantity("100Mi") + Quantity("1Gi")', 'Quantity("1") - Quantity("250m")', 'Quantity("1") * 3',
    'Quantity("1") / 3', 'Quantity("1.5") * 0.5', 'Quantity("10") / 4.0', '-Quantity("1")',
    'Quantity("1Gi") / 2', 'Quantity("7") / -2', 'Quantity("1") + 1', 'Quantity("1") * "2"',
    'Quantity("lots")', 'Quantity("1") / 0',
    'Quantity("1") < Quantity("2")', 'Quantity("1Ki") == Quantity("1024")', 'Quantity("1") > Quantity("1m")',
    'double(Quantity("250m"))',
    # typed objects: resources and capacity are quantities
    'container.resources.requests["cpu"]', 'container.resources.limits["memory"]',
    'pod.spec.containers[0].resources.requests["memory"] * 2',
    '"cpu" in container.resources.requests ? container.resources.requests["cpu"] : Quantity("0")',
    'node.status.allocatable["cpu"]', 'node.status.capacity["memory"] - node.status.allocatable["memory"]',
    'node.status.capacity["pods"]',
    # plain CEL
    '1 + 2', '7 / 2', '7.0 / 2.0', '-7 / 2', '-7 % 3', '2.5 * 4.0', '1 + 2.0', 'true', 'false',
    'size(pod.spec.containers)', 'pod.spec.containers.size()', 'size(pod.metadata.labels)',
    'size(pod.metadata.name)', 'pod.status.phase == "Running" ? 1 : 0', 'pod.metadata.name.startsWith("web")',
    '"app" in pod.metadata.labels && pod.metadata.labels["app"] == "web"',
    'pod.metadata.annotations["missing"]', 'pod.spec.containers[5].name == "x" ? 1 : 0',
    'int("12") * 2', 'double("1.5") + 0.5', 'int(2.9)', 'int(-2.9)',
    'pod.spec.containers.exists(c, c.name == "sidecar") ? 1 : 0',
    'pod.spec.containers.all(c, c.image != "") ? 1 : 0',
    'size(pod.spec.containers.filter(c, c.name.startsWith("s")))',
    'has(pod.metadata.labels.app) ? 1 : 0', 'has(pod.metadata.labels.nope) ? 1 : 0',
    'pod.metadata.creationTimestamp < node.metadata.creationTimestamp ? 1 : 0',
    'UnixSecond(Now())', 'Now().UnixSecond()', 'UnixSecond(Now()) > 0.0',
    'StartedContainersTotal(node)', 'node.StartedContainersTotal()',
    'container.name == "app" ? pod.Usage("cpu", container.name) : node.Usage("cpu")',
    'pod.Usage("cpu", "nope")', 'node.Usage("cpu", "x")', 'pod.Usage(1)', 'nosuch(1)', 'pod.nosuchfield',
    '1 +', '(1', '"unterminated', 'pod.metadata.',
]
STRING_EXPRS = [
    'container.name', 'pod.metadata.namespace', 'pod.metadata.name', 'node.metadata.name',
    'pod.metadata.namespace + "/" + pod.metadata.name', 'pod.metadata.labels["app"]',
    'string(1)', 'string(2.5)', 'string(true)', 'string(Quantity("250m"))', 'string(Quantity("1Gi") / 2)',
    'pod.status.phase', 'pod.spec.nodeName', 'container.image', '"x" in pod.metadata.annotations ? "y" : "n"',
    'pod.metadata.uid', '1', 'Quantity("1")',
]


def cases() -> list[dict[str, Any]]:
    out = []
    for pod in (POD, BARE):
        for c in pod["spec"]["containers"]:
            for e in FLOAT_EXPRS:
                out.append({"expr": e, "as": "float", "node": NODE, "pod": pod, "container": c})
            for e in STRING_EXPRS:
                out.append({"expr": e, "as": "string", "node": NODE, "pod": pod, "container": c})
    return out


def go_binary() -> Path:
    go = shutil.which("go")
    if go is None:
        pytest.skip("the differential test needs the Go toolchain ('go' is not on PATH)")
    h = hashlib.sha256()
    for f in sorted(GO_SRC.iterdir()):
        h.update(f.name.encode() + f.read_bytes())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shardlet" / "test-bin"
    binary = cache / f"nodemetricsdiff-{h.hexdigest()[:12]}"
    if binary.exists():
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GOFLAGS="-mod=mod", GOTOOLCHAIN="local", CGO_ENABLED="0")
    tmp = binary.with_suffix(".tmp")
    proc = subprocess.run([go, "build", "-o", str(tmp), "."], cwd=GO_SRC, env=env, capture_output=True,
                          text=True, timeout=1800)
    if proc.returncode != 0:
        pytest.fail("go build of kwok's metrics environment failed:\n" + proc.stdout + proc.stderr)
    tmp.rename(binary)
    return binary


@pytest.fixture(scope="module")
def go_results() -> list[dict[str, Any]]:
    proc = subprocess.run([str(go_binary())], input=json.dumps({"cases": cases()}), capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    out: list[dict[str, Any]] = json.loads(proc.stdout)
    assert len(out) == len(cases())
    return out


def py_eval(nm: Mirror, case: dict[str, Any]) -> dict[str, Any]:
    pod = slim_pod(copy.deepcopy(case["pod"]))
    data = {"node": slim_node(copy.deepcopy(case["node"])), "pod": pod,
            "container": next(c for c in pod["spec"]["containers"] if c["name"] == case["container"]["name"])}
    try:
        prog = compile_cel(case["expr"], variables=VARIABLES, functions=nm.functions)
        v = prog.eval_vars(data)
        if case["as"] == "string":
            if not isinstance(v, str):
                return {"out": None, "err": f"cel.AsString unsupported type: {type(v).__name__}"}
            return {"out": v, "err": ""}
        return {"out": as_float(v), "err": ""}
    except CelError as e:
        return {"out": None, "err": str(e) or "error"}


def test_corpus_covers_kwok_expressions_and_both_outcomes(go_results: list[dict[str, Any]]) -> None:
    assert len(go_results) >= 250
    assert sum(1 for r in go_results if r["err"]) >= 40
    assert sum(1 for r in go_results if not r["err"]) >= 200


def test_shardlet_agrees_with_kwok(go_results: list[dict[str, Any]]) -> None:
    nm = Mirror(lambda n: None, lambda n: [], clock=lambda: 1_000_000.0)
    mismatches = []
    for case, want in zip(cases(), go_results, strict=True):
        got = py_eval(nm, case)
        label = f"{case['expr']!r} pod={case['pod']['metadata']['name']} container={case['container']['name']}"
        if bool(want["err"]) != bool(got["err"]):
            mismatches.append(f"{label}: kwok {want['err'] or want['out']!r}, shardlet {got['err'] or got['out']!r}")
        elif not want["err"]:
            w, g = want["out"], got["out"]
            same = (math.isclose(w, g, rel_tol=1e-12, abs_tol=1e-12) if isinstance(w, int | float) and isinstance(g, float)
                    else w == g)
            if not same:
                mismatches.append(f"{label}: kwok {w!r}, shardlet {g!r}")
    assert not mismatches, f"{len(mismatches)} differences:\n" + "\n".join(mismatches[:40])
