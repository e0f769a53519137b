"""The CLI turns every user mistake into one line on stderr and a non-zero exit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from shardlet import cli

SHARDLET = [sys.executable, "-m", "shardlet.cli"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SHARDLET, *args], capture_output=True, text=True, timeout=60,
                          env=env or dict(os.environ, SHARDLET_HOME="/nonexistent-shardlet-home"))


def one_line(p: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]


def test_wrong_flag() -> None:
    p = run("scale", "node", "--replicas", "3", "--no-such-flag")
    assert p.returncode == 2
    assert "--no-such-flag" in one_line(p)


def test_replicas_not_a_number() -> None:
    p = run("scale", "node", "--replicas", "many")
    assert p.returncode == 2
    assert "'many' is not a whole number" in one_line(p)


def test_missing_kubeconfig(tmp_path: Path) -> None:
    p = run("scale", "node", "--replicas", "1", "--kubeconfig", str(tmp_path / "nope"))
    assert p.returncode == 1
    assert "no such file" in one_line(p) and "nope" in p.stderr


def _kubeconfig(tmp_path: Path, server: str) -> Path:
    k = tmp_path / "kc"
    k.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "x", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "x", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}]}))
    return k


@pytest.mark.parametrize("cmd", [["scale", "node", "--replicas", "1"], ["run"]])
def test_unreachable_apiserver(tmp_path: Path, cmd: list[str]) -> None:
    p = run(*cmd, "--kubeconfig", str(_kubeconfig(tmp_path, "https://127.0.0.1:1")))
    assert p.returncode == 1
    line = one_line(p)
    assert "127.0.0.1:1" in line and "unreachable" in line


def test_unknown_cluster_name() -> None:
    p = run("kubectl", "--name", "ghost", "--", "get", "nodes")
    assert p.returncode == 1
    assert "ghost" in one_line(p)


def test_status_without_runner() -> None:
    p = run("status", "--name", "ghost")
    assert p.returncode == 1
    assert "no shardlet running for --name ghost" in one_line(p)


def test_config_file_sets_flags_and_flags_win(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"lease-duration": 20, "profile": "general", "cidr": "10.9.0.0/16"}))
    cli._load_extensions()
    parser = cli.build_parser()
    argv = ["--config", str(cfg), "run", "--profile", "fast"]
    cli._apply_config(parser, argv)
    args = parser.parse_args(argv)
    assert args.lease_duration == 20 and args.cidr == "10.9.0.0/16"
    assert args.profile == "fast"


def test_stages_from_says_which_stages_play() -> None:
    """kwok plays its --config stages or the Stage CRD; shardlet's default plays both (a Stage
    object replaces a command-line Stage of its name), and either alone is one flag away."""
    from shardlet.errors import UserError
    from shardlet.runner import shard_config

    cli._load_extensions()
    parser = cli.build_parser()

    def cfg(*flags: str) -> tuple[tuple[str, ...], bool]:
        c = shard_config(parser.parse_args(["run", *flags]))
        return c.profiles, c.watch_stages
    assert cfg() == (("fast",), True)
    assert cfg("--profile", "general,volume") == (("general", "volume"), True)
    assert cfg("--stages-from", "config") == (("fast",), False)
    assert cfg("--no-stage-crd") == (("fast",), False)
    assert cfg("--stages-from", "cluster") == ((), True)
    for bad, word in ((["--profile", "fast"], "--profile fast"), (["--stage-file", __file__], "--stage-file"),
                      (["--no-stage-crd"], "--no-stage-crd")):
        with pytest.raises(UserError, match=word):
            shard_config(parser.parse_args(["run", "--stages-from", "cluster", *bad]))


def test_shard_filter_and_feature_gate_flags_reach_the_shard_and_the_apiserver() -> None:
    from shardlet.controlplane.cluster import Cluster, Options, State
    from shardlet.runner import shard_config

    cli._load_extensions()
    parser = cli.build_parser()
    assert shard_config(parser.parse_args(["run"])).server_shard_filter
    assert not shard_config(parser.parse_args(["run", "--no-server-shard-filter"])).server_shard_filter
    assert parser.parse_args(["cluster", "up"]).kube_feature_gates == "ShardedListAndWatch=true"
    c = Cluster("flags")    # only builds its argument lists: nothing is written
    st = State("flags", "", {"etcd": 1, "kube-apiserver": 2}, {}, {}, 0.0)
    args = c._apiserver_args(st, Options(feature_gates=parser.parse_args(
        ["cluster", "up", "--kube-feature-gates", "A=true,B=false"]).kube_feature_gates))
    assert "--feature-gates=A=true,B=false" in args
    assert not any(a.startswith("--feature-gates") for a in c._apiserver_args(st, Options(feature_gates="")))


def test_bad_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("a: [unclosed")
    p = run("--config", str(cfg), "status")
    assert p.returncode == 1
    assert "not valid YAML" in one_line(p)


def test_every_flag_has_help() -> None:
    cli._load_extensions()
    parser = cli.build_parser()

    def walk(p: object) -> None:
        import argparse
        assert isinstance(p, argparse.ArgumentParser)
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for sp in a.choices.values():
                    walk(sp)
            elif a.option_strings and a.dest != "help":
                assert a.help, f"{p.prog} {a.option_strings} has no help"
    walk(parser)


def test_kwok_flag_names_work_in_run() -> None:
    from shardlet.runner import shard_config

    cli._load_extensions()
    parser = cli.build_parser()
    c = shard_config(parser.parse_args([
        "run", "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=other",
        "--manage-nodes-with-label-selector=pool=fake", "--node-lease-duration-seconds=20",
        "--manage-all-nodes=false", "--node-name=kwok-host", "--node-ip=10.0.0.9", "--node-port=10247",
        "--server-address=127.0.0.1:0", "--cidr=10.1.0.0/16"]))
    assert (c.node_annotation_selector, c.node_label_selector, c.lease_duration) == \
        ("kwok.x-k8s.io/node=other", "pool=fake", 20)
    assert (c.manage_all_nodes, c.node_name, c.node_ip, c.node_port, c.server_address, c.cidr) == \
        (False, "kwok-host", "10.0.0.9", 10247, "127.0.0.1:0", "10.1.0.0/16")
    assert shard_config(parser.parse_args(["run", "--manage-all-nodes"])).manage_all_nodes
    assert shard_config(parser.parse_args(["run", "--manage-all-nodes=true"])).manage_all_nodes
    p = run("run", "--manage-all-nodes=maybe")
    assert p.returncode == 2 and "'maybe' is not a boolean" in p.stderr


def test_config_file_takes_kwok_flag_names_and_refuses_unknown_keys(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"node-lease-duration-seconds": 30, "manage_nodes_with_label_selector": "a=b"}))
    cli._load_extensions()
    parser = cli.build_parser()
    argv = ["--config", str(cfg), "run"]
    cli._apply_config(parser, argv)
    args = parser.parse_args(argv)
    assert args.lease_duration == 30 and args.node_label_selector == "a=b"
    cfg.write_text(yaml.safe_dump({"lease-duration": 30, "leese-duration": 5}))
    p = run("--config", str(cfg), "status")
    assert p.returncode == 1 and "leese-duration: no such flag" in one_line(p)


def test_kubelet_server_flags_are_checked() -> None:
    from shardlet.errors import UserError
    from shardlet.runner import shard_config

    cli._load_extensions()
    parser = cli.build_parser()
    for flags, why in ((["--server-address", "nowhere"], "must be HOST:PORT"),
                       (["--tls-cert-file", "/x.crt"], "give both or neither")):
        with pytest.raises(UserError, match=why):
            shard_config(parser.parse_args(["run", *flags]))


KWOK_CONFIG = """\
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options:
  cidr: 10.2.0.0/16
  nodeIP: 10.2.0.1
  manageAllNodes: false
  manageNodesWithAnnotationSelector: kwok.x-k8s.io/node=fake
  nodeLeaseDurationSeconds: 30
  nodeLeaseParallelism: 8
  enableCRDs: [Metric]
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: node-only}
spec:
  resourceRef: {apiVersion: v1, kind: Node}
  selector: {matchExpressions: [{key: .status.phase, operator: DoesNotExist}]}
  next: {statusTemplate: "phase: Running"}
