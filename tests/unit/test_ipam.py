"""Tests for shardlet.ipam (kwok-compatible pod IP pools)."""

from __future__ import annotations

import ipaddress
import time

import pytest

from shardlet.ipam import DEFAULT_CIDR, IPAM, IPAMError, IPPool


def test_starts_after_the_cidr_address_like_kwok() -> None:
    # kwok keeps the host part of the CIDR: 10.0.0.1/24 hands out 10.0.0.2 first.
    p = IPPool("10.0.0.1/24")
    assert [p.get(k) for k in "abc"] == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    assert p.size == 253 and p.in_use == 3
    assert IPPool("10.0.0.0/24").get("a") == "10.0.0.1"


def test_get_is_idempotent_per_key_and_unique_across_keys() -> None:
    p = IPPool("10.1.0.0/16")
    ips = {p.get(f"ns/pod-{i}") for i in range(5000)}
    assert len(ips) == 5000
    assert p.get("ns/pod-42") == p.get("ns/pod-42") == p.held_by("ns/pod-42")
    assert p.in_use == 5000
    assert all(ipaddress.ip_address(ip) in p.network for ip in ips)


def test_release_reuses_lowest_first() -> None:
    p = IPPool("10.0.0.0/24")
    for k in "abcdef":
        p.get(k)
    assert p.release("d") == "10.0.0.4"
    assert p.release("b") == "10.0.0.2"
    assert p.release("b") is None  # already released
    assert p.in_use == 4
    assert p.get("x") == "10.0.0.2"
    assert p.get("y") == "10.0.0.4"
    assert p.get("z") == "10.0.0.7"


def test_never_hands_out_network_or_broadcast() -> None:
    p = IPPool("192.168.1.0/30")  # .0 network, .3 broadcast
    assert p.size == 2
    assert [p.get("a"), p.get("b")] == ["192.168.1.1", "192.168.1.2"]
    with pytest.raises(IPAMError, match="exhausted"):
        p.get("c")
    assert IPPool("10.0.0.4/31").size == 1  # RFC 3021 point-to-point: both usable, minus the base
    assert IPPool("10.0.0.4/32").size == 0


def test_exhaustion_then_release() -> None:
    p = IPPool("10.0.0.1/29")  # .0 network .7 broadcast; from .2: 2..6
    got = [p.get(str(i)) for i in range(5)]
    assert got[-1] == "10.0.0.6"
    with pytest.raises(IPAMError, match=r"IP pool 10\.0\.0\.1/29 exhausted"):
        p.get("more")
    p.release("3")
    assert p.get("more") == "10.0.0.5"


def test_ipv6() -> None:
    p = IPPool("fd00:10:244::/64")
    assert p.get("a") == "fd00:10:244::1"
    assert p.get("b") == "fd00:10:244::2"
    assert p.size == 2**64 - 1
    assert IPPool("fd00::10/120").get("a") == "fd00::11"
    small = IPPool("fd00::/126")
    assert [small.get(k) for k in "abc"] == ["fd00::1", "fd00::2", "fd00::3"]
    with pytest.raises(IPAMError):
        small.get("d")


def test_use_adopts_existing_addresses() -> None:
    p = IPPool("10.0.0.0/24")
    assert p.use("10.0.0.1", "old-pod")
    assert p.use("10.0.0.3")  # adopted without a key
    assert not p.use("10.9.9.9", "x")  # outside the CIDR: ignored, as kwok does
    assert not p.use("10.0.0.1", "someone-else")  # held by another key
    assert p.use("10.0.0.1", "old-pod")  # same key: fine
    assert p.get("old-pod") == "10.0.0.1"
    assert [p.get("n1"), p.get("n2")] == ["10.0.0.2", "10.0.0.4"]  # skips adopted .1 and .3
    assert p.holder("10.0.0.1") == "old-pod" and p.holder("10.0.0.3") is None
    assert p.release_ip("10.0.0.3") and not p.release_ip("10.0.0.3")
    assert p.get("n3") == "10.0.0.3"
    # adopting an address that was released (sitting in the free heap) takes it out of reuse
    p.release("n1")
    assert p.use("10.0.0.2", "adopted")
    assert p.get("n4") == "10.0.0.5"


