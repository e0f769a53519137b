"""Shard assignments, handoff plans and epoch fencing: pure functions, no I/O.

Vocabulary
==========

* A :class:`~coordinator.ring.Ring` maps node names to shard ids and carries an
  **epoch**; every change of the shard set makes a new ring at ``epoch + 1``.
* An :class:`Assignment` ``(shard, epoch, nodes)`` is what one shard serves: the nodes
  whose leases it renews, whose pods it drives through their stages.
* A :class:`Handoff` is the diff between two rings over the current node set: for each
  ``(from_shard, to_shard)`` pair, the nodes that change hands, plus the new epoch.

Epoch fencing (shard side)
==========================

A shard holds one ``Assignment`` and applies messages to it with :func:`apply_assign`,
:func:`apply_release` and :func:`apply_acquire`.  A message is accepted only if its epoch
is **>=** the epoch the shard holds (:func:`accepts`); an older one raises
:class:`StaleEpoch` and changes nothing (the shard answers with a nack carrying its own
epoch).  Accepting a message raises the shard's epoch to the message's.  Equal epochs are
accepted because one handoff sends a shard both a release and an acquire at the same
epoch, and retries of either are idempotent.  A fresh shard starts from
:meth:`Assignment.initial` (epoch 0, no nodes).

Handoff protocol (coordinator side: what the Ray driver implements)
===================================================================

The coordinator is the only writer of epochs and runs one handoff at a time.
To go from ring ``old`` (epoch E-1) to ring ``new`` (epoch E, usually
``old.with_shards(...)``)::

    plan = plan_handoff(old, new, nodes)
    progress = HandoffProgress(plan)

    # Phase 1 - release.  To every old owner that loses nodes (and to every shard
    # leaving the ring, even one that owns nothing):
    for shard, lost in plan.releases().items():
        send Release(shard, E, lost)            # the shard stops serving `lost`
    # ... then, as answers arrive:
    progress.release_acked(shard, E)            # an ack at epoch E
    progress.shard_dead(shard)                  # or: the shard is dead (actor gone,
                                                # health check failed, timeout)
    # The coordinator waits until progress.can_acquire.  It never sends an acquire for
    # a node whose old owner has neither acked the release nor been declared dead.

    # Phase 2 - acquire.  To every live shard on the new ring (an empty set still
    # raises that shard's epoch to E, fencing off anything older):
    for shard, gained in progress.acquire_targets().items():
        send Acquire(shard, E, gained)          # the shard starts serving `gained`
    progress.acquire_acked(shard, E) / progress.shard_dead(shard)
    # When progress.done, `new` is the current ring.

    # If a new owner died during the handoff, its nodes (progress.orphaned()) are
    # unserved: plan the next handoff from `new` (NOT from `old`) to a ring without
    # the dead shard, which moves exactly those nodes to live shards.

Because an acquire for node ``n`` is sent only after ``n``'s old owner acked the
release (or is dead), no node is ever served by two live shards at once, and therefore
never by two shards in the same epoch.  A shard declared dead that is in fact still
running (a partition, a zombie) keeps serving at its old, smaller epoch; it never
receives an accepted message again, and the epoch it stamps on its writes is what
lets the other side tell it is stale.  After phase 2 completes every node is served by
exactly ``new.owner(node)`` (unless that shard died, see above).

The same protocol can ship rings instead of node lists (``messages.Slice``, which the Ray
driver uses): in the release phase a shard keeps only the nodes it owns under both its
current ring and the new one, which is exactly ``plan.releases()[shard]`` released; in the
acquire phase it serves ``new.slice_of(shard, nodes)``.  The ordering rule is unchanged:
no acquire-phase message goes out before every old owner acked its release or is dead.

Nodes that appear while a ring is current are handed to ``ring.owner(node)`` with an
``Acquire`` at the ring's epoch (accepted: equal epochs are fine); nodes that disappear
are released by their owner the same way.  To (re)start a shard wholesale, send it
``Assign(shard, ring.epoch, ring slice)`` (:func:`assign`), which replaces its set.
A restarted coordinator must pick an epoch above every epoch any shard reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from coordinator.ring import Ring

__all__ = [
    "Assignment",
    "Handoff",
    "HandoffProgress",
    "StaleEpoch",
    "Transfer",
    "accepts",
    "apply_acquire",
    "apply_assign",
    "apply_release",
    "assign",
    "plan_handoff",
    "served_by",
]


def _check_epoch(epoch: int) -> None:
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")


@dataclass(frozen=True, slots=True)
class Assignment:
    """The nodes one shard serves, and the epoch it last accepted."""

    shard: str
    epoch: int
    nodes: frozenset[str]

    def __post_init__(self) -> None:
        _check_epoch(self.epoch)
        if not isinstance(self.nodes, frozenset):
            raise TypeError(f"Assignment.nodes must be a frozenset, got {type(self.nodes).__name__}")

    @classmethod
    def initial(cls, shard: str) -> Assignment:
        """What a freshly started shard holds before its first message."""
        return cls(shard, 0, frozenset())


def assign(ring: Ring, nodes: Iterable[str]) -> dict[str, Assignment]:
    """Every shard's full assignment on ``ring`` (shards with no nodes get an empty one)."""
    return {
        shard: Assignment(shard, ring.epoch, frozenset(keys))
        for shard, keys in ring.partition(set(nodes)).items()
    }


