"""bench/README.md and bench/results/<run>.png from a results file.

The README opens with where shardlet stands on the targets (each from the newest run that measured
it), then shows the newest full run: not --quick and with every scenario (a smoke or partial
run only while no full run exists, and a smoke run under a banner); the plot of every run sits
beside its JSON, and every run is listed at the end.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bench.sims import label, parse_sim
from bench.stats import summarize
from bench.writer import parse_level
from shardlet.metrics import LEASE_LAG_BUCKETS

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"


SCENARIOS = ("writer", "ready", "scaling", "steady", "lease-hold", "profile")


def _partial(meta: dict[str, Any]) -> list[str]:
    """The scenarios a run left out (empty for a full run)."""
    return [s for s in SCENARIOS if s not in (meta.get("scenarios") or SCENARIOS)]


def _is_full(p: Path) -> bool:
    if p.stem.endswith("-quick"):
        return False
    try:
        return not _partial(json.loads(p.read_text())["meta"])
    except (OSError, ValueError, KeyError):
        return False


def newest_results(d: Path, full_only: bool = False) -> Path | None:
    files = sorted((p for p in d.glob("*.json") if not full_only or _is_full(p)),
                   key=lambda p: p.stem.replace("-quick", ""))
    return files[-1] if files else None


def render(path: Path, readme_path: Path | None = README) -> str:
    """Plot `path`; write the README (bench/README.md, or README.md beside the results of a run
    with --out elsewhere)."""
    data = json.loads(path.read_text())
    readme_path = readme_path or path.parent / "README.md"
    png = path.with_suffix(".png")
    try:
        plot(data, png)
    except ImportError:
        png = None  # type: ignore[assignment]
    shown, shown_data = path, data
    if data["meta"].get("quick") or _partial(data["meta"]):
        full = newest_results(path.parent, full_only=True)
        if full is not None:
            shown, shown_data = full, json.loads(full.read_text())
    readme_path.write_text(readme(shown, shown_data, path.parent, readme_path.parent))
    return f"wrote {readme_path}" + (f" and {png}" if png else " (no plot: pip install -e '.[bench]' for matplotlib)") + \
        (f"; README shows {shown.name}" if shown != path else "")


# -- formatting ------------------------------------------------------------------------------
def _lag(step: dict[str, Any]) -> str:
    """A step's renewal-lag p99: past the top bucket of shardlet's histogram, "> bound" (runs before
    2026-11-29T09 stored that as +Inf)."""
    v = step.get("shardlet_lease_lag_p99_s")
    if step.get("shardlet_lease_lag_p99_above_s") is not None:
        return f"> {step['shardlet_lease_lag_p99_above_s']:g}"
    return f"> {LEASE_LAG_BUCKETS[-1]:g}" if v is not None and v == float("inf") else _num(v)


def _count(v: float | None) -> str:
    """A count of events, with thousands separators ("-" when not recorded)."""
    return "-" if v is None else f"{int(v):,}"


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


# metrics that count events: whole numbers, with separators (a median of two may end in .5)
_COUNT_SUFFIXES = ("_writes_behind_leases", "_transitions")


def _whole(v: float) -> str:
    return _count(v) if float(v).is_integer() else _num(v)


def _cell(c: dict[str, Any] | None, metric: str) -> str:
    if not c:
        return "-"
    s = c.get(metric)
    if not s:
        return "err" if c.get("_errors") else "-"
    fmt = _whole if metric.endswith(_COUNT_SUFFIXES) else _num
    if s["n"] > 1 and s["min"] != s["max"]:
        return f"{fmt(s['median'])} ({fmt(s['min'])}-{fmt(s['max'])})"
    return fmt(s["median"])


def _med(c: dict[str, Any] | None, metric: str) -> float | None:
    if not c or not c.get(metric):
        return None
    return float(c[metric]["median"])


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def table(cells: dict[str, dict[str, Any]], sims: list[str], rows: list[tuple[str, str]]) -> str:
    """rows: (metric, row label); columns: each simulator, then shardlet ÷ kwok per shardlet S."""
    others = [s for s in sims if s != "kwok"]
    head = ["", *(label(s) for s in sims)]
    if "kwok" in sims:
        head += [f"{label(s).replace('shardlet ', '')} ÷ kwok" for s in others]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for metric, name in rows:
        if not any(cells.get(s, {}).get(metric) for s in sims):
            continue
        row = [name, *(_cell(cells.get(s), metric) for s in sims)]
        if "kwok" in sims:
            row += [_ratio(_med(cells.get(s), metric), _med(cells.get("kwok"), metric)) for s in others]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) if len(lines) > 2 else "_no data_"


def _errors(summary: dict[str, Any]) -> list[str]:
    out = []
    for size, per in summary.items():
        for sim, c in per.items():
            for e in c.get("_errors", []):
                out.append(f"- {label(sim) if sim != 'None' else 'writer'} ({size}): `{e}`")
    return out


# -- the README ------------------------------------------------------------------------------
def _lapsed_puts(r: dict[str, Any], phase: str) -> float:
    """Node statuses the controller-manager wrote in a ready run's phase: one per lapsed lease."""
    return float(((r["x"].get(phase) or {}).get("requests") or {}).get("PUT nodes/status", 0))


def _lapses(out: list[str], records: list[dict[str, Any]]) -> None:
    """Runs in which nodes went NotReady: the controller-manager PUTs a node's status (Unknown)
    only when its lease lapsed, and the simulator then patches it back, which slows everything."""
    rows = []
    for r in records:
        if r["scenario"] != "ready" or r.get("error"):
            continue
        counts = {ph.removesuffix("_phase"): _lapsed_puts(r, ph) for ph in ("nodes_phase", "pods_phase", "delete_phase")}
        if any(counts.values()):
            rows.append(f"{label(r['sim'])} {r['size'].get('nodes', 0):,} nodes, repeat {r['repeat'] + 1}: "
                        + ", ".join(f"{k} {int(v):,}" for k, v in counts.items() if v))
    if rows:
        out.append("**Leases lapsed** (node statuses written by the controller-manager, by phase; each is a node "
                   "marked Unknown that the simulator then had to patch back): " + "; ".join(rows) + ".\n")


_PHASE_OF = {"nodes_ready_s": "nodes_phase", "pods_running_s": "pods_phase", "pods_deleted_s": "delete_phase"}


def _lapse_note(records: list[dict[str, Any]], nodes: int, pods: int, metric: str) -> str:
    """For a target row: in how many of each simulator's repeats at this size its leases lapsed
    in the phase the row times (or the repeat failed), since that slows it and flatters the other."""
    notes = []
    for sim in ("kwok", "s1"):
        reps = [r for r in records if r["scenario"] == "ready" and r["sim"] == sim
                and r["size"].get("nodes") == nodes and (r["size"].get("pods") or 0) == pods]
        lapsed = sum(1 for r in reps if not r.get("error") and _lapsed_puts(r, _PHASE_OF[metric]))
        failed = sum(1 for r in reps if r.get("error"))
        if lapsed or failed:
            notes.append(f"{label(sim)}: leases lapsed in {lapsed} of {len(reps)} repeats"
                         + (f", {failed} failed" if failed else ""))
    return f" ({'; '.join(notes)})" if notes else ""


def _ready(out: list[str], title: str, summary: dict[str, Any], sims: list[str]) -> None:
    """Scenario 1's tables (one per size), from one run's summary."""
    w = out.append
    w(title)
    w("Seconds from the first create request (simulator already serving) until all are Ready / Running / gone. "
      "Ratio columns: shardlet ÷ kwok (below 1: shardlet faster / cheaper).\n")
    for size, cells in sorted(summary["ready"].items(), key=lambda kv: _size_n(kv[0])):
        n, p = _size_val(size, "nodes"), _size_val(size, "pods")
        rows = [("nodes_ready_s", f"{n:,} nodes Ready (s)"), ("nodes_create_s", "… creating them took (s)"),
                ("nodes_after_created_s", "… Ready after the last create (s)"),
                ("nodes_sim_cpu_s", "simulator CPU-s, nodes phase"),
                ("nodes_sim_cpu_with_ray_s", "… with Ray's daemons"),
                ("nodes_apiserver_cpu_s", "apiserver CPU-s, nodes phase"),
                ("nodes_writes_behind_leases", "stage writes held behind lease renewals, nodes phase")]
        if p:
            rows += [("nodes_settle_s", "controller-manager caught up after that (s, untimed)"),
                     ("pods_running_s", f"{p:,} pods Running (s)"), ("pods_create_s", "… creating them took (s)"),
                     ("pods_after_created_s", "… Running after the last create (s)"),
                     ("pods_deleted_s", f"{p:,} pods deleted (s)"),
                     ("pods_delete_request_s", "… the benchmark's DELETEs took (s)"),
                     ("pods_sim_cpu_s", "simulator CPU-s, pods to Running"),
                     ("pods_sim_cpu_with_ray_s", "… with Ray's daemons"),
                     ("delete_sim_cpu_s", "simulator CPU-s, delete"),
                     ("pods_apiserver_cpu_s", "apiserver CPU-s, pods phase"),
                     ("pods_writes_behind_leases", "stage writes held behind lease renewals, pods to Running"),
                     ("delete_writes_behind_leases", "… and in the delete"),
                     ("pods_sim_pss_mib", f"simulator PSS with {p:,} pods (MiB)"),
                     ("pods_sim_pss_with_ray_mib", "… with Ray's daemons (MiB)")]
        rows.append(("probe_s", "simulator start → serving a probe node (s)"))
        w(table(cells, sims, rows))
        w("")
    w("\n".join(_errors(summary["ready"])))
    w("")


