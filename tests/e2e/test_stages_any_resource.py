"""Issue: Stages on every resource. kwok v0.8.0's own stage YAMLs, read from its Go module and
applied unmodified as Stage objects, play on the session's shardlet (one process, real control
plane): a Stage on Stage objects, json patches on a Stage's metadata, a CRD that appears after
shardlet started, a Stage whose apply renders no object, the volume set binding PVCs whatever
their order with their pods, and a Namespace stage that patches as an impersonated user."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from shardlet.scale import NODE_PARAMS, POD_PARAMS, node_manifest, pod_spec
from tests.unit.kwok_source import kwok_stage_dir

from .conftest import Kubectl, ShardletProcess, poll

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def kwok_e2e() -> Path:
    stages = kwok_stage_dir()
    assert stages is not None, "kwok v0.8.0 is not in the Go module cache: the toolchain build puts it there"
    return stages.parents[1] / "test" / "e2e"


def _condition(kubectl: Kubectl, kind: str, name: str, typ: str) -> str | None:
    obj: dict[str, Any] = kubectl.json("get", kind, name)
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == typ:
            return str(c.get("status"))
    return None


def test_stage_on_stage_objects_sets_its_available_condition(shardlet: ShardletProcess, kubectl: Kubectl,
                                                             kwok_e2e: Path) -> None:
    kubectl.apply((kwok_e2e / "stage.yaml").read_text())
    try:
        shardlet.wait_for("stage_controller_started", 60, resource="Stage (kwok.x-k8s.io/v1alpha1, stages)")
        poll(lambda: _condition(kubectl, "stage", "stage-available", "Available") == "True", 30, 0.5,
             "stage-available Available=True")
    finally:
        kubectl.run("delete", "stage", "stage-available", check=False)


def test_json_patch_on_a_stages_metadata(shardlet: ShardletProcess, kubectl: Kubectl, kwok_e2e: Path) -> None:
    docs = [d for d in yaml.safe_load_all((kwok_e2e / "jsonpatch.yaml").read_text()) if d]
    mine = [d for d in docs if d["spec"]["resourceRef"]["kind"] == "Stage"]   # the pod/node ones need fixtures of kwok's
    assert [d["metadata"]["name"] for d in mine] == ["stage-jsonpatch-available"]
    kubectl.apply(yaml.safe_dump_all(mine))
    try:
        ann = "kwok.x-k8s.io/test-jsonpatch-available"
        poll(lambda: kubectl.json("get", "stage", "stage-jsonpatch-available")["metadata"]["annotations"].get(ann) == "True",
             30, 0.5, "the json patch flipped the annotation")
    finally:
        kubectl.run("delete", "stage", "stage-jsonpatch-available", check=False)


WIDGET_STAGE = """
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: widget-ready}
spec:
  resourceRef: {apiGroup: e2e.shardlet.io/v1, kind: Widget}
  selector:
    matchExpressions:
    - {key: .status.ready, operator: DoesNotExist}
  next:
    statusTemplate: |
      ready: true
"""

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.e2e.shardlet.io"},
    "spec": {"group": "e2e.shardlet.io", "scope": "Namespaced",
             "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
             "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}


def test_stage_for_a_crd_created_after_start(shardlet: ShardletProcess, kubectl: Kubectl) -> None:
    kubectl.apply(WIDGET_STAGE)
    try:
        ev = shardlet.wait_for("stage_kind_not_served", 30)
        assert "widget-ready" in ev["error"] and "Widget" in ev["error"] and "e2e.shardlet.io/v1" in ev["error"], ev
        kubectl.apply(json.dumps(WIDGET_CRD))
        poll(lambda: kubectl.run("get", "widgets", check=False).returncode == 0, 30, 0.5, "the CRD served")
        kubectl.apply(json.dumps({"apiVersion": "e2e.shardlet.io/v1", "kind": "Widget",
                                  "metadata": {"name": "w1", "namespace": "default"}}))
        poll(lambda: (kubectl.json("get", "widget", "w1").get("status") or {}).get("ready") is True, 30, 0.5,
             "the widget played by the stage")
    finally:
        kubectl.run("delete", "stage", "widget-ready", check=False)
        kubectl.run("delete", "crd", "widgets.e2e.shardlet.io", "--wait=false", check=False)


BAD_APPLY = """
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: configmap-bad-apply}
spec:
  resourceRef: {apiGroup: v1, kind: ConfigMap}
  selector:
    matchLabels: {e2e.shardlet.io/bad-apply: "yes"}
  steps:
  - apply:
      template: |
        metadata:
          name: no-kind-here
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: configmap-forbidden-apply}
spec:
  resourceRef: {apiGroup: v1, kind: ConfigMap}
  selector:
    matchLabels: {e2e.shardlet.io/forbidden-apply: "yes"}
  steps:
  - apply:
      impersonation: {username: e2e-nobody}
      template: |
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: made-by-nobody
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: configmap-good}
spec:
  resourceRef: {apiGroup: v1, kind: ConfigMap}
  selector:
    matchLabels: {e2e.shardlet.io/good: "yes"}
    matchExpressions:
    - {key: .metadata.annotations.played, operator: DoesNotExist}
  next:
    patches:
    - root: metadata
      template: |
        annotations:
          played: "yes"
