"""Issue: shardlet as a Ray job on an existing Ray cluster of two raylets on this machine.

`ray job submit --working-dir . -- shardlet run --ray-address auto --keep-shards` starts the
coordinator; its shard actors are detached and spread over both raylets. Stopping the job (the
coordinator dies) leaves the shards renewing leases; a new job re-adopts them without moving a
node, and `shardlet stop` ends them. Without --keep-shards, `shardlet run --ray-address` stops
its shards on SIGTERM: none is left on the Ray cluster."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coordinator.endpoint import run_file
from shardlet.api import Kube
from shardlet.controlplane.cluster import Cluster, Options, free_port
from shardlet.scale import scale_nodes

from .conftest import (
    RAY_RBAC,
    ROOT,
    Kubectl,
    ReadyMonitor,
    ShardletProcess,
    files_holding,
    key_markers,
    lease_holders,
    poll,
    wait_reheld,
)

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Size:
    nodes: int
    pods: int
    hold: float


# CI runs the small case; `./dev slow` (-m slow) runs the full size through the same code
@pytest.fixture(scope="module", params=[pytest.param(Size(200, 0, 60), id="ci"),
                                        pytest.param(Size(2000, 0, 180), id="full", marks=pytest.mark.slow)])
def size(request: pytest.FixtureRequest) -> Size:
    out: Size = request.param
    return out

RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[dict[str, Any]]:
    ports = [str(free_port()) for _ in range(3)]
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("raycluster.py")), *ports],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
                            env=dict(os.environ, RAY_USAGE_STATS_ENABLED="0"))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, "the Ray cluster did not start"
        info: dict[str, Any] = json.loads(line)
        assert info["nodes"] == 2
        yield info
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture(scope="module")
def rc_cluster(bin_dir: Path, size: Size) -> Iterator[Cluster]:
    c = Cluster(f"e2e-ray-{os.getpid()}")
    c.up(Options(kube_api_qps=300, kube_api_burst=600), timeout=180)
    try:
        yield c
    finally:
        c.down()


def _submit(info: dict[str, Any], c: Cluster) -> str:
    def once() -> subprocess.CompletedProcess[str] | None:
        p = subprocess.run(
            [RAY, "job", "submit", "--address", info["dashboard"], "--working-dir", str(ROOT), "--no-wait", "--",
             sys.executable, "-m", "shardlet.cli", "--log-format", "json", "run", "--kubeconfig", str(c.kubeconfig),
             "--shards", "2", "--name", c.name, "--ray-address", "auto", "--keep-shards", *RAY_RBAC],
            capture_output=True, text=True, timeout=180, cwd=ROOT, env=dict(os.environ, RAY_USAGE_STATS_ENABLED="0"))
        if p.returncode != 0 and "No available agent" in p.stderr + p.stdout:
            return None   # the dashboard agent is still starting: Ray's documented answer
        assert p.returncode == 0, p.stdout + p.stderr
        return p
    p = poll(once, 120, 2, "ray job submit accepted")
    m = re.search(r"raysubmit_[A-Za-z0-9]+", p.stdout + p.stderr)
    assert m, p.stdout + p.stderr
    return m.group(0)


def _status(c: Cluster) -> dict[str, Any] | None:
    try:
        url = json.loads(run_file(c.name).read_text())["url"]
        with urllib.request.urlopen(url + "/status", timeout=10) as r:
            out: dict[str, Any] = json.loads(r.read())
            return out
    except (OSError, ValueError, KeyError):
        return None



def test_ray_job_on_two_raylets_and_coordinator_restart(ray_cluster: dict[str, Any], rc_cluster: Cluster, size: Size) -> None:
    k = Kubectl(rc_cluster.kubeconfig)
    job = _submit(ray_cluster, rc_cluster)
    st = poll(lambda: (s := _status(rc_cluster)) and len(s["shards"]) == 2 and all(x.get("started") for x in s["shards"]) and s,
              180, 1, "coordinator and 2 shards up")

    async def go() -> str:
        kube = Kube.from_kubeconfig(str(rc_cluster.kubeconfig))
        try:
            return await scale_nodes(kube, size.nodes, timeout=180)
        finally:
            await kube.close()
    assert f"Ready {size.nodes}" in asyncio.run(go())
    # all owned, and the coordinator done rebalancing (its epoch is what the re-adoption must keep)
    st = poll(lambda: (s := _status(rc_cluster)) and sum(x["nodes"] for x in s["shards"]) == size.nodes
              and s["coordinator"]["imbalance"] is not None and s["coordinator"]["imbalance"] <= 0.02 and s,
              90, 1, "all owned and balanced")
    # placed on both raylets
    assert len({x["ray_node"] for x in st["shards"]}) == 2, [x["ray_node"] for x in st["shards"]]
    epoch = st["coordinator"]["epoch"]
    owned = {x["lease_holder"]: x["nodes"] for x in st["shards"]}
    holders = wait_reheld(k, owned)

    # the coordinator dies; the detached shards keep every node Ready
    stop = subprocess.run([RAY, "job", "stop", "--address", ray_cluster["dashboard"], job], capture_output=True,
                          text=True, timeout=120)
    assert stop.returncode == 0, (job, stop.stdout, stop.stderr)
    poll(lambda: _status(rc_cluster) is None, 60, 1, "coordinator gone")
    mon = ReadyMonitor(k)
    job2 = None
    try:
        t0 = time.monotonic()
        renew0 = {i["metadata"]["name"]: i["spec"]["renewTime"] for i in k.json("get", "leases", "-n", "kube-node-lease")["items"]}
        mon.hold(size.hold)
        renew1 = {i["metadata"]["name"]: i["spec"]["renewTime"] for i in k.json("get", "leases", "-n", "kube-node-lease")["items"]}
        assert all(renew1[n] != renew0[n] for n in renew0), "leases stopped being renewed without a coordinator"
        assert time.monotonic() - t0 >= size.hold
        # a new coordinator re-adopts the shards: same table epoch, no node moves
        job2 = _submit(ray_cluster, rc_cluster)
        try:
            st2 = poll(lambda: (s := _status(rc_cluster)) and len(s["shards"]) == 2
                       and all("nodes" in x for x in s["shards"])
                       and sum(x["nodes"] for x in s["shards"]) == size.nodes and s, 180, 1, "coordinator re-adopted shards")
        except AssertionError as e:
            logs = subprocess.run([RAY, "job", "logs", "--address", ray_cluster["dashboard"], job2],
                                  capture_output=True, text=True, timeout=60).stdout
            raise AssertionError(f"{e}; status {_status(rc_cluster)}; job log tail:\n{logs[-4000:]}") from None
        assert st2["coordinator"]["epoch"] == epoch
        assert lease_holders(k) == holders
        assert not mon.not_ready
        # the job stopped again, `shardlet stop` ends the shards it left
        subprocess.run([RAY, "job", "stop", "--address", ray_cluster["dashboard"], job2], capture_output=True,
                       timeout=120, check=True)
        assert sorted(alive_shards(ray_cluster, rc_cluster.name)) == [f"{rc_cluster.name}-shard-0",
                                                                        f"{rc_cluster.name}-shard-1"]
        out = stop_shards(ray_cluster, rc_cluster.name)
        assert out.startswith(f"2 shard(s) of {rc_cluster.name} stopped"), out
        poll(lambda: not alive_shards(ray_cluster, rc_cluster.name), 30, 1, "no shard actor alive")
        assert stop_shards(ray_cluster, rc_cluster.name).startswith("0 shard(s)")
    finally:
        mon.stop()
        subprocess.run([RAY, "job", "stop", "--address", ray_cluster["dashboard"], job2 or job],
                       capture_output=True, timeout=120)
        stop_shards(ray_cluster, rc_cluster.name)


def alive_shards(info: dict[str, Any], name: str) -> list[str]:
    """Names of the live ShardActors of run `name` on the Ray cluster (Ray's state API)."""
    from ray.util.state import list_actors

    actors = list_actors(address=info["dashboard"], filters=[("state", "=", "ALIVE")], limit=1000, timeout=60)
    return [a.name for a in actors if (a.name or "").startswith(f"{name}-shard-")]


def stop_shards(info: dict[str, Any], name: str) -> str:
    p = subprocess.run([sys.executable, "-m", "shardlet.cli", "stop", "--ray-address", info["gcs"], "--name", name],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout.strip().splitlines()[-1]


def test_run_on_a_ray_cluster_stops_its_shards_on_sigterm(ray_cluster: dict[str, Any], rc_cluster: Cluster,
                                                           tmp_path: Path) -> None:
    """Without --keep-shards the shards are the coordinator's: SIGTERM stops them, on an external
    Ray cluster too; they ran on a pushed token, and no file in the temp directory (the Ray
    cluster's session, its logs and spilled objects included) holds the admin key."""
    name = f"{rc_cluster.name}-t"
    tmp = Path(tempfile.gettempdir())
    sp = ShardletProcess(rc_cluster.kubeconfig, tmp_path / "run.log", "--name", name, "--shards", "2",
                         "--ray-address", ray_cluster["gcs"], *RAY_RBAC)
    try:
        sp.wait_for("coordinator_ready", 180)
        assert sorted(alive_shards(ray_cluster, name)) == [f"{name}-shard-0", f"{name}-shard-1"]
        sp.wait_for("slice_assigned", 60)
        sp.proc.send_signal(signal.SIGTERM)
        assert sp.proc.wait(60) == 0, sp.tail()
        poll(lambda: not alive_shards(ray_cluster, name), 30, 1, "no shard actor alive after SIGTERM")
        assert not files_holding([tmp / "ray"], key_markers(rc_cluster.kubeconfig))
    finally:
        if sp.proc.poll() is None:
            sp.stop()
        stop_shards(ray_cluster, name)
