"""msgpack wire format of coordinator <-> shard messages."""

from __future__ import annotations

import math
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.messages import (
    WIRE_VERSION,
    Ack,
    Acquire,
    Assign,
    Message,
    Release,
    Slice,
    StatusReport,
    decode,
)

names = st.text(min_size=0, max_size=30)
u64 = st.integers(0, 2**64 - 1)
finite = st.floats(allow_nan=False)

nodes_messages = st.builds(
    lambda cls, shard, epoch, nodes: cls(shard, epoch, nodes),
    st.sampled_from([Assign, Release, Acquire]),
    names,
    u64,
    st.frozensets(names, max_size=50),
)
acks = st.builds(Ack, names, u64, st.sampled_from(["assign", "release", "acquire"]), st.booleans(), u64)
reports = st.builds(
    StatusReport,
    names,
    u64,
    finite,
    u64,
    u64,
    st.dictionaries(names, u64, max_size=10),
    st.dictionaries(st.sampled_from(["p50", "p90", "p99", "p999", "max"]), finite),
)
slices = st.builds(
    Slice,
    u64,
    st.sampled_from(["release", "acquire"]),
    st.lists(names, max_size=20).map(tuple),
    st.integers(1, 2**16),
)
messages: st.SearchStrategy[Message] = st.one_of(nodes_messages, acks, reports, slices)


def pack(obj: Any) -> bytes:
    out = msgpack.packb(obj, use_bin_type=True)
    assert isinstance(out, bytes)
    return out


def assign_fields(**over: Any) -> dict[str, Any]:
    return {"type": "assign", "v": WIRE_VERSION, "shard": "s0", "epoch": 3, "nodes": ["a"], **over}


# --- round trips ----------------------------------------------------------------------------


@given(messages)
def test_round_trip(msg: Message) -> None:
    data = msg.to_bytes()
    assert decode(data) == msg
    assert type(msg).from_bytes(data) == msg
    assert decode(bytearray(data)) == msg
    assert decode(memoryview(data)) == msg
    assert decode(data).to_bytes() == data  # canonical encoding


@given(st.lists(names, max_size=30), st.randoms(use_true_random=False))
def test_equal_messages_encode_to_equal_bytes(nodes: list[str], rnd: Any) -> None:
    shuffled = list(nodes)
    rnd.shuffle(shuffled)
    assert Release("s", 1, frozenset(nodes)).to_bytes() == Release("s", 1, frozenset(shuffled)).to_bytes()
    counters = {n: i for i, n in enumerate(nodes)}
    reordered = dict(sorted(counters.items(), reverse=True))
    a = StatusReport("s", 1, 0.5, 2, 3, counters, {})
    b = StatusReport("s", 1, 0.5, 2, 3, reordered, {})
    assert a.to_bytes() == b.to_bytes()


def test_golden_bytes() -> None:
    msg = Acquire("shard-1", 7, frozenset({"n2", "n1"}))
    data = msg.to_bytes()
    assert data == (
        b"\x85\xa4type\xa7acquire\xa1v\x01\xa5shard\xa7shard-1\xa5epoch\x07\xa5nodes\x92\xa2n1\xa2n2"
    )
    assert msgpack.unpackb(data) == {
        "type": "acquire",
        "v": 1,
        "shard": "shard-1",
        "epoch": 7,
        "nodes": ["n1", "n2"],
    }


def test_status_report_content() -> None:
    r = StatusReport(
        shard="shard-0",
        epoch=4,
        ts=1_700_000_000.25,
        nodes=1000,
        pods=30000,
        counters={"pod_patches": 123456, "lease_renewals": 99, "errors": 0},
        lag_ms={"p50": 1.5, "p99": 20, "max": 85.25},
    )
    back = StatusReport.from_bytes(r.to_bytes())
    assert back == r
    assert back.lag_ms == {"p50": 1.5, "p99": 20.0, "max": 85.25}
    assert isinstance(back.lag_ms["p99"], float)
    assert StatusReport("s", 0, 0, 0, 0) == StatusReport.from_bytes(StatusReport("s", 0, 0, 0, 0).to_bytes())


def test_node_lists_are_normalised_to_frozensets() -> None:
    m = Assign("s", 1, ["b", "a", "b"])  # type: ignore[arg-type]
    assert m.nodes == frozenset({"a", "b"})
    assert decode(pack(assign_fields(nodes=["x", "x"]))) == Assign("s0", 3, frozenset({"x"}))


# --- strict decoding --------------------------------------------------------------------------


