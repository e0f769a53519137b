"""bench/README.md rendering: the newest full run, then later partial runs' own tables."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def test_later_partial_writer_and_scaling_runs_get_their_own_tables(tmp_path: Path) -> None:
    shutil.copy(FULL, tmp_path / FULL.name)
    _partial_copy(tmp_path, ["writer"], "2026-11-28T0000-vm", 0.5, "writes_per_s")
    scaling = _partial_copy(tmp_path, ["scaling"], "2026-11-28T0100-vm", 2.0, "pods_done_s")
    report.render(scaling, tmp_path / "README.md")
    text = (tmp_path / "README.md").read_text()
    head, _, later = text.partition("## Later partial run:")
    writer_part, _, scaling_part = later.partition("## Later partial run:")
    assert "2026-11-28T0000-vm.json" in writer_part.split("\n", 1)[0]
    assert "### 5. The physical limit: raw lease writes (partial run)" in writer_part
    best = next(r["m"]["writes_per_s"] for r in json.loads(FULL.read_text())["records"]
                if r["scenario"] == "writer" and r["size"]["level"] == "64")
    assert f"| 64 | {report._num(round(best * 0.5, 3))} |" in writer_part and f"| 64 | {report._num(best)} |" in head
    assert "2026-11-28T0100-vm.json" in scaling_part.split("\n", 1)[0]
    assert "### 4. Scaling with shards (partial run)" in scaling_part
    pods = {r["sim"]: r["m"]["pods_done_s"] for r in json.loads(scaling.read_text())["records"]}
    row = next(line for line in scaling_part.splitlines() if line.startswith("| start → all pods Running (s)"))
    assert row.split("|")[2].strip() == report._num(pods["kwok"]), row


def test_a_smoke_run_after_the_full_run_is_only_listed(tmp_path: Path) -> None:
    shutil.copy(FULL, tmp_path / FULL.name)
    smoke = _partial_copy(tmp_path, ["writer"], "2026-11-28T0000-vm-quick", 1.0)
    report.render(smoke, tmp_path / "README.md")
    text = (tmp_path / "README.md").read_text()
    assert "## Later partial run:" not in text
    assert "2026-11-28T0000-vm-quick.json" in text.split("## All results files")[1]


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


def test_a_capacity_that_reached_hold_max_is_shown_as_a_lower_bound(tmp_path: Path) -> None:
    """shardlet held the largest size tried: the table says so (≥), with the NotReady transitions
    of its ramp, and a lag past shardlet's top histogram bucket reads as such, not as 'inf'."""
    run = FULL.parent / "2026-11-28T0328-vm.json"
    shutil.copy(FULL, tmp_path / FULL.name)
    shutil.copy(run, tmp_path / run.name)
    data = json.loads(run.read_text())
    caps = {r["sim"]: r["m"] for r in data["records"] if r["scenario"] == "lease-hold"}
    assert caps["s1"]["capped"] and not caps["kwok"]["capped"]
    report.render(tmp_path / run.name, tmp_path / "README.md")
    text = (tmp_path / "README.md").read_text()
    later = text.partition("## Later partial run:")[2]
    step = next(s for r in data["records"] if r["sim"] == "s1" and r["scenario"] == "lease-hold"
                for s in r["x"]["steps"] if s["nodes"] == caps["s1"]["capacity_nodes"])
    assert f"| shardlet S=1 | {caps['s1']['capacity_nodes']:,} (≥, hit hold_max) | - |" in later
    assert later.split("| shardlet S=1 | 24,000 (≥")[1].split("\n")[0].endswith(f"| {int(step['ramp_transitions']):,} |")
    assert f"| kwok | {caps['kwok']['capacity_nodes']:,} | {caps['kwok']['first_failure_nodes']:,} |" in later
    assert "| inf |" not in text and "| > 40 |" in later
    hold = _row(report.target_rows(tmp_path), "2. lease-hold")
    assert hold[3].endswith("(≥, hit hold_max)") and hold[5] == "**met**"