def _steady(out: list[str], title: str, summary: dict[str, Any], sims: list[str]) -> None:
    """Scenario 3's tables, from one run's summary."""
    w = out.append
    w(title)
    for size, cells in summary["steady"].items():
        w(f"`{size}` — idle: nodes Ready, only leases (and the 10-minute heartbeat stage) running, measured over "
          f"the window after a settle; pods: CPU from the first create until all Running, and for the delete "
          "until all gone, scaled to 10,000 pods. CPU-s is user+system seconds of the whole process tree; "
          "'with Ray' adds raylet, GCS, agents and idle workers. PSS splits shared pages between processes.\n")
        w(table(cells, sims, [
            ("idle_sim_cpu_per_1k_nodes_min", "idle: simulator CPU-s per 1k nodes per min"),
            ("idle_sim_cpu_with_ray_per_1k_nodes_min", "… with Ray's daemons"),
            ("idle_ray_daemons_cpu_per_min", "… Ray's daemons alone, CPU-s per min"),
            ("idle_apiserver_cpu_per_1k_nodes_min", "idle: apiserver CPU-s per 1k nodes per min"),
            ("idle_etcd_cpu_per_1k_nodes_min", "idle: etcd CPU-s per 1k nodes per min"),
            ("idle_lease_puts_per_s", "idle: lease PUT/s seen by the apiserver"),
            ("idle_transitions", "idle: NotReady transitions"),
            ("idle_sim_rss_mib", "idle: simulator RSS (MiB)"),
            ("idle_sim_pss_mib", "idle: simulator PSS (MiB)"),
            ("idle_sim_pss_with_ray_mib", "… with Ray's daemons (MiB)"),
            ("pods_sim_cpu_per_10k", "simulator CPU-s per 10k pods to Running"),
            ("pods_sim_cpu_with_ray_per_10k", "… with Ray's daemons"),
            ("delete_sim_cpu_per_10k", "simulator CPU-s per 10k pods deleted"),
            ("pods_apiserver_cpu_per_10k", "apiserver CPU-s per 10k pods to Running"),
            ("pods_create_s", "pods: the benchmark's creates took (s)"),
            ("pods_sim_pss_mib", "simulator PSS with the pods (MiB)"),
            ("pods_sim_pss_with_ray_mib", "… with Ray's daemons (MiB)"),
        ]))
        w("")
    w("\n".join(_errors(summary["steady"])))
    w("")


def _lease_hold(out: list[str], title: str, summary: dict[str, Any], records: list[dict[str, Any]],
                sims: list[str], sizes: dict[str, Any], writer_max: float | None,
                writer_from: str = "scenario 5") -> None:
    """Scenario 2's capacity table and every step, from one run's records."""
    w = out.append
    w(title)
    w(f"The largest node count that stayed Ready for {sizes.get('hold')} s with 0 NotReady transitions (40 s "
      "leases, controller-manager with node-monitor-grace-period 50 s); sizes "
      f"{_growth(sizes)} from {sizes.get('hold_start')} until one fails"
      f"{', then one bisection' if int(sizes.get('hold_bisect', 1)) else ' (no bisection in this run)'}. "
      "A node count N needs N/10 lease "
      "PUTs/s." + (f" The raw writer's best on this box was {writer_max:,.0f} PUT/s ({writer_from})." if writer_max else "")
      + "\n")
    w("| | capacity (nodes) | first failure | lease PUT/s needed (kubelet cadence) | lease PUT/s seen at capacity "
      "| seen, as a share of the raw writer limit | oldest lease at capacity (s) "
      "| simulator CPU-s per 1k nodes per min at capacity | NotReady transitions while adding the last nodes "
      "|\n|---|---|---|---|---|---|---|---|---|")
    steps_rows = []
    held_lines = []   # where CPU and requests went at capacity, below the table
    for _size, per in summary["lease-hold"].items():
        for sim in sims:
            c = per.get(sim)
            if not c:
                continue
            cap = _med(c, "capacity_nodes")
            capped = _capped(records, sim)
            at = _capacity_step(records, sim, cap)
            seen = at.get("lease_puts_per_s")
            frac = f"{100 * seen / writer_max:.0f}%" if seen and writer_max else "-"
            w(f"| {label(sim)} | {_num(cap)}{' (≥, hit hold_max)' if capped else ''} | "
              f"{_num(_med(c, 'first_failure_nodes'))} | {_num(cap / 10 if cap else None)} | {_num(seen)} | {frac} | "
              f"{_num(at.get('lease_age_max_s'))} | {_num(_med(c, 'capacity_sim_cpu_per_1k_nodes_min'))} | "
              f"{_count(at.get('ramp_transitions'))} |")
            if at.get("cpu_pct"):
                held_lines.append(
                    f"\nWhile {label(sim)} held {_num(cap)} nodes — CPU % by process: "
                    + ", ".join(f"{g} {v:.0f}" for g, v in sorted(at["cpu_pct"].items(), key=lambda kv: -kv[1]))
                    + "; apiserver requests/s: "
                    + ", ".join(f"{k} {_num(v)}" for k, v in at["requests_per_s"].items()) + ".")
            if line := _in_state_line(sim, at):
                held_lines.append(line)
    out.extend(held_lines)
    w("\nPast what the apiserver serves at the kubelet's cadence (a renewal every 10 s), renewals queue and "
      "each lease is renewed less often; a node stays Ready while its lease is younger than the 50 s grace "
      "period. \"Seen\" is what the apiserver served while the size held (`apiserver_request_total`).\n")
    for r in records:
        if r["scenario"] != "lease-hold":
            continue
        for s in r["x"].get("steps", []):
            steps_rows.append(
                f"| {label(r['sim'])} | {s['nodes']:,}{' (bisect)' if s.get('bisect') else ''} | "
                f"{'held' if s.get('ok') else 'FAILED'} | {_ready_settle(s)} | {_num(s.get('lease_puts_per_s'))} "
                f"/ {_num(s.get('expected_puts_per_s'))} | {_num(s.get('lease_age_max_s'))} | "
                f"{_lag(s)} | {_count(s.get('transitions'))} | "
                f"{_ramp(s)} | "
                f"{_num(s.get('sim_cpu_per_1k_nodes_min'))} | {s.get('reason', '')} |")
    if steps_rows:
        w("\n<details><summary>Every step</summary>\n")
        w("| simulator | nodes | result | Ready after (s) (+ until untainted) | lease PUT/s seen / needed | oldest lease renewTime (s) "
          "| shardlet lease lag p99 (s) | NotReady transitions (hold) | (while adding nodes) "
          "| sim CPU-s / 1k nodes / min | why |")
        w("|---|---|---|---|---|---|---|---|---|---|---|")
        out.extend(steps_rows)
        w("\n</details>\n")
    w("\n".join(_errors(summary["lease-hold"])))
    w("")

def _scaling(out: list[str], title: str, summary: dict[str, Any], sims: list[str]) -> None:
    """Scenario 4's table, from one run's summary."""
    w = out.append
    w(title)
    for size, cells in summary["scaling"].items():
        w(f"`{size}` — nodes and bound pods are created first with no simulator running; then the simulator "
          "starts and works off the backlog. Throughput counts from the first to the last object served; "
          "per-shard CPU comes from each shard's pid in shardlet's `/status`.\n")
        w(table(cells, sims, [
            ("startup_s", "start → first object served (s)"),
            ("nodes_done_s", "start → all nodes Ready (s)"),
            ("pods_done_s", "start → all pods Running (s)"),
            ("nodes_per_s", "nodes Ready per s"),
            ("pods_per_s", "pods Running per s"),
            ("sim_cpu_s", "simulator CPU-s (runner + shards)"),
            ("ray_daemons_cpu_s", "Ray's daemons CPU-s"),
            ("runner_cpu_s", "runner / coordinator process CPU-s"),
            ("shard_cpu_max_s", "busiest shard CPU-s"),
            ("shard_cpu_mean_s", "mean shard CPU-s"),
            ("apiserver_cpu_s", "apiserver CPU-s"),
        ]))
        w("")
    w("\n".join(_errors(summary["scaling"])))
    w("")


