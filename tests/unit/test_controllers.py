"""The controllers' shape: validated configs, one Ownership for all, and the shard's wiring of
Node -> Lease and Pod controllers through callbacks (no apiserver: handlers fed as a watch would)."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import pytest

from shardlet.api import ApiError
from shardlet.controllers.leases import LeaseControllerConfig
from shardlet.controllers.nodes import NodeController, NodeControllerConfig
from shardlet.controllers.player import PlayerConfig
from shardlet.controllers.pods import PodController, PodControllerConfig
from shardlet.controllers.stages import StageController, StageControllerConfig
from shardlet.discovery import PODS, Discovery, Resource
from shardlet.ownership import EVERYTHING, Ownership, Table, bucket, uid_bucket
from shardlet.scale import NODE_PARAMS, POD_PARAMS, node_manifest, pod_spec
from shardlet.shard import Shard, ShardConfig
from shardlet.stages.engine import StageEngine
from shardlet.stages.model import parse_stage
from shardlet.watch import obj_key
from shardlet.writer import Writer

from .fakes import DeadKube, leases_held


def test_configs_refuse_bad_values_naming_the_field() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        NodeControllerConfig("s", concurrency=0)
    with pytest.raises(ValueError, match="only k=v and k"):
        NodeControllerConfig("s", annotation_selector="a!=b")
    assert NodeControllerConfig("s", annotation_selector="a=b,c").annotations == (("a", "b"), ("c", None))
    with pytest.raises(ValueError, match="watch must be 'cluster' or 'node'"):
        PodControllerConfig("s", watch="pods")
    with pytest.raises(ValueError, match="duration"):
        LeaseControllerConfig("h", duration=0)
    with pytest.raises(ValueError, match="holder"):
        LeaseControllerConfig("")
    with pytest.raises(ValueError, match="retry_after"):
        PlayerConfig(PODS, retry_after=-1)
    with pytest.raises(ValueError, match="invalid"):
        PodController(None, None, PodControllerConfig("s", cidr="10.0.0.0/99"), None,   # type: ignore[arg-type]
                      funcs={}, serves=lambda _n: True, node=lambda _n: None)


def test_ownership_is_one_value_for_nodes_and_objects() -> None:
    assert EVERYTHING.owns_node("any") and EVERYTHING.owns_object({}) and not EVERYTHING.sharded
    old = Table(1, ("a", "b"), tuple(b % 2 for b in range(16)))
    new = Table(2, ("a", "b", "c"), tuple(b % 3 for b in range(16)))
    a = Ownership.of("a", old)
    assert a.mine == old.buckets_of("a") and a.count == 16
    during = Ownership.of("a", old, new)               # a release keeps what both tables give
    assert during.mine == old.buckets_of("a") & new.buckets_of("a")
    for name in (f"n-{i}" for i in range(50)):
        assert during.owns_node(name) == (bucket(name, 16) in during.mine)
    obj = {"metadata": {"uid": "u-1", "name": "x", "namespace": "ns"}}
    assert a.owns_object(obj) == (uid_bucket("u-1", 16) in a.mine)
    assert Ownership.of("z", old).bucket_selector("l") == "l in (none)"
    assert Ownership(4, frozenset({3, 1})).bucket_selector("l") == "l in (1,3)"
    with pytest.raises(ValueError):
        Ownership.of("a")


def _node(name: str, index: int) -> dict[str, Any]:
    n = node_manifest(name, index, NODE_PARAMS)
    n["metadata"].update(uid=f"uid-{name}", resourceVersion="1")
    return n


def _pod(name: str, node: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "resourceVersion": "1"},
            "spec": {**pod_spec(POD_PARAMS), "nodeName": node}, "status": {"phase": "Pending"}}


async def test_a_new_slice_moves_nodes_with_their_leases_and_pods() -> None:
    kube = DeadKube()
    table = Table(1, ("a", "b"), tuple(b % 2 for b in range(8)))
    s = leases_held(Shard(kube, ShardConfig(watch_stages=False, token_exchange=False), Ownership.of("a", table)))  # type: ignore[arg-type]
    names = [f"n-{i}" for i in range(24)]
    for i, n in enumerate(names):
        s.nodes.on_node("ADDED", _node(n, i))
        s.pods.on_pod("ADDED", _pod(f"p-{n}", n))
    mine = {n for n in names if bucket(n, 8) in table.buckets_of("a")}
    assert 0 < len(mine) < len(names)
    # served nodes, their leases and their pods all follow the one Ownership
    assert s.nodes.served == mine and set(s.leases.uids) == mine
    assert set(s.pods.pods) == {f"default/p-{n}" for n in mine}
    assert s.status()["bucket_nodes"] == sorted((b, sum(1 for n in mine if bucket(n, 8) == b))
                                                for b in table.buckets_of("a") if any(bucket(n, 8) == b for n in mine))
    # everything to b: a releases all of it, keeps nothing, asks the apiserver nothing
    to_b = Table(2, ("a", "b"), (1,) * 8)
    await s.set_ownership(Ownership.of("a", table, to_b))
    assert not s.nodes.served and not s.leases.uids and not s.pods.pods and not s.node_buckets
    assert s.nodes.player.pending(next(iter(mine))) is None
    assert kube.calls == []
    # and back: the nodes it already saw are adopted and re-read (planned from a fresh copy)
    await s.set_ownership(Ownership.of("a", table))
    assert s.nodes.served == mine and set(s.leases.uids) == mine
    assert kube.calls.count("get") == len(mine) and kube.calls.count("list_all") == len(mine)


async def test_a_node_and_its_pods_are_played_only_while_its_lease_is_held() -> None:
    """Fencing (kwok's readOnly): served but not held, the node's latest object and its pods wait;
    held, they are played; lost to another holder, they are dropped, and listed again when the
    lease comes back."""
    kube = DeadKube()
    s = Shard(kube, ShardConfig(watch_stages=False, token_exchange=False))  # type: ignore[arg-type]
    s.nodes.on_node("ADDED", _node("n-1", 1))
    s.pods.on_pod("ADDED", _pod("p-1", "n-1"))
    assert s.nodes.serves("n-1") and not s.nodes.plays("n-1")
    assert s.nodes.player.pending("n-1") is None and "n-1" in s.nodes.waiting
    assert not s.pods.pods and s.pods.orphan_pods == 1        # waits for the lease, not dropped
    # the lease controller acquired it
    s.leases.held.add("n-1")
    s._lease_held("n-1")
    assert s.nodes.player.pending("n-1") is not None and "n-1" not in s.nodes.waiting
    assert set(s.pods.pods) == {"default/p-1"} and s.pods.orphan_pods == 0
    assert kube.calls == []                                    # played from the copies it had
    # another holder took it (ours expired): nothing of it is played any more
    s.leases.held.discard("n-1")
    s._lease_lost("n-1")
    assert s.nodes.player.pending("n-1") is None and not s.pods.pods
    s.pods.on_pod("MODIFIED", _pod("p-1", "n-1"))
    assert not s.pods.pods
    # held again: the node is read and its pods listed (their events went by meanwhile)
    s.leases.held.add("n-1")
    s._lease_held("n-1")
    await asyncio.gather(*s.nodes._reading, *s._sync_tasks)
    assert kube.calls.count("get") == 1 and kube.calls.count("list_all") == 1


# -- the generic Stage controller's slice: by the apiserver's shardSelector, or here ---------------
class _ShardingKube:
    """Lists a fixed set of ConfigMaps; filters by shardSelector only if ``gate`` (as the apiserver
    does with ShardedListAndWatch on, echoing shardInfo), and ignores it otherwise."""

    def __init__(self, objs: list[dict[str, Any]], slices: dict[str, Ownership], gate: bool) -> None:
        self.objs, self.slices, self.gate = objs, slices, gate
        self.params: list[dict[str, Any]] = []

    async def list_pages(self, path: str, **params: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        self.params.append(params)
        sel = params.get("shardSelector")
        if not (self.gate and sel):
            return list(self.objs), {"resourceVersion": "9"}
        own = self.slices[sel]
        return [o for o in self.objs if own.owns_object(o)], {"resourceVersion": "9", "shardInfo": {"selector": sel}}

    async def watch(self, path: str, **_: Any) -> Any:
        await asyncio.Event().wait()
        yield {}


CONFIGMAPS = Resource("v1", "ConfigMap", "configmaps", True)


def _configmaps(n: int) -> list[dict[str, Any]]:
    rng = random.Random(n)   # random v4-like uids, as the apiserver gives
    return [{"metadata": {"name": f"cm-{i}", "namespace": "default", "uid": str(uuid.UUID(int=rng.getrandbits(128))),
                          "resourceVersion": "1"}} for i in range(n)]


@pytest.mark.parametrize("gate", [True, False], ids=["server-filters", "apiserver-without-gate"])
async def test_stage_controller_plays_its_slice_whoever_filters(gate: bool) -> None:
    objs = _configmaps(60)
    t1 = Table(1, ("a", "b"), tuple(b % 2 for b in range(16)))
    t2 = Table(2, ("a", "b", "c"), tuple(1 if b % 2 else 2 * (b % 4 == 2) for b in range(16)))   # c takes half of a's
    own1, own2 = Ownership.of("a", t1), Ownership.of("a", t2)
    kube = _ShardingKube(objs, {str(o.shard_selector()): o for o in (own1, own2)}, gate)
    c = StageController(Writer(kube, Discovery(kube), "a"), StageControllerConfig(CONFIGMAPS, "a"), [], own1,  # type: ignore[arg-type]
                        funcs={})
    planned: set[str] = set()
    c.player.plan = lambda key, _obj: planned.add(key)   # type: ignore[method-assign]
    c.player.cancel = planned.discard                    # type: ignore[method-assign]

    def slice_of(own: Ownership) -> set[str]:
        return {obj_key(o) for o in objs if own.owns_object(o)}
    await c.start()
    try:
        assert kube.params[-1]["shardSelector"] == own1.shard_selector()
        assert c.filtered_by == ("server" if gate else "client")
        assert planned == slice_of(own1) and 0 < len(planned) < len(objs)
        await c.set_ownership(own2)       # a third shard: some objects leave, none arrive
        assert kube.params[-1]["shardSelector"] == own2.shard_selector()
        assert planned == slice_of(own2) and slice_of(own2) < slice_of(own1)
        await c.set_ownership(Ownership.of("a", Table(3, ("a",), (0,) * 16)))   # alone again: everything
        assert "shardSelector" not in kube.params[-1] and c.filtered_by == "client"
        assert planned == {obj_key(o) for o in objs}
    finally:
        await c.stop()


async def test_stage_controller_without_server_filter_sends_no_selector() -> None:
    own = Ownership.of("a", Table(1, ("a", "b"), tuple(b % 2 for b in range(16))))
    kube = _ShardingKube(_configmaps(10), {}, gate=True)
    c = StageController(Writer(kube, Discovery(kube), "a"),   # type: ignore[arg-type]
                        StageControllerConfig(CONFIGMAPS, "a", server_filter=False), [], own, funcs={})
    await c.start()
    await c.stop()
    assert "shardSelector" not in kube.params[0] and c.filtered_by == "client"
    assert StageController(Writer(kube, Discovery(kube), "a"), StageControllerConfig(CONFIGMAPS, "a"),  # type: ignore[arg-type]
                           [], EVERYTHING, funcs={}).filtered_by == "none"


async def test_a_resource_that_cannot_be_listed_is_reported_and_holds_nothing_up(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """RBAC that forbids the list (or an aggregated API that is down) must not keep the shard from
    starting: start() returns after the first try, status names the Stage and the kind, and once
    the list is allowed the objects are played."""
    async def no_wait(current: float, hint: float | None = None) -> float:
        await asyncio.sleep(0)
        return current
    monkeypatch.setattr("shardlet.watch._sleep_backoff", no_wait)
    objs = _configmaps(20)
    kube = _ShardingKube(objs, {}, gate=False)
    allowed = asyncio.Event()
    listed = kube.list_pages

    async def forbidden_until_allowed(path: str, **params: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        if not allowed.is_set():
            await asyncio.sleep(0)
            raise ApiError(403, "Forbidden", 'configmaps is forbidden: User "shardlet" cannot list resource')
        return await listed(path, **params)
    kube.list_pages = forbidden_until_allowed    # type: ignore[method-assign]
    stage = [parse_stage({"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": "cm-seen"},
                          "spec": {"resourceRef": {"apiGroup": "v1", "kind": "ConfigMap"},
                                   "selector": {"matchLabels": {"x": "y"}}, "next": {}}})]
    s = leases_held(Shard(DeadKube(), ShardConfig(watch_stages=False, token_exchange=False)))   # type: ignore[arg-type]
    c = StageController(Writer(kube, Discovery(kube), "a"), StageControllerConfig(CONFIGMAPS, "a"),  # type: ignore[arg-type]
                        stage, EVERYTHING, funcs={})
    planned: set[str] = set()
    c.player.plan = lambda key, _obj: planned.add(key)   # type: ignore[method-assign]
    s.controllers[("v1", "ConfigMap")] = c
    await c.start()
    try:
        assert "403 Forbidden" in c.error and not planned
        assert s.status()["stage_errors"] == [
            "stage cm-seen: spec.resourceRef ConfigMap in v1: cannot list configmaps: 403 Forbidden: "
            'configmaps is forbidden: User "shardlet" cannot list resource']
        half = Ownership.of("a", Table(1, ("a", "b"), tuple(b % 2 for b in range(16))))
        await c.set_ownership(half)            # a hand-off is not held up by the refusal either
        assert "403 Forbidden" in c.error and not planned
        allowed.set()
        await c.reflector.synced.wait()
        assert planned == {obj_key(o) for o in objs if half.owns_object(o)} and planned
        assert not c.error and s.status()["stage_errors"] == []
    finally:
        await c.stop()


async def test_a_new_slice_drops_queued_jobs_of_released_objects_even_if_its_list_fails(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The release half of a hand-off: once set_ownership returns, no job may stay queued for an
    object the shard gave up, though the new list failed (another shard acquires it next)."""
    async def no_wait(current: float, hint: float | None = None) -> float:
        await asyncio.Event().wait()    # the retry never comes within this test
        return current
    monkeypatch.setattr("shardlet.watch._sleep_backoff", no_wait)
    objs = _configmaps(40)
    kube = _ShardingKube(objs, {}, gate=False)
    delayed = [parse_stage({"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": "later"},
                            "spec": {"resourceRef": {"apiGroup": "v1", "kind": "ConfigMap"}, "selector": {},
                                     "delay": {"durationMilliseconds": 3_600_000}, "next": {"delete": True}}})]
    whole, half = (Ownership.of("a", Table(1, ("a",), (0,) * 16)),
                   Ownership.of("a", Table(2, ("a", "b"), tuple(b % 2 for b in range(16)))))
    c = StageController(Writer(kube, Discovery(kube), "a"), StageControllerConfig(CONFIGMAPS, "a"),  # type: ignore[arg-type]
                        delayed, whole, funcs={})
    await c.start()
    try:
        assert len(c.player) == len(objs)                     # every object waits for its delay

        async def failing(path: str, **params: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
            raise ApiError(503, "ServiceUnavailable", "try later")
        kube.list_pages = failing                             # type: ignore[method-assign]
        await c.set_ownership(half)
        kept = {obj_key(o) for o in objs if half.owns_object(o)}
        assert c.error.startswith("503") and 0 < len(kept) < len(objs)
        assert {obj_key(o) for o in objs if c.player.pending(obj_key(o))} == kept
    finally:
        await c.stop()


async def test_a_bucket_label_that_fails_is_written_again_not_dropped() -> None:
    """An unlabeled node comes from one watch event only: a label write refused once must be
    retried, or the node is never served by anyone."""
    class LabelKube(DeadKube):
        def __init__(self) -> None:
            super().__init__()
            self.patched: list[str] = []
            self.labeled = asyncio.Event()

        async def retrying(self, fn: Any, **_: Any) -> Any:
            return await fn()

        async def patch(self, path: str, body: Any, typ: str) -> Any:
            self.patched.append(path)
            if len(self.patched) == 1:
                raise ApiError(403, "Forbidden", "RBAC not synced yet")
            self.labeled.set()
            return {}
    kube = LabelKube()
    own = Ownership.of("a", Table(1, ("a",), (0,) * 8))
    nc = NodeController(kube, Writer(kube, Discovery(kube), "a"),   # type: ignore[arg-type]
                        NodeControllerConfig("a", label_buckets=True, label_retry_after=0.01), StageEngine(()), own,
                        funcs={})
    run = asyncio.create_task(nc.labels.run())
    try:
        nc._on_unlabeled("ADDED", _node("n-1", 1))
        await asyncio.wait_for(kube.labeled.wait(), 10)   # a guard: dropped, it would never come
    finally:
        run.cancel()
    assert kube.patched == ["/api/v1/nodes/n-1"] * 2 and nc.labeled == 1
    with pytest.raises(ValueError, match="label_retry_after must be > 0"):
        NodeControllerConfig("a", label_retry_after=0)
