"""Lease-hold's account of the NotReady transitions seen while a step added nodes."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from bench.scenarios import ramp_breakdown
from bench.workload import node_name


def _watch(transitions: list[tuple[float, str]], first_ready: dict[str, float]) -> Any:
    return SimpleNamespace(transitions=transitions, first_ready=first_ready)


def test_transitions_split_into_nodes_this_step_added_and_earlier_ones() -> None:
    # nodes 0-99 were there before; this step added 100-199; one old transition precedes the step
    before = [(1.0, node_name(3))]
    ramp = [(70.0, node_name(5)), (80.0, node_name(150)), (95.0, node_name(120)), (99.0, node_name(101))]
    first = {node_name(5): 0.5, node_name(150): 20.0, node_name(120): 40.0, node_name(101): 10.0}
    out = ramp_breakdown(_watch(before + ramp, first), base=len(before), have=100)
    assert out["ramp_transitions"] == 4
    assert out["ramp_transitions_added_nodes"] == 3
    assert out["ramp_transitions_earlier_nodes"] == 1
    # added nodes went NotReady 60, 55 and 89 s after they first turned Ready
    assert out["ramp_notready_after_ready_s"] == {"min": 55.0, "p50": 60.0, "max": 89.0}


def test_no_transitions_count_zero_with_no_split() -> None:
    assert ramp_breakdown(_watch([(1.0, node_name(3))], {}), base=1, have=100) == {"ramp_transitions": 0}


def test_the_step_table_shows_the_split_when_recorded() -> None:
    from bench.report import _ramp
    assert _ramp({"ramp_transitions": 7}) == "7"
    step = {"ramp_transitions": 4, "ramp_transitions_added_nodes": 3, "ramp_transitions_earlier_nodes": 1,
            "ramp_notready_after_ready_s": {"min": 55.0, "p50": 60.0, "max": 89.0}}
    assert _ramp(step) == "4: 3 added, 1 earlier; added ones 60.0 s (median) after their first Ready"


def test_the_step_table_adds_the_wait_for_the_controllers_taints_when_recorded() -> None:
    from bench.report import _ready_settle
    assert _ready_settle({"ready_s": 500.2}) == "500"
    assert _ready_settle({"ready_s": 500.2, "settle_s": 81.5, "tainted_at_hold": 0}) == "500 + 81.5"
    assert _ready_settle({"ready_s": 500.2, "settle_s": None, "tainted_at_hold": 312}) == "500 (+ taints: 312 left)"
