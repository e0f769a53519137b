"""Issue: a real local control plane. These talk to real etcd/kube-apiserver/controllers."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from shardlet.controlplane.cluster import Cluster, Options, alive

from .conftest import SHARDLET, Kubectl, poll

pytestmark = pytest.mark.e2e


def test_server_version_and_readyz(kubectl: Kubectl) -> None:
    v = kubectl.json("version")
    assert v["serverVersion"]["gitVersion"].startswith("v1.36."), v["serverVersion"]
    assert kubectl.run("get", "--raw", "/readyz").stdout.strip() == "ok"


def test_default_service_account_exists(kubectl: Kubectl) -> None:
    sa = poll(lambda: kubectl.run("get", "sa", "default", "-n", "default", check=False).returncode == 0,
              60, what="default ServiceAccount")
    assert sa


def test_deployment_gets_replicaset_and_pods(kubectl: Kubectl) -> None:
    kubectl.run("create", "namespace", "cp-deploy")
    kubectl.run("create", "deployment", "web", "--image=registry.k8s.io/pause:3.10", "--replicas=3", "-n", "cp-deploy")
    rs = poll(lambda: kubectl.json("get", "rs", "-n", "cp-deploy")["items"], 60, what="ReplicaSet")
    assert rs[0]["metadata"]["ownerReferences"][0]["name"] == "web"
    pods = poll(lambda: len(kubectl.json("get", "pods", "-n", "cp-deploy")["items"]) == 3, 60, what="3 pods")
    assert pods
    kubectl.run("delete", "namespace", "cp-deploy", "--wait=false")


def test_secrets_are_private(cluster: Cluster) -> None:
    for p in [cluster.kubeconfig, cluster.pki.admin_key, cluster.pki.ca_key, cluster.pki.sa_key, cluster.pki.serving_key]:
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, p


def test_everything_binds_loopback(cluster: Cluster) -> None:
    out = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout
    pids = {p.pid for p in cluster.state().procs.values()}
    mine = [ln for ln in out.splitlines() if any(f"pid={pid}," in ln for pid in pids)]
    assert mine, out
    for ln in mine:
        local = ln.split()[3]
        assert local.startswith(("127.0.0.1:", "[::1]:")), ln


def _listening(port: int) -> bool:
    # ask the kernel for LISTEN sockets: a connect() probe can self-connect on an ephemeral port
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
    return bool(out.strip())


def test_down_leaves_no_process_or_port(bin_dir: Path) -> None:
    c = Cluster(f"e2e-down-{os.getpid()}")
    st = c.up(Options(), timeout=180)
    ports = [p for k, p in st.ports.items() if k != "etcd-peer"]
    assert all(_listening(p) for p in ports)
    procs = list(st.procs.values())
    c.down()
    assert not any(alive(p) for p in procs)
    assert not [p for p in ports if _listening(p)], (st.ports, ports)
    assert not c.dir.exists()


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SHARDLET, *args], capture_output=True, text=True, env=env, timeout=120)


def test_unknown_cluster_is_one_line_error() -> None:
    p = _cli("cluster", "kubeconfig", "--name", "no-such-cluster")
    assert p.returncode == 1
    assert p.stderr.count("\n") == 1 and "no-such-cluster" in p.stderr and "Traceback" not in p.stderr


def test_port_taken_is_one_line_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = _cli("cluster", "up", "--name", "e2e-taken", "--apiserver-port", str(port), "--shards", "0")
    assert p.returncode == 1
    assert f"--apiserver-port {port} is taken" in p.stderr and p.stderr.count("\n") == 1, p.stderr


def test_missing_go_says_what_to_install(tmp_path: Path) -> None:
    env = dict(os.environ, PATH="/usr/bin:/bin", SHARDLET_CACHE=str(tmp_path))
    env.pop("SHARDLET_BIN_DIR", None)
    p = _cli("toolchain", env=env)
    assert p.returncode == 1
    assert "no Go toolchain" in p.stderr and "install Go" in p.stderr


def test_failed_build_names_the_step(tmp_path: Path) -> None:
    env = dict(os.environ, SHARDLET_CACHE=str(tmp_path), SHARDLET_K8S_VERSION="v1.36.999")
    env.pop("SHARDLET_BIN_DIR", None)
    p = _cli("toolchain", env=env)
    assert p.returncode == 1
    assert "toolchain: error: step" in p.stderr and "v1.36.999" in p.stderr, p.stderr
