"""The `shardlet` command: a thin layer that parses flags and calls into the packages.

Every failure a user can cause ends as one line on stderr and a non-zero exit, never a traceback.
A YAML file given with --config holds the same settings as the flags (long flag names, with
dashes or underscores), or kwok's documents (a KwokConfiguration and Stages, shardlet.kwokconfig);
flags given on the command line win.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml

from shardlet.controlplane import DEFAULT_FEATURE_GATES
from shardlet.errors import UserError
from shardlet.target import add_target, positive_int, resolve_kubeconfig

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# -- cluster ---------------------------------------------------------------------------------
def _cluster_up(args: argparse.Namespace) -> int:
    from shardlet.controlplane.cluster import Cluster, Options

    opts = Options(
        apiserver_port=args.apiserver_port,
        disable_qps_limits=args.disable_qps_limits,
        node_monitor_period=args.node_monitor_period,
        node_monitor_grace_period=args.node_monitor_grace_period,
        scheduler=not args.no_scheduler,
        controller_manager=not args.no_controller_manager,
        feature_gates=args.kube_feature_gates,
    )
    c = Cluster(args.name)
    c.up(opts, timeout=args.wait)
    if not args.no_kubeconfig_context:
        from shardlet.controlplane.userconfig import add_context

        path, ctx = add_context(args.name, c.server(), c.pki.ca_cert, c.pki.admin_cert, c.pki.admin_key,
                                c.dir / "user-kubeconfig.json")
        print(f"context {ctx} added to {path} (kubectl --context {ctx})", file=sys.stderr)
    if args.shards is not None and args.shards > 0:
        from shardlet.runner import start_background

        start_background(c, shards=args.shards, profile=args.profile, lease_duration=args.lease_duration,
                         extra=["--node-metrics"] if args.node_metrics else None)
        _wait_runner(args.name, args.wait)
    print(c.kubeconfig)
    return 0


def _wait_runner(name: str, timeout: float) -> None:
    import json
    import time
    import urllib.request

    from coordinator.endpoint import run_file
    from shardlet.controlplane.cluster import Cluster

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Cluster(name).running().get("shardlet", False):
            raise UserError(f"cluster {name!r}: shardlet exited; see {Cluster(name).log_dir / 'shardlet.log'}")
        try:
            url = json.loads(run_file(name).read_text())["url"]
            with urllib.request.urlopen(url + "/status", timeout=2) as r:
                if r.status == 200:
                    return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.3)
    raise UserError(f"cluster {name!r}: shardlet not ready after {timeout:.0f}s")


def _cluster_down(args: argparse.Namespace) -> int:
    from shardlet.controlplane.cluster import Cluster
    from shardlet.controlplane.userconfig import remove_context

    c = Cluster(args.name)
    changed = remove_context(args.name, c.dir / "user-kubeconfig.json")
    stopped = c.down()
    print(f"cluster {args.name} down ({', '.join(stopped) or 'nothing was running'})"
          + (f"; context shardlet-{args.name} removed from {changed}" if changed else ""))
    return 0


def _cluster_list(args: argparse.Namespace) -> int:
    from shardlet.controlplane.cluster import Cluster

    for n in Cluster.names():
        c = Cluster(n)
        run = c.running()
        state = "up" if all(run.values()) else "degraded" if any(run.values()) else "stopped"
        print(f"{n}\t{state}\t{c.server()}\t{c.kubeconfig}")
    return 0


def _cluster_kubeconfig(args: argparse.Namespace) -> int:
    from shardlet.controlplane.cluster import Cluster

    c = Cluster(args.name)
    c.state()
    print(c.kubeconfig)
    return 0


def _kubectl(args: argparse.Namespace) -> int:
    from shardlet.controlplane import toolchain

    kc = resolve_kubeconfig(args)
    argv = list(args.args)
    if argv and argv[0] == "--":
        argv = argv[1:]
    exe = str(toolchain.binary("kubectl"))
    env = dict(os.environ)
    if kc:
        env["KUBECONFIG"] = kc
    os.execve(exe, [exe, *argv], env)


def _toolchain(args: argparse.Namespace) -> int:
    from shardlet.controlplane import toolchain

    print(toolchain.ensure())
    return 0


# -- parser ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="shardlet", description="A sharded fake kubelet: plays every kubelet of a "
                "cluster's fake nodes, driven by kwok-compatible Stages.")
    p.add_argument("--config", help="YAML file with the same settings as the flags (flags win)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="log level (default: %(default)s)")
    p.add_argument("--log-format", default="console", choices=["console", "json"],
                   help="structlog output: human console lines or JSON (default: %(default)s)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    cl = sub.add_parser("cluster", help="a local control plane (etcd, apiserver, controllers)")
    csub = cl.add_subparsers(dest="cluster_command", required=True, parser_class=_Parser, metavar="ACTION")
    up = csub.add_parser("up", help="start a named local cluster and print its kubeconfig path")
    add_target(up)
    up.add_argument("--apiserver-port", type=positive_int, default=0,
                    help="kube-apiserver port on 127.0.0.1 (default: a free port)")
    up.add_argument("--disable-qps-limits", action="store_true",
                    help="lift apiserver in-flight limits and controller QPS, like kwokctl's flag")
    up.add_argument("--node-monitor-period", default="5s",
                    help="kube-controller-manager --node-monitor-period (default: %(default)s)")
    up.add_argument("--node-monitor-grace-period", default="50s",
                    help="how long a node's lease may be stale before NotReady (default: %(default)s)")
    up.add_argument("--kube-feature-gates", default=DEFAULT_FEATURE_GATES, metavar="K=V,...",
                    help="kube-apiserver --feature-gates, like kwokctl's flag; the default turns on the "
                         "server-side shard filter shardlet's generic controllers use (default: %(default)s)")
    up.add_argument("--no-scheduler", action="store_true", help="do not start kube-scheduler")
    up.add_argument("--no-controller-manager", action="store_true",
                    help="do not start kube-controller-manager")
    up.add_argument("--shards", type=positive_int, default=1,
                    help="start shardlet with this many shards against the cluster; 0: none (default: %(default)s)")
    up.add_argument("--profile", default="fast", help="built-in stage profile(s), comma separated: fast, general, chaos, heartbeat, volume")
    up.add_argument("--lease-duration", type=positive_int, default=40,
                    help="node lease duration in seconds; renewed every quarter (default: %(default)s)")
    up.add_argument("--node-metrics", action="store_true",
                    help="shardlet serves kwok's node resource metrics (/metrics/nodes/NODE/metrics/resource on "
                         "its status endpoint), like kwokctl's --enable-metrics-server")
    up.add_argument("--wait", type=float, default=180.0, help="seconds to wait for readiness")
    up.add_argument("--no-kubeconfig-context", action="store_true",
                    help="do not add the context shardlet-NAME to $KUBECONFIG (or ~/.kube/config); "
                         "'cluster down' removes it")
    up.set_defaults(func=_cluster_up)
    down = csub.add_parser("down", help="stop every process of a local cluster and delete its files")
    add_target(down)
    down.set_defaults(func=_cluster_down)
    ls = csub.add_parser("list", help="list local clusters")
    ls.set_defaults(func=_cluster_list)
    kc = csub.add_parser("kubeconfig", help="print the kubeconfig path of a local cluster")
    add_target(kc)
    kc.set_defaults(func=_cluster_kubeconfig)

    k = sub.add_parser("kubectl", help="run the pinned kubectl against a cluster: shardlet kubectl -- ARGS")
    add_target(k)
    k.add_argument("args", nargs=argparse.REMAINDER, help="arguments for kubectl")
    k.set_defaults(func=_kubectl)

    t = sub.add_parser("toolchain", help="build (once) and print the directory of the pinned binaries")
    t.set_defaults(func=_toolchain)

    for register in _EXTENSIONS:
        register(sub)
    return p


# Other modules add their subcommands here, so the CLI stays a list of thin handlers.
_EXTENSIONS: list[Callable[[Any], None]] = []


def _apply_config(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if not known.config:
        return
    try:
        docs = [d for d in yaml.safe_load_all(Path(known.config).read_text()) if d is not None]
    except OSError as e:
        raise UserError(f"--config {known.config}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise UserError(f"--config {known.config}: not valid YAML ({str(e).splitlines()[0]})") from None
    names = _flag_names(parser)
    if any(isinstance(d, dict) and "kind" in d for d in docs):
        data = _kwok_documents(docs, known.config)
    elif len(docs) > 1 or (docs and not isinstance(docs[0], dict)):
        raise UserError(f"--config {known.config}: must be one mapping of flag names to values, or kwok's "
                        "documents (KwokConfiguration, Stage)")
    else:
        data = docs[0] if docs else {}
    unknown = sorted(str(k) for k in data if str(k).replace("_", "-") not in names)
    if unknown:
        raise UserError(f"--config {known.config}: {', '.join(unknown)}: no such flag")
    # a key is any of a flag's names (kwok's among them), with - or _
    defaults = {names[str(k).replace("_", "-")]: v for k, v in data.items()}
    _set_defaults_everywhere(parser, defaults)


def _kwok_documents(docs: list[Any], path: str) -> dict[str, Any]:
    """kwok's --config: the KwokConfiguration's options as flags, its Stages as a stage file."""
    from shardlet.kwokconfig import KWOK_CONFIG, from_kwok_configuration

    flags: dict[str, Any] = {}
    stages = False
    for i, d in enumerate(docs):
        where = f"--config {path} (document {i + 1})"
        if not isinstance(d, dict) or "kind" not in d:
            raise UserError(f"{where}: every document needs apiVersion and kind once one has them "
                            "(shardlet's own flags go in a file of their own)")
        kind = (d.get("apiVersion"), d.get("kind"))
        if kind == KWOK_CONFIG:
            more, warnings = from_kwok_configuration(d, where)
            flags.update(more)
            for w in warnings:
                print(f"shardlet: warning: {w}", file=sys.stderr)
        elif d.get("kind") == "Stage":
            stages = True
        elif d.get("kind") in ("Metric", "ResourceUsage", "ClusterResourceUsage"):
            raise UserError(f"{where}: {d['kind']}: give these with --metric-file")
        else:
            raise UserError(f"{where}: {d.get('apiVersion')}/{d.get('kind')}: not read from --config by shardlet "
                            "(apply it to the cluster)")
    if stages:
        # kwok plays exactly its config's Stages (no default set, no Stage objects); the stage
        # loader skips the file's other documents
        if flags.get("stages-from") == "cluster":
            raise UserError(f"--config {path}: Stage documents and enableCRDs: [Stage]: kwok refuses both, choose one")
        flags.update({"stage-file": [path], "profile": "none", "stages-from": "config"})
    return flags


def _flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Every long flag name (without --) of the parser and its subcommands -> its dest."""
    out: dict[str, str] = {}
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sp in a.choices.values():
                out.update(_flag_names(sp))
        for opt in a.option_strings:
            if opt.startswith("--"):
                out[opt[2:]] = a.dest
    return out


def _set_defaults_everywhere(parser: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    dests = {a.dest for a in parser._actions}
    parser.set_defaults(**{k: v for k, v in defaults.items() if k in dests})
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sp in a.choices.values():
                _set_defaults_everywhere(sp, defaults)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _load_extensions()
    parser = build_parser()
    try:
        _apply_config(parser, argv)
        args = parser.parse_args(argv)
        from shardlet import logs

        logs.configure(args.log_level, args.log_format)
        rc: int = args.func(args)
        return rc
    except UserError as e:
        print(f"shardlet: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _load_extensions() -> None:
    if _EXTENSIONS:
        return
    from shardlet import runner, scale, statuscmd

    _EXTENSIONS.extend([runner.register_cli, scale.register_cli, statuscmd.register_cli])


if __name__ == "__main__":
    sys.exit(main())
