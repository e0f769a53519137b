"""Issue: reliability and security — faults, restarts, throttling and bad input, with nothing lost.

Against a real control plane of this module's own (controller-manager running, 40 s leases,
node-monitor-grace-period 50 s):

- kube-apiserver restarted mid-run, then etcd restarted mid-run (a short outage each): the
  watches resume (410 -> one relist), every lease is renewed again before it expires, no node
  goes NotReady, no pod changes phase or IP, and nodes and pods created afterwards are served;
- etcd compacted at its current revision and the apiserver's watch cache restarted: a watch
  gets 410 Gone (at most one per fault) and relists exactly once per 410;
- API Priority and Fairness squeezed to a tiny priority level for the shard's ServiceAccount:
  429s are retried with backoff and jitter, the shard stays up, and catches up when the
  FlowSchema is deleted;
- (-m slow) an apiserver outage longer than the grace period: every node Ready again within
  30 s of the apiserver's return;
- SIGTERM of `shardlet run`, alone and with Ray shards: exit 0 within seconds, no process left,
  leases released with --release-leases-on-exit and left to expire without it;
- kill -9 of a Ray shard worker twice in a row (--shards 3): nothing NotReady, lost, stuck
  Terminating or re-IP'd;
- the shard's metrics and the coordinator endpoint listen on 127.0.0.1 only, and the kubeconfig
  a Ray shard writes for itself is 0600. (That the shard never reads Secrets is shown by the
  audit-log check of tests/e2e/test_helm.py: the chart's ServiceAccount may not read them, and
  the shard running with only its token is refused nothing.)

The coordinator's own death is covered by tests/e2e/test_ray_cluster.py.

The normal suite runs a CI size (200 nodes, 500 pods, 60 s holds; env SHARDLET_FAULTS_*);
`-m slow` runs 1,000 nodes, 5,000 pods and 3-minute holds (env SHARDLET_FAULTS_FULL_*) through
the same code, plus the long outage.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import os
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from coordinator.endpoint import run_file
from shardlet.api import Kube
from shardlet.controlplane.cluster import Cluster, Options, alive
from shardlet.scale import NODE_PARAMS, POD_PARAMS, node_manifest, pod_spec

from .conftest import (
    RAY_RBAC,
    SHARDLET,
    Kubectl,
    ShardletProcess,
    files_holding,
    key_markers,
    node_ready,
    poll,
    prom_series,
    prom_sum,
)

pytestmark = pytest.mark.e2e

GROUP = "shardlet.x-k8s.io/fault-group"     # which `shardlet run` manages a node
PROBE = "shardlet.x-k8s.io/fault-probe"     # nodes made after a fault, kept out of the monitors
LEASE_NS = "kube-node-lease"
LEASE_DURATION = 40.0
GRACE = 50.0                                # node-monitor-grace-period of this module's cluster
SHUTDOWN_S = 10.0                           # "clean shutdown within a few seconds"
SA_NS, SA_NAME = "kube-system", "shardlet-faults"


def _env(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


@dataclass(frozen=True)
class Size:
    id: str
    nodes: int          # served by the single-process run through every control-plane fault
    pods: int
    burst: int          # pods created while APF squeezes the shard
    hold: float         # seconds of all-Ready after the last fault of a section
    outage: float       # etcd's short outage: renewals missed, well inside lease and grace
    ray_nodes: int      # served by the Ray run whose workers are killed
    ray_pods: int


def _size(prefix: str, id: str, nodes: int, pods: int, burst: int, hold: float) -> Size:
    return Size(id, int(_env(f"{prefix}_NODES", nodes)), int(_env(f"{prefix}_PODS", pods)),
                int(_env(f"{prefix}_BURST", burst)), _env(f"{prefix}_HOLD", hold),
                _env(f"{prefix}_OUTAGE", 15), int(_env(f"{prefix}_RAY_NODES", nodes // 2 if id == "ci" else nodes)),
                int(_env(f"{prefix}_RAY_PODS", pods // 2 if id == "ci" else pods)))


# CI runs the small case; `./dev slow` (-m slow) runs the issue's sizes through the same code
@pytest.fixture(scope="module", params=[
    pytest.param(_size("SHARDLET_FAULTS", "ci", 200, 500, 200, 60), id="ci"),
    pytest.param(_size("SHARDLET_FAULTS_FULL", "full", 1000, 5000, 1000, 180), id="full", marks=pytest.mark.slow)])
def size(request: pytest.FixtureRequest) -> Size:
    out: Size = request.param
    return out


# -- plumbing ----------------------------------------------------------------------------------
class Api:
    """Plain synchronous requests as the cluster admin: cheap enough to poll every second."""

    def __init__(self, c: Cluster) -> None:
        self.base = c.server()
        self.ctx = ssl.create_default_context(cafile=str(c.pki.ca_cert))
        self.ctx.load_cert_chain(str(c.pki.admin_cert), str(c.pki.admin_key))

    def call(self, method: str, path: str, body: Any = None, timeout: float = 10,
             params: dict[str, str] | None = None) -> Any:
        url = self.base + path + (("?" + urllib.parse.urlencode(params)) if params else "")
        data = orjson.dumps(body) if body is not None else None
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(req, timeout=timeout, context=self.ctx) as r:
                    return orjson.loads(r.read())
            except urllib.error.HTTPError as e:
                # a cache re-initializing after a compaction or restart answers 429 for a moment
                if e.code not in (429, 503) or time.monotonic() > deadline:
                    raise
                time.sleep(float(e.headers.get("Retry-After") or 1))

    def get(self, path: str, **params: str) -> Any:
        return self.call("GET", path, params=params)

    def items(self, path: str, **params: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self.get(path, **params)["items"]
        return out

    def up(self) -> bool:
        try:
            with urllib.request.urlopen(self.base + "/readyz", timeout=3, context=self.ctx) as r:
                return bool(r.status == 200)
        except (OSError, ValueError):
            return False


def _ts(s: str | None) -> float:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() if s else 0.0


class Run(ShardletProcess):
    """`shardlet run` as a user starts it (own session, JSON log), with the log to read back
    (events, wait_for and tail are ShardletProcess's)."""

    def __init__(self, kubeconfig: Path, log_path: Path, name: str, *args: str, env: dict[str, str] | None = None,
                 log_level: str = "info") -> None:
        self.name = name
        self.log_path = log_path
        self.metrics_port = 0
        self.logf = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [*SHARDLET, "--log-format", "json", "--log-level", log_level, "run", "--kubeconfig", str(kubeconfig),
             "--name", name, "--metrics-port", "0", *args],
            stdout=self.logf, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "RAY_DEDUP_LOGS": "0", "RAY_USAGE_STATS_ENABLED": "0",
                 **(env or {})})

    def url(self) -> str:
        return str(orjson.loads(run_file(self.name).read_bytes())["url"])

    def status(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(self.url() + "/status", timeout=10) as r:
                out: dict[str, Any] = orjson.loads(r.read())
                return out
        except (OSError, ValueError, KeyError):
            return None

    def metrics(self) -> list[tuple[str, dict[str, str], float]]:
        if not self.metrics_port:
            self.metrics_port = int(self.wait_for("metrics_serving", 10)["port"])
        port = self.metrics_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            return prom_series(r.read().decode())

    def terminate(self) -> tuple[int | None, float]:
        """SIGTERM; (exit code or None if still running after SHUTDOWN_S, seconds it took)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc: int | None = self.proc.wait(SHUTDOWN_S)
        except subprocess.TimeoutExpired:
            rc = None
        return rc, time.monotonic() - t0

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
            try:   # killed: its endpoint could not remove its run file
                if orjson.loads(run_file(self.name).read_bytes()).get("pid") == self.proc.pid:
                    run_file(self.name).unlink()
            except (OSError, ValueError):
                pass
        self.logf.close()
        if os.environ.get("CI"):
            print(f"--- {self.name} log tail ({self.log_path})\n{self.tail()}")


# -- processes and sockets ---------------------------------------------------------------------
def _procs() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, start ticks, cmdline) for every live process."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        f = stat[stat.rindex(")") + 2:].split()
        if f[0] in ("Z", "X"):
            continue
        out[int(d)] = (int(f[1]), int(f[19]), cmd)
    return out


def _family(root: int | None, mention: str) -> dict[int, tuple[int, str]]:
    """Every descendant of `root` and every process whose command line mentions `mention`."""
    procs = _procs()
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        kids.setdefault(ppid, []).append(pid)
    out: dict[int, tuple[int, str]] = {}
    todo = [root] if root is not None else []
    while todo:
        for k in kids.get(todo.pop(), []):
            out[k] = (procs[k][1], procs[k][2])
            todo.append(k)
    me = {os.getpid(), os.getppid()}
    for pid, (_, start, cmd) in procs.items():
        if mention in cmd and pid not in me and pid != root:
            out[pid] = (start, cmd)
    return out


def _still_running(family: dict[int, tuple[int, str]]) -> list[str]:
    procs = _procs()
    return [f"{pid} {cmd[:100]}" for pid, (start, cmd) in family.items() if procs.get(pid, (0, -1, ""))[1] == start]


def _listeners(pids: set[int]) -> list[tuple[int, str, int]]:
    """(pid, local address, port) of every listening TCP socket of these processes."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    res = []
    for ln in out.splitlines():
        parts = ln.split()
        local = parts[3]
        addr, _, port = local.rpartition(":")
        for pid in map(int, re.findall(r"pid=(\d+),", ln)):
            if pid in pids:
                res.append((pid, addr, int(port)))
    return res


# -- watching the cluster ----------------------------------------------------------------------
class FaultMonitor:
    """Polls a node group and its leases through every fault (a failed poll is an outage, not an
    error): every NotReady of a node once seen Ready, and every gap between two renewals of a lease."""

    def __init__(self, api: Api, group: str, interval: float = 1.5) -> None:
        self.api = api
        self.selector = f"{GROUP}={group},!{PROBE}"
        self.interval = interval
        self.seen_ready: set[str] = set()
        self.not_ready: list[tuple[float, str, str]] = []       # (wall time, node, reason)
        self.expect_not_ready = False                           # the long outage: recorded apart
        self.tolerated: list[tuple[float, str, str]] = []
        self.renew: dict[str, float] = {}                       # lease -> last renewTime seen
        self.holder: dict[str, str | None] = {}
        self.gaps: list[tuple[float, str, float]] = []          # (renewTime, lease, seconds since the last)
        self.polls = 0
        self.failed = 0
        self.last_poll = 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except (OSError, ValueError, KeyError):
                self.failed += 1
            self._stop.wait(self.interval)

    def poll_once(self) -> None:
        nodes = self.api.items("/api/v1/nodes", labelSelector=self.selector)
        leases = self.api.items(f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases")
        now = time.time()
        names = set()
        for n in nodes:
            name = n["metadata"]["name"]
            names.add(name)
            if node_ready(n):
                self.seen_ready.add(name)
            elif name in self.seen_ready:
                cond: dict[str, Any] = next((c for c in n["status"].get("conditions", []) if c["type"] == "Ready"), {})
                rec = (now, name, f"{cond.get('status')} {cond.get('reason')}")
                (self.tolerated if self.expect_not_ready else self.not_ready).append(rec)
        for ls in leases:
            name = ls["metadata"]["name"]
            if name not in names:
                continue
            spec = ls.get("spec") or {}
            rt = _ts(spec.get("renewTime"))
            prev = self.renew.get(name)
            if prev is not None and rt > prev:
                self.gaps.append((rt, name, rt - prev))
            if prev is None or rt > prev:
                self.renew[name] = rt
            self.holder[name] = spec.get("holderIdentity")
        self.polls += 1
        self.last_poll = now

    def max_gap(self, since: float) -> tuple[float, str]:
        """The longest time between two renewals of one lease among renewals made after `since`."""
        gaps = [(g, n) for t, n, g in self.gaps if t >= since]
        return max(gaps, default=(0.0, ""))

    def renewed_after(self, t: float) -> bool:
        return bool(self.seen_ready) and all(self.renew.get(n, 0) > t for n in self.seen_ready)

    def assert_all_ready(self) -> None:
        assert not self.not_ready, f"nodes went NotReady: {self.not_ready[:5]}"

    def hold(self, until: float) -> None:
        """Fail at the first NotReady; return at wall time `until` with none, the monitor polling."""
        polls0 = self.polls

        def held() -> bool:
            self.assert_all_ready()
            return time.time() >= until
        poll(held, max(0.0, until - time.time()) + 30, 1, "all nodes Ready through the hold")
        span = max(0.0, until - time.time())
        assert self.polls > polls0 or span == 0, "the monitor stopped polling"
        assert time.time() - self.last_poll < 10 * self.interval + 10, "the monitor stopped polling"

    def stop(self) -> None:
        self._stop.set()
        self._t.join(15)


def _pods(api: Api, ns: str) -> dict[str, tuple[str, str, str, bool]]:
    """name -> (uid, phase, podIP, deleting)."""
    return {p["metadata"]["name"]: (p["metadata"]["uid"], p["status"].get("phase", ""), p["status"].get("podIP", ""),
                                    bool(p["metadata"].get("deletionTimestamp")))
            for p in api.items(f"/api/v1/namespaces/{ns}/pods")}


def _all_running(pods: dict[str, tuple[str, str, str, bool]], n: int) -> bool:
    return len(pods) == n and all(v[1] == "Running" and v[2] and not v[3] for v in pods.values())


def _assert_pods_intact(api: Api, ns: str, before: dict[str, tuple[str, str, str, bool]]) -> None:
    after = _pods(api, ns)
    lost, new = before.keys() - after.keys(), after.keys() - before.keys()
    assert not lost and not new, f"pods lost {sorted(lost)[:5]} / added {sorted(new)[:5]}"
    changed = [(k, before[k], after[k]) for k in before if before[k] != after[k]]
    assert not changed, f"pods changed uid, phase or IP, or are terminating: {changed[:5]}"


async def _create_nodes(kube: Kube, names: list[tuple[str, int]], labels: dict[str, str]) -> None:
    params = {**NODE_PARAMS, "labels": labels}
    sem = asyncio.Semaphore(64)

    async def one(name: str, index: int) -> None:
        async with sem:
            await kube.retrying(lambda: kube.create("/api/v1/nodes", node_manifest(name, index, params)),
                                what=f"create node {name}")
    await asyncio.gather(*(one(n, i) for n, i in names))


def make_nodes(c: Cluster, api: Api, prefix: str, count: int, offset: int, group: str,
               extra: dict[str, str] | None = None, timeout: float = 300) -> list[str]:
    """Fake nodes of a group (kwokctl's template, podCIDRs from `offset` on), waited Ready."""
    names = [(f"{prefix}-{i:06d}", offset + i) for i in range(count)]

    async def go() -> None:
        kube = Kube.from_kubeconfig(str(c.kubeconfig), max_connections=80)
        try:
            await _create_nodes(kube, names, {GROUP: group, **(extra or {})})
        finally:
            await kube.close()
    asyncio.run(go())
    want = {n for n, _ in names}

    def ready() -> int:
        return sum(1 for n in api.items("/api/v1/nodes", labelSelector=f"{GROUP}={group}")
                   if n["metadata"]["name"] in want and node_ready(n))
    poll(lambda: ready() == count, timeout, 1, f"{count} {prefix} nodes Ready")
    return [n for n, _ in names]


def make_deployment(k: Kubectl, ns: str, group: str, replicas: int) -> None:
    k.run("create", "namespace", ns)
    spec = {**pod_spec(POD_PARAMS), "nodeSelector": {GROUP: group}}
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "p", "namespace": ns},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "p"}},
                    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": "100%"}},
                    "template": {"metadata": {"labels": {"app": "p"}}, "spec": spec}}}
    k.apply(yaml.safe_dump(dep))


