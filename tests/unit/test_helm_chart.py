"""The Helm chart (deploy/helm/shardlet) without a cluster: `helm lint --strict` and `helm template`
for the value combinations that matter, the RBAC rules exactly, the rendered `shardlet run`
arguments parsed by shardlet's own CLI, and the chart's copies of the CRD and the fast stages.

Needs only the pinned helm binary; skipped (with the reason) when it is not built."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "shardlet"
CRD_SOURCE = ROOT / "shardlet" / "crds" / "stages.kwok.x-k8s.io.yaml"
FAST_SOURCE = ROOT / "shardlet" / "stages" / "profiles" / "fast.yaml"
VERSIONS = "k8s-v1.36.3-etcd-v3.6.16-helm-v3.22.0-kwok-v0.8.0"   # build-toolchain.sh's cache key


def _find_helm() -> str | None:
    """The pinned helm, without building anything: SHARDLET_BIN_DIR, the toolchain cache, PATH."""
    candidates = []
    if os.environ.get("SHARDLET_BIN_DIR"):
        candidates.append(Path(os.environ["SHARDLET_BIN_DIR"]) / "helm")
    cache = os.environ.get("SHARDLET_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "shardlet")
    candidates.append(Path(cache) / "toolchain" / VERSIONS / "bin" / "helm")
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    return shutil.which("helm")


HELM = _find_helm()
needs_helm = pytest.mark.skipif(
    HELM is None, reason="no helm binary: build the pinned toolchain with `shardlet toolchain` "
                         "(or set SHARDLET_BIN_DIR, or put helm on PATH)")


@pytest.fixture(scope="module")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("helm-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBECONFIG"))}
    for d in ("cache", "config", "data"):
        env[f"HELM_{d.upper()}_HOME"] = str(home / d)
    yield env


def helm(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    p = subprocess.run([HELM, *args], capture_output=True, text=True, env=env, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)}: {p.stderr.strip()}")
    return p


def sets(values: list[str]) -> list[str]:
    return [a for v in values for a in ("--set", v)]


def render(env: dict[str, str], *values: str, extra: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    out = helm(env, "template", "rel", str(CHART), "-n", "sim", *sets(list(values)), *extra).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def container_args(docs: list[dict[str, Any]]) -> list[str]:
    (ctr,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return [str(a) for a in ctr["args"]]


def rules(docs: list[dict[str, Any]], kind: str = "ClusterRole") -> list[tuple[str, str, tuple[str, ...]]]:
    return [(g, r, tuple(rule["verbs"])) for rule in one(docs, kind)["rules"]
            for g in rule["apiGroups"] for r in rule["resources"]]


COMBOS = [
    [],
    ["ray.address=ray://ray-head:10001"],
    ["shards=4"],
    ["stages.install=true"],
    ["nodeMetrics.enabled=true"],
    ["apf.enabled=true"],
    ["nodes.select=all"],
    ["nodes.select=label", "nodes.labelSelector=type=kwok"],
    ["rbac.allowNodeDelete=true", "replicas=0", "profile=fast\\,general"],
]


# -- lint ----------------------------------------------------------------------------------------
@needs_helm
@pytest.mark.parametrize("values", COMBOS, ids=lambda v: ",".join(v) or "defaults")
def test_lint_strict_has_no_warnings(helm_env: dict[str, str], values: list[str]) -> None:
    p = helm(helm_env, "lint", "--strict", str(CHART), *sets(values), check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "[WARNING]" not in p.stdout and "[ERROR]" not in p.stdout, p.stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in p.stdout


# -- rendering -----------------------------------------------------------------------------------
@needs_helm
def test_defaults_render_the_least_privilege_objects(helm_env: dict[str, str]) -> None:
    docs = render(helm_env)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Role", "RoleBinding", "Service",
                     "ServiceAccount"]
    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    sa = one(docs, "ServiceAccount")["metadata"]["name"]
    assert pod["serviceAccountName"] == sa
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "RollingUpdate"
    assert pod["securityContext"]["runAsNonRoot"] is True
    (ctr,) = pod["containers"]
    assert ctr["image"] == "shardlet:0.1.0"
    assert ctr["securityContext"]["allowPrivilegeEscalation"] is False
    args = container_args(docs)
    assert args[:3] == ["--log-format=json", "--log-level=info", "run"]
    assert "--shards=1" in args and "--profile=fast" in args and "--lease-duration=40" in args
    assert "--node-annotation-selector=kwok.x-k8s.io/node=fake" in args
    assert not any(a.startswith("--ray-address") for a in args)
    assert {"--metrics-port=10247", "--metrics-addr=0.0.0.0"} <= set(args)
    # each replica its own lease holder: the pod's name, from the Downward API
    assert "--id=$(POD_NAME)" in args
    env = {e["name"]: e for e in ctr["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # nodes advertise the pod's address, where the apiserver reaches the kubelet server
    assert "--node-ip=$(POD_IP)" in args
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    svc = one(docs, "Service")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"
    assert ctr["ports"][0] == {"name": "metrics", "containerPort": 10247, "protocol": "TCP"}
    for binding in ("ClusterRoleBinding", "RoleBinding"):
        b = one(docs, binding)
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": "sim"}]
        assert b["roleRef"]["name"] == one(docs, binding.replace("Binding", ""))["metadata"]["name"]


@needs_helm
def test_rbac_rules_are_exactly_what_shardlet_calls(helm_env: dict[str, str]) -> None:
    docs = render(helm_env)
    assert rules(docs) == [
        ("", "nodes", ("get", "list", "watch")),
        ("", "nodes/status", ("patch",)),
        ("", "pods", ("get", "list", "watch", "delete")),
        ("", "pods/status", ("patch",)),
        ("", "events", ("create",)),
        ("kwok.x-k8s.io", "stages", ("get", "list", "watch")),
        # the kubelet server shows the log files that Logs and ClusterLogs objects name
        ("kwok.x-k8s.io", "logs", ("get", "list", "watch")),
        ("kwok.x-k8s.io", "clusterlogs", ("get", "list", "watch")),
    ]
    role = one(docs, "Role")
    assert role["metadata"]["namespace"] == "kube-node-lease"
    assert rules(docs, "Role") == [("coordination.k8s.io", "leases", ("get", "list", "create", "update"))]
    for d in docs:
        for rule in d.get("rules", []):
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
            assert "secrets" not in rule["resources"], rule


@needs_helm
def test_node_delete_is_opt_in_and_patch_only_when_sharded(helm_env: dict[str, str]) -> None:
    def node_verbs(*values: str) -> tuple[str, ...]:
        return next(v for g, r, v in rules(render(helm_env, *values)) if r == "nodes")
    assert node_verbs() == ("get", "list", "watch")
    assert node_verbs("rbac.allowNodeDelete=true") == ("get", "list", "watch", "delete")
    assert node_verbs("shards=3") == ("get", "list", "watch", "patch")
    assert node_verbs("ray.address=auto") == ("get", "list", "watch", "patch")


@needs_helm
def test_node_metrics_add_only_read_access_to_their_objects(helm_env: dict[str, str]) -> None:
    base = rules(render(helm_env))
    with_metrics = rules(render(helm_env, "nodeMetrics.enabled=true"))
    assert with_metrics == [*base, ("kwok.x-k8s.io", "metrics", ("get", "list", "watch")),
                            ("kwok.x-k8s.io", "resourceusages", ("get", "list", "watch")),
                            ("kwok.x-k8s.io", "clusterresourceusages", ("get", "list", "watch"))], with_metrics
    assert "--node-metrics" in container_args(render(helm_env, "nodeMetrics.enabled=true"))
    assert "--node-metrics" not in container_args(render(helm_env))


@needs_helm
def test_the_volume_profile_adds_what_kwoks_volume_stages_write(helm_env: dict[str, str]) -> None:
    base = rules(render(helm_env))
    rw = ("get", "list", "watch", "create", "patch", "delete")
    added = [("", "persistentvolumeclaims", rw), ("", "persistentvolumes", rw),
             ("", "persistentvolumeclaims/status", ("patch",)), ("", "persistentvolumes/status", ("patch",)),
             ("storage.k8s.io", "storageclasses", ("get", "create"))]
    assert rules(render(helm_env, "profile=fast\\,volume")) == [*base, *added]
    assert rules(render(helm_env, "profile=general")) == base


@needs_helm
def test_extra_rules_are_appended(helm_env: dict[str, str]) -> None:
    docs = render(helm_env, extra=("--set-json", 'rbac.extraRules=[{"apiGroups":[""],"resources":["pods"],"verbs":["patch"]}]'))
    assert rules(docs)[-1] == ("", "pods", ("patch",))


@needs_helm
def test_ray_address_joins_an_existing_cluster(helm_env: dict[str, str]) -> None:
    docs = render(helm_env, "ray.address=ray://ray-head:10001", "shards=8")
    args = container_args(docs)
    assert "--ray-address=ray://ray-head:10001" in args
    assert "--shards=8" in args
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp"], "no in-pod Ray head, no /dev/shm"
    assert not any(a.startswith("--metrics-port") for a in args)
    assert not [d for d in docs if d["kind"] == "Service"]


@needs_helm
def test_shards_start_a_ray_head_in_the_pod(helm_env: dict[str, str]) -> None:
    docs = render(helm_env, "shards=4", "ray.shmSize=1Gi", "ray.shardCpus=0.5")
    args = container_args(docs)
    assert "--shards=4" in args and "--shard-cpus=0.5" in args
    assert not any(a.startswith("--ray-address") for a in args)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Gi"}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in pod["containers"][0]["volumeMounts"]


@needs_helm
@pytest.mark.parametrize("values,expect", [
    ([], {"manage_all_nodes": False, "node_annotation_selector": "kwok.x-k8s.io/node=fake",
          "node_label_selector": "", "lease_duration": 40, "profiles": ("fast",), "metrics_port": 10247,
          "metrics_addr": "0.0.0.0", "buckets": 0, "pod_watch": "cluster"}),
    (["nodes.select=all", "leaseDuration=0", "profile=none"],
     {"manage_all_nodes": True, "lease_duration": 0, "profiles": ()}),
    (["nodes.select=label", "nodes.labelSelector=type=kwok", "profile=fast\\,chaos"],
     {"manage_all_nodes": False, "node_annotation_selector": "", "node_label_selector": "type=kwok",
      "profiles": ("fast", "chaos")}),
    (["shards=4"], {"buckets": 1024, "pod_watch": "node", "metrics_port": -1}),
    (["extraArgs={--cidr=10.64.0.0/16,--concurrency=128}"], {"cidr": "10.64.0.0/16", "stage_concurrency": 128}),
    (["nodeMetrics.enabled=true"], {"node_metrics": True}),
], ids=["defaults", "all-nodes", "label", "sharded", "extra-args", "node-metrics"])
def test_rendered_args_are_accepted_by_shardlet_run(helm_env: dict[str, str], values: list[str],
                                                   expect: dict[str, Any]) -> None:
    from shardlet.cli import _load_extensions, build_parser
    from shardlet.runner import shard_config

    _load_extensions()
    args = build_parser().parse_args(container_args(render(helm_env, *values)))
    assert args.command == "run" and args.kubeconfig is None, "in-cluster credentials"
    cfg = shard_config(args)
    got = {k: getattr(cfg, k) for k in expect}
    assert got == expect


@needs_helm
def test_stages_install_renders_the_fast_profile_as_stage_objects(helm_env: dict[str, str]) -> None:
    assert not [d for d in render(helm_env) if d["kind"] == "Stage"]
    stages = [d for d in render(helm_env, "stages.install=true") if d["kind"] == "Stage"]
    source = [d for d in yaml.safe_load_all(FAST_SOURCE.read_text()) if d]
    assert [s["metadata"]["name"] for s in stages] == [s["metadata"]["name"] for s in source]
    for got, want in zip(stages, source, strict=True):
        assert got["apiVersion"] == "kwok.x-k8s.io/v1alpha1"
        assert got["spec"] == want["spec"], got["metadata"]["name"]
        assert got["metadata"]["labels"]["app.kubernetes.io/instance"] == "rel"


@needs_helm
def test_apf_renders_a_flowschema_for_the_service_account(helm_env: dict[str, str]) -> None:
    assert not [d for d in render(helm_env) if d["kind"] in ("FlowSchema", "PriorityLevelConfiguration")]
    docs = render(helm_env, "apf.enabled=true")
    fs, pl = one(docs, "FlowSchema"), one(docs, "PriorityLevelConfiguration")
    assert fs["apiVersion"] == pl["apiVersion"] == "flowcontrol.apiserver.k8s.io/v1"
    assert fs["spec"]["priorityLevelConfiguration"]["name"] == pl["metadata"]["name"]
    sa = one(docs, "ServiceAccount")["metadata"]
    assert fs["spec"]["rules"][0]["subjects"] == [
        {"kind": "ServiceAccount", "serviceAccount": {"name": sa["name"], "namespace": "sim"}}]
    assert pl["spec"]["type"] == "Limited"
    assert pl["spec"]["limited"]["nominalConcurrencyShares"] == 100


@needs_helm
def test_crd_ships_in_crds_dir(helm_env: dict[str, str]) -> None:
    docs = render(helm_env, extra=("--include-crds",))
    names = sorted(d["metadata"]["name"] for d in docs if d and d.get("kind") == "CustomResourceDefinition")
    assert names == ["clusterlogs.kwok.x-k8s.io", "clusterresourceusages.kwok.x-k8s.io", "logs.kwok.x-k8s.io",
                     "metrics.kwok.x-k8s.io", "resourceusages.kwok.x-k8s.io", "stages.kwok.x-k8s.io"]


@needs_helm
@pytest.mark.parametrize("values,message", [
    (["replicas=-1"], "/replicas"),
    (["nodes.select=some"], "/nodes/select"),
    (["shard=3"], "additional properties 'shard'"),
    (["nodes.select=label"], "nodes.labelSelector is required"),
    (["shards=0"], "/shards"),
])
def test_bad_values_are_refused(helm_env: dict[str, str], values: list[str], message: str) -> None:
    p = helm(helm_env, "template", "rel", str(CHART), *sets(values), check=False)
    assert p.returncode != 0 and message in p.stderr, p.stderr


# -- copies and the image ------------------------------------------------------------------------
def test_chart_crds_are_the_shardlet_crds() -> None:
    sources = sorted(CRD_SOURCE.parent.glob("*.yaml"))
    assert len(sources) == 6
    assert sorted(p.name for p in (CHART / "crds").glob("*.yaml")) == [p.name for p in sources]
    for src in sources:
        assert (CHART / "crds" / src.name).read_bytes() == src.read_bytes(), \
            f"cp {src.relative_to(ROOT)} {CHART.relative_to(ROOT)}/crds/"


def test_chart_fast_stages_are_the_builtin_profile() -> None:
    assert (CHART / "files" / "stages-fast.yaml").read_bytes() == FAST_SOURCE.read_bytes(), \
        f"cp {FAST_SOURCE.relative_to(ROOT)} {CHART.relative_to(ROOT)}/files/stages-fast.yaml"


def test_containerfile_runs_shardlet_as_the_charts_non_root_user() -> None:
    text = (ROOT / "deploy" / "Containerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    assert 'ENTRYPOINT ["shardlet"]' in lines and 'CMD ["run"]' in lines
    user = next(ln for ln in lines if ln.startswith("USER "))
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    uid = values["podSecurityContext"]["runAsUser"]
    assert user == f"USER {uid}:{values['podSecurityContext']['runAsGroup']}" and uid != 0
    for path in ("pyproject.toml", "README.md", "shardlet", "coordinator"):
        assert any(ln.startswith("COPY ") and path in ln for ln in lines), f"{path} not copied"
