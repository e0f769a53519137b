"""`shardlet run`: serve a cluster's fake nodes, in this process (one shard) or over Ray actors."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from shardlet import aio, heap
from shardlet.controllers.nodes import FAKE_ANNOTATION
from shardlet.errors import UserError
from shardlet.kubeletserver import listen_address
from shardlet.satoken import load_rules
from shardlet.shard import ShardConfig

if TYPE_CHECKING:
    from shardlet.controlplane.cluster import Cluster

log = structlog.get_logger("shardlet.runner")
CRD_DIR = Path(__file__).with_name("crds")


def go_bool(v: str) -> bool:
    """A Go boolean flag's value (strconv.ParseBool)."""
    if v in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if v in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise argparse.ArgumentTypeError(f"{v!r} is not a boolean (true or false)")


def add_shard_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to manage")
    # kwok's flag names are aliases (its Go booleans take =true/=false too): a kwok command line
    # runs with one word changed
    g.add_argument("--manage-all-nodes", nargs="?", const=True, default=False, type=go_bool, metavar="BOOL",
                   help="play kubelet for every node")
    g.add_argument("--node-annotation-selector", "--manage-nodes-with-annotation-selector", default=FAKE_ANNOTATION,
                   help="manage nodes whose annotations match k=v[,k2=v2] (default: %(default)s)")
    g.add_argument("--node-label-selector", "--manage-nodes-with-label-selector", default="",
                   help="manage nodes matching this label selector (sent to the apiserver)")
    g = p.add_argument_group("behaviour")
    g.add_argument("--profile", default=None,
                   help="built-in stage profiles, comma separated: fast, general, chaos, heartbeat, volume (default: fast); "
                        "'none' for only --stage-file and Stage objects")
    g.add_argument("--stage-file", action="append", default=[],
                   help="YAML file of Stage objects (repeatable); see --stages-from")
    g.add_argument("--stages-from", choices=["both", "config", "cluster"], default="both",
                   help="which Stages are played: 'config' only --profile and --stage-file (kwok with Stages in "
                        "--config); 'cluster' exactly the Stage objects in the cluster, no profile (kwok with "
                        "--enable-crds=Stage); 'both' the command line's, where a Stage object of the same name "
                        "replaces one and others are added (default: %(default)s)")
    g.add_argument("--no-stage-crd", action="store_true", help="the same as --stages-from config")
    g.add_argument("--lease-duration", "--node-lease-duration-seconds", type=int, default=40,
                   help="node lease duration in seconds, renewed every quarter; 0: no leases (default: %(default)s)")
    g.add_argument("--id", default=None,
                   help="this instance's lease holder identity, unique per instance (default: HOSTNAME_UUID, new "
                        "each start, as kwok's). Another holder's lease is taken over only once it expired; give "
                        "a stable id (e.g. the pod name) to take this instance's own leases back at once after a "
                        "restart. Ray shards hold theirs as ID/SHARD")
    g.add_argument("--cidr", default="10.0.0.0/24", help="pod CIDR for nodes without spec.podCIDR (default: %(default)s)")
    g.add_argument("--node-ip", default="127.0.0.1", help="value of the NodeIP template function (default: %(default)s)")
    g.add_argument("--node-name", default="",
                   help="value of NodeName: the nodes' Hostname address (default: none, as the apiserver then "
                        "reaches the kubelet server at the InternalIP)")
    g.add_argument("--node-port", type=int, default=10250,
                   help="the port nodes advertise (NodePort) and, without --server-address, where the kubelet "
                        "server listens at --node-ip; 0: no kubelet server (default: %(default)s)")
    g.add_argument("--server-address", default="", metavar="HOST:PORT",
                   help="where the kubelet server (logs, healthz) listens, as kwok's flag; port 0 picks a free "
                        "one, which the nodes then advertise")
    g.add_argument("--tls-cert-file", help="the kubelet server's serving certificate (default: self-signed)")
    g.add_argument("--tls-private-key-file", help="its key")
    g.add_argument("--kubelet-client-ca", metavar="FILE",
                   help="require a client certificate signed by this CA on the kubelet server (the "
                        "apiserver's --kubelet-client-certificate)")
    g.add_argument("--pod-watch", choices=["cluster", "node"], default=None,
                   help="one cluster-wide pod watch filtered by node (kwok's way), or one field-selected watch "
                        "per owned node (default: cluster with one shard, node with several)")
    g.add_argument("--buckets", type=int, default=None,
                   help="with several shards: label managed nodes with one of N stable buckets (a hash of the "
                        "name) and let each shard watch only its buckets; 0 has every shard watch every node and "
                        "keep its own (1024 buckets, unlabelled). The coordinator balances node counts by moving "
                        "whole buckets (default: 1024)")
    g.add_argument("--concurrency", type=int, default=64, help="stage writes in flight per shard (default: %(default)s)")
    g = p.add_argument_group("serving")
    g.add_argument("--shards", type=int, default=1,
                   help="number of shards; 1 runs in this process, more run as Ray actors (default: %(default)s)")
    g.add_argument("--ray-address", default=None,
                   help="join this Ray cluster (e.g. auto, ray://host:10001) instead of starting a private one; "
                        "RAY_ADDRESS alone is not enough (under `ray job submit`, pass --ray-address auto)")
    g.add_argument("--keep-shards", action="store_true",
                   help="with --ray-address: start the shards detached, so that they outlive this coordinator "
                        "(SIGTERM, `ray job stop`, a crash) and keep serving; a coordinator started later with "
                        "the same --name re-adopts them, and 'shardlet stop --ray-address ADDR --name NAME' "
                        "stops them. Without it the coordinator stops its shards when it stops, and Ray ends "
                        "them should it die")
    g.add_argument("--shard-cpus", type=float, default=0.0,
                   help="CPUs each shard actor reserves in Ray's scheduler (default: %(default)s)")
    g.add_argument("--status-port", type=int, default=0,
                   help="coordinator /status, /metrics and /shards on 127.0.0.1 (default: any free port)")
    g.add_argument("--status-addr", default="127.0.0.1",
                   help="bind address of the coordinator endpoint (default: %(default)s; 0.0.0.0 in a pod)")
    g.add_argument("--metrics-port", type=int, default=-1,
                   help="serve Prometheus metrics on this port (0: any free port, -1: off; default: %(default)s)")
    g.add_argument("--metrics-addr", default="127.0.0.1", help="metrics bind address (default: %(default)s)")
    g.add_argument("--node-metrics", action="store_true",
                   help="serve kwok's node resource metrics at /metrics/nodes/NODE/metrics/resource on the status "
                        "endpoint, from Metric, ResourceUsage and ClusterResourceUsage objects (kwok's "
                        "metrics-resource and usage-from-annotation are built in); keeps a slim copy of each pod")
    g.add_argument("--metric-file", action="append", default=[],
                   help="YAML file of Metric/ResourceUsage/ClusterResourceUsage objects (repeatable; "
                        "implies --node-metrics)")
    g.add_argument("--no-token-exchange", action="store_true",
                   help="with a client-certificate kubeconfig, keep using the certificate for every request "
                        "even where the ServiceAccount kube-system/shardlet exists (by default the hot-path "
                        "requests then carry its short-lived token, which the apiserver checks more cheaply)")
    g.add_argument("--create-rbac", action="store_true",
                   help="create (or update) that ServiceAccount and its least-privilege roles if missing, "
                        "as 'shardlet rbac apply' does ('shardlet rbac delete' removes them); never touches "
                        "an object of the same name that shardlet does not manage")
    g.add_argument("--rbac-extra-rules", metavar="FILE",
                   help="a YAML list of RBAC rules that --create-rbac and 'rbac apply' add to the account's "
                        "ClusterRole (Stages on other kinds, when shards run on its token), like the chart's "
                        "rbac.extraRules")
    g.add_argument("--shard-kubeconfig", metavar="PATH",
                   help="sharded (Ray): each shard reads the kubeconfig at PATH on its own host (place it on every "
                        "Ray host) instead of the short-lived token of kube-system/shardlet that the coordinator "
                        "pushes by default; the kubeconfig given to run never reaches a shard")
    g.add_argument("--no-server-shard-filter", action="store_true",
                   help="sharded: filter the objects of generic Stage controllers here instead of asking the "
                        "apiserver for this shard's slice with a shardSelector (Kubernetes 1.36 "
                        "ShardedListAndWatch; an apiserver without the gate is detected and filtered here anyway)")
    g.add_argument("--start-timeout", type=float, default=300.0,
                   help="give up (exit 1, saying what it waited for) if the first lists of Stages, nodes "
                        "and pods have not completed after this many seconds (default: %(default)s)")
    g.add_argument("--release-leases-on-exit", action="store_true",
                   help="on SIGTERM clear holderIdentity of every held lease instead of letting them expire")


