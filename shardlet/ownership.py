"""Which shard serves which node: a bucket table, balanced by node count. Pure, no I/O.

Design
======

A node belongs to a **bucket**, ``bucket(name, B)``: a stable hash of its name alone, so
every process computes it without asking anyone, and a node never changes bucket. A
:class:`Table` maps each of the ``B`` buckets to a shard and carries the epoch of the
coordinator's hand-off protocol. The coordinator is the only writer of tables; it sends the
whole table (``B`` small ints) to every shard, and a shard serves exactly the nodes whose
bucket the table gives it.

Why a table, not a hash ring over node names or bucket ids: any ownership that is a pure
function of the name leaves each shard's count Binomial(N, 1/S), a relative standard
deviation of ``sqrt((S - 1) / N)`` — 3.9% at 2,000 nodes over 4 shards, 8.4% at 1,000
over 8 — so "every shard within ±5% of N/S" fails often, whatever the hash. Hashing bucket ids
onto a ring stacks a second such draw (buckets per shard) on top. A table decided by the
coordinator can instead be *balanced on the node counts the shards report*
(:func:`balance`): the name-hash noise is corrected by moving a few whole buckets, and no
node is ever relabelled.

:func:`balance` moves as little as it can: buckets of shards that left are spread first,
then buckets go one at a time from the most to the least loaded shard, each time the bucket
whose weight brings the pair closest to even, while that strictly lowers the sum of squared
loads (so it ends). A bucket's weight is its node count times ``B`` plus one: node counts
decide, and among equal node counts the number of buckets is evened out too, so that nodes
created later spread evenly. Adding a fifth shard to four balanced ones moves about a fifth of
the nodes, all but the last few buckets that even the old shards out going to the new shard;
removing one moves that shard's nodes and again only a few others.

Determinism: ``bucket`` is BLAKE2b over the UTF-8 name (never the salted ``hash()``) and a
jump consistent hash; ties in :func:`balance` go to the lower bucket and the lower shard id.

Objects other than nodes (what the generic Stage controllers play) share the same table but are
bucketed by uid with :func:`uid_bucket`: FNV-1a 64 of the uid, cut into ``B`` equal contiguous
ranges. That is the hash and the range form of the apiserver's ``ShardedListAndWatch``
(``shardSelector=shardRange(object.metadata.uid, '0x..', '0x..') || ...``, Kubernetes 1.36,
alpha), so a shard can ask the apiserver for exactly its objects
(:meth:`Ownership.shard_selector`) and still decide the same thing on its own where the
apiserver does not filter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from hashlib import blake2b

__all__ = ["DEFAULT_BUCKETS", "EVERYTHING", "Ownership", "Table", "balance", "bucket", "bucket_range",
           "fnv1a64", "uid_bucket"]

DEFAULT_BUCKETS = 1024

_MASK64 = (1 << 64) - 1
# copying a pre-built hasher skips the keyword parsing of blake2b(...) on every call
_bucket_hasher = blake2b(digest_size=8, person=b"shardlet.bucket").copy


def bucket(key: str, buckets: int) -> int:
    """A stable bucket number in ``[0, buckets)`` for ``key`` (a node name).

    Jump consistent hashing (Lamping & Veach, 2014) over a BLAKE2b-64 digest. Balanced to
    within sampling noise; the float arithmetic is IEEE-754 double, identical everywhere.
    """
    if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1:
        raise ValueError(f"buckets must be a positive int, got {buckets!r}")
    h = _bucket_hasher()
    h.update(key.encode())
    k = int.from_bytes(h.digest())
    b, j = -1, 0
    while j < buckets:
        b = j
        k = (k * 2862933555777941757 + 1) & _MASK64
        j = int((b + 1) * (float(1 << 31) / float((k >> 33) + 1)))
    return b


_MAX_SHARD_SELECTOR = 90_000
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3


def fnv1a64(value: str) -> int:
    """64-bit FNV-1a of the UTF-8 bytes: ``k8s.io/apimachinery/pkg/sharding.HashField``."""
    h = _FNV_OFFSET
    for byte in value.encode():
        h = ((h ^ byte) * _FNV_PRIME) & _MASK64
    return h


def uid_bucket(uid: str, buckets: int) -> int:
    """The bucket of an object's uid: ``fnv1a64(uid)`` falls in ``bucket_range(b, buckets)``."""
    return (fnv1a64(uid) * buckets) >> 64