def test_a_time_target_names_the_repeats_in_which_a_simulator_lapsed_or_failed(tmp_path: Path) -> None:
    """In run 0440 kwok's leases lapsed in the pods phase of its first repeat and its third timed
    out: the pods rows say so next to their verdict; the 1,000-node row, where none lapsed, does not."""
    run = FULL.parent / "2026-11-28T0440-vm.json"
    shutil.copy(FULL, tmp_path / FULL.name)
    shutil.copy(run, tmp_path / run.name)
    data = json.loads(run.read_text())
    big = [r for r in data["records"] if r["sim"] == "kwok" and r["size"].get("pods")]
    failed = sum(1 for r in big if r.get("error"))
    lapsed = sum(1 for r in big if not r.get("error") and r["x"]["pods_phase"]["requests"].get("PUT nodes/status"))
    assert (failed, lapsed) == (1, 1)
    rows = report.target_rows(tmp_path)
    for measure in ("pods Running", "pods deleted"):
        assert _row(rows, "1.", measure)[5].endswith(
            f"(kwok: leases lapsed in {lapsed} of {len(big)} repeats, {failed} failed)")
    assert _row(rows, "1.", "1,000 nodes Ready")[5] == "**met**"


def _row(rows: list[tuple[str, ...]], target: str, measure: str = "") -> tuple[str, ...]:
    hits = [r for r in rows if r[0].startswith(target) and measure in r[1]]
    assert len(hits) == 1, (target, measure, rows)
    return hits[0]


def test_targets_come_from_the_newest_run_that_measured_each(tmp_path: Path) -> None:
    shutil.copy(FULL, tmp_path / FULL.name)
    full = json.loads(FULL.read_text())
    # a later ready run: its times are 10x the full run's, so which run a row came from shows
    _partial_copy(tmp_path, ["ready"], "2026-11-28T0000-vm", 10.0, "pods_running_s")
    # a later steady run with no kwok: no ratio can come from it, so the full run's stands
    lone = _partial_copy(tmp_path, ["steady"], "2026-11-28T0100-vm", 1.0)
    data = json.loads(lone.read_text())
    data["records"] = [r for r in data["records"] if r["sim"] != "kwok"]
    lone.write_text(json.dumps(data))

    # a later writer run that was slowed down: the physical limit stays the best one measured
    _partial_copy(tmp_path, ["writer"], "2026-11-28T0200-vm", 0.5, "writes_per_s")

    rows = report.target_rows(tmp_path)
    share = _row(rows, "2. ≥ 80%")
    writer_max = report._writer_max(report.summarize(full["records"]))
    assert writer_max and f"({report._num(writer_max)} PUT/s, `{FULL.stem}`" in share[1]
    ready = {r["sim"]: r["m"] for r in full["records"] if r["scenario"] == "ready" and r["size"].get("pods")}
    pods = _row(rows, "1.", "pods Running")
    assert pods[2] == report._num(round(ready["kwok"]["pods_running_s"] * 10, 3))
    assert pods[4] == f"{ready['s1']['pods_running_s'] / ready['kwok']['pods_running_s']:.2f}x"
    assert "2026-11-28T0000-vm" in pods[6]
    assert "2026-11-27T0811-vm" in _row(rows, "3. idle CPU ≤ kwok (S=1)")[6]

    steady = {r["sim"]: r["m"] for r in full["records"] if r["scenario"] == "steady"}
    idle = _row(rows, "3. idle CPU ≤ kwok (S=1)")
    ratio = steady["s1"]["idle_sim_cpu_per_1k_nodes_min"] / steady["kwok"]["idle_sim_cpu_per_1k_nodes_min"]
    assert idle[4] == f"{ratio:.2f}x" and idle[5] == ("**met**" if ratio <= 1 else "not met")

    cap = {r["sim"]: r["m"]["capacity_nodes"] for r in full["records"] if r["scenario"] == "lease-hold"}
    hold = _row(rows, "2. lease-hold")
    assert hold[4] == f"{cap['s1'] / cap['kwok']:.2f}x" and hold[5] == "not met"   # 8,000 / 4,000 in that run

    shards = next(r["x"]["per_shard_cpu_s"] for r in full["records"] if r["scenario"] == "scaling" and r["sim"] == "s2")
    mean = sum(shards.values()) / 2
    dev = max(abs(c - mean) for c in shards.values()) / mean
    balance = _row(rows, "4.")
    assert balance[4] == f"{100 * dev:.1f}% off" and balance[5] == "**met**"


def test_a_failed_target_says_not_met_and_the_readme_opens_with_the_targets(tmp_path: Path) -> None:
    data = json.loads(FULL.read_text())
    for r in data["records"]:   # one shard did nearly all the work
        if r["scenario"] == "scaling" and r["sim"] == "s2":
            a, b = r["x"]["per_shard_cpu_s"]
            r["x"]["per_shard_cpu_s"] = {a: 60.0, b: 10.0}
    p = tmp_path / FULL.name
    p.write_text(json.dumps(data))
    balance = _row(report.target_rows(tmp_path), "4.")
    assert balance[4] == f"{100 * 25 / 35:.1f}% off" and balance[5] == "not met"
    report.render(p, tmp_path / "README.md")
    text = (tmp_path / "README.md").read_text()
    assert text.index("## Where shardlet stands on the targets") < text.index("## Results:")


