"""Issue: a real local control plane. These talk to real etcd/kube-apiserver/controllers."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from shardlet.controlplane.cluster import Cluster, Options, alive

from .conftest import SHARDLET, Kubectl, files_holding, key_markers, node_ready, poll

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


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SHARDLET, *args], capture_output=True, text=True, env=env, timeout=timeout)


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


def _with_env(key: str, value: str) -> list[int]:
    """Processes whose environment has key=value (a run's Ray daemons and workers inherit it)."""
    want = f"{key}={value}".encode()
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if want in (d / "environ").read_bytes().split(b"\0"):
                out.append(int(d.name))
        except OSError:
            continue
    return out


def test_cluster_up_with_two_shards_then_down_leaves_no_shard_and_no_key(tmp_path_factory: pytest.TempPathFactory,
                                                                          bin_dir: Path) -> None:
    """`cluster up --shards 2` plays a node on its Ray shards, which run on a pushed token; after
    `cluster down` no process of the run is left, and no file in its temp directory (the Ray
    session: logs, spilled objects) holds the admin key, which stays in the 0700 cluster dir."""
    name = f"e2e-keys-{os.getpid()}"
    tmp = Path(tempfile.mkdtemp(prefix="slk-", dir="/tmp"))   # short: Ray's socket paths
    user_kubeconfig = tmp_path_factory.mktemp("home") / ".kube" / "config"     # not there before the up
    env = dict(os.environ, TMPDIR=str(tmp), KUBECONFIG=str(user_kubeconfig))
    c = Cluster(name)
    try:
        p = _cli("cluster", "up", "--name", name, "--shards", "2", env=env, timeout=400)
        assert p.returncode == 0, p.stderr
        assert stat.S_IMODE(c.dir.stat().st_mode) == 0o700
        # kwokctl's habit: a context of its own in the user's kubeconfig, for a plain kubectl
        k = Kubectl(c.kubeconfig)
        got = subprocess.run([k.exe, "--context", f"shardlet-{name}", "get", "--raw", "/readyz"], env=env,
                             capture_output=True, text=True, timeout=60)
        assert got.stdout == "ok", got.stderr
        markers = key_markers(c.kubeconfig)
        assert files_holding([c.pki.dir], markers) == [str(c.pki.admin_key)]    # the search finds the key
        assert not files_holding([user_kubeconfig.parent], markers), "the admin key was copied to the kubeconfig"
        k.apply('{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "keys-0", '
                '"annotations": {"kwok.x-k8s.io/node": "fake"}}}')
        poll(lambda: node_ready(k.json("get", "node", "keys-0")), 120, 1, "the node Ready")
        # the runner, Ray's daemons and the two shard workers
        poll(lambda: len(_with_env("TMPDIR", str(tmp))) > 3, 10, 0.5, "the run's processes")
        assert not files_holding([tmp], markers)
        p = _cli("cluster", "down", "--name", name, env=env)
        assert p.returncode == 0, p.stderr
        poll(lambda: not _with_env("TMPDIR", str(tmp)), 60, 0.5, "no process of the run left")
        assert not files_holding([tmp], markers), "a file in the run's temp directory holds the admin key"
        assert not c.dir.exists()
        assert not user_kubeconfig.exists() and not list(user_kubeconfig.parent.iterdir()), \
            "cluster down left the user's kubeconfig changed (it was not there before the up)"
    finally:
        if c.dir.exists():
            _cli("cluster", "down", "--name", name, env=env)
        shutil.rmtree(tmp, ignore_errors=True)