def _writer(out: list[str], title: str, summary: dict[str, Any]) -> None:
    """Scenario 5's table, from one run's summary."""
    w = out.append
    w(title)
    w("A minimal asyncio writer (`bench/writer.py`) PUTs existing Leases in kube-node-lease as fast as it "
      "can with a bounded number in flight (`PxC`: P processes with C each), no simulator running. The "
      "writer shares the 2 CPUs with the apiserver and etcd, so its own CPU is shown beside theirs. Runs "
      "from 2026-11-28 on write as shardlet does (its lean HTTP client, a service-account token); earlier "
      "runs used aiohttp and the admin client certificate, which the apiserver verifies per request. "
      "From shardlet commit d55f92e on it also leaves managedFields out of the PUT (the apiserver keeps "
      "them) and reads only the new resourceVersion from the answer, as shardlet's renewer does. "
      "A level ending in `pb` sends and accepts protobuf (`application/vnd.kubernetes.protobuf`, the "
      "kubelet's encoding) instead of JSON.\n")
    w("| in flight | writes/s | latency p50 / p99 (ms) | writer CPU % | apiserver CPU % | apiserver CPU-ms per write "
      "| etcd CPU % | errors |")
    w("|---|---|---|---|---|---|---|---|")
    for size, per in sorted(summary["writer"].items(), key=lambda kv: _level_key(_size_val(kv[0], "level", str))):
        c = per.get("None") or next(iter(per.values()))
        if not c.get("writes_per_s"):
            continue
        w(f"| {_size_val(size, 'level', str)} | {_cell(c, 'writes_per_s')} | {_cell(c, 'latency_ms_p50')} / "
          f"{_cell(c, 'latency_ms_p99')} | {_cell(c, 'writer_cpu_pct')} | {_cell(c, 'apiserver_cpu_pct')} | "
          f"{_cell(c, 'apiserver_cpu_ms_per_write')} | {_cell(c, 'etcd_cpu_pct')} | {_cell(c, 'errors')} |")
    w("")
    w("\n".join(_errors(summary["writer"])))
    w("")


def _profile(out: list[str], title: str, records: list[dict[str, Any]]) -> None:
    """The profile's top costs, from one run's records (nothing if it has no profile)."""
    prof = [r for r in records if r["scenario"] == "profile" and r["x"].get("profile") and not _at_hold(r)]
    if not prof:
        return
    w = out.append
    r = prof[-1]
    p = r["x"]["profile"]
    sz = r.get("size", {})
    w(title)
    w(f"py-spy at 100 Hz on {label(r['sim'])} while {sz.get('nodes'):,} nodes became Ready, idled "
      f"{sz.get('idle_s'):.0f} s, and {sz.get('pods'):,} pods were created, ran and were deleted: "
      f"{p.get('samples', 0):,} busy samples. Native code (orjson, ssl) counts under its Python caller.\n")
    w(_top_costs(p))
    w("<details><summary>Top functions</summary>\n")
    w("| self % | function | | inclusive % | function |\n|---|---|---|---|---|")
    selfs, incl = p.get("self", []), p.get("inclusive", [])
    for i in range(max(len(selfs), len(incl))):
        a = selfs[i] if i < len(selfs) else None
        b = incl[i] if i < len(incl) else None
        w(f"| {a['pct'] if a else ''} | {'`' + a['frame'] + '`' if a else ''} | | {b['pct'] if b else ''} | "
          f"{'`' + b['frame'] + '`' if b else ''} |")
    w("\n| package / module (self) | % |\n|---|---|")
    for row in p.get("packages", [])[:12]:
        w(f"| `{row['frame']}` | {row['pct']} |")
    w("\n</details>\n")


def _api_profile(out: list[str], title: str, records: list[dict[str, Any]]) -> None:
    """The apiserver's CPU by handler under each simulator, from the same profile window."""
    recs = {r["sim"]: r for r in records if r["scenario"] == "profile"
            and (r["x"].get("apiserver_profile") or {}).get("buckets") and not _at_hold(r)}
    if not recs:
        return
    w = out.append
    sims = [s for s in ("kwok", *sorted(k for k in recs if k != "kwok")) if s in recs]
    size = next(iter(recs.values())).get("size", {})
    w(title)
    w(f"Go pprof of kube-apiserver for the first {size.get('api_s', '?')} s after the {size.get('pods', 0):,} pods "
      "started being created (creation, stage PATCHes and lease PUTs overlap there), per simulator, on a fresh "
      "cluster each. Each sample counts under the first handler found from its leaf up.\n")
    head = " | ".join(f"{label(s)} CPU-s | %" for s in sims)
    w(f"| where | {head} |\n|---|" + "---|---|" * len(sims))
    names: list[str] = []
    for s in sims:
        for row in recs[s]["x"]["apiserver_profile"]["buckets"]:
            if row["frame"] not in names:
                names.append(row["frame"])
    for name in names:
        cells = []
        for s in sims:
            row = next((b for b in recs[s]["x"]["apiserver_profile"]["buckets"] if b["frame"] == name), None)
            cells.append(f"{row['cpu_s']} | {row['pct']}" if row else "0 | 0")
        w(f"| {name} | {' | '.join(cells)} |")
    tot = " | ".join(f"**{recs[s]['x']['apiserver_profile']['cpu_s']}** | " for s in sims)
    w(f"| **total** | {tot} |")
    ran = " | ".join(f"{recs[s]['m'].get('api_window_pods_running', '?')} | " for s in sims)
    w(f"| pods Running at the window's end | {ran} |\n")
    _api_self(out, recs, sims)


def _api_self(out: list[str], recs: dict[str, dict[str, Any]], sims: list[str]) -> None:
    out.append("<details><summary>Top apiserver functions (self)</summary>\n")
    for s in sims:
        out.append(f"{label(s)}:\n\n| self CPU-s | % | function |\n|---|---|---|")
        for row in recs[s]["x"]["apiserver_profile"].get("self", [])[:12]:
            out.append(f"| {row['cpu_s']} | {row['pct']} | `{row['frame']}` |")
        out.append("")
    out.append("</details>\n")


def _at_hold(r: dict[str, Any]) -> bool:
    return (r.get("size") or {}).get("phase") == "hold"


def _kcm_pct(r: dict[str, Any]) -> str:
    """The controller-manager's share of the window, and the box's total, when the phase recorded them."""
    cpu = r["x"].get("cpu") or {}
    wall = float(cpu.get("wall_s") or 0)
    if not wall or "kcm_cpu_s" not in cpu:
        return ""
    total = sum(float(v) for v in (cpu.get("groups") or {}).values())
    return (f", kube-controller-manager {_num(100 * float(cpu['kcm_cpu_s']) / wall)}%; all measured processes "
            f"together {_num(100 * total / wall)}% (100% = one CPU)")


def _hold_profile(out: list[str], title: str, records: list[dict[str, Any]]) -> None:
    """Both profiles over one window while a simulator held its nodes: where capacity is decided."""
    recs = [r for r in records if r["scenario"] == "profile" and _at_hold(r) and r["x"].get("profile")]
    if not recs:
        return
    w = out.append
    r = recs[-1]
    m, sz = r["m"], r.get("size", {})
    w(title)
    ramp = (f" ({_count(m.get('ramp_transitions'))} NotReady transitions on the way up)"
            if m.get("ramp_transitions") else "")
    w(f"{sz.get('nodes', 0):,} nodes all Ready under {label(r['sim'])}{ramp} and the controller-manager's lifecycle "
      f"taints gone, then, for {sz.get('window_s')} s with "
      f"nothing else running, py-spy on it and Go pprof of kube-apiserver: {_num(m.get('lease_puts_per_s'))} "
      f"lease PUT/s served of the {_num(m.get('expected_puts_per_s'))} the kubelet's cadence asks, "
      f"{_num(m.get('node_patches_per_s'))} node PATCH/s (heartbeat stage, controller-manager); CPU {label(r['sim'])} "
      f"{_num(m.get('sim_cpu_pct'))}% ({_num(m.get('sim_cpu_us_per_put'))} µs per lease PUT, everything it did "
      f"counted), kube-apiserver {_num(m.get('apiserver_cpu_pct'))}%, etcd {_num(m.get('etcd_cpu_pct'))}%"
      f"{_kcm_pct(r)}; {_count(m.get('transitions'))} NotReady transitions in the window.\n")
    w(_top_costs(r["x"]["profile"]))
    ap = r["x"].get("apiserver_profile") or {}
    if ap.get("buckets"):
        w(f"kube-apiserver in the same window ({ap.get('cpu_s')} CPU-s), by the first handler found from each "
          "sample's leaf up:\n")
        w("| where | CPU-s | % |\n|---|---|---|")
        for row in ap["buckets"]:
            w(f"| {row['frame']} | {row['cpu_s']} | {row['pct']} |")
        w("")
        _api_self(out, {r["sim"]: r}, [r["sim"]])


