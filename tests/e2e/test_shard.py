"""Issue: the shard plays kubelet for 100 fake nodes and their pods against the real control
plane (controller-manager's node lifecycle controller and the scheduler running)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from shardlet.api import Kube
from shardlet.controlplane.cluster import Cluster
from shardlet.scale import NODE_PARAMS, POD_PARAMS, SCALE_LABEL, node_manifest, pod_spec, scale_nodes

from .conftest import Kubectl, ReadyMonitor, ShardletProcess, poll
from .conftest import node_ready as _ready

pytestmark = pytest.mark.e2e

NODES = int(os.environ.get("SHARDLET_E2E_NODES", "100"))
PODS = int(os.environ.get("SHARDLET_E2E_PODS", "1000"))
HOLD = float(os.environ.get("SHARDLET_E2E_HOLD", "180"))
KWOK_STAGES = Path(os.environ.get("GOMODCACHE", os.path.expanduser("~/go/pkg/mod"))) / "sigs.k8s.io/kwok@v0.8.0/kustomize/stage"


@pytest.fixture(scope="module")
def nodes(cluster: Cluster, shardlet: ShardletProcess, kubectl: Kubectl) -> Iterator[ReadyMonitor]:
    async def go() -> str:
        kube = Kube.from_kubeconfig(str(cluster.kubeconfig))
        try:
            return await scale_nodes(kube, NODES, timeout=180)
        finally:
            await kube.close()
    summary = asyncio.run(go())
    assert f"Ready {NODES}" in summary, summary
    mon = ReadyMonitor(kubectl)
    yield mon
    mon.stop()


def test_nodes_ready_with_full_status(nodes: ReadyMonitor, kubectl: Kubectl) -> None:
    items = kubectl.json("get", "nodes", "-l", f"{SCALE_LABEL}=node")["items"]
    assert len(items) == NODES
    for n in items:
        st = n["status"]
        types = {c["type"]: c["status"] for c in st["conditions"]}
        assert types["Ready"] == "True"
        assert {"MemoryPressure", "DiskPressure", "PIDPressure"} <= types.keys()
        assert all(types[t] == "False" for t in ("MemoryPressure", "DiskPressure", "PIDPressure"))
        assert any(a["type"] == "InternalIP" for a in st["addresses"])
        assert st["capacity"]["pods"] == "110" and st["allocatable"]["cpu"] == "32"
        assert st["nodeInfo"]["kubeletVersion"], st["nodeInfo"]
        assert st["daemonEndpoints"]["kubeletEndpoint"]["Port"] > 0
        assert st.get("phase") == "Running"


def test_leases_renewed_every_quarter_duration(nodes: ReadyMonitor, kubectl: Kubectl, shardlet: ShardletProcess) -> None:
    def renew_times() -> dict[str, str]:
        items = kubectl.json("get", "leases", "-n", "kube-node-lease")["items"]
        return {i["metadata"]["name"]: i["spec"]["renewTime"] for i in items if i["metadata"]["name"].startswith("node-")}
    first = renew_times()
    assert len(first) == NODES
    lease = kubectl.json("get", "lease", "-n", "kube-node-lease", "node-000000")
    # kwok's identity: unique per process start, HOSTNAME_UUID
    holder = shardlet.wait_for("leases_primed", 5)["holder"]
    assert lease["spec"]["holderIdentity"] == holder and holder.startswith(socket.gethostname() + "_")
    assert lease["spec"]["leaseDurationSeconds"] == 40
    assert lease["metadata"]["ownerReferences"][0]["kind"] == "Node"
    t0 = time.monotonic()
    poll(lambda: all(v != first[k] for k, v in renew_times().items()), 20, 0.5, "every lease renewed")
    assert time.monotonic() - t0 <= 13.0   # the kubelet's 10.4 s at most, plus request, poll and kubectl time
    # the gap between two renewals of one lease is about a quarter of 40 s
    a = renew_times()["node-000001"]
    b = poll(lambda: (r := renew_times()["node-000001"]) != a and r, 20, 0.25, "another renewal")
    gap = (dt.datetime.fromisoformat(b.replace("Z", "+00:00")) - dt.datetime.fromisoformat(a.replace("Z", "+00:00"))).total_seconds()
    assert 8.5 <= gap <= 11.5, gap
    # renewals leave managedFields out of the PUT; the apiserver keeps the live ones, and the
    # renewer's entry (its user agent) still owns renewTime after several renewals
    mf = kubectl.json("get", "lease", "-n", "kube-node-lease", "node-000001",
                      "--show-managed-fields")["metadata"]["managedFields"]
    mine = [m for m in mf if m["manager"] == "shardlet-lease"]
    assert mine and "f:renewTime" in mine[0]["fieldsV1"]["f:spec"], mf


def _pods(kubectl: Kubectl, ns: str, selector: str = "") -> list[dict[str, Any]]:
    args = ["get", "pods", "-n", ns] + (["-l", selector] if selector else [])
    items: list[dict[str, Any]] = kubectl.json(*args)["items"]
    return items


def test_deployment_pods_running_with_unique_ips(nodes: ReadyMonitor, kubectl: Kubectl) -> None:
    kubectl.run("create", "namespace", "e2e-dep")
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "big", "namespace": "e2e-dep"},
           "spec": {"replicas": PODS, "selector": {"matchLabels": {"app": "big"}},
                    "template": {"metadata": {"labels": {"app": "big"}}, "spec": pod_spec(POD_PARAMS)}}}
    kubectl.apply(yaml.safe_dump(dep))

    def all_running() -> bool:
        pods = _pods(kubectl, "e2e-dep")
        return len(pods) == PODS and all(p["status"].get("phase") == "Running" for p in pods)
    poll(all_running, 300, 2, f"{PODS} pods Running")
    pods = _pods(kubectl, "e2e-dep")
    node_cidr = {n["metadata"]["name"]: ipaddress.ip_network(n["spec"]["podCIDR"])
                 for n in kubectl.json("get", "nodes")["items"] if n["spec"].get("podCIDR")}
    node_ip = {n["metadata"]["name"]: next(a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP")
               for n in kubectl.json("get", "nodes")["items"]}
    ips = [p["status"]["podIP"] for p in pods]
    assert len(set(ips)) == len(ips), "pod IPs are not unique"
    for p in pods:
        st, node = p["status"], p["spec"]["nodeName"]
        assert ipaddress.ip_address(st["podIP"]) in node_cidr[node], (st["podIP"], node)
        assert st["podIPs"][0]["ip"] == st["podIP"]
        assert st["hostIP"] == node_ip[node]
        conds = {c["type"]: c["status"] for c in st["conditions"]}
        assert conds["Ready"] == conds["ContainersReady"] == conds["Initialized"] == "True"
        cs = st["containerStatuses"][0]
        assert cs["ready"] is True and "running" in cs["state"] and cs["name"] == "container-0"
        assert st["startTime"]


def test_scale_to_zero_leaves_nothing_terminating(nodes: ReadyMonitor, kubectl: Kubectl) -> None:
    kubectl.run("scale", "deployment", "big", "-n", "e2e-dep", "--replicas=0")
    poll(lambda: not _pods(kubectl, "e2e-dep"), 180, 2, "all pods gone")


def test_job_pods_succeed(nodes: ReadyMonitor, kubectl: Kubectl) -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "done", "namespace": "default"},
           "spec": {"completions": 3, "parallelism": 3, "backoffLimit": 0,
                    "template": {"spec": {**pod_spec(POD_PARAMS), "restartPolicy": "Never"}}}}
    kubectl.apply(yaml.safe_dump(job))
    poll(lambda: kubectl.json("get", "job", "done")["status"].get("succeeded") == 3, 120, 1, "Job succeeded")
    pods = _pods(kubectl, "default", "job-name=done")
    assert pods and all(p["status"]["phase"] == "Succeeded" for p in pods)
    term = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 0 and term["reason"] == "Completed"


def test_finalizer_holds_pod_until_removed(nodes: ReadyMonitor, kubectl: Kubectl) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "held", "namespace": "default", "finalizers": ["e2e.shardlet/hold"]},
           "spec": pod_spec(POD_PARAMS)}
    kubectl.apply(yaml.safe_dump(pod))
    poll(lambda: kubectl.json("get", "pod", "held")["status"].get("phase") == "Running", 60, 0.5, "held Running")
    kubectl.run("delete", "pod", "held", "--wait=false")
    # it must stay (Terminating) while the finalizer is there, and go once it is removed
    p = poll(lambda: (x := kubectl.json("get", "pod", "held"))["metadata"].get("deletionTimestamp") and x, 30, 0.5,
             "deletionTimestamp")
    assert p["metadata"]["finalizers"] == ["e2e.shardlet/hold"]
    kubectl.run("patch", "pod", "held", "--type=json", "-p", '[{"op":"remove","path":"/metadata/finalizers"}]')
    poll(lambda: kubectl.run("get", "pod", "held", check=False).returncode != 0, 60, 0.5, "held deleted")


def _apply_kwok_files(kubectl: Kubectl, files: list[Path]) -> list[str]:
    names = []
    for f in files:
        kubectl.run("apply", "-f", str(f))
        names.append(yaml.safe_load(f.read_text())["metadata"]["name"])
    return names


@pytest.mark.skipif(not KWOK_STAGES.exists(), reason=f"kwok v0.8.0 module not in {KWOK_STAGES} (the toolchain build fetches it)")
def test_kwok_general_profile_walks_pod_phases(nodes: ReadyMonitor, kubectl: Kubectl, shardlet: ShardletProcess) -> None:
    files = sorted((KWOK_STAGES / "pod/general").glob("*.yaml"))
    files = [f for f in files if f.name != "kustomization.yaml"]
    names = _apply_kwok_files(kubectl, files)
    try:
        def loaded() -> bool:
            last = [e for e in shardlet.events() if e.get("event") == "stages_loaded"]
            return bool(last) and all(n in last[-1].get("stages", []) for n in names)
        poll(loaded, 30, 0.5, "general stages loaded")
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "general", "namespace": "default"},
               "spec": {**pod_spec({**POD_PARAMS, "initContainers": 1})}}
        kubectl.apply(yaml.safe_dump(pod))
        seen: set[str] = set()

        def phase() -> bool:
            p = kubectl.json("get", "pod", "general")
            st = p["status"]
            for cs in st.get("initContainerStatuses", []) + st.get("containerStatuses", []):
                for k, v in cs.get("state", {}).items():
                    seen.add(f"{k}:{v.get('reason', '')}")
            return st.get("phase") == "Running" and all(c["ready"] for c in st.get("containerStatuses", []))
        poll(phase, 90, 0.3, "general pod Running")
        # the general profile passes through waiting/initialising states before Running
        assert any(s.startswith("waiting:") for s in seen) or any(s.startswith("running:") for s in seen), seen
        kubectl.run("delete", "pod", "general", "--wait=false")
        poll(lambda: kubectl.run("get", "pod", "general", check=False).returncode != 0, 90, 0.5, "general deleted")
    finally:
        kubectl.run("delete", "stage", *names, check=False)


@pytest.mark.skipif(not KWOK_STAGES.exists(), reason="kwok v0.8.0 module not present")
def test_kwok_chaos_stage_makes_node_not_ready(nodes: ReadyMonitor, kubectl: Kubectl, cluster: Cluster) -> None:
    node = node_manifest("chaos-000000", 9000, NODE_PARAMS)
    node["metadata"]["labels"].pop(SCALE_LABEL)   # keep it out of the all-Ready monitor
    kubectl.apply(yaml.safe_dump(node))
    poll(lambda: _ready(kubectl.json("get", "node", "chaos-000000")), 60, 0.5, "chaos node Ready")
    names = _apply_kwok_files(kubectl, [KWOK_STAGES / "node/chaos/node-not-ready.yaml"])
    try:
        kubectl.run("label", "node", "chaos-000000", "node-not-ready.stage.kwok.x-k8s.io=true")
        poll(lambda: not _ready(kubectl.json("get", "node", "chaos-000000")), 60, 0.5, "chaos node NotReady")
    finally:
        kubectl.run("delete", "stage", *names, check=False)
        kubectl.run("delete", "node", "chaos-000000", check=False)


BAD_STAGE = """
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: broken-jq
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - key: '.status.phase | select( ('
      operator: In
      values: [Pending]
  next:
    statusTemplate: 'phase: {{ .nope'