def test_the_writer_share_comes_from_a_later_run_without_kwok_but_the_kwok_ratio_does_not(tmp_path: Path) -> None:
    """A lease-hold run of shardlet alone (searching past the last hold_max) gives the share of the
    raw writer, which needs no kwok beside it; the ratio to kwok stays with the run that had both."""
    both = FULL.parent / "2026-11-28T0328-vm.json"
    shutil.copy(FULL, tmp_path / FULL.name)
    shutil.copy(both, tmp_path / both.name)
    data = json.loads(both.read_text())
    data["records"] = [r for r in data["records"] if r["sim"] != "kwok"]
    for r in data["records"]:
        if r["scenario"] == "lease-hold":
            for s in r["x"]["steps"]:
                s["lease_puts_per_s"] = round(s["lease_puts_per_s"] * 1.25, 1)   # tell the runs apart
    alone = tmp_path / "2026-11-29T0000-vm.json"
    alone.write_text(json.dumps(data))
    s1 = next(r for r in data["records"] if r["scenario"] == "lease-hold")
    seen = next(s["lease_puts_per_s"] for s in s1["x"]["steps"] if s["nodes"] == s1["m"]["capacity_nodes"])
    writer_max = max(report._writer_max(report.summarize(json.loads(p.read_text())["records"])) or 0
                     for p in (FULL, both))
    rows = report.target_rows(tmp_path)
    share = _row(rows, "2. ≥ 80%")
    # the cell may go on with the ramp note (tested below)
    assert share[2] == "-" and share[3].split(" (")[0] == report._num(seen) and alone.stem in share[6]
    assert share[4] == f"{100 * seen / writer_max:.0f}%" and "24,000 nodes, ≥" in share[1]
    assert both.stem in _row(rows, "2. lease-hold")[6]


