"""A long-lived loop that fails unexpectedly comes back (growing backoff, reset after a good run),
is counted for status and metrics, and its exception is logged whole; on a virtual clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from structlog.testing import capture_logs

from shardlet.ownership import EVERYTHING
from shardlet.shard import Shard, ShardConfig
from shardlet.supervise import Supervisor
from shardlet.watch import Reflector

from .fakes import DeadKube


class VirtualTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s
        await asyncio.sleep(0)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="first_backoff 0 must be > 0"):
        Supervisor(first_backoff=0)


async def test_a_failing_task_restarts_with_backoff_and_is_counted() -> None:
    vt, kinds = VirtualTime(), []
    sup = Supervisor(kinds.append, first_backoff=0.5, max_backoff=2, healthy_after=60, sleep=vt.sleep, clock=vt.clock)
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs == 5:
            vt.now += 61            # a long good run before this failure: the backoff starts afresh
        if runs <= 5:
            raise KeyError(f"run {runs}")
    with capture_logs() as logs:
        await sup.spawn("player", "player:pods", flaky)
    assert runs == 6 and vt.slept == [0.5, 1, 2, 2, 0.5]
    assert kinds == ["player"] * 5 and sup.status() == {"task_restarts": {"player": 5},
                                                         "task_errors": {"player:pods": "KeyError: 'run 5'"}}
    failed = [e for e in logs if e["event"] == "task_failed"]
    assert len(failed) == 5 and failed[0]["task"] == "player:pods" and failed[0]["exc_info"] is True


async def test_stop_cancels_without_counting_a_restart() -> None:
    sup = Supervisor()
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()
    t = sup.spawn("leases", "leases", forever)
    await started.wait()
    await sup.stop()
    assert t.cancelled() and sup.status()["task_restarts"] == {}


async def test_a_drill_fails_a_running_task_like_a_bug_and_it_restarts() -> None:
    vt, kinds = VirtualTime(), []
    sup = Supervisor(kinds.append, first_backoff=0.5, sleep=vt.sleep, clock=vt.clock)
    runs, started = 0, asyncio.Event()

    async def watch() -> None:
        nonlocal runs
        runs += 1
        started.set()
        if runs == 1:
            await asyncio.Event().wait()    # a watch that would run for ever
    with capture_logs() as logs:
        t = sup.spawn("watch", "watch:nodes", watch)
        await started.wait()
        assert sup.fail("watch:no", "drill") == ["watch:nodes"] and sup.fail("player") == []
        await t
    assert runs == 2 and not t.cancelled() and kinds == ["watch"] and vt.slept == [0.5]
    assert sup.status()["task_errors"] == {"watch:nodes": "InjectedFault: drill into watch:nodes"}
    assert [e["event"] for e in logs] == ["task_failed"]


async def test_a_drill_never_ends_a_task_that_is_backing_off() -> None:
    gate = asyncio.Event()

    async def sleep(_s: float) -> None:
        await gate.wait()
    sup = Supervisor(sleep=sleep)
    runs = 0

    async def broken() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise KeyError("bug")
    t = sup.spawn("watch", "watch:pods", broken)
    while runs < 1:
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert sup.fail("watch") == []     # in its backoff sleep: a cancel there would end it for good
    gate.set()
    await t
    assert runs == 2 and not t.cancelled()


class _OnceBrokenKube:
    """The first list raises what no one expects (a bug's TypeError); later ones list one object."""

    def __init__(self) -> None:
        self.lists = 0

    async def list_pages(self, path: str, **_: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        self.lists += 1
        if self.lists == 1:
            raise TypeError("unexpected")
        return [{"metadata": {"name": "a", "resourceVersion": "1"}}], {"resourceVersion": "1"}

    async def watch(self, path: str, **_: Any) -> Any:
        await asyncio.Event().wait()
        yield {}


async def test_a_watch_killed_by_an_unexpected_exception_restarts_and_shows_in_status() -> None:
    vt = VirtualTime()
    shard = Shard(DeadKube(), ShardConfig(watch_stages=False, token_exchange=False), EVERYTHING)  # type: ignore[arg-type]
    shard.supervisor.sleep, shard.supervisor.clock = vt.sleep, vt.clock
    seen: list[str] = []
    r = Reflector(_OnceBrokenKube(), "/api/v1/configmaps", lambda typ, o: seen.append(typ),  # type: ignore[arg-type]
                  name="stage:configmaps", supervisor=shard.supervisor)
    r.start()
    try:
        await r.synced.wait()
    finally:
        await r.stop()
    assert seen == ["ADDED"] and vt.slept == [0.5]
    st = shard.status()
    assert st["task_restarts"] == {"watch": 1} and st["task_errors"] == {"stage:configmaps": "TypeError: unexpected"}
    restarts = shard.metrics.registry.get_sample_value("shardlet_task_restarts_total",
                                                       {"shard": "shardlet-0", "kind": "watch"})
    assert restarts == 1