def readme(path: Path, data: dict[str, Any], results_dir: Path, base: Path) -> str:
    meta = data["meta"]
    records = data.get("records", [])
    summary = summarize(records)
    sims = list(meta.get("sims", []))
    sizes = meta.get("sizes", {})
    def link(p: Path) -> str:
        return os.path.relpath(p, base)
    rel = link(path)
    png = path.with_suffix(".png")
    out: list[str] = []
    w = out.append
    w("# Benchmark: shardlet side by side with kwok\n")
    w("<!-- Generated by `python -m bench` (bench/report.py) from the results file named below; "
      "edit bench/report.py, not this file. -->\n")
    w(HOW_TO)
    w(METHOD)
    out.extend(targets_section(results_dir))
    w(f"## Results: `{rel}`\n")
    if meta.get("quick"):
        w("> **SMOKE RUN** (`--quick`: tiny sizes, short windows). It only shows that every code path runs; "
          "its numbers are not a benchmark result. The full run (`./dev bench`) replaces it.\n")
    if not meta.get("finished"):
        w("> **Incomplete run**: it was interrupted; what it measured is below.\n")
    out.extend(_provenance(meta))
    hw, ver = meta.get("hardware", {}), meta.get("versions", {})
    w(f"Started {meta.get('started')}, took {meta.get('duration_s', 0) / 60:.0f} min; scenarios "
      f"{', '.join(meta.get('scenarios', []))}; repeat {meta.get('repeat')} (median, and min-max when repeated); "
      f"command `python -m bench {' '.join(meta.get('argv', []))}`.\n")
    w("| hardware | |\n|---|---|")
    w(f"| CPU | {hw.get('cpu_model')} — {hw.get('usable_cpus')} usable CPUs ({hw.get('physical_cores')} cores) |")
    w(f"| memory | {hw.get('memory_gib')} GiB |")
    w(f"| kernel / OS | {hw.get('kernel')} / {hw.get('os')} |")
    w(f"| load average at start / end | {meta.get('loadavg_start')} / {meta.get('loadavg_end')} |")
    w("")
    w("| versions | |\n|---|---|")
    for k in ("python", "kube-apiserver", "kube-controller-manager", "etcd", "kwok", "shardlet", "shardlet_commit",
              "ray", "aiohttp", "orjson"):
        w(f"| {k} | {ver.get(k)} |")
    w("")
    busy = meta.get("busy_processes_at_start") or []
    if busy:
        w("Other processes busy when the run started (noise): " +
          ", ".join(f"{b['comm']} {b['cpu_pct']}%" for b in busy) + ".\n")
    flags = meta.get("flags", {})
    w("<details><summary>Flags used</summary>\n")
    w("```")
    w(f"cluster:     {json.dumps(flags.get('cluster'))}")
    w(f"apiserver:   {' '.join(flags.get('apiserver', []))}")
    w(f"controllers: {' '.join(flags.get('controllers', []))}")
    w(f"etcd:        {' '.join(flags.get('etcd', []))}")
    w(f"stages:      {flags.get('stages')} (kwok v0.8.0 'fast': node-initialize, node-heartbeat-with-lease, "
      "pod-ready, pod-complete, pod-delete)")
    for s, a in (flags.get("sims") or {}).items():
        w(f"{s + ':':12} {a}")
    w(f"sizes:       {json.dumps(sizes)}")
    w(f"creator:     {meta.get('creator_concurrency')} requests in flight")
    w("```\n</details>\n")
    if png.exists():
        w(f"![plot]({link(png)})\n")

    # 1. ready
    if "ready" in summary:
        _ready(out, "### 1. Time to Ready, Running, deleted\n", summary, sims)
        _lapses(out, records)
    # 2. lease-hold
    writer_max = _writer_max(summary)
    if "lease-hold" in summary:
        _lease_hold(out, "### 2. Lease-hold capacity\n", summary, records, sims, sizes, writer_max)
    # 3. steady
    if "steady" in summary:
        _steady(out, "### 3. Steady-state cost\n", summary, sims)
    if "scaling" in summary:
        _scaling(out, "### 4. Scaling with shards\n", summary, sims)
    if "writer" in summary:
        _writer(out, "### 5. The physical limit: raw lease writes\n", summary)
    _profile(out, "### Where shardlet's CPU goes (profile)\n", records)
    _api_profile(out, "### Where the apiserver's CPU goes (profile)\n", records)
    _hold_profile(out, "### Where the CPU goes while the nodes are held (profile at hold)\n", records)
    # problems
    problems = meta.get("problems") or {}
    if problems:
        w("### Warnings and errors in the simulators' logs\n")
        for sim, lst in problems.items():
            agg: dict[str, int] = {}
            tb = 0
            for pr in lst:
                tb += int(pr.get("tracebacks", 0))
                for k, v in (pr.get("counts") or {}).items():
                    agg[k] = agg.get(k, 0) + int(v)
            top = sorted(agg.items(), key=lambda kv: -kv[1])[:8]
            w(f"- **{label(sim)}** ({len(lst)} runs with some; {tb} tracebacks): " +
              "; ".join(f"`{k}` x{v}" for k, v in top))
        w("")
    # later partial runs: each scenario they measured gets its own tables
    for f in sorted(results_dir.glob("*.json")):
        if f.stem.endswith("-quick") or f.stem.replace("-quick", "") <= path.stem.replace("-quick", ""):
            continue
        try:
            later = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        lsum = summarize(later.get("records", []))
        has_profile = any(r["scenario"] == "profile" for r in later.get("records", []))
        if not _partial(later["meta"]) or not ({"ready", "lease-hold", "steady", "scaling", "writer"} & set(lsum)
                                               or has_profile):
            continue
        w(f"## Later partial run: `{link(f)}`\n")
        w(f"Started {later['meta'].get('started', '')}; command `python -m bench {' '.join(later['meta'].get('argv') or [])}`; "
          f"repeat {later['meta'].get('repeat', 1)}; shardlet commit "
          f"{str((later['meta'].get('versions') or {}).get('shardlet_commit', '?'))[:7]}; {_same_machine(meta, later['meta'])}.\n")
        out.extend(_provenance(later["meta"]))
        lsims = list(later["meta"].get("sims", []))
        if "ready" in lsum:
            _ready(out, "### 1. Time to Ready, Running, deleted (partial run)\n", lsum, lsims)
            _lapses(out, later.get("records", []))
        if "steady" in lsum:
            _steady(out, "### 3. Steady-state cost (partial run)\n", lsum, lsims)
        if "lease-hold" in lsum:
            own = _writer_max(lsum)
            _lease_hold(out, "### 2. Lease-hold capacity (partial run)\n", lsum, later.get("records", []),
                        lsims, later["meta"].get("sizes", {}), own or writer_max,
                        "scenario 5 of this run" if own else "scenario 5 of the full run above")
        if "scaling" in lsum:
            _scaling(out, "### 4. Scaling with shards (partial run)\n", lsum, lsims)
        if "writer" in lsum:
            _writer(out, "### 5. The physical limit: raw lease writes (partial run)\n", lsum)
        _profile(out, "### Where shardlet's CPU goes (profile, partial run)\n", later.get("records", []))
        _api_profile(out, "### Where the apiserver's CPU goes (profile, partial run)\n", later.get("records", []))
        _hold_profile(out, "### Where the CPU goes while the nodes are held (profile at hold, partial run)\n",
                      later.get("records", []))
    # all runs
    w("## All results files\n")
    for f in sorted(results_dir.glob("*.json"), reverse=True):
        tag = " (smoke run)" if f.stem.endswith("-quick") else ""
        if not tag:
            try:
                fmeta = json.loads(f.read_text())["meta"]
                if _partial(fmeta):
                    tag = (f" (partial: {', '.join(fmeta.get('scenarios') or [])}; "
                           f"`{' '.join(fmeta.get('argv') or [])}`)")
            except (OSError, ValueError, KeyError):
                pass
        pngs = f" · [plot]({link(f.with_suffix('.png'))})" if f.with_suffix(".png").exists() else ""
        w(f"- [`{f.name}`]({link(f)}){tag}{pngs}")
    w("")
    return "\n".join(out)


def _provenance(meta: dict[str, Any]) -> list[str]:
    """Where a run's simulators did not all run the code it started with: the shardlet starts the
    bench recorded from a changed working tree, and notes written into the results file after
    the run (each says so)."""
    out = []
    changed = meta.get("code_changed") or []
    if changed:
        began = (meta.get("versions") or {}).get("shardlet_commit")
        out.append(f"> **Code changed during the run**: it began at shardlet `{began}`, but "
                   + "; ".join(f"{c['env']} ({label(c['sim'])}, {c['at']}) started `{c['code']}`" for c in changed)
                   + ". What those clusters measured ran the changed code.\n")
    for note in meta.get("notes") or []:
        out.append(f"> **Note added after the run**: {note}\n")
    return out


def _size_n(size: str) -> int:
    return int(_size_val(size, "nodes") or 0)


def _size_val(size: str, key: str, typ: Any = int) -> Any:
    for part in size.split(","):
        k, _, v = part.partition("=")
        if k == key:
            try:
                return typ(v)
            except ValueError:
                return v
    return None


def _level_key(level: Any) -> tuple[int, int, str]:
    try:
        return parse_level(str(level))
    except ValueError:
        return (0, 0, "")


def _ready_settle(step: dict[str, Any]) -> str:
    """Seconds until all Ready, then until the controller-manager's lifecycle taints were gone."""
    if "settle_s" not in step:
        return _num(step.get("ready_s"))
    if step["settle_s"] is None:
        return f"{_num(step.get('ready_s'))} (+ taints: {step.get('tainted_at_hold')} left)"
    return f"{_num(step.get('ready_s'))} + {_num(step['settle_s'])}"


def _ramp(step: dict[str, Any]) -> str:
    """NotReady transitions while a step added nodes, split when the run recorded which nodes."""
    n = _count(step.get("ramp_transitions"))
    skipped = step.get("lease_renewals_skipped_not_ready")
    tail = f"; {_count(skipped)} renewals of not-Ready nodes put off" if skipped else ""
    if "ramp_transitions_added_nodes" not in step:
        return n + tail
    after = step.get("ramp_notready_after_ready_s") or {}
    return (f"{n}: {_count(step['ramp_transitions_added_nodes'])} added, "
            f"{_count(step['ramp_transitions_earlier_nodes'])} earlier"
            + (f"; added ones {_num(after.get('p50'))} s (median) after their first Ready" if after else "") + tail)


def _growth(sizes: dict[str, Any]) -> str:
    grow = float(sizes.get("hold_grow", 2))
    return "double" if grow == 2 else f"grow x{grow:g}"


