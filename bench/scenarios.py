"""The scenarios. Each run gets a fresh local control plane with the same flags; every scenario
records its error and lets the run go on; clusters and simulators are always torn down.

Every result is a record: {"scenario", "sim", "repeat", "size": {...}, "m": {flat numbers},
"x": {details: series, per-phase CPU, apiserver requests, problems}, "error": str | None}.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procs, sysinfo
from bench.sims import Simulator, label
from bench.workload import (
    NODE_PREFIX,
    NodeWatch,
    PodWatch,
    apiserver_requests,
    create_leases,
    create_nodes,
    create_pods,
    delete_pods,
    lease_ages,
    pod_name,
    probe,
    request_delta,
    settle,
    wait_default_sa,
    wait_for,
)
from bench.writer import parse_level
from shardlet.api import Kube
from shardlet.controlplane.cluster import Cluster, Options
from shardlet.metrics import LEASE_LAG_BUCKETS

# kwok's CI benchmark: no QPS limits, no scheduler (pods are bound with spec.nodeName); the
# controller-manager runs so that NotReady is real (node-monitor-grace-period 50 s).
CLUSTER_OPTIONS: dict[str, Any] = dict(disable_qps_limits=True, scheduler=False, controller_manager=True,
                       node_monitor_grace_period="50s", node_monitor_period="5s")
SIM_GROUPS = ("kwok", "runner", "shard")
MIB = 2**20


@dataclass
class Bench:
    sizes: dict[str, Any]
    bin_dir: Path
    log_dir: Path
    log: Callable[[str], None]
    concurrency: int = 64
    _n: int = 0
    problems: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    code: str = ""                          # sysinfo.code_state() when the run started
    code_changed: list[dict[str, Any]] = field(default_factory=list)

    def new_name(self) -> str:
        self._n += 1
        return f"bench-{os.getpid() % 100000}-{self._n}"

    def check_code(self, env: str, sim: str) -> None:
        """Record a shardlet about to start from a working tree other than the run's first."""
        now = sysinfo.code_state()
        if now != self.code:
            self.code_changed.append({"env": env, "sim": sim, "code": now,
                                      "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
            self.log(f"  warning: {env} starts shardlet from changed code {now} (the run began at {self.code})")


def cpu_summary(groups: dict[str, float]) -> dict[str, float]:
    sim = sum(groups.get(g, 0.0) for g in SIM_GROUPS)
    ray = groups.get("ray", 0.0)
    return {"sim_cpu_s": round(sim, 3), "sim_cpu_with_ray_s": round(sim + ray, 3), "ray_daemons_cpu_s": round(ray, 3),
            "apiserver_cpu_s": groups.get("kube-apiserver", 0.0), "etcd_cpu_s": groups.get("etcd", 0.0),
            "kcm_cpu_s": groups.get("kube-controller-manager", 0.0), "bench_client_cpu_s": groups.get("bench", 0.0)}


def mem_summary(mem: dict[str, dict[str, int]]) -> dict[str, float]:
    sim = [mem.get(g, {}) for g in SIM_GROUPS]
    ray = mem.get("ray", {})
    rss = sum(d.get("rss", 0) for d in sim)
    pss = sum(d.get("pss", 0) for d in sim)
    return {"sim_rss_mib": round(rss / MIB, 1), "sim_pss_mib": round(pss / MIB, 1),
            "sim_rss_with_ray_mib": round((rss + ray.get("rss", 0)) / MIB, 1),
            "sim_pss_with_ray_mib": round((pss + ray.get("pss", 0)) / MIB, 1),
            "sim_procs": sum(d.get("procs", 0) for d in sim), "ray_procs": ray.get("procs", 0)}


class Phase:
    """CPU per process group, wall time and apiserver requests between begin() and end()."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.t0 = 0.0
        self.m0: dict[procs.Key, tuple[str, float]] = {}
        self.r0: dict[str, float] = {}

    async def begin(self) -> Phase:
        self.r0 = await _requests(self.env.kube)
        self.m0 = self.env.meter.mark()
        self.t0 = time.monotonic()
        return self

    async def end(self) -> dict[str, Any]:
        m1 = self.env.meter.mark()
        wall = time.monotonic() - self.t0
        r1 = await _requests(self.env.kube)
        groups = procs.Meter.cpu(self.m0, m1)
        out: dict[str, Any] = {"wall_s": round(wall, 3), **cpu_summary(groups), "groups": groups,
                               "requests": request_delta(self.r0, r1) if r1 else {}}
        out["by_pid"] = procs.Meter.cpu_by_pid(self.m0, m1)
        return out


async def _requests(kube: Kube) -> dict[str, float]:
    try:
        return await apiserver_requests(kube)
    except Exception:
        return {}


class Env:
    """A fresh cluster (+ optionally a simulator) with a meter over all of it."""

    def __init__(self, bench: Bench, sim_key: str | None) -> None:
        self.bench = bench
        self.sim_key = sim_key
        self.name = bench.new_name()
        self.cluster = Cluster(self.name)
        self.meter = procs.Meter(1.0)
        self.kube: Kube = None  # type: ignore[assignment]
        self.sim: Simulator | None = None
        self.probe_s: float | None = None
        self.stop_info: dict[str, Any] = {}
        self.problems: dict[str, Any] = {}

    async def start_sim(self, do_probe: bool = True) -> None:
        assert self.sim_key is not None
        self.sim = Simulator(self.sim_key, str(self.cluster.kubeconfig), self.name, self.bench.bin_dir,
                             self.bench.log_dir)
        if self.sim.kind == "shardlet" and self.bench.code:
            self.bench.check_code(self.name, self.sim_key)
        self.sim.start()
        self.meter.add("sim", self.sim.pid, self.sim.classify)
        if do_probe:
            try:
                self.probe_s = await probe(self.kube, 240, self.sim.running)
            except Exception as e:
                raise RuntimeError(f"{e}; log tail: {self.sim.log_tail()}") from e

    def sim_alive(self) -> bool:
        return self.sim is None or self.sim.running()

    def phase(self) -> Phase:
        return Phase(self)


@contextlib.asynccontextmanager
async def environment(bench: Bench, sim_key: str | None, *, start_sim: bool = True) -> AsyncIterator[Env]:
    env = Env(bench, sim_key)
    t0 = time.monotonic()
    try:
        await asyncio.to_thread(env.cluster.up, Options(**CLUSTER_OPTIONS), 180)
        st = env.cluster.state()
        for comp in ("etcd", "kube-apiserver", "kube-controller-manager"):
            if comp in st.procs:
                env.meter.add(comp, st.procs[comp].pid, procs.constant(comp))
        env.meter.add("bench", os.getpid(), tree=False)   # the creator and watches: same for every simulator
        env.meter.start()
        env.kube = Kube.from_kubeconfig(str(env.cluster.kubeconfig), max_connections=bench.concurrency + 16,
                                        user_agent="shardlet-bench")
        await wait_default_sa(env.kube)
        if sim_key and start_sim:
            await env.start_sim()
        bench.log(f"  cluster {env.name} up" + (f", {label(sim_key)} serving (probe {env.probe_s:.1f}s)"
                                                if sim_key and start_sim else "") + f" in {time.monotonic() - t0:.0f}s")
        yield env
    finally:
        await _teardown(env)


async def _teardown(env: Env) -> None:
    if env.sim is not None:
        try:
            env.stop_info = await asyncio.to_thread(env.sim.stop)
        except Exception as e:
            env.stop_info = {"error": repr(e)}
        try:
            env.problems = env.sim.problems()
            if env.problems.get("counts") or env.problems.get("tracebacks"):
                env.bench.problems.setdefault(env.sim.key, []).append(env.problems)
        except Exception:
            pass
    if env.kube is not None:
        with contextlib.suppress(Exception):
            await env.kube.close()
    env.meter.stop()
    try:
        await asyncio.to_thread(env.cluster.down)
    except Exception as e:
        env.bench.log(f"  warning: cluster {env.name} down failed: {e}")


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:500]


def _ready_timeout(n: int) -> float:
    return 120 + n / 10


async def bounded_call(coro: Any, n: int, what: str) -> Any:
    """Creating or deleting n objects: at least 10/s or it is an error (a stuck apiserver)."""
    try:
        return await asyncio.wait_for(coro, 120 + n / 10)
    except TimeoutError:
        raise TimeoutError(f"{what}: {n} objects not done in {120 + n / 10:.0f}s") from None


def record(scenario: str, sim: str | None, rep: int, size: dict[str, Any]) -> dict[str, Any]:
    return {"scenario": scenario, "sim": sim, "repeat": rep, "size": size, "m": {}, "x": {}, "error": None}


def _finish(rec: dict[str, Any], env: Env | None) -> None:
    if env is not None:
        if env.problems:
            rec["x"]["problems"] = env.problems
        if env.stop_info:
            rec["x"]["stop"] = env.stop_info


def _strip(ph: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in ph.items() if k != "by_pid"}


# -- 1. time to Ready / Running / deleted ----------------------------------------------------
async def shard_count(env: Env, key: str) -> int | None:
    """A counter of shardlet's status summed over its shards; None for kwok or when the status is
    not there."""
    if env.sim is None or env.sim.kind != "shardlet":
        return None
    st = await asyncio.to_thread(env.sim.status)
    if not st:
        return None
    return sum(int(s.get(key) or 0) for s in st.get("shards", []))


async def behind_leases(env: Env) -> int | None:
    """Stage writes so far that waited behind lease renewals (shardlet.precedence), all shards."""
    return await shard_count(env, "stage_writes_behind_leases")


def _gated(m: dict[str, Any], phase: str, before: int | None, after: int | None) -> int | None:
    """Record the phase's stage writes that took the narrow gate behind lease renewals."""
    if before is not None and after is not None:
        m[f"{phase}_writes_behind_leases"] = after - before
    return after


async def nodes_then_pods(bench: Bench, env: Env, n: int, pods: int, rec: dict[str, Any]) -> None:
    """Nodes (timed from the first create, simulator already serving), then pods, then delete."""
    m, x = rec["m"], rec["x"]
    nw = await NodeWatch(env.kube).start()
    pw = await PodWatch(env.kube).start() if pods else None
    tasks: list[asyncio.Task[dict[str, Any]]] = []
    try:
        gated = await behind_leases(env)
        ph = await env.phase().begin()
        series: list[tuple[float, int]] = []
        t_ref = time.monotonic()
        task = asyncio.create_task(create_nodes(env.kube, 0, n, bench.concurrency))
        tasks.append(task)

        def nodes_done() -> bool:
            if task.done() and task.exception():
                raise task.exception()  # type: ignore[misc]
            return task.done() and len(nw.ready) >= n
        t_ready = await wait_for(f"{n} nodes Ready", nodes_done, lambda: f"{len(nw.ready)}/{n} Ready, "
                                 f"{len(nw.exists)} exist", _ready_timeout(n), bench.log, env.sim_alive,
                                 series=series, count=lambda: len(nw.ready), t_ref=t_ref)
        c = task.result()
        cpu = await ph.end()
        m.update(nodes_ready_s=round(t_ready - c["t0"], 3), nodes_create_s=c["create_s"],
                 nodes_after_created_s=round(t_ready - c["t1"], 3),
                 nodes_per_s=round(n / max(1e-6, t_ready - c["t0"]), 1),
                 nodes_sim_cpu_s=cpu["sim_cpu_s"], nodes_sim_cpu_with_ray_s=cpu["sim_cpu_with_ray_s"],
                 nodes_apiserver_cpu_s=cpu["apiserver_cpu_s"], nodes_etcd_cpu_s=cpu["etcd_cpu_s"])
        x["nodes_phase"] = _strip(cpu)
        x["series_nodes"] = series
        _gated(m, "nodes", gated, await behind_leases(env))
        bench.log(f"    {n} nodes Ready in {m['nodes_ready_s']:.1f}s (created in {c['create_s']:.1f}s)")
        if not pods or pw is None:
            return
        m["nodes_settle_s"] = await settle(nw, bench.log, env.sim_alive)
        # pods, bound round-robin
        gated = await behind_leases(env)
        ph = await env.phase().begin()
        series = []
        t_ref = time.monotonic()
        ptask = asyncio.create_task(create_pods(env.kube, pods, n, bench.concurrency))
        tasks.append(ptask)

        def pods_done() -> bool:
            if ptask.done() and ptask.exception():
                raise ptask.exception()  # type: ignore[misc]
            return ptask.done() and len(pw.running) >= pods
        t_run = await wait_for(f"{pods} pods Running", pods_done, lambda: f"{len(pw.running)}/{pods} Running, "
                               f"{len(pw.exists)} exist", _ready_timeout(pods), bench.log, env.sim_alive,
                               series=series, count=lambda: len(pw.running), t_ref=t_ref)
        c = ptask.result()
        cpu = await ph.end()
        mem = mem_summary(env.meter.memory())
        m.update(pods_running_s=round(t_run - c["t0"], 3), pods_create_s=c["create_s"],
                 pods_after_created_s=round(t_run - c["t1"], 3),
                 pods_per_s=round(pods / max(1e-6, t_run - c["t0"]), 1),
                 pods_sim_cpu_s=cpu["sim_cpu_s"], pods_sim_cpu_with_ray_s=cpu["sim_cpu_with_ray_s"],
                 pods_apiserver_cpu_s=cpu["apiserver_cpu_s"], pods_etcd_cpu_s=cpu["etcd_cpu_s"],
                 pods_sim_rss_mib=mem["sim_rss_mib"], pods_sim_pss_mib=mem["sim_pss_mib"],
                 pods_sim_pss_with_ray_mib=mem["sim_pss_with_ray_mib"])
        x["pods_phase"] = _strip(cpu)
        x["series_pods"] = series
        gated = _gated(m, "pods", gated, await behind_leases(env))
        bench.log(f"    {pods} pods Running in {m['pods_running_s']:.1f}s (created in {c['create_s']:.1f}s)")
        # delete all
        ph = await env.phase().begin()
        series = []
        t_ref = time.monotonic()
        names = [pod_name(i) for i in range(pods)]
        dtask = asyncio.create_task(delete_pods(env.kube, names, bench.concurrency))
        tasks.append(dtask)

        def gone() -> bool:
            if dtask.done() and dtask.exception():
                raise dtask.exception()  # type: ignore[misc]
            return dtask.done() and not pw.exists
        t_gone = await wait_for(f"{pods} pods deleted", gone, lambda: f"{len(pw.exists)} left",
                                _ready_timeout(pods), bench.log, env.sim_alive,
                                series=series, count=lambda: pods - len(pw.exists), t_ref=t_ref)
        d = dtask.result()
        cpu = await ph.end()
        m.update(pods_deleted_s=round(t_gone - d["t0"], 3), pods_delete_request_s=d["request_s"],
                 pods_deleted_per_s=round(pods / max(1e-6, t_gone - d["t0"]), 1),
                 delete_sim_cpu_s=cpu["sim_cpu_s"], delete_sim_cpu_with_ray_s=cpu["sim_cpu_with_ray_s"])
        x["delete_phase"] = _strip(cpu)
        x["series_deleted"] = series
        _gated(m, "delete", gated, await behind_leases(env))
        bench.log(f"    {pods} pods deleted in {m['pods_deleted_s']:.1f}s")
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await nw.stop()
        if pw is not None:
            await pw.stop()


async def scenario_ready(bench: Bench, sim: str, rep: int) -> list[dict[str, Any]]:
    sizes = sorted(int(v) for v in bench.sizes["nodes"])
    pods = int(bench.sizes["pods"])
    out = []
    for n in sizes:
        p = pods if n == sizes[-1] else 0
        rec = record("ready", sim, rep, {"nodes": n, "pods": p})
        bench.log(f"  [ready] {label(sim)}: {n} nodes" + (f", {p} pods" if p else ""))
        env = None
        try:
            async with environment(bench, sim) as env:
                rec["m"]["probe_s"] = env.probe_s
                await nodes_then_pods(bench, env, n, p, rec)
        except Exception as e:
            rec["error"] = _err(e)
            bench.log(f"    FAILED: {rec['error']}")
        _finish(rec, env)
        out.append(rec)
    return out


# -- 2. lease-hold capacity ------------------------------------------------------------------
async def _skipped_so_far(env: Env, step: dict[str, Any]) -> None:
    """Lease renewals of not-Ready nodes shardlet put off while it ran behind (shardlet.controllers.leases),
    counted from the simulator's start, after the ramp."""
    n = await shard_count(env, "lease_renewals_skipped_not_ready")
    if n is not None:
        step["lease_renewals_skipped_not_ready"] = n


async def hold_step(bench: Bench, env: Env, nw: NodeWatch, have: int, n: int) -> dict[str, Any]:
    hold = float(bench.sizes["hold"])
    step: dict[str, Any] = {"nodes": n, "ok": False}
    t0 = time.monotonic()
    base = len(nw.transitions)
    c = await bounded_call(create_nodes(env.kube, have, n, bench.concurrency), n - have, "create nodes")
    step["create_s"] = c["create_s"]
    try:
        t_ready = await wait_for(f"{n} nodes Ready", lambda: len(nw.ready) >= n,
                                 lambda: f"{len(nw.ready)}/{n} Ready", 120 + n / 25, bench.log, env.sim_alive,
                                 count=lambda: len(nw.ready), stall=float(bench.sizes.get("hold_stall", 240)))
    except (TimeoutError, RuntimeError) as e:
        # a size that never got all Ready often knocked earlier nodes over: say which
        step.update(reason=f"not all Ready: {e}", ready_n=len(nw.ready), **ramp_breakdown(nw, base, have))
        await _skipped_so_far(env, step)
        return step
    step["ready_s"] = round(t_ready - t0, 1)
    await _skipped_so_far(env, step)
    # kube-controller-manager taints every new node not-ready and untaints it once Ready (a GET and
    # two PATCHes of the Node each); measured in run 2026-11-28T1353 it was still working off that
    # backlog of the ramp during the hold (45 node PATCHes/s at 24k). The hold measures leases
    # alone once it has caught up, as the steady scenario does; if it cannot, it holds anyway.
    try:
        step["settle_s"] = await settle(nw, bench.log, env.sim_alive, timeout=120 + n / 50)
    except TimeoutError:
        step["settle_s"] = None
    step["tainted_at_hold"] = len(nw.tainted)
    step.update(ramp_breakdown(nw, base, have))
    base = len(nw.transitions)
    ph = await env.phase().begin()
    ages: list[dict[str, Any]] = []
    lags: list[float] = []
    every = max(5.0, min(30.0, hold / 6))
    end = time.monotonic() + hold
    bench.log(f"    holding {n} nodes for {hold:.0f}s")
    while time.monotonic() < end:
        await asyncio.sleep(min(every, max(0.0, end - time.monotonic())))
        if not env.sim_alive():
            step["reason"] = "simulator exited"
            break
        try:
            ages.append(await lease_ages(env.kube))
        except Exception as e:
            ages.append({"error": _err(e)})
        if env.sim is not None and env.sim.kind == "shardlet":
            st = await asyncio.to_thread(env.sim.status)
            for s in (st or {}).get("shards", []):
                if s.get("lease_lag_p99") is not None:
                    lags.append(float(s["lease_lag_p99"]))
        if len(nw.transitions) > base:
            break   # it failed; no need to sit out the rest
    cpu = await ph.end()
    held = cpu["wall_s"]
    trans = len(nw.transitions) - base
    not_ready = n - len(nw.ready)
    puts = cpu["requests"].get("PUT leases", 0)
    good_ages = [a for a in ages if "max" in a]
    step.update(
        held_s=round(held, 1), transitions=trans, not_ready_at_end=not_ready,
        notready_nodes=len({name for _, name in nw.transitions[base:]}),
        lease_puts_per_s=round(puts / max(held, 1e-6), 1), expected_puts_per_s=round(n / 10, 1),
        lease_age_p50_s=max((a["p50"] for a in good_ages), default=None),
        lease_age_p99_s=max((a["p99"] for a in good_ages), default=None),
        lease_age_max_s=max((a["max"] for a in good_ages), default=None),
        **_lag_p99(lags),
        sim_cpu_s=cpu["sim_cpu_s"], sim_cpu_with_ray_s=cpu["sim_cpu_with_ray_s"],
        apiserver_cpu_s=cpu["apiserver_cpu_s"], etcd_cpu_s=cpu["etcd_cpu_s"],
        sim_cpu_per_1k_nodes_min=round(cpu["sim_cpu_s"] / (n / 1000) / (held / 60), 3) if held > 0 else None,
        mem=mem_summary(env.meter.memory()),
        # where the box's CPU and the apiserver's requests went while the size held: what the raw
        # writer (scenario 5) does not have to share the apiserver with
        cpu_pct={g: round(100 * v / held, 1) for g, v in cpu["groups"].items()} if held > 0 else {},
        requests_per_s={k: round(v / held, 1) for k, v in sorted(cpu["requests"].items(), key=lambda kv: -kv[1])[:8]}
        if held > 0 else {},
    )
    step["ok"] = trans == 0 and not_ready == 0 and "reason" not in step and held >= hold * 0.98
    if not step["ok"] and "reason" not in step:
        step["reason"] = f"{trans} NotReady transitions ({step['notready_nodes']} nodes), {not_ready} not Ready at end"
    bench.log(f"    {n} nodes: {'held' if step['ok'] else 'FAILED'}; lease PUT/s {step['lease_puts_per_s']} "
              f"(need {step['expected_puts_per_s']}), lease age max {step['lease_age_max_s']}s"
              + ("" if step["ok"] else f" ({step['reason']})"))
    return step


def ramp_breakdown(nw: NodeWatch, base: int, have: int) -> dict[str, Any]:
    """Which nodes went NotReady while a step added nodes: ones this step added (their first lease
    came too late) or ones that were already there (their renewals fell behind), and how long after
    an added node first turned Ready it went NotReady."""
    ramp = nw.transitions[base:]
    if not ramp:
        return {"ramp_transitions": 0}
    new = [(t, name) for t, name in ramp if int(name.rsplit("-", 1)[1]) >= have]
    added = len(new)
    after = sorted(t - nw.first_ready[name] for t, name in new if name in nw.first_ready)
    return {"ramp_transitions": len(ramp),
            "ramp_transitions_added_nodes": added, "ramp_transitions_earlier_nodes": len(ramp) - added,
            "ramp_notready_after_ready_s": {"min": round(after[0], 1), "p50": round(after[len(after) // 2], 1),
                                            "max": round(after[-1], 1)} if after else None}


def _round_size(v: float) -> int:
    step = 100 if v < 10000 else 500
    return int(round(v / step) * step)


def next_hold_size(n: int, grow: float) -> int:
    """The lease-hold size after `n`: n x grow, rounded, and at least one node more."""
    return max(n + 1, _round_size(n * grow))


async def scenario_hold(bench: Bench, sim: str, rep: int) -> list[dict[str, Any]]:
    start, cap = int(bench.sizes["hold_start"]), int(bench.sizes["hold_max"])
    grow = float(bench.sizes.get("hold_grow", 2))
    in_state = [str(v) for v in bench.sizes.get("hold_writer") or []]
    rec = record("lease-hold", sim, rep, {"hold_s": float(bench.sizes["hold"]), "start": start, "max": cap,
                                          "grow": grow, **({"writer_in_state": in_state} if in_state else {})})
    steps: list[dict[str, Any]] = []
    rec["x"]["steps"] = steps
    good, bad = 0, None
    env = None
    bench.log(f"  [lease-hold] {label(sim)}: from {start} nodes, growing x{grow:g} up to {cap}")
    try:
        n = start
        # one cluster grows until a size fails; the in-state writer stops the simulator, so after it
        # the next size starts on a fresh cluster
        while n <= cap and bad is None:
            async with environment(bench, sim) as env:
                nw = await NodeWatch(env.kube).start()
                try:
                    have = 0
                    while n <= cap:
                        step = await hold_step(bench, env, nw, have, n)
                        steps.append(step)
                        have = n
                        if not step["ok"]:
                            bad = n
                            break
                        good = n
                        n = next_hold_size(n, grow)
                        if in_state:
                            step["writer_in_state"] = await writer_in_state(bench, env, nw, good, in_state)
                            break
                finally:
                    await nw.stop()
            _finish(rec, env)
        mid = _round_size((good + bad) / 2) if bad is not None else 0
        if bad is not None and int(bench.sizes.get("hold_bisect", 1)) and good < mid < bad:
            bench.log(f"  [lease-hold] {label(sim)}: bisect at {mid} nodes (fresh cluster)")
            env = None
            async with environment(bench, sim) as env:
                nw = await NodeWatch(env.kube).start()
                try:
                    step = await hold_step(bench, env, nw, 0, mid)
                    step["bisect"] = True
                    steps.append(step)
                    if step["ok"]:
                        good = mid
                        if in_state:
                            step["writer_in_state"] = await writer_in_state(bench, env, nw, mid, in_state)
                    else:
                        bad = mid
                finally:
                    await nw.stop()
    except Exception as e:
        rec["error"] = _err(e)
        bench.log(f"    FAILED: {rec['error']}")
    _finish(rec, env)
    ok_steps = [s for s in steps if s.get("ok") and s["nodes"] == good]
    rec["m"].update(capacity_nodes=good, first_failure_nodes=bad, capped=bad is None and rec["error"] is None,
                    capacity_lease_puts_per_s=round(good / 10, 1),
                    capacity_sim_cpu_per_1k_nodes_min=ok_steps[-1].get("sim_cpu_per_1k_nodes_min") if ok_steps else None)
    bench.log(f"  [lease-hold] {label(sim)}: capacity {good} nodes" + (" (reached --sizes hold_max)" if bad is None else
                                                                      f", failed at {bad}"))
    return [rec]


def _lag_p99(lags: list[float]) -> dict[str, float | None]:
    """The worst shard's renewal-lag p99. Past the top bucket of shardlet's histogram the estimate
    is +Inf, which strict JSON cannot carry: then the bound it is above, under its own key."""
    p99 = max(lags) if lags else None
    if p99 is not None and math.isinf(p99):
        return {"shardlet_lease_lag_p99_s": None, "shardlet_lease_lag_p99_above_s": LEASE_LAG_BUCKETS[-1]}
    return {"shardlet_lease_lag_p99_s": p99}


async def writer_in_state(bench: Bench, env: Env, nw: NodeWatch, n: int, levels: list[str]) -> dict[str, Any]:
    """The raw writer against the cluster a simulator just held: freeze the simulator (SIGSTOP, so
    no lease waits out a graceful stop), then let the writer renew the n nodes' own leases (oldest
    first) at each level for `writer_duration`. Same apiserver, etcd, Node and Lease objects,
    controller-manager watching; what the simulator adds (its CPU, its requests) is gone, its
    connections and watches stay open but idle, so this is the limit a simulator's lease rate at
    that size can be held against. The nodes should stay Ready throughout: the
    writer renews faster than the simulator did."""
    out: dict[str, Any] = {"nodes": n, "levels": {}}
    assert env.sim is not None
    out["sim_freeze"] = env.sim.freeze()
    duration = float(bench.sizes["writer_duration"])
    base = len(nw.transitions)
    bench.log(f"    raw writer on this cluster: {n} node leases, simulator frozen, levels {','.join(levels)}")
    for lv in levels:
        lb = len(nw.transitions)
        try:
            m, _, cpu = await writer_level(env, NODE_PREFIX, n, lv, duration)
            wall = cpu["wall_s"]
            m.update(transitions=len(nw.transitions) - lb,
                     cpu_pct={g: round(100 * v / wall, 1) for g, v in cpu["groups"].items()},
                     requests_per_s={k: round(v / wall, 1) for k, v in
                                     sorted(cpu["requests"].items(), key=lambda kv: -kv[1])[:8]})
        except Exception as e:
            m = {"error": _err(e)}
            bench.log(f"    {lv} FAILED: {m['error']}")
        out["levels"][lv] = m
    rates = [float(m["writes_per_s"]) for m in out["levels"].values() if "writes_per_s" in m]
    out.update(best_writes_per_s=max(rates) if rates else None, transitions=len(nw.transitions) - base,
               not_ready_at_end=n - len(nw.ready))
    return out


# -- 3. steady state: CPU and memory ---------------------------------------------------------
async def scenario_steady(bench: Bench, sim: str, rep: int) -> list[dict[str, Any]]:
    n, pods = int(bench.sizes["steady_nodes"]), int(bench.sizes["steady_pods"])
    window, settle_s = float(bench.sizes["window"]), float(bench.sizes["settle"])
    rec = record("steady", sim, rep, {"nodes": n, "pods": pods, "window_s": window})
    m, x = rec["m"], rec["x"]
    bench.log(f"  [steady] {label(sim)}: {n} idle nodes for {window:.0f}s, then {pods} pods")
    env = None
    try:
        async with environment(bench, sim) as env:
            nw = await NodeWatch(env.kube).start()
            pw = await PodWatch(env.kube).start()
            try:
                await bounded_call(create_nodes(env.kube, 0, n, bench.concurrency), n, "create nodes")
                await wait_for(f"{n} nodes Ready", lambda: len(nw.ready) >= n, lambda: f"{len(nw.ready)}/{n}",
                               _ready_timeout(n), bench.log, env.sim_alive)
                m["nodes_settle_s"] = await settle(nw, bench.log, env.sim_alive)
                await asyncio.sleep(settle_s)
                base = len(nw.transitions)
                ph = await env.phase().begin()
                await asyncio.sleep(window)
                idle = await ph.end()
                mem = mem_summary(env.meter.memory())
                per = (n / 1000) * (idle["wall_s"] / 60)
                m.update(idle_sim_cpu_per_1k_nodes_min=round(idle["sim_cpu_s"] / per, 4),
                         idle_sim_cpu_with_ray_per_1k_nodes_min=round(idle["sim_cpu_with_ray_s"] / per, 4),
                         idle_ray_daemons_cpu_per_min=round(idle["ray_daemons_cpu_s"] / (idle["wall_s"] / 60), 3),
                         idle_apiserver_cpu_per_1k_nodes_min=round(idle["apiserver_cpu_s"] / per, 4),
                         idle_etcd_cpu_per_1k_nodes_min=round(idle["etcd_cpu_s"] / per, 4),
                         idle_sim_cpu_pct=round(100 * idle["sim_cpu_s"] / idle["wall_s"], 1),
                         idle_lease_puts_per_s=round(idle["requests"].get("PUT leases", 0) / idle["wall_s"], 1),
                         idle_transitions=len(nw.transitions) - base,
                         idle_sim_rss_mib=mem["sim_rss_mib"], idle_sim_pss_mib=mem["sim_pss_mib"],
                         idle_sim_rss_with_ray_mib=mem["sim_rss_with_ray_mib"],
                         idle_sim_pss_with_ray_mib=mem["sim_pss_with_ray_mib"])
                x["idle_phase"] = _strip(idle)
                x["idle_mem"] = mem
                x["processes"] = env.meter.processes()
                bench.log(f"    idle: {m['idle_sim_cpu_per_1k_nodes_min']:.3f} CPU-s per 1k nodes per min "
                          f"({m['idle_sim_cpu_with_ray_per_1k_nodes_min']:.3f} with Ray), PSS {mem['sim_pss_mib']} MiB")
                if pods:
                    ph = await env.phase().begin()
                    c = await bounded_call(create_pods(env.kube, pods, n, bench.concurrency), pods, "create pods")
                    await wait_for(f"{pods} pods Running", lambda: len(pw.running) >= pods,
                                   lambda: f"{len(pw.running)}/{pods}", _ready_timeout(pods), bench.log, env.sim_alive)
                    run = await ph.end()
                    mem2 = mem_summary(env.meter.memory())
                    ph = await env.phase().begin()
                    await bounded_call(delete_pods(env.kube, [pod_name(i) for i in range(pods)], bench.concurrency),
                                       pods, "delete pods")
                    await wait_for(f"{pods} pods deleted", lambda: not pw.exists, lambda: f"{len(pw.exists)} left",
                                   _ready_timeout(pods), bench.log, env.sim_alive)
                    dele = await ph.end()
                    k = pods / 10000
                    m.update(pods_sim_cpu_per_10k=round(run["sim_cpu_s"] / k, 3),
                             pods_sim_cpu_with_ray_per_10k=round(run["sim_cpu_with_ray_s"] / k, 3),
                             delete_sim_cpu_per_10k=round(dele["sim_cpu_s"] / k, 3),
                             delete_sim_cpu_with_ray_per_10k=round(dele["sim_cpu_with_ray_s"] / k, 3),
                             pods_apiserver_cpu_per_10k=round(run["apiserver_cpu_s"] / k, 3),
                             pods_sim_rss_mib=mem2["sim_rss_mib"], pods_sim_pss_mib=mem2["sim_pss_mib"],
                             pods_sim_pss_with_ray_mib=mem2["sim_pss_with_ray_mib"],
                             pods_create_s=c["create_s"])
                    x["pods_phase"] = _strip(run)
                    x["delete_phase"] = _strip(dele)
                    bench.log(f"    pods: {m['pods_sim_cpu_per_10k']:.1f} CPU-s per 10k to Running, "
                              f"{m['delete_sim_cpu_per_10k']:.1f} to delete; PSS {mem2['sim_pss_mib']} MiB")
            finally:
                await nw.stop()
                await pw.stop()
    except Exception as e:
        rec["error"] = _err(e)
        bench.log(f"    FAILED: {rec['error']}")
    _finish(rec, env)
    return [rec]


# -- 4. scaling with shards: catch up with a backlog -----------------------------------------
async def scenario_scaling(bench: Bench, sim: str, rep: int) -> list[dict[str, Any]]:
    n, pods = int(bench.sizes["scaling_nodes"]), int(bench.sizes["scaling_pods"])
    rec = record("scaling", sim, rep, {"nodes": n, "pods": pods})
    m, x = rec["m"], rec["x"]
    bench.log(f"  [scaling] {label(sim)}: {n} nodes + {pods} pods created first, then the simulator starts")
    env = None
    try:
        async with environment(bench, sim, start_sim=False) as env:
            nw = await NodeWatch(env.kube).start()
            pw = await PodWatch(env.kube).start()
            try:
                await bounded_call(create_nodes(env.kube, 0, n, bench.concurrency), n, "create nodes")
                if pods:
                    await bounded_call(create_pods(env.kube, pods, n, bench.concurrency), pods, "create pods")
                await wait_for("backlog visible", lambda: len(nw.exists) >= n and len(pw.exists) >= pods,
                               lambda: f"{len(nw.exists)} nodes, {len(pw.exists)} pods", 120, bench.log)
                ph = await env.phase().begin()
                t0 = time.monotonic()
                await env.start_sim(do_probe=False)
                await wait_for("backlog served", lambda: len(nw.ready) >= n and len(pw.running) >= pods,
                               lambda: f"{len(nw.ready)}/{n} Ready, {len(pw.running)}/{pods} Running",
                               _ready_timeout(n + pods), bench.log, env.sim_alive)
                shard_pids = await asyncio.to_thread(env.sim.shard_pids) if env.sim else {}
                cpu = await ph.end()
                nr = sorted(nw.first_ready.values())
                pr = sorted(pw.first_running.values())
                m.update(startup_s=round(min(nr[0], pr[0] if pr else nr[0]) - t0, 2),
                         nodes_done_s=round(nr[-1] - t0, 2), pods_done_s=round(pr[-1] - t0, 2) if pr else None,
                         nodes_per_s=round(n / max(1e-6, nr[-1] - nr[0]), 1),
                         pods_per_s=round(pods / max(1e-6, pr[-1] - pr[0]), 1) if pr else None,
                         sim_cpu_s=cpu["sim_cpu_s"], sim_cpu_with_ray_s=cpu["sim_cpu_with_ray_s"],
                         ray_daemons_cpu_s=cpu["ray_daemons_cpu_s"], apiserver_cpu_s=cpu["apiserver_cpu_s"],
                         runner_cpu_s=cpu["groups"].get("runner", cpu["groups"].get("kwok", 0.0)))
                by_pid = cpu["by_pid"]
                per_shard = {s: round(by_pid.get(pid, 0.0), 2) for s, pid in shard_pids.items()}
                if env.sim is not None and env.sim.shards > 1 and per_shard:
                    vals = list(per_shard.values())
                    m.update(shard_cpu_max_s=max(vals), shard_cpu_mean_s=round(sum(vals) / len(vals), 2))
                    x["status"] = await asyncio.to_thread(env.sim.status)
                elif env.sim is not None:
                    m.update(shard_cpu_max_s=m["sim_cpu_s"], shard_cpu_mean_s=m["sim_cpu_s"])
                x["per_shard_cpu_s"] = per_shard
                x["phase"] = _strip(cpu)
                bench.log(f"    served in {m['nodes_done_s']:.1f}s / {m.get('pods_done_s')}s after start: "
                          f"{m['nodes_per_s']} nodes/s, {m['pods_per_s']} pods/s; sim CPU {cpu['sim_cpu_s']:.1f}s "
                          f"(+Ray {cpu['ray_daemons_cpu_s']:.1f}s), per shard {per_shard}")
            finally:
                await nw.stop()
                await pw.stop()
    except Exception as e:
        rec["error"] = _err(e)
        bench.log(f"    FAILED: {rec['error']}")
    _finish(rec, env)
    return [rec]


# -- 5. the physical limit: raw lease writes -------------------------------------------------
async def scenario_writer(bench: Bench, sim: str | None, rep: int) -> list[dict[str, Any]]:
    leases = int(bench.sizes["writer_leases"])
    duration = float(bench.sizes["writer_duration"])
    levels = [str(v) for v in bench.sizes["writer"]]
    out: list[dict[str, Any]] = []
    bench.log(f"  [writer] {leases} leases, levels {','.join(levels)}, {duration:.0f}s each")
    env = None
    try:
        async with environment(bench, None) as env:
            await bounded_call(create_leases(env.kube, leases, "bench-lease", bench.concurrency), leases, "create leases")
            await asyncio.sleep(2)
            for lv in levels:
                nproc, conc, encoding = parse_level(lv)
                rec = record("writer", None, rep, {"level": lv, "procs": nproc, "concurrency": conc, "encoding": encoding,
                                                   "leases": leases, "duration_s": duration})
                try:
                    rec["m"], rec["x"]["parts"], _ = await writer_level(env, "bench-lease", leases, lv, duration)
                except Exception as e:
                    rec["error"] = _err(e)
                    bench.log(f"    {lv} FAILED: {rec['error']}")
                out.append(rec)
                await asyncio.sleep(3)
    except Exception as e:
        rec = record("writer", None, rep, {"level": "setup"})
        rec["error"] = _err(e)
        bench.log(f"    FAILED: {rec['error']}")
        out.append(rec)
    return out


async def writer_level(env: Env, prefix: str, count: int, lv: str, duration: float
                       ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """One writer level (`64` or `2x64`) over the leases prefix-000000..: its numbers, each writer
    process's own report, and the phase (CPU by process, apiserver requests) around it."""
    nproc, conc, encoding = parse_level(lv)
    ph = await env.phase().begin()
    parts = await asyncio.gather(*(asyncio.to_thread(_run_writer, env, prefix, count, conc, duration, f"{i}/{nproc}",
                                                     encoding)
                                   for i in range(nproc)))
    cpu = await ph.end()
    wall = cpu["wall_s"]
    ok = sum(int(p["ok"]) for p in parts)
    secs = max(float(p["seconds"]) for p in parts)
    m = dict(writes_per_s=round(ok / secs, 1), conflicts=sum(int(p["conflicts"]) for p in parts),
             errors=sum(int(p["errors"]) for p in parts),
             latency_ms_p50=max(float(p["latency_ms_p50"] or 0) for p in parts),
             latency_ms_p99=max(float(p["latency_ms_p99"] or 0) for p in parts),
             writer_cpu_pct=round(100 * sum(float(p["writer_cpu_s"]) for p in parts) / secs, 1),
             apiserver_cpu_pct=round(100 * cpu["apiserver_cpu_s"] / wall, 1),
             # what one write costs the apiserver (its CPU over the phase, the writers' listing included)
             apiserver_cpu_ms_per_write=round(1000 * cpu["apiserver_cpu_s"] / ok, 3) if ok else None,
             etcd_cpu_pct=round(100 * cpu["etcd_cpu_s"] / wall, 1),
             lease_puts_counted=cpu["requests"].get("PUT leases", 0))
    env.bench.log(f"    {lv}: {m['writes_per_s']} writes/s, p99 {m['latency_ms_p99']} ms, CPU writer "
                  f"{m['writer_cpu_pct']}% apiserver {m['apiserver_cpu_pct']}% etcd {m['etcd_cpu_pct']}%")
    return m, parts, cpu


def _run_writer(env: Env, prefix: str, leases: int, conc: int, duration: float, part: str,
                encoding: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.writer", "--kubeconfig", str(env.cluster.kubeconfig), "--prefix", prefix,
           "--count", str(leases), "--concurrency", str(conc), "--duration", str(duration), "--part", part,
           "--encoding", encoding]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120,
                       cwd=str(Path(__file__).resolve().parent.parent))
    if r.returncode != 0:
        raise RuntimeError(f"writer {part} exited {r.returncode}: {r.stderr.strip()[-300:]}")
    out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


# -- profile: where shardlet's time goes -----------------------------------------------------
async def scenario_profile(bench: Bench, sim: str, rep: int) -> list[dict[str, Any]]:
    from bench.profile import fetch_pprof, go, py_spy

    n, pods = int(bench.sizes["profile_nodes"]), int(bench.sizes["profile_pods"])
    hold = sim != "kwok" and int(bench.sizes.get("profile_hold_nodes") or 0) > 0
    if n <= 0:   # profile_nodes=0: only the profile at hold
        return [await profile_at_hold(bench, sim, rep)] if hold else []
    idle = float(bench.sizes["profile_idle"])
    api_s = int(bench.sizes["profile_api_s"])
    rec = record("profile", sim, rep, {"nodes": n, "pods": pods, "idle_s": idle, "api_s": api_s})
    spy = py_spy() if sim != "kwok" else None   # py-spy reads Python; kwok gets the apiserver's side only
    if spy is None and sim != "kwok":
        rec["error"] = "py-spy not found: pip install -e '.[bench]'"
        return [rec]
    go_bin = go()
    bench.log(f"  [profile] {label(sim)}{' under py-spy' if spy else ''}: {n} nodes, {idle:.0f}s idle, {pods} pods, "
              f"delete; the apiserver's pprof for {api_s}s from the pods' creation")
    env = None
    out_file = bench.log_dir / f"profile-{sim}-{rep}.txt"
    api_file = bench.log_dir / f"profile-{sim}-{rep}.apiserver.pprof"
    try:
        async with environment(bench, sim) as env:
            assert env.sim is not None
            sp: subprocess.Popen[bytes] | None = None
            if spy is not None:
                cmd = _spy_cmd(spy, env.sim, out_file)
                spy_log = open(bench.log_dir / f"profile-{sim}-{rep}.pyspy.log", "wb")
                sp = subprocess.Popen(cmd, stdout=spy_log, stderr=subprocess.STDOUT, start_new_session=True)
                spy_log.close()
            api_prof: asyncio.Task[None] | None = None
            try:
                nw = await NodeWatch(env.kube).start()
                try:
                    await bounded_call(create_nodes(env.kube, 0, n, bench.concurrency), n, "create nodes")
                    await wait_for(f"{n} nodes Ready", lambda: len(nw.ready) >= n, lambda: f"{len(nw.ready)}/{n}",
                                   _ready_timeout(n), bench.log, env.sim_alive)
                    await asyncio.sleep(idle)
                finally:
                    await nw.stop()
                if pods:
                    pw = await PodWatch(env.kube).start()
                    try:
                        if go_bin is not None and api_s > 0:
                            ctx, base = env.cluster.admin_ssl(), env.kube.base

                            async def capture(pw: PodWatch = pw, ctx: Any = ctx, base: str = base) -> None:
                                await asyncio.to_thread(fetch_pprof, base, ctx, api_s, api_file)
                                # the work done in the window, to put the CPU-seconds per pod
                                rec["m"]["api_window_pods_running"] = len(pw.running)
                            api_prof = asyncio.create_task(capture())
                        await bounded_call(create_pods(env.kube, pods, n, bench.concurrency), pods, "create pods")
                        await wait_for(f"{pods} pods Running", lambda: len(pw.running) >= pods,
                                       lambda: f"{len(pw.running)}/{pods}", _ready_timeout(pods), bench.log,
                                       env.sim_alive)
                        if api_prof is not None:
                            await api_prof
                        await bounded_call(delete_pods(env.kube, [pod_name(i) for i in range(pods)],
                                                       bench.concurrency), pods, "delete pods")
                        await wait_for(f"{pods} pods deleted", lambda: not pw.exists, lambda: f"{len(pw.exists)} left",
                                       _ready_timeout(pods), bench.log, env.sim_alive)
                    finally:
                        await pw.stop()
            finally:
                if api_prof is not None and not api_prof.done():
                    api_prof.cancel()
                if sp is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(sp.pid, signal.SIGINT)
                    try:
                        await asyncio.to_thread(sp.wait, 60)
                    except subprocess.TimeoutExpired:
                        sp.kill()
        if sp is not None:
            _read_spy(bench, rec, out_file)
        await _read_pprof(bench, rec, go_bin, api_file)
    except Exception as e:
        rec["error"] = _err(e)
        bench.log(f"    FAILED: {rec['error']}")
    _finish(rec, env)
    return [rec, await profile_at_hold(bench, sim, rep)] if hold else [rec]


def _read_spy(bench: Bench, rec: dict[str, Any], out_file: Path) -> None:
    """py-spy's raw output into the record: top costs, sample count, the file it came from."""
    from bench.profile import parse_raw

    prof = parse_raw(out_file)
    rec["x"]["profile"] = prof
    rec["x"]["raw_file"] = str(out_file)
    rec["m"]["samples"] = prof.get("samples", 0)
    for row in prof.get("self", [])[:5]:
        bench.log(f"    self {row['pct']:5.1f}%  {row['frame']}")


async def _read_pprof(bench: Bench, rec: dict[str, Any], go_bin: str | None, api_file: Path) -> None:
    """The apiserver's pprof into the record, by handler (or why there is none)."""
    from bench.profile import parse_pprof

    if go_bin is None:
        rec["x"]["apiserver_profile"] = {"error": "no 'go' on PATH for 'go tool pprof'"}
    elif api_file.is_file():
        ap = await asyncio.to_thread(parse_pprof, go_bin, api_file)
        rec["x"]["apiserver_profile"] = ap
        rec["x"]["apiserver_raw_file"] = str(api_file)
        for row in ap.get("buckets", [])[:6]:
            bench.log(f"    apiserver {row['pct']:5.1f}%  {row['frame']}")


def _spy_cmd(spy: str, sim: Simulator, out_file: Path) -> list[str]:
    """py-spy at 100 Hz on the runner (S=1 runs in it; with Ray the shard workers are its descendants)."""
    cmd = [spy, "record", "--pid", str(sim.pid), "--rate", "100", "--format", "raw", "--output", str(out_file),
           "--nonblocking"]
    return [*cmd, "--subprocesses"] if sim.shards > 1 else cmd


async def profile_at_hold(bench: Bench, sim: str, rep: int) -> dict[str, Any]:
    """The hot path where capacity is decided: `profile_hold_nodes` nodes all Ready and the
    controller-manager's lifecycle taints gone, then, after `settle`, py-spy on the simulator and
    the apiserver's pprof over the same `profile_hold_s` window, with the lease PUTs served and each
    side's CPU in it. Nothing else runs: every cost in the window is holding the nodes (renewals,
    the heartbeat stage, the controller-manager)."""
    from bench.profile import fetch_pprof, go, py_spy

    n, window = int(bench.sizes["profile_hold_nodes"]), int(bench.sizes["profile_hold_s"])
    rec = record("profile", sim, rep, {"phase": "hold", "nodes": n, "window_s": window})
    spy, go_bin = py_spy(), go()
    if spy is None:
        rec["error"] = "py-spy not found: pip install -e '.[bench]'"
        return rec
    out_file = bench.log_dir / f"profile-hold-{sim}-{rep}.txt"
    api_file = bench.log_dir / f"profile-hold-{sim}-{rep}.apiserver.pprof"
    bench.log(f"  [profile at hold] {label(sim)}: {n} nodes Ready, then py-spy and the apiserver's pprof "
              f"for {window}s")
    env = None
    try:
        async with environment(bench, sim) as env:
            assert env.sim is not None
            nw = await NodeWatch(env.kube).start()
            try:
                await bounded_call(create_nodes(env.kube, 0, n, bench.concurrency), n, "create nodes")
                t0 = time.monotonic()
                await wait_for(f"{n} nodes Ready", lambda: len(nw.ready) >= n, lambda: f"{len(nw.ready)}/{n}",
                               _ready_timeout(n), bench.log, env.sim_alive)
                rec["m"]["ready_s"] = round(time.monotonic() - t0, 1)
                # the controller-manager's lifecycle taints gone, so its backlog from the ramp is not
                # in the window; then the ramp's first renewals come due
                rec["m"]["settle_s"] = await settle(nw, bench.log, env.sim_alive, timeout=120 + n / 50)
                await asyncio.sleep(float(bench.sizes["settle"]))
                base = rec["m"]["ramp_transitions"] = len(nw.transitions)
                cmd = [*_spy_cmd(spy, env.sim, out_file), "--duration", str(window)]
                with open(bench.log_dir / f"profile-hold-{sim}-{rep}.pyspy.log", "wb") as spy_log:
                    ph = await env.phase().begin()
                    sp = subprocess.Popen(cmd, stdout=spy_log, stderr=subprocess.STDOUT, start_new_session=True)
                    jobs = [asyncio.to_thread(sp.wait, window + 60)]
                    if go_bin is not None:
                        jobs.append(asyncio.to_thread(fetch_pprof, env.kube.base, env.cluster.admin_ssl(), window,
                                                      api_file))
                    try:
                        await asyncio.gather(*jobs)
                    finally:
                        if sp.poll() is None:
                            sp.kill()
                    cpu = await ph.end()
                transitions = len(nw.transitions) - base
            finally:
                await nw.stop()
        wall = float(cpu["wall_s"])
        puts = float(cpu["requests"].get("PUT leases", 0))
        rec["m"].update(
            lease_puts_per_s=round(puts / wall, 1), expected_puts_per_s=round(n / 10, 1),
            # the heartbeat stage's status PATCHes and the controller-manager's taint PATCHes
            node_patches_per_s=round(sum(float(v) for k, v in cpu["requests"].items()
                                         if k in ("PATCH nodes", "PATCH nodes/status")) / wall, 1),
            sim_cpu_pct=round(100 * cpu["sim_cpu_s"] / wall, 1),
            apiserver_cpu_pct=round(100 * cpu["apiserver_cpu_s"] / wall, 1),
            etcd_cpu_pct=round(100 * cpu["etcd_cpu_s"] / wall, 1),
            sim_cpu_us_per_put=round(1e6 * cpu["sim_cpu_s"] / puts, 1) if puts else None,
            transitions=transitions)
        rec["x"]["cpu"] = {k: v for k, v in cpu.items() if k != "by_pid"}
        bench.log(f"    {rec['m']['lease_puts_per_s']} lease PUT/s of {rec['m']['expected_puts_per_s']}, "
                  f"{label(sim)} {rec['m']['sim_cpu_pct']}% CPU ({rec['m']['sim_cpu_us_per_put']} us per PUT), "
                  f"apiserver {rec['m']['apiserver_cpu_pct']}%, {transitions} NotReady transitions")
        _read_spy(bench, rec, out_file)
        await _read_pprof(bench, rec, go_bin, api_file)
    except Exception as e:
        rec["error"] = _err(e)
        bench.log(f"    FAILED: {rec['error']}")
    _finish(rec, env)
    return rec


SCENARIOS: dict[str, Any] = {
    "writer": scenario_writer,
    "ready": scenario_ready,
    "scaling": scenario_scaling,
    "steady": scenario_steady,
    "lease-hold": scenario_hold,
    "profile": scenario_profile,
}
