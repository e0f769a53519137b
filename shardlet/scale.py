"""`shardlet scale node|pod --replicas N`: kwokctl's scale, with live progress.

Nodes follow kwokctl's node template (fake annotation, per-node podCIDRs and InternalIPs offset
by the node's index, allocatable cpu 32 / memory 256Gi / pods 110) plus the recommended taint
`kwok.x-k8s.io/node=fake:NoSchedule`; pods come from a Deployment (or bare pods with --bare)
that tolerates it. Creation runs concurrently with a bound; scaling down deletes the highest
indexes first.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import ipaddress
import sys
import time
from collections.abc import Callable
from typing import Any

import structlog
import yaml

from shardlet import aio
from shardlet.api import ApiError, Kube, path_for
from shardlet.conditions import node_ready
from shardlet.errors import UserError
from shardlet.watch import Reflector

log = structlog.get_logger("shardlet.scale")

SCALE_LABEL = "shardlet.x-k8s.io/scale"
FAKE_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}

NODE_PARAMS: dict[str, Any] = {
    "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
    "capacity": {},
    "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux"},
    "podCIDRs": ["10.0.0.0/24"],
    "nodeIPs": ["192.0.2.1"],
    "taint": True,
    "labels": {},
}
POD_PARAMS: dict[str, Any] = {
    "image": "registry.k8s.io/pause:3.10",
    "containers": 1,
    "initContainers": 0,
    "requests": {},
    "labels": {},
}


def add_cidr(cidr: str, index: int) -> str:
    """kwokctl's AddCIDR: the index-th network of the same size after `cidr`."""
    net = ipaddress.ip_network(cidr, strict=False)
    base = int(net.network_address) + index * net.num_addresses
    return f"{ipaddress.ip_address(base)}/{net.prefixlen}"


def add_ip(ip: str, index: int) -> str:
    return str(ipaddress.ip_address(ip) + index)


def node_manifest(name: str, index: int, p: dict[str, Any]) -> dict[str, Any]:
    cidrs = [add_cidr(c, index) for c in p["podCIDRs"]]
    info = p["nodeInfo"]
    capacity = {k: p["capacity"].get(k, v) for k, v in p["allocatable"].items()}
    spec: dict[str, Any] = {"podCIDR": cidrs[0], "podCIDRs": cidrs}
    if p["taint"]:
        spec["taints"] = [FAKE_TAINT]
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0",
                            "metrics.k8s.io/resource-metrics-path": f"/metrics/nodes/{name}/metrics/resource"},
            "labels": {"beta.kubernetes.io/arch": info["architecture"], "beta.kubernetes.io/os": info["operatingSystem"],
                       "kubernetes.io/arch": info["architecture"], "kubernetes.io/hostname": name,
                       "kubernetes.io/os": info["operatingSystem"], "kubernetes.io/role": "agent",
                       "node-role.kubernetes.io/agent": "", "type": "kwok", SCALE_LABEL: "node",
                       **p["labels"]},
        },
        "spec": spec,
        "status": {
            "addresses": [{"address": add_ip(ip, index), "type": "InternalIP"} for ip in p["nodeIPs"]],
            "allocatable": dict(p["allocatable"]), "capacity": capacity,
            "nodeInfo": {k: str(v) for k, v in info.items()},
        },
    }


def pod_spec(p: dict[str, Any]) -> dict[str, Any]:
    def ctr(prefix: str, i: int) -> dict[str, Any]:
        c: dict[str, Any] = {"name": f"{prefix}-{i}", "image": p["image"]}
        if p["requests"]:
            c["resources"] = {"requests": dict(p["requests"])}
        return c
    spec: dict[str, Any] = {
        "containers": [ctr("container", i) for i in range(int(p["containers"]))],
        "tolerations": [{"key": FAKE_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}],
        "nodeSelector": {"type": "kwok"},
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 30,
    }
    if int(p["initContainers"]):
        spec["initContainers"] = [ctr("init", i) for i in range(int(p["initContainers"]))]
    return spec