"""


def test_bad_stage_rejected_and_others_keep_working(nodes: ReadyMonitor, kubectl: Kubectl, shardlet: ShardletProcess) -> None:
    kubectl.apply(BAD_STAGE)
    try:
        ev = shardlet.wait_for("stage_rejected", 30)
        assert "broken-jq" in ev["error"] and "spec.selector.matchExpressions[0].key" in ev["error"], ev
        assert "\n" not in ev["error"]
        kubectl.apply(yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "after-bad", "namespace": "default"},
                                      "spec": pod_spec(POD_PARAMS)}))
        poll(lambda: kubectl.json("get", "pod", "after-bad")["status"].get("phase") == "Running", 60, 0.5, "pod Running")
    finally:
        kubectl.run("delete", "stage", "broken-jq", check=False)
        kubectl.run("delete", "pod", "after-bad", "--wait=false", check=False)


def test_malformed_object_is_skipped_not_fatal(nodes: ReadyMonitor, kubectl: Kubectl, shardlet: ShardletProcess) -> None:
    # a per-object delay override that is not a duration: that pod is skipped and logged
    odd = {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "odd", "namespace": "default",
        "annotations": {"pod-ready.stage.kwok.x-k8s.io/delay": "soon-ish"}}, "spec": pod_spec(POD_PARAMS)}
    good = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "even", "namespace": "default"},
            "spec": pod_spec(POD_PARAMS)}
    kubectl.apply(yaml.safe_dump_all([odd, good]))
    poll(lambda: kubectl.json("get", "pod", "even")["status"].get("phase") == "Running", 60, 0.5, "good pod Running")
    assert shardlet.proc.poll() is None
    kubectl.run("delete", "pod", "odd", "even", "--wait=false")


def _series(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_metrics_endpoints_serve_nonzero_series(nodes: ReadyMonitor, shardlet: ShardletProcess) -> None:
    import urllib.request

    port = shardlet.wait_for("metrics_serving", 10)["port"]
    status_url = shardlet.wait_for("coordinator_ready", 10)["status"]
    for url in (f"http://127.0.0.1:{port}/metrics", status_url.replace("/status", "/metrics")):
        with urllib.request.urlopen(url, timeout=10) as r:
            series = _series(r.read().decode())

        def val(prefix: str, series: dict[str, float] = series) -> float:
            return sum(v for k, v in series.items() if k.startswith(prefix))
        assert val("shardlet_nodes_managed") >= NODES
        assert val("shardlet_pods_managed") >= 0
        assert val('shardlet_lease_renewals_total{result="ok"') > 0
        assert val("shardlet_lease_renew_lag_seconds_count") > 0
        assert val('shardlet_stage_transitions_total{shard="shardlet-0",stage="node-initialize"}') >= NODES
        assert val('shardlet_stage_transitions_total{shard="shardlet-0",stage="pod-ready"}') > 0
        assert val('shardlet_watch_events_total{resource="nodes",shard="shardlet-0"}') >= NODES
        assert val('shardlet_watch_events_total{resource="pods",shard="shardlet-0"}') > 0
        assert val('shardlet_apiserver_requests_total{code="200",shard="shardlet-0",verb="PATCH"}') > 0
        assert val("shardlet_apiserver_request_duration_seconds_count") > 0
        assert 'shardlet_relists_total{resource="pods",shard="shardlet-0"}' in series


def _scrape(url: str) -> tuple[float, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200
        text = r.read().decode()
    t = time.monotonic()
    return t, {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}


USAGE_RU = {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "ResourceUsage",
            "metadata": {"name": "usage-b", "namespace": "default"},
            "spec": {"usages": [{"usage": {"cpu": {"value": "2"},
                                           "memory": {"expression": 'Quantity("1Gi") / 2'}}}]}}
BAD_METRIC = {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Metric", "metadata": {"name": "broken-metric"},
              "spec": {"path": "/metrics/nodes/{nodeName}/broken", "metrics": [
                  {"name": "x", "kind": "gauge", "dimension": "node", "value": "node.metadata."}]}}


def test_node_resource_metrics_follow_usage_objects(nodes: ReadyMonitor, kubectl: Kubectl,
                                                    shardlet: ShardletProcess) -> None:
    """kwok's metrics-resource + usage-from-annotation are built in; a ResourceUsage object wins
    for its pod; deleting it falls back; a broken Metric is rejected by name and field."""
    base = shardlet.wait_for("coordinator_ready", 10)["status"].replace("/status", "")
    node = sorted(n["metadata"]["name"] for n in kubectl.json("get", "nodes", "-l", f"{SCALE_LABEL}=node")["items"])[0]
    url = f"{base}/metrics/nodes/{node}/metrics/resource"

    def pod(name: str, ann: dict[str, str]) -> dict[str, Any]:
        spec = pod_spec(POD_PARAMS)
        spec["nodeName"] = node
        spec["containers"] = [{"name": "main", "image": "busybox"}, {"name": "side", "image": "busybox"}]
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default",
                                                                "annotations": ann}, "spec": spec}
    kubectl.apply(yaml.safe_dump_all([
        pod("usage-a", {"kwok.x-k8s.io/usage-cpu": "500m", "kwok.x-k8s.io/usage-memory": "100Mi"}),
        pod("usage-b", {}), USAGE_RU]))
    try:
        poll(lambda: all(kubectl.json("get", "pod", p)["status"].get("phase") == "Running"
                         for p in ("usage-a", "usage-b")), 60, 0.5, "usage pods Running")
        mem = "container_memory_working_set_bytes"
        a_main = (mem, (("container", "main"), ("namespace", "default"), ("pod", "usage-a")))
        b_main = (mem, (("container", "main"), ("namespace", "default"), ("pod", "usage-b")))
        def applied() -> dict[Any, float] | None:
            got = _scrape(url)[1]
            return got if got.get(b_main) == 2**29 and a_main in got else None
        got = poll(applied, 60, 0.5, "ResourceUsage applied")
        assert got[a_main] == 100 * 2**20
        assert got[("pod_memory_working_set_bytes", (("namespace", "default"), ("pod", "usage-b")))] == 2**30
        assert got[("node_memory_working_set_bytes", ())] >= 2 * 100 * 2**20 + 2**30
        assert got[("scrape_error", ())] == 0
        # CumulativeUsage integrates usage over time: usage-b's containers use 2 cores each
        cpu = ("pod_cpu_usage_seconds_total", (("namespace", "default"), ("pod", "usage-b")))
        t0, first = _scrape(url)
        def grown() -> tuple[float, dict[Any, float]] | None:
            t, got = _scrape(url)
            return (t, got) if got[cpu] - first[cpu] >= 8 else None
        t1, later = poll(grown, 30, 0.5, "cpu grows")
        rate = (later[cpu] - first[cpu]) / (t1 - t0)
        assert 3.0 <= rate <= 4.4, rate   # 2 containers x 2 cores, within the scrape-timing slack
        # unknown node: 404, not an empty 200
        import json
        import urllib.error
        import urllib.request
        # Prometheus http_sd lists one target per served node, with this endpoint as host
        with urllib.request.urlopen(f"{base}/discovery/prometheus", timeout=10) as r:
            targets = json.loads(r.read())
        paths = [t["labels"]["__metrics_path__"] for t in targets if t["labels"]["metrics_name"] == "metrics-resource"]
        assert len(paths) == len(set(paths)) >= NODES and f"/metrics/nodes/{node}/metrics/resource" in paths
        assert targets[0]["targets"] == [base.split("://", 1)[1]]
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{base}/metrics/nodes/no-such-node/metrics/resource", timeout=10)
        assert e.value.code == 404
        # a broken Metric: rejected by name and field, the others keep serving
        kubectl.apply(yaml.safe_dump(BAD_METRIC))
        ev = shardlet.wait_for("node_metrics_rejected", 30)
        assert ev["error"].startswith('metric "broken-metric": spec.metrics[0].value:'), ev
        assert _scrape(url)[1][a_main] == 100 * 2**20
        # without its ResourceUsage, usage-b falls back to usage-from-annotation's default 1Mi
        kubectl.run("delete", "resourceusage", "usage-b")
        poll(lambda: _scrape(url)[1].get(b_main) == 2**20, 30, 0.5, "fallback to ClusterResourceUsage")
    finally:
        kubectl.run("delete", "pod", "usage-a", "usage-b", "--wait=false", check=False)
        kubectl.run("delete", "resourceusage", "usage-b", check=False)
        kubectl.run("delete", "metric", "broken-metric", check=False)


def test_nodes_stay_ready_under_node_lifecycle_controller(nodes: ReadyMonitor) -> None:
    # the monitor has polled since the nodes first became Ready: hold until HOLD seconds in all
    nodes.hold(max(0.0, HOLD - (time.monotonic() - nodes.started)))
    assert time.monotonic() - nodes.started >= HOLD
    assert not nodes.not_ready
