"""Issue: Helm chart — install shardlet on a test cluster with least-privilege RBAC.

Against a real control plane of this module's own (audit log on for service accounts):
`helm install` creates every object and `helm uninstall` removes all of them but the CRD; the
chart's ServiceAccount is denied what shardlet never calls; and `shardlet run`, started with the
exact arguments of the installed Deployment and nothing but a token of that ServiceAccount,
serves the whole node/pod lifecycle (Ready nodes, renewed leases, Running pods, deletion) with
not one request refused — in one shard and, after `helm upgrade --set shards=2`, on Ray.

The image cannot be pulled here, so the release has replicas=0 and the Deployment's container is
played by a local subprocess of the same arguments."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from shardlet.controlplane import toolchain
from shardlet.controlplane.cluster import Cluster, Options, free_port
from shardlet.scale import NODE_PARAMS, POD_PARAMS, node_manifest, pod_spec

from .conftest import ROOT, Kubectl, ShardletProcess, node_ready, poll

pytestmark = pytest.mark.e2e

CHART = ROOT / "deploy" / "helm" / "shardlet"
NS = "shardlet-helm"
RELEASE = "sl"
SA = "sl-shardlet"                       # the chart's fullname for release "sl"
POD_NAME = f"sl-shardlet-{os.getpid()}-x7k2p"      # the Deployment pod a kubelet would name
CLUSTER_OBJ = f"{SA}-{NS}"               # ClusterRole/Role/FlowSchema/... names
SA_USER = f"system:serviceaccount:{NS}:{SA}"
POD_NS = "helm-pods"
LEASE_DURATION = 8                       # renewed every 2 s
SHARDED_EXTRA = ["--shards", "2"]

AUDIT_POLICY = f"""\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts:{NS}"]
  - level: None
"""


# -- plumbing ----------------------------------------------------------------------------------
class Helm:
    def __init__(self, kubeconfig: Path, home: Path) -> None:
        self.exe = str(toolchain.binary("helm"))
        self.kubeconfig = kubeconfig
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBECONFIG"))}
        for d in ("cache", "config", "data"):
            (home / d).mkdir(parents=True, exist_ok=True)
            self.env[f"HELM_{d.upper()}_HOME"] = str(home / d)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([self.exe, f"--kubeconfig={self.kubeconfig}", *args], capture_output=True,
                           text=True, env=self.env, timeout=180)
        if check and p.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed: {p.stderr.strip()}")
        return p


class Release:
    """The installed release and what a test needs to play its Deployment locally."""

    def __init__(self, helm: Helm, k: Kubectl, cluster: Cluster, audit_log: Path, work: Path) -> None:
        self.helm, self.k, self.cluster, self.audit_log, self.work = helm, k, cluster, audit_log, work
        self.metrics_port, self.status_port = free_port(), free_port()
        self.values = ["replicas=0", "stages.install=true", "apf.enabled=true", f"leaseDuration={LEASE_DURATION}",
                       f"metrics.port={self.metrics_port}", f"statusPort={self.status_port}"]
        self.install_out = ""

    def install(self) -> None:
        sets = [a for v in self.values for a in ("--set", v)]
        self.install_out = self.helm.run("install", RELEASE, str(CHART), "-n", NS, "--create-namespace", *sets).stdout

    def upgrade(self, *sets: str) -> None:
        self.helm.run("upgrade", RELEASE, str(CHART), "-n", NS, "--reuse-values", *(a for v in sets for a in ("--set", v)))

    def deployment_args(self) -> list[str]:
        dep = self.k.json("get", "deployment", SA, "-n", NS)
        (ctr,) = dep["spec"]["template"]["spec"]["containers"]
        assert dep["spec"]["template"]["spec"]["serviceAccountName"] == SA
        env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in ctr["env"]}
        assert env["POD_NAME"] == "metadata.name" and env["POD_IP"] == "status.podIP"
        # $(POD_NAME) and $(POD_IP) expanded as the kubelet expands them from the Downward API
        return [a.replace("$(POD_NAME)", POD_NAME).replace("$(POD_IP)", "127.0.0.1") for a in ctr["args"]]

    def sa_kubeconfig(self) -> Path:
        """A kubeconfig holding nothing but a fresh TokenRequest token of the chart's ServiceAccount."""
        token = self.k.run("create", "token", SA, "-n", NS, "--duration=1h").stdout.strip()
        assert token.count(".") == 2, "not a JWT"
        path = self.work / "sa.kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": self.cluster.server(),
                                                   "certificate-authority": str(self.cluster.pki.ca_cert)}}],
            "users": [{"name": "sa", "user": {"token": token}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "sa"}}],
            "current-context": "c"}))
        path.chmod(0o600)
        return path

    def audit_offset(self) -> int:
        return self.audit_log.stat().st_size if self.audit_log.exists() else 0

    def audit_events(self, since: int = 0) -> list[dict[str, Any]]:
        """Requests authenticated as the chart's ServiceAccount (not impersonations of it)."""
        with open(self.audit_log, "rb") as f:
            f.seek(since)
            lines = f.read().splitlines()
        out = []
        for line in lines:
            ev = json.loads(line)
            if ev["user"]["username"] == SA_USER and "impersonatedUser" not in ev:
                out.append(ev)
        return out


