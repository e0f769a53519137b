"""The one message from the coordinator to its shards, and its msgpack wire format.

:class:`Slice` carries a whole bucket table (:class:`shardlet.ownership.Table`: epoch, shard
ids, one owner index per bucket) and a hand-off phase; every shard derives its own slice from
it, so no node list ever crosses the wire. It is a msgpack map
``{"type": "slice", "v": 1, "epoch": ..., "phase": ..., "shards": [...], "owners": [...]}``
packed with ``use_bin_type=True``.

Decoding is strict: bytes that are not a msgpack map, another ``type`` or ``v``, a missing or
unknown field, or a field of the wrong type raise ``ValueError`` naming the culprit.
Coordinator and shards run the same code in one Ray job, so a mismatch is a bug to surface,
not a version to tolerate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Self

import msgpack

from shardlet.ownership import Table

__all__ = ["WIRE_VERSION", "Slice"]

WIRE_VERSION = 1

_FIELDS = frozenset({"epoch", "phase", "shards", "owners"})


@dataclass(frozen=True, slots=True)
class Slice:
    """A table and a hand-off phase, for a shard to derive its own slice.

    ``phase="release"``: keep only the nodes the shard owns under both its current table and
    this one; ``phase="acquire"``: serve everything this table gives the shard.
    """

    TYPE: ClassVar[str] = "slice"
    PHASES: ClassVar[frozenset[str]] = frozenset({"release", "acquire"})

    phase: str
    table: Table

    def __post_init__(self) -> None:
        if not isinstance(self.phase, str) or self.phase not in self.PHASES:
            raise ValueError(f"field 'phase' must be one of {sorted(self.PHASES)}, got {self.phase!r}")
        if not isinstance(self.table, Table):
            raise ValueError(f"a slice carries a Table, got {type(self.table).__name__}")

    def to_bytes(self) -> bytes:
        t = self.table
        out = msgpack.packb({"type": self.TYPE, "v": WIRE_VERSION, "epoch": t.epoch, "phase": self.phase,
                             "shards": list(t.shards), "owners": list(t.owners)}, use_bin_type=True)
        assert isinstance(out, bytes)
        return out

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Self:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ValueError(f"message must be bytes, got {type(data).__name__}")
        try:
            obj: Any = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
        except Exception as exc:  # msgpack raises several unrelated exception types
            raise ValueError(f"malformed msgpack message ({type(exc).__name__}: {exc})") from exc
        if not isinstance(obj, dict):
            raise ValueError(f"message must be a msgpack map, got {type(obj).__name__}")
        if obj.get("type") != cls.TYPE:
            raise ValueError(f"expected a {cls.TYPE!r} message, got type {obj.get('type')!r}")
        if obj.get("v") != WIRE_VERSION:
            raise ValueError(f"'slice' message has wire version {obj.get('v')!r}, expected {WIRE_VERSION}")
        fields = {k: v for k, v in obj.items() if k not in ("type", "v")}
        if missing := _FIELDS - fields.keys():
            raise ValueError(f"'slice' message is missing field(s) {sorted(missing)}")
        if unknown := fields.keys() - _FIELDS:
            raise ValueError(f"'slice' message has unknown field(s) {sorted(unknown)}")
        for name in ("shards", "owners"):
            if not isinstance(fields[name], list):
                raise ValueError(f"'slice' message: field {name!r} must be a list, got {type(fields[name]).__name__}")
        try:
            table = Table(fields["epoch"], tuple(fields["shards"]), tuple(fields["owners"]))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"'slice' message: {exc}") from exc
        return cls(fields["phase"], table)


def pack(obj: Any) -> bytes:
    """msgpack bytes of plain data (dicts, lists, str, numbers): what actors and the coordinator
    send each other besides the Slice."""
    out: bytes = msgpack.packb(obj)
    return out


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data)
