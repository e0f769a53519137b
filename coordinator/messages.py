"""Messages between the coordinator and the shards, and their msgpack wire format.

Every message is a msgpack map ``{"type": <name>, "v": 1, <field>: <value>, ...}``
packed with ``use_bin_type=True``.  Node sets go on the wire as sorted lists and
counters as maps with sorted keys, so equal messages encode to equal bytes.

Decoding is strict: bytes that are not a msgpack map, an unknown ``type``, another
``v``, a missing or unknown field, or a field of the wrong type all raise ``ValueError``
with a message naming the culprit.  Coordinator and shards run the same code in one Ray
job, so a mismatch is a bug to surface, not a version to tolerate.

Messages (see :mod:`coordinator.assignment` for the protocol they carry):

* :class:`Assign` (coordinator -> shard): serve exactly ``nodes`` from ``epoch`` on.
* :class:`Release` (coordinator -> shard): stop serving ``nodes`` (handoff phase 1).
* :class:`Acquire` (coordinator -> shard): start serving ``nodes`` (handoff phase 2).
* :class:`Ack` (shard -> coordinator): answer to one of the three; ``ok=False`` is a
  stale-epoch nack and ``held_epoch`` is the newer epoch the shard holds.
* :class:`StatusReport` (shard -> coordinator): periodic gauges, counters and lag
  percentiles.
* :class:`Slice` (coordinator -> shard): the same two-phase handoff without node lists:
  the whole ring (shard ids, vnodes, epoch) and a phase; each shard derives its own
  slice with :meth:`coordinator.ring.Ring.owner` (the Ray driver and actor use this).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self, TypeAlias

import msgpack  # type: ignore[import-untyped]

__all__ = [
    "WIRE_VERSION",
    "Ack",
    "Acquire",
    "Assign",
    "Message",
    "Release",
    "Slice",
    "StatusReport",
    "decode",
]

WIRE_VERSION = 1

_MAX_U64 = (1 << 64) - 1
_ENVELOPE = frozenset({"type", "v"})


# --- field validators (used both when building a message and when decoding one) ------


def _want_str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"field {name!r} must be a str, got {type(value).__name__}")
    return value


def _want_uint(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_U64:
        raise ValueError(f"field {name!r} must be an int in [0, 2**64), got {value!r}")
    return value


def _want_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"field {name!r} must be a bool, got {type(value).__name__}")
    return value


def _want_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"field {name!r} must be a number, got {type(value).__name__}")
    out = float(value)
    if math.isnan(out):
        raise ValueError(f"field {name!r} must not be NaN")
    return out


def _want_nodes(name: str, value: object) -> frozenset[str]:
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple | set | frozenset):
        raise ValueError(f"field {name!r} must be a list of node names, got {type(value).__name__}")
    for n in value:
        if not isinstance(n, str):
            raise ValueError(f"field {name!r} must hold only str node names, got {n!r}")
    return frozenset(value)


def _want_map(name: str, value: object, item: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"field {name!r} must be a map, got {type(value).__name__}")
    out: dict[str, Any] = {}
    for k, v in value.items():
        if not isinstance(k, str):
            raise ValueError(f"field {name!r} must have str keys, got {k!r}")
        out[k] = item(f"{name}[{k!r}]", v)
    return out


# --- messages ---------------------------------------------------------------------------


class _Message:
    TYPE: ClassVar[str]
    __slots__ = ()

    def _fields(self) -> dict[str, object]:
        raise NotImplementedError

    @classmethod
    def _from_fields(cls, fields: dict[str, Any]) -> Self:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        payload: dict[str, object] = {"type": self.TYPE, "v": WIRE_VERSION}
        payload.update(self._fields())
        out = msgpack.packb(payload, use_bin_type=True)
        assert isinstance(out, bytes)
        return out

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Self:
        msg = decode(data)
        if not isinstance(msg, cls):
            raise ValueError(f"expected a {cls.TYPE!r} message, got {msg.TYPE!r}")
        return msg


@dataclass(frozen=True, slots=True)
class _NodesMessage(_Message):
    shard: str
    epoch: int
    nodes: frozenset[str]

    def __post_init__(self) -> None:
        _want_str("shard", self.shard)
        _want_uint("epoch", self.epoch)
        object.__setattr__(self, "nodes", _want_nodes("nodes", self.nodes))

    def _fields(self) -> dict[str, object]:
        return {"shard": self.shard, "epoch": self.epoch, "nodes": sorted(self.nodes)}

    @classmethod
    def _from_fields(cls, fields: dict[str, Any]) -> Self:
        _exact_fields(cls.TYPE, fields, {"shard", "epoch", "nodes"})
        return cls(fields["shard"], fields["epoch"], fields["nodes"])


@dataclass(frozen=True, slots=True)
class Assign(_NodesMessage):
    """Serve exactly ``nodes`` at ``epoch`` (replaces whatever the shard held)."""

    TYPE: ClassVar[str] = "assign"


@dataclass(frozen=True, slots=True)
class Release(_NodesMessage):
    """Stop serving ``nodes``; the shard's epoch becomes ``epoch`` (handoff phase 1)."""

    TYPE: ClassVar[str] = "release"


