"""Issue: Stages on every resource. kwok v0.8.0's own stage YAMLs, read from its Go module and
applied unmodified as Stage objects, play on the session's shardlet (one process, real control
plane): a Stage on Stage objects, json patches on a Stage's metadata, a CRD that appears after
shardlet started, and a Stage whose apply renders no object."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

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


def test_a_stage_rendering_no_object_is_reported_and_others_play(shardlet: ShardletProcess, kubectl: Kubectl) -> None:
    kubectl.apply(BAD_APPLY)
    try:
        for name, label in (("cm-bad", "e2e.shardlet.io/bad-apply"), ("cm-good", "e2e.shardlet.io/good")):
            kubectl.apply(json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                                      "metadata": {"name": name, "namespace": "default", "labels": {label: "yes"}}}))
        ev = shardlet.wait_for("stage_failed", 30, stage="configmap-bad-apply")
        assert "apply: the template must render an object with apiVersion and kind" in ev["error"], ev
        assert "\n" not in ev["error"]
        poll(lambda: (kubectl.json("get", "configmap", "cm-good")["metadata"].get("annotations") or {}).get("played") == "yes",
             30, 0.5, "the good stage played")
        assert shardlet.proc.poll() is None
    finally:
        kubectl.run("delete", "stage", "configmap-bad-apply", "configmap-good", check=False)
        kubectl.run("delete", "configmap", "cm-bad", "cm-good", check=False)