def _edit_capacity_step(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> str:
    """0328 (S=1 capped at 24,000) beside the full run, with S=1's capacity step edited by `edit`:
    the README's part for 0328."""
    run = FULL.parent / "2026-11-28T0328-vm.json"
    shutil.copy(FULL, tmp_path / FULL.name)
    data = json.loads(run.read_text())
    for r in data["records"]:
        if r["scenario"] == "lease-hold" and r["sim"] == "s1":
            edit(next(s for s in r["x"]["steps"] if s["nodes"] == r["m"]["capacity_nodes"]))
    (tmp_path / run.name).write_text(json.dumps(data))
    report.render(tmp_path / run.name, tmp_path / "README.md")
    return (tmp_path / "README.md").read_text().partition("## Later partial run:")[2]


def test_the_capacity_step_says_where_cpu_and_requests_went_when_recorded(tmp_path: Path) -> None:
    def edit(step: dict[str, Any]) -> None:
        step["cpu_pct"] = {"etcd": 19.0, "kube-apiserver": 127.4, "runner": 23.0}
        step["requests_per_s"] = {"PUT leases": 826.6, "PATCH nodes/status": 40.2}
    later = _edit_capacity_step(tmp_path, edit)
    assert ("While shardlet S=1 held 24,000 nodes — CPU % by process: kube-apiserver 127, runner 23, etcd 19; "
            "apiserver requests/s: PUT leases 827, PATCH nodes/status 40.2.") in later
    assert "While kwok held" not in later   # not recorded for it in this run


def test_the_writer_on_the_held_cluster_gives_its_own_line_and_target_row(tmp_path: Path) -> None:
    """--sizes hold_writer: the capacity step carries the raw writer's rates on that same cluster;
    the README states them and shardlet's share of the best, and the targets table gets a row."""
    seen = 0.0

    def edit(step: dict[str, Any]) -> None:
        nonlocal seen
        seen = step["lease_puts_per_s"]
        step["writer_in_state"] = {
            "nodes": 24000, "best_writes_per_s": 1000.0, "transitions": 0, "not_ready_at_end": 0,
            "levels": {"64": {"writes_per_s": 950.0, "cpu_pct": {"kube-apiserver": 150.0}, "writer_cpu_pct": 20.0},
                       "2x64": {"writes_per_s": 1000.0, "writer_cpu_pct": 30.0,
                                "cpu_pct": {"kube-apiserver": 160.0, "runner": 0.1}},
                       "256": {"error": "RuntimeError: writer 0/1 exited 1"}}}
    later = _edit_capacity_step(tmp_path, edit)
    run = FULL.parent / "2026-11-28T0328-vm.json"
    assert ("The raw writer on that same cluster (24,000 nodes' own leases, shardlet S=1 stopped, controller-manager "
            "watching): 64 in flight 950, 2x64 in flight 1,000, 256 failed writes/s; 0 NotReady transitions meanwhile. "
            "At its best, CPU % by process: kube-apiserver 160, writer 30. "
            f"shardlet S=1's {report._num(seen)} PUT/s while holding is **{100 * seen / 1000:.0f}%** of it.") in later
    row = _row(report.target_rows(tmp_path), "2. ≥ 80% of the raw writer on the held cluster")
    assert row[3].split(" (")[0] == report._num(seen) and row[4] == f"{100 * seen / 1000:.0f}%" and run.stem in row[6]
    assert row[5].startswith(report._share_verdict(seen / 1000, 0.8))   # its wording is tested below
    # 24,000 was that run's hold_max: the share is at that size, and the row says it
    assert "24,000 nodes, ≥" in row[1] and row[5].endswith("; at the run's hold_max, not at a limit found")
    assert row[2] == "-"    # kwok's held cluster had no writer run in this file


def test_a_frozen_simulator_is_named_so_and_a_lapse_under_it_blamed_on_the_writer(tmp_path: Path) -> None:
    """From the freeze handover on, the line and the row say the simulator was frozen, not stopped;
    leases that lapse even so are put down to the writer's own start, not to a stop."""
    def edit(step: dict[str, Any], transitions: int = 0) -> None:
        step["writer_in_state"] = {
            "nodes": 24000, "best_writes_per_s": 1000.0, "transitions": transitions, "not_ready_at_end": 0,
            "sim_freeze": {"frozen": 1, "freeze_s": 0.002},
            "levels": {"64": {"writes_per_s": 1000.0, "writer_cpu_pct": 20.0, "cpu_pct": {}}}}
    later = _edit_capacity_step(tmp_path, edit)
    assert "(24,000 nodes' own leases, shardlet S=1 frozen (SIGSTOP), controller-manager watching)" in later
    row = _row(report.target_rows(tmp_path), "2. ≥ 80% of the raw writer on the held cluster")
    assert "with shardlet frozen (1,000 PUT/s)" in row[1]
    # the strict row states what the writer itself got on that held cluster, against the same best
    strict = _row(report.target_rows(tmp_path), "2. ≥ 80% of the raw writer (S=1)")
    best = float(strict[1].split("hardware and kernel (")[1].split(" PUT/s")[0].replace(",", ""))
    assert strict[5].endswith(f"; on the cluster S=1 held, with it frozen, the raw writer itself got 1,000 PUT/s "
                              f"({100 * 1000 / best:.0f}% of that best)"), strict[5]
    later = _edit_capacity_step(tmp_path, lambda step: edit(step, transitions=12))
    assert ("Leases lapsed while it ran (the writer's start-up and its pass over the oldest leases outlasted "
            "what they had left), so it measured a cluster churning NotReady") in later
    # a writer that let leases lapse measured churn: the strict row takes nothing from it
    assert "the raw writer itself" not in _row(report.target_rows(tmp_path), "2. ≥ 80% of the raw writer (S=1)")[5]


def test_a_narrow_pass_says_by_how_much_and_kwok_gets_its_own_share(tmp_path: Path) -> None:
    assert report._share_verdict(0.81, 0.8) == "**met** (by 1 point)"
    assert report._share_verdict(0.83, 0.8) == "**met** (by 3 points)"
    assert report._share_verdict(0.9, 0.8) == "**met**"
    assert report._share_verdict(0.79, 0.8) == "not met (short by 1 point)"
    assert report._share_verdict(0.52, 0.8) == "not met"
    run = FULL.parent / "2026-11-29T0245-vm.json"
    shutil.copy(run, tmp_path)
    rows = report.target_rows(tmp_path)
    row = _row(rows, "2. ≥ 80% of the raw writer on the held cluster")
    data = json.loads(run.read_text())
    hold = {r["sim"]: r for r in data["records"] if r["scenario"] == "lease-hold"}
    k = next(s for s in hold["kwok"]["x"]["steps"] if s["nodes"] == hold["kwok"]["m"]["capacity_nodes"])
    kbest = k["writer_in_state"]["best_writes_per_s"]
    assert row[2].startswith(f"{report._num(k['lease_puts_per_s'])} ({100 * k['lease_puts_per_s'] / kbest:.0f}% of ")


def test_no_held_cluster_row_without_the_in_state_writer(tmp_path: Path) -> None:
    shutil.copy(FULL, tmp_path / FULL.name)
    shutil.copy(FULL.parent / "2026-11-28T0328-vm.json", tmp_path)
    rows = report.target_rows(tmp_path)
    assert not [r for r in rows if "held cluster" in r[0]]
    assert _row(rows, "2. ≥ 80% of the raw writer (S=1)")


def test_a_capacity_that_flapped_on_the_way_up_says_so_and_a_later_limit_sits_beside_a_capped_ratio(
        tmp_path: Path) -> None:
    # 0245: kwok and S=1 side by side, S=1 stopped at hold_max; 0559: S=1 alone, searched until it broke
    capped, alone = FULL.parent / "2026-11-29T0245-vm.json", FULL.parent / "2026-11-29T0559-vm.json"
    shutil.copy(capped, tmp_path)
    before = _row(report.target_rows(tmp_path), "2. lease-hold ≥ 3x kwok")
    assert "S=1 alone" not in before[5]
    shutil.copy(alone, tmp_path)
    rows = report.target_rows(tmp_path)
    hold = _row(rows, "2. lease-hold ≥ 3x kwok")
    rec = next(r for r in json.loads(alone.read_text())["records"]
               if r["scenario"] == "lease-hold" and r["sim"] == "s1")
    cap, bad = rec["m"]["capacity_nodes"], rec["m"]["first_failure_nodes"]
    assert hold[6].startswith(f"`{capped.stem}`") and hold[3].endswith("(≥, hit hold_max)")
    assert f"S=1 alone in `{alone.stem}`: {cap:,} held, {bad:,} failed" in hold[5]
    # the capacity size of the later run flapped while its nodes were made Ready; a smaller size did not
    at = next(s for s in rec["x"]["steps"] if s.get("ok") and s["nodes"] == cap)
    clean = max(s["nodes"] for s in rec["x"]["steps"] if s.get("ok") and s.get("ramp_transitions") == 0)
    assert at["ramp_transitions"] > 0 and clean < cap
    for target in ("2. ≥ 80% of the raw writer (S=1)", "2. ≥ 80% of the raw writer on the held cluster"):
        row = _row(rows, target)
        assert row[6].startswith(f"`{alone.stem}`")
        assert row[3] == (f"{report._num(at['lease_puts_per_s'])} ({at['ramp_transitions']:,} NotReady transitions "
                          f"before all were Ready; {clean:,} held with none)")
    # and the run's own step table counts them with thousands separators (rendered among these two runs
    # only: beside bench/results a newer full run would be the one shown)
    report.render(tmp_path / alone.name, tmp_path / "README.md")
    n = at["ramp_transitions"]
    assert f"| {n:,}: {at['ramp_transitions_added_nodes']:,} added, {at['ramp_transitions_earlier_nodes']:,} earlier" \
        in (tmp_path / "README.md").read_text()


def test_a_lag_past_the_top_bucket_is_stored_as_strict_json_and_still_reads_as_above_it() -> None:
    from bench.scenarios import _lag_p99
    over = _lag_p99([3.0, float("inf")])
    json.dumps(over, allow_nan=False)   # raises on Infinity: what strict JSON parsers refuse
    assert over == {"shardlet_lease_lag_p99_s": None, "shardlet_lease_lag_p99_above_s": 40}
    assert report._lag(over) == "> 40"
    under = _lag_p99([3.0, 5.0])
    assert under == {"shardlet_lease_lag_p99_s": 5.0} and report._lag(under) == report._num(5.0) != "-"
    assert report._lag({"shardlet_lease_lag_p99_s": float("inf")}) == "> 40"   # files from before the key
    assert _lag_p99([]) == {"shardlet_lease_lag_p99_s": None} and report._lag({}) == "-"


def _hold_record(**m: float) -> dict[str, object]:
    prof = {"samples": 1378, "self": [{"frame": "Kube.request (shardlet/api.py)", "samples": 117, "pct": 8.5}],
            "inclusive": [{"frame": "LeaseRenewer._renew (shardlet/lease.py)", "samples": 466, "pct": 33.8}],
            "packages": [{"frame": "shardlet.lease", "samples": 162, "pct": 11.8}]}
    api = {"cpu_s": 88.1, "buckets": [{"frame": "PUT leases", "cpu_s": 50.2, "pct": 57.0}],
           "self": [{"frame": "runtime.mallocgc", "cpu_s": 6.0, "pct": 6.8}]}
    return {"scenario": "profile", "sim": "s1", "repeat": 0, "size": {"phase": "hold", "nodes": 20000, "window_s": 60},
            "m": {"lease_puts_per_s": 1371.0, "expected_puts_per_s": 2000.0, "node_patches_per_s": 33.0,
                  "sim_cpu_pct": 22.0, "apiserver_cpu_pct": 146.8, "etcd_cpu_pct": 20.0, "sim_cpu_us_per_put": 160.5,
                  "transitions": 0, **m},
            "x": {"profile": prof, "apiserver_profile": api,
                  "cpu": {"wall_s": 60.0, "kcm_cpu_s": 13.5, "groups": {"kube-apiserver": 78.0, "etcd": 12.0,
                                                                          "kube-controller-manager": 13.5,
                                                                          "runner": 13.5}}}}


def test_the_profile_at_hold_gets_its_own_section_and_stays_out_of_the_ramp_profile() -> None:
    out: list[str] = []
    ramp = {"scenario": "profile", "sim": "s1", "repeat": 0, "size": {"nodes": 5000, "pods": 10000, "idle_s": 60},
            "m": {}, "x": {"profile": {"samples": 9017, "self": [{"frame": "ramp_only (x.py)", "pct": 5.0}]}}}
    records = [ramp, _hold_record(transitions=3, ramp_transitions=3)]
    report._hold_profile(out, "### at hold\n", records)
    text = "\n".join(out)
    assert "20,000 nodes all Ready under shardlet S=1 (3 NotReady transitions on the way up) and the" in text
    assert "1,371 lease PUT/s served of the 2,000" in text and "(160 µs per lease PUT" in text
    assert "3 NotReady transitions in the window" in text
    assert "kube-controller-manager 22.5%; all measured processes together 195% (100% = one CPU)" in text
    assert "8.5% `Kube.request (shardlet/api.py)`" in text and "| PUT leases | 50.2 | 57.0 |" in text
    assert "ramp_only" not in text
    ramp_out: list[str] = []
    report._profile(ramp_out, "### ramp\n", records)
    assert "ramp_only" in "\n".join(ramp_out) and "Kube.request" not in "\n".join(ramp_out)
    api_out: list[str] = []
    report._api_profile(api_out, "### api\n", records)
    assert api_out == []   # the hold record's apiserver profile is not the ramp's
    none: list[str] = []
    report._hold_profile(none, "### at hold\n", [ramp])
    assert none == []


def test_the_writer_share_compares_only_with_writers_on_the_same_kernel(tmp_path: Path) -> None:
    """A VM moved to another host build keeps its CPU model, cores and memory but not its speed:
    the best raw writer is taken from runs on the same kernel, and a later run says so."""
    both = FULL.parent / "2026-11-28T0328-vm.json"
    shutil.copy(FULL, tmp_path / FULL.name)
    data = json.loads(both.read_text())
    data["records"] = [r for r in data["records"] if r["sim"] != "kwok"]
    data["meta"]["hardware"]["kernel"] = "other-build"
    for r in data["records"]:
        if r["scenario"] == "writer" and "writes_per_s" in r["m"]:
            r["m"]["writes_per_s"] = round(r["m"]["writes_per_s"] / 2, 1)   # the slower host build
    moved = tmp_path / "2026-11-29T0000-vm.json"
    moved.write_text(json.dumps(data))
    own = report._writer_max(report.summarize(data["records"]))
    full = report._writer_max(report.summarize(json.loads(FULL.read_text())["records"]))
    assert own and full and own < full
    s1 = next(r for r in data["records"] if r["scenario"] == "lease-hold")
    seen = next(s["lease_puts_per_s"] for s in s1["x"]["steps"] if s["nodes"] == s1["m"]["capacity_nodes"])
    share = _row(report.target_rows(tmp_path), "2. ≥ 80%")
    assert share[4] == f"{100 * seen / own:.0f}%" and moved.stem in share[1] and "hardware and kernel" in share[1]
    report.render(tmp_path / FULL.name, tmp_path / "README.md")
    later = (tmp_path / "README.md").read_text().partition("## Later partial run:")[2]
    assert "but kernel other-build" in later.split("\n", 3)[2]


def _table_cell(text: str, row_start: str, column: str) -> str:
    """The cell of the first row starting with `row_start`, under `column` of that row's table."""
    lines = text.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith(row_start))
    header = next(line for line in reversed(lines[:i]) if line.startswith("|  |"))
    cols = [c.strip() for c in header.split("|")[1:-1]]
    return [c.strip() for c in lines[i].split("|")[1:-1]][cols.index(column)]