def shard_config(args: argparse.Namespace, name: str = "shardlet-0") -> ShardConfig:
    stages_from = "config" if args.no_stage_crd else args.stages_from
    if args.no_stage_crd and args.stages_from == "cluster":
        raise UserError("--no-stage-crd and --stages-from cluster: choose one")
    if stages_from == "cluster":
        # kwok refuses Stages from its --config and the Stage CRD at once; so does this choice
        if args.stage_file or args.profile is not None:
            flag = f"--stage-file {args.stage_file[0]}" if args.stage_file else f"--profile {args.profile}"
            raise UserError(f"{flag}: not played with --stages-from cluster (use --stages-from both)")
        profile = ""
    else:
        profile = "fast" if args.profile is None else args.profile
    profiles = tuple(p.strip() for p in profile.split(",") if p.strip() and p.strip() != "none")
    for flag, files in (("--stage-file", args.stage_file), ("--metric-file", args.metric_file)):
        for f in files:
            if not Path(f).is_file():
                raise UserError(f"{flag} {f}: no such file")
    sharded = args.shards > 1 or bool(args.ray_address)
    if args.lease_duration < 0:
        raise UserError(f"--lease-duration {args.lease_duration}: must be 0 or more")
    try:
        listen_address(args.server_address, args.node_ip, args.node_port)
    except ValueError as e:
        raise UserError(f"--server-address {e}") from None
    if (args.tls_cert_file is None) != (args.tls_private_key_file is None):
        raise UserError("--tls-cert-file and --tls-private-key-file: give both or neither")
    instance = args.id if args.id is not None else identity()
    if not instance or any(c.isspace() for c in instance) or "/" in instance:
        raise UserError(f"--id {instance!r}: must be non-empty, without spaces or '/'")
    return ShardConfig(
        name=name, holder=instance, instance=instance, manage_all_nodes=args.manage_all_nodes,
        node_annotation_selector=args.node_annotation_selector,
        node_label_selector=args.node_label_selector, lease_duration=args.lease_duration,
        profiles=profiles, stage_files=tuple(args.stage_file), watch_stages=stages_from != "config",
        cidr=args.cidr, node_ip=args.node_ip, node_name=args.node_name, node_port=args.node_port,
        server_address=args.server_address,
        tls_cert_file=args.tls_cert_file, tls_private_key_file=args.tls_private_key_file,
        kubelet_client_ca=args.kubelet_client_ca,
        stage_concurrency=args.concurrency,
        pod_watch=args.pod_watch or ("node" if sharded else "cluster"),
        buckets=args.buckets if args.buckets is not None else (0 if not sharded else 1024),
        metrics_port=args.metrics_port, metrics_addr=args.metrics_addr,
        node_metrics=bool(args.node_metrics or args.metric_file), metric_files=tuple(args.metric_file),
        token_exchange=not args.no_token_exchange, create_rbac=args.create_rbac,
        rbac_extra_rules=tuple(load_rules(args.rbac_extra_rules)),
        server_shard_filter=not args.no_server_shard_filter,
    )


