"""A real local control plane for the e2e tests, started once per session and always torn down."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from shardlet.controlplane import toolchain
from shardlet.controlplane.cluster import Cluster, Options

ROOT = Path(__file__).resolve().parents[2]
SHARDLET = [sys.executable, "-m", "shardlet.cli"]
# a sharded run's Ray shards talk with the token of kube-system/shardlet, never the kubeconfig's
# credentials: the account is created with a role that lets Stages play any kind in a test cluster
RAY_RBAC = ["--create-rbac", "--rbac-extra-rules", str(Path(__file__).parent / "any-kind-rules.yaml")]


def key_markers(kubeconfig: Path) -> list[bytes]:
    """A slice of the kubeconfig's client private key as it appears in its PEM and in a kubeconfig
    that inlines the PEM (client-key-data, base64): what a leaked copy of the key contains."""
    import base64

    import yaml

    user = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]
    if "client-key-data" in user:
        pem = base64.b64decode(user["client-key-data"])
    else:
        pem = (kubeconfig.parent / user["client-key"]).read_bytes()
    start = (len(pem) // 2 - 21) // 3 * 3   # a multiple of 3: its base64 is a substring of the PEM's
    part = pem[start:start + 42]
    assert len(part) == 42 and b"-----" not in part, pem[:40]
    return [part, base64.b64encode(part)]


def files_holding(roots: list[Path], markers: list[bytes], limit: int = 64 << 20) -> list[str]:
    """Regular files under ``roots`` (links not followed) that contain any of ``markers``."""
    import stat

    out = []
    for root in roots:
        for d, _dirs, names in os.walk(root):
            for n in names:
                p = Path(d) / n
                try:
                    st = p.lstat()
                    if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
                        continue
                    data = p.read_bytes()
                except OSError:
                    continue
                if any(m in data for m in markers):
                    out.append(str(p))
    return out


def poll(cond: Callable[[], Any], timeout: float, interval: float = 0.5, what: str = "condition") -> Any:
    """Poll until `cond()` is truthy; fail with `what` at the deadline. Never a bare sleep."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {str(last)[:300]})")


class Kubectl:
    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.exe = str(toolchain.binary("kubectl"))

    def run(self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([self.exe, f"--kubeconfig={self.kubeconfig}", *args], capture_output=True,
                           text=True, input=input, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {p.stderr.strip()}")
        return p

    def json(self, *args: str) -> Any:
        return orjson.loads(self.run(*args, "-o", "json").stdout)

    def apply(self, manifest: str) -> None:
        self.run("apply", "-f", "-", input=manifest)


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    return toolchain.ensure(quiet=True)


@pytest.fixture(scope="session")
def cluster(bin_dir: Path) -> Iterator[Cluster]:
    c = Cluster(f"e2e-{os.getpid()}")
    # controllers get more QPS than the defaults (20/30) so a 1,000-pod Deployment is quick
    c.up(Options(node_monitor_grace_period="50s", kube_api_qps=300, kube_api_burst=600), timeout=180)
    try:
        yield c
    finally:
        c.down()


@pytest.fixture(scope="session")
def kubectl(cluster: Cluster) -> Kubectl:
    return Kubectl(cluster.kubeconfig)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ShardletProcess:
    """`shardlet run` against the session cluster, as a user would start it."""

    def __init__(self, kubeconfig: Path, log_path: Path, *args: str) -> None:
        self.log_path = log_path
        self.logf = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [*SHARDLET, "--log-format", "json", "run", "--kubeconfig", str(kubeconfig), "--metrics-port", "0", *args],
            stdout=self.logf, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))

    def events(self) -> list[dict[str, Any]]:
        """JSON log lines of the runner and (behind Ray's "(ShardActor pid=N)" prefix) of its shards."""
        out = []
        for raw in self.log_path.read_bytes().decode(errors="replace").splitlines():
            line = _ANSI.sub("", raw)
            i = line.find("{")
            if i < 0 or not line.rstrip().endswith("}"):
                continue
            try:
                out.append(orjson.loads(line[i:]))
            except orjson.JSONDecodeError:
                continue
        return out

    def tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def wait_for(self, event: str, timeout: float = 120, **match: Any) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            assert self.proc.poll() is None, f"shardlet exited: {self.tail()}"
            for e in self.events():
                if e.get("event") == event and all(e.get(k) == v for k, v in match.items()):
                    return e
            return None
        found: dict[str, Any] = poll(find, timeout, what=f"log event {event} {match}")
        return found

    def stop(self) -> int:
        self.proc.terminate()
        try:
            rc = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(10)
        self.logf.close()
        return rc