def test_use_refuses_a_second_address_for_a_key() -> None:
    p = IPPool("10.0.0.0/24")
    assert p.get("k") == "10.0.0.1"
    assert not p.use("10.0.0.9", "k")
    assert p.held_by("k") == "10.0.0.1"


def test_invalid_input_names_the_value() -> None:
    for bad in ["nope", "10.0.0.0/33", "10.0.0.0", "", "fd00::/129"]:
        with pytest.raises(IPAMError, match=repr(bad).replace("[", r"\[").replace("]", r"\]")):
            IPPool(bad)
    p = IPPool("10.0.0.0/24")
    with pytest.raises(IPAMError, match=r"'x\.y'"):
        p.use("x.y")
    assert "10.0.0.5" in p and "10.0.1.5" not in p and "junk" not in p


def test_allocation_is_constant_time() -> None:
    p = IPPool("10.0.0.0/8")
    t0 = time.perf_counter()
    for i in range(20000):
        p.get(str(i))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(20000, 40000):
        p.get(str(i))
    second = time.perf_counter() - t0
    assert second < first * 3 + 0.05  # no scan of the range: the second batch is not slower


def test_ipam_pools_per_cidr_with_fallback() -> None:
    ipam = IPAM()
    assert ipam.default_cidr == DEFAULT_CIDR == "10.0.0.1/24"
    [default] = ipam.pool_for(None, DEFAULT_CIDR)
    assert default is ipam.pool(DEFAULT_CIDR)
    assert ipam.pool_for([], "10.5.0.0/16")[0].cidr == "10.5.0.0/16"
    dual = ipam.pool_for(["10.244.1.0/24", "fd00:10:244:1::/64"], DEFAULT_CIDR)
    assert [p.cidr for p in dual] == ["10.244.1.0/24", "fd00:10:244:1::/64"]
    assert ipam.pool_for(["10.244.1.0/24"], DEFAULT_CIDR)[0] is dual[0]
    with pytest.raises(IPAMError, match=r"'10\.0\.0\.0/99'"):
        ipam.pool_for(["10.0.0.0/99"], DEFAULT_CIDR)
    with pytest.raises(IPAMError, match="'bad'"):
        IPAM("bad")


def test_node_pod_cidrs() -> None:
    assert IPAM.node_pod_cidrs({"spec": {"podCIDRs": ["10.1.0.0/24", "fd00::/64"], "podCIDR": "x"}}) == [
        "10.1.0.0/24",
        "fd00::/64",
    ]
    assert IPAM.node_pod_cidrs({"spec": {"podCIDR": "10.2.0.0/24"}}) == ["10.2.0.0/24"]
    assert IPAM.node_pod_cidrs({"spec": {}}) is None
    assert IPAM.node_pod_cidrs(None) is None


def test_ipam_allocate_adopt_release() -> None:
    ipam = IPAM()
    cidrs = ["10.244.1.0/24", "fd00:1::/64"]
    assert ipam.allocate("ns/a", cidrs) == ["10.244.1.1", "fd00:1::1"]
    assert ipam.allocate("ns/a", cidrs) == ["10.244.1.1", "fd00:1::1"]
    assert ipam.allocate("ns/b", None) == ["10.0.0.2"]
    ipam.adopt("ns/c", ["10.244.1.2", "fd00:1::7"], cidrs)
    assert ipam.allocate("ns/d", cidrs) == ["10.244.1.3", "fd00:1::2"]
    assert sorted(ipam.release("ns/c")) == ["10.244.1.2", "fd00:1::7"]
    assert ipam.release("ns/c") == []
    assert ipam.allocate("ns/e", cidrs)[0] == "10.244.1.2"
    assert ipam.release("ns/a") == ["10.244.1.1", "fd00:1::1"]
    assert ipam.pool("10.244.1.0/24").in_use == 2
