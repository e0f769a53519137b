"""Kubernetes' protobuf wire format for the node Lease, for the raw writer's `pb` levels.

The kubelet talks protobuf (`application/vnd.kubernetes.protobuf`) to the apiserver, so the
writer can too, to see whether protobuf Lease renewals would raise the lease-write ceiling that
bounds any fake kubelet. On the 2-vCPU bench box they do not (bench run 2026-11-29T0859): the
apiserver's CPU per write moved by a few percent either way, the writer's own CPU rose by 40%, and
writes/s stayed within the run's spread. So shardlet's renewer stays on JSON.

By hand for just the fields of k8s.io/api coordination/v1 Lease and the ObjectMeta it carries (no
generated code, no protobuf runtime). `managedFields` are left out both ways: the apiserver keeps
the live object's when a write carries none. Envelope: the 4 bytes b"k8s\x00", then
runtime.Unknown {typeMeta{apiVersion, kind}, raw = the Lease message}. Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

CONTENT_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_GO_ZERO_SECONDS = -62135596800   # 0001-01-01T00:00:00Z, Go's zero time.Time


class ProtobufError(ValueError):
    """A body that is not the protobuf the caller expected (names what is wrong)."""


# -- encoding ---------------------------------------------------------------------------------
def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64   # int32/int64 negatives are ten-byte two's complement on the wire
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _bytes(field: int, b: bytes) -> bytes:
    return _key(field, 2) + _varint(len(b)) + b


def _str(field: int, s: object) -> bytes:
    return _bytes(field, str(s).encode())


def _int(field: int, n: object) -> bytes:
    return _key(field, 0) + _varint(int(n))  # type: ignore[call-overload]


def _time(field: int, value: object) -> bytes:
    """A Time or MicroTime (RFC 3339 in JSON) as {seconds, nanos}."""
    t = parse_time(value)
    secs, micros = divmod(int((t - _EPOCH) / dt.timedelta(microseconds=1)), 1_000_000)
    body = _int(1, secs) + (_int(2, micros * 1000) if micros else b"")
    return _bytes(field, body)


def parse_time(value: object) -> dt.datetime:
    if not isinstance(value, str):
        raise ProtobufError(f"time {value!r}: not an RFC 3339 string")
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError as e:
        raise ProtobufError(f"time {value!r}: {e}") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _string_map(field: int, m: object) -> bytes:
    if not isinstance(m, dict):
        return b""
    return b"".join(_bytes(field, _str(1, k) + _str(2, v)) for k, v in sorted(m.items()))


_META_STRINGS = (("name", 1), ("generateName", 2), ("namespace", 3), ("uid", 5), ("resourceVersion", 6))
# the flat messages as {field number: (JSON name, kind)}, for both directions
_OWNER = {1: ("kind", "str"), 3: ("name", "str"), 4: ("uid", "str"), 5: ("apiVersion", "str"),
          6: ("controller", "bool"), 7: ("blockOwnerDeletion", "bool")}
_SPEC = {1: ("holderIdentity", "str"), 2: ("leaseDurationSeconds", "int"), 3: ("acquireTime", "microtime"),
         4: ("renewTime", "microtime"), 5: ("leaseTransitions", "int"), 6: ("strategy", "str"),
         7: ("preferredHolder", "str")}
_STATUS = {2: ("status", "str"), 3: ("message", "str"), 4: ("reason", "str"), 6: ("code", "int")}


def _encode_flat(obj: dict[str, Any], schema: dict[int, tuple[str, str]]) -> bytes:
    """The fields of `obj` that are set (not None), in field-number order as Go writes them."""
    out = []
    for field, (name, kind) in sorted(schema.items()):
        v = obj.get(name)
        if v is None:
            continue
        if kind == "str":
            out.append(_str(field, v))
        elif kind == "bool":
            out.append(_int(field, bool(v)))
        elif kind == "int":
            out.append(_int(field, v))
        elif v:   # a MicroTime; "" means unset
            out.append(_time(field, v))
    return b"".join(out)


def _object_meta(meta: dict[str, Any]) -> bytes:
    out = [_str(f, meta[k]) for k, f in _META_STRINGS if meta.get(k)]
    if meta.get("generation"):
        out.append(_int(7, meta["generation"]))
    if meta.get("creationTimestamp"):
        out.append(_time(8, meta["creationTimestamp"]))
    if meta.get("deletionTimestamp"):
        out.append(_time(9, meta["deletionTimestamp"]))
    if meta.get("deletionGracePeriodSeconds") is not None:
        out.append(_int(10, meta["deletionGracePeriodSeconds"]))
    out.append(_string_map(11, meta.get("labels")))
    out.append(_string_map(12, meta.get("annotations")))
    out += [_bytes(13, _encode_flat(ref, _OWNER)) for ref in meta.get("ownerReferences") or []]
    out += [_str(14, f) for f in meta.get("finalizers") or []]
    return b"".join(out)


def encode_lease(lease: dict[str, Any]) -> bytes:
    """A coordination.k8s.io/v1 Lease (JSON-shaped dict) as the apiserver's protobuf body."""
    raw = _bytes(1, _object_meta(lease.get("metadata") or {})) + _bytes(2, _encode_flat(lease.get("spec") or {}, _SPEC))
    type_meta = _str(1, "coordination.k8s.io/v1") + _str(2, "Lease")
    return MAGIC + _bytes(1, type_meta) + _bytes(2, raw)