def apply_params(base: dict[str, Any], params: list[str]) -> dict[str, Any]:
    """`--param .allocatable.cpu=4` / `--param podCIDRs=[10.1.0.0/24]`: YAML values at dotted paths."""
    out = copy.deepcopy(base)
    for raw in params:
        path, eq, value = raw.partition("=")
        keys = [k for k in path.strip().lstrip(".").split(".") if k]
        if not eq or not keys:
            raise UserError(f"--param {raw!r}: expected .path.to.field=value")
        if keys[0] not in base:
            raise UserError(f"--param {raw!r}: unknown parameter {keys[0]!r} (known: {', '.join(sorted(base))})")
        try:
            v = yaml.safe_load(value)
        except yaml.YAMLError:
            raise UserError(f"--param {raw!r}: value is not valid YAML") from None
        cur = out
        for k in keys[:-1]:
            cur = cur.setdefault(k, {})
            if not isinstance(cur, dict):
                raise UserError(f"--param {raw!r}: {k!r} is not a mapping")
        cur[keys[-1]] = v
    return out


# -- progress --------------------------------------------------------------------------------
class Progress:
    """A live bar per phase when stdout is a terminal, plain lines otherwise."""

    def __init__(self, phases: list[str], total: int) -> None:
        self.total = total
        self.counts = dict.fromkeys(phases, 0)
        self.t0 = time.monotonic()
        self.tty = sys.stdout.isatty()
        self._last_line = 0.0
        self._printed: tuple[int, ...] | None = None
        self._done = False
        self._rich: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> Progress:
        if self.tty:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RP
            self._rich = RP(TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(),
                            TaskProgressColumn(), TextColumn("{task.fields[rate]}/s"), TimeElapsedColumn(),
                            TextColumn("eta"), TimeRemainingColumn())
            self._rich.__enter__()
            for ph in self.counts:
                self._tasks[ph] = self._rich.add_task(ph, total=self.total, rate="0")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._rich is not None:
            self._rich.__exit__(*exc)

    def set(self, phase: str, n: int) -> None:
        self.counts[phase] = n
        el = max(1e-6, time.monotonic() - self.t0)
        if self._rich is not None:
            self._rich.update(self._tasks[phase], completed=n, rate=f"{n / el:.0f}")
        else:
            # off a terminal: a line every 2 s at most, and one as soon as every count is done,
            # each only when a count changed (a log reader wants no repeats)
            done = all(c >= self.total for c in self.counts.values())
            due = time.monotonic() - self._last_line >= 2.0 or (done and not self._done)
            if not due or tuple(self.counts.values()) == self._printed:
                return
            self._done = self._done or done
            self._last_line = time.monotonic()
            self._printed = tuple(self.counts.values())
            parts = [f"{ph} {c}/{self.total} ({c / el:.0f}/s)" for ph, c in self.counts.items()]
            print(f"[{el:6.1f}s] " + "  ".join(parts), flush=True)

    def summary(self, what: str) -> str:
        el = time.monotonic() - self.t0
        parts = [f"{ph} {c}" for ph, c in self.counts.items()]
        return f"{what}: {', '.join(parts)} of {self.total} in {el:.1f}s ({self.total / max(el, 1e-6):.0f}/s)"


async def _bounded(n: int, items: list[Any], fn: Callable[[Any], Any], on_done: Callable[[], None]) -> list[str]:
    sem = asyncio.Semaphore(n)
    errors: list[str] = []

    async def one(it: Any) -> None:
        async with sem:
            try:
                await fn(it)
            except ApiError as e:
                if e.status not in (404, 409):
                    errors.append(str(e))
            on_done()
    await asyncio.gather(*(one(i) for i in items))
    return errors


