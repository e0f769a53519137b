"""Issue: the kubelet server. `kubectl logs` on a fake pod goes through the real apiserver to the
session shardlet's kubelet server, at the address and port its node advertises, both ends
certified by the cluster's CA (the apiserver's --kubelet-certificate-authority and
--kubelet-client-certificate): the file a kwok Logs object names, with --tail, --timestamps,
--limit-bytes, -f following lines appended while it runs, and kwok's error for a container
without logs."""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from shardlet.controlplane.cluster import Cluster

from .conftest import Kubectl, ShardletProcess, node_ready, poll

pytestmark = pytest.mark.e2e

NODE = "kubelet-srv-0"
POD = "logged"


def _line(t: str, text: str, stream: str = "stdout") -> str:
    return f"{t} {stream} F {text}\n"


@pytest.fixture(scope="module")
def logged_pod(shardlet: ShardletProcess, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory) -> Path:
    logs = tmp_path_factory.mktemp("kubelet") / "app.log"
    logs.write_text(_line("2026-01-01T00:00:00.000000001Z", "one") + _line("2026-01-01T00:00:01Z", "two", "stderr")
                    + _line("2026-01-01T00:00:02Z", "three"))
    kubectl.apply(json.dumps({"apiVersion": "v1", "kind": "Node", "metadata": {
        "name": NODE, "annotations": {"kwok.x-k8s.io/node": "fake"}}}))
    poll(lambda: node_ready(kubectl.json("get", "node", NODE)), 60, 0.5, "the node Ready")
    kubectl.apply(json.dumps({"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Logs",
                              "metadata": {"name": POD, "namespace": "default"},
                              "spec": {"logs": [{"containers": ["app"], "logsFile": str(logs), "follow": True}]}}))
    for name in (POD, "unlogged"):
        kubectl.apply(json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
                                  "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "fake"}]}}))
        poll(lambda n=name: kubectl.json("get", "pod", n)["status"].get("phase") == "Running", 60, 0.5, f"{name} Running")
    return logs


def test_the_node_advertises_the_shards_kubelet_server(shardlet: ShardletProcess, kubectl: Kubectl,
                                                       cluster: Cluster, logged_pod: Path) -> None:
    port = shardlet.wait_for("kubelet_serving", 10)["port"]
    node = kubectl.json("get", "node", NODE)
    assert node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] == port
    assert {"type": "InternalIP", "address": "127.0.0.1"} in node["status"]["addresses"]
    # (the apiserver's node proxy refuses loopback addresses, so /healthz is asked directly)
    ca = str(cluster.pki.ca_cert)
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(str(cluster.pki.kubelet_client_cert), str(cluster.pki.kubelet_client_key))
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=ctx, timeout=10) as r:
        assert r.read() == b"ok"
    # without the apiserver's client certificate the TLS handshake is refused
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionResetError)):
        urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=ssl.create_default_context(cafile=ca),
                               timeout=10).read()


def test_kubectl_logs_with_tail_timestamps_and_limit(kubectl: Kubectl, logged_pod: Path) -> None:
    assert kubectl.run("logs", POD).stdout == "one\ntwo\nthree\n"
    assert kubectl.run("logs", POD, "--tail=1").stdout == "three\n"
    assert kubectl.run("logs", POD, "--timestamps", "--tail=2").stdout == \
        "2026-01-01T00:00:01Z two\n2026-01-01T00:00:02Z three\n"
    assert kubectl.run("logs", POD, "--limit-bytes=6").stdout == "one\ntw"


def test_kubectl_logs_follow_streams_appended_lines(kubectl: Kubectl, logged_pod: Path) -> None:
    p = subprocess.Popen([kubectl.exe, f"--kubeconfig={kubectl.kubeconfig}", "logs", "-f", POD, "--tail=1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.extend(iter(p.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        poll(lambda: got == ["three\n"], 30, 0.2, "the last line")
        with logged_pod.open("a") as f:
            f.write(_line("2026-01-01T00:00:03Z", "four"))
            f.write("2026-01-01T00:00:04Z stdout P fi\n")   # a partial line, continued by the next
            f.write("2026-01-01T00:00:04Z stdout F v")       # a line the runtime is still writing
            f.flush()
            time.sleep(0.5)
            f.write("e\n")
        poll(lambda: got == ["three\n", "four\n", "five\n"], 30, 0.2, "appended lines followed")
        assert p.poll() is None, p.stderr.read() if p.stderr else ""
    finally:
        p.terminate()
        p.wait(10)


def test_a_container_without_logs_is_kwoks_error(kubectl: Kubectl, logged_pod: Path) -> None:
    p = kubectl.run("logs", "unlogged", check=False)
    assert p.returncode != 0
    assert 'no logs found for container "app" in pod "default/unlogged"' in p.stderr, p.stderr