def test_the_ready_table_shows_writes_held_behind_leases_only_where_measured(tmp_path: Path) -> None:
    """shardlet's count of stage writes that took the narrow gate behind lease renewals, per
    phase; kwok has no such gate (a dash), and an older run without the count has no row."""
    shutil.copy(FULL, tmp_path / FULL.name)
    partial = _partial_copy(tmp_path, ["ready"], "2026-11-28T0000-vm", 1.0)
    data = json.loads(partial.read_text())
    for r in data["records"]:
        if r["sim"] == "s1" and r["size"].get("pods"):
            r["m"].update(nodes_writes_behind_leases=7, pods_writes_behind_leases=263, delete_writes_behind_leases=0)
    partial.write_text(json.dumps(data))
    report.render(partial, tmp_path / "README.md")
    head, _, later = (tmp_path / "README.md").read_text().partition("## Later partial run:")
    pods = "| stage writes held behind lease renewals, pods"
    assert _table_cell(later, pods, "kwok") == "-" and _table_cell(later, pods, "shardlet S=1") == "263"
    assert "| stage writes held behind lease renewals, nodes phase |" in later
    assert _table_cell(later, "| … and in the delete", "shardlet S=1") == "0"   # none held
    assert "behind lease renewals" not in head  # the full run predates the count