"""


def _run_config(tmp_path: Path, text: str, *flags: str) -> object:
    from shardlet.runner import shard_config

    cfg = tmp_path / "kwok.yaml"
    cfg.write_text(text)
    cli._load_extensions()
    parser = cli.build_parser()
    argv = ["--config", str(cfg), "run", *flags]
    cli._apply_config(parser, argv)
    return shard_config(parser.parse_args(argv))


def test_a_kwok_configuration_sets_what_it_names_and_its_stages_play_alone(tmp_path: Path) -> None:
    c: Any = _run_config(tmp_path, KWOK_CONFIG)
    assert (c.cidr, c.node_ip, c.lease_duration, c.node_annotation_selector, c.node_metrics) == \
        ("10.2.0.0/16", "10.2.0.1", 30, "kwok.x-k8s.io/node=fake", True)
    # kwok plays exactly its config's Stages: no default set, no Stage objects
    assert c.stage_files == (str(tmp_path / "kwok.yaml"),) and c.profiles == () and not c.watch_stages
    # the command line wins, as in kwok
    assert _run_config(tmp_path, KWOK_CONFIG, "--node-lease-duration-seconds=50").lease_duration == 50  # type: ignore[attr-defined]


@pytest.mark.parametrize(("change", "why"), [
    (("nodeLeaseParallelism: 8", "manageSingleNode: node-0"), "KwokConfiguration.options.manageSingleNode: not supported"),
    (("nodeLeaseParallelism: 8", "enableCNI: true"), "KwokConfiguration.options.enableCNI: not an option"),
    (("[Metric]", "[Metric, Lease]"), "KwokConfiguration.options.enableCRDs: Lease: not served by shardlet yet"),
    (("[Metric]", "[Stage]"), "Stage documents and enableCRDs: [Stage]"),
    (("kind: Stage", "kind: ClusterLogs"), "kwok.x-k8s.io/v1alpha1/ClusterLogs: not read from --config"),
])
def test_what_shardlet_cannot_honour_is_refused_by_document_and_field(tmp_path: Path, change: tuple[str, str],
                                                                     why: str) -> None:
    from shardlet.errors import UserError

    with pytest.raises(UserError, match=re.escape(why)) as e:
        _run_config(tmp_path, KWOK_CONFIG.replace(*change))
    assert "kwok.yaml" in str(e.value) and "\n" not in str(e.value)


def test_kwoks_own_configuration_file_loads_unmodified(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.unit.kwok_source import kwok_stage_dir

    stages = kwok_stage_dir()
    assert stages is not None, "kwok v0.8.0 is not in the Go module cache: the toolchain build puts it there"
    text = (stages.parents[1] / "kustomize" / "kwok" / "kwok.yaml").read_text()
    c: Any = _run_config(tmp_path, text)
    assert (c.node_port, c.lease_duration, c.node_annotation_selector, c.manage_all_nodes) == \
        (10247, 40, "kwok.x-k8s.io/node=fake", False)
    assert c.node_metrics and not c.profiles and c.watch_stages     # enableCRDs: Stage, Metric, ...
    warned = capsys.readouterr().err.splitlines()
    assert len(warned) == 6 and all("answers its requests with 501" in w for w in warned), warned
