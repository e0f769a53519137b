"""Issue: kwok's configuration. kwok v0.8.0's own KwokConfiguration (kustomize/kwok/kwok.yaml from
its module) given to `shardlet run --config` with its lease duration and node selection changed:
the nodes it selects are played with leases of that duration, the others are left alone; an option
shardlet cannot honour stops the run with one line naming the document and the field."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from shardlet.controlplane.cluster import Cluster
from tests.unit.kwok_source import kwok_stage_dir

from .conftest import SHARDLET, Kubectl, ShardletProcess, node_ready, poll

pytestmark = pytest.mark.e2e

ANNOTATION = "e2e.shardlet.io/kwok-config"


def _kwok_yaml() -> str:
    stages = kwok_stage_dir()
    assert stages is not None, "kwok v0.8.0 is not in the Go module cache: the toolchain build puts it there"
    return (stages.parents[1] / "kustomize" / "kwok" / "kwok.yaml").read_text()


def test_a_kwok_configuration_sets_the_lease_duration_and_node_selection(cluster: Cluster, kubectl: Kubectl,
                                                                         tmp_path: Path) -> None:
    text = (_kwok_yaml()
            .replace("nodeLeaseDurationSeconds: 40", "nodeLeaseDurationSeconds: 30")
            .replace("manageNodesWithAnnotationSelector: 'kwok.x-k8s.io/node=fake'",
                     f"manageNodesWithAnnotationSelector: '{ANNOTATION}=yes'")
            .replace("nodePort: 10247", "nodePort: 0")
            .replace("  - Stage\n", ""))        # the built-in stages, as kwok without Stage objects
    assert f"{ANNOTATION}=yes" in text and "nodeLeaseDurationSeconds: 30" in text
    cfg = tmp_path / "kwok.yaml"
    cfg.write_text(text)
    sp = ShardletProcess(cluster.kubeconfig, tmp_path / "run.log", "--config", str(cfg), "--name", "kwok-config")
    try:
        sp.wait_for("shard_ready", 120)
        for name, ann in (("kwok-config-0", {ANNOTATION: "yes"}), ("kwok-config-other", {})):
            kubectl.apply(json.dumps({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "annotations": ann}}))
        poll(lambda: node_ready(kubectl.json("get", "node", "kwok-config-0")), 60, 0.5, "the selected node Ready")
        lease = kubectl.json("get", "lease", "kwok-config-0", "-n", "kube-node-lease")
        assert lease["spec"]["leaseDurationSeconds"] == 30, lease["spec"]
        other = kubectl.json("get", "node", "kwok-config-other")
        assert not (other.get("status") or {}).get("conditions"), "a node the configuration does not select was played"
    finally:
        sp.stop()
        kubectl.run("delete", "node", "kwok-config-0", "kwok-config-other", "--wait=false", check=False)


def test_an_option_shardlet_cannot_honour_is_refused_by_name(cluster: Cluster, tmp_path: Path) -> None:
    cfg = tmp_path / "kwok.yaml"
    cfg.write_text(_kwok_yaml().replace("manageSingleNode: ''", "manageSingleNode: node-7"))
    p = subprocess.run([*SHARDLET, "--config", str(cfg), "run", "--kubeconfig", str(cluster.kubeconfig)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and p.stderr.count("\n") == 1 + p.stderr.count("warning:"), p.stderr
    assert "(document 1): KwokConfiguration.options.manageSingleNode: not supported by shardlet yet" in p.stderr