def test_counts_print_as_whole_numbers_and_other_medians_keep_their_digits() -> None:
    spread = {"median": 0.0, "min": 0.0, "max": 32.0, "n": 3}
    assert report._cell({"delete_writes_behind_leases": spread}, "delete_writes_behind_leases") == "0 (0-32)"
    assert report._cell({"idle_transitions": {**spread, "max": 1200.0}}, "idle_transitions") == "0 (0-1,200)"
    half = {"median": 16.5, "min": 1.0, "max": 32.0, "n": 2}   # the median of an even count of repeats
    assert report._cell({"pods_writes_behind_leases": half}, "pods_writes_behind_leases") == "16.5 (1-32)"
    assert report._cell({"nodes_ready_s": spread}, "nodes_ready_s") == "0 (0-32.0)"   # a time keeps its digit


def test_the_capacity_is_also_stated_against_the_nodes_the_raw_writer_renews_at_the_kubelets_cadence(
        tmp_path: Path) -> None:
    """The lenient reading of the physical-limit target: nodes held against the nodes the best raw
    writer's rate renews once every cadence; the strict PUT-rate share stays beside it."""
    shutil.copy(FULL, tmp_path / FULL.name)
    data = json.loads(FULL.read_text())
    cap = {r["sim"]: r["m"] for r in data["records"] if r["scenario"] == "lease-hold"}
    writer_max = report._writer_max(report.summarize(data["records"]))
    assert writer_max
    rows = report.target_rows(tmp_path)
    nodes = _row(rows, "2. nodes held")
    cadence = cap["s1"]["capacity_nodes"] / cap["s1"]["capacity_lease_puts_per_s"]
    at_cadence = writer_max * cadence
    assert f"one PUT every {cadence:g} s: {report._num(at_cadence)} nodes" in nodes[1]
    assert nodes[3].startswith(report._num(cap["s1"]["capacity_nodes"]))
    assert nodes[4] == f"{100 * cap['s1']['capacity_nodes'] / at_cadence:.0f}%"
    assert nodes[2] == f"{report._num(cap['kwok']['capacity_nodes'])} " \
                       f"({100 * cap['kwok']['capacity_nodes'] / at_cadence:.0f}%)"
    assert nodes[5].startswith("**met**" if cap["s1"]["capacity_nodes"] >= 0.8 * at_cadence else "not met")
    assert _row(rows, "2. ≥ 80% of the raw writer (S=1)")   # the strict share is still there