def bucket_range(b: int, buckets: int) -> tuple[int, int]:
    """``[start, end)`` of the FNV-1a hashes in bucket ``b`` of ``buckets`` (end at most 2**64)."""
    return -((-b << 64) // buckets), -((-(b + 1) << 64) // buckets)


@dataclass(frozen=True, slots=True)
class Table:
    """Bucket -> shard at one epoch. ``owners[b]`` indexes ``shards`` (sorted, unique)."""

    epoch: int
    shards: tuple[str, ...]
    owners: tuple[int, ...]

    def __post_init__(self) -> None:
        if isinstance(self.epoch, bool) or not isinstance(self.epoch, int) or self.epoch < 0:
            raise ValueError(f"table epoch must be a non-negative int, got {self.epoch!r}")
        if list(self.shards) != sorted(set(self.shards)) or not all(isinstance(s, str) and s for s in self.shards):
            raise ValueError(f"table shards must be sorted, unique, non-empty strings, got {list(self.shards)!r}")
        if not self.owners:
            raise ValueError("a table needs at least one bucket")
        if self.owners and not self.shards:
            raise ValueError("a table with buckets needs at least one shard")
        n = len(self.shards)
        for i, o in enumerate(self.owners):
            if isinstance(o, bool) or not isinstance(o, int) or not 0 <= o < n:
                raise ValueError(f"table bucket {i}: owner index must be in [0, {n}), got {o!r}")

    @property
    def buckets(self) -> int:
        return len(self.owners)

    def owner(self, node: str) -> str:
        """The shard that serves ``node``."""
        return self.shards[self.owners[bucket(node, len(self.owners))]]

    def buckets_of(self, shard: str) -> frozenset[int]:
        """The buckets ``shard`` serves (empty for a shard not on the table)."""
        if shard not in self.shards:
            return frozenset()
        i = self.shards.index(shard)
        return frozenset(b for b, o in enumerate(self.owners) if o == i)

    def loads(self, weights: Sequence[int]) -> dict[str, int]:
        """Each shard's total of ``weights`` (one per bucket, e.g. its node count)."""
        out = dict.fromkeys(self.shards, 0)
        for b, o in enumerate(self.owners):
            out[self.shards[o]] += weights[b]
        return out

    def moved(self, other: Table) -> frozenset[int]:
        """The buckets whose shard differs between this table and ``other``."""
        if other.buckets != self.buckets:
            raise ValueError(f"tables of {self.buckets} and {other.buckets} buckets cannot be compared")
        return frozenset(b for b, (x, y) in enumerate(zip(self.owners, other.owners, strict=True))
                         if self.shards[x] != other.shards[y])


@dataclass(frozen=True, slots=True)
class Ownership:
    """What one shard plays, worked out in one place (the actor, from the coordinator's tables)
    and handed to every controller, so no controller decides ownership on its own.

    Unsharded (``count == 0``) a shard owns everything. Sharded, it owns the buckets ``mine`` of
    a table of ``count`` buckets: a node by its name's bucket (what the bucket label carries,
    so the node controller can watch its slice server-side), any other object by its uid's
    bucket (uids never change and spread evenly, whatever the names)."""

    count: int = 0
    mine: frozenset[int] = frozenset()

    @classmethod
    def of(cls, shard: str, *tables: Table) -> Ownership:
        """The buckets ``shard`` owns under every table given: one, or the old and the new one
        while it releases (it keeps only what it owns under both)."""
        if not tables:
            raise ValueError("ownership needs at least one table")
        return cls(tables[0].buckets, frozenset.intersection(*(t.buckets_of(shard) for t in tables)))

    @property
    def sharded(self) -> bool:
        return self.count > 0

    def node_bucket(self, name: str) -> int:
        return bucket(name, self.count)

    def owns_node(self, name: str) -> bool:
        return not self.count or bucket(name, self.count) in self.mine

    def owns_object(self, obj: Mapping[str, object]) -> bool:
        if not self.count:
            return True
        meta = obj.get("metadata")
        m = meta if isinstance(meta, Mapping) else {}
        uid = m.get("uid") or f"{m.get('namespace') or ''}/{m.get('name')}"
        return uid_bucket(str(uid), self.count) in self.mine

    def shard_selector(self) -> str | None:
        """The apiserver's ``shardSelector`` for the objects this shard owns (by uid), adjacent
        buckets merged into one range; None where there is nothing to filter (unsharded, or every
        bucket) or nothing it can express (no bucket: a range must not be empty)."""
        if not self.count or not self.mine or len(self.mine) == self.count:
            return None
        runs: list[tuple[int, int]] = []
        for b in sorted(self.mine):
            if runs and runs[-1][1] == b:
                runs[-1] = (runs[-1][0], b + 1)
            else:
                runs.append((b, b + 1))
        out = " || ".join(
            f"shardRange(object.metadata.uid, '0x{bucket_range(lo, self.count)[0]:016x}', "
            f"'0x{bucket_range(hi - 1, self.count)[1]:016x}')" for lo, hi in runs)
        # the apiserver parses the selector as CEL, which refuses expressions over 100,000 code
        # points: a slice in more runs than fit is filtered here instead
        return out if len(out) <= _MAX_SHARD_SELECTOR else None

    def bucket_selector(self, label: str) -> str:
        """A label selector for the nodes of this slice (an empty slice selects none)."""
        return f"{label} in ({','.join(map(str, sorted(self.mine))) or 'none'})"


EVERYTHING = Ownership()   # a shard run alone


def balance(shards: Iterable[str], *, epoch: int, buckets: int = DEFAULT_BUCKETS, prev: Table | None = None,
            weights: Sequence[int] | Mapping[int, int] | None = None) -> Table:
    """A table over ``shards`` whose node counts (``weights[b]`` nodes in bucket ``b``) are as
    even as whole buckets allow, moving as few buckets away from ``prev`` as it can.

    Without ``prev`` every bucket is placed afresh; without ``weights`` (no nodes yet) the
    bucket counts are evened out.
    """
    ids = sorted(set(shards))
    if not ids:
        raise ValueError("balance needs at least one shard")
    if prev is not None:
        buckets = prev.buckets
    if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1:
        raise ValueError(f"buckets must be a positive int, got {buckets!r}")
    nodes = [0] * buckets
    if isinstance(weights, Mapping):
        for b, n in weights.items():
            nodes[b] = n
    elif weights is not None:
        if len(weights) != buckets:
            raise ValueError(f"{len(weights)} weights for {buckets} buckets")
        nodes = list(weights)
    if any(n < 0 for n in nodes):
        raise ValueError("bucket weights must be non-negative")
    w = [n * buckets + 1 for n in nodes]     # node counts first, then bucket counts

    index = {s: i for i, s in enumerate(ids)}
    owner: list[int | None] = [None] * buckets
    if prev is not None:
        for b, o in enumerate(prev.owners):
            owner[b] = index.get(prev.shards[o])
    load = [0] * len(ids)
    held: list[set[int]] = [set() for _ in ids]
    for b, kept in enumerate(owner):
        if kept is not None:
            load[kept] += w[b]
            held[kept].add(b)
    # buckets without a live shard: heaviest first, each to the least loaded shard
    for b in sorted((b for b, o in enumerate(owner) if o is None), key=lambda b: (-w[b], b)):
        o = min(range(len(ids)), key=lambda i: (load[i], i))
        owner[b] = o
        load[o] += w[b]
        held[o].add(b)
    # then one bucket at a time from the most to the least loaded shard, while that helps
    while len(ids) > 1:
        hi = max(range(len(ids)), key=lambda i: (load[i], -i))
        lo = min(range(len(ids)), key=lambda i: (load[i], i))
        gap = load[hi] - load[lo]
        # moving weight x leaves the pair |gap - 2x| apart; it helps only while 0 < x < gap
        best = min((b for b in held[hi] if w[b] < gap), key=lambda b: (abs(gap - 2 * w[b]), b), default=None)
        if best is None:
            break
        held[hi].discard(best)
        held[lo].add(best)
        load[hi] -= w[best]
        load[lo] += w[best]
        owner[best] = lo
    return Table(epoch, tuple(ids), tuple(o for o in owner if o is not None))
