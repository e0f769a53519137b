"""Assignments, handoff plans and epoch fencing, including a model of the whole protocol."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from coordinator.assignment import (
    Assignment,
    Handoff,
    HandoffProgress,
    StaleEpoch,
    Transfer,
    accepts,
    apply_acquire,
    apply_assign,
    apply_release,
    assign,
    plan_handoff,
    served_by,
)
from coordinator.ring import Ring

KWOK_2K = [f"kwok-node-{i}" for i in range(2000)]


def canonical(s: int) -> list[str]:
    return [f"shard-{i}" for i in range(s)]


# --- assign / plan_handoff -------------------------------------------------------------------


def test_assign_covers_every_node_exactly_once() -> None:
    ring = Ring(canonical(5), epoch=3)
    got = assign(ring, KWOK_2K + KWOK_2K[:10])  # duplicates in the input are harmless
    assert set(got) == set(ring.shards)
    assert all(a.epoch == 3 and a.shard == s for s, a in got.items())
    assert served_by(got).keys() == set(KWOK_2K)
    for s, a in got.items():
        assert a.nodes == frozenset(ring.slice_of(s, KWOK_2K))


def test_assign_gives_empty_assignments_to_shards_without_nodes() -> None:
    got = assign(Ring(canonical(4)), ["only-node"])
    assert sum(len(a.nodes) for a in got.values()) == 1
    assert len(got) == 4


def test_plan_scale_up_4_to_5() -> None:
    old = Ring(canonical(4), epoch=9)
    new = old.with_shards(canonical(5))
    plan = plan_handoff(old, new, KWOK_2K)
    assert (plan.old_epoch, plan.epoch, plan.shards, plan.retired) == (9, 10, tuple(canonical(5)), ())
    expected = {n for n in KWOK_2K if old.owner(n) != new.owner(n)}
    assert plan.moving() == expected
    assert len(plan) == len(expected) == 395  # 19.75% of 2000; shard-4 owns 19.6% of the ring
    assert all(t.to_shard == "shard-4" and t.from_shard != "shard-4" for t in plan.transfers)
    assert [(t.from_shard, t.to_shard) for t in plan.transfers] == [
        (f"shard-{i}", "shard-4") for i in range(4)
    ]
    assert plan.moves() == {n: (old.owner(n), "shard-4") for n in expected}
    assert plan.by_pair() == {(t.from_shard, t.to_shard): t.nodes for t in plan.transfers}
    assert plan.releases() == {t.from_shard: t.nodes for t in plan.transfers}
    acquires = plan.acquires()
    assert set(acquires) == set(canonical(5))
    assert acquires["shard-4"] == expected
    assert all(not acquires[s] for s in canonical(4))  # epoch bump only


def test_plan_graceful_scale_down_5_to_4() -> None:
    old = Ring(canonical(5))
    new = old.with_shards(canonical(4))
    plan = plan_handoff(old, new, KWOK_2K)
    assert plan.retired == ("shard-4",)
    assert plan.releases() == {"shard-4": frozenset(old.slice_of("shard-4", KWOK_2K))}
    assert all(t.from_shard == "shard-4" for t in plan.transfers)
    assert set(plan.acquires()) == set(canonical(4))


def test_retired_shard_without_nodes_is_still_fenced() -> None:
    old = Ring(["a", "b"])
    nodes = [n for n in KWOK_2K[:50] if old.owner(n) == "a"]
    plan = plan_handoff(old, old.with_shards(["a"]), nodes)
    assert len(plan) == 0 and plan.transfers == ()
    assert plan.releases() == {"b": frozenset()}


def test_dead_shard_removal_reassigns_only_its_nodes() -> None:
    old = Ring(canonical(6))
    before = assign(old, KWOK_2K)
    new = old.with_shards(s for s in old.shards if s != "shard-2")
    after = assign(new, KWOK_2K)
    plan = plan_handoff(old, new, KWOK_2K)
    assert plan.moving() == before["shard-2"].nodes
    assert {t.from_shard for t in plan.transfers} == {"shard-2"}
    for s in new.shards:
        assert after[s].nodes >= before[s].nodes
        assert after[s].nodes - before[s].nodes <= before["shard-2"].nodes
        assert after[s].nodes - before[s].nodes == plan.acquires()[s]


def test_noop_plan() -> None:
    old = Ring(canonical(3))
    plan = plan_handoff(old, old.with_shards(canonical(3)), KWOK_2K)
    assert len(plan) == 0 and plan.releases() == {} and plan.epoch == 1
    assert plan.acquires() == {s: frozenset() for s in canonical(3)}


def test_plan_requires_a_newer_epoch() -> None:
    r = Ring(canonical(3), epoch=4)
    for other in (Ring(canonical(4), epoch=4), Ring(canonical(4), epoch=2)):
        with pytest.raises(ValueError, match="must be greater"):
            plan_handoff(r, other, KWOK_2K)


def test_plan_needs_shards_on_both_rings() -> None:
    empty = Ring([])
    with pytest.raises(ValueError, match="send every shard its assign"):
        plan_handoff(empty, empty.with_shards(["a"]), KWOK_2K)
    with pytest.raises(ValueError, match="needs shards on both rings"):
        plan_handoff(Ring(["a"]), Ring([], epoch=1), KWOK_2K)
    assert assign(empty, []) == {}


def test_handoff_is_immutable_and_hashable() -> None:
    plan = Handoff(0, 1, ("a",), (), (Transfer("b", "a", frozenset({"n"})),))
    assert hash(plan) == hash(Handoff(0, 1, ("a",), (), (Transfer("b", "a", frozenset({"n"})),)))
    with pytest.raises(AttributeError):
        plan.epoch = 2  # type: ignore[misc]


# --- fencing ------------------------------------------------------------------------------------


def test_accepts_equal_or_newer_epochs_only() -> None:
    assert accepts(3, 3) and accepts(3, 4) and not accepts(3, 2)


def test_stale_messages_are_rejected_and_change_nothing() -> None:
    held = Assignment("s", 5, frozenset({"a", "b"}))
    cases: list[Callable[[], Assignment]] = [
        lambda: apply_release(held, 4, {"a"}),
        lambda: apply_acquire(held, 4, {"c"}),
        lambda: apply_assign(held, Assignment("s", 4, frozenset())),
    ]
    for apply in cases:
        with pytest.raises(StaleEpoch) as err:
            apply()
        assert (err.value.shard, err.value.held, err.value.incoming) == ("s", 5, 4)
        assert "holds epoch 5, rejects a message at epoch 4" in str(err.value)
    assert held == Assignment("s", 5, frozenset({"a", "b"}))


def test_release_and_acquire_at_the_same_epoch_and_retries_are_idempotent() -> None:
    held = Assignment("s", 5, frozenset({"a", "b"}))
    after_release = apply_release(held, 6, {"a", "zzz"})
    assert after_release == Assignment("s", 6, frozenset({"b"}))
    after_acquire = apply_acquire(after_release, 6, {"c"})
    assert after_acquire == Assignment("s", 6, frozenset({"b", "c"}))
    assert apply_release(after_acquire, 6, {"a", "zzz"}) == after_acquire  # a retried release
    assert apply_acquire(after_acquire, 6, {"c"}) == after_acquire  # a retried acquire


def test_assign_replaces_and_initial_state() -> None:
    fresh = Assignment.initial("s")
    assert fresh == Assignment("s", 0, frozenset())
    got = apply_assign(fresh, Assignment("s", 2, frozenset({"x"})))
    assert got == Assignment("s", 2, frozenset({"x"}))
    assert apply_assign(got, Assignment("s", 2, frozenset({"y"}))).nodes == {"y"}


def test_messages_for_another_shard_are_refused() -> None:
    with pytest.raises(ValueError, match="for shard 'b' delivered to shard 'a'"):
        apply_assign(Assignment.initial("a"), Assignment("b", 1, frozenset()))


def test_assignment_validation() -> None:
    with pytest.raises(ValueError, match="epoch"):
        Assignment("s", -1, frozenset())
    with pytest.raises(TypeError, match="frozenset"):
        Assignment("s", 0, {"a"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="epoch"):
        apply_release(Assignment.initial("s"), -3, ())


def test_served_by_detects_double_service() -> None:
    ok = {"a": Assignment("a", 1, frozenset({"x"})), "b": Assignment("b", 1, frozenset({"y"}))}
    assert served_by(ok) == {"x": "a", "y": "b"}
    with pytest.raises(ValueError, match="served by both"):
        served_by({**ok, "c": Assignment("c", 1, frozenset({"x"}))})


# --- HandoffProgress --------------------------------------------------------------------------


def _scale_up_plan() -> Handoff:
    old = Ring(canonical(3), vnodes=64)
    return plan_handoff(old, old.with_shards(canonical(4)), KWOK_2K[:300])


def test_progress_blocks_acquire_until_every_release_is_acked_or_dead() -> None:
    plan = _scale_up_plan()
    prog = HandoffProgress(plan)
    assert prog.awaiting_release == set(plan.releases()) == {"shard-0", "shard-1", "shard-2"}
    assert not prog.can_acquire and not prog.done
    with pytest.raises(RuntimeError, match="releases not acked yet"):
        prog.acquire_targets()
    with pytest.raises(ValueError, match="before phase 2"):
        prog.acquire_acked("shard-3", 1)
    with pytest.raises(ValueError, match="at epoch 0, this handoff is epoch 1"):
        prog.release_acked("shard-0", 0)
    with pytest.raises(ValueError, match="nothing to release"):
        prog.release_acked("shard-3", 1)
    prog.release_acked("shard-0", 1)
    prog.release_acked("shard-1", 1)
    assert not prog.can_acquire
    prog.shard_dead("shard-2")
    assert prog.can_acquire and prog.dead == {"shard-2"}
    assert prog.acquire_targets() == {s: ns for s, ns in plan.acquires().items() if s != "shard-2"}
    assert prog.awaiting_acquire == {"shard-0", "shard-1", "shard-3"}
    for s in ("shard-0", "shard-1", "shard-3"):
        prog.acquire_acked(s, 1)
    assert prog.done and prog.orphaned() == frozenset()
    with pytest.raises(ValueError, match="not on the epoch 1 ring"):
        prog.acquire_acked("shard-9", 1)


def test_progress_reports_orphans_of_a_dead_new_owner() -> None:
    plan = _scale_up_plan()
    prog = HandoffProgress(plan)
    for s in plan.releases():
        prog.release_acked(s, plan.epoch)
    prog.shard_dead("shard-3")
    assert "shard-3" not in prog.acquire_targets()
    assert prog.orphaned() == plan.acquires()["shard-3"] == plan.moving()


# --- the whole protocol, modelled --------------------------------------------------------------


class Cluster:
    """Coordinator + shards driving the handoff protocol with the pure functions.

    ``live`` shards answer; ``zombies`` were declared dead but still serve at their old
    epoch (a network partition).  ``check()`` runs after every single message delivery.
    """

    def __init__(self, nodes: Iterable[str], shards: Iterable[str], rng: random.Random) -> None:
        self.rng = rng
        self.nodes = frozenset(nodes)
        self.ring = Ring(shards, vnodes=64)
        self.live: dict[str, Assignment] = {}
        self.zombies: dict[str, Assignment] = {}
        self.sent: list[tuple[str, str, int, frozenset[str]]] = []
        self.next_id = len(self.ring)
        self.handoffs = 0
        for s, a in assign(self.ring, self.nodes).items():
            self.live[s] = apply_assign(Assignment.initial(s), a)
        self.check()
        self.check_settled()

    # invariants

    def check(self) -> None:
        served_by(self.live)  # no node served by two live shards, ever
        per_epoch: dict[int, dict[str, str]] = {}
        for s, a in [*self.live.items(), *self.zombies.items()]:
            seen = per_epoch.setdefault(a.epoch, {})
            for n in a.nodes:
                other = seen.setdefault(n, s)
                assert other == s, f"{n} served by {other} and {s} in epoch {a.epoch}"

    def check_settled(self) -> None:
        assert set(self.live) == set(self.ring.shards)
        assert self.live == {
            s: Assignment(s, self.ring.epoch, frozenset(self.ring.slice_of(s, self.nodes)))
            for s in self.ring.shards
        }
        assert served_by(self.live).keys() == self.nodes  # every node assigned

    # messaging

    def deliver(self, kind: str, shard: str, epoch: int, nodes: frozenset[str]) -> None:
        f = apply_release if kind == "release" else apply_acquire
        self.live[shard] = f(self.live[shard], epoch, nodes)
        self.sent.append((kind, shard, epoch, nodes))
        self.check()
        if self.rng.random() < 0.2:  # a retry of the same message
            before = self.live[shard]
            self.live[shard] = f(before, epoch, nodes)
            assert self.live[shard] == before
        if self.rng.random() < 0.2:
            self.replay_stale()

    def replay_stale(self) -> None:
        stale = [m for m in self.sent if m[1] in self.live and m[2] < self.live[m[1]].epoch]
        if not stale:
            return
        kind, shard, epoch, nodes = self.rng.choice(stale)
        f = apply_release if kind == "release" else apply_acquire
        with pytest.raises(StaleEpoch):
            f(self.live[shard], epoch, nodes)

    def crash(self, prog: HandoffProgress, new: Ring, kind: str) -> None:
        """A random live shard dies (kind="kill") or is partitioned off (kind="zombie")."""
        if sum(s in self.live for s in new.shards) < 2:
            return  # keep at least one shard of the new ring alive
        victim = self.rng.choice(sorted(self.live))
        held = self.live.pop(victim)
        if kind == "zombie":
            self.zombies[victim] = held
        prog.shard_dead(victim)
        self.check()

    # the protocol

    def change(self, shards: Iterable[str], crash: str | None = None) -> None:
        new = self.ring.with_shards(shards)
        self.run_handoff(new, crash)
        for s in list(self.live):  # retired shards have released everything: stop them
            if s not in self.ring:
                assert not self.live.pop(s).nodes
        self.check_settled()

    def run_handoff(self, new: Ring, crash: str | None) -> None:
        plan = plan_handoff(self.ring, new, self.nodes)
        self.handoffs += 1
        assert plan.moving() == {n for n in self.nodes if self.ring.owner(n) != new.owner(n)}
        prog = HandoffProgress(plan)
        steps = len(plan.releases()) + len(new.shards)
        crash_at = self.rng.randrange(steps) if crash else -1
        step = 0
        for s in set(plan.releases()) - set(self.live):
            prog.shard_dead(s)  # already known dead
        # phase 1
        releases = list(plan.releases().items())
        self.rng.shuffle(releases)
        for shard, lost in releases:
            if step == crash_at and crash:
                self.crash(prog, new, crash)
            step += 1
            if shard not in self.live:
                prog.shard_dead(shard)
                continue
            self.deliver("release", shard, plan.epoch, lost)
            prog.release_acked(shard, plan.epoch)
        # phase 2: only now may anything be acquired
        assert prog.can_acquire
        acquires = list(prog.acquire_targets().items())
        self.rng.shuffle(acquires)
        for shard, gained in acquires:
            if step == crash_at and crash:
                self.crash(prog, new, crash)
            step += 1
            if shard not in self.live:
                prog.shard_dead(shard)
                continue
            self.deliver("acquire", shard, plan.epoch, gained)
            prog.acquire_acked(shard, plan.epoch)
        assert prog.done
        self.ring = new
        gone = [s for s in new.shards if s not in self.live]
        if gone:  # a new owner died: move its nodes on, planning from `new`
            self.run_handoff(new.with_shards(s for s in new.shards if s in self.live), crash=None)

    # operations

    def scale_up(self, crash: str | None = None) -> None:
        self.next_id += 1
        self.change([*self.ring.shards, f"shard-{self.next_id}"], crash)

    def scale_down(self, crash: str | None = None) -> None:
        if len(self.ring) > 1:
            gone = self.rng.choice(self.ring.shards)
            self.change([s for s in self.ring.shards if s != gone], crash)

    def lose_shard(self, kind: str) -> None:
        if len(self.ring) > 1:
            victim = self.rng.choice(self.ring.shards)
            held = self.live.pop(victim)
            if kind == "zombie":
                self.zombies[victim] = held
            self.check()
            before = {s: a.nodes for s, a in self.live.items()}
            self.change([s for s in self.ring.shards if s != victim])
            for s, nodes in before.items():  # survivors keep theirs and gain only the victim's
                assert self.live[s].nodes >= nodes
                assert self.live[s].nodes - nodes <= held.nodes


class ProtocolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.cluster: Cluster | None = None

    @precondition(lambda self: self.cluster is None)
    @rule(n=st.integers(0, 400), s=st.integers(1, 6), seed=st.integers(0, 2**32))
    def start(self, n: int, s: int, seed: int) -> None:
        self.cluster = Cluster((f"node-{i}" for i in range(n)), canonical(s), random.Random(seed))

    @precondition(lambda self: self.cluster is not None)
    @rule(crash=st.sampled_from([None, None, "kill", "zombie"]))
    def scale_up(self, crash: str | None) -> None:
        assert self.cluster is not None
        self.cluster.scale_up(crash)

    @precondition(lambda self: self.cluster is not None)
    @rule(crash=st.sampled_from([None, None, "kill", "zombie"]))
    def scale_down(self, crash: str | None) -> None:
        assert self.cluster is not None
        self.cluster.scale_down(crash)

    @precondition(lambda self: self.cluster is not None)
    @rule(kind=st.sampled_from(["kill", "zombie"]))
    def lose_shard(self, kind: str) -> None:
        assert self.cluster is not None
        self.cluster.lose_shard(kind)

    @invariant()
    def settled(self) -> None:
        if self.cluster is not None:
            self.cluster.check()
            self.cluster.check_settled()


TestProtocol = ProtocolMachine.TestCase
TestProtocol.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)


@pytest.mark.parametrize("seed", range(4))
def test_long_random_sequence_of_changes(seed: int) -> None:
    rng = random.Random(seed)
    cluster = Cluster((f"node-{i}" for i in range(500)), canonical(4), rng)
    for _ in range(150):
        op = rng.choice(["up", "up", "down", "kill", "zombie"])
        crash = rng.choice([None, None, "kill", "zombie"])
        if op == "up" or len(cluster.ring) < 3:
            cluster.scale_up(crash)
        elif op == "down":
            cluster.scale_down(crash)
        else:
            cluster.lose_shard(op)
    assert cluster.handoffs >= 150
    assert cluster.zombies  # the model did exercise partitions
