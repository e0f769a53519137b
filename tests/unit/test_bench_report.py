"""bench/README.md rendering: the newest full run, then later partial runs' own tables."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bench import report

FULL = Path(__file__).resolve().parents[2] / "bench" / "results" / "2026-11-27T0811-vm.json"


def _partial_copy(tmp: Path, scenarios: list[str], stem: str, scale: float,
                  metric: str = "nodes_ready_s") -> Path:
    data = json.loads(FULL.read_text())
    data["meta"]["scenarios"] = scenarios
    data["meta"]["argv"] = ["--scenarios", ",".join(scenarios)]
    data["records"] = [r for r in data["records"] if r["scenario"] in scenarios]
    for r in data["records"]:   # distinguishable numbers: the partial run's, not the full run's
        if metric in r["m"]:
            r["m"][metric] = round(r["m"][metric] * scale, 3)
    p = tmp / f"{stem}.json"
    p.write_text(json.dumps(data))
    return p


def test_later_partial_ready_run_gets_its_own_table(tmp_path: Path) -> None:
    shutil.copy(FULL, tmp_path / FULL.name)
    partial = _partial_copy(tmp_path, ["ready"], "2026-11-28T0000-vm", 100.0)
    report.render(partial, tmp_path / "README.md")
    text = (tmp_path / "README.md").read_text()
    # the full run is what the README shows first
    assert f"## Results: `{FULL.name}`" in text   # links are relative to the README beside the results
    head, _, later = text.partition("## Later partial run:")
    assert later, "the partial run has a section"
    assert "2026-11-28T0000-vm.json" in later.split("\n", 1)[0]
    assert "### 1. Time to Ready, Running, deleted (partial run)" in later
    assert "### 2. Lease-hold capacity (partial run)" not in later.split("## All results files")[0]
    # its numbers are its own: 100x the full run's 1,000-node time of kwok (10.5 s)
    assert "| 1,000 nodes Ready (s) | 1,05" in later
    assert "| 1,000 nodes Ready (s) | 10.5 |" in head


def test_later_partial_steady_run_gets_its_own_table(tmp_path: Path) -> None:
    shutil.copy(FULL, tmp_path / FULL.name)
    # the partial run's own numbers: 10x the full run's
    partial = _partial_copy(tmp_path, ["steady"], "2026-11-28T0000-vm", 10.0, "idle_sim_cpu_per_1k_nodes_min")
    data = json.loads(partial.read_text())
    report.render(partial, tmp_path / "README.md")
    head, _, later = (tmp_path / "README.md").read_text().partition("## Later partial run:")
    assert "### 3. Steady-state cost (partial run)" in later
    row = next(line for line in later.splitlines() if line.startswith("| idle: simulator CPU-s per 1k nodes per min"))
    full_row = next(line for line in head.splitlines() if line.startswith("| idle: simulator CPU-s per 1k nodes per min"))
    kwok = next(r for r in data["records"] if r["sim"] == "kwok")["m"]["idle_sim_cpu_per_1k_nodes_min"]
    assert row.split("|")[2].strip() == report._num(kwok), row
    assert row != full_row


def test_partial_run_without_ready_lease_hold_or_steady_is_only_listed(tmp_path: Path) -> None:
    shutil.copy(FULL, tmp_path / FULL.name)
    partial = _partial_copy(tmp_path, ["writer"], "2026-11-28T0000-vm", 1.0)
    report.render(partial, tmp_path / "README.md")
    text = (tmp_path / "README.md").read_text()
    assert "## Later partial run:" not in text
    assert "2026-11-28T0000-vm.json" in text.split("## All results files")[1]


def test_lease_hold_capacity_states_the_rate_seen_not_only_the_rate_needed(tmp_path: Path) -> None:
    """Past the kubelet's cadence renewals lag: the share of the writer limit uses what was served."""
    lease_run = FULL.parent / "2026-11-27T0927-vm.json"
    shutil.copy(FULL, tmp_path / FULL.name)
    shutil.copy(lease_run, tmp_path / lease_run.name)
    report.render(tmp_path / lease_run.name, tmp_path / "README.md")
    later = (tmp_path / "README.md").read_text().partition("## Later partial run:")[2]
    data = json.loads(lease_run.read_text())
    writer_max = report._writer_max(json.loads(FULL.read_text())["summary"])
    assert writer_max
    for rec in data["records"]:
        cap = rec["m"]["capacity_nodes"]
        held = [s for s in rec["x"]["steps"] if s["ok"] and s["nodes"] == cap]
        assert held, rec["sim"]
        seen = held[-1]["lease_puts_per_s"]
        row = f"| {report.label(rec['sim'])} | {cap:,} | {rec['m']['first_failure_nodes']:,} | {cap // 10:,} | " \
              f"{seen:,.0f} | {100 * seen / writer_max:.0f}% |"
        assert row in later, (row, later[:2000])