def test_the_newest_later_search_sits_beside_a_capped_ratio_even_when_it_found_no_break(tmp_path: Path) -> None:
    """An older S=1-alone run that broke must not stand for S=1's limit when a newer one held more."""
    capped, alone = FULL.parent / "2026-11-29T0245-vm.json", FULL.parent / "2026-11-29T0559-vm.json"
    shutil.copy(capped, tmp_path)
    shutil.copy(alone, tmp_path)
    data = json.loads(alone.read_text())
    for r in data["records"]:
        if r["scenario"] == "lease-hold" and r["sim"] == "s1":
            r["m"].update(capacity_nodes=40000, first_failure_nodes=None, capped=True)
    newer = tmp_path / "2026-11-29T2359-vm.json"
    newer.write_text(json.dumps(data))
    hold = _row(report.target_rows(tmp_path), "2. lease-hold ≥ 3x kwok")
    assert f"S=1 alone in `{newer.stem}`: 40,000 held (≥, its hold_max)" in hold[5]
    assert alone.stem not in hold[5]
    # a still newer run that only tried a larger size, and failed it, is named beside it; one that
    # failed at a size the held run reached says nothing about its hold_max and is left out
    failed = FULL.parent / "2026-11-29T2301-vm.json"          # S=1 alone, 30,000 only, failed
    data = json.loads(failed.read_text())
    for size, name in ((30000, "2026-11-30T0100-vm.json"), (50000, "2026-11-30T0200-vm.json")):
        for r in data["records"]:
            if r["scenario"] == "lease-hold" and r["sim"] == "s1":
                r["m"]["first_failure_nodes"] = size
        (tmp_path / name).write_text(json.dumps(data))
        hold = _row(report.target_rows(tmp_path), "2. lease-hold ≥ 3x kwok")
        if size < 40000:
            assert hold[5].endswith("40,000 held (≥, its hold_max) (no kwok in that run, so no ratio)"), hold[5]
        else:
            assert hold[5].endswith("40,000 held (≥, its hold_max), 50,000 failed in `2026-11-30T0200-vm` "
                                    "(no kwok in those runs, so no ratio)"), hold[5]