"""


def test_a_stage_rendering_no_object_or_forbidden_to_apply_is_reported_and_others_play(
        shardlet: ShardletProcess, kubectl: Kubectl) -> None:
    kubectl.apply(BAD_APPLY)
    try:
        for name, label in (("cm-bad", "e2e.shardlet.io/bad-apply"), ("cm-good", "e2e.shardlet.io/good"),
                            ("cm-forbidden", "e2e.shardlet.io/forbidden-apply")):
            kubectl.apply(json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                                      "metadata": {"name": name, "namespace": "default", "labels": {label: "yes"}}}))
        ev = shardlet.wait_for("stage_failed", 30, stage="configmap-bad-apply")
        assert "apply: the template must render an object with apiVersion and kind" in ev["error"], ev
        assert "\n" not in ev["error"]
        # RBAC refuses the impersonated apply: the Stage, the object it was played on, the step's
        # field and the object it was writing, in one line
        ev = shardlet.wait_for("stage_failed", 30, stage="configmap-forbidden-apply")
        assert ev["error"].startswith("ConfigMap default/cm-forbidden: 403 Forbidden: "
                                      "spec.steps[0].apply (ConfigMap default/made-by-nobody): "), ev
        assert 'User "e2e-nobody" cannot create resource "configmaps"' in ev["error"] and "\n" not in ev["error"], ev
        poll(lambda: (kubectl.json("get", "configmap", "cm-good")["metadata"].get("annotations") or {}).get("played") == "yes",
             30, 0.5, "the good stage played")
        assert shardlet.proc.poll() is None
    finally:
        kubectl.run("delete", "stage", "configmap-bad-apply", "configmap-forbidden-apply", "configmap-good", check=False)
        kubectl.run("delete", "configmap", "cm-bad", "cm-good", "cm-forbidden", check=False)


RUNAWAY = """
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: configmap-runaway-jq}
spec:
  resourceRef: {apiGroup: v1, kind: ConfigMap}
  selector:
    matchLabels: {e2e.shardlet.io/runaway: "yes"}
    matchExpressions:
    - {key: '[range(100000) | range(100000)] | length', operator: Exists}
  next:
    patches:
    - {type: merge, template: 'metadata: {annotations: {jq: played}}'}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: configmap-runaway-template}
spec:
  resourceRef: {apiGroup: v1, kind: ConfigMap}
  selector:
    matchLabels: {e2e.shardlet.io/runaway: "yes"}
    matchExpressions:
    - {key: '.metadata.annotations.until', operator: DoesNotExist}
  next:
    patches:
    - {type: merge, template: 'metadata: {annotations: {until: "{{ until 100000000 }}"}}'}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: configmap-alongside}
spec:
  resourceRef: {apiGroup: v1, kind: ConfigMap}
  selector:
    matchLabels: {e2e.shardlet.io/alongside: "yes"}
    matchExpressions:
    - {key: '.metadata.annotations.played', operator: DoesNotExist}
  next:
    patches:
    - {type: merge, template: 'metadata: {annotations: {played: "yes"}}'}
