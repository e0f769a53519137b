"""What the benchmark does to the apiserver, identically for every simulator: create nodes from
shardlet's kwokctl-compatible template, create bare pods bound round-robin to them, delete them,
and watch what the simulator makes of them.

The creator is the same concurrent client for every simulator (shardlet.api.Kube, a bounded
number of requests in flight, kwok's retry rules); its time is reported but is not simulator time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from shardlet.api import ApiError, Kube, path_for
from shardlet.conditions import node_ready
from shardlet.controllers.leases import micro_time
from shardlet.scale import NODE_PARAMS, POD_PARAMS, SCALE_LABEL, node_manifest, pod_spec
from shardlet.watch import Reflector

NODE_PREFIX = "node"
POD_NS = "default"
POD_LABEL = "bench.shardlet.x-k8s.io/pod"
LEASE_NS = "kube-node-lease"
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases"


def node_name(i: int) -> str:
    return f"{NODE_PREFIX}-{i:06d}"


def pod_name(i: int) -> str:
    return f"pod-{i:06d}"


def is_running(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running"


async def bounded(concurrency: int, items: list[Any], fn: Callable[[Any], Any]) -> list[str]:
    """Run fn over items with at most `concurrency` in flight; collect errors (404/409 are fine)."""
    it = iter(items)
    errors: list[str] = []

    async def worker() -> None:
        for x in it:
            try:
                await fn(x)
            except ApiError as e:
                if e.status not in (404, 409):
                    errors.append(str(e)[:200])
    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(items))))))
    return errors


async def create_nodes(kube: Kube, first: int, last: int, concurrency: int = 64) -> dict[str, Any]:
    """Create node-<first>..node-<last-1>; returns timing."""
    t0 = time.monotonic()

    async def one(i: int) -> None:
        body = node_manifest(node_name(i), i, NODE_PARAMS)
        await kube.retrying(lambda: kube.create("/api/v1/nodes", body), what="create node")
    errors = await bounded(concurrency, list(range(first, last)), one)
    t1 = time.monotonic()
    if errors:
        raise RuntimeError(f"create nodes: {len(errors)} failed, first: {errors[0]}")
    return {"t0": t0, "t1": t1, "create_s": round(t1 - t0, 3), "count": last - first}


async def create_pods(kube: Kube, count: int, nodes: int, concurrency: int = 64) -> dict[str, Any]:
    """Bare pods pod-000000.. with spec.nodeName set round-robin (no scheduler involved)."""
    spec = pod_spec(POD_PARAMS)
    t0 = time.monotonic()

    async def one(i: int) -> None:
        body = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod_name(i), "labels": {POD_LABEL: "1"}},
                "spec": dict(spec, nodeName=node_name(i % nodes))}
        await kube.retrying(lambda: kube.create(f"/api/v1/namespaces/{POD_NS}/pods", body), what="create pod")
    errors = await bounded(concurrency, list(range(count)), one)
    t1 = time.monotonic()
    if errors:
        raise RuntimeError(f"create pods: {len(errors)} failed, first: {errors[0]}")
    return {"t0": t0, "t1": t1, "create_s": round(t1 - t0, 3), "count": count}


async def delete_pods(kube: Kube, names: list[str], concurrency: int = 64) -> dict[str, Any]:
    """A plain DELETE of each pod (default grace): the apiserver sets deletionTimestamp and the
    simulator's pod-delete stage removes the pod with grace 0."""
    t0 = time.monotonic()

    async def one(n: str) -> None:
        await kube.retrying(lambda: kube.delete(path_for("Pod", n, POD_NS)), what="delete pod")
    errors = await bounded(concurrency, names, one)
    t1 = time.monotonic()
    if errors:
        raise RuntimeError(f"delete pods: {len(errors)} failed, first: {errors[0]}")
    return {"t0": t0, "t1": t1, "request_s": round(t1 - t0, 3), "count": len(names)}


# taints the apiserver (TaintNodesByCondition) and the node lifecycle controller put on a node that
# is not Ready yet; kube-controller-manager removes them after the node turns Ready
LIFECYCLE_TAINTS = frozenset({"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"})


