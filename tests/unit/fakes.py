"""Stand-ins shared by unit tests that drive a Shard's handlers without an apiserver."""

from __future__ import annotations

from typing import Any

from shardlet.api import ApiError


class DeadKube:
    """Fails any request and records its name: the handlers must not make one (or must carry on
    when it fails)."""

    def __init__(self) -> None:
        self.on_request: Any = None
        self.calls: list[str] = []

    def sibling(self, **_kw: Any) -> DeadKube:
        return self

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        async def fail(*_a: Any, **_k: Any) -> Any:
            self.calls.append(name)
            raise ApiError(503, "Dead", f"no requests here ({name})")
        return fail


def leases_held(shard: Any) -> Any:
    """The shard holds every node's lease (no apiserver to acquire them from): its nodes and their
    pods are played as soon as they are served."""
    shard.leases.holds = lambda _name: True
    return shard