@dataclass(frozen=True, slots=True)
class Transfer:
    """Nodes moving from one shard to another in a handoff."""

    from_shard: str
    to_shard: str
    nodes: frozenset[str]


@dataclass(frozen=True, slots=True)
class Handoff:
    """The plan to go from one ring to the next (see the module docstring for the protocol)."""

    old_epoch: int
    epoch: int
    shards: tuple[str, ...]
    """The new ring's shards."""
    retired: tuple[str, ...]
    """Old-ring shards that are not on the new ring."""
    transfers: tuple[Transfer, ...]
    """Non-empty transfers, sorted by ``(from_shard, to_shard)``."""

    def by_pair(self) -> dict[tuple[str, str], frozenset[str]]:
        return {(t.from_shard, t.to_shard): t.nodes for t in self.transfers}

    def moves(self) -> dict[str, tuple[str, str]]:
        """Each moving node -> ``(from_shard, to_shard)``."""
        return {n: (t.from_shard, t.to_shard) for t in self.transfers for n in t.nodes}

    def moving(self) -> frozenset[str]:
        return frozenset(n for t in self.transfers for n in t.nodes)

    def releases(self) -> dict[str, frozenset[str]]:
        """Phase 1: old owner -> the nodes it must release at ``epoch``.

        Every retired shard is listed, even with nothing to release, so that a live one
        is fenced to the new epoch before it is shut down.
        """
        out: dict[str, set[str]] = {s: set() for s in self.retired}
        for t in self.transfers:
            out.setdefault(t.from_shard, set()).update(t.nodes)
        return {s: frozenset(ns) for s, ns in sorted(out.items())}

    def acquires(self) -> dict[str, frozenset[str]]:
        """Phase 2: every shard on the new ring -> the nodes it acquires (maybe none)."""
        out: dict[str, set[str]] = {s: set() for s in self.shards}
        for t in self.transfers:
            out[t.to_shard].update(t.nodes)
        return {s: frozenset(ns) for s, ns in out.items()}

    def __len__(self) -> int:
        return sum(len(t.nodes) for t in self.transfers)


def plan_handoff(old: Ring, new: Ring, nodes: Iterable[str]) -> Handoff:
    """The handoff from ``old`` to ``new`` for the current node set.

    ``new.epoch`` must be greater than ``old.epoch`` and neither ring may be empty.  Only nodes whose owner differs
    between the two rings move; with consistent hashing that is ~1/S of them for a
    one-shard change, and only to (scale up) or from (scale down, death) the changed shard.
    """
    if new.epoch <= old.epoch:
        raise ValueError(f"new ring epoch {new.epoch} must be greater than old ring epoch {old.epoch}")
    if not old.shards or not new.shards:
        raise ValueError(
            "plan_handoff needs shards on both rings; to start from an empty ring send every shard "
            "its assign() instead"
        )
    pairs: dict[tuple[str, str], set[str]] = {}
    old_owner, new_owner = old.owner, new.owner
    for node in set(nodes):
        src, dst = old_owner(node), new_owner(node)
        if src != dst:
            pairs.setdefault((src, dst), set()).add(node)
    return Handoff(
        old_epoch=old.epoch,
        epoch=new.epoch,
        shards=new.shards,
        retired=tuple(s for s in old.shards if s not in new),
        transfers=tuple(Transfer(src, dst, frozenset(ns)) for (src, dst), ns in sorted(pairs.items())),
    )


# --- shard side: epoch fencing --------------------------------------------------------


class StaleEpoch(ValueError):
    """A message older than the epoch the shard holds; the shard must ignore it."""

    def __init__(self, shard: str, held: int, incoming: int) -> None:
        super().__init__(f"shard {shard!r} holds epoch {held}, rejects a message at epoch {incoming}")
        self.shard = shard
        self.held = held
        self.incoming = incoming


def accepts(held_epoch: int, incoming_epoch: int) -> bool:
    """Whether a shard at ``held_epoch`` accepts a message stamped ``incoming_epoch``."""
    return incoming_epoch >= held_epoch