"""


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_a_runaway_jq_selector_or_template_is_refused_and_the_other_stages_play(
        shardlet: ShardletProcess, kubectl: Kubectl) -> None:
    """A selector whose jq would generate 10^10 values is refused once, by name and field, and never
    evaluated again; a template asking sprig's until for 10^8 items fails each object in one line;
    a Stage beside them plays every object, and the shard's memory stays flat."""
    rss0 = _rss_mib(shardlet.proc.pid)
    kubectl.apply(RUNAWAY)
    names = [f"cm-runaway-{i}" for i in range(20)]
    try:
        for i, n in enumerate(names):   # half for the runaway Stages, half for the one beside them
            label = "e2e.shardlet.io/runaway" if i % 2 else "e2e.shardlet.io/alongside"
            kubectl.apply(json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
                "name": n, "namespace": "default", "labels": {label: "yes"}}}))
        ev = shardlet.wait_for("stage_failed", 60, stage="configmap-runaway-jq")
        assert "spec.selector.matchExpressions: evaluation generated more than" in ev["error"], ev
        assert "refused" in ev["error"] and "\n" not in ev["error"], ev
        ev = shardlet.wait_for("stage_failed", 60, stage="configmap-runaway-template")
        assert "until 100000000: more than 100000 items" in ev["error"] and "\n" not in ev["error"], ev

        def played() -> bool:
            cms = kubectl.json("get", "configmap", "-n", "default", "-l", "e2e.shardlet.io/alongside=yes")["items"]
            return len(cms) == len(names) // 2 and all(
                (c["metadata"].get("annotations") or {}).get("played") == "yes" for c in cms)
        poll(played, 60, 0.5, "the Stage alongside played every ConfigMap")
        refused = [e for e in shardlet.events() if e.get("event") == "stage_failed"
                   and e.get("stage") == "configmap-runaway-jq"]
        assert len(refused) == 1, f"refused once, never evaluated again: {len(refused)} lines"
        assert shardlet.proc.poll() is None
        assert _rss_mib(shardlet.proc.pid) - rss0 < 64, (rss0, _rss_mib(shardlet.proc.pid))
    finally:
        kubectl.run("delete", "stage", "configmap-runaway-jq", "configmap-runaway-template", "configmap-alongside",
                    check=False)
        kubectl.run("delete", "configmap", "-n", "default", *names, check=False)


# -- kwok's volume set: PVCs of kwok-volume provisioned and bound, whatever the order -----------
def _volume_docs(kwok_e2e: Path) -> list[dict[str, Any]]:
    d = kwok_e2e.parents[1] / "kustomize" / "stage" / "volume" / "fast"
    files = ["storage-class.yaml", "pvc-provision.yaml", "pv-bind.yaml", "pvc-delete.yaml", "pv-delete.yaml"]
    return [doc for f in files for doc in yaml.safe_load_all((d / f).read_text()) if doc]


def _pvc(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": VOL_NS},
            "spec": {"storageClassName": "kwok-volume", "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}}


def _pod_with(name: str, claim: str) -> dict[str, Any]:
    spec = pod_spec(POD_PARAMS)
    spec.update(nodeName=VOL_NODE, volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": claim}}])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": VOL_NS}, "spec": spec}


VOL_NS = "e2e-volume"
VOL_NODE = "e2e-volume-node"


def _bound(kubectl: Kubectl, claim: str) -> bool:
    pvc = kubectl.json("get", "pvc", claim, "-n", VOL_NS)
    vol = (pvc.get("spec") or {}).get("volumeName")
    if (pvc.get("status") or {}).get("phase") != "Bound" or vol != f"pvc-{pvc['metadata']['uid']}":
        return False
    pv = kubectl.json("get", "pv", vol)
    ref = pv["spec"].get("claimRef") or {}
    return bool((pv.get("status") or {}).get("phase") == "Bound" and ref.get("name") == claim
                and ref.get("uid") == pvc["metadata"]["uid"] and pv["spec"]["storageClassName"] == "kwok-volume")


def test_volume_stages_provision_and_bind_before_with_or_after_the_pod(shardlet: ShardletProcess, kubectl: Kubectl,
                                                                        kwok_e2e: Path) -> None:
    docs = _volume_docs(kwok_e2e)
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "Stage"} == {"pvc-provision", "pv-bind", "pvc-delete", "pv-delete"}
    kubectl.apply(yaml.safe_dump_all(docs))
    kubectl.run("create", "namespace", VOL_NS)
    kubectl.apply(yaml.safe_dump(node_manifest(VOL_NODE, 250, NODE_PARAMS)))
    try:
        shardlet.wait_for("stage_controller_started", 60, resource="PersistentVolumeClaim (v1, persistentvolumeclaims)")
        kubectl.apply(yaml.safe_dump(_pvc("before")))                                    # PVC first
        kubectl.apply(yaml.safe_dump(_pod_with("pod-before", "before")))
        kubectl.apply(yaml.safe_dump_all([_pvc("with"), _pod_with("pod-with", "with")]))   # together
        kubectl.apply(yaml.safe_dump(_pod_with("pod-after", "after")))                   # pod first
        kubectl.apply(yaml.safe_dump(_pvc("after")))
        for claim in ("before", "with", "after"):
            poll(lambda c=claim: _bound(kubectl, c), 60, 0.5, f"PVC {claim} and its PV bound")   # type: ignore[misc]
        poll(lambda: all(p["status"].get("phase") == "Running" for p in kubectl.json("get", "pods", "-n", VOL_NS)["items"]),
             60, 0.5, "the three pods Running")
        # a PVC deleted (once its pod is gone) takes its provisioned PV with it (pvc-delete, pv-delete)
        vol = kubectl.json("get", "pvc", "with", "-n", VOL_NS)["spec"]["volumeName"]
        kubectl.run("delete", "pod", "pod-with", "-n", VOL_NS, "--wait=false")
        kubectl.run("delete", "pvc", "with", "-n", VOL_NS, "--wait=false")
        poll(lambda: kubectl.run("get", "pv", vol, check=False).returncode != 0, 60, 0.5, f"PV {vol} deleted")
    finally:
        kubectl.run("delete", "namespace", VOL_NS, "--wait=false", check=False)
        kubectl.run("delete", "node", VOL_NODE, "--wait=false", check=False)
        for d in docs:
            kubectl.run("delete", d["kind"].lower(), d["metadata"]["name"], "--wait=false", check=False)


