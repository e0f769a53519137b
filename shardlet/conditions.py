"""Status conditions of plain Kubernetes objects (dicts, as the watches deliver them)."""

from __future__ import annotations

from typing import Any


def node_ready(node: dict[str, Any]) -> bool:
    """The node's Ready condition is True."""
    conds = (node.get("status") or {}).get("conditions") or []
    return any(isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True" for c in conds)
