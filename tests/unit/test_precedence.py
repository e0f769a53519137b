"""Stage writes give way to lease renewals while renewals wait for a connection."""

from __future__ import annotations

import asyncio

from shardlet.precedence import LeasesFirst


async def _peak_concurrency(gate: LeasesFirst, writes: int) -> int:
    active = peak = 0

    async def write() -> None:
        nonlocal active, peak
        async with gate.turn():
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.01)
            active -= 1
    await asyncio.wait_for(asyncio.gather(*(write() for _ in range(writes))), 5)
    return peak


async def test_writes_are_not_held_while_renewals_keep_up() -> None:
    gate = LeasesFirst(lambda: False, narrow=2)
    assert await _peak_concurrency(gate, 20) == 20
    assert gate.deferred == 0


async def test_writes_take_the_narrow_gate_while_renewals_wait() -> None:
    gate = LeasesFirst(lambda: True, narrow=2)
    assert await _peak_concurrency(gate, 20) == 2     # every write still goes, two at a time
    assert gate.deferred == 20


async def test_the_gate_opens_again_once_renewals_catch_up() -> None:
    lag = [5.0]
    gate = LeasesFirst(lambda: lag[0] >= 1.0, narrow=1)
    assert await _peak_concurrency(gate, 5) == 1
    lag[0] = 0.0
    assert await _peak_concurrency(gate, 5) == 5
    assert gate.deferred == 5
