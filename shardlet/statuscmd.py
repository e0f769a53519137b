"""`shardlet status` and `shardlet shards scale N`: talk to a running coordinator's endpoint."""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from typing import Any

from shardlet.errors import UserError


def _endpoint(args: argparse.Namespace) -> str:
    if args.coordinator:
        return str(args.coordinator).rstrip("/")
    from coordinator.endpoint import run_file

    f = run_file(args.name)
    try:
        return str(json.loads(f.read_text())["url"])
    except (OSError, ValueError, KeyError):
        raise UserError(f"no shardlet running for --name {args.name} (no {f}); start it with "
                        f"'shardlet cluster up --name {args.name}' or 'shardlet run --name {args.name}'") from None


def _call(url: str, method: str = "GET", timeout: float = 120) -> Any:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            msg = json.loads(e.read()).get("error", e.reason)
        except ValueError:
            msg = e.reason
        raise UserError(f"{url}: {msg}") from None
    except (urllib.error.URLError, OSError) as e:
        raise UserError(f"coordinator at {url} unreachable ({getattr(e, 'reason', e)}); is 'shardlet run' still running?") from None


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def _status(args: argparse.Namespace) -> int:
    st = _call(_endpoint(args) + "/status")
    if args.output == "json":
        print(json.dumps(st, indent=2, sort_keys=True))
        return 0
    c = st["coordinator"]
    print(f"coordinator: mode={c.get('mode')} epoch={c.get('epoch')} shards={c.get('shards')}"
          + (f" imbalance={c['imbalance']:.1%} rebalances={c.get('rebalances', 0)}" if c.get('imbalance') is not None else ""))
    cols = ["shard", "ray_node", "pid", "nodes", "pods", "watch_events", "transitions",
            "lease_lag_p50", "lease_lag_p99", "alive", "last_error"]
    rows = [[_fmt(s.get(k)) if k != "ray_node" else _fmt(s.get(k))[:12] for k in cols] for s in st["shards"]]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(cols)]
    print("  ".join(h.upper().ljust(w) for h, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    for s in st["shards"]:
        # generic Stage controllers: who drops other shards' objects (server: shardSelector)
        if s.get("shard_filter"):
            print(f"{s.get('shard')}: " + "; ".join(f"{r} filtered by {f}" for r, f in sorted(s["shard_filter"].items())))
        if s.get("task_restarts"):   # loops that failed unexpectedly and were restarted
            print(f"{s.get('shard')}: restarted " + ", ".join(f"{k} x{n}" for k, n in sorted(s["task_restarts"].items()))
                  + "; latest: " + "; ".join(f"{t}: {e}" for t, e in (s.get("task_errors") or {}).items()))
    return 0


def _shards_scale(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise UserError(f"shards scale {args.n}: must be at least 1")
    res = _call(f"{_endpoint(args)}/shards?n={args.n}", method="POST", timeout=600)
    print(f"shards: {res['shards']} at epoch {res['epoch']} (handoff took {res['seconds']:.2f}s)")
    return 0


def register_cli(sub: Any) -> None:
    def target(p: argparse.ArgumentParser) -> None:
        p.add_argument("--name", default="shardlet", help="the --name given to 'cluster up' or 'run' (default: %(default)s)")
        p.add_argument("--coordinator", default=None, help="coordinator URL instead of looking it up by --name")

    p = sub.add_parser("status", help="per shard: Ray node, pid, nodes, pods, watch events, lease lag, errors")
    target(p)
    p.add_argument("-o", "--output", choices=["table", "json"], default="table", help="output format")
    p.set_defaults(func=_status)
    s = sub.add_parser("shards", help="change the number of shards of a running shardlet")
    ssub = s.add_subparsers(dest="shards_command", required=True, metavar="ACTION")
    sc = ssub.add_parser("scale", help="rebalance to N shards with a fenced two-phase handoff")
    sc.add_argument("n", type=int, help="number of shards")
    target(sc)
    sc.set_defaults(func=_shards_scale)
