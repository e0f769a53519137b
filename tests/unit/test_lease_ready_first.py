"""Ready nodes first: while renewals run an interval behind, not-Ready nodes' leases wait
(no cluster: the rule only; the renewals themselves are tested against the real apiserver)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from shardlet.controllers.leases import LeaseController, LeaseControllerConfig


class _Kube:
    """Records lease writes and answers them at once."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    async def create(self, _path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.writes.append(body["metadata"]["name"])
        return body


def _renewer(lag: float) -> tuple[LeaseController, _Kube]:
    kube = _Kube()
    r = LeaseController(kube, LeaseControllerConfig("holder", duration=40))  # type: ignore[arg-type]
    r.queue.backlog_age = lambda: lag  # type: ignore[method-assign]
    for n in ("ready", "new"):
        r.add(n, f"uid-{n}")
    r.held.update(("ready", "new"))   # both leases acquired earlier
    r.first.clear()
    r.set_ready("ready", True)
    return r, kube


def _due_in(r: LeaseController, node: str) -> float:
    due = min(d for d, seq, k in r.queue._heap if k == node and r.queue._pending[k][0] == seq)
    return due - time.monotonic()


def test_on_time_every_node_is_renewed_ready_or_not() -> None:
    r, kube = _renewer(lag=r_interval() - 0.5)

    async def go() -> None:
        for n in ("ready", "new"):
            await r._renew(n, None, time.monotonic())
    asyncio.run(go())
    assert kube.writes == ["ready", "new"] and r.skipped == 0 and not r.put_off


def test_behind_a_not_ready_node_waits_and_is_renewed_as_soon_as_it_turns_ready() -> None:
    r, kube = _renewer(lag=r_interval())

    async def go() -> None:
        await r._renew("new", None, time.monotonic())
        await r._renew("ready", None, time.monotonic())
        assert kube.writes == ["ready"] and r.skipped == 1 and r.put_off == {"new"}
        assert r.interval - 1 < _due_in(r, "new") <= r.interval   # looked at again an interval later
        r.set_ready("new", True)                                   # the stage made it Ready
        assert _due_in(r, "new") <= 0 and not r.put_off
        await r._renew("new", None, time.monotonic())
        # marked NotReady again (the controller-manager's Unknown): skipped again while behind
        r.set_ready("new", False)
        await r._renew("new", None, time.monotonic())
    asyncio.run(go())
    assert kube.writes == ["ready", "new"] and r.skipped == 2


def test_a_removed_node_leaves_no_readiness_behind() -> None:
    r, _ = _renewer(lag=r_interval())
    asyncio.run(r._renew("new", None, time.monotonic()))
    r.remove("new")
    r.remove("ready")
    assert not r.ready and not r.put_off


def r_interval() -> float:
    return LeaseController(None, LeaseControllerConfig("h", duration=40)).urgent_after  # type: ignore[arg-type]


def test_behind_a_lease_not_held_yet_is_still_acquired() -> None:
    """A new node is played only once its lease is held (fencing): its first acquisition is never
    put off, or a ramp behind on renewals would never make it Ready."""
    r, kube = _renewer(lag=r_interval())
    r.held.discard("new")

    async def go() -> None:
        await r._renew("new", None, time.monotonic())
    asyncio.run(go())
    assert kube.writes == ["new"] and r.skipped == 0 and r.holds("new")
