"""The Lease controller: node Leases in kube-node-lease, renewed on the kubelet's cadence for a
whole slice. The shard adds a node when the Node controller adopts it and removes it on release;
the node's Ready condition comes the same way (``set_ready``).

One heap of due times per shard and a bounded pool of in-flight requests: no task or thread per
node. Renewals on time use at most `calm` connections and leave the rest of the apiserver to
the shard's stage writes, so a busy apiserver stretches the renewals a little, as it does
kwok's; a renewal a whole interval late (its lease half expired) may use any of `concurrency`,
and from then on stage writes give way to it (shardlet.precedence). A node's first acquisition
is not held to `calm`: its first play waits for it, and while any wait an on-time renewal is put
back for up to an interval (new nodes first, the way not-Ready nodes wait below; the lease is
then at most half its duration old). Each renewal is a PUT of
the cached Lease (optimistic concurrency, like the kubelet); a 409 re-reads it. The cache holds
the Lease without its managedFields, which a PUT that leaves them out keeps as they are (the
apiserver reads the live ones), and a renewal takes only the new resourceVersion from the
response: the rest of it is what was sent.

Fencing, kwok's rule: a node is played only while this shard holds its lease (``holds``; the
shard gates its Node and Pod controllers on it, through ``on_held``/``on_lost``). A lease held
by another holder is taken over only once it has expired (renewTime + leaseDurationSeconds +
``skew``), so two instances, or shardlet and kwok, share a cluster's nodes without ping-pong;
until then it is looked at again when it would expire. Two exceptions, both this run's own: a
holder that ``trusts`` accepts (another shard of the same instance) is taken over at once when
a node is newly handed to this shard, since the coordinator hands a node over only after its
old owner released it or was killed; and a lease that ``prime`` found held by this very holder
(a restart with a stable ``--id``) is held from the start. A lease someone else wrote while we
held it is given up to a live holder, whoever it is: a shard the coordinator gave up on must
not win its nodes back.

Ready nodes first: while renewals run an interval behind, a node whose Ready condition is not
True (not initialised yet, or already marked Unknown) is skipped. Its lease cannot make it go
NotReady, and during a ramp of thousands of new nodes their lease writes are what pushes the
Ready ones past the grace period (measured: a 30,000-node ramp stalled near 25,000 Ready,
flapping). It is renewed at once when it turns Ready, from which the controller-manager counts
its grace anew.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from shardlet.api import ApiError, Kube
from shardlet.delayqueue import DelayQueue, noop

log = structlog.get_logger("shardlet.controllers.leases")


def never(_holder: str) -> bool:
    return False

NAMESPACE = "kube-node-lease"
_PATH = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases"


_second: tuple[int, str] = (-1, "")
_RV = b'"resourceVersion":"'


def micro_time(t: float | None = None) -> str:
    """RFC 3339 with microseconds (a MicroTime). The formatted second is kept: strftime per call
    was 4% of a shard's busy samples while it renewed 1,371 leases a second (py-spy)."""
    global _second
    frac, whole = math.modf(time.time() if t is None else t)
    sec, us = int(whole), round(frac * 1_000_000)   # rounded as datetime.fromtimestamp does
    if us < 0:
        sec, us = sec - 1, us + 1_000_000
    if us >= 1_000_000:
        sec, us = sec + 1, us - 1_000_000
    if _second[0] != sec:
        _second = (sec, dt.datetime.fromtimestamp(sec, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_second[1]}.{us:06d}Z"


def resource_version(raw: bytes) -> str | None:
    """metadata.resourceVersion of a Lease as the apiserver writes it, without parsing the rest:
    the first "resourceVersion" key in its JSON is the object's own (kind, apiVersion and the
    metadata fields before it are names and a uid, which cannot hold that quoted key)."""
    i = raw.find(_RV)
    if i < 0:
        return None
    i += len(_RV)
    j = raw.find(b'"', i)
    return raw[i:j].decode() if j > i else None


def lean(lease: dict[str, Any]) -> dict[str, Any]:
    """The Lease as a renewal sends it: without managedFields, which the apiserver keeps."""
    meta = lease.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return lease


def renewed(lease: dict[str, Any], raw: bytes) -> dict[str, Any]:
    """The cached Lease after a PUT of it that the apiserver answered with `raw`: the one sent,
    with the answer's new resourceVersion (the rest is what was sent), or the answer itself when
    that is not found."""
    rv = resource_version(raw)
    if rv is None:
        return lean(orjson.loads(raw))
    lease["metadata"]["resourceVersion"] = rv
    return lease


def parse_micro_time(s: Any) -> float | None:
    """Seconds since the epoch of a MicroTime (or RFC 3339 Time) string; None if it is not one."""
    if not isinstance(s, str) or not s:
        return None
    try:
        t = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def expires_at(spec: dict[str, Any]) -> float | None:
    """renewTime + leaseDurationSeconds; None when either is missing (kwok: free to take)."""
    renew = parse_micro_time(spec.get("renewTime"))
    duration = spec.get("leaseDurationSeconds")
    if renew is None or not isinstance(duration, int) or isinstance(duration, bool):
        return None
    return renew + duration


@dataclass(frozen=True, slots=True)
class LeaseControllerConfig:
    holder: str                 # holderIdentity written into every lease
    duration: int = 40          # leaseDurationSeconds; renewed every quarter of it, as the kubelet does
    concurrency: int = 64       # renewals in flight at most
    calm: int = 16              # renewals in flight while none is late (0: no calm limit)
    skew: float = 2.0           # seconds past another holder's expiry before taking its lease over

    def __post_init__(self) -> None:
        if not self.holder:
            raise ValueError("lease controller: holder must not be empty")
        if self.duration < 1:
            raise ValueError(f"lease controller {self.holder}: duration must be >= 1 s, got {self.duration}")
        if self.concurrency < 1 or self.calm < 0:
            raise ValueError(f"lease controller {self.holder}: concurrency must be >= 1 and calm >= 0")
        if self.skew < 0:
            raise ValueError(f"lease controller {self.holder}: skew must be >= 0, got {self.skew}")


class LeaseController:
    def __init__(self, kube: Kube, config: LeaseControllerConfig, *,
                 on_renew: Callable[[float, bool], None] | None = None,
                 on_held: Callable[[str], None] = noop,
                 on_lost: Callable[[str], None] = noop,
                 trusts: Callable[[str], bool] = never,
                 clock: Callable[[], float] = time.time) -> None:
        self.kube = kube
        self.cfg = config
        self.holder = config.holder
        self.duration = duration = config.duration
        concurrency, calm = config.concurrency, config.calm
        self.interval = duration / 4.0
        # renewals leave in ticks (see DelayQueue): up to a tick (a quarter second) late, half a
        # tick on average, which the interval below takes off
        self.tick = min(0.25, self.interval / 40)
        self.on_renew = on_renew           # (lag seconds, ok)
        self.on_held = on_held             # a lease acquired: its node may be played from now on
        self.on_lost = on_lost             # a held lease now someone else's: stop playing its node
        self.trusts = trusts               # holders this run may take over at once (its own shards)
        self.clock = clock                 # wall clock: renewTime is wall time
        self.held: set[str] = set()
        self.fresh: set[str] = set()       # added, not held yet: a trusted holder is taken over
        self.first: set[str] = set()       # added, its first acquisition not tried yet
        # node -> (holder, expiry) of a lease another holder keeps; looked at again at expiry
        self.elsewhere: dict[str, tuple[str, float]] = {}
        self.taken_over = 0
        self.lost = 0
        self.leases: dict[str, dict[str, Any]] = {}
        self.uids: dict[str, str] = {}
        # the item: when a deferred renewal first came due (None otherwise)
        self.queue: DelayQueue[str, float | None] = DelayQueue(self._renew, concurrency=concurrency, name="lease",
                                                          tick=self.tick)
        self._calm = asyncio.Semaphore(calm) if 0 < calm < concurrency else None
        self.urgent_after = self.interval    # seconds past due
        self.first_grace = self.interval     # an on-time renewal gives way to first acquisitions this long
        self.deferred = 0
        self.urgent = 0                      # renewals that went past the calm limit
        self.renewals = 0
        self.failures = 0
        self.last_error = ""
        self.failing: dict[str, int] = {}   # node -> consecutive failures, for the backoff
        self.ready: set[str] = set()        # nodes whose Ready condition was True when last seen
        self.put_off: set[str] = set()      # not-Ready nodes skipped while renewals ran behind
        self.skipped = 0

    def __len__(self) -> int:
        return len(self.uids)

    def add(self, node: str, uid: str) -> None:
        known = node in self.uids
        self.uids[node] = uid
        if known:
            return
        lease = self.leases.get(node)
        if lease is not None and (lease.get("spec") or {}).get("holderIdentity") == self.holder:
            self.held.add(node)         # primed: ours already (kwok's Held reads its cache the same way)
        else:
            self.fresh.add(node)
            self.first.add(node)
        self.queue.put(node, None, 0.0)

    def holds(self, node: str) -> bool:
        return node in self.held

    async def prime(self, wanted: Callable[[str], bool]) -> int:
        """Read the leases once before the nodes come: the wanted ones this holder already holds
        are held from the start and renewed, not taken over again; their nodes are played at
        once. Returns how many."""
        items, _ = await self.kube.list_all(_PATH)
        n = 0
        for lease in items:
            name = (lease.get("metadata") or {}).get("name")
            if (isinstance(name, str) and wanted(name)
                    and (lease.get("spec") or {}).get("holderIdentity") == self.holder):
                self.leases[name] = lean(lease)
                n += 1
        return n

    def unprime(self) -> None:
        """Forget the primed leases of nodes that were not added."""
        for name in [n for n in self.leases if n not in self.uids]:
            del self.leases[name]

    def set_ready(self, node: str, ready: bool) -> None:
        """The node's Ready condition as last seen; one that turns Ready after being skipped is
        renewed at once."""
        if not ready:
            self.ready.discard(node)
            return
        self.ready.add(node)
        if node in self.put_off:
            self.put_off.discard(node)
            if node in self.uids:
                self.queue.put(node, None, 0.0)

    def behind(self) -> bool:
        """Renewals run behind: the oldest due one has waited a whole interval for a slot, which
        leaves its lease half its duration old. Stage writes give way (shardlet.precedence) and
        not-Ready nodes wait (Ready nodes first, see the module docstring) from here on."""
        return self.queue.backlog_age() >= self.urgent_after

    def remove(self, node: str) -> None:
        self.uids.pop(node, None)
        self.leases.pop(node, None)
        self.held.discard(node)
        self.fresh.discard(node)
        self.first.discard(node)
        self.elsewhere.pop(node, None)
        self.failing.pop(node, None)
        self.ready.discard(node)
        self.put_off.discard(node)
        self.queue.cancel(node)

    async def run(self) -> None:
        await self.queue.run()

    async def _renew(self, node: str, first_due: float | None, due: float) -> None:
        if node not in self.uids:
            return
        if node in self.held and node not in self.ready and self.behind():
            self.skipped += 1
            self.put_off.add(node)
            self.queue.put(node, None, self.interval)
            return
        if first_due is not None:
            due = first_due
        if node in self.held and self.first and time.monotonic() - due < self.first_grace:
            # new nodes first: their first play waits for their lease, an on-time renewal can
            # wait a little (at most first_grace late: a lease then half its duration old)
            self.deferred += 1
            self.queue.put(node, due, min(1.0, self.first_grace))
            return
        self.first.discard(node)
        self.put_off.discard(node)
        ok = False
        retry_after: float | None = None
        calm = False
        wait: float | None = None
        try:
            # an acquisition gates the node's first play, which is a stage write: it takes any of
            # `concurrency`, as the stage writes do; only renewals keep to the calm limit
            calm = node in self.held and await self._calm_slot(due)
            wait = await self._renew_once(node)
            ok = True
            if wait is None:
                self.renewals += 1
        except ApiError as e:
            retry_after = e.retry_after
            self.failures += 1
            self.last_error = f"lease {node}: {e}"
            log.warning("lease_renew_failed", node=node, status=e.status, error=e.message[:200])
        except Exception as e:  # keep renewing the others whatever one node does
            self.failures += 1
            self.last_error = f"lease {node}: {type(e).__name__}: {e}"
            log.warning("lease_renew_failed", node=node, error=repr(e)[:200])
        finally:
            if calm:
                assert self._calm is not None
                self._calm.release()
            if self.on_renew is not None:
                self.on_renew(time.monotonic() - due, ok)
            if node in self.uids:
                self.queue.put(node, None, wait if wait is not None else self._next_delay(node, ok, retry_after))

    async def _calm_slot(self, due: float) -> bool:
        """Wait for one of the calm connections until the renewal turns urgent; True if taken."""
        if self._calm is None:
            return False
        if not self._calm.locked():   # a free slot: taken without a timer
            await self._calm.acquire()
            return True
        wait = due + self.urgent_after - time.monotonic()
        if wait > 0:
            try:
                async with asyncio.timeout(wait):
                    await self._calm.acquire()
                return True
            except TimeoutError:
                pass
        self.urgent += 1
        return False

    def _next_delay(self, node: str, ok: bool, retry_after: float | None) -> float:
        """kubelet-style: the kubelet's lease controller (and kwok's) renews a quarter of the
        duration after the last renewal finished, plus up to 4% jitter (wait.JitterUntil with
        0.04, sliding): 10-10.4 s for 40 s leases, 10.2 s on average, which this matches on
        average once the queue's tick is added. After a failure back off like kubelet's lease
        controller (doubling from 0.2 s), jittered by 20% so a fleet that failed together does
        not retry together, capped at a quarter of the interval so a lease is retried several
        times before it could expire; a 429's Retry-After is honoured within that cap."""
        if ok:
            self.failing.pop(node, None)
            return self.interval * (1 + 0.04 * random.random()) - self.tick / 2
        n = self.failing[node] = self.failing.get(node, 0) + 1
        cap = min(7.0, self.interval / 4)
        delay = min(cap, 0.2 * 2 ** min(n, 16)) * (1 - 0.2 * random.random())
        if retry_after:
            delay = max(delay, min(cap, float(retry_after)))
        return float(delay)

    async def _renew_once(self, node: str) -> float | None:
        """Renew, create or take over the node's lease. None when it is held now; else the
        seconds until another holder's lease expires and it is looked at again."""
        lease = self.leases.get(node)
        now = micro_time(self.clock())
        if lease is None or node not in self.held:
            self.leases.pop(node, None)
            return self._settle(node, await self._acquire(node, now, exists=node in self.elsewhere))
        spec = lease["spec"]
        spec["renewTime"] = now
        spec["holderIdentity"] = self.holder
        try:
            raw = await self.kube.request_bytes("PUT", f"{_PATH}/{node}", body=orjson.dumps(lease))
        except ApiError as e:
            if e.status in (404, 409):
                # written by someone else since our last renewal (or deleted): read it again
                self.leases.pop(node, None)
                return self._settle(node, await self._acquire(node, now, exists=e.status == 409))
            raise
        self.leases[node] = renewed(lease, raw)
        return None

    def _settle(self, node: str, got: dict[str, Any] | tuple[str, float]) -> float | None:
        if isinstance(got, tuple):            # another holder's, not expired
            holder, expiry = got
            if self.elsewhere.get(node, ("", 0.0))[0] != holder:
                log.info("lease_held_elsewhere", node=node, holder=holder, mine=self.holder,
                         expires_in=round(expiry - self.clock(), 1))
            self.elsewhere[node] = got
            if node in self.held:
                self.held.discard(node)
                self.lost += 1
                self.on_lost(node)
            return max(1.0, expiry + self.cfg.skew - self.clock())
        self.leases[node] = got
        self.elsewhere.pop(node, None)
        self.fresh.discard(node)
        if node not in self.held:
            self.held.add(node)
            self.on_held(node)
        return None

    async def _acquire(self, node: str, now: str, *, exists: bool = False) -> dict[str, Any] | tuple[str, float]:
        """Create the lease, or take it over where kwok would: no holder, ours, expired (with
        ``skew``), or a trusted holder of a node newly handed to us. Else (holder, expiry)."""
        if not exists:
            # create first: a fresh node has no lease, so this is one request instead of GET + POST
            body = {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": node, "namespace": NAMESPACE, "ownerReferences": [{
                    "apiVersion": "v1", "kind": "Node", "name": node, "uid": self.uids[node]}]},
                "spec": {"holderIdentity": self.holder, "leaseDurationSeconds": self.duration,
                         "renewTime": now, "acquireTime": now},
            }
            try:
                created: dict[str, Any] = await self.kube.create(_PATH, body)
                return lean(created)
            except ApiError as e:
                if e.status != 409:
                    raise
        cur = lean(await self.kube.get(f"{_PATH}/{node}"))
        spec = cur.setdefault("spec", {})
        holder = spec.get("holderIdentity")
        if holder and holder != self.holder and not (node in self.fresh and self.trusts(holder)):
            expiry = expires_at(spec)
            if expiry is not None and self.clock() <= expiry + self.cfg.skew:
                return str(holder), expiry
        if holder != self.holder:
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
            spec["acquireTime"] = now
            self.taken_over += 1
            log.info("lease_adopted", node=node, previous=holder, holder=self.holder)
        spec["holderIdentity"] = self.holder
        spec["renewTime"] = now
        spec["leaseDurationSeconds"] = self.duration
        replaced: dict[str, Any] = await self.kube.replace(f"{_PATH}/{node}", cur)
        return lean(replaced)

    async def release_all(self) -> None:
        """Give up every lease by clearing holderIdentity (optional on shutdown)."""
        async def one(node: str, lease: dict[str, Any]) -> None:
            # A renewal cancelled on its way out may still have landed after our copy was taken:
            # the PUT of that copy then conflicts. Read the lease again and clear it if still ours.
            for _ in range(3):
                lease["spec"]["holderIdentity"] = None
                try:
                    await self.kube.replace(f"{_PATH}/{node}", lease)
                    return
                except ApiError as e:
                    if e.status != 409:
                        return
                try:
                    lease = lean(await self.kube.get(f"{_PATH}/{node}"))
                except ApiError:
                    return
                if (lease.get("spec") or {}).get("holderIdentity") != self.holder:
                    return   # not ours any more
        await asyncio.gather(*(one(n, lease) for n, lease in list(self.leases.items()) if n in self.held))
