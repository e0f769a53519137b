"""`python -m bench`: kwok and shardlet side by side, on fresh identical control planes, in one run.

Writes bench/results/<date>-<host>.json (raw numbers, hardware, versions, flags), the plot
bench/results/<date>-<host>.png, and regenerates bench/README.md. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from bench import procs, sysinfo
from bench.sims import FAST_STAGES, LEASE_SECONDS, SELECTOR, argv, label, parse_sim
from bench.writer import parse_level

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"

ORDER = ["writer", "ready", "scaling", "steady", "lease-hold", "profile"]
ALIASES = {"hold": "lease-hold", "leasehold": "lease-hold", "lease": "lease-hold", "limit": "writer",
           "physical": "writer", "scale": "scaling", "cpu": "steady", "all": "all"}

FULL: dict[str, Any] = {
    "nodes": [1000, 5000], "pods": 10000,
    "steady_nodes": 5000, "steady_pods": 10000, "window": 120, "settle": 30,
    "scaling_nodes": 5000, "scaling_pods": 10000,
    "hold": 300, "hold_start": 1000, "hold_max": 64000, "hold_bisect": 1, "hold_grow": 2, "hold_stall": 240,
    "hold_writer": [],
    "writer_leases": 5000, "writer": ["16", "64", "256", "2x64"], "writer_duration": 30,
    "profile_nodes": 5000, "profile_pods": 10000, "profile_idle": 60, "profile_api_s": 20,
    "profile_hold_nodes": 20000, "profile_hold_s": 60,
}
QUICK: dict[str, Any] = {
    "nodes": [100, 300], "pods": 600,
    "steady_nodes": 300, "steady_pods": 600, "window": 20, "settle": 5,
    "scaling_nodes": 300, "scaling_pods": 600,
    "hold": 20, "hold_start": 100, "hold_max": 200, "hold_bisect": 1, "hold_grow": 2, "hold_stall": 60,
    "hold_writer": [],
    "writer_leases": 300, "writer": ["8", "32"], "writer_duration": 5,
    "profile_nodes": 300, "profile_pods": 600, "profile_idle": 10, "profile_api_s": 5,
    "profile_hold_nodes": 300, "profile_hold_s": 5,
}
LISTS = {"nodes", "writer", "hold_writer"}
FULL_SIMS = ["kwok", "s1", "s2", "s4"]
QUICK_SIMS = ["kwok", "s1", "s2"]


def parse_args(argv_: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", default="all",
                   help=f"comma separated, in this order: {', '.join(ORDER)} (default: all)")
    p.add_argument("--sims", default=None,
                   help="simulators: kwok and sN = shardlet with N shards (default: kwok,s1,s2,s4; --quick: kwok,s1,s2)")
    p.add_argument("--hold-sims", default=None,
                   help="the simulators lease-hold searches, a subset of --sims (default: all of them); "
                        "its targets are S=1 against kwok, and one search takes tens of minutes")
    p.add_argument("--repeat", type=int, default=1,
                   help="repeat each measurement N times on fresh clusters, report median and min-max "
                        "(lease-hold and profile run once) (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every code path")
    p.add_argument("--sizes", action="append", default=[], metavar="KEY=V[,V]",
                   help="override a size (repeatable): " + ", ".join(f"{k}={_fmt_default(v)}" for k, v in FULL.items()))
    p.add_argument("--hold", type=float, default=None, help="lease-hold: seconds each size must hold (default 300)")
    p.add_argument("--window", type=float, default=None, help="steady: idle measuring window in seconds (default 120)")
    p.add_argument("--concurrency", type=int, default=64, help="the creator's requests in flight (default: %(default)s)")
    p.add_argument("--out", default=str(RESULTS), help="results directory (default: bench/results)")
    p.add_argument("--no-readme", action="store_true", help="do not regenerate bench/README.md")
    p.add_argument("--no-install", action="store_true",
                   help="do not pip-install the 'bench' extra (matplotlib, py-spy) when it is missing")
    p.add_argument("--estimate", action="store_true", help="print the estimated duration and exit")
    p.add_argument("--report", nargs="?", const="newest", default=None, metavar="JSON",
                   help="only regenerate bench/README.md and the plot from a results file (default: the newest)")
    return p.parse_args(argv_)


def _fmt_default(v: Any) -> str:
    return ",".join(map(str, v)) if isinstance(v, list) else str(v)


def _names(text: str) -> list[str]:
    """A comma list as given on the command line: names stripped, empty ones dropped."""
    return [s.strip() for s in text.split(",") if s.strip()]


def profile_sims(sims: list[str]) -> list[str]:
    """The profile's simulators: the first shardlet in --sims (S=1 when none is named), and kwok
    beside it when named, for the apiserver's side. One shardlet, since a profile is long and the
    full run's order (kwok,s1,s2,s4) puts the in-process shard first; `--sims s4` profiles S=4."""
    shard = next((s for s in sims if s != "kwok"), "s1")
    return [s for s in sims if s == "kwok"] + [shard]