def _fence(held: Assignment, shard: str, epoch: int) -> None:
    _check_epoch(epoch)
    if shard != held.shard:
        raise ValueError(f"message for shard {shard!r} delivered to shard {held.shard!r}")
    if not accepts(held.epoch, epoch):
        raise StaleEpoch(held.shard, held.epoch, epoch)


def apply_assign(held: Assignment, incoming: Assignment) -> Assignment:
    """Replace the shard's whole node set (start-up, resync).  Raises :class:`StaleEpoch`."""
    _fence(held, incoming.shard, incoming.epoch)
    return incoming


def apply_release(held: Assignment, epoch: int, nodes: Iterable[str]) -> Assignment:
    """Stop serving ``nodes`` (phase 1).  Raises :class:`StaleEpoch`.

    Releasing a node the shard does not hold is a no-op, so retries are idempotent.
    """
    _fence(held, held.shard, epoch)
    return Assignment(held.shard, epoch, held.nodes.difference(nodes))


def apply_acquire(held: Assignment, epoch: int, nodes: Iterable[str]) -> Assignment:
    """Start serving ``nodes`` (phase 2).  Raises :class:`StaleEpoch`."""
    _fence(held, held.shard, epoch)
    return Assignment(held.shard, epoch, held.nodes.union(nodes))


# --- coordinator side: progress of one handoff -----------------------------------------


class HandoffProgress:
    """Bookkeeping for executing one :class:`Handoff`; the caller does the messaging.

    Enforces the two-phase rule: :meth:`acquire_targets` is only available once every
    old owner has acked its release or been declared dead.
    """

    __slots__ = ("_acquire_acked", "_acquires", "_awaiting_release", "_dead", "_releases", "handoff")

    def __init__(self, handoff: Handoff) -> None:
        self.handoff = handoff
        self._releases = handoff.releases()
        self._acquires = handoff.acquires()
        self._awaiting_release: set[str] = set(self._releases)
        self._acquire_acked: set[str] = set()
        self._dead: set[str] = set()

    def _check(self, shard: str, epoch: int) -> None:
        if epoch != self.handoff.epoch:
            raise ValueError(
                f"ack from {shard!r} at epoch {epoch}, this handoff is epoch {self.handoff.epoch}"
            )

    def release_acked(self, shard: str, epoch: int) -> None:
        self._check(shard, epoch)
        if shard not in self._releases:
            raise ValueError(f"shard {shard!r} had nothing to release in epoch {self.handoff.epoch}")
        self._awaiting_release.discard(shard)

    def acquire_acked(self, shard: str, epoch: int) -> None:
        self._check(shard, epoch)
        if shard not in self.handoff.shards:
            raise ValueError(f"shard {shard!r} is not on the epoch {self.handoff.epoch} ring")
        if self._awaiting_release:
            raise ValueError(f"acquire ack from {shard!r} before phase 2 began")
        self._acquire_acked.add(shard)

    def shard_dead(self, shard: str) -> None:
        """The shard is gone: it owes no ack, and it receives no acquire."""
        self._dead.add(shard)
        self._awaiting_release.discard(shard)

    @property
    def awaiting_release(self) -> frozenset[str]:
        return frozenset(self._awaiting_release)

    @property
    def can_acquire(self) -> bool:
        return not self._awaiting_release

    def acquire_targets(self) -> dict[str, frozenset[str]]:
        """Phase 2 messages for live shards.  Raises ``RuntimeError`` during phase 1."""
        if self._awaiting_release:
            raise RuntimeError(
                f"epoch {self.handoff.epoch}: releases not acked yet by {sorted(self._awaiting_release)}"
            )
        return {s: ns for s, ns in self._acquires.items() if s not in self._dead}

    @property
    def awaiting_acquire(self) -> frozenset[str]:
        if self._awaiting_release:
            return frozenset(s for s in self.handoff.shards if s not in self._dead)
        return frozenset(
            s for s in self.handoff.shards if s not in self._dead and s not in self._acquire_acked
        )

    @property
    def done(self) -> bool:
        return self.can_acquire and not self.awaiting_acquire

    @property
    def dead(self) -> frozenset[str]:
        return frozenset(self._dead)

    def orphaned(self) -> frozenset[str]:
        """Moving nodes whose new owner died: unserved until the next handoff moves them."""
        return frozenset(n for s, ns in self._acquires.items() if s in self._dead for n in ns)


def served_by(assignments: Mapping[str, Assignment]) -> dict[str, str]:
    """node -> shard over a set of assignments; raises ``ValueError`` if a node is served twice."""
    out: dict[str, str] = {}
    for shard, a in assignments.items():
        for n in a.nodes:
            other = out.setdefault(n, shard)
            if other != shard:
                raise ValueError(f"node {n!r} is served by both {other!r} and {shard!r}")
    return out