def test_a_ramp_says_how_many_renewals_of_not_ready_nodes_were_put_off_when_recorded() -> None:
    step = {"ramp_transitions": 0, "ramp_transitions_added_nodes": 0, "ramp_transitions_earlier_nodes": 0}
    assert "put off" not in report._ramp(step)
    assert report._ramp({**step, "lease_renewals_skipped_not_ready": 12345}).endswith(
        "; 12,345 renewals of not-Ready nodes put off")
    assert report._ramp({"ramp_transitions": 3, "lease_renewals_skipped_not_ready": 7}) == \
        "3; 7 renewals of not-Ready nodes put off"


def test_a_held_cluster_writer_that_let_leases_lapse_is_not_taken_as_the_limit(tmp_path: Path) -> None:
    """In 2026-11-29T1936 the writer at the capacity (27,000) ran while leases lapsed (shardlet's
    stop took longer than the leases had left): the row falls back to the largest clean size."""
    run = FULL.parent / "2026-11-29T1936-vm.json"
    data = json.loads(run.read_text())
    steps = {s["nodes"]: s for r in data["records"] if r["scenario"] == "lease-hold" for s in r["x"]["steps"]}
    assert steps[27000]["ok"] and steps[27000]["writer_in_state"]["transitions"] > 0
    assert steps[24000]["writer_in_state"]["transitions"] == 0
    shutil.copy(run, tmp_path)
    row = _row(report.target_rows(tmp_path), "2. ≥ 80% of the raw writer on the held cluster")
    clean = steps[24000]
    assert "largest size whose writer ran clean (24,000 nodes)" in row[1]
    assert f"the writer let {steps[27000]['writer_in_state']['transitions']:,} leases lapse" in row[1]
    assert row[4] == f"{100 * clean['lease_puts_per_s'] / clean['writer_in_state']['best_writes_per_s']:.0f}%"
    assert "see its note" in row[6]   # the run's bisect ran code changed during the run
    steps[27000]["writer_in_state"]["transitions"] = 0
    (tmp_path / run.name).write_text(json.dumps(data))
    row = _row(report.target_rows(tmp_path), "2. ≥ 80% of the raw writer on the held cluster")
    assert "at capacity (27,000 nodes)" in row[1] and "lapse" not in row[1]


def test_the_held_cluster_line_takes_no_share_from_a_writer_that_let_leases_lapse() -> None:
    at = {"nodes": 27000, "lease_puts_per_s": 726.5, "writer_in_state": {
        "nodes": 27000, "best_writes_per_s": 464.2, "transitions": 1567,
        "levels": {"64": {"writes_per_s": 464.2, "writer_cpu_pct": 9.3, "cpu_pct": {"kube-apiserver": 124.6}}}}}
    line = report._in_state_line("s1", at)
    assert "1,567 NotReady transitions meanwhile" in line and "no share is taken from it" in line and "%**" not in line
    at["writer_in_state"]["transitions"] = 0
    assert "726 PUT/s while holding is **157%** of it" in report._in_state_line("s1", at)
