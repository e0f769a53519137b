"""Garbage-collector settings for a process that holds a shard's slice of the cluster.

A shard keeps every object of its slice as decoded dicts and decodes thousands of watch events
a second. CPython's defaults (a young collection every 700 allocations, a full one whenever the
long-lived heap grows by a quarter) then spend more time in the collector than in decoding: on a
10,000-pod cache, decoding 40,000 pod events took 1.56 CPU-s with the defaults and 0.66 with the
thresholds below. Decoded API objects hold no reference cycles (reference counting frees them);
the collector is only needed for the few cycles asyncio and aiohttp leave, which young
collections still catch. After the first sync, `freeze` moves the startup heap out of the
collector's sight, as pre-forking servers do.
"""

from __future__ import annotations

import gc

THRESHOLDS = (100_000, 50, 100)


def tune() -> None:
    """Collect rarely; call once at process start."""
    gc.set_threshold(*THRESHOLDS)


def freeze() -> None:
    """Exempt everything alive now (the synced caches, modules, stages) from future collections.

    No collection first: on a large synced slice it would stall the loop, and the few cycles
    alive at this point stay (bounded, once per start)."""
    gc.freeze()