def sa_kubeconfig(c: Cluster, k: Kubectl, path: Path) -> Path:
    """A kubeconfig with only a token of a ServiceAccount of its own (the APF FlowSchema's subject)."""
    k.run("create", "serviceaccount", SA_NAME, "-n", SA_NS)
    k.run("create", "clusterrolebinding", SA_NAME, "--clusterrole=cluster-admin", f"--serviceaccount={SA_NS}:{SA_NAME}")
    token = k.run("create", "token", SA_NAME, "-n", SA_NS, "--duration=12h").stdout.strip()
    cfg = yaml.safe_load(c.kubeconfig.read_text())
    cfg["users"] = [{"name": SA_NAME, "user": {"token": token}}]
    cfg["contexts"][0]["context"]["user"] = SA_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(yaml.safe_dump(cfg))
    return path


# -- the single-process run and its faults -----------------------------------------------------
@dataclass
class Env:
    c: Cluster
    api: Api
    k: Kubectl
    size: Size
    work: Path
    faults: list[tuple[str, float, float]] = field(default_factory=list)   # (what, start, end), wall times
    probes: int = 0


@pytest.fixture(scope="module")
def env(bin_dir: Path, size: Size, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    c = Cluster(f"e2e-faults-{os.getpid()}")
    c.up(Options(kube_api_qps=300, kube_api_burst=600, node_monitor_grace_period=f"{GRACE:.0f}s"), timeout=180)
    try:
        from shardlet.runner import install_crds

        install_crds(c)
        work = tmp_path_factory.mktemp("faults")
        yield Env(c, Api(c), Kubectl(c.kubeconfig), size, work)
    finally:
        if c.log_dir.exists():   # kept for a post-mortem: the cluster's directory goes with it
            shutil.copytree(c.log_dir, work / "cluster-logs", dirs_exist_ok=True)
        c.down()


@pytest.fixture(scope="module")
def main_run(env: Env) -> Iterator[Run]:
    """One shard in one process, as the ServiceAccount, serving group "a": nodes and a Deployment."""
    kc = sa_kubeconfig(env.c, env.k, env.work / "sa.kubeconfig")
    run = Run(kc, env.work / "main.log", f"{env.c.name}-a", "--node-label-selector", f"{GROUP}=a",
              log_level="debug")
    try:
        run.wait_for("shard_ready", 120)
        make_nodes(env.c, env.api, "node", env.size.nodes, 0, "a")
        make_deployment(env.k, "faults-a", "a", env.size.pods)
        poll(lambda: _all_running(_pods(env.api, "faults-a"), env.size.pods), 300, 2, f"{env.size.pods} pods Running")
        for ns in ("probe", "apf"):
            env.k.run("create", "namespace", ns)
            poll(lambda ns=ns: env.k.run("get", "serviceaccount", "default", "-n", ns, check=False).returncode == 0,
                 60, 0.5, f"default ServiceAccount in {ns}")
        yield run
    finally:
        run.close()


@pytest.fixture(scope="module")
def monitor(env: Env, main_run: Run) -> Iterator[FaultMonitor]:
    m = FaultMonitor(env.api, "a")
    try:
        poll(lambda: len(m.seen_ready) == env.size.nodes and len(m.renew) == env.size.nodes, 60, 1,
             "monitor sees every node Ready and its lease")
        yield m
    finally:
        m.stop()


def _hold_down(c: Cluster, component: str, until: float) -> None:
    """Keep a stopped component down until wall time `until` (the fault's length), checking it stays down."""
    def down_long_enough() -> bool:
        assert not alive(c.state().procs[component]), f"{component} came back by itself"
        return time.time() >= until
    poll(down_long_enough, max(0.0, until - time.time()) + 10, 0.5, f"{component} outage")


def assert_serving(env: Env, run: Run, tag: str) -> None:
    """The watches resumed: a node created now is initialized, pods on it go Running with an IP,
    and deleted pods go away (nothing stuck Terminating)."""
    env.probes += 1
    name = f"probe-{tag}"
    make_nodes(env.c, env.api, name, 1, 90000 + 10 * env.probes, "a", {PROBE: "true"}, timeout=60)
    node = f"{name}-000000"
    # bound by name: this checks the shard's watches, not kube-scheduler's (whose informers back
    # off on their own after an outage)
    spec = {**pod_spec(POD_PARAMS), "nodeName": node}
    pods = [f"{tag}-{i}" for i in range(3)]
    for p in pods:
        env.api.call("POST", "/api/v1/namespaces/probe/pods", {"metadata": {"name": p}, "spec": spec})
    poll(lambda: _all_running({k: v for k, v in _pods(env.api, "probe").items() if k in pods}, len(pods)), 60, 1,
         f"probe pods on {node} Running")
    for p in pods:
        env.api.call("DELETE", f"/api/v1/namespaces/probe/pods/{p}")
    poll(lambda: not (set(_pods(env.api, "probe")) & set(pods)), 60, 1, "deleted probe pods gone")
    env.api.call("DELETE", f"/api/v1/nodes/{node}")
    assert run.proc.poll() is None, run.tail()


def assert_leases_renewed(env: Env, m: FaultMonitor, fault_start: float, back: float) -> None:
    """Every lease renewed after the fault ended, and no two renewals further apart than the duration."""
    poll(lambda: m.renewed_after(back), LEASE_DURATION, 1, "every lease renewed after the fault")
    gap, lease = m.max_gap(fault_start)
    assert gap < LEASE_DURATION, f"lease {lease} went {gap:.1f}s without renewal (duration {LEASE_DURATION:.0f}s)"
    m.assert_all_ready()
    print(f"longest renewal gap across the fault: {gap:.1f}s ({lease})")


def relists(run: Run) -> dict[str, float]:
    s = run.metrics()
    return {r: prom_sum(s, "shardlet_relists_total", resource=r) for r in ("nodes", "pods")}


def expired(run: Run, since: float) -> dict[str, int]:
    """watch_expired (410 Gone -> relist) events per watch after wall time `since`."""
    out: dict[str, int] = {}
    for e in run.events():
        if e.get("event") == "watch_expired" and _ts(e.get("timestamp")) >= since:
            out[e["watch"]] = out.get(e["watch"], 0) + 1
    return out


def _watch_log(run: Run, since: float) -> list[str]:
    """What the nodes and pods watches logged after `since`, one line each (for a failure message)."""
    return [f"{e.get('timestamp')} {e['event']} {e.get('watch')} {e.get('status', '')}{e.get('error', '')}"
            for e in run.events()
            if e.get("watch") in ("nodes", "pods") and _ts(e.get("timestamp")) >= since]


def test_apiserver_restart_mid_run(env: Env, main_run: Run, monitor: FaultMonitor) -> None:
    """A restart: SIGTERM, SIGKILL 5 s later if still draining (it waits up to 60 s for watches),
    start again. Kept that short on purpose: kube-controller-manager's own informers back off up
    to 2x per failed retry (client-go), so after a ~20 s outage they can stay blind past the
    node-monitor-grace-period and mark a node Unknown whose lease was renewed all along. That
    is the control plane's doing; the outage past the grace period is the slow test below."""
    before = _pods(env.api, "faults-a")
    r0, t0 = relists(main_run), time.time()
    env.c.stop_component("kube-apiserver", grace=5)
    assert not env.api.up()
    env.c.start_component("kube-apiserver")
    back = time.time()
    env.faults.append(("kube-apiserver restart", t0, back))
    print(f"kube-apiserver down {back - t0:.1f}s")
    assert_leases_renewed(env, monitor, t0, back)
    # the new apiserver's watch cache starts past our resourceVersion: one 410 and one relist each
    poll(lambda: all(v > r0[k] for k, v in relists(main_run).items()), 30, 1, "nodes and pods relisted")
    assert_serving(env, main_run, "apiserver")
    assert relists(main_run) == {k: v + 1 for k, v in r0.items()}, "more than one relist per watch"
    _assert_pods_intact(env.api, "faults-a", before)
    monitor.assert_all_ready()


def test_etcd_restart_mid_run(env: Env, main_run: Run, monitor: FaultMonitor) -> None:
    before = _pods(env.api, "faults-a")
    r0, t0 = relists(main_run), time.time()
    env.c.stop_component("etcd", grace=5)
    _hold_down(env.c, "etcd", t0 + env.size.outage)
    env.c.start_component("etcd")
    poll(env.api.up, 60, 0.5, "kube-apiserver ready again on the restarted etcd")
    back = time.time()
    env.faults.append(("etcd restart", t0, back))
    print(f"etcd down {back - t0:.1f}s")
    assert_leases_renewed(env, monitor, t0, back)
    assert_serving(env, main_run, "etcd")
    # the apiserver's caches ride out an etcd restart; a shard watch relists at most once
    assert all(v <= r0[k] + 1 for k, v in relists(main_run).items()), (r0, relists(main_run))
    _assert_pods_intact(env.api, "faults-a", before)
    monitor.assert_all_ready()


def _etcd(env: Env, path: str, body: dict[str, Any]) -> dict[str, Any]:
    url = f"http://127.0.0.1:{env.c.state().ports['etcd']}{path}"
    req = urllib.request.Request(url, data=orjson.dumps(body), method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            out: dict[str, Any] = orjson.loads(r.read())
            return out
    except urllib.error.HTTPError as e:
        err: dict[str, Any] = orjson.loads(e.read())
        return err


async def _each(c: Cluster, names: list[str], call: Callable[[Kube, str], Awaitable[Any]]) -> None:
    """call(kube, name) for every name, 64 in flight, on a client of its own."""
    kube = Kube.from_kubeconfig(str(c.kubeconfig), max_connections=64)
    sem = asyncio.Semaphore(64)

    async def one(n: str) -> None:
        async with sem:
            await call(kube, n)
    try:
        await asyncio.gather(*(one(n) for n in names))
    finally:
        await kube.close()


async def _churn(c: Cluster, ns: str, names: list[str], value: str) -> None:
    await _each(c, names, lambda kube, n: kube.patch(f"/api/v1/namespaces/{ns}/pods/{n}",
                                                     {"metadata": {"annotations": {"churn": value}}}))


def test_etcd_compaction_relists_each_watch_once_per_410(env: Env, main_run: Run, monitor: FaultMonitor) -> None:
    """Compact etcd past what the shard has seen, then restart the apiserver so its watch cache
    starts after the compaction. Each 410 Gone must cost exactly one relist, and there are at most
    two per watch: the compaction itself can make the apiserver's watch cache re-initialize (when
    its own etcd watch was behind the compacted revision: 429 "storage is (re)initializing", then
    410 for our watch), and the restart's new cache starts past our resourceVersion. Not every
    watch has to get a 410: one whose first request after the restart is refused (403 until the
    new apiserver's RBAC caches sync) may be served from a newer revision without one, losing
    nothing. What must hold: some watch relisted, none without a 410, none more than twice."""
    before = _pods(env.api, "faults-a")
    asyncio.run(_churn(env.c, "faults-a", sorted(before)[:500], "1"))   # events the shard has seen ...
    # counted from the compaction on: both faults' 410s and relists
    r0, t0 = relists(main_run), time.time()
    rev = int(_etcd(env, "/v3/kv/range", {"key": base64.b64encode(b"/registry/").decode()})["header"]["revision"])
    res = _etcd(env, "/v3/kv/compaction", {"revision": rev, "physical": True})   # ... compacted away
    assert "error" not in res and "code" not in res, res
    old = _etcd(env, "/v3/kv/range", {"key": base64.b64encode(b"/registry/").decode(), "revision": rev - 1})
    assert "compacted" in str(old.get("message") or old.get("error")), old
    before = _pods(env.api, "faults-a")
    env.c.restart("kube-apiserver", grace=5)
    back = time.time()
    env.faults.append(("etcd compaction + watch cache restart", t0, back))
    poll(lambda: sum(relists(main_run).values()) > sum(r0.values()), 30, 1, "a watch relisted")
    assert_leases_renewed(env, monitor, t0, back)
    assert_serving(env, main_run, "compaction")   # time for a storm to show, if there were one
    more = {k: int(v - r0[k]) for k, v in relists(main_run).items()}
    ex = expired(main_run, t0)
    log = _watch_log(main_run, t0 - 30)
    assert all(ex.get(k, 0) == n for k, n in more.items()), f"relists {more} not one per 410 {ex}; log: {log}"
    assert all(n <= 2 for n in [*more.values(), *ex.values()]), f"relists {more}, 410s {ex}; log: {log}"
    print(f"compaction: relists {more}, 410s {ex}")
    _assert_pods_intact(env.api, "faults-a", before)
    monitor.assert_all_ready()


SQUEEZE = """
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: PriorityLevelConfiguration
metadata: {name: shardlet-squeeze}
spec:
  type: Limited
  limited:
    nominalConcurrencyShares: 1
    lendablePercent: 0
    borrowingLimitPercent: 0
    limitResponse:
      type: Queue
      queuing: {queues: 1, handSize: 1, queueLengthLimit: 1}
---
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: FlowSchema
metadata: {name: shardlet-squeeze}
spec:
  priorityLevelConfiguration: {name: shardlet-squeeze}
  matchingPrecedence: 100
  distinguisherMethod: {type: ByUser}
  rules:
  - subjects:
    - kind: ServiceAccount
      serviceAccount: {name: SA_NAME, namespace: SA_NS}
    resourceRules:
    - {verbs: ["*"], apiGroups: ["*"], resources: ["*"], namespaces: ["*"], clusterScope: true}
    nonResourceRules:
    - {verbs: ["*"], nonResourceURLs: ["*"]}
""".replace("SA_NAME", SA_NAME).replace("SA_NS", SA_NS)


def _seats(env: Env, level: str) -> float | None:
    """The apiserver's current execution seats of a priority level (None until it is in effect)."""
    text = env.k.run("get", "--raw", "/metrics").stdout
    for name, labels, v in prom_series(text):
        if name == "apiserver_flowcontrol_current_limit_seats" and labels.get("priority_level") == level:
            return v
    return None


async def _create_pods(c: Cluster, ns: str, names: list[str], spec: dict[str, Any]) -> None:
    await _each(c, names, lambda kube, n: kube.retrying(
        lambda: kube.create(f"/api/v1/namespaces/{ns}/pods", {"metadata": {"name": n}, "spec": spec}),
        what=f"create pod {n}"))


def test_apf_squeeze_429s_retried_and_caught_up(env: Env, main_run: Run, monitor: FaultMonitor) -> None:
    before = _pods(env.api, "faults-a")
    throttled0 = prom_sum(main_run.metrics(), "shardlet_apiserver_requests_total", code="429")

    def throttled() -> float:
        return prom_sum(main_run.metrics(), "shardlet_apiserver_requests_total", code="429") - throttled0
    t0 = time.time()
    env.k.apply(SQUEEZE)
    try:
        seats = poll(lambda: (x := _seats(env, "shardlet-squeeze")) is not None and (x,), 30, 0.5,
                     "the squeezed priority level in effect")[0]
        fs = poll(lambda: (f := env.k.json("get", "flowschema", "shardlet-squeeze")).get("status", {}).get("conditions") and f,
                  30, 0.5, "FlowSchema status")
        assert any(c["type"] == "Dangling" and c["status"] == "False" for c in fs["status"]["conditions"]), fs["status"]
        # a burst of new pods: every one is a few writes of the shard, far more than its seats
        burst = [f"b-{i}" for i in range(env.size.burst)]
        asyncio.run(_create_pods(env.c, "apf", burst, {**pod_spec(POD_PARAMS), "nodeSelector": {GROUP: "a"}}))
        poll(lambda: throttled() > 0, 60, 0.5, "the shard answered 429 by APF")
        # stay squeezed a while: the shard must neither crash nor spin
        _hold_squeezed(main_run, time.time() + 15)
        # and until a stage write has met a 429 and been retried: the first 429s may all be lease
        # renewals (they back off on their own schedule), and on a loaded box the scheduler can bind
        # the burst late, so the fixed hold alone can end before any pod write was tried
        poll(lambda: _retries_429(main_run, t0), 120, 1, "a stage write retried after a 429")
        n429 = throttled()
        rate = n429 / (time.time() - t0)
        running_at_lift = sum(1 for v in _pods(env.api, "apf").values() if v[1] == "Running")
    finally:
        env.k.run("delete", "flowschema", "shardlet-squeeze", check=False)
        env.k.run("delete", "prioritylevelconfiguration", "shardlet-squeeze", check=False)
    lifted = time.time()
    env.faults.append(("APF squeeze", t0, lifted))
    print(f"APF: {seats:.0f} seats, {n429:.0f} 429s ({rate:.1f}/s), "
          f"{running_at_lift}/{env.size.burst} burst pods Running at the lift")
    # the shard catches up: every burst pod Running, every lease renewed
    poll(lambda: _all_running(_pods(env.api, "apf"), env.size.burst), 120, 1, f"{env.size.burst} burst pods Running")
    assert_leases_renewed(env, monitor, t0, lifted)
    # retried with backoff, not in a hot loop: a lease retries after 2-2.5 s at most, a stage write after
    # Retry-After (1 s) or more, so 429s per second stay under one per object with a write to make
    # (a loop without backoff makes thousands a second)
    bound = env.size.nodes / 2 + env.size.burst + 64
    assert rate < bound, f"{rate:.0f} 429s per second (bound {bound:.0f}): retries are not backing off"
    retries = _retries_429(main_run, t0)
    assert retries, "no 429 was retried"
    delays = [float(e["delay"]) for e in retries]
    assert min(delays) >= 1.0, f"a 429 retried after {min(delays)}s (Retry-After is at least 1 s)"
    if len(delays) >= 5:
        assert len(set(delays)) > 1, f"no jitter in the retry delays: {delays[:10]}"
    by_what: dict[str, list[int]] = {}
    for e in retries:
        by_what.setdefault(e["what"], []).append(int(e["attempt"]))
    # each retry loop counts 1, 2, 3, ... (a new loop starts at 1 again)
    assert all(b in (1, a + 1) for seq in by_what.values() for a, b in zip([0, *seq], seq, strict=False)), by_what
    _assert_pods_intact(env.api, "faults-a", before)
    assert main_run.proc.poll() is None
    env.k.run("delete", "namespace", "apf", "--wait=false")


def _retries_429(run: Run, since: float) -> list[dict[str, Any]]:
    """The shard's `retry` events for a 429 since `since` (Kube.retrying logs one per retry)."""
    return [e for e in run.events() if e.get("event") == "retry" and e.get("error") == "429"
            and _ts(e.get("timestamp")) >= since]


def _hold_squeezed(run: Run, until: float) -> None:
    def up() -> bool:
        assert run.proc.poll() is None, f"shardlet exited while throttled: {run.tail()}"
        st = run.status()
        assert st is not None and st["shards"][0]["nodes"] > 0, "the shard stopped answering while throttled"
        return time.time() >= until
    poll(up, max(0.0, until - time.time()) + 30, 1, "squeeze held")


def test_a_watch_killed_by_an_injected_exception_restarts_shows_in_status_and_logs_whole(
        env: Env, main_run: Run, monitor: FaultMonitor) -> None:
    """The fire drill (POST /debug/fail-task) ends the node and pod watches as a bug would: each
    restarts (counted in status, its error named), the JSON log line carries the exception's
    type and traceback, and the watches serve again (nothing NotReady: the test below)."""
    st0 = main_run.status()
    assert st0 is not None
    restarts0 = st0["shards"][0]["task_restarts"].get("watch", 0)
    failed = []
    for name in ("nodes", "pods"):
        req = urllib.request.Request(f"{main_run.url()}/debug/fail-task?name={name}", method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            failed += orjson.loads(r.read())["failed"]
    assert "nodes" in failed and "pods" in failed, failed
    st = poll(lambda: (s := main_run.status()) and s["shards"][0]["task_restarts"].get("watch", 0) >= restarts0 + 2
              and s, 30, 0.5, "the watches' restarts in status")
    errors = st["shards"][0]["task_errors"]
    assert errors["nodes"].startswith("InjectedFault: ") and errors["pods"].startswith("InjectedFault: "), errors
    lines = [e for e in main_run.events() if e.get("event") == "task_failed" and e.get("task") in ("nodes", "pods")]
    assert lines, main_run.tail()
    exc = lines[-1]["exception"][0]
    assert exc["exc_type"] == "InjectedFault" and "injected" in exc["exc_value"] and exc["frames"], lines[-1]
    assert_serving(env, main_run, "drill")


def test_no_node_not_ready_through_the_faults(env: Env, main_run: Run, monitor: FaultMonitor) -> None:
    """Hold until the last fault is a grace period and a CI hold behind us: NotReady shows late."""
    assert env.faults, "no fault ran before the hold"
    last = max(end for _, _, end in env.faults)
    monitor.hold(max(last + GRACE + 10, last + env.size.hold))
    gap, lease = monitor.max_gap(0)
    assert gap < LEASE_DURATION, (gap, lease)
    print(f"faults: {[(w, round(e - s, 1)) for w, s, e in env.faults]}; longest renewal gap {gap:.1f}s; "
          f"{monitor.polls} polls, {monitor.failed} during outages")


def test_long_apiserver_outage_every_node_ready_within_30s(env: Env, main_run: Run, monitor: FaultMonitor) -> None:
    if env.size.id == "ci":
        pytest.skip("an outage past the grace period runs under -m slow")
    before = _pods(env.api, "faults-a")
    t0 = time.time()
    monitor.expect_not_ready = True
    env.c.stop_component("kube-apiserver", grace=5)
    _hold_down(env.c, "kube-apiserver", t0 + GRACE + 20)
    env.c.start_component("kube-apiserver")
    back = time.time()
    env.faults.append(("long apiserver outage", t0, back))

    def all_ready() -> bool:
        nodes = env.api.items("/api/v1/nodes", labelSelector=f"{GROUP}=a,!{PROBE}")
        return len(nodes) == env.size.nodes and all(node_ready(n) for n in nodes)
    poll(all_ready, 30 - (time.time() - back), 0.5, "every node Ready within 30 s of the apiserver's return")
    print(f"apiserver down {back - t0:.0f}s; all Ready {time.time() - back:.1f}s after its return; "
          f"NotReady seen meanwhile: {len(monitor.tolerated)}")
    assert_serving(env, main_run, "long")
    after = _pods(env.api, "faults-a")
    assert set(after) == set(before) and all(after[k][2] == before[k][2] for k in before), "pods lost or re-IP'd"
    assert all(v[1] == "Running" and not v[3] for v in after.values())


def _assert_loopback(pids: set[int], ports: set[int] | None = None) -> None:
    socks = [s for s in _listeners(pids) if ports is None or s[2] in ports]
    assert socks, f"no listening socket found for {pids} {ports}"
    assert all(a in ("127.0.0.1", "[::1]") for _, a, _ in socks), f"listening beyond loopback: {socks}"
    if ports is not None:
        assert {p for _, _, p in socks} == ports, (socks, ports)


def test_sigterm_single_process_leaves_leases_to_expire(env: Env, main_run: Run, monitor: FaultMonitor) -> None:
    monitor.stop()   # its nodes lose their kubelet now
    pid = main_run.proc.pid
    # security: the metrics and the status endpoint listen on loopback only
    port = main_run.wait_for("metrics_serving", 10)["port"]
    ep = int(urllib.parse.urlparse(main_run.url()).port or 0)
    _assert_loopback({pid})
    _assert_loopback({pid}, {port, ep})
    family = _family(pid, main_run.name)
    holder = main_run.wait_for("leases_primed", 5)["holder"]
    rc, took = main_run.terminate()
    assert rc == 0, f"exit {rc} after {took:.1f}s: {main_run.tail()}"
    print(f"single process: exit 0 {took:.2f}s after SIGTERM")
    poll(lambda: not _still_running(family), 5, 0.2, "no process of the run left")
    assert not _family(None, main_run.name), _family(None, main_run.name)
    assert not run_file(main_run.name).exists(), "the status endpoint's run file was left behind"
    assert any(e.get("event") == "shard_stopping" for e in main_run.events())
    # without --release-leases-on-exit the leases keep their holder until they expire
    leases = {ls["metadata"]["name"]: ls["spec"] for ls in env.api.items(f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases")}
    mine = [n for n in leases if n.startswith("node-")]
    assert len(mine) == env.size.nodes
    assert all(leases[n].get("holderIdentity") == holder for n in mine), \
        {n: leases[n].get("holderIdentity") for n in mine if leases[n].get("holderIdentity") != holder}
    # group "a" has no kubelet now: take it away so that later tests run on a calm cluster
    env.k.run("delete", "namespace", "faults-a", "--wait=false")
    env.k.run("delete", "nodes", "-l", f"{GROUP}=a", "--wait=false")


def test_sigterm_single_process_release_leases_on_exit(env: Env) -> None:
    run = Run(env.c.kubeconfig, env.work / "release.log", f"{env.c.name}-c", "--node-label-selector", f"{GROUP}=c",
              "--release-leases-on-exit")
    try:
        run.wait_for("shard_ready", 60)
        holder = run.wait_for("leases_primed", 5)["holder"]
        names = make_nodes(env.c, env.api, "rel", 20, 70000, "c")
        lease_path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases"
        poll(lambda: sum(1 for ls in env.api.items(lease_path) if ls["metadata"]["name"] in names
                         and ls["spec"].get("holderIdentity") == holder) == len(names), 30, 0.5, "leases held")
        family = _family(run.proc.pid, run.name)
        rc, took = run.terminate()
        assert rc == 0, f"exit {rc} after {took:.1f}s: {run.tail()}"
        poll(lambda: not _still_running(family), 5, 0.2, "no process of the run left")
        held = {ls["metadata"]["name"]: ls["spec"].get("holderIdentity") for ls in env.api.items(lease_path)
                if ls["metadata"]["name"] in names}
        assert len(held) == len(names) and not any(held.values()), f"holderIdentity not cleared: {held}"
        print(f"single process, --release-leases-on-exit: exit 0 {took:.2f}s after SIGTERM, {len(names)} leases released")
    finally:
        run.close()
        env.k.run("delete", "nodes", "-l", f"{GROUP}=c", "--wait=false")


# -- Ray shards ------------------------------------------------------------------------------
class RayRun(Run):
    """`shardlet run --shards N` with a private TMPDIR, so that the files its shards write are ours to see."""

    def __init__(self, env: Env, name: str, *args: str) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="slf-", dir="/tmp"))   # short: Ray's socket paths
        self.kubeconfig = env.c.kubeconfig
        super().__init__(env.c.kubeconfig, env.work / f"{name}.log", name, *args, *RAY_RBAC,
                         env={"TMPDIR": str(self.tmp)})

    def ready(self, shards: int, timeout: float = 240) -> dict[str, Any]:
        st: dict[str, Any] = poll(lambda: (s := self.status()) and len(s["shards"]) == shards
                                  and all(x.get("started") for x in s["shards"]) and s, timeout, 1, f"{shards} shards up")
        return st

    def key_files(self) -> list[str]:
        """Files under the run's TMPDIR (Ray's session: logs, spilled objects, the shards' files)
        that hold the kubeconfig's private key: none, since shards get a token instead."""
        return files_holding([self.tmp], key_markers(self.kubeconfig))

    def close(self) -> None:
        super().close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _sigterm_ray(run: RayRun) -> tuple[float, list[str]]:
    """SIGTERM the runner of a Ray run: exit 0, and every process it started gone."""
    st = run.status()
    assert st is not None
    pid = run.proc.pid
    family = _family(pid, run.name)
    family.update(_family(None, str(run.tmp)))   # Ray's daemons live in its TMPDIR
    shard_pids = {s["pid"] for s in st["shards"]}
    assert shard_pids <= set(family), ("shard workers not among the run's processes", shard_pids, set(family))
    rc, took = run.terminate()
    assert rc == 0, f"exit {rc} after {took:.1f}s: {run.tail()}"
    poll(lambda: not _still_running(family), SHUTDOWN_S, 0.25, "no process of the run left")
    assert not _family(None, run.name) and not _family(None, str(run.tmp)), "a process of the run appeared after it"
    assert not run_file(run.name).exists(), "the coordinator's run file was left behind"
    return took, [c for _, c in family.values()]


@pytest.fixture(scope="module")
def ray_run(env: Env) -> Iterator[RayRun]:
    run = RayRun(env, f"{env.c.name}-b", "--shards", "3", "--node-label-selector", f"{GROUP}=b",
                 "--release-leases-on-exit")
    try:
        run.ready(3)
        yield run
    finally:
        run.close()


def test_kill_9_of_a_shard_worker_twice_in_a_row(env: Env, ray_run: RayRun) -> None:
    size = env.size
    make_nodes(env.c, env.api, "ray", size.ray_nodes, 20000, "b")
    make_deployment(env.k, "faults-b", "b", size.ray_pods)
    poll(lambda: _all_running(_pods(env.api, "faults-b"), size.ray_pods), 300, 2, f"{size.ray_pods} pods Running")
    poll(lambda: (s := ray_run.status()) and sum(x["nodes"] for x in s["shards"]) == size.ray_nodes, 60, 1,
         "all nodes owned by the shards")
    m = FaultMonitor(env.api, "b")
    try:
        poll(lambda: len(m.seen_ready) == size.ray_nodes and len(m.renew) == size.ray_nodes, 60, 1, "monitor primed")
        before = _pods(env.api, "faults-b")
        st = ray_run.status()
        assert st is not None
        # security: the shards talk with the token their coordinator pushed, and the admin key
        # is in no file of the run's (Ray's session included)
        assert {s["auth"] for s in st["shards"]} == {"pushed"}, [s["auth"] for s in st["shards"]]
        assert not ray_run.key_files()
        victim = max(st["shards"], key=lambda s: s["pods"])
        killed = [victim["pid"]]
        t0 = time.time()
        for round_ in (1, 2):
            os.kill(killed[-1], signal.SIGKILL)
            k0 = time.monotonic()

            def served() -> dict[str, Any] | None:
                s = ray_run.status()
                v = next((x for x in (s or {}).get("shards", []) if x["shard"] == victim["shard"]), None)
                ok = v and v["pid"] not in killed and v.get("started") and v["nodes"] > 0 and v["alive"]
                return v if ok else None
            v = poll(served, 30, 0.25, f"killed shard served again (kill {round_})")
            print(f"kill -9 #{round_} of {victim['shard']} pid {killed[-1]}: served again after {time.monotonic() - k0:.1f}s")
            killed.append(v["pid"])   # the second kill hits the worker that just took over
        back = time.time()
        assert_leases_renewed(env, m, t0, back)
        st = ray_run.status()
        assert st is not None and sum(x["nodes"] for x in st["shards"]) == size.ray_nodes
        m.hold(max(back + GRACE + 10, back + size.hold))
        _assert_pods_intact(env.api, "faults-b", before)
        # deletion after the kills: the replacements know every pod (none stuck Terminating)
        env.k.run("scale", "deployment", "p", "-n", "faults-b", f"--replicas={size.ray_pods // 2}")
        poll(lambda: len(p := _pods(env.api, "faults-b")) == size.ray_pods // 2 and not any(v[3] for v in p.values()),
             max(120, size.ray_pods / 20), 1, "scaled-down pods gone, none stuck Terminating")
        after = _pods(env.api, "faults-b")
        assert all(after[k] == before[k] for k in after), "surviving pods changed IP or phase"
        m.assert_all_ready()
    finally:
        m.stop()


def test_sigterm_ray_shards_release_leases_and_leave_nothing(env: Env, ray_run: RayRun) -> None:
    st = ray_run.ready(3, timeout=30)
    # security: the coordinator endpoint and every shard's metrics listen on loopback only
    metrics_ports = {e["port"] for e in ray_run.events() if e.get("event") == "metrics_serving"
                     and e.get("shard", "").startswith(ray_run.name)}
    live = {s["pid"] for s in st["shards"]}
    ep = int(urllib.parse.urlparse(ray_run.url()).port or 0)
    assert urllib.parse.urlparse(ray_run.url()).hostname == "127.0.0.1"
    _assert_loopback({ray_run.proc.pid}, {ep})
    ours = {p for _, _, p in _listeners(live)} & metrics_ports
    assert len(ours) == 3, (metrics_ports, _listeners(live))
    _assert_loopback(live, ours)
    took, procs = _sigterm_ray(ray_run)
    print(f"--shards 3, --release-leases-on-exit: exit 0 {took:.2f}s after SIGTERM; {len(procs)} processes gone")
    holders = {ls["metadata"]["name"]: ls["spec"].get("holderIdentity")
               for ls in env.api.items(f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases")
               if ls["metadata"]["name"].startswith("ray-")}
    assert len(holders) == env.size.ray_nodes and not any(holders.values()), \
        {k: v for k, v in holders.items() if v}
    # killed workers included: no file left behind holds the admin key
    assert not ray_run.key_files()
    env.k.run("delete", "namespace", "faults-b", "--wait=false")
    env.k.run("delete", "nodes", "-l", f"{GROUP}=b", "--wait=false")


def test_sigterm_two_ray_shards_leave_leases_to_expire(env: Env) -> None:
    run = RayRun(env, f"{env.c.name}-d", "--shards", "2", "--node-label-selector", f"{GROUP}=d")
    try:
        run.ready(2)
        names = make_nodes(env.c, env.api, "two", 20, 80000, "d")
        lease_path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases"

        def holders() -> dict[str, str | None]:
            return {ls["metadata"]["name"]: ls["spec"].get("holderIdentity") for ls in env.api.items(lease_path)
                    if ls["metadata"]["name"] in names}
        mine = {x["lease_holder"] for x in run.ready(2)["shards"]}
        poll(lambda: (h := holders()) and len(h) == len(names)
             and set(h.values()) <= mine, 60, 0.5, "leases held by the shards")
        took, procs = _sigterm_ray(run)
        print(f"--shards 2: exit 0 {took:.2f}s after SIGTERM; {len(procs)} processes gone")
        h = holders()
        assert set(h.values()) <= mine, f"leases released without the flag: {h}"
        assert not run.key_files()
    finally:
        run.close()
        env.k.run("delete", "nodes", "-l", f"{GROUP}=d", "--wait=false")
