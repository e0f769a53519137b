"""Lease renewals before stage writes, within one shard.

A node whose lease is not renewed goes NotReady; a node whose status patch waits a few seconds
only becomes Ready a little later. So while renewals run behind (the renewer says when: the
oldest due renewal has waited too long for a connection), stage writes pass a narrow gate
instead of the full stage concurrency: the apiserver, which serves requests first come first served, sees fewer of ours
ahead of the renewals. A floor of writes keeps going so that a shard whose renewals never
catch up still makes progress on its nodes and pods. Otherwise nothing is held:
renewals that stretch a little cost nothing, and pod churn keeps its full speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager


class LeasesFirst:
    def __init__(self, behind: Callable[[], bool], *, narrow: int = 4) -> None:
        self.behind = behind              # whether lease renewals run behind now
        self._narrow = asyncio.Semaphore(narrow)
        self.deferred = 0                 # stage writes that took the narrow gate

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold this around one stage write (all of its requests)."""
        if not self.behind():
            yield
            return
        self.deferred += 1
        async with self._narrow:
            yield