def _capped(records: list[dict[str, Any]], sim: str) -> bool:
    """Whether every lease-hold run of `sim` stopped at hold_max without a failure (a lower bound)."""
    ms = [r["m"] for r in records if r["scenario"] == "lease-hold" and r["sim"] == sim and r.get("m")]
    return bool(ms) and all(m.get("capped") for m in ms)


def _held_steps(records: list[dict[str, Any]], sim: str) -> list[dict[str, Any]]:
    """Every lease-hold step of `sim` that held, in run order."""
    return [s for r in records if r["scenario"] == "lease-hold" and r["sim"] == sim
            for s in r["x"].get("steps", []) if s.get("ok")]


def _capacity_step(records: list[dict[str, Any]], sim: str, nodes: float | None) -> dict[str, Any]:
    """The lease-hold step that held at the capacity size (the last one, if several)."""
    steps = [s for s in _held_steps(records, sim) if s.get("nodes") == nodes]
    return steps[-1] if steps else {}


def _handover(ws: dict[str, Any]) -> str:
    """How the simulator gave way to the writer on its held cluster: frozen from the freeze
    handover on (bench 44ae5ff), stopped gracefully before it."""
    return "frozen" if "sim_freeze" in ws else "stopped"


def _clean_writer(ws: dict[str, Any]) -> float | None:
    """The best rate of a writer on a held cluster that let no lease lapse; None otherwise (one
    that did measured a cluster churning NotReady, not the limit)."""
    best = ws.get("best_writes_per_s")
    return None if ws.get("transitions") else best


def _in_state_line(sim: str, at: dict[str, Any]) -> str:
    """The raw writer run on the cluster `sim` just held (--sizes hold_writer), as one line."""
    ws = at.get("writer_in_state") or {}
    best = ws.get("best_writes_per_s")
    if not best:
        return ""
    levels = ", ".join(f"{lv} in flight {_num(m.get('writes_per_s'))}" if "writes_per_s" in m else f"{lv} failed"
                       for lv, m in ws.get("levels", {}).items())
    top = next(m for m in ws["levels"].values() if m.get("writes_per_s") == best)
    seen = at.get("lease_puts_per_s")
    frozen = _handover(ws) == "frozen"
    why = ("the writer's start-up and its pass over the oldest leases outlasted what they had left"
           if frozen else "the simulator's stop outlasted what the oldest leases had left")
    return (f"\nThe raw writer on that same cluster ({_num(ws.get('nodes'))} nodes' own leases, {label(sim)} "
            f"{'frozen (SIGSTOP)' if frozen else 'stopped'}, "
            f"controller-manager watching): {levels} writes/s; {_count(ws.get('transitions', 0))} NotReady transitions "
            f"meanwhile. At its best, CPU % by process: "
            + ", ".join(f"{g} {v:.0f}" for g, v in sorted({**(top.get("cpu_pct") or {}), "writer": top.get("writer_cpu_pct", 0)
                                                           }.items(), key=lambda kv: -kv[1]) if v >= 0.5)
            + (f". Leases lapsed while it ran ({why}), "
               "so it measured a cluster churning NotReady, not the limit: no share is taken from it."
               if _clean_writer(ws) is None else
               f". {label(sim)}'s {_num(seen)} PUT/s while holding is **{100 * seen / best:.0f}%** of it." if seen else "."))


def _writer_max(summary: dict[str, Any]) -> float | None:
    best = None
    for per in (summary.get("writer") or {}).values():
        for c in per.values():
            v = _med(c, "writes_per_s")
            if v is not None and (best is None or v > best):
                best = v
    return best


def _top_costs(p: dict[str, Any]) -> str:
    lines = ["Top costs (self time, share of busy samples):\n"]
    for i, row in enumerate(p.get("self", [])[:8], 1):
        lines.append(f"{i}. {row['pct']}% `{row['frame']}`")
    inc = p.get("inclusive", [])[:8]
    if inc:
        lines.append("\nInclusive (the work the time is spent for):\n")
        lines += [f"{i}. {row['pct']}% `{row['frame']}`" for i, row in enumerate(inc, 1)]
    pk = p.get("packages", [])[:6]
    if pk:
        lines.append("\nBy module: " + ", ".join(f"`{r['frame']}` {r['pct']}%" for r in pk) + ".")
    return "\n".join(lines) + "\n"


# -- where shardlet stands on the targets ------------------------------------------------------
TARGETS_NOTE = (
    "Each row comes from the newest results file that measured it (kwok and shardlet always from that same "
    "run, on the same machine and control-plane flags); the file and the shardlet commit it ran are named. "
    "Ratios are shardlet ÷ kwok of the medians.\n")


def _runs(results_dir: Path) -> list[tuple[Path, dict[str, Any], dict[str, Any]]]:
    """(file, meta, summary) of every non-smoke run, newest first."""
    out = []
    for f in sorted(results_dir.glob("*.json"), key=lambda p: p.stem, reverse=True):
        if f.stem.endswith("-quick"):
            continue
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        out.append((f, data.get("meta", {}), {"records": data.get("records", []), **summarize(data.get("records", []))}))
    return out


def _src(f: Path, meta: dict[str, Any]) -> str:
    commit = str((meta.get("versions") or {}).get("shardlet_commit") or "?")[:7]
    said = (["code changed during the run"] if meta.get("code_changed") else []) + (
        ["see its note"] if meta.get("notes") else [])
    return f"`{f.stem}` ({'; '.join([commit, *said])})"


def _same_machine(meta: dict[str, Any], later: dict[str, Any]) -> str:
    """How a later run's machine compares with the full run's: a VM can move to another host
    build between runs with the same CPU model, cores and memory, and run at another speed."""
    a, b = meta.get("hardware") or {}, later.get("hardware") or {}
    if _hardware(meta) != _hardware(later):
        return "on other hardware than above (see its results file)"
    if a.get("kernel") != b.get("kernel"):
        return (f"same CPU model, cores and memory as above but kernel {b.get('kernel')} (above: {a.get('kernel')}): "
                "compare with runs on that kernel, not with the tables above")
    return "same machine and flags as above"


def _hardware(meta: dict[str, Any]) -> tuple[Any, ...]:
    hw = meta.get("hardware") or {}
    return hw.get("cpu_model"), hw.get("usable_cpus"), hw.get("memory_gib")


def _box(meta: dict[str, Any]) -> tuple[Any, ...]:
    """The machine a rate can be compared on: the hardware and the kernel (the VM's build)."""
    return (*_hardware(meta), (meta.get("hardware") or {}).get("kernel"))


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "not met"


def _share_verdict(share: float, target: float) -> str:
    """A share against its target; a pass or a miss by under 5 points says so, since the writer's
    own rate moves that much between levels and runs."""
    points = 100 * (share - target)
    near = abs(points) < 5
    n = f"{abs(points):.0f} point{'' if round(abs(points)) == 1 else 's'}"
    if points < 0:
        return "not met" + (f" (short by {n})" if near else "")
    return "**met**" + (f" (by {n})" if near else "")


def _ramp_note(records: list[dict[str, Any]], sim: str, nodes: float | None) -> str:
    """NotReady transitions while the capacity size was still being made Ready: the hold window
    had none, but a size that flapped on the way up is at the edge, not comfortably inside."""
    n = _capacity_step(records, sim, nodes).get("ramp_transitions") if nodes else None
    if not n:
        return ""
    clean = max((s["nodes"] for s in _held_steps(records, sim) if s.get("ramp_transitions") == 0), default=None)
    return (f" ({_count(n)} NotReady transitions before all were Ready"
            + (f"; {_num(clean)} held with none" if clean else "") + ")")


def _later_limit(runs: list[tuple[Path, dict[str, Any], dict[str, Any]]], before: Path) -> str:
    """S=1's capacity from the newest run after `before` that searched it (kwok not in it, so no
    ratio): beside a kwok row whose S=1 only reached hold_max. The newest, whether it found where S=1
    breaks or held up to its own hold_max, since an older break may have been a slower day. A newer
    run that only tried a larger size and failed it says where the held one's hold_max stands."""
    failed: tuple[Path, float] | None = None   # the newest failed-only search
    for f, _meta, s in runs:
        if f == before:
            return ""
        r = next((r for r in s["records"] if r["scenario"] == "lease-hold" and r["sim"] == "s1"), None)
        if r and not r["m"].get("capacity_nodes") and r["m"].get("first_failure_nodes") and failed is None:
            failed = (f, r["m"]["first_failure_nodes"])
        if r and r["m"].get("capacity_nodes"):
            cap, bad = r["m"]["capacity_nodes"], r["m"].get("first_failure_nodes")
            later = (f", {_num(failed[1])} failed in `{failed[0].stem}`"
                     if not bad and failed and failed[1] > cap else "")
            return (f"; S=1 alone in `{f.stem}`: {_num(cap)} held"
                    + (f", {_num(bad)} failed" if bad else " (≥, its hold_max)") + later
                    + f" (no kwok in {'those runs' if later else 'that run'}, so no ratio)")
    return ""


