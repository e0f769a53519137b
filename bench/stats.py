"""Median and spread over repeats, per scenario, simulator and size."""

from __future__ import annotations

import statistics
from typing import Any


def size_key(rec: dict[str, Any]) -> str:
    s = rec.get("size") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(s.items()))


def summarize(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, dict[str, dict[str, Any]]]]]:
    """{scenario: {size: {sim: {metric: {median, min, max, n}}}}} over every number recorded (a
    run that failed half-way still counts for what it measured); errors are listed under '_errors'."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["scenario"], size_key(r), str(r.get("sim"))), []).append(r)
    out: dict[str, Any] = {}
    for (sc, size, sim), recs in groups.items():
        metrics: dict[str, list[float]] = {}
        for r in recs:
            for k, v in (r.get("m") or {}).items():
                if isinstance(v, bool) or not isinstance(v, int | float):
                    continue
                metrics.setdefault(k, []).append(float(v))
        cell: dict[str, Any] = {k: {"median": round(statistics.median(v), 4), "min": min(v), "max": max(v), "n": len(v)}
                                for k, v in metrics.items()}
        errs = [r["error"] for r in recs if r.get("error")]
        if errs:
            cell["_errors"] = errs
        cell["_runs"] = len(recs)
        out.setdefault(sc, {}).setdefault(size, {})[sim] = cell
    return out
