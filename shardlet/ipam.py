"""Pod IP allocation, compatible with kwok's per-CIDR ``ipPool``.

kwok (``pkg/kwok/controllers/utils.go``, ``pod_controller.go``) keeps one pool per CIDR string:
the node's ``spec.podCIDRs`` (else ``spec.podCIDR``), else the configured default CIDR
(``--cidr``, default ``10.0.0.1/24``).  A pool counts up from the CIDR's *address* (kwok keeps the
host part: ``10.0.0.1/24`` starts at ``10.0.0.2``), marks addresses already on pods as used when it
(re)starts, and recycles the addresses of deleted pods.

Differences from kwok, all deliberate: allocation is keyed (the same pod key gets the same address
back while it holds one), released addresses are reused lowest first rather than in Go's random map
order, IPv4 network/broadcast addresses are never handed out, and running off the end of the CIDR
is an :class:`IPAMError` instead of silently leaving the network.

Allocation is O(1) amortised (a moving high-water mark) and O(log n) when reusing a released
address (a min-heap); nothing scans the range.
"""

from __future__ import annotations

import heapq
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["DEFAULT_CIDR", "IPAM", "IPAMError", "IPPool"]

#: kwok's default ``--cidr``.
DEFAULT_CIDR = "10.0.0.1/24"


class IPAMError(ValueError):
    """Invalid CIDR/IP, or an exhausted pool."""


def _v4_str(i: int) -> str:
    return f"{i >> 24}.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


class IPPool:
    """Addresses of one CIDR, handed out from the CIDR's address + 1 upward."""

    __slots__ = (
        "_by_ip",
        "_by_key",
        "_free",
        "_free_set",
        "_next",
        "_version",
        "cidr",
        "first",
        "last",
        "network",
    )

    def __init__(self, cidr: str) -> None:
        try:
            iface = ipaddress.ip_interface(cidr.strip())
        except ValueError:
            raise IPAMError(f"invalid CIDR {cidr!r}") from None
        if "/" not in cidr:
            raise IPAMError(f"invalid CIDR {cidr!r}: missing prefix length")
        self.cidr = cidr
        net = iface.network
        self.network = net
        self._version = net.version
        base = int(iface.ip)
        lo, hi = int(net.network_address), int(net.broadcast_address)
        if net.version == 4 and net.prefixlen < 31:
            lo, hi = lo + 1, hi - 1  # never the network or broadcast address
        elif net.version == 6 and net.prefixlen < 127:
            lo = max(lo, int(net.network_address) + 1)  # the subnet-router anycast address
        self.first = max(base + 1, lo)
        self.last = hi
        self._next = self.first
        self._free: list[int] = []  # released addresses (min-heap, lazily pruned)
        self._free_set: set[int] = set()
        self._by_key: dict[str, int] = {}
        self._by_ip: dict[int, str | None] = {}  # held address -> key (None: adopted, no key)

    # -- introspection --------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """How many addresses this pool can hand out in total."""
        return max(self.last - self.first + 1, 0)

    @property
    def in_use(self) -> int:
        """How many addresses are currently held."""
        return len(self._by_ip)

    def __contains__(self, ip: object) -> bool:
        if not isinstance(ip, str):
            return False
        try:
            return ipaddress.ip_address(ip) in self.network
        except ValueError:
            return False

    def __repr__(self) -> str:
        return f"IPPool({self.cidr!r}, in_use={self.in_use}, size={self.size})"

    def _str(self, i: int) -> str:
        if self._version == 4:
            return _v4_str(i)
        return str(ipaddress.IPv6Address(i))

    def _parse(self, ip: str) -> int | None:
        """The address as an int if it belongs to this pool's range, else None."""
        try:
            a = ipaddress.ip_address(ip.strip())
        except ValueError:
            raise IPAMError(f"invalid IP address {ip!r}") from None
        if a.version != self._version or a not in self.network:
            return None
        return int(a)

    # -- allocation -----------------------------------------------------------------------------
    def get(self, key: str) -> str:
        """The address held by ``key``, allocating the lowest free one if it has none."""
        held = self._by_key.get(key)
        if held is not None:
            return self._str(held)
        i = self._take()
        self._by_key[key] = i
        self._by_ip[i] = key
        return self._str(i)

    def _take(self) -> int:
        free = self._free
        while free:
            i = heapq.heappop(free)
            if i in self._free_set:
                self._free_set.discard(i)
                if i not in self._by_ip:
                    return i
        while self._next <= self.last:
            i = self._next
            self._next += 1
            if i not in self._by_ip:
                return i
        raise IPAMError(f"IP pool {self.cidr} exhausted ({self.size} addresses in use)")

    def use(self, ip: str, key: str | None = None) -> bool:
        """Mark an address already assigned elsewhere (e.g. found on a pod at restart) as taken.

        With ``key`` the address becomes that key's, so :meth:`get` returns it and
        :meth:`release` frees it.  Returns whether the address is now held (by ``key`` when given);
        False, changing nothing, when it is outside this CIDR, held by another key, or ``key``
        already holds a different address.
        """
        i = self._parse(ip)
        if i is None:
            return False
        if i in self._by_ip:
            owner = self._by_ip[i]
            if key is None or owner == key:
                return True
            if owner is not None:
                return False
        if key is not None:
            held = self._by_key.get(key)
            if held is not None and held != i:
                return False
            self._by_key[key] = i
        self._by_ip[i] = key
        self._free_set.discard(i)
        return True

    def release(self, key: str) -> str | None:
        """Free the address ``key`` holds (if any) for reuse; returns it."""
        i = self._by_key.pop(key, None)
        if i is None:
            return None
        del self._by_ip[i]
        self._free_address(i)
        return self._str(i)

    def release_ip(self, ip: str) -> bool:
        """Free an address by value (kwok's ``Put``); False if it was not held here."""
        i = self._parse(ip)
        if i is None or i not in self._by_ip:
            return False
        key = self._by_ip.pop(i)
        if key is not None:
            self._by_key.pop(key, None)
        self._free_address(i)
        return True

    def _free_address(self, i: int) -> None:
        if self.first <= i <= self.last and i not in self._free_set:
            self._free_set.add(i)
            heapq.heappush(self._free, i)

    def holder(self, ip: str) -> str | None:
        """The key holding ``ip`` (None when free, adopted without a key, or not in this pool)."""
        i = self._parse(ip)
        return None if i is None else self._by_ip.get(i)

    def held_by(self, key: str) -> str | None:
        """The address ``key`` holds, without allocating."""
        i = self._by_key.get(key)
        return None if i is None else self._str(i)