def target_rows(results_dir: Path) -> list[tuple[str, str, str, str, str, str, str]]:
    """(target, measure, kwok, shardlet, ratio or share, met?, source) for the issue's four targets,
    each from the newest run that measured it with kwok beside shardlet."""
    runs = _runs(results_dir)
    rows: list[tuple[str, str, str, str, str, str, str]] = []

    # 1. time ratio <= 0.7 (S=1: the shardlet users compare with one kwok process)
    for f, meta, s in runs:
        ready = s.get("ready") or {}
        if not any("kwok" in per and "s1" in per for per in ready.values()):
            continue
        for size, per in sorted(ready.items(), key=lambda kv: _size_n(kv[0])):
            k, sh = per.get("kwok"), per.get("s1")
            measures = [("nodes_ready_s", f"{_size_n(size):,} nodes Ready (s)")]
            if p := _size_val(size, "pods"):
                measures += [("pods_running_s", f"{p:,} pods Running (s)"), ("pods_deleted_s", f"{p:,} pods deleted (s)")]
            for metric, name in measures:
                a, b = _med(sh, metric), _med(k, metric)
                if a is None or b is None or not b:
                    continue
                rows.append(("1. time ≤ 0.7x kwok (S=1)", name, _num(b), _num(a), f"{a / b:.2f}x",
                             _verdict(a / b <= 0.7)
                             + _lapse_note(s["records"], _size_n(size), _size_val(size, "pods") or 0, metric),
                             _src(f, meta)))
        break

    # 2. lease-hold >= 3x kwok, and >= 80% of the raw writer's rate
    # the physical limit is the best any writer run reached on the same hardware: a writer run slowed by
    # other load must not make the share look larger
    writer_runs = [(f, meta, w) for f, meta, s in runs if (w := _writer_max(s))]
    for f, meta, s in runs:
        per = next(iter((s.get("lease-hold") or {}).values()), {})
        if "kwok" not in per or "s1" not in per:
            continue
        kc, sc = _med(per["kwok"], "capacity_nodes"), _med(per["s1"], "capacity_nodes")
        if kc and sc:
            capped = _capped(s["records"], "s1")
            rows.append(("2. lease-hold ≥ 3x kwok (S=1)", f"nodes Ready for {(meta.get('sizes') or {}).get('hold')} s",
                         _num(kc) + _ramp_note(s["records"], "kwok", kc),
                         _num(sc) + (" (≥, hit hold_max)" if capped else _ramp_note(s["records"], "s1", sc)),
                         f"{sc / kc:.2f}x", _verdict(sc / kc >= 3) + (_later_limit(runs, f) if capped else ""),
                         _src(f, meta)))
        break
    # the share needs no kwok beside it, so it comes from the newest run that held any size with S=1
    for f, meta, s in runs:
        per = next(iter((s.get("lease-hold") or {}).values()), {})
        sc = _med(per["s1"], "capacity_nodes") if "s1" in per else None
        seen = _capacity_step(s["records"], "s1", sc).get("lease_puts_per_s") if sc else None
        if not seen:
            continue
        # same CPU model, cores, memory and kernel: a VM moved to another host build keeps the
        # first three (the full run 2026-11-27T0811 ran on another kernel than every later one)
        same = [w for w in writer_runs if _box(w[1]) == _box(meta)]
        best = max(same, key=lambda t: t[2], default=None)
        if best is None:
            continue
        kc = _med(per["kwok"], "capacity_nodes") if "kwok" in per else None
        kseen = _capacity_step(s["records"], "kwok", kc).get("lease_puts_per_s") if kc else None
        # the same limit in nodes: what the writer's rate renews at the kubelet's cadence. A simulator
        # that stretches renewals under load (both do) can hold more than that, so this reading is the
        # lenient one and the PUT-rate share below the strict one; both are shown
        needed = _med(per["s1"], "capacity_lease_puts_per_s")
        if needed:
            at_cadence = best[2] * sc / needed
            rows.append(("2. nodes held ≥ 80% of what the raw writer renews (S=1)",
                         f"nodes held, as a share of the nodes the best raw writer on this hardware and kernel "
                         f"renews at the kubelet's cadence (one PUT every {sc / needed:g} s: {_num(at_cadence)} nodes)",
                         f"{_num(kc)} ({100 * kc / at_cadence:.0f}%)" if kc else "-",
                         _num(sc) + (" (≥)" if _capped(s["records"], "s1") else ""),
                         f"{100 * sc / at_cadence:.0f}%", _verdict(sc / at_cadence >= 0.8)
                         + "; the lenient reading: renewals stretched under load count", _src(f, meta)))
        # what the cluster itself costs: the raw writer, on the cluster S=1 just held, against the same best
        ws = _capacity_step(s["records"], "s1", sc).get("writer_in_state") or {}
        own = _clean_writer(ws)
        rows.append(("2. ≥ 80% of the raw writer (S=1)", f"lease PUT/s served at capacity ({_num(sc)} nodes"
                     f"{', ≥' if _capped(s['records'], 's1') else ''}), as a share of the best raw writer on this "
                     f"hardware and kernel ({_num(best[2])} PUT/s, {_src(best[0], best[1])})", _num(kseen),
                     _num(seen) + _ramp_note(s["records"], "s1", sc),
                     f"{100 * seen / best[2]:.0f}%", _verdict(seen / best[2] >= 0.8)
                     + (f"; on the cluster S=1 held, with it {_handover(ws)}, "
                        f"the raw writer itself got {_num(own)} PUT/s ({100 * own / best[2]:.0f}% of that best)"
                        if own else ""), _src(f, meta)))
        break

    # the same share against the writer run on the very cluster S=1 held (--sizes hold_writer): the
    # apiserver, etcd and controller-manager in the state the simulator left them
    for f, meta, s in runs:
        per = next(iter((s.get("lease-hold") or {}).values()), {})
        sc = _med(per["s1"], "capacity_nodes") if "s1" in per else None
        # a writer that let leases lapse (the simulator's stop took too long for leases already near
        # their grace) measured a cluster churning NotReady, not the limit: the largest size whose
        # writer ran clean stands in, and the row says so
        clean = [st for st in _held_steps(s["records"], "s1")
                 if _clean_writer(st.get("writer_in_state") or {}) and st.get("lease_puts_per_s")]
        at = max(clean, key=lambda st: st["nodes"], default={})
        if not at or not sc:
            continue
        where, lapsed = "capacity", ""
        if at["nodes"] != sc:
            where = "the largest size whose writer ran clean"
            lapsed = (f"; at the capacity, {_num(sc)} nodes, the writer let "
                      f"{_count(_capacity_step(s['records'], 's1', sc).get('writer_in_state', {}).get('transitions'))}"
                      " leases lapse")
        best_in = at["writer_in_state"]["best_writes_per_s"]
        capped = _capped(s["records"], "s1") and at["nodes"] == sc
        sc = at["nodes"]
        seen = at["lease_puts_per_s"]
        # kwok's share on the cluster it held, where that run measured it too
        kc = _med(per["kwok"], "capacity_nodes") if "kwok" in per else None
        kat = _capacity_step(s["records"], "kwok", kc) if kc else {}
        kbest = (kat.get("writer_in_state") or {}).get("best_writes_per_s")
        kcell = (f"{_num(kat['lease_puts_per_s'])} ({100 * kat['lease_puts_per_s'] / kbest:.0f}% of {_num(kbest)} "
                 f"on its {_num(kc)})" if kbest and kat.get("lease_puts_per_s") else "-")
        # the share falls as the size grows (more apiserver work per renewal), so a size capped by
        # hold_max gives the share at that size, not at the limit
        rows.append(("2. ≥ 80% of the raw writer on the held cluster (S=1)",
                     f"lease PUT/s served at {where} ({_num(sc)} nodes{', ≥' if capped else ''}), as a share of the "
                     f"raw writer renewing those nodes' leases right after, with shardlet "
                     f"{_handover(at['writer_in_state'])} "
                     f"({_num(best_in)} PUT/s){lapsed}", kcell,
                     _num(seen) + _ramp_note(s["records"], "s1", sc), f"{100 * seen / best_in:.0f}%",
                     _share_verdict(seen / best_in, 0.8)
                     + ("; at the run's hold_max, not at a limit found" if capped else ""), _src(f, meta)))
        break

    # 3. idle CPU per node-minute <= kwok
    for f, meta, s in runs:
        per = next(iter((s.get("steady") or {}).values()), {})
        if "kwok" not in per or not any(k.startswith("s") for k in per if k != "kwok"):
            continue
        b = _med(per["kwok"], "idle_sim_cpu_per_1k_nodes_min")
        for sim in sorted((k for k in per if k != "kwok"), key=lambda x: parse_sim(x)[1]):
            metric = "idle_sim_cpu_with_ray_per_1k_nodes_min" if sim != "s1" else "idle_sim_cpu_per_1k_nodes_min"
            a = _med(per[sim], metric) or _med(per[sim], "idle_sim_cpu_per_1k_nodes_min")
            if a is None or not b:
                continue
            rows.append((f"3. idle CPU ≤ kwok ({label(sim).replace('shardlet ', '')}"
                         f"{', with Ray' if sim != 's1' else ''})", "CPU-s per 1k nodes per min",
                         _num(b), _num(a), f"{a / b:.2f}x", _verdict(a / b <= 1.0), _src(f, meta)))
        break

    # 4. per-shard CPU within 20% of 1/S of the shards' total
    for f, meta, s in runs:
        recs = [r for r in s["records"] if r["scenario"] == "scaling" and parse_sim(r["sim"])[1] > 1]
        if not recs:
            continue
        worst: dict[str, tuple[float, int, list[float]]] = {}
        for r in recs:
            shards = list(((r.get("x") or {}).get("per_shard_cpu_s") or {}).values())
            want = parse_sim(r["sim"])[1]
            if len(shards) != want or not sum(shards):
                continue
            mean = sum(shards) / want
            dev = max(abs(c - mean) for c in shards) / mean
            if r["sim"] not in worst or dev > worst[r["sim"]][0]:
                worst[r["sim"]] = (dev, want, shards)
        for sim, (dev, want, shards) in sorted(worst.items(), key=lambda kv: kv[1][1]):
            rows.append((f"4. per-shard CPU within 20% of 1/S ({label(sim).replace('shardlet ', '')})",
                         f"each shard's CPU-s; the furthest from the mean ({_num(sum(shards))}/{want})", "-",
                         " / ".join(_num(c) for c in shards), f"{100 * dev:.1f}% off", _verdict(dev <= 0.2),
                         _src(f, meta)))
        if worst:
            break
    return rows