class ChartShardlet(ShardletProcess):
    """The Deployment's container, as a local process: its exact args plus a kubeconfig."""

    def __init__(self, argv: list[str], log_path: Path, home: Path) -> None:
        self.log_path = log_path
        self.logf = open(log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "shardlet.cli", *argv], stdout=self.logf,
                                     stderr=subprocess.STDOUT,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1", SHARDLET_HOME=str(home)))


def can_i(k: Kubectl, *args: str) -> str:
    p = k.run("auth", "can-i", *args, f"--as={SA_USER}", check=False)
    answer = p.stdout.strip()
    assert answer in ("yes", "no"), f"can-i {args}: {p.stdout!r} {p.stderr!r}"
    return answer


def gone(k: Kubectl, *args: str) -> bool:
    p = k.run("get", *args, check=False)
    return p.returncode != 0 and "NotFound" in p.stderr


def make_nodes(k: Kubectl, prefix: str, n: int, first_index: int) -> list[str]:
    names = [f"{prefix}-{i}" for i in range(n)]
    k.apply("---\n".join(yaml.safe_dump(node_manifest(nm, first_index + i, NODE_PARAMS)) for i, nm in enumerate(names)))
    return names


def nodes_ready(k: Kubectl, names: list[str]) -> bool:
    items = {n["metadata"]["name"]: n for n in k.json("get", "nodes")["items"]}
    return all(nm in items and node_ready(items[nm]) for nm in names)


def leases(k: Kubectl, names: list[str]) -> dict[str, dict[str, Any]]:
    items = k.json("get", "leases", "-n", "kube-node-lease")["items"]
    return {i["metadata"]["name"]: i["spec"] for i in items if i["metadata"]["name"] in names}


def request_summary(events: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(e["verb"], e.get("objectRef", {}).get("resource", ""), e.get("objectRef", {}).get("subresource", ""))
            for e in events}


def refused(events: list[dict[str, Any]]) -> list[str]:
    return [f"{e['verb']} {e['requestURI']} -> {e['responseStatus']['code']}" for e in events
            if e.get("responseStatus", {}).get("code") in (401, 403)]


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def helm_cluster(bin_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Path]]:
    d = tmp_path_factory.mktemp("helm-audit")
    (d / "policy.yaml").write_text(AUDIT_POLICY)
    audit_log = d / "audit.log"
    c = Cluster(f"e2e-helm-{os.getpid()}")
    c.up(Options(node_monitor_grace_period="50s", extra_apiserver_args=[
        f"--audit-policy-file={d / 'policy.yaml'}", f"--audit-log-path={audit_log}",
        "--audit-log-format=json", "--audit-log-mode=blocking"]), timeout=180)
    try:
        yield c, audit_log
    finally:
        c.down()


@pytest.fixture(scope="module")
def hk(helm_cluster: tuple[Cluster, Path]) -> Kubectl:
    return Kubectl(helm_cluster[0].kubeconfig)