def identity() -> str:
    """kwok's Identity(): the host name and a uuid, so two processes on one host differ."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


def config_to_dict(cfg: ShardConfig) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in fields(cfg)}


async def run_single(cfg: ShardConfig, kubeconfig: str | None, release_leases: bool = False,
                     run_name: str = "shardlet", status_port: int = 0, status_addr: str = "127.0.0.1",
                     start_timeout: float = 300.0) -> None:
    from shardlet.api import ApiError, Kube
    from shardlet.shard import Shard

    kube = Kube.from_kubeconfig(kubeconfig)
    try:
        await kube.get("/version")
    except ApiError as e:
        await kube.close()
        raise UserError(f"apiserver {kube.base}: {e}") from None
    except OSError as e:
        await kube.close()
        raise UserError(f"apiserver {kube.base}: unreachable ({e.strerror or e})") from None
    from prometheus_client import generate_latest

    from coordinator.endpoint import Endpoint

    try:
        shard = Shard(kube, cfg)
    except BaseException:
        await kube.close()
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # a start that cannot finish (a 403 on the node list, an apiserver that went away) must still
    # stop on SIGTERM/SIGINT, and give up with what it waits for after start_timeout
    starting = asyncio.create_task(shard.start())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopping}, timeout=start_timeout, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not starting.done():
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        blocker = shard.start_blocker()
        await shard.stop()
        if stop.is_set():
            log.info("stopped_while_starting", shard=cfg.name, waiting_for=blocker)
            return
        raise UserError(f"shard {cfg.name}: not ready after {start_timeout:.0f}s: {blocker}")
    starting.result()

    async def status() -> dict[str, Any]:
        st = shard.status()
        st.update(pid=os.getpid(), ray_node=None, alive=True, epoch=0)
        return {"coordinator": {"epoch": 0, "shards": 1, "mode": "in-process"}, "shards": [st]}

    async def metrics() -> bytes:
        return bytes(generate_latest(shard.metrics.registry))
    async def node_metrics(path: str) -> tuple[int, str]:
        return shard.node_metrics(path)
    async def metric_targets() -> list[tuple[str, str]]:
        return shard.metric_targets()
    async def fail_task(prefix: str) -> list[str]:
        return shard.supervisor.fail(prefix, "injected by POST /debug/fail-task")
    ep = Endpoint(status, metrics, node_metrics=node_metrics, metric_targets=metric_targets, fail_task=fail_task)
    port = await ep.start(run_name, status_port, status_addr)
    log.info("coordinator_ready", name=run_name, shards=1, status=f"http://127.0.0.1:{port}/status")
    await stop.wait()
    log.info("shard_stopping", shard=cfg.name)
    await shard.stop(release_leases=release_leases)
    await ep.stop()


def _run(args: argparse.Namespace) -> int:
    from shardlet.target import resolve_kubeconfig

    kubeconfig = resolve_kubeconfig(args)
    if args.shards < 1:
        raise UserError(f"--shards {args.shards}: must be at least 1")
    if args.start_timeout <= 0:
        raise UserError(f"--start-timeout {args.start_timeout}: must be more than 0")
    if args.keep_shards and not args.ray_address:
        raise UserError("--keep-shards: only with --ray-address (a private Ray ends with its coordinator)")
    if os.environ.get("RAY_ADDRESS") and not args.ray_address:
        log.warning("ray_address_ignored", RAY_ADDRESS=os.environ["RAY_ADDRESS"],
                    reason="pass --ray-address auto to join that Ray cluster")
    if args.shards == 1 and not args.ray_address:
        heap.tune()
        try:
            aio.run(run_single(shard_config(args), kubeconfig, args.release_leases_on_exit,
                               args.name, args.status_port, args.status_addr, args.start_timeout))
        except (OSError, ValueError) as e:
            raise UserError(f"run: {e}") from None
        return 0
    from coordinator import driver
    from coordinator.messages import pack

    # The shard's code is imported here, before joining Ray: under `ray job submit` this driver
    # runs out of the job's working_dir, which Ray may delete once it counts no worker using it
    # (seen in CI: FileNotFoundError for shardlet/actor.py between ray.init and the first actor).
    from shardlet.actor import ShardActor
    from shardlet.satoken import shard_token_source

    cfg = config_to_dict(shard_config(args))
    # The shards never get the user's credentials (shardlet.actor): a kubeconfig each reads on
    # its own host, the pod's own account in a cluster, or else a token the coordinator pushes
    credentials = None
    shard_kubeconfig = args.shard_kubeconfig
    if shard_kubeconfig is None and kubeconfig:
        credentials = shard_token_source(kubeconfig, create=args.create_rbac,
                                         extra_rules=load_rules(args.rbac_extra_rules))
        cfg["create_rbac"] = False   # the coordinator has done it
    return driver.run(name=args.name, shards=args.shards, config=pack(cfg), credentials=credentials,
                      kubeconfig=shard_kubeconfig, actor=ShardActor,
                      ray_address=args.ray_address, status_port=args.status_port, status_addr=args.status_addr,
                      release_leases=args.release_leases_on_exit, shard_cpus=args.shard_cpus,
                      keep_shards=args.keep_shards)


def _stop(args: argparse.Namespace) -> int:
    from coordinator import driver

    stopped = driver.stop_detached(args.name, args.ray_address, release_leases=args.release_leases)
    print(f"{len(stopped)} shard(s) of {args.name} stopped" + (f": {', '.join(stopped)}" if stopped else ""))
    return 0


def _rbac(args: argparse.Namespace) -> int:
    from shardlet.api import Kube
    from shardlet.satoken import delete_account, ensure_account
    from shardlet.target import resolve_kubeconfig

    async def go() -> list[str]:
        kube = Kube.from_kubeconfig(resolve_kubeconfig(args))
        try:
            if args.action == "apply":
                made = await ensure_account(kube, load_rules(args.rbac_extra_rules))
                return [f"{what}: created" for what in made] or ["up to date"]
            return await delete_account(kube)
        finally:
            await kube.close()
    for line in aio.run(go()):
        print(line)
    return 0


def register_cli(sub: Any) -> None:
    p = sub.add_parser("run", help="play kubelet for a cluster's fake nodes until stopped (SIGTERM)")
    from shardlet.target import add_target

    add_target(p)
    add_shard_flags(p)
    # after `run` too, where a kwok user puts it (`kwok --config F` -> `shardlet run --config F`)
    p.add_argument("--config", help="YAML file: shardlet's flags, or kwok's KwokConfiguration and Stages")
    p.set_defaults(func=_run)
    r = sub.add_parser("rbac", help="create or delete the ServiceAccount kube-system/shardlet and its "
                                    "least-privilege roles (the token a client-certificate run uses)")
    r.add_argument("action", choices=["apply", "delete"])
    r.add_argument("--rbac-extra-rules", metavar="FILE",
                   help="a YAML list of RBAC rules added to the ClusterRole (Stages on other kinds)")
    add_target(r)
    r.set_defaults(func=_rbac)
    s = sub.add_parser("stop", help="stop the shards a 'run --keep-shards' left on a Ray cluster (its coordinator "
                                    "gone or not)")
    s.add_argument("--ray-address", required=True, help="the Ray cluster (e.g. auto, 127.0.0.1:6379)")
    s.add_argument("--name", default="shardlet", help="the run's --name (default: %(default)s)")
    s.add_argument("--release-leases", action="store_true", help="clear holderIdentity of their leases first")
    s.set_defaults(func=_stop)


def install_crds(cluster: Cluster) -> None:
    from shardlet.controlplane import toolchain

    subprocess.run([str(toolchain.binary("kubectl")), f"--kubeconfig={cluster.kubeconfig}", "apply",
                    "-f", str(CRD_DIR)], check=True, capture_output=True)


def kubelet_server_args(cluster: Cluster) -> list[str]:
    """The kubelet server beside a local cluster: on loopback at a free port (a real kubelet may
    hold 10250), certified by the cluster's CA, accepting only the apiserver's client certificate."""
    k = cluster.pki
    return ["--server-address", "127.0.0.1:0", "--tls-cert-file", str(k.kubelet_serving_cert),
            "--tls-private-key-file", str(k.kubelet_serving_key), "--kubelet-client-ca", str(k.ca_cert)]


def start_background(cluster: Cluster, *, shards: int, profile: str, lease_duration: int,
                     extra: list[str] | None = None) -> None:
    """Start `shardlet run` beside a local cluster; `cluster down` stops it with the rest."""
    install_crds(cluster)
    logf = open(cluster.log_dir / "shardlet.log", "ab")
    # --create-rbac: this cluster is shardlet's own, and the token spares its apiserver CPU; its
    # account may do anything here, so that Ray shards on its token play Stages on any kind
    rules = cluster.dir / "shardlet-rbac-rules.yaml"
    rules.write_text('- {apiGroups: ["*"], resources: ["*"], verbs: ["*"]}\n')
    cmd = [sys.executable, "-m", "shardlet.cli", "run", "--name", cluster.name, "--shards", str(shards),
           "--profile", profile, "--lease-duration", str(lease_duration), "--metrics-port", "0",
           "--create-rbac", "--rbac-extra-rules", str(rules), *kubelet_server_args(cluster), *(extra or [])]
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    logf.close()
    cluster.register_process("shardlet", proc)
    log.info("shardlet_started", cluster=cluster.name, pid=proc.pid, shards=shards,
             log=str(cluster.log_dir / "shardlet.log"))