# -- decoding ---------------------------------------------------------------------------------
def _fields(buf: bytes, what: str) -> list[tuple[int, int | bytes]]:
    """(field number, value) for each field of one message: an int for varints, bytes otherwise."""
    out: list[tuple[int, int | bytes]] = []
    i, n = 0, len(buf)
    try:
        while i < n:
            key, i = _read_varint(buf, i)
            field, wire = key >> 3, key & 7
            if wire == 0:
                v, i = _read_varint(buf, i)
                out.append((field, v))
            elif wire == 2:
                size, i = _read_varint(buf, i)
                if i + size > n:
                    raise IndexError
                out.append((field, buf[i:i + size]))
                i += size
            elif wire in (1, 5):   # fixed64 / fixed32: no Lease field uses them; skip
                i += 8 if wire == 1 else 4
            else:
                raise ProtobufError(f"{what}: wire type {wire} of field {field} is not supported")
    except IndexError:
        raise ProtobufError(f"{what}: truncated message") from None
    return out


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, i
        shift += 7


def _signed(n: int) -> int:
    return n - (1 << 64) if n >= 1 << 63 else n


def _text(v: int | bytes) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _decode_time(v: int | bytes, micro: bool) -> str:
    secs = nanos = 0
    for f, x in _fields(v if isinstance(v, bytes) else b"", "time"):
        if f == 1 and isinstance(x, int):
            secs = _signed(x)
        elif f == 2 and isinstance(x, int):
            nanos = _signed(x)
    t = _EPOCH + dt.timedelta(seconds=secs, microseconds=nanos // 1000)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def _zero_time(v: int | bytes) -> bool:
    """Go's zero time.Time (year 1), which JSON writes as null and this leaves out."""
    fields = dict(_fields(v if isinstance(v, bytes) else b"", "time"))
    return _signed(int(fields.get(1, 0))) == _GO_ZERO_SECONDS and not fields.get(2)


def _decode_map(entries: list[int | bytes]) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in entries:
        kv = dict(_fields(e if isinstance(e, bytes) else b"", "map entry"))
        out[_text(kv.get(1, b""))] = _text(kv.get(2, b""))
    return out


def _decode_meta(buf: bytes) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    labels: list[int | bytes] = []
    annotations: list[int | bytes] = []
    strings = {f: k for k, f in _META_STRINGS}
    # Go writes every non-pointer field, empty or zero; JSON omits those (omitempty): so does this
    for f, v in _fields(buf, "ObjectMeta"):
        if f in strings:
            if v:
                meta[strings[f]] = _text(v)
        elif f == 7 and isinstance(v, int):
            if v:
                meta["generation"] = _signed(v)
        elif f in (8, 9):
            if not _zero_time(v):
                meta["creationTimestamp" if f == 8 else "deletionTimestamp"] = _decode_time(v, micro=False)
        elif f == 10 and isinstance(v, int):
            meta["deletionGracePeriodSeconds"] = _signed(v)
        elif f == 11:
            labels.append(v)
        elif f == 12:
            annotations.append(v)
        elif f == 13 and isinstance(v, bytes):
            meta.setdefault("ownerReferences", []).append(_decode_flat(v, "OwnerReference", _OWNER))
        elif f == 14:
            meta.setdefault("finalizers", []).append(_text(v))
    if labels:
        meta["labels"] = _decode_map(labels)
    if annotations:
        meta["annotations"] = _decode_map(annotations)
    return meta


def _decode_flat(buf: bytes, what: str, schema: dict[int, tuple[str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f, v in _fields(buf, what):
        if f not in schema:
            continue
        name, kind = schema[f]
        if kind == "str":
            out[name] = _text(v)
        elif kind == "bool":
            out[name] = bool(v)
        elif kind == "int" and isinstance(v, int):
            out[name] = _signed(v)
        elif kind == "microtime":
            out[name] = _decode_time(v, micro=True)
    return out


def unwrap(body: bytes) -> tuple[str, str, bytes]:
    """(apiVersion, kind, raw message) of a protobuf response body."""
    if not body.startswith(MAGIC):
        raise ProtobufError(f"body does not start with the protobuf magic k8s\\0: {body[:16]!r}")
    api_version = kind = ""
    raw = b""
    for f, v in _fields(body[len(MAGIC):], "runtime.Unknown"):
        if f == 1 and isinstance(v, bytes):
            for tf, tv in _fields(v, "TypeMeta"):
                if tf == 1:
                    api_version = _text(tv)
                elif tf == 2:
                    kind = _text(tv)
        elif f == 2 and isinstance(v, bytes):
            raw = v
    return api_version, kind, raw


def decode_lease(body: bytes) -> dict[str, Any]:
    """A protobuf Lease response as the JSON-shaped dict the apiserver would have sent."""
    api_version, kind, raw = unwrap(body)
    if kind != "Lease":
        raise ProtobufError(f"expected a Lease, got kind {kind!r} ({api_version})")
    lease: dict[str, Any] = {"apiVersion": api_version, "kind": kind, "metadata": {}, "spec": {}}
    for f, v in _fields(raw, "Lease"):
        if f == 1 and isinstance(v, bytes):
            lease["metadata"] = _decode_meta(v)
        elif f == 2 and isinstance(v, bytes):
            lease["spec"] = _decode_flat(v, "LeaseSpec", _SPEC)
    return lease


def decode_status(body: bytes) -> dict[str, Any]:
    """A protobuf meta/v1 Status (an error response) as {status, message, reason, code}."""
    _, kind, raw = unwrap(body)
    if kind != "Status":
        raise ProtobufError(f"expected a Status, got kind {kind!r}")
    return _decode_flat(raw, "Status", _STATUS)