def _running(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running" and not (pod.get("metadata") or {}).get("deletionTimestamp")


async def scale_nodes(kube: Kube, replicas: int, *, prefix: str = "node", params: dict[str, Any] | None = None,
                      concurrency: int = 64, wait: bool = True, timeout: float = 600) -> str:
    p = params or NODE_PARAMS
    existing, _ = await kube.list_all("/api/v1/nodes", labelSelector=f"{SCALE_LABEL}=node")
    names = {n["metadata"]["name"] for n in existing}
    want = {f"{prefix}-{i:06d}": i for i in range(replicas)}
    create = [(n, i) for n, i in want.items() if n not in names]
    delete = sorted(names - want.keys())
    progress = Progress(["created", "Ready"] if replicas else ["deleted"], max(replicas, len(delete)))
    ready: set[str] = set()
    created = len(want) - len(create)

    def on_node(typ: str, node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        if typ != "DELETED" and node_ready(node) and name in want:
            ready.add(name)
        else:
            ready.discard(name)
        if replicas:
            progress.set("Ready", len(ready))
    watcher = Reflector(kube, "/api/v1/nodes", on_node, name="scale-nodes", label_selector=f"{SCALE_LABEL}=node")
    wt = asyncio.create_task(watcher.run())
    try:
        with progress:
            def bump() -> None:
                nonlocal created
                created += 1
                progress.set("created", created)
            if replicas:
                progress.set("created", created)
            errors = await _bounded(concurrency, create,
                                    lambda it: kube.retrying(lambda: kube.create("/api/v1/nodes", node_manifest(it[0], it[1], p)),
                                                             what="create node"), bump)
            deleted = 0

            def bump_del() -> None:
                nonlocal deleted
                deleted += 1
                if not replicas:
                    progress.set("deleted", deleted)
            errors += await _bounded(concurrency, delete,
                                     lambda n: kube.retrying(lambda: kube.delete(path_for("Node", n)), what="delete node"),
                                     bump_del)
            if errors:
                raise UserError(f"scale node: {len(errors)} requests failed, first: {errors[0]}")
            if wait and replicas:
                deadline = time.monotonic() + timeout
                while len(ready) < replicas:
                    if time.monotonic() > deadline:
                        raise UserError(f"scale node: only {len(ready)}/{replicas} nodes Ready after {timeout:.0f}s "
                                        "(is shardlet running against this cluster?)")
                    await asyncio.sleep(0.2)
                    progress.set("Ready", len(ready))
    finally:
        wt.cancel()
    return progress.summary(f"nodes {replicas}")


async def scale_pods(kube: Kube, replicas: int, *, namespace: str = "default", name: str = "shardlet-pods",
                     bare: bool = False, params: dict[str, Any] | None = None, concurrency: int = 64,
                     wait: bool = True, timeout: float = 600) -> str:
    p = params or POD_PARAMS
    labels = {"app": name, SCALE_LABEL: "pod", **p["labels"]}
    sel = f"app={name},{SCALE_LABEL}=pod"
    progress = Progress(["created", "Running"] if replicas else ["deleted"], replicas)
    running: set[str] = set()
    seen: set[str] = set()

    def on_pod(typ: str, pod: dict[str, Any]) -> None:
        key = pod["metadata"]["name"]
        if typ == "DELETED":
            seen.discard(key)
            running.discard(key)
        else:
            seen.add(key)
            (running.add if _running(pod) else running.discard)(key)
        if replicas:
            progress.set("created", min(len(seen), replicas))
            progress.set("Running", len(running))
    watcher = Reflector(kube, f"/api/v1/namespaces/{namespace}/pods", on_pod, name="scale-pods", label_selector=sel)
    wt = asyncio.create_task(watcher.run())
    try:
        with progress:
            try:
                await kube.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
            except ApiError as e:
                if e.status not in (409, 403):
                    raise
            if bare:
                existing, _ = await kube.list_all(f"/api/v1/namespaces/{namespace}/pods", labelSelector=sel)
                have = {x["metadata"]["name"] for x in existing}
                want = {f"{name}-{i:06d}" for i in range(replicas)}
                tmpl = pod_spec(p)
                errs = await _bounded(concurrency, sorted(want - have), lambda n: kube.retrying(
                    lambda: kube.create(f"/api/v1/namespaces/{namespace}/pods",
                                        {"metadata": {"name": n, "labels": labels}, "spec": tmpl}), what="create pod"),
                    lambda: None)
                errs += await _bounded(concurrency, sorted(have - want), lambda n: kube.retrying(
                    lambda: kube.delete(path_for("Pod", n, namespace)), what="delete pod"), lambda: None)
                if errs:
                    raise UserError(f"scale pod: {len(errs)} requests failed, first: {errs[0]}")
            else:
                dep = {"apiVersion": "apps/v1", "kind": "Deployment",
                       "metadata": {"name": name, "namespace": namespace, "labels": labels},
                       "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                                "strategy": {"type": "RollingUpdate",
                                             "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": "100%"}},
                                "template": {"metadata": {"labels": labels}, "spec": pod_spec(p)}}}
                path = path_for("Deployment", name, namespace)
                try:
                    await kube.patch(path, {"spec": {"replicas": replicas}}, "merge")
                except ApiError as e:
                    if e.status != 404:
                        raise
                    await kube.create(path_for("Deployment", namespace=namespace), dep)
            if wait:
                deadline = time.monotonic() + timeout
                done: Callable[[], bool] = ((lambda: len(running) >= replicas and len(seen) == replicas)
                                            if replicas else (lambda: not seen))
                while not done():
                    if time.monotonic() > deadline:
                        raise UserError(f"scale pod: {len(running)}/{replicas} pods Running, {len(seen)} exist, "
                                        f"after {timeout:.0f}s")
                    await asyncio.sleep(0.2)
    finally:
        wt.cancel()
    return progress.summary(f"pods {replicas}")