def hold_sims(args: argparse.Namespace, sims: list[str]) -> list[str]:
    """--hold-sims, checked against --sims (lease-hold only runs simulators the run sets up)."""
    if args.hold_sims is None:
        return list(sims)
    want = _names(args.hold_sims)
    stray = [s for s in want if s not in sims]
    if stray or not want:
        raise SystemExit(f"bench: --hold-sims {args.hold_sims!r}: must name some of --sims ({','.join(sims)})")
    return [s for s in sims if s in want]


def resolve(args: argparse.Namespace) -> tuple[list[str], list[str], dict[str, Any]]:
    want = [ALIASES.get(s, s) for s in _names(args.scenarios)]
    scenarios = ORDER[:] if "all" in want else [s for s in ORDER if s in want]
    unknown = [s for s in want if s not in ORDER and s != "all"]
    if unknown:
        raise SystemExit(f"bench: unknown scenario(s) {', '.join(unknown)}; known: {', '.join(ORDER)}")
    sims = _names(args.sims) if args.sims else list(QUICK_SIMS if args.quick else FULL_SIMS)
    for s in sims:
        try:
            parse_sim(s)
        except ValueError as e:
            raise SystemExit(f"bench: {e}") from None
    sizes = dict(QUICK if args.quick else FULL)
    given: set[str] = set()
    for raw in args.sizes:
        for item in raw.split():
            k, eq, v = item.partition("=")
            k = k.strip().replace("-", "_")
            if not eq or k not in FULL:
                raise SystemExit(f"bench: --sizes {item!r}: expected KEY=VALUE with KEY one of {', '.join(FULL)}")
            given.add(k)
            try:
                if k in LISTS:
                    sizes[k] = [x.strip() if k in ("writer", "hold_writer") else int(x) for x in v.split(",") if x.strip()]
                else:
                    sizes[k] = float(v) if "." in v else int(v)
            except ValueError:
                raise SystemExit(f"bench: --sizes {item!r}: not a number") from None
    for k in ("writer", "hold_writer"):
        for lv in sizes[k]:
            try:
                parse_level(lv)
            except ValueError as e:
                raise SystemExit(f"bench: --sizes {k}={lv}: {e}") from None
    if float(sizes["hold_grow"]) <= 1:
        raise SystemExit(f"bench: --sizes hold_grow={sizes['hold_grow']}: must be above 1 (each size a multiple of the last)")
    # the other scenarios follow the largest ready size unless given
    for k in ("steady", "scaling", "profile"):
        if "nodes" in given and f"{k}_nodes" not in given:
            sizes[f"{k}_nodes"] = max(int(n) for n in sizes["nodes"])
        if "pods" in given and f"{k}_pods" not in given:
            sizes[f"{k}_pods"] = int(sizes["pods"])
    if args.hold is not None:
        sizes["hold"] = args.hold
    if args.window is not None:
        sizes["window"] = args.window
    if args.repeat < 1:
        raise SystemExit("bench: --repeat must be at least 1")
    return scenarios, sims, sizes