@dataclass(frozen=True, slots=True)
class Acquire(_NodesMessage):
    """Start serving ``nodes``; the shard's epoch becomes ``epoch`` (handoff phase 2)."""

    TYPE: ClassVar[str] = "acquire"


@dataclass(frozen=True, slots=True)
class Ack(_Message):
    """A shard's answer to an Assign/Release/Acquire at ``epoch``.

    ``ok`` is False when the shard rejected the message as stale; ``held_epoch`` is the
    epoch the shard holds after handling it (``>= epoch`` when ok, ``> epoch`` when not).
    """

    TYPE: ClassVar[str] = "ack"
    ACKABLE: ClassVar[frozenset[str]] = frozenset({"assign", "release", "acquire"})

    shard: str
    epoch: int
    of: str
    ok: bool
    held_epoch: int

    def __post_init__(self) -> None:
        _want_str("shard", self.shard)
        _want_uint("epoch", self.epoch)
        if _want_str("of", self.of) not in self.ACKABLE:
            raise ValueError(f"field 'of' must be one of {sorted(self.ACKABLE)}, got {self.of!r}")
        _want_bool("ok", self.ok)
        _want_uint("held_epoch", self.held_epoch)

    def _fields(self) -> dict[str, object]:
        return {
            "shard": self.shard,
            "epoch": self.epoch,
            "of": self.of,
            "ok": self.ok,
            "held_epoch": self.held_epoch,
        }

    @classmethod
    def _from_fields(cls, fields: dict[str, Any]) -> Self:
        _exact_fields(cls.TYPE, fields, {"shard", "epoch", "of", "ok", "held_epoch"})
        return cls(fields["shard"], fields["epoch"], fields["of"], fields["ok"], fields["held_epoch"])


@dataclass(frozen=True, slots=True)
class StatusReport(_Message):
    """A shard's periodic status.

    ``nodes``/``pods`` are gauges, ``counters`` are monotonic totals since the shard
    started (e.g. ``"pod_patches"``, ``"lease_renewals"``, ``"watch_restarts"``,
    ``"errors"``), and ``lag_ms`` maps a percentile label (``"p50"``, ``"p90"``,
    ``"p99"``, ``"max"``) to the event-to-action lag in milliseconds over the last
    report interval.  ``ts`` is the shard's wall clock, Unix seconds.
    """

    TYPE: ClassVar[str] = "status_report"

    shard: str
    epoch: int
    ts: float
    nodes: int
    pods: int
    counters: dict[str, int] = field(default_factory=dict)
    lag_ms: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _want_str("shard", self.shard)
        _want_uint("epoch", self.epoch)
        object.__setattr__(self, "ts", _want_float("ts", self.ts))
        _want_uint("nodes", self.nodes)
        _want_uint("pods", self.pods)
        object.__setattr__(self, "counters", _want_map("counters", self.counters, _want_uint))
        object.__setattr__(self, "lag_ms", _want_map("lag_ms", self.lag_ms, _want_float))

    def _fields(self) -> dict[str, object]:
        return {
            "shard": self.shard,
            "epoch": self.epoch,
            "ts": self.ts,
            "nodes": self.nodes,
            "pods": self.pods,
            "counters": dict(sorted(self.counters.items())),
            "lag_ms": dict(sorted(self.lag_ms.items())),
        }

    @classmethod
    def _from_fields(cls, fields: dict[str, Any]) -> Self:
        _exact_fields(cls.TYPE, fields, {"shard", "epoch", "ts", "nodes", "pods", "counters", "lag_ms"})
        return cls(
            fields["shard"],
            fields["epoch"],
            fields["ts"],
            fields["nodes"],
            fields["pods"],
            fields["counters"],
            fields["lag_ms"],
        )