class IPAM:
    """Pools keyed by CIDR string, created on first use (as kwok's ``ipPools`` map)."""

    __slots__ = ("_keys", "default_cidr", "pools")

    def __init__(self, default_cidr: str = DEFAULT_CIDR) -> None:
        self.pools: dict[str, IPPool] = {}
        self._keys: dict[str, list[IPPool]] = {}  # key -> pools it holds addresses in
        self.default_cidr = default_cidr
        self.pool(default_cidr)  # validate early

    def pool(self, cidr: str) -> IPPool:
        p = self.pools.get(cidr)
        if p is None:
            p = self.pools[cidr] = IPPool(cidr)
        return p

    def pool_for(self, cidrs: Iterable[str] | None, fallback: str | None = None) -> list[IPPool]:
        """The pools for a node's pod CIDRs, or for ``fallback`` (default CIDR) when it has none."""
        chosen = [c for c in cidrs or () if c]
        if not chosen:
            chosen = [fallback if fallback is not None else self.default_cidr]
        return [self.pool(c) for c in chosen]

    @staticmethod
    def node_pod_cidrs(node: Mapping[str, Any] | None) -> list[str] | None:
        """kwok's choice of CIDRs for a node object: ``spec.podCIDRs``, else ``spec.podCIDR``."""
        if not node:
            return None
        spec = node.get("spec") or {}
        cidrs = spec.get("podCIDRs")
        if cidrs:
            return [str(c) for c in cidrs]
        cidr = spec.get("podCIDR")
        if cidr:
            return [str(cidr)]
        return None

    def allocate(
        self, key: str, cidrs: Iterable[str] | None = None, fallback: str | None = None
    ) -> list[str]:
        """One address per pool (``PodIPsWith``); idempotent for ``key``."""
        pools = self.pool_for(cidrs, fallback)
        out = []
        held = self._keys.setdefault(key, [])
        try:
            for p in pools:
                out.append(p.get(key))
                if p not in held:
                    held.append(p)
        except IPAMError:
            if not held:
                del self._keys[key]
            raise
        return out

    def adopt(
        self, key: str, ips: Iterable[str], cidrs: Iterable[str] | None = None, fallback: str | None = None
    ) -> None:
        """Mark a pod's existing addresses as used (kwok's ``markPodIP``), i-th IP in i-th CIDR."""
        pools = self.pool_for(cidrs, fallback)
        held = self._keys.setdefault(key, [])
        for p, ip in zip(pools, ips, strict=False):
            if p.use(ip, key) and p not in held:
                held.append(p)
        if not held:
            del self._keys[key]

    def release(self, key: str) -> list[str]:
        """Free every address ``key`` holds; returns them."""
        out = []
        for p in self._keys.pop(key, ()):
            ip = p.release(key)
            if ip is not None:
                out.append(ip)
        return out
