"""The protobuf codec of the raw writer's `pb` levels, and the writer level grammar.

The apiserver accepting these bytes is checked in tests/e2e/test_leaseproto.py; here the wire
format itself, with field numbers taken from k8s.io/api coordination/v1 and meta/v1 generated.proto.
"""

from __future__ import annotations

import copy

import pytest

from bench.leaseproto import MAGIC, ProtobufError, decode_lease, decode_status, encode_lease, unwrap
from bench.writer import parse_level
from shardlet.controllers.leases import micro_time

FULL = {
    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
    "metadata": {
        "name": "fake-node-000042", "namespace": "kube-node-lease", "uid": "9b1f0c56-1c1e-4c2b-9a55-2f8b2b0d0c11",
        "resourceVersion": "184467", "generation": 3, "creationTimestamp": "2026-11-29T08:00:01Z",
        "deletionTimestamp": "2026-11-29T09:00:00Z", "deletionGracePeriodSeconds": 30,
        "labels": {"b": "2", "a": "1"}, "annotations": {"note": "ünïcode ✓"},
        "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "fake-node-000042",
                             "uid": "0a1c1c1e-8f0e-4c2b-9a55-2f8b2b0d0c11", "controller": True,
                             "blockOwnerDeletion": False}],
        "finalizers": ["example.com/keep", "example.com/also"],
    },
    "spec": {"holderIdentity": "shardlet-0", "leaseDurationSeconds": 40, "acquireTime": "2026-11-29T08:00:01.000001Z",
             "renewTime": "2026-11-29T08:41:59.999999Z", "leaseTransitions": 7, "strategy": "OldestEmulationVersion",
             "preferredHolder": "shardlet-1"},
}


def test_every_lease_field_survives_a_round_trip_and_managed_fields_are_left_out() -> None:
    sent = copy.deepcopy(FULL)
    sent["metadata"]["managedFields"] = [{"manager": "x", "operation": "Update", "fieldsType": "FieldsV1",
                                          "fieldsV1": {"f:spec": {}}}]
    back = decode_lease(encode_lease(sent))
    assert back == FULL
    assert "managedFields" not in back["metadata"]


def test_the_envelope_and_field_numbers_are_the_apiservers() -> None:
    body = encode_lease({"metadata": {"name": "n"}, "spec": {"leaseDurationSeconds": 40}})
    type_meta = b"\x0a\x16coordination.k8s.io/v1" + b"\x12\x05Lease"
    # Lease{metadata(1){name(1)="n"}, spec(2){leaseDurationSeconds(2)=40}}
    raw = b"\x0a\x03\x0a\x01n" + b"\x12\x02\x10\x28"
    assert body == MAGIC + b"\x0a" + bytes([len(type_meta)]) + type_meta + b"\x12" + bytes([len(raw)]) + raw
    assert unwrap(body) == ("coordination.k8s.io/v1", "Lease", raw)


def test_micro_times_keep_their_microseconds_and_whole_seconds_drop_the_nanos_field() -> None:
    for t in (0.0, 1.5, 1764400000.000001, 1764400000.999999):
        stamp = micro_time(t)
        back = decode_lease(encode_lease({"metadata": {}, "spec": {"renewTime": stamp}}))
        assert back["spec"]["renewTime"] == stamp
    whole = encode_lease({"metadata": {}, "spec": {"renewTime": "2026-11-29T08:00:00.000000Z"}})
    assert b"\x22\x06\x08" in whole and b"\x10" not in unwrap(whole)[2].split(b"\x22", 1)[1]


def test_negative_and_large_integers_use_the_ten_byte_varint() -> None:
    back = decode_lease(encode_lease({"metadata": {"generation": 2**40}, "spec": {"leaseTransitions": -1}}))
    assert back["metadata"]["generation"] == 2**40
    assert back["spec"]["leaseTransitions"] == -1
    assert b"\x28" + b"\xff" * 9 + b"\x01" in encode_lease({"metadata": {}, "spec": {"leaseTransitions": -1}})


def test_what_is_not_a_lease_is_refused_with_what_is_wrong() -> None:
    good = encode_lease(FULL)
    with pytest.raises(ProtobufError, match="magic"):
        decode_lease(b'{"kind": "Lease"}')
    with pytest.raises(ProtobufError, match="truncated"):
        decode_lease(good[:-3])
    status = MAGIC + b"\x0a\x0c\x0a\x02v1\x12\x06Status" + b"\x12\x00"
    with pytest.raises(ProtobufError, match="expected a Lease, got kind 'Status'"):
        decode_lease(status)
    with pytest.raises(ProtobufError, match="time 'yesterday'"):
        encode_lease({"metadata": {}, "spec": {"renewTime": "yesterday"}})


def test_an_error_status_decodes_to_its_message_reason_and_code() -> None:
    st = b"\x12\x07Failure" + b"\x1a\x0bhas changed" + b"\x22\x08Conflict" + b"\x30\x99\x03"
    body = MAGIC + b"\x0a\x0c\x0a\x02v1\x12\x06Status" + b"\x12" + bytes([len(st)]) + st
    assert decode_status(body) == {"status": "Failure", "message": "has changed", "reason": "Conflict", "code": 409}


def test_writer_levels_name_processes_in_flight_and_encoding_and_bad_ones_name_the_level() -> None:
    assert parse_level("64") == (1, 64, "json")
    assert parse_level("2x64") == (2, 64, "json")
    assert parse_level("256pb") == (1, 256, "protobuf")
    assert parse_level(" 2x64pb ") == (2, 64, "protobuf")
    for bad in ("pb", "0", "x64", "2x", "64y", "64bp", "2x0pb"):
        with pytest.raises(ValueError, match=f"writer level {bad!r}"):
            parse_level(bad)


def test_the_empty_and_zero_fields_go_writes_are_left_out_as_json_leaves_them() -> None:
    from bench.leaseproto import _bytes, _int, _str
    zero_time = _int(1, -62135596800)   # Go's zero time.Time: JSON writes null, the dict leaves it out
    meta = _str(1, "n") + _str(2, "") + _str(4, "") + _int(7, 0) + _bytes(8, zero_time) + _bytes(9, zero_time)
    raw = _bytes(1, meta) + _bytes(2, _str(1, ""))
    body = MAGIC + _bytes(1, _str(1, "coordination.k8s.io/v1") + _str(2, "Lease")) + _bytes(2, raw)
    lease = decode_lease(body)
    assert lease["metadata"] == {"name": "n"}
    # holderIdentity is a pointer in Go: an empty one is written on purpose, and JSON keeps it too
    assert lease["spec"] == {"holderIdentity": ""}