def estimate(scenarios: list[str], sims: list[str], sizes: dict[str, Any], repeat: int,
             held: list[str] | None = None) -> dict[str, float]:
    """A rough wall-clock guess on the 2-core box (creation ~250 nodes/s, ~200 pods/s); `held`: the
    simulators lease-hold searches (default all)."""
    def overhead(sim: str) -> float:
        return 15.0 + (25.0 if parse_sim(sim)[1] > 1 else 0.0)

    def work(n: float, p: float) -> float:
        return n / 250 + 2 * p / 150
    out: dict[str, float] = {}
    nodes = [int(v) for v in sizes["nodes"]]
    for sc in scenarios:
        t = 0.0
        if sc == "writer":
            t = repeat * (15 + sizes["writer_leases"] / 300 + len(sizes["writer"]) * (sizes["writer_duration"] + 8))
        for sim in sims:
            if sc == "ready":
                t += repeat * sum(overhead(sim) + work(n, sizes["pods"] if n == max(nodes) else 0) for n in nodes)
            elif sc == "scaling":
                t += repeat * (overhead(sim) + work(sizes["scaling_nodes"], sizes["scaling_pods"]))
            elif sc == "steady":
                t += repeat * (overhead(sim) + work(sizes["steady_nodes"], sizes["steady_pods"]) + sizes["settle"]
                               + sizes["window"])
            elif sc == "lease-hold" and (held is None or sim in held):
                # assume it breaks around 16k nodes (or at hold_max), plus one bisect
                # the scenario's own size steps (its module is loaded lazily: the estimate is arithmetic)
                from bench.scenarios import next_hold_size
                n = int(sizes["hold_start"])
                steps = [n]   # the first size always runs, even past 16k
                while (nxt := next_hold_size(n, float(sizes["hold_grow"]))) <= min(int(sizes["hold_max"]), 16000):
                    n = nxt
                    steps.append(n)
                t += sum(s / 250 + 30 + sizes["hold"] for s in steps) + 2 * overhead(sim) + steps[-1] / 170 + sizes["hold"]
                if sizes["hold_writer"]:   # after each held size: the writer levels, then a fresh cluster
                    t += len(steps) * (len(sizes["hold_writer"]) * (sizes["writer_duration"] + 8) + overhead(sim))
        if sc == "profile":
            t, shard = 0.0, profile_sims(sims)[-1]
            if sizes["profile_nodes"]:
                t += overhead(shard) + work(sizes["profile_nodes"], sizes["profile_pods"]) * 1.3 + sizes["profile_idle"]
                if "kwok" in sims:
                    t += overhead("kwok") + work(sizes["profile_nodes"], sizes["profile_pods"]) + sizes["profile_idle"]
            if sizes["profile_hold_nodes"]:   # ~110 nodes Ready/s on the 2-vCPU box, then settle and the window
                t += overhead(shard) + sizes["profile_hold_nodes"] / 110 + sizes["settle"] + sizes["profile_hold_s"] + 30
        out[sc] = round(t)
    return out


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.scenarios, self.sims, self.sizes = resolve(args)
        self.hold_sims = hold_sims(args, self.sims)
        self.t0 = time.time()
        host = socket.gethostname().split(".")[0] or "host"
        stamp = dt.datetime.now().strftime("%Y-%m-%dT%H%M")
        self.out_dir = Path(args.out)
        self.base = f"{stamp}-{host}" + ("-quick" if args.quick else "")
        self.json_path = self.out_dir / f"{self.base}.json"
        self.log_dir = self.out_dir / "logs" / self.base
        self.records: list[dict[str, Any]] = []
        self.data: dict[str, Any] = {}

    def log(self, msg: str) -> None:
        el = time.time() - self.t0
        print(f"[{el / 60:6.1f}m] {msg}", flush=True)

    def save(self, final: bool = False) -> None:
        from bench.stats import summarize

        self.data["records"] = self.records
        self.data["summary"] = summarize(self.records)
        self.data["meta"]["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds") if final else None
        self.data["meta"]["duration_s"] = round(time.time() - self.t0, 1)
        self.data["meta"]["loadavg_end"] = procs.loadavg()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.json_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.json_path)

    async def run(self) -> None:
        from bench.scenarios import CLUSTER_OPTIONS, SCENARIOS, Bench
        from shardlet.controlplane import toolchain

        bin_dir = toolchain.ensure(quiet=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        est = estimate(self.scenarios, self.sims, self.sizes, self.args.repeat, self.hold_sims)
        noise = procs.busy_others({os.getpid()}, 1.0)
        self.data = {
            "meta": {
                "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "quick": self.args.quick, "argv": sys.argv[1:], "scenarios": self.scenarios, "sims": self.sims,
                "hold_sims": self.hold_sims,
                "repeat": self.args.repeat, "sizes": self.sizes, "creator_concurrency": self.args.concurrency,
                "estimate_s": est, "hardware": sysinfo.hardware(), "versions": sysinfo.versions(bin_dir),
                "loadavg_start": procs.loadavg(), "busy_processes_at_start": noise,
                "flags": {
                    "cluster": CLUSTER_OPTIONS,
                    "apiserver": ["--max-requests-inflight=0", "--max-mutating-requests-inflight=0",
                                  "--enable-priority-and-fairness=false"],
                    "controllers": ["--kube-api-qps=5000", "--kube-api-burst=10000"],
                    "etcd": ["--unsafe-no-fsync", "--auto-compaction-mode=periodic", "--auto-compaction-retention=1m"],
                    "node_selection": f"annotation {SELECTOR}", "lease_duration_s": LEASE_SECONDS,
                    "stages": str(FAST_STAGES.relative_to(HERE.parent)),
                    "sims": {s: " ".join(argv(s, "K", "NAME", Path("BIN")))
                             .replace(sys.executable, "python").replace(str(FAST_STAGES), "FAST") for s in self.sims},
                },
            },
        }
        self.log(f"bench {self.base}: scenarios {', '.join(self.scenarios)}; simulators "
                 f"{', '.join(label(s) for s in self.sims)}; repeat {self.args.repeat}")
        self.log(f"estimated duration: {sum(est.values()) / 60:.0f} min ({', '.join(f'{k} {v / 60:.0f}m' for k, v in est.items())})")
        load = procs.loadavg()
        ncpu = os.cpu_count() or 1
        if load and load[0] > 0.5 * ncpu:
            busiest = ", ".join(f"{b['comm']} {b['cpu_pct']}%" for b in noise[:3])
            self.log(f"warning: load average {load[0]:.1f} on {ncpu} CPUs before starting: the numbers will be noisy"
                     + (f" (busiest now: {busiest})" if busiest else ""))
        bench = Bench(sizes=self.sizes, bin_dir=bin_dir, log_dir=self.log_dir, log=self.log,
                      concurrency=self.args.concurrency, code=self.data["meta"]["versions"]["shardlet_commit"])
        self.save()
        try:
            for sc in self.scenarios:
                fn = SCENARIOS[sc]
                t_sc = time.time()
                self.log(f"== {sc}")
                once = sc in ("lease-hold", "profile")
                for rep in range(1 if once else self.args.repeat):
                    if sc == "writer":
                        targets: list[str | None] = [None]
                    elif sc == "lease-hold":
                        targets = list(self.hold_sims)
                    elif sc == "profile":
                        targets = profile_sims(self.sims)
                    else:
                        targets = list(self.sims)
                    for sim in targets:
                        try:
                            self.records.extend(await fn(bench, sim, rep))
                        except asyncio.CancelledError:
                            self.records.append({"scenario": sc, "sim": sim, "repeat": rep, "size": {}, "m": {},
                                                 "x": {}, "error": "interrupted"})
                            raise
                        except Exception as e:   # a scenario bug must not end the run
                            self.records.append({"scenario": sc, "sim": sim, "repeat": rep, "size": {}, "m": {}, "x": {},
                                                 "error": f"{type(e).__name__}: {e}"})
                            self.log(f"  {sc} {sim}: crashed: {e}")
                        self.save()
                self.log(f"== {sc} done in {(time.time() - t_sc) / 60:.1f} min")
        finally:
            import shutil

            from bench.sims import RAY_TMPDIR

            shutil.rmtree(RAY_TMPDIR, ignore_errors=True)   # the private Ray's session logs
            self.data["meta"]["problems"] = bench.problems
            if bench.code_changed:
                self.data["meta"]["code_changed"] = bench.code_changed
            self.save(final=True)
            self.log(f"results: {self.json_path}")


def ensure_extra() -> None:
    """`./dev bench` installs only the 'test' extra: fetch the 'bench' one (plot, profiler) once."""
    import importlib.util
    import subprocess
    import tomllib

    from bench.profile import py_spy

    if importlib.util.find_spec("matplotlib") is not None and py_spy() is not None:
        return
    try:
        reqs = tomllib.loads((HERE.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]["bench"]
    except (OSError, KeyError, ValueError):
        return
    print(f"bench: installing the 'bench' extra ({', '.join(reqs)}) into {sys.prefix}", file=sys.stderr)
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", *reqs], timeout=600)
    if r.returncode != 0:
        print("bench: could not install it; running without the plot / profile", file=sys.stderr)


def main(argv_: list[str] | None = None) -> int:
    args = parse_args(argv_)
    if not args.no_install and not args.estimate:
        try:
            ensure_extra()
        except Exception as e:  # never let the convenience stop the benchmark
            print(f"bench: extra not installed ({e})", file=sys.stderr)
    if args.report is not None:
        from bench.report import newest_results, render

        path = newest_results(Path(args.out)) if args.report == "newest" else Path(args.report)
        if path is None:
            raise SystemExit(f"bench: no results in {args.out}")
        print(render(path, readme_path=README if Path(args.out).resolve() == RESULTS else None))
        return 0
    from shardlet import logs

    logs.configure("warning")   # the cluster and watch helpers' info/debug lines would drown the progress
    r = Runner(args)
    if args.estimate:
        est = estimate(r.scenarios, r.sims, r.sizes, args.repeat, r.hold_sims)
        print(json.dumps({"total_min": round(sum(est.values()) / 60, 1),
                          "per_scenario_min": {k: round(v / 60, 1) for k, v in est.items()}}, indent=1))
        return 0

    async def go() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None:
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        await r.run()
    try:
        asyncio.run(go())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted; partial results kept", file=sys.stderr)
    if not args.no_readme and r.json_path.exists():
        try:
            from bench.report import render

            print(render(r.json_path, readme_path=README if r.out_dir.resolve() == RESULTS else None))
        except Exception as e:  # the numbers are safe in the JSON; the report can be redone with --report
            print(f"bench: report failed ({type(e).__name__}: {e}); rerun with --report", file=sys.stderr)
    return 0