def _scale(args: argparse.Namespace) -> int:
    from shardlet.target import resolve_kubeconfig

    kubeconfig = resolve_kubeconfig(args)

    async def go() -> str:
        kube = Kube.from_kubeconfig(kubeconfig, max_connections=args.concurrency + 8)
        try:
            try:
                await kube.get("/version")
            except OSError as e:
                raise UserError(f"apiserver {kube.base}: unreachable ({e})") from None
            if args.kind == "node":
                return await scale_nodes(kube, args.replicas, prefix=args.prefix or "node",
                                         params=apply_params(NODE_PARAMS, args.param),
                                         concurrency=args.concurrency, wait=not args.no_wait, timeout=args.timeout)
            return await scale_pods(kube, args.replicas, namespace=args.namespace, name=args.prefix or "shardlet-pods",
                                    bare=args.bare, params=apply_params(POD_PARAMS, args.param),
                                    concurrency=args.concurrency, wait=not args.no_wait, timeout=args.timeout)
        finally:
            await kube.close()
    print(aio.run(go()), flush=True)
    return 0


def register_cli(sub: Any) -> None:
    from shardlet.target import add_target, positive_int

    p = sub.add_parser("scale", help="create or delete fake nodes or pods, like kwokctl scale")
    p.add_argument("kind", choices=["node", "pod"], help="what to scale")
    p.add_argument("--replicas", type=positive_int, required=True, help="how many should exist afterwards")
    add_target(p)
    p.add_argument("-n", "--namespace", default="default", help="namespace for pods (default: %(default)s)")
    p.add_argument("--prefix", default=None, help="node name prefix (default: node) or Deployment name "
                   "(default: shardlet-pods)")
    p.add_argument("--bare", action="store_true", help="create bare pods instead of a Deployment")
    p.add_argument("--param", action="append", default=[],
                   help="override a template parameter: .allocatable.cpu=4, podCIDRs=[10.1.0.0/24], taint=false, "
                        "image=..., containers=2, initContainers=1, requests={cpu: 100m} (repeatable)")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight (default: %(default)s)")
    p.add_argument("--no-wait", action="store_true", help="return once created, without waiting for Ready/Running")
    p.add_argument("--timeout", type=float, default=900, help="seconds to wait for Ready/Running (default: %(default)s)")
    p.set_defaults(func=_scale)