@pytest.fixture(scope="module")
def release(helm_cluster: tuple[Cluster, Path], hk: Kubectl,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    cluster, audit_log = helm_cluster
    work = tmp_path_factory.mktemp("helm")
    r = Release(Helm(cluster.kubeconfig, work / "helm"), hk, cluster, audit_log, work)
    r.install()
    try:
        yield r
    finally:
        r.helm.run("uninstall", RELEASE, "-n", NS, "--ignore-not-found", check=False)


# -- install -----------------------------------------------------------------------------------
def test_install_creates_every_object(release: Release, hk: Kubectl) -> None:
    assert "STATUS: deployed" in release.install_out
    assert "shardlet scale node --replicas 10" in release.install_out, "NOTES.txt: how to create fake nodes"
    for plural in ("stages", "metrics", "resourceusages", "clusterresourceusages"):
        crd = hk.json("get", "crd", f"{plural}.kwok.x-k8s.io")
        assert any(c["type"] == "Established" and c["status"] == "True" for c in crd["status"]["conditions"])
    hk.run("get", "serviceaccount", SA, "-n", NS)
    hk.run("get", "service", SA, "-n", NS)
    hk.run("get", "clusterrole", CLUSTER_OBJ)
    hk.run("get", "clusterrolebinding", CLUSTER_OBJ)
    hk.run("get", "role", CLUSTER_OBJ, "-n", "kube-node-lease")
    hk.run("get", "rolebinding", CLUSTER_OBJ, "-n", "kube-node-lease")
    hk.run("get", "flowschema", CLUSTER_OBJ)
    hk.run("get", "prioritylevelconfiguration", CLUSTER_OBJ)
    dep = hk.json("get", "deployment", SA, "-n", NS)
    assert dep["spec"]["replicas"] == 0
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == SA
    stages = hk.json("get", "stages", "-l", f"app.kubernetes.io/instance={RELEASE}")["items"]
    assert sorted(s["metadata"]["name"] for s in stages) == [
        "node-heartbeat-with-lease", "node-initialize", "pod-complete", "pod-delete", "pod-ready"]


# -- RBAC: denied and allowed ------------------------------------------------------------------
DENIED = [
    ("get", "secrets", "-n", NS),
    ("get", "secrets", "-n", "kube-system"),
    ("list", "secrets", "-A"),
    ("watch", "secrets", "-A"),
    ("delete", "nodes"),            # rbac.allowNodeDelete defaults to false
    ("patch", "nodes"),             # only sharded mode labels nodes
    ("update", "nodes"),
    ("create", "nodes"),
    ("create", "pods", "-A"),
    ("create", "pods", "-n", "default"),
    ("patch", "pods", "-A"),
    ("update", "pods", "--subresource=status", "-A"),
    ("delete", "namespaces"),
    ("update", "clusterroles"),
    ("create", "clusterrolebindings"),
    ("get", "configmaps", "-A"),
    ("create", "leases", "-n", "default"),
    ("delete", "leases", "-n", "kube-node-lease"),
    ("watch", "leases", "-n", "kube-node-lease"),
    ("list", "leases", "-n", "kube-system"),
    ("create", "stages.kwok.x-k8s.io"),
    ("delete", "stages.kwok.x-k8s.io"),
    ("create", "serviceaccounts", "--subresource=token", "-n", NS),
    ("impersonate", "users"),
    ("delete", "events", "-A"),
]

ALLOWED = [
    ("get", "nodes"), ("list", "nodes"), ("watch", "nodes"),
    ("patch", "nodes", "--subresource=status"),
    ("get", "pods", "-A"), ("list", "pods", "-A"), ("watch", "pods", "-A"), ("delete", "pods", "-A"),
    ("patch", "pods", "--subresource=status", "-A"),
    ("create", "events", "-A"), ("create", "events", "-n", "default"),
    ("get", "leases", "-n", "kube-node-lease"), ("list", "leases", "-n", "kube-node-lease"),
    ("create", "leases", "-n", "kube-node-lease"),
    ("update", "leases", "-n", "kube-node-lease"),
    ("get", "stages.kwok.x-k8s.io"), ("list", "stages.kwok.x-k8s.io"), ("watch", "stages.kwok.x-k8s.io"),
]


def test_service_account_is_denied_what_shardlet_never_calls(release: Release, hk: Kubectl) -> None:
    allowed = [" ".join(a) for a in DENIED if can_i(hk, *a) != "no"]
    assert not allowed, f"{SA_USER} may: {allowed}"


def test_service_account_is_allowed_what_shardlet_calls(release: Release, hk: Kubectl) -> None:
    denied = [" ".join(a) for a in ALLOWED if can_i(hk, *a) != "yes"]
    assert not denied, f"{SA_USER} may not: {denied}"


def test_node_delete_is_an_opt_in(release: Release, hk: Kubectl) -> None:
    release.upgrade("rbac.allowNodeDelete=true")
    try:
        assert can_i(hk, "delete", "nodes") == "yes"
        assert can_i(hk, "patch", "nodes") == "no"
    finally:
        release.upgrade("rbac.allowNodeDelete=false")
    assert can_i(hk, "delete", "nodes") == "no"


def test_apf_flowschema_classifies_shardlet_requests(release: Release, hk: Kubectl) -> None:
    fs = hk.json("get", "flowschema", CLUSTER_OBJ)
    pl = hk.json("get", "prioritylevelconfiguration", CLUSTER_OBJ)
    kc = yaml.safe_load(release.sa_kubeconfig().read_text())
    token = kc["users"][0]["user"]["token"]
    ctx = ssl.create_default_context(cafile=str(release.cluster.pki.ca_cert))
    req = urllib.request.Request(release.cluster.server() + "/api/v1/nodes?limit=1",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
        assert r.status == 200
        assert r.headers["X-Kubernetes-PF-FlowSchema-UID"] == fs["metadata"]["uid"]
        assert r.headers["X-Kubernetes-PF-PriorityLevel-UID"] == pl["metadata"]["uid"]


# -- the lifecycle with nothing but the chart's RBAC -------------------------------------------
def test_node_and_pod_lifecycle_with_only_the_chart_rbac(release: Release, hk: Kubectl, tmp_path: Path) -> None:
    pod = POD_NAME
    argv = [*release.deployment_args(), "--kubeconfig", str(release.sa_kubeconfig()), "--name", f"helm-{os.getpid()}"]
    assert "--shards=1" in argv and f"--lease-duration={LEASE_DURATION}" in argv and f"--id={pod}" in argv
    since = release.audit_offset()
    sp = ChartShardlet(argv, tmp_path / "shardlet.log", tmp_path / "home")
    try:
        sp.wait_for("shard_ready", 60)
        # the readiness probe's target: /metrics on the chart's metrics port, all interfaces
        with urllib.request.urlopen(f"http://127.0.0.1:{release.metrics_port}/metrics", timeout=10) as r:
            assert r.status == 200 and b"shardlet_" in r.read()

        names = make_nodes(hk, "helm-a", 3, 0)
        poll(lambda: nodes_ready(hk, names), 60, what="3 fake nodes Ready")

        first = poll(lambda: (ls := leases(hk, names)) and len(ls) == 3 and ls, 30, what="3 leases")
        assert {s["holderIdentity"] for s in first.values()} == {pod}
        assert {s["leaseDurationSeconds"] for s in first.values()} == {LEASE_DURATION}
        poll(lambda: len(ls := leases(hk, names)) == 3 and all(
            s["renewTime"] != first[n]["renewTime"] and s["holderIdentity"] == pod for n, s in ls.items()),
            30, what="every lease renewed")

        hk.run("create", "namespace", POD_NS)
        pods = [f"p-{i}" for i in range(3)]
        hk.apply("---\n".join(yaml.safe_dump({"apiVersion": "v1", "kind": "Pod",
                                              "metadata": {"name": p, "namespace": POD_NS},
                                              "spec": pod_spec(POD_PARAMS)}) for p in pods))

        def running() -> dict[str, Any] | None:
            items = {p["metadata"]["name"]: p for p in hk.json("get", "pods", "-n", POD_NS)["items"]}
            ok = all(p in items and items[p]["status"].get("phase") == "Running" and items[p]["status"].get("podIP")
                     and items[p]["spec"].get("nodeName") in names for p in pods)
            return items if ok else None
        poll(running, 60, what="3 pods Running with IPs on the fake nodes")

        hk.run("delete", "pod", "p-0", "-n", POD_NS, "--wait=false")
        poll(lambda: gone(hk, "pod", "p-0", "-n", POD_NS), 30, what="the deleted pod gone (pod-delete stage)")
        assert sp.proc.poll() is None
    finally:
        assert sp.stop() == 0, sp.log_path.read_text()[-2000:]

    log = sp.log_path.read_text()
    assert "Forbidden" not in log, log[-3000:]
    events = release.audit_events(since)
    assert not refused(events), refused(events)[:10]
    done = request_summary(events)
    for need in [("list", "nodes", ""), ("watch", "nodes", ""), ("patch", "nodes", "status"),
                 ("list", "pods", ""), ("watch", "pods", ""), ("patch", "pods", "status"), ("delete", "pods", ""),
                 ("create", "leases", ""), ("update", "leases", ""),
                 ("list", "stages", ""), ("watch", "stages", "")]:
        assert need in done, f"{need} not made as {SA_USER}: {sorted(done)}"


def test_sharded_mode_on_ray_with_the_chart_rbac(release: Release, hk: Kubectl, tmp_path: Path) -> None:
    release.upgrade("shards=2")
    try:
        assert can_i(hk, "patch", "nodes") == "yes", "sharded mode labels nodes with their bucket"
        assert hk.run("get", "service", SA, "-n", NS, check=False).returncode != 0, \
            "no fixed-port metrics listener with Ray shards: no Service"
        # in the pod every shard reads the pod's own service-account token; here that is the chart
        # account's token in a kubeconfig, which each shard reads on its host (--shard-kubeconfig)
        sa = str(release.sa_kubeconfig())
        argv = [*release.deployment_args(), "--kubeconfig", sa, "--shard-kubeconfig", sa,
                "--name", f"helm-ray-{os.getpid()}"]
        assert "--shards=2" in argv
        since = release.audit_offset()
        sp = ChartShardlet(argv, tmp_path / "shardlet.log", tmp_path / "home")
        try:
            sp.wait_for("coordinator_ready", 120)
            names = make_nodes(hk, "helm-b", 4, 16)
            poll(lambda: nodes_ready(hk, names), 60, what="4 more fake nodes Ready")

            def bucketed() -> bool:
                items = {n["metadata"]["name"]: n for n in hk.json("get", "nodes")["items"]}
                return all("shardlet.x-k8s.io/bucket" in items[n]["metadata"].get("labels", {}) for n in names)
            poll(bucketed, 30, what="bucket labels on the new nodes")
            poll(lambda: (ls := leases(hk, names)) and len(ls) == 4
                 and all(s["holderIdentity"].startswith(f"{POD_NAME}/shard-") for s in ls.values()),
                 30, what="leases held by the Ray shards")
            assert sp.proc.poll() is None
        finally:
            sp.stop()
        events = release.audit_events(since)
        assert not refused(events), refused(events)[:10]
        assert ("patch", "nodes", "") in request_summary(events)
    finally:
        release.upgrade("shards=1")
    assert can_i(hk, "patch", "nodes") == "no"
    hk.run("get", "service", SA, "-n", NS)


# -- uninstall ---------------------------------------------------------------------------------
def test_uninstall_removes_everything_but_the_crd(release: Release, hk: Kubectl) -> None:
    release.helm.run("uninstall", RELEASE, "-n", NS, "--wait", "--timeout=60s")
    objects = [("serviceaccount", SA, "-n", NS), ("service", SA, "-n", NS), ("deployment", SA, "-n", NS),
               ("clusterrole", CLUSTER_OBJ), ("clusterrolebinding", CLUSTER_OBJ),
               ("role", CLUSTER_OBJ, "-n", "kube-node-lease"), ("rolebinding", CLUSTER_OBJ, "-n", "kube-node-lease"),
               ("flowschema", CLUSTER_OBJ), ("prioritylevelconfiguration", CLUSTER_OBJ),
               ("stage", "node-initialize"), ("stage", "pod-delete")]
    t0 = time.monotonic()
    poll(lambda: all(gone(hk, *o) for o in objects), 60, what="every release object deleted")
    print(f"uninstall: every object gone {time.monotonic() - t0:.1f}s after helm returned")
    # helm never deletes what a chart ships in crds/ (README.md says so)
    hk.run("get", "crd", "stages.kwok.x-k8s.io")
    assert "release: not found" in release.helm.run("status", RELEASE, "-n", NS, check=False).stderr