@pytest.fixture(scope="session")
def shardlet(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShardletProcess]:
    from shardlet.runner import install_crds

    install_crds(cluster)
    log_path = tmp_path_factory.mktemp("shardlet") / "shardlet.log"
    # --create-rbac, as `cluster up` starts it: the hot path on the exchanged token
    from shardlet.runner import kubelet_server_args

    sp = ShardletProcess(cluster.kubeconfig, log_path, "--node-metrics", "--create-rbac",
                         *kubelet_server_args(cluster))
    try:
        sp.wait_for("shard_ready", 120)
        yield sp
    finally:
        sp.stop()
        if os.environ.get("CI"):
            print(f"--- shardlet log tail ({log_path})\n" + log_path.read_text()[-3000:])


def node_ready(node: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node.get("status", {}).get("conditions", []))


def prom_series(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text exposition as (name, labels, value) rows."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, labels = head.partition("{")
        out.append((name, dict(re.findall(r'(\w+)="([^"]*)"', labels)), float(value)))
    return out


def prom_sum(series: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(v for n, lb, v in series if n == name and all(lb.get(k) == x for k, x in labels.items()))


class ReadyMonitor:
    """Polls the scaled nodes from the moment they are Ready; records every NotReady seen."""

    def __init__(self, kubectl: Kubectl, selector: str = "shardlet.x-k8s.io/scale=node", interval: float = 3) -> None:
        self.kubectl = kubectl
        self.selector = selector
        self.interval = interval
        self.not_ready: list[tuple[float, str]] = []
        self.checks = 0
        self.started = time.monotonic()
        self.check_times: list[float] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self) -> None:
        # a fixed cadence: the next poll is due `interval` after the last one began, however
        # long kubectl took on a busy box
        due = time.monotonic() + self.interval
        while not self._stop.wait(max(0.0, due - time.monotonic())):
            due = max(due + self.interval, time.monotonic())
            nodes = self.kubectl.json("get", "nodes", "-l", self.selector)["items"]
            self.checks += 1
            self.check_times.append(time.monotonic())
            for n in nodes:
                if not node_ready(n):
                    self.not_ready.append((time.monotonic() - self.started, n["metadata"]["name"]))

    def hold(self, seconds: float) -> None:
        """Fail at the first NotReady; return once `seconds` have passed with none."""
        t0 = time.monotonic()
        checks0 = self.checks

        def held() -> bool:
            assert not self.not_ready, f"nodes went NotReady: {self.not_ready[:5]}"
            return time.monotonic() - t0 >= seconds
        poll(held, seconds + 30, 1, f"{seconds:.0f}s of Ready nodes")
        # it kept polling: enough checks, and no long gap for a NotReady spell to hide in
        times = [t0, *(t for t in self.check_times if t >= t0), time.monotonic()]
        gap = max(b - a for a, b in itertools.pairwise(times))
        assert self.checks - checks0 >= seconds / self.interval / 2, "the monitor stopped polling"
        assert gap < self.interval + 8, f"the monitor paused for {gap:.1f}s"

    def stop(self) -> None:
        self._stop.set()
        self._t.join(10)


def lease_holders(k: Kubectl) -> dict[str, str]:
    """node -> holderIdentity of its Lease in kube-node-lease."""
    return {i["metadata"]["name"]: i["spec"]["holderIdentity"]
            for i in k.json("get", "leases", "-n", "kube-node-lease")["items"]}


def wait_reheld(k: Kubectl, owned: dict[str, int], timeout: float = 60) -> dict[str, str]:
    """Wait until each shard (by its lease holder) holds as many Leases as it reports owning nodes: nodes a rebalance
    moved are re-held by their new shard within a renewal interval, not at the moment it acks."""
    def reheld() -> dict[str, str] | None:
        h = lease_holders(k)
        return h if {s: sum(1 for v in h.values() if v == s) for s in owned} == owned else None
    out: dict[str, str] = poll(reheld, timeout, 1, "every lease held by the shard that owns its node")
    return out