def test_unknown_message_type_is_named() -> None:
    with pytest.raises(ValueError, match=r"unknown message type 'launch_missiles'; known types: \["):
        decode(pack({"type": "launch_missiles", "v": 1}))
    with pytest.raises(ValueError, match="unknown message type 42"):
        decode(pack({"type": 42, "v": 1}))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "malformed msgpack message"),
        (b"\xc1", "malformed msgpack message"),
        (pack(assign_fields()) + b"\x00", "malformed msgpack message"),
        (pack([1, 2]), "must be a msgpack map, got list"),
        (pack("assign"), "must be a msgpack map, got str"),
        (pack({1: 2}), "malformed msgpack message"),  # strict_map_key
        (pack({"v": 1}), "no 'type' field"),
        (pack(assign_fields(v=2)), "'assign' message has wire version 2, expected 1"),
        (pack({k: v for k, v in assign_fields().items() if k != "v"}), "wire version None"),
        (pack({k: v for k, v in assign_fields().items() if k != "nodes"}), r"missing field\(s\) \['nodes'\]"),
        (
            pack(assign_fields(extra=1, more=2)),
            r"'assign' message has unknown field\(s\) \['extra', 'more'\]",
        ),
        (pack(assign_fields(epoch=-1)), "'assign' message: field 'epoch' must be an int"),
        (pack(assign_fields(epoch=True)), "field 'epoch' must be an int"),
        (pack(assign_fields(epoch=1.0)), "field 'epoch' must be an int"),
        (pack(assign_fields(shard=b"s0")), "field 'shard' must be a str, got bytes"),
        (pack(assign_fields(nodes="abc")), "field 'nodes' must be a list of node names"),
        (pack(assign_fields(nodes=["a", 1])), "field 'nodes' must hold only str node names"),
        (pack(assign_fields(nodes={"a": 1})), "field 'nodes' must be a list"),
    ],
)
def test_malformed_messages(data: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        decode(data)


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(ValueError, match="must be bytes, got str"):
        decode("assign")  # type: ignore[arg-type]


def test_from_bytes_of_the_wrong_type() -> None:
    data = Release("s", 1, frozenset()).to_bytes()
    with pytest.raises(ValueError, match="expected a 'acquire' message, got 'release'"):
        Acquire.from_bytes(data)
    with pytest.raises(ValueError, match="expected a 'status_report' message, got 'release'"):
        StatusReport.from_bytes(data)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"ok": 1}, "field 'ok' must be a bool"),
        ({"of": "status_report"}, "field 'of' must be one of"),
        ({"held_epoch": -1}, "field 'held_epoch' must be an int"),
    ],
)
def test_bad_acks(fields: dict[str, Any], match: str) -> None:
    base = {"type": "ack", "v": 1, "shard": "s", "epoch": 1, "of": "release", "ok": True, "held_epoch": 1}
    with pytest.raises(ValueError, match=match):
        decode(pack({**base, **fields}))


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"ts": "now"}, "field 'ts' must be a number"),
        ({"ts": math.nan}, "field 'ts' must not be NaN"),
        ({"counters": {"x": -1}}, r"field \"counters\['x'\]\" must be an int"),
        ({"counters": {"x": 1.5}}, r"field \"counters\['x'\]\" must be an int"),
        ({"counters": [1]}, "field 'counters' must be a map"),
        ({"lag_ms": {"p50": "fast"}}, r"field \"lag_ms\['p50'\]\" must be a number"),
        ({"lag_ms": {"p50": True}}, r"must be a number"),
        ({"pods": None}, "field 'pods' must be an int"),
    ],
)
def test_bad_status_reports(fields: dict[str, Any], match: str) -> None:
    base = {
        "type": "status_report",
        "v": 1,
        "shard": "s",
        "epoch": 1,
        "ts": 1.0,
        "nodes": 1,
        "pods": 2,
        "counters": {},
        "lag_ms": {},
    }
    with pytest.raises(ValueError, match=match):
        decode(pack({**base, **fields}))


def test_slice_as_the_driver_uses_it() -> None:
    msg = Slice(epoch=5, phase="release", shards=("shard-0", "shard-1"), vnodes=256)
    back = Slice.from_bytes(msg.to_bytes())
    assert (back.epoch, back.phase, back.shards, back.vnodes) == (5, "release", ("shard-0", "shard-1"), 256)
    assert Slice(1, "acquire", ["a"], 8).shards == ("a",)  # type: ignore[arg-type]
    assert Slice(0, "acquire", (), 256) == Slice.from_bytes(Slice(0, "acquire", (), 256).to_bytes())


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"phase": "assign"}, r"field 'phase' must be one of \['acquire', 'release'\]"),
        ({"phase": None}, "field 'phase' must be a str"),
        ({"shards": "ab"}, "field 'shards' must be a list of shard ids"),
        ({"shards": ["a", 2]}, r"field 'shards\[\]' must be a str"),
        ({"vnodes": 0}, "field 'vnodes' must be >= 1"),
        ({"epoch": -2}, "field 'epoch' must be an int"),
    ],
)
def test_bad_slices(fields: dict[str, Any], match: str) -> None:
    base = {"type": "slice", "v": 1, "epoch": 1, "phase": "acquire", "shards": ["a"], "vnodes": 256}
    with pytest.raises(ValueError, match=match):
        decode(pack({**base, **fields}))


def test_constructors_validate_too() -> None:
    with pytest.raises(ValueError, match="epoch"):
        Assign("s", -1, frozenset())
    with pytest.raises(ValueError, match="'of'"):
        Ack("s", 1, "nope", True, 1)
    with pytest.raises(ValueError, match="'of' must be a str"):
        Ack("s", 1, ["release"], True, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="counters"):
        StatusReport("s", 1, 0.0, 0, 0, {"x": -5})
    with pytest.raises(ValueError, match="held_epoch"):
        Ack("s", 1, "acquire", False, 2**64)  # would not even pack
    with pytest.raises(ValueError, match="shard"):
        Release(None, 1, frozenset())  # type: ignore[arg-type]
