"""The CLI turns every user mistake into one line on stderr and a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