def targets_section(results_dir: Path) -> list[str]:
    rows = target_rows(results_dir)
    if not rows:
        return []
    out = ["## Where shardlet stands on the targets\n", TARGETS_NOTE,
           "| target | measure | kwok | shardlet | result | | run (commit) |", "|---|---|---|---|---|---|---|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    out.append("")
    return out


# -- the plot --------------------------------------------------------------------------------
def _legend(ax: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _not_run(ax: Any) -> None:
    """A panel whose scenario this run did not include: say so instead of drawing empty axes."""
    title = ax.get_title()
    ax.cla()
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    ax.text(0.5, 0.5, "not in this run", ha="center", va="center", fontsize=11, color="#888888",
            transform=ax.transAxes)


def plot(data: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta = data["meta"]
    records = data.get("records", [])
    summary = summarize(records)
    sims = list(meta.get("sims", []))
    colors = {s: c for s, c in zip(sims, ["#444444", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b"],
                                   strict=False)}
    fig, axes = plt.subplots(2, 3, figsize=(17, 9.5))
    hw = meta.get("hardware", {})
    title = (f"shardlet vs kwok — {hw.get('cpu_model', '')}, {hw.get('usable_cpus')} CPUs, {hw.get('memory_gib')} GiB"
             f" — {meta.get('started', '')[:16]}" + ("  [SMOKE RUN --quick]" if meta.get("quick") else ""))
    fig.suptitle(title, fontsize=11)

    # (a) times
    ax = axes[0][0]
    ready = summary.get("ready", {})
    bars: list[tuple[str, str, str]] = []
    for size in sorted(ready, key=_size_n):
        n, p = _size_val(size, "nodes"), _size_val(size, "pods")
        bars.append((size, "nodes_ready_s", f"{n} nodes\nReady"))
        if p:
            bars += [(size, "pods_running_s", f"{p} pods\nRunning"), (size, "pods_deleted_s", f"{p} pods\ndeleted")]
    width = 0.8 / max(1, len(sims))
    for i, sim in enumerate(sims):
        ys = [_med(ready.get(size, {}).get(sim), m) or 0 for size, m, _ in bars]
        ax.bar([j + i * width for j in range(len(bars))], ys, width, label=label(sim), color=colors.get(sim))
    ax.set_xticks([j + width * (len(sims) - 1) / 2 for j in range(len(bars))], [b[2] for b in bars], fontsize=8)
    ax.set_ylabel("seconds (lower is better)")
    ax.set_title("1. time from first create", fontsize=10)
    _legend(ax)
    if not bars:
        _not_run(ax)

    # (b), (c) curves from the largest ready size, first repeat
    for ax, key, what in ((axes[0][1], "series_nodes", "nodes Ready"), (axes[0][2], "series_pods", "pods Running")):
        biggest = max((r["size"].get("nodes", 0) for r in records if r["scenario"] == "ready" and r["x"].get(key)),
                      default=None)
        for sim in sims:
            rs = [r for r in records if r["scenario"] == "ready" and r["sim"] == sim and r["x"].get(key)
                  and r["size"].get("nodes") == biggest]
            if rs:
                s = rs[0]["x"][key]
                ax.plot([t for t, _ in s], [c for _, c in s], label=label(sim), color=colors.get(sim))
        ax.set_xlabel("seconds since first create")
        ax.set_ylabel(what)
        ax.set_title(f"{what} over time ({biggest} nodes)" if biggest else f"{what} over time", fontsize=10)
        _legend(ax)
        if biggest is None:
            _not_run(ax)

    # (d) lease-hold capacity
    ax = axes[1][0]
    hold = next(iter(summary.get("lease-hold", {}).values()), {})
    xs = [s for s in sims if s in hold]
    bc = ax.bar([label(s).replace("shardlet ", "") for s in xs], [_med(hold[s], "capacity_nodes") or 0 for s in xs],
                color=[colors.get(s) for s in xs])
    ax.bar_label(bc, fmt="%.0f", fontsize=8)
    wmax = _writer_max(summary)
    if wmax:
        ax.axhline(wmax * 10, color="k", ls="--", lw=1)
        ax.text(0, wmax * 10, f" raw writer limit: {wmax:,.0f} PUT/s = {wmax * 10:,.0f} nodes at a 10 s cadence", va="bottom", fontsize=8)
    ax.set_ylabel("nodes held Ready (higher is better)")
    ax.set_title(f"2. lease-hold capacity ({meta.get('sizes', {}).get('hold')} s, 40 s leases)", fontsize=10)
    if not xs:
        _not_run(ax)

    # (e) steady CPU
    ax = axes[1][1]
    st = next(iter(summary.get("steady", {}).values()), {})
    xs = [s for s in sims if s in st]
    a = [_med(st[s], "idle_sim_cpu_per_1k_nodes_min") or 0 for s in xs]
    b = [(_med(st[s], "idle_sim_cpu_with_ray_per_1k_nodes_min") or 0) - v for s, v in zip(xs, a, strict=True)]
    names = [label(s).replace("shardlet ", "") for s in xs]
    ax.bar(names, a, color=[colors.get(s) for s in xs], label="simulator")
    ax.bar(names, b, bottom=a, color="#bbbbbb", label="+ Ray's daemons")
    ax.set_ylabel("CPU-s per 1k nodes per min (lower is better)")
    ax.set_title("3. idle nodes: CPU", fontsize=10)
    _legend(ax)
    if not xs:
        _not_run(ax)

    # (f) scaling
    ax = axes[1][2]
    sc = next(iter(summary.get("scaling", {}).values()), {})
    shard_sims = [s for s in sims if s != "kwok" and s in sc]
    ns = [parse_sim(s)[1] for s in shard_sims]
    for metric, style in (("nodes_per_s", "-o"), ("pods_per_s", "-s")):
        ax.plot(ns, [_med(sc[s], metric) or 0 for s in shard_sims], style, label=f"shardlet {metric.split('_')[0]}/s")
        kw = _med(sc.get("kwok"), metric)
        if kw:
            ax.axhline(kw, ls="--", lw=1, color="C0" if metric == "nodes_per_s" else "C1",
                       label=f"kwok {metric.split('_')[0]}/s")
    ax.set_xticks(ns or [1])
    ax.set_xlabel("shards S")
    ax.set_ylabel("objects served per s (higher is better)")
    ax.set_title("4. working off a backlog", fontsize=10)
    _legend(ax)
    if not shard_sims:
        _not_run(ax)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)


HOW_TO = """\
kwok and shardlet measured side by side, in one run, on the same machine, each against a fresh local
control plane (etcd, kube-apiserver, kube-controller-manager) started with identical flags.

## How to run

```sh
./dev bench                                   # everything at full size (see the estimate it prints)
./dev bench --quick --scenarios ready         # smoke run: tiny sizes, a few minutes
python -m bench --scenarios ready,steady --sims kwok,s1 --repeat 3
python -m bench --sizes nodes=1000,5000,10000 --sizes pods=20000 --hold 120
python -m bench --estimate                    # how long the chosen run would take
python -m bench --report                      # re-render this file and the plot from the newest results
```

`./dev bench` is `.venv/bin/python -m bench`. The plot needs matplotlib and the profile py-spy, the
`bench` extra of pyproject.toml; the first run pip-installs them when they are missing (`--no-install`
to skip; without them the run still measures everything else).

| option | |
|---|---|
| `--scenarios` | `writer,ready,scaling,steady,lease-hold,profile` (default all, run in that order) |
| `--sims` | `kwok` and `sN` = shardlet with N shards (default `kwok,s1,s2,s4`; `--quick`: `kwok,s1,s2`) |
| `--repeat N` | every measurement N times on fresh clusters, interleaved; median and min-max reported (lease-hold and profile run once) |
| `--hold-sims` | the simulators lease-hold searches, some of `--sims` (default all; its targets are `kwok,s1`) |
| `--quick` | small sizes and short windows: a smoke run of every code path |
| `--sizes KEY=V[,V]` | (`steady_*`, `scaling_*`, `profile_*` follow `nodes`/`pods` unless given) `nodes`, `pods`, `steady_nodes`, `steady_pods`, `window`, `settle`, `scaling_nodes`, `scaling_pods`, `hold`, `hold_start`, `hold_max`, `hold_bisect`, `hold_grow`, `hold_stall`, `hold_writer` (levels, default none), `writer_leases`, `writer` (levels like `64`, `2x64` or `64pb`), `writer_duration`, `profile_nodes` (0: only the profile at hold), `profile_pods`, `profile_idle`, `profile_api_s`, `profile_hold_nodes` (0: no profile at hold), `profile_hold_s` |
| `--hold S`, `--window S` | lease-hold time per size (default 300 s), steady idle window (default 120 s) |

Each run writes `bench/results/<date>-<host>.json` (every raw number, per-phase CPU by process group,
apiserver request counts, hardware, versions, flags; `-quick` suffix for smoke runs),
`bench/results/<date>-<host>.png`, and regenerates this README. Simulator logs and raw profiles go to
`bench/results/logs/<run>/` (not committed). This README shows the newest full run (a `--quick` smoke run
only while there is none); every run's JSON and plot are listed at the end.
"""

METHOD = """\
## Method

**One machine, shared.** The reference box has 2 CPUs and 24 GiB. etcd, kube-apiserver,
kube-controller-manager, the simulator and the benchmark's own client all share those 2 CPUs, so every
number here is a throughput *under contention*: CPU a simulator burns is CPU the apiserver does not get.
kwok and shardlet run in the same invocation, one after the other, with the same flags; other load on
the machine (see "load average" below) makes all of them slower alike, and `--repeat` shows the spread.

**Control plane** (kwok's CI benchmark is the model): `disable_qps_limits` (apiserver without max-inflight
limits and without priority-and-fairness, controllers at 5000 QPS), no kube-scheduler — pods are bare and
created with `spec.nodeName` set, round-robin over the nodes — and kube-controller-manager running with
`--node-monitor-grace-period=50s`, so a node whose lease lapses really turns NotReady. etcd runs with
`--unsafe-no-fsync`. Every measurement gets a fresh cluster.

**Simulators.** Both manage exactly the nodes annotated `kwok.x-k8s.io/node=fake`, hold 40 s node leases
(renewed every 10 s) and run the same Stage YAML: kwok v0.8.0's `fast` set (node-initialize,
node-heartbeat-with-lease, pod-ready, pod-complete, pod-delete), passed to kwok with `--config` and built
into shardlet as `--profile fast`. kwok is the pinned `kwok` binary with
`--manage-nodes-with-annotation-selector` and `--node-lease-duration-seconds=40` (the binary's own default
is 0, i.e. no leases); shardlet is `shardlet run --shards S` (S = 1 in-process, S > 1 on a private Ray
instance, in a Ray temp dir of its own so that it never joins a cluster some `ray start` left on the
host), `--no-stage-crd` since kwok reads no Stage objects either. Each logs at its default level
(info) into a file. Both start, then serve a probe node (proof they are up, not timed), before a
measurement. Both are handed the cluster's admin kubeconfig, a client certificate, as kwokctl hands
it to kwok. kwok sends every request with it; shardlet (by default; `--no-token-exchange` turns it
off) creates the ServiceAccount `kube-system/shardlet` and sends its short requests with that
account's token, because the apiserver verifies a client certificate's chain on every request
(see "Where the apiserver's CPU goes" for what that costs under each).

**Objects.** Nodes come from shardlet's kwokctl-compatible template (`shardlet.scale.node_manifest`:
podCIDRs, InternalIPs, allocatable 32 CPU / 256Gi / 110 pods, the fake taint). Pods are kwokctl's pod
template (`shardlet.scale.pod_spec`) as bare pods. The creator is the same asyncio client for every
simulator, 64 requests in flight.

**Timer.** Scenario 1 starts the clock at the first create request, with the simulator already serving,
and stops it when the last object is Ready / Running / gone as seen by a watch — creation and simulation
overlap, exactly as for kwok's `kwokctl scale` benchmark. How long creation alone took and how long after
the last create the simulator finished are reported beside it.

**What counts as simulator CPU.** User+system CPU of the simulator's whole process tree from /proc:
kwok's one process; shardlet's runner, plus for S > 1 its Ray shard workers (`ray::ShardActor`).
"with Ray" adds Ray's own daemons (GCS, raylet, dashboard/runtime-env agents, log monitor, idle
workers). Memory is RSS and PSS (proportional set size, which splits shared pages) summed over the same
processes.

## Scenarios

1. **ready** — for N in `nodes` (1,000 and 5,000): N nodes created → time until all N are Ready. On the
   largest N, the benchmark then waits (untimed) until kube-controller-manager has removed the node-lifecycle
   taints (`node.kubernetes.io/not-ready`) from every node, so that the pod phase starts on a quiet control
   plane for every simulator (a simulator that makes nodes Ready faster leaves more of the controller's
   work behind); then `pods` (10,000) bare pods bound round-robin → time until all Running; then every pod is
   DELETEd (default grace; the simulator's pod-delete stage removes it with grace 0 once deletionTimestamp
   is set, kwok's semantics) → time until all are gone. Also simulator, apiserver and etcd CPU per phase.
2. **lease-hold** — the largest node count that stays Ready for `hold` seconds (300) with 0 NotReady
   transitions: start at `hold_start` (1,000), add nodes to multiply the count by `hold_grow` (2) while the
   previous size held, until a size fails (a Ready→NotReady transition seen by a node watch, or not all
   Ready within 120 s + N/25 s, or no new node Ready for `hold_stall` (240) s) or `hold_max` is reached;
   then one bisection between the last good and the first bad size on a fresh cluster. Also recorded per
   size: lease PUT/s the apiserver served (`apiserver_request_total`), the oldest lease `renewTime` seen in
   periodic lists (renew lag as the apiserver sees it, the same for both), shardlet's own lease-lag p99
   from its `/status`, and simulator CPU per 1k nodes per minute. Before each hold window the benchmark
   waits until kube-controller-manager has removed the not-ready taints of the new nodes (as in steady).
   With `hold_writer` levels (e.g. `--sizes hold_writer=64,2x64`), every size that held is followed by the
   raw writer on that same cluster: the simulator's process tree is frozen (SIGSTOP: it stops writing at
   once, where a graceful stop near capacity took 13.7 s and leases lapsed meanwhile; it is killed after)
   and `bench/writer.py` renews the N nodes' own leases (oldest first, so they stay Ready) for
   `writer_duration` at each level, with the controller-manager still watching; the next size then starts
   on a fresh cluster. That is the physical limit in the state
   the simulator worked in (N Nodes and Leases in etcd and the watch cache, the controller monitoring them),
   where scenario 5 measures it on an empty cluster.
3. **steady** — `steady_nodes` (5,000) Ready nodes, no lifecycle taint left, `settle` (30 s), then CPU-seconds over a `window`
   (120 s) of idle nodes (only leases, and the heartbeat stage every ~10 min) per 1,000 nodes per minute,
   and RSS/PSS; then `steady_pods` (10,000) pods: CPU from the first create to all Running and for the
   delete, per 10,000 pods, and memory with the pods.
4. **scaling** — `scaling_nodes` (5,000) nodes and `scaling_pods` (10,000) bound pods are created with no
   simulator running; then the simulator starts and works off the backlog. Time from start to first served,
   all nodes Ready and all pods Running, throughput (nodes Ready/s and pods Running/s from first to last),
   CPU of runner, each shard (its pid from shardlet's `/status`) and Ray's daemons, for S = 1, 2, 4 (kwok
   as the reference).
5. **writer** — the physical limit: with no simulator, a minimal asyncio writer (`bench/writer.py`)
   PUTs `writer_leases` (5,000) existing Leases in kube-node-lease as fast as the apiserver and etcd accept
   for `writer_duration` (30 s) at each level of requests in flight (`16,64,256,2x64`; `2x64` = two writer
   processes; `64pb` = 64 in flight in protobuf, the kubelet's encoding, instead of JSON). A simulator
   holding N nodes needs N/10 lease PUTs/s at the kubelet's cadence; the rate the apiserver served a
   simulator at its lease-hold capacity is stated as a share of the best rate here (strict: the rate the
   simulator got), and its capacity as a share of the nodes that rate renews at that cadence (lenient: a
   simulator that stretches renewals under load, as both do, may hold more nodes than that).
6. **profile** — the first shardlet of `--sims` (S = 1 in a full run; `--sims s4` profiles S = 4, its
   shards as py-spy `--subprocesses`) under py-spy (100 Hz, `--nonblocking`) through `profile_nodes` (5,000)
   nodes becoming Ready, `profile_idle` (60 s) of idle leases, and `profile_pods` (10,000) pods created,
   Running and deleted; the top costs by self time, inclusive time and module. Not timed. Beside it (and
   for kwok too, when kwok is among the sims) a Go pprof CPU profile of kube-apiserver for `profile_api_s`
   (20) s from the start of pod creation, split by the handler the time went to (`go tool pprof`; needs
   `go` on PATH): what each simulator's requests and watches cost the apiserver. Then, on a fresh cluster,
   the profile at hold: `profile_hold_nodes` (20,000) nodes all Ready, the controller-manager's lifecycle
   taints gone, `settle` (30 s), and both profiles over the same `profile_hold_s` (60 s) with nothing else
   running: the renewals, heartbeats and controller-manager traffic that decide lease-hold capacity, with
   shardlet's CPU per lease PUT.

A scenario that fails records its error and the run goes on; clusters and simulator processes (the whole
process tree, by pid and start time) are always torn down.

"""
