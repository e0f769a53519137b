"""The benchmark's poll loop: done, timeout, and giving up on a count that stopped growing."""

from __future__ import annotations

import asyncio

import pytest

from bench.workload import wait_for


async def test_a_count_that_stops_growing_fails_after_the_stall_not_the_timeout() -> None:
    n = [0]

    async def grow(until: int) -> None:
        while n[0] < until:
            n[0] += 1
            await asyncio.sleep(0.02)

    task = asyncio.create_task(grow(10))
    t0 = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError, match=r"stalled, no progress for 0s \(10/20\)"):
        await wait_for("things", lambda: n[0] >= 20, lambda: f"{n[0]}/20", 30, lambda _: None,
                       count=lambda: n[0], stall=0.4)
    assert asyncio.get_running_loop().time() - t0 < 5
    await task


async def test_a_count_that_keeps_growing_is_not_a_stall() -> None:
    n = [0]

    async def grow() -> None:
        while n[0] < 30:
            n[0] += 1
            await asyncio.sleep(0.05)

    task = asyncio.create_task(grow())
    await wait_for("things", lambda: n[0] >= 30, lambda: f"{n[0]}/30", 30, lambda _: None,
                   count=lambda: n[0], stall=0.3)
    assert n[0] == 30
    await task
