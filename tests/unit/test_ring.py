"""Consistent-hash ring: balance, minimal movement, determinism."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from coordinator.ring import DEFAULT_VNODES, Ring, bucket, key_hash

REPO = Path(__file__).resolve().parents[2]

# The statistical properties below are checked on derandomized examples: a run is
# reproducible, and the bounds carry enough margin that changing the examples (a new
# hypothesis version) does not make them flaky.
STATS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow],
)

# Bound on a shard's share of the hash space (its *expected* share of nodes) relative
# to 1/S, with DEFAULT_VNODES=2048 vnodes.  Canonical ids shard-0..shard-{S-1}, S in
# 2..16: measured worst 1.052 (S=9) / 0.943 (S=12).  Arbitrary ids: measured max/mean
# p99 1.062, worst 1.078 over 1500 random sets of 2..16 ids.
ARC_MAX_CANONICAL = 1.06
ARC_MIN_CANONICAL = 0.94
ARC_MAX_ANY = 1.10
# Node counts are Binomial(n, share): allow 4.5 standard deviations (p ~ 7e-6 per check).
Z = 4.5


def canonical(s: int) -> list[str]:
    return [f"shard-{i}" for i in range(s)]


def node_names(seed: int, n: int) -> list[str]:
    """n distinct node names in a mix of real-world styles."""
    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < n:
        style = rng.randrange(4)
        if style == 0:
            out.add(f"kwok-node-{rng.randrange(10**6)}")
        elif style == 1:
            out.add(f"ip-10-{rng.randrange(256)}-{rng.randrange(256)}-{rng.randrange(256)}.ec2.internal")
        elif style == 2:
            out.add(f"gke-pool-{rng.getrandbits(32):08x}-{rng.getrandbits(16):04x}")
        else:
            out.add(
                "".join(
                    rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-") for _ in range(rng.randint(1, 40))
                )
            )
    return sorted(out)


def shard_ids(seed: int, s: int) -> list[str]:
    rng = random.Random(seed)
    ids: set[str] = set()
    while len(ids) < s:
        ids.add(f"shard-{rng.getrandbits(48):012x}")
    return sorted(ids)


def within_binomial(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= Z * math.sqrt(n * p * (1 - p)) + 1


# --- golden: a regression guard for the hashing scheme ----------------------------------

GOLDEN_NAMES = [
    "kwok-node-0",
    "kwok-node-1",
    "kwok-node-2",
    "kwok-node-3",
    "kwok-node-42",
    "kwok-node-999",
    "ip-10-0-1-17.ec2.internal",
    "worker-a",
    "node-ü",
]
GOLDEN_OWNERS = {
    4: ["shard-2", "shard-2", "shard-1", "shard-3", "shard-2", "shard-0", "shard-2", "shard-2", "shard-0"],
    5: ["shard-2", "shard-2", "shard-1", "shard-3", "shard-2", "shard-0", "shard-2", "shard-2", "shard-0"],
    16: [
        "shard-7",
        "shard-9",
        "shard-15",
        "shard-14",
        "shard-10",
        "shard-0",
        "shard-2",
        "shard-2",
        "shard-10",
    ],
}
GOLDEN_BUCKETS_16 = [1, 1, 10, 14, 10, 8, 7, 1, 3]


@pytest.mark.parametrize("s", sorted(GOLDEN_OWNERS))
def test_golden_owners(s: int) -> None:
    ring = Ring(canonical(s))
    assert ring.vnodes == DEFAULT_VNODES == 2048
    assert [ring.owner(n) for n in GOLDEN_NAMES] == GOLDEN_OWNERS[s]


def test_golden_key_hash_is_plain_blake2b_64() -> None:
    assert key_hash("kwok-node-0") == 0x109F4F3072E6CA96
    assert key_hash("kwok-node-1") == 0xAA4D4BBBBAFEC8DE
    for name in GOLDEN_NAMES:
        ref = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
        assert key_hash(name) == int.from_bytes(ref, "big")


def test_golden_buckets() -> None:
    assert [bucket(n, 16) for n in GOLDEN_NAMES] == GOLDEN_BUCKETS_16


def test_same_owners_in_other_processes_with_other_hash_seeds() -> None:
    names = node_names(1, 300)
    ring = Ring(canonical(7))
    expected = [ring.owner(n) for n in names]
    script = (
        "import json, sys\n"
        "from coordinator.ring import Ring\n"
        "names = json.load(sys.stdin)\n"
        "ring = Ring([f'shard-{i}' for i in range(6, -1, -1)])\n"
        "print(json.dumps([ring.owner(n) for n in names]))\n"
    )
    for seed in ("0", "12345", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        out = subprocess.run(
            [sys.executable, "-c", script],
            input=json.dumps(names),
            capture_output=True,
            text=True,
            check=True,
            env=env,
            cwd=REPO,
        )
        assert json.loads(out.stdout) == expected


# --- API ----------------------------------------------------------------------------------


def test_shard_order_does_not_matter() -> None:
    a, b = Ring(["c", "a", "b"]), Ring(["b", "c", "a"])
    assert a == b and hash(a) == hash(b)
    assert a.shards == ("a", "b", "c")
    names = node_names(2, 500)
    assert [a.owner(n) for n in names] == [b.owner(n) for n in names]


def test_with_shards_bumps_epoch_and_keeps_vnodes() -> None:
    r = Ring(["a", "b"], epoch=7, vnodes=64)
    r2 = r.with_shards(["a", "b", "c"])
    assert (r2.epoch, r2.shards, r2.vnodes) == (8, ("a", "b", "c"), 64)
    assert (r.epoch, r.shards) == (7, ("a", "b"))  # immutable
    assert r != r2
    assert Ring(["a"], epoch=1) != Ring(["a"], epoch=2)
    assert Ring(["a"], vnodes=8) != Ring(["a"], vnodes=9)
    assert "a" in r and "c" not in r and len(r2) == 3
    assert repr(r) == "Ring(epoch=7, shards=['a', 'b'], vnodes=64)"


@pytest.mark.parametrize(
    ("shards", "kwargs", "match"),
    [
        (["a", "a", "b"], {}, r"duplicate shard ids: \['a'\]"),
        (["a", ""], {}, "non-empty strings"),
        (["a", 3], {}, "non-empty strings"),
        (["a"], {"epoch": -1}, "epoch"),
        (["a"], {"vnodes": 0}, "vnodes"),
    ],
)
def test_invalid_rings(shards: list[object], kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Ring(shards, **kwargs)  # type: ignore[arg-type]


def test_empty_ring_owns_nothing() -> None:
    r = Ring([], epoch=0, vnodes=256)  # a coordinator before its first shard
    assert (r.shards, len(r), r.shares(), r.partition([])) == ((), 0, {}, {})
    with pytest.raises(LookupError, match="epoch 0 ring has no shards"):
        r.owner("kwok-node-0")
    with pytest.raises(LookupError, match="no shards"):
        r.partition(["kwok-node-0"])
    with pytest.raises(ValueError, match="not on the ring"):
        r.slice_of("shard-0", ["kwok-node-0"])
    grown = r.with_shards(["shard-0"])
    assert (grown.epoch, grown.owner("kwok-node-0")) == (1, "shard-0")


def test_single_shard_owns_everything() -> None:
    r = Ring(["only"])
    assert {r.owner(n) for n in node_names(3, 200)} == {"only"}
    assert r.shares() == {"only": 1.0}


def test_slices_partition_and_owner_agree() -> None:
    ring = Ring(canonical(5))
    names = node_names(4, 3000)
    parts = ring.partition(names)
    assert set(parts) == set(ring.shards)
    for shard in ring.shards:
        sl = ring.slice_of(shard, names)
        assert sl == parts[shard]
        assert all(ring.owner(n) == shard for n in sl)
    assert sorted(n for sl in parts.values() for n in sl) == names  # disjoint and complete
    with pytest.raises(ValueError, match="'shard-9' is not on the ring"):
        ring.slice_of("shard-9", names)


@pytest.mark.parametrize(("s", "vnodes"), [(2, 1), (3, 1), (3, 2), (4, 3), (5, 2)])
def test_owner_agrees_with_shares_on_coarse_rings(s: int, vnodes: int) -> None:
    """With few points, the wrap-around arc is large: owner() and shares() must agree on it."""
    ring = Ring(canonical(s), vnodes=vnodes)
    names = node_names(9, 20000)
    shares = ring.shares()
    for shard, sl in ring.partition(names).items():
        assert within_binomial(len(sl), len(names), shares[shard]), (shard, len(sl), shares[shard])


def test_shares_sum_to_one() -> None:
    for ring in (Ring(canonical(16)), Ring(shard_ids(5, 3), vnodes=7)):
        assert math.isclose(sum(ring.shares().values()), 1.0, rel_tol=1e-12)


def test_non_ascii_and_empty_keys_are_fine() -> None:
    ring = Ring(canonical(3))
    assert ring.owner("") in ring.shards
    assert ring.owner("nœud-ü-√") in ring.shards


# --- balance --------------------------------------------------------------------------------


@pytest.mark.parametrize("s", range(2, 17))
def test_arc_balance_canonical_ids(s: int) -> None:
    shares = Ring(canonical(s)).shares()
    assert max(shares.values()) * s <= ARC_MAX_CANONICAL
    assert min(shares.values()) * s >= ARC_MIN_CANONICAL


@STATS
@given(seed=st.integers(0, 2**32), s=st.integers(2, 16))
def test_arc_balance_any_ids(seed: int, s: int) -> None:
    shares = Ring(shard_ids(seed, s)).shares()
    assert max(shares.values()) * s <= ARC_MAX_ANY


@STATS
@given(seed=st.integers(0, 2**32), n=st.integers(1000, 20000), s=st.integers(2, 16))
@example(seed=0, n=2000, s=16)
@example(seed=1, n=20000, s=16)
@example(seed=2, n=20000, s=2)
def test_node_balance(seed: int, n: int, s: int) -> None:
    """Each shard's node count is its arc share of n, up to binomial noise.

    Guaranteed (per the bounds above): max/mean <= 1.06 + 4.5*sqrt(1.06*S/n), i.e.
    <= 1.13 at n=20000/S=4 and <= 1.47 at n=2000/S=16 (4.5 sigma of pure sampling noise,
    which no per-key hash avoids).  Typical values are far lower: the median over random
    node sets is 1.05 (n=2000, S=4), 1.07 (S=5), 1.15 (S=16); at n=20000: 1.02, 1.03, 1.06.
    """
    ring = Ring(canonical(s))
    names = node_names(seed, n)
    shares = ring.shares()
    counts = {shard: len(sl) for shard, sl in ring.partition(names).items()}
    assert sum(counts.values()) == n
    for shard, count in counts.items():
        assert within_binomial(count, n, shares[shard]), (shard, count, n * shares[shard])
    assert max(counts.values()) / (n / s) <= ARC_MAX_CANONICAL + Z * math.sqrt(ARC_MAX_CANONICAL * s / n)


@pytest.mark.parametrize(("s", "max_over_mean"), [(4, 1.028), (5, 1.03), (16, 1.184)])
def test_node_balance_2000_kwok_nodes(s: int, max_over_mean: float) -> None:
    """Measured max/mean for kwok-node-0..1999; pinned, so a worse scheme shows up here."""
    counts = [len(sl) for sl in Ring(canonical(s)).partition(f"kwok-node-{i}" for i in range(2000)).values()]
    assert max(counts) / (2000 / s) == pytest.approx(max_over_mean, abs=1e-9)


# --- movement -------------------------------------------------------------------------------


@STATS
@given(seed=st.integers(0, 2**32), n=st.integers(1000, 20000), s=st.integers(2, 16))
def test_adding_a_shard_moves_only_keys_to_it(seed: int, n: int, s: int) -> None:
    ids = shard_ids(seed, s + 1)
    added = ids[seed % len(ids)]
    old = Ring([i for i in ids if i != added])
    new = old.with_shards(ids)
    names = node_names(seed, n)
    moved = [k for k in names if old.owner(k) != new.owner(k)]
    assert all(new.owner(k) == added for k in moved)
    assert moved == new.slice_of(added, names)  # everything the new shard owns came from elsewhere
    share = new.shares()[added]
    assert share * (s + 1) <= ARC_MAX_ANY
    assert within_binomial(len(moved), n, share)


@STATS
@given(seed=st.integers(0, 2**32), n=st.integers(1000, 20000), s=st.integers(2, 16))
def test_removing_a_shard_moves_only_its_keys(seed: int, n: int, s: int) -> None:
    ids = shard_ids(seed, s)
    removed = ids[seed % len(ids)]
    old = Ring(ids)
    new = old.with_shards(i for i in ids if i != removed)
    names = node_names(seed, n)
    moved = [k for k in names if old.owner(k) != new.owner(k)]
    assert moved == old.slice_of(removed, names)
    assert within_binomial(len(moved), n, old.shares()[removed])


@STATS
@given(
    seed=st.integers(0, 2**32),
    before=st.sets(st.integers(0, 11), min_size=1),
    after=st.sets(st.integers(0, 11), min_size=1),
)
def test_no_key_moves_between_two_unchanged_shards(seed: int, before: set[int], after: set[int]) -> None:
    a = Ring(f"s{i}" for i in before)
    b = a.with_shards(f"s{i}" for i in after)
    common = set(a.shards) & set(b.shards)
    for k in node_names(seed, 2000):
        src, dst = a.owner(k), b.owner(k)
        assert src == dst or not (src in common and dst in common), (k, src, dst)


def test_scale_4_to_5_moves_about_a_fifth() -> None:
    names = [f"kwok-node-{i}" for i in range(20000)]
    old = Ring(canonical(4))
    new = old.with_shards(canonical(5))
    moved = sum(old.owner(k) != new.owner(k) for k in names)
    share = new.shares()["shard-4"]
    assert within_binomial(moved, len(names), share)
    assert 0.17 <= moved / len(names) <= 0.23


# --- bucket -----------------------------------------------------------------------------------


def test_bucket_range_and_balance() -> None:
    names = node_names(6, 20000)
    for b in (1, 2, 7, 16, 64):
        counts = [0] * b
        for n in names:
            counts[bucket(n, b)] += 1
        for c in counts:
            assert within_binomial(c, len(names), 1 / b)


def test_bucket_growth_only_moves_keys_into_the_new_bucket() -> None:
    names = node_names(7, 5000)
    for b in range(1, 33):
        moved = [n for n in names if bucket(n, b) != bucket(n, b + 1)]
        assert all(bucket(n, b + 1) == b for n in moved)
        assert within_binomial(len(moved), len(names), 1 / (b + 1))


def test_bucket_is_independent_of_ring_position() -> None:
    # Domain-separated digests: a bucket holds nodes of every shard in proportion.
    ring = Ring(canonical(4))
    names = node_names(8, 8000)
    in_bucket0 = [n for n in names if bucket(n, 4) == 0]
    counts = {s: len(sl) for s, sl in ring.partition(in_bucket0).items()}
    shares = ring.shares()
    for s, c in counts.items():
        assert within_binomial(c, len(in_bucket0), shares[s])


@pytest.mark.parametrize("bad", [0, -1, True, 2.0])
def test_bucket_rejects_bad_counts(bad: object) -> None:
    with pytest.raises(ValueError, match="buckets"):
        bucket("x", bad)  # type: ignore[arg-type]


def test_node_owner_follows_buckets_when_nodes_are_bucket_labelled() -> None:
    from coordinator.ring import bucket, bucket_key, node_owner

    ring = Ring([f"shard-{i}" for i in range(4)], epoch=1)
    names = [f"kwok-node-{i}" for i in range(400)]
    assert all(node_owner(ring, n) == ring.owner(n) for n in names)
    by_bucket = [node_owner(ring, n, 1024) for n in names]
    assert by_bucket == [ring.owner(bucket_key(bucket(n, 1024))) for n in names]
    assert bucket_key(7) == "bucket-7"   # the key every shard and coordinator version agrees on
    assert set(by_bucket) == set(ring.shards)
    # the two modes really differ: routing by name in bucket mode would miss the owner
    assert sum(a != b for a, b in zip(by_bucket, (ring.owner(n) for n in names), strict=True)) > 100
