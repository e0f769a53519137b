"""Lease renewal cadence and failure backoff (no cluster: only the scheduling rule)."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Callable
from typing import Any, cast

from shardlet.controllers.leases import LeaseController, LeaseControllerConfig


def renewer(duration: int = 40) -> LeaseController:
    kube: Any = None   # _next_delay never talks to the apiserver
    return LeaseController(kube, LeaseControllerConfig("holder", duration=duration))


def test_success_renews_on_the_kubelets_cadence() -> None:
    r = renewer(40)
    delays = [r._next_delay("n", True, None) for _ in range(2000)]
    # the kubelet: 10 to 10.4 s after the last renewal finished, 10.2 s on average; the queue
    # adds up to a tick (0 to 0.25 s, half on average), which the delay takes off
    assert r.tick == 0.25
    assert all(10.0 - r.tick / 2 <= d <= 10.4 - r.tick / 2 for d in delays)
    fired = [d + r.tick * random.random() for d in delays]
    assert abs(statistics.fmean(fired) - 10.2) < 0.03
    assert max(delays) - min(delays) > 0.3, "jittered over the whole 4%"


def test_failures_back_off_with_jitter_capped_inside_the_lease() -> None:
    r = renewer(40)
    firsts = [renewer(40)._next_delay("n", False, None) for _ in range(200)]
    assert all(0.32 <= d <= 0.4 for d in firsts) and len({round(d, 4) for d in firsts}) > 50
    seq = [r._next_delay("n", False, None) for _ in range(12)]
    assert all(d <= 2.5 for d in seq) and all(2.0 <= d for d in seq[-4:])   # cap: a quarter of the 10 s interval
    assert sum(seq[:4]) < sum(seq[4:8])                           # grows before the cap
    # a success resets the backoff
    r._next_delay("n", True, None)
    assert r._next_delay("n", False, None) <= 0.4


def test_retry_after_is_honoured_within_the_cap() -> None:
    r = renewer(40)
    assert r._next_delay("n", False, 2.0) >= 2.0
    assert r._next_delay("m", False, 60.0) <= 2.5
    # a short lease keeps its cap short: several tries before a 4 s lease could expire
    assert all(renewer(4)._next_delay("n", False, 30.0) <= 0.25 for _ in range(20))


def test_removed_node_forgets_its_failures() -> None:
    r = renewer(40)
    r.add("n", "uid")
    for _ in range(8):
        r._next_delay("n", False, None)
    r.remove("n")
    assert "n" not in r.failing


class _HeldKube:
    """Answers lease creates only when told to; counts how many wait at once."""

    def __init__(self) -> None:
        self.active = 0
        self.peak = 0
        self.release = asyncio.Event()

    async def create(self, _path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await self.release.wait()
        finally:
            self.active -= 1
        return body

    async def replace(self, _path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.create(_path, body)

    async def request_bytes(self, _method: str, _path: str, body: bytes) -> bytes:
        await self.create(_path, {})
        return b'{"metadata":{"resourceVersion":"2"}}'


def _held_before(r: LeaseController, nodes: list[str]) -> None:
    """Leases this holder already held (as ``prime`` finds them): their writes are renewals."""
    for n in nodes:
        r.leases[n] = {"metadata": {"name": n, "resourceVersion": "1"}, "spec": {"holderIdentity": "holder"}}
        r.add(n, f"uid-{n}")


async def _until(cond: Callable[[], bool]) -> None:
    while not cond():
        await asyncio.sleep(0.01)


async def test_renewals_on_time_stay_within_the_calm_limit_and_late_ones_go_past_it() -> None:
    kube = _HeldKube()
    r = LeaseController(cast(Any, kube), LeaseControllerConfig("holder", duration=4, concurrency=8, calm=2))   # 1 s interval
    assert r.urgent_after == 1.0
    _held_before(r, [f"n{i}" for i in range(6)])
    t = asyncio.create_task(r.run())
    try:
        await asyncio.wait_for(_until(lambda: kube.active == 2), 2)
        await asyncio.sleep(0.3)           # still on time: nobody else may start
        assert kube.peak == 2 and r.urgent == 0
        # a whole interval past due, the four waiting ones go without a calm slot
        await asyncio.wait_for(_until(lambda: kube.active == 6), 3)
        assert r.urgent == 4
        kube.release.set()
        await asyncio.wait_for(_until(lambda: r.renewals == 6), 2)
    finally:
        t.cancel()
        await asyncio.gather(t, return_exceptions=True)
    assert r._calm is not None and r._calm._value == 2   # every calm slot came back


async def test_first_acquisitions_are_not_held_to_the_calm_limit() -> None:
    """A new node's first play waits for its lease: acquisitions take any of `concurrency`."""
    kube = _HeldKube()
    r = LeaseController(cast(Any, kube), LeaseControllerConfig("holder", duration=4, concurrency=8, calm=2))
    for i in range(6):
        r.add(f"n{i}", f"uid{i}")
    t = asyncio.create_task(r.run())
    try:
        await asyncio.wait_for(_until(lambda: kube.active == 6), 0.5)   # well before any would be urgent
        assert r.urgent == 0
        kube.release.set()
        await asyncio.wait_for(_until(lambda: all(r.holds(f"n{i}") for i in range(6))), 2)
    finally:
        t.cancel()
        await asyncio.gather(t, return_exceptions=True)


async def test_an_on_time_renewal_gives_way_to_first_acquisitions_for_a_while() -> None:
    """While new nodes wait for their first acquisition, a renewal on time is put back (its lease
    is young), and goes once it is `first_grace` late whatever waits."""
    kube = _HeldKube()
    kube.release.set()
    r = LeaseController(cast(Any, kube), LeaseControllerConfig("holder", duration=40))
    _held_before(r, ["old"])
    r.add("new", "uid-new")
    assert r.first == {"new"}
    due = time.monotonic()
    await r._renew("old", None, due)
    assert r.deferred == 1 and r.queue.pending("old") == due      # put back, its first due kept
    await r._renew("old", None, due - r.first_grace)             # as late as it may be: renewed
    assert r.deferred == 1 and r.renewals == 1
    await r._renew("new", None, time.monotonic())                # the first acquisition done
    assert not r.first and r.holds("new")
    await r._renew("old", None, time.monotonic())                # nothing waits: at once
    assert r.deferred == 1 and r.renewals == 3


def test_no_calm_limit_when_it_is_not_below_the_concurrency() -> None:
    assert renewer(40)._calm is not None
    kube: Any = None
    assert LeaseController(kube, LeaseControllerConfig("holder", concurrency=16, calm=16))._calm is None
    assert LeaseController(kube, LeaseControllerConfig("holder", calm=0))._calm is None
