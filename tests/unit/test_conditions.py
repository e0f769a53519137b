"""Reading a node's Ready condition from the plain dict a watch delivers."""

from __future__ import annotations

from shardlet.conditions import node_ready


def test_only_a_ready_condition_that_is_true_counts() -> None:
    def node(*conds: object) -> dict[str, object]:
        return {"status": {"conditions": list(conds)}}
    assert node_ready(node({"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}))
    assert not node_ready(node({"type": "Ready", "status": "Unknown"}))
    assert not node_ready(node({"type": "MemoryPressure", "status": "True"}))
    assert not node_ready({}) and not node_ready({"status": None}) and not node_ready(node())
    assert node_ready(node("garbage", None, {"type": "Ready", "status": "True"}))   # malformed entries skipped
