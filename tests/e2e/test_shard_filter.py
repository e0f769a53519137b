"""Generic Stage controllers' slices against the real apiserver.

With ShardedListAndWatch on (what ``shardlet cluster up`` does) a shard lists and watches only its
objects: the apiserver's FNV-1a ranges must select exactly what :meth:`Ownership.owns_object`
decides, and a shard decodes about 1/S of the events. Without the gate the apiserver ignores the
parameter; the controller sees that on the list and filters on its own, playing the same slice.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shardlet.api import Kube
from shardlet.controllers.stages import StageController, StageControllerConfig
from shardlet.controlplane.cluster import Cluster, Options
from shardlet.discovery import Discovery, Resource
from shardlet.ownership import Ownership, balance
from shardlet.watch import obj_key
from shardlet.writer import Writer

CONFIGMAPS = Resource("v1", "ConfigMap", "configmaps", True)
TABLE = balance(["shard-0", "shard-1"], epoch=1)     # 1,024 buckets, as a sharded run has
CMS = 300


class Played:
    """A StageController for ConfigMaps whose handler records what it received and planned."""

    def __init__(self, kube: Kube, shard: str, server_filter: bool) -> None:
        self.own = Ownership.of(shard, TABLE)
        self.c = StageController(Writer(kube, Discovery(kube), shard),
                                 StageControllerConfig(CONFIGMAPS, shard, server_filter=server_filter),
                                 [], self.own, funcs={})
        self.received: set[str] = set()
        self.planned: set[str] = set()
        self.c.player.plan = lambda key, _obj: self.planned.add(key)   # type: ignore[method-assign]
        self.c.player.cancel = self.planned.discard                    # type: ignore[method-assign]
        handler = self.c.reflector.handler

        def spy(typ: str, obj: dict[str, Any]) -> None:
            if typ != "DELETED":
                self.received.add(obj_key(obj))
            handler(typ, obj)
        self.c.reflector.handler = spy


async def _configmaps(kube: Kube) -> dict[str, dict[str, Any]]:
    items, _ = await kube.list_all("/api/v1/configmaps")
    return {obj_key(o): o for o in items}


async def _each(names: list[str], call: Any) -> None:
    sem = asyncio.Semaphore(32)

    async def one(n: str) -> None:
        async with sem:
            await call(n)
    await asyncio.gather(*(one(n) for n in names))


async def _until(cond: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
    """Wait for ``cond`` without blocking the loop the watches run on."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s: {what()}"
        await asyncio.sleep(0.1)


async def _server_and_client_slices(kubeconfig: str, ns: str) -> None:
    kube = Kube.from_kubeconfig(kubeconfig, max_connections=64)
    names = [f"cm-{i:04d}" for i in range(CMS)]
    base = f"/api/v1/namespaces/{ns}/configmaps"
    played = {(s, f): Played(kube, s, f) for s in TABLE.shards for f in (True, False)}
    try:
        await kube.create("/api/v1/namespaces", {"metadata": {"name": ns}})
        await _each(names, lambda n: kube.create(base, {"metadata": {"name": n}, "data": {"v": "0"}}))
        for p in played.values():
            await p.c.start()
        every = await _configmaps(kube)
        for (shard, server), p in played.items():
            assert p.c.filtered_by == ("server" if server else "client"), (shard, p.c.filtered_by)
            mine = {k for k, o in every.items() if p.own.owns_object(o)}
            assert p.planned == mine, f"{shard} server={server}: plays {len(p.planned)} of its {len(mine)}"
            if server:    # the apiserver sent exactly the slice: its FNV ranges are ours
                assert p.received == mine, f"{shard}: got {len(p.received - mine)} not its own"
        assert not played["shard-0", True].planned & played["shard-1", True].planned
        assert played["shard-0", True].planned | played["shard-1", True].planned == set(every)

        before = {k: p.c.reflector.events for k, p in played.items()}
        await _each(names, lambda n: kube.patch(f"{base}/{n}", {"data": {"v": "1"}}))

        def grown() -> dict[tuple[str, bool], int]:
            return {k: p.c.reflector.events - before[k] for k, p in played.items()}
        # every shard without the server filter decodes every update; with it, only its own
        await _until(lambda: all(v >= CMS for (_s, f), v in grown().items() if not f)
                     and sum(v for (_s, f), v in grown().items() if f) >= CMS, 30, lambda: f"updates watched: {grown()}")
        g = grown()
        mine = {s: sum(1 for n in names if played[s, True].own.owns_object(every[f"{ns}/{n}"]))
                for s in TABLE.shards}
        print(f"watch events for {CMS} updates, per shard: server filter "
              f"{[g[s, True] for s in TABLE.shards]} (owned {[mine[s] for s in TABLE.shards]}), "
              f"client filter {[g[s, False] for s in TABLE.shards]}")
        for s in TABLE.shards:
            assert g[s, True] == mine[s] and g[s, False] == CMS, g
            assert 0.35 * CMS <= mine[s] <= 0.65 * CMS, mine
    finally:
        for p in played.values():
            await p.c.stop()
        await kube.delete(f"/api/v1/namespaces/{ns}")
        await kube.close()


def test_apiserver_filters_each_shards_slice(cluster: Cluster) -> None:
    asyncio.run(_server_and_client_slices(str(cluster.kubeconfig), f"shard-filter-{os.getpid()}"))


@pytest.fixture(scope="module")
def ungated(bin_dir: Any) -> Iterator[Cluster]:
    c = Cluster(f"e2e-ungated-{os.getpid()}")
    c.up(Options(feature_gates="", scheduler=False, controller_manager=False), timeout=180)
    try:
        yield c
    finally:
        c.down()


async def _client_slice(kubeconfig: str) -> None:
    kube = Kube.from_kubeconfig(kubeconfig)
    try:
        await _each([f"cm-{i}" for i in range(40)], lambda n: kube.create(
            "/api/v1/namespaces/default/configmaps", {"metadata": {"name": n}}))
        p = Played(kube, "shard-0", server_filter=True)
        await p.c.start()
        await p.c.stop()
        every = await _configmaps(kube)
        assert p.c.reflector.params.get("shardSelector") and p.c.filtered_by == "client"
        assert p.received == set(every)            # the apiserver ignored the selector ...
        assert p.planned == {k for k, o in every.items() if p.own.owns_object(o)}   # ... we did not
        assert 0 < len(p.planned) < len(every)
    finally:
        await kube.close()


def test_apiserver_without_the_gate_is_filtered_here(ungated: Cluster) -> None:
    asyncio.run(_client_slice(str(ungated.kubeconfig)))
