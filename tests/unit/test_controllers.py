"""The controllers' shape: validated configs, one Ownership for all, and the shard's wiring of
Node -> Lease and Pod controllers through callbacks (no apiserver: handlers fed as a watch would)."""

from __future__ import annotations

from typing import Any

import pytest

from shardlet.controllers.leases import LeaseControllerConfig
from shardlet.controllers.nodes import NodeControllerConfig
from shardlet.controllers.player import PlayerConfig
from shardlet.controllers.pods import PodController, PodControllerConfig
from shardlet.discovery import PODS
from shardlet.ownership import EVERYTHING, Ownership, Table, bucket
from shardlet.scale import NODE_PARAMS, POD_PARAMS, node_manifest, pod_spec
from shardlet.shard import Shard, ShardConfig

from .fakes import DeadKube


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
    assert a.owns_object(obj) == (bucket("u-1", 16) in a.mine)
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
    s = Shard(kube, ShardConfig(watch_stages=False, token_exchange=False), Ownership.of("a", table))  # type: ignore[arg-type]
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
