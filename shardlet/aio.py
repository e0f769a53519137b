"""The event loop shardlet's own processes run on.

uvloop when it is installed (a dependency; Ray's async actors pick it up by themselves, so the
shards in Ray and the single in-process shard run on the same loop): libuv's loop and TLS
transport cost ~10% less CPU per apiserver request than asyncio's selector loop. Set
SHARDLET_LOOP=asyncio to run on the standard loop (e.g. to profile Python frames inside it).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    if os.environ.get("SHARDLET_LOOP", "uvloop") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on the loop above."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro)