@dataclass(frozen=True, slots=True)
class Slice(_Message):
    """The ring at ``epoch`` and a handoff phase, for a shard to derive its own slice.

    ``phase="release"``: keep only the nodes owned under both the shard's current ring and
    this one (i.e. release exactly ``plan_handoff(old, new).releases()[shard]``);
    ``phase="acquire"``: serve everything this ring gives the shard.  Rebuild the ring with
    ``Ring(slice.shards, epoch=slice.epoch, vnodes=slice.vnodes)``.
    """

    TYPE: ClassVar[str] = "slice"
    PHASES: ClassVar[frozenset[str]] = frozenset({"release", "acquire"})

    epoch: int
    phase: str
    shards: tuple[str, ...]
    vnodes: int

    def __post_init__(self) -> None:
        _want_uint("epoch", self.epoch)
        if _want_str("phase", self.phase) not in self.PHASES:
            raise ValueError(f"field 'phase' must be one of {sorted(self.PHASES)}, got {self.phase!r}")
        shards = self.shards
        if isinstance(shards, str | bytes) or not isinstance(shards, list | tuple):
            raise ValueError(f"field 'shards' must be a list of shard ids, got {type(shards).__name__}")
        for s in shards:
            _want_str("shards[]", s)
        object.__setattr__(self, "shards", tuple(shards))
        if _want_uint("vnodes", self.vnodes) < 1:
            raise ValueError("field 'vnodes' must be >= 1")

    def _fields(self) -> dict[str, object]:
        return {"epoch": self.epoch, "phase": self.phase, "shards": list(self.shards), "vnodes": self.vnodes}

    @classmethod
    def _from_fields(cls, fields: dict[str, Any]) -> Self:
        _exact_fields(cls.TYPE, fields, {"epoch", "phase", "shards", "vnodes"})
        return cls(fields["epoch"], fields["phase"], fields["shards"], fields["vnodes"])


Message: TypeAlias = Assign | Release | Acquire | Ack | StatusReport | Slice

_TYPES: dict[str, type[Message]] = {c.TYPE: c for c in (Assign, Release, Acquire, Ack, StatusReport, Slice)}


def _exact_fields(type_name: str, fields: Mapping[str, object], expected: set[str]) -> None:
    missing = expected - fields.keys()
    if missing:
        raise ValueError(f"{type_name!r} message is missing field(s) {sorted(missing)}")
    unknown = fields.keys() - expected
    if unknown:
        raise ValueError(f"{type_name!r} message has unknown field(s) {sorted(unknown)}")


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Decode any message; ``ValueError`` on anything but a well-formed known message."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError(f"message must be bytes, got {type(data).__name__}")
    try:
        obj = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated exception types
        raise ValueError(f"malformed msgpack message ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"message must be a msgpack map, got {type(obj).__name__}")
    type_name = obj.get("type")
    if type_name is None:
        raise ValueError("message has no 'type' field")
    cls = _TYPES.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise ValueError(f"unknown message type {type_name!r}; known types: {sorted(_TYPES)}")
    version = obj.get("v")
    if version != WIRE_VERSION:
        raise ValueError(f"{type_name!r} message has wire version {version!r}, expected {WIRE_VERSION}")
    fields = {k: v for k, v in obj.items() if k not in _ENVELOPE}
    try:
        return cls._from_fields(fields)
    except ValueError as exc:
        if str(exc).startswith(f"{type_name!r} message"):
            raise
        raise ValueError(f"{type_name!r} message: {exc}") from exc
