"""Fencing between lease holders, kwok's rule (shardlet.controllers.leases), on an in-memory
lease API and an injected clock: another holder's lease is taken over only once it expired,
this run's own shards' at once when a node is handed over, and a lease someone else wrote
while we held it is given up. Against the real apiserver: tests/e2e/test_fencing.py."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import orjson

from shardlet.api import ApiError
from shardlet.controllers.leases import (
    LeaseController,
    LeaseControllerConfig,
    expires_at,
    micro_time,
    parse_micro_time,
)

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


class Leases:
    """The apiserver's leases in kube-node-lease: resourceVersions and conflicts, nothing else."""

    def __init__(self) -> None:
        self.objs: dict[str, dict[str, Any]] = {}
        self.rv = 100
        self.conflicts = 0
        self.writes: list[tuple[str, str]] = []      # (node, holder) of every accepted write

    def _store(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        obj = orjson.loads(orjson.dumps(body))
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.objs[name] = obj
        self.writes.append((name, obj["spec"].get("holderIdentity")))
        return cast(dict[str, Any], orjson.loads(orjson.dumps(obj)))

    async def create(self, _path: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        if name in self.objs:
            raise ApiError(409, "AlreadyExists", f"leases {name} already exists")
        return self._store(name, body)

    async def get(self, path: str) -> dict[str, Any]:
        name = path.rsplit("/", 1)[1]
        if name not in self.objs:
            raise ApiError(404, "NotFound", f"leases {name} not found")
        return cast(dict[str, Any], orjson.loads(orjson.dumps(self.objs[name])))

    async def replace(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        name = path.rsplit("/", 1)[1]
        if name not in self.objs:
            raise ApiError(404, "NotFound", f"leases {name} not found")
        if body["metadata"].get("resourceVersion") != self.objs[name]["metadata"]["resourceVersion"]:
            self.conflicts += 1
            raise ApiError(409, "Conflict", "the object has been modified")
        return self._store(name, body)

    async def request_bytes(self, method: str, path: str, body: bytes) -> bytes:
        assert method == "PUT"
        return orjson.dumps(await self.replace(path, orjson.loads(body)))

    async def list_all(self, _path: str) -> tuple[list[dict[str, Any]], str]:
        return [orjson.loads(orjson.dumps(o)) for o in self.objs.values()], str(self.rv)

    def foreign(self, name: str, holder: str, renewed: float, duration: int = 40) -> None:
        self._store(name, {"metadata": {"name": name, "namespace": "kube-node-lease"},
                           "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                                    "renewTime": micro_time(renewed)}})


class Controller:
    """A LeaseController and what its callbacks said."""

    def __init__(self, api: Leases, clock: Clock, holder: str, trusts: str = "") -> None:
        self.events: list[tuple[str, str]] = []
        self.c = LeaseController(
            cast(Any, api), LeaseControllerConfig(holder, duration=40), clock=clock,
            on_held=lambda n: self.events.append(("held", n)), on_lost=lambda n: self.events.append(("lost", n)),
            trusts=(lambda h: h.startswith(trusts + "/")) if trusts else (lambda _h: False))

    async def renew(self, node: str) -> float | None:
        """One turn of the node in the queue: the delay until it is looked at again, if not the
        renewal interval."""
        await self.c._renew(node, None, 0.0)
        return self.c.elsewhere[node][1] + self.c.cfg.skew - self.c.clock() if node in self.c.elsewhere else None


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_micro_time_round_trips_and_expiry_needs_both_fields() -> None:
    assert parse_micro_time(micro_time(T0 + 0.25)) == T0 + 0.25
    assert parse_micro_time("2026-12-07T10:00:00Z") is not None
    assert parse_micro_time("yesterday") is None and parse_micro_time(None) is None
    assert expires_at({"renewTime": micro_time(T0), "leaseDurationSeconds": 40}) == T0 + 40
    assert expires_at({"renewTime": micro_time(T0)}) is None
    assert expires_at({"leaseDurationSeconds": 40}) is None


def test_a_new_node_is_held_once_its_lease_is_created() -> None:
    api, clock = Leases(), Clock()
    a = Controller(api, clock, "a")
    a.c.add("n1", "uid-1")
    assert not a.c.holds("n1")            # not played before the lease is ours
    run(a.renew("n1"))
    assert a.c.holds("n1") and a.events == [("held", "n1")]
    run(a.renew("n1"))                     # a renewal: no second callback
    assert a.events == [("held", "n1")] and api.writes == [("n1", "a"), ("n1", "a")]


def test_a_live_lease_of_another_holder_waits_for_its_expiry_plus_skew() -> None:
    api, clock = Leases(), Clock()
    api.foreign("n1", "kwok-host_1234", renewed=T0 - 10)
    a = Controller(api, clock, "a")
    a.c.add("n1", "uid-1")
    wait = run(a.renew("n1"))
    assert not a.c.holds("n1") and a.events == [] and a.c.elsewhere["n1"][0] == "kwok-host_1234"
    assert wait == 40 - 10 + 2                       # looked at again when it would expire, plus skew
    clock.t = T0 + 30 + 1.9                          # inside the skew: still theirs
    run(a.renew("n1"))
    assert not a.c.holds("n1")
    clock.t = T0 + 30 + 2.1
    run(a.renew("n1"))
    lease = api.objs["n1"]["spec"]
    assert a.c.holds("n1") and a.events == [("held", "n1")]
    assert lease["holderIdentity"] == "a" and lease["leaseTransitions"] == 1 and a.c.taken_over == 1


def test_a_lease_the_other_holder_keeps_renewing_is_never_taken() -> None:
    api, clock = Leases(), Clock()
    api.foreign("n1", "b", renewed=T0)
    a = Controller(api, clock, "a")
    a.c.add("n1", "uid-1")
    for _ in range(10):
        wait = run(a.renew("n1"))
        assert wait is not None and wait > 0
        clock.t += wait - 3                          # b renews before we look again
        api.foreign("n1", "b", renewed=clock.t)
        clock.t += 3
    assert not a.c.holds("n1") and a.events == [] and {h for _, h in api.writes} == {"b"}


def test_an_expired_or_released_lease_is_taken_at_once() -> None:
    api, clock = Leases(), Clock()
    api.foreign("n1", "b", renewed=T0 - 100)
    api._store("n2", {"metadata": {"name": "n2"}, "spec": {"holderIdentity": None}})
    a = Controller(api, clock, "a")
    for n in ("n1", "n2"):
        a.c.add(n, "uid")
        run(a.renew(n))
    assert a.c.holds("n1") and a.c.holds("n2")


def test_a_sibling_shard_is_taken_over_at_once_on_hand_off_but_not_after() -> None:
    """The coordinator hands a node over only after its old owner released it or was killed: the
    new owner takes a lease of its own instance at once. But a lease another holder wrote while
    we held it is given up, even to a sibling: a shard the coordinator gave up on must not win
    its nodes back."""
    api, clock = Leases(), Clock()
    api.foreign("n1", "run1/shard-0", renewed=T0)
    b = Controller(api, clock, "run1/shard-1", trusts="run1")
    b.c.add("n1", "uid-1")
    run(b.renew("n1"))
    assert b.c.holds("n1") and api.objs["n1"]["spec"]["holderIdentity"] == "run1/shard-1"
    # the old owner, a zombie, renews from its stale copy: 409, and it reads the lease again
    zombie = Controller(api, clock, "run1/shard-0", trusts="run1")
    zombie.c.add("n1", "uid-1")
    zombie.c.fresh.discard("n1")
    zombie.c.held.add("n1")
    zombie.c.leases["n1"] = {"metadata": {"name": "n1", "resourceVersion": "1"},
                             "spec": {"holderIdentity": "run1/shard-0"}}
    run(zombie.renew("n1"))
    assert not zombie.c.holds("n1") and zombie.events == [("lost", "n1")] and zombie.c.lost == 1
    assert api.objs["n1"]["spec"]["holderIdentity"] == "run1/shard-1"
    # and another instance's shard is not trusted
    api.foreign("n2", "run2/shard-0", renewed=T0)
    b.c.add("n2", "uid-2")
    run(b.renew("n2"))
    assert not b.c.holds("n2")


def test_a_held_lease_another_holder_took_after_it_expired_is_lost() -> None:
    api, clock = Leases(), Clock()
    a = Controller(api, clock, "a")
    a.c.add("n1", "uid-1")
    run(a.renew("n1"))
    clock.t += 60                                    # a stalled: b takes the expired lease
    b = Controller(api, clock, "b")
    b.c.add("n1", "uid-1")
    run(b.renew("n1"))
    assert b.c.holds("n1")
    run(a.renew("n1"))
    assert not a.c.holds("n1") and a.events == [("held", "n1"), ("lost", "n1")]
    assert api.objs["n1"]["spec"]["holderIdentity"] == "b"


def test_primed_leases_of_this_holder_are_held_without_a_request() -> None:
    api, clock = Leases(), Clock()
    api.foreign("n1", "a", renewed=T0 - 5)
    api.foreign("n2", "b", renewed=T0 - 5)
    api.foreign("n3", "a", renewed=T0 - 5)           # ours, but not this shard's node
    a = Controller(api, clock, "a")
    assert run(a.c.prime(lambda n: n != "n3")) == 1
    a.c.add("n1", "uid-1")
    a.c.add("n2", "uid-2")
    a.c.unprime()
    assert a.c.holds("n1") and not a.c.holds("n2") and set(a.c.leases) == {"n1"}
    writes = len(api.writes)
    run(a.renew("n1"))                               # renewed with one PUT of the primed copy
    assert len(api.writes) == writes + 1 and api.conflicts == 0 and a.events == []


def test_two_instances_share_nodes_without_ping_pong() -> None:
    """Two holders on one set of nodes, renewing in turn for 10 minutes of virtual time: each
    lease is written by the first holder only, with no conflict; when that holder stops, the
    other takes every lease over once it expired, and never earlier."""
    api, clock = Leases(), Clock()
    a, b = Controller(api, clock, "a"), Controller(api, clock, "b")
    nodes = [f"n{i}" for i in range(20)]
    for n in nodes:
        a.c.add(n, "uid")
        run(a.renew(n))
        b.c.add(n, "uid")
    next_b = {n: 0.0 for n in nodes}
    for _ in range(60):                             # every 10 s: a renews; b looks when due
        clock.t += 10
        for n in nodes:
            run(a.renew(n))
            if clock.t >= next_b[n]:
                wait = run(b.renew(n))
                next_b[n] = clock.t + (wait if wait is not None else 10)
    assert all(a.c.holds(n) and not b.c.holds(n) for n in nodes)
    assert {h for _, h in api.writes} == {"a"} and api.conflicts == 0
    last = clock.t                                   # a stops
    while not all(b.c.holds(n) for n in nodes):
        clock.t += 1
        for n in nodes:
            if clock.t >= next_b[n]:
                wait = run(b.renew(n))
                next_b[n] = clock.t + (wait if wait is not None else 10)
    assert last + 40 + 2 <= clock.t <= last + 40 + 2 + 1
    assert api.conflicts == 0 and all(api.objs[n]["spec"]["leaseTransitions"] == 1 for n in nodes)