class NodeWatch:
    """Ready nodes among node-*, with the time each first became Ready and every Ready->not-Ready,
    and which still carry a node-lifecycle taint (the controller-manager has not caught up)."""

    def __init__(self, kube: Kube) -> None:
        self.ready: set[str] = set()
        self.first_ready: dict[str, float] = {}
        self.exists: set[str] = set()
        self.transitions: list[tuple[float, str]] = []   # (monotonic time, node) of Ready -> not Ready
        self.tainted: set[str] = set()
        self.reflector = Reflector(kube, "/api/v1/nodes", self._on, name="bench-nodes",
                                   label_selector=f"{SCALE_LABEL}=node")
        self.task: asyncio.Task[None] | None = None

    def _on(self, typ: str, node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        now = time.monotonic()
        if typ == "DELETED":
            self.exists.discard(name)
            self.ready.discard(name)
            self.tainted.discard(name)
            return
        self.exists.add(name)
        if any(t.get("key") in LIFECYCLE_TAINTS for t in (node.get("spec") or {}).get("taints") or []):
            self.tainted.add(name)
        else:
            self.tainted.discard(name)
        if node_ready(node):
            self.ready.add(name)
            self.first_ready.setdefault(name, now)
        elif name in self.ready:
            self.ready.discard(name)
            self.transitions.append((now, name))

    async def start(self) -> NodeWatch:
        self.task = asyncio.create_task(self.reflector.run())
        await asyncio.wait_for(self.reflector.synced.wait(), 120)
        return self

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


class PodWatch:
    """Bench pods: which exist, which are Running, when each first was."""

    def __init__(self, kube: Kube) -> None:
        self.exists: set[str] = set()
        self.running: set[str] = set()
        self.first_running: dict[str, float] = {}
        self.gone_at: dict[str, float] = {}
        self.reflector = Reflector(kube, f"/api/v1/namespaces/{POD_NS}/pods", self._on, name="bench-pods",
                                   label_selector=POD_LABEL)
        self.task: asyncio.Task[None] | None = None

    def _on(self, typ: str, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        now = time.monotonic()
        if typ == "DELETED":
            self.exists.discard(name)
            self.running.discard(name)
            self.gone_at[name] = now
            return
        self.exists.add(name)
        if is_running(pod):
            self.running.add(name)
            self.first_running.setdefault(name, now)
        else:
            self.running.discard(name)

    async def start(self) -> PodWatch:
        self.task = asyncio.create_task(self.reflector.run())
        await asyncio.wait_for(self.reflector.synced.wait(), 120)
        return self

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


async def settle(nw: NodeWatch, log: Callable[[str], None], alive: Callable[[], bool] | None = None,
                 timeout: float = 300.0) -> float:
    """Wait until kube-controller-manager has caught up with the Ready nodes (no lifecycle taint
    left), so that the next phase does not pay for the controller's backlog from this one: a
    simulator that makes nodes Ready faster leaves more of that backlog behind. Returns seconds."""
    t0 = time.monotonic()
    await wait_for("node-lifecycle taints removed", lambda: not nw.tainted,
                   lambda: f"{len(nw.tainted)} nodes still tainted", timeout, log, alive)
    return round(time.monotonic() - t0, 3)


async def wait_for(what: str, done: Callable[[], bool], progress: Callable[[], str], timeout: float,
                   log: Callable[[str], None], alive: Callable[[], bool] | None = None,
                   every: float = 10.0, series: list[tuple[float, int]] | None = None,
                   count: Callable[[], int] | None = None, t_ref: float = 0.0,
                   stall: float | None = None) -> float:
    """Poll until done() or raise TimeoutError; returns when it became true (monotonic). With
    `stall` (and `count`), also give up once count() has not passed its best for that long: a
    size that cannot be held then fails in minutes instead of sitting out the whole timeout."""
    t0 = time.monotonic()
    last = t0
    best, best_t = -1, t0
    while not done():
        now = time.monotonic()
        if stall is not None and count is not None:
            c = count()
            if c > best:
                best, best_t = c, now
            elif now - best_t > stall:
                raise TimeoutError(f"{what}: stalled, no progress for {stall:.0f}s ({progress()})")
        if series is not None and count is not None and (not series or now - t_ref - series[-1][0] >= 0.5):
            series.append((round(now - t_ref, 2), count()))
        if now - t0 > timeout:
            raise TimeoutError(f"{what}: not done after {timeout:.0f}s ({progress()})")
        if alive is not None and not alive():
            raise RuntimeError(f"{what}: the simulator exited ({progress()})")
        if now - last >= every:
            last = now
            log(f"    {what}: {progress()} after {now - t0:.0f}s")
        await asyncio.sleep(0.1)
    t = time.monotonic()
    if series is not None and count is not None:
        series.append((round(t - t_ref, 2), count()))
    return t


async def probe(kube: Kube, timeout: float, alive: Callable[[], bool]) -> float:
    """Create one fake node outside the measured set and wait until the simulator makes it Ready:
    proof that the simulator is up and serving. Returns the seconds it took; deletes it after."""
    name = "bench-probe"
    body = node_manifest(name, 0, NODE_PARAMS)
    body["metadata"]["labels"].pop(SCALE_LABEL, None)
    body["metadata"]["labels"]["bench.shardlet.x-k8s.io/probe"] = "1"
    t0 = time.monotonic()
    try:
        await kube.create("/api/v1/nodes", body)
    except ApiError as e:
        if e.status != 409:
            raise
    try:
        while True:
            node = await kube.get(path_for("Node", name))
            if node_ready(node):
                return round(time.monotonic() - t0, 3)
            if not alive():
                raise RuntimeError("simulator exited before serving the probe node")
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"probe node not Ready after {timeout:.0f}s: is the simulator serving?")
            await asyncio.sleep(0.2)
    finally:
        try:
            await kube.delete(path_for("Node", name))
        except (ApiError, OSError):
            pass


async def wait_default_sa(kube: Kube, timeout: float = 90) -> None:
    """Pods need the namespace's default ServiceAccount (made by kube-controller-manager)."""
    t0 = time.monotonic()
    while True:
        try:
            await kube.get(f"/api/v1/namespaces/{POD_NS}/serviceaccounts/default")
            return
        except ApiError as e:
            if e.status != 404 or time.monotonic() - t0 > timeout:
                raise
        await asyncio.sleep(0.5)


async def lease_ages(kube: Kube, prefix: str = NODE_PREFIX) -> dict[str, Any]:
    """Seconds since each node lease's renewTime, as the apiserver has it: the renew lag seen
    from outside, the same way for every simulator (a kubelet renews every 10 s of 40)."""
    items, _ = await kube.list_all(LEASES, page=5000)
    now = time.time()
    ages: list[float] = []
    for it in items:
        if not it["metadata"]["name"].startswith(prefix + "-"):
            continue
        rt = (it.get("spec") or {}).get("renewTime")
        if not rt:
            continue
        ages.append(now - _parse_micro(rt))
    ages.sort()
    if not ages:
        return {"n": 0}
    return {"n": len(ages), "p50": round(_q(ages, 0.5), 2), "p99": round(_q(ages, 0.99), 2),
            "max": round(ages[-1], 2)}


def _parse_micro(s: str) -> float:
    import datetime as dt

    s = s.rstrip("Z")
    fmt = "%Y-%m-%dT%H:%M:%S.%f" if "." in s else "%Y-%m-%dT%H:%M:%S"
    return dt.datetime.strptime(s, fmt).replace(tzinfo=dt.UTC).timestamp()


def _q(sorted_vals: list[float], q: float) -> float:
    return sorted_vals[min(len(sorted_vals) - 1, int(q * len(sorted_vals)))]


async def create_leases(kube: Kube, count: int, prefix: str, concurrency: int = 64) -> None:
    """Plain Lease objects in kube-node-lease (no Node behind them) for the raw writer."""
    now = micro_time()

    async def one(i: int) -> None:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": f"{prefix}-{i:06d}", "namespace": LEASE_NS},
                "spec": {"holderIdentity": "bench-writer", "leaseDurationSeconds": 40,
                         "renewTime": now, "acquireTime": now}}
        await kube.retrying(lambda: kube.create(LEASES, body), what="create lease")
    errors = await bounded(concurrency, list(range(count)), one)
    if errors:
        raise RuntimeError(f"create leases: {len(errors)} failed, first: {errors[0]}")


async def apiserver_requests(kube: Kube) -> dict[str, float]:
    """apiserver_request_total summed by 'VERB resource' (from the apiserver's /metrics)."""
    sess = kube._sess()
    async with sess.get(kube.base + "/metrics", headers=kube._auth_headers(),
                        timeout=aiohttp.ClientTimeout(total=30)) as r:
        text = await r.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels, _, val = line.rpartition(" ")
        lab = dict(_labels(labels[len("apiserver_request_total{"):-1]))
        k = f"{lab.get('verb', '?')} {lab.get('resource', '?')}"
        if lab.get("subresource"):
            k += "/" + lab["subresource"]
        try:
            out[k] = out.get(k, 0.0) + float(val)
        except ValueError:
            pass
    return out


def _labels(s: str) -> list[tuple[str, str]]:
    out = []
    for part in s.split('",'):
        k, _, v = part.partition("=")
        out.append((k.strip(), v.strip().strip('"')))
    return out


def request_delta(a: dict[str, float], b: dict[str, float]) -> dict[str, int]:
    d = {k: int(v - a.get(k, 0.0)) for k, v in b.items()}
    return {k: v for k, v in sorted(d.items(), key=lambda kv: -kv[1]) if v > 0}