# -- impersonation: a Namespace stage patches as the user it names -----------------------------
IMP_USER = "kwok-e2e-impersonated"
IMP_RBAC = [
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "e2e-impersonated-status"},
     "rules": [{"apiGroups": [""], "resources": ["namespaces/status"], "verbs": ["patch", "update"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
     "metadata": {"name": "e2e-impersonated-status"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "e2e-impersonated-status"},
     "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": IMP_USER}]},
]


def test_namespace_stage_patches_as_the_impersonated_user(shardlet: ShardletProcess, kubectl: Kubectl,
                                                          kwok_e2e: Path) -> None:
    """kwok's own impersonation.yaml: without RBAC for the impersonated user the patch is refused
    (so it is not sent as shardlet), reported naming the Stage and the object; granted, it lands."""
    stage = yaml.safe_load((kwok_e2e / "impersonation.yaml").read_text())
    # only the test's namespace: kwok's selector takes every namespace, which here are other tests'
    stage["spec"]["selector"]["matchLabels"] = {"e2e.shardlet.io/impersonation": "yes"}
    ns = {"apiVersion": "v1", "kind": "Namespace",
          "metadata": {"name": IMP_USER, "labels": {"e2e.shardlet.io/impersonation": "yes"}}}

    def impersonated() -> bool:
        conds = (kubectl.json("get", "namespace", IMP_USER).get("status") or {}).get("conditions") or []
        return any(c.get("type") == "kwok.x-k8s.io/impersonated" and c.get("status") == "True" for c in conds)
    kubectl.apply(yaml.safe_dump(stage))
    try:
        shardlet.wait_for("stage_controller_started", 60, resource="Namespace (v1, namespaces)")
        kubectl.apply(yaml.safe_dump(ns))
        ev = shardlet.wait_for("stage_failed", 30, stage="namespace-impersonation")
        assert f"Namespace {IMP_USER}: 403" in ev["error"] and IMP_USER in ev["error"], ev
        assert not impersonated()
        kubectl.apply(yaml.safe_dump_all(IMP_RBAC))
        kubectl.run("label", "namespace", IMP_USER, "e2e.shardlet.io/retry=1")   # a new event plays it again
        poll(impersonated, 30, 0.5, "the impersonated patch landed once RBAC allowed it")
    finally:
        kubectl.run("delete", "stage", "namespace-impersonation", check=False)
        kubectl.run("delete", "namespace", IMP_USER, "--wait=false", check=False)
        for d in IMP_RBAC:
            kubectl.run("delete", d["kind"].lower(), d["metadata"]["name"], check=False)
