"""A named local cluster: etcd, kube-apiserver, kube-controller-manager and kube-scheduler on
127.0.0.1, the way `kwokctl create cluster --runtime binary` runs them.

Each cluster lives in its own directory (PKI, etcd data, logs, kubeconfig, state.json), so
several can run side by side on free ports. Every process is started in its own session so
that `down` can end it with everything it spawned.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog
import yaml

from shardlet.controlplane import DEFAULT_FEATURE_GATES, pki, toolchain
from shardlet.errors import UserError

log = structlog.get_logger("shardlet.cluster")

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


def home() -> Path:
    base = os.environ.get("SHARDLET_HOME") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "shardlet")
    return Path(base) / "clusters"


@dataclass
class Options:
    apiserver_port: int = 0                    # 0: any free port
    disable_qps_limits: bool = False
    node_monitor_period: str = "5s"
    node_monitor_grace_period: str = "50s"     # kube-controller-manager's default since 1.32
    max_requests_inflight: int = 400
    max_mutating_requests_inflight: int = 200
    kube_api_qps: int = 20
    kube_api_burst: int = 30
    scheduler: bool = True
    controller_manager: bool = True
    extra_apiserver_args: list[str] = field(default_factory=list)
    feature_gates: str = DEFAULT_FEATURE_GATES  # kube-apiserver --feature-gates ("" for none)


@dataclass
class Proc:
    pid: int
    start_ticks: int        # /proc/<pid>/stat field 22, guards against a recycled pid
    port: int


@dataclass
class State:
    name: str
    bin_dir: str
    ports: dict[str, int]
    procs: dict[str, Proc]
    options: dict[str, Any]
    started: float

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> State:
        raw = json.loads(path.read_text())
        raw["procs"] = {k: Proc(**v) for k, v in raw["procs"].items()}
        return cls(**raw)


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may hold spaces: fields count from after its closing ')'
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):  # exited, not yet reaped: gone for our purposes
        return None
    return int(fields[19])


def alive(p: Proc) -> bool:
    return _start_ticks(p.pid) == p.start_ticks


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Cluster:
    def __init__(self, name: str = "shardlet") -> None:
        if not _NAME.match(name):
            raise UserError(f"cluster name {name!r}: must be lowercase letters, digits and '-', at most 40")
        self.name = name
        self.dir = home() / name
        self.pki = pki.PKIPaths(self.dir / "pki")
        self.kubeconfig = self.dir / "kubeconfig"
        self.state_file = self.dir / "state.json"
        self.log_dir = self.dir / "logs"

    # -- queries ---------------------------------------------------------------------------
    @staticmethod
    def names() -> list[str]:
        h = home()
        return sorted(p.name for p in h.iterdir() if (p / "state.json").exists()) if h.exists() else []

    def exists(self) -> bool:
        return self.state_file.exists()

    def state(self) -> State:
        if not self.exists():
            known = ", ".join(self.names()) or "none"
            raise UserError(f"cluster {self.name!r}: no such cluster (known: {known}); run 'shardlet cluster up --name {self.name}'")
        return State.load(self.state_file)

    def running(self) -> dict[str, bool]:
        st = self.state()
        return {k: alive(p) for k, p in st.procs.items()}

    def server(self) -> str:
        return f"https://127.0.0.1:{self.state().ports['kube-apiserver']}"

    # -- lifecycle -------------------------------------------------------------------------
    def up(self, opts: Options | None = None, timeout: float = 120.0) -> State:
        opts = opts or Options()
        if self.exists():
            if any(self.running().values()):
                raise UserError(f"cluster {self.name!r}: already up; 'shardlet cluster down --name {self.name}' first")
            self._remove()
        if opts.apiserver_port and not port_free(opts.apiserver_port):
            raise UserError(f"cluster {self.name!r}: --apiserver-port {opts.apiserver_port} is taken by another process")
        bin_dir = toolchain.ensure()
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.log_dir.mkdir(exist_ok=True)
        pki.generate(self.pki.dir)
        ports = {
            "etcd": free_port(), "etcd-peer": free_port(),
            "kube-apiserver": opts.apiserver_port or free_port(),
            "kube-controller-manager": free_port(), "kube-scheduler": free_port(),
        }
        st = State(self.name, str(bin_dir), ports, {}, asdict(opts), time.time())
        st.save(self.state_file)
        self._write_kubeconfig(ports["kube-apiserver"])
        try:
            self._spawn(st, "etcd", self._etcd_args(st))
            self._wait_http(f"http://127.0.0.1:{ports['etcd']}/health", "etcd", st, timeout)
            self._spawn(st, "kube-apiserver", self._apiserver_args(st, opts))
            self._wait_http(f"{self._url(st)}/readyz", "kube-apiserver", st, timeout)
            if opts.controller_manager:
                self._spawn(st, "kube-controller-manager", self._kcm_args(st, opts))
            if opts.scheduler:
                self._spawn(st, "kube-scheduler", self._scheduler_args(st, opts))
            for comp in ("kube-controller-manager", "kube-scheduler"):
                if comp in st.procs:
                    self._wait_http(f"https://127.0.0.1:{ports[comp]}/healthz", comp, st, timeout)
        except BaseException:
            self.down()
            raise
        log.info("cluster_up", cluster=self.name, server=self._url(st), kubeconfig=str(self.kubeconfig))
        return st

    def down(self, grace: float = 10.0) -> list[str]:
        """Stop every process this cluster started and remove its directory."""
        if not self.exists():
            if self.dir.exists():
                self._remove()
                return []
            self.state()  # raises the unknown-cluster error
        st = State.load(self.state_file)
        stopped = []
        # reverse start order, one at a time: shardlet and the controllers first, etcd last, so
        # the apiserver's graceful shutdown still has its storage
        for name in reversed(list(st.procs)):
            p = st.procs[name]
            if not alive(p):
                continue
            stopped.append(name)
            _signal_group(p.pid, signal.SIGTERM)
            if not _wait_gone(p, grace):
                _signal_group(p.pid, signal.SIGKILL)
                _wait_gone(p, 5.0)
            _reap(p.pid)
        self._remove()
        log.info("cluster_down", cluster=self.name, stopped=stopped)
        return stopped

    def register_process(self, component: str, proc: subprocess.Popen[bytes], port: int = 0) -> None:
        """Record a process started beside the control plane (the shardlet runner) for `down`."""
        st = self.state()
        st.procs[component] = Proc(proc.pid, _start_ticks(proc.pid) or 0, port)
        st.save(self.state_file)

    # -- one component at a time (fault tests) ---------------------------------------------
    def stop_component(self, component: str, grace: float = 15.0, sig: int = signal.SIGTERM) -> None:
        """Stop one control-plane component (SIGTERM, SIGKILL after `grace`); its ports stay reserved."""
        if component not in COMPONENTS:
            raise UserError(f"cluster {self.name!r}: unknown component {component!r} (known: {', '.join(COMPONENTS)})")
        p = self.state().procs.get(component)
        if p is None or not alive(p):
            return
        _signal_group(p.pid, sig)
        if not _wait_gone(p, grace):
            _signal_group(p.pid, signal.SIGKILL)
            _wait_gone(p, 5.0)
        _reap(p.pid)

    def start_component(self, component: str, timeout: float = 120.0) -> None:
        """Start a stopped component again with the same arguments and ports; return once healthy."""
        if component not in COMPONENTS:
            raise UserError(f"cluster {self.name!r}: unknown component {component!r} (known: {', '.join(COMPONENTS)})")
        st = self.state()
        if component in st.procs and alive(st.procs[component]):
            raise UserError(f"cluster {self.name!r}: {component} is already running")
        opts = Options(**st.options)
        args = {"etcd": lambda: self._etcd_args(st),
                "kube-apiserver": lambda: self._apiserver_args(st, opts),
                "kube-controller-manager": lambda: self._kcm_args(st, opts),
                "kube-scheduler": lambda: self._scheduler_args(st, opts)}[component]()
        self._spawn(st, component, args)
        url = {"etcd": f"http://127.0.0.1:{st.ports['etcd']}/health",
               "kube-apiserver": f"{self._url(st)}/readyz"}.get(component,
                                                                 f"https://127.0.0.1:{st.ports[component]}/healthz")
        self._wait_http(url, component, st, timeout)

    def restart(self, component: str, grace: float = 15.0, timeout: float = 120.0) -> None:
        """Stop one component and start it again with the same arguments and ports."""
        self.stop_component(component, grace)
        self.start_component(component, timeout)

    # -- internals -------------------------------------------------------------------------
    def _remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def _url(self, st: State) -> str:
        return f"https://127.0.0.1:{st.ports['kube-apiserver']}"

    def _spawn(self, st: State, name: str, args: list[str]) -> None:
        logf = open(self.log_dir / f"{name}.log", "ab")  # handed to the child, closed here
        exe = str(Path(st.bin_dir) / name)
        proc = subprocess.Popen([exe, *args], stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.dir)
        logf.close()
        st.procs[name] = Proc(proc.pid, _start_ticks(proc.pid) or 0, st.ports.get(name, 0))
        st.save(self.state_file)
        log.debug("component_started", cluster=self.name, component=name, pid=proc.pid)

    def admin_ssl(self) -> ssl.SSLContext:
        """TLS as cluster-admin: the cluster's CA and the admin client certificate."""
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return ctx

    def _wait_http(self, url: str, comp: str, st: State, timeout: float) -> None:
        ctx: ssl.SSLContext | None = None
        if url.startswith("https://"):
            ctx = self.admin_ssl()
            if comp != "kube-apiserver":  # controllers serve a self-signed cert of their own
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not alive(st.procs[comp]):
                tail = _tail(self.log_dir / f"{comp}.log")
                raise UserError(f"cluster {self.name!r}: {comp} exited during start-up: {tail}")
            try:
                with urllib.request.urlopen(url, timeout=2, context=ctx) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError) as e:
                last = str(e)
            time.sleep(0.2)
        raise UserError(f"cluster {self.name!r}: {comp} not ready after {timeout:.0f}s ({last}); log: {self.log_dir / (comp + '.log')}")

    def _write_kubeconfig(self, port: int) -> None:
        cfg = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": self.name, "cluster": {
                "server": f"https://127.0.0.1:{port}",
                "certificate-authority": str(self.pki.ca_cert)}}],
            "users": [{"name": f"{self.name}-admin", "user": {
                "client-certificate": str(self.pki.admin_cert),
                "client-key": str(self.pki.admin_key)}}],
            "contexts": [{"name": self.name, "context": {"cluster": self.name, "user": f"{self.name}-admin"}}],
            "current-context": self.name,
        }
        pki.write_private(self.kubeconfig, yaml.safe_dump(cfg).encode())

    def _etcd_args(self, st: State) -> list[str]:
        c, p = st.ports["etcd"], st.ports["etcd-peer"]
        return [
            "--name=node0", f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{c}", f"--advertise-client-urls=http://127.0.0.1:{c}",
            f"--listen-peer-urls=http://127.0.0.1:{p}", f"--initial-advertise-peer-urls=http://127.0.0.1:{p}",
            f"--initial-cluster=node0=http://127.0.0.1:{p}",
            "--unsafe-no-fsync", "--auto-compaction-mode=periodic", "--auto-compaction-retention=1m",
            f"--quota-backend-bytes={8 << 30}", "--snapshot-count=10000",
        ]

    def _apiserver_args(self, st: State, o: Options) -> list[str]:
        k = self.pki
        inflight = ["--max-requests-inflight=0", "--max-mutating-requests-inflight=0",
                    "--enable-priority-and-fairness=false"] if o.disable_qps_limits else [
            f"--max-requests-inflight={o.max_requests_inflight}",
            f"--max-mutating-requests-inflight={o.max_mutating_requests_inflight}"]
        return [
            f"--etcd-servers=http://127.0.0.1:{st.ports['etcd']}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={st.ports['kube-apiserver']}",
            f"--tls-cert-file={k.serving_cert}", f"--tls-private-key-file={k.serving_key}",
            f"--client-ca-file={k.ca_cert}",
            f"--service-account-key-file={k.sa_pub}", f"--service-account-signing-key-file={k.sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.96.0.0/12",
            "--authorization-mode=Node,RBAC", "--allow-privileged=true",
            # kubectl logs: to the node's InternalIP (shardlet's kubelet server), both ends certified
            f"--kubelet-client-certificate={k.kubelet_client_cert}", f"--kubelet-client-key={k.kubelet_client_key}",
            f"--kubelet-certificate-authority={k.ca_cert}", "--kubelet-preferred-address-types=InternalIP,Hostname",
            # a loopback advertise address cannot be an Endpoints IP: skip that reconciler
            "--endpoint-reconciler-type=none",
            f"--cert-dir={self.dir / 'apiserver-certs'}",
            *inflight, *([f"--feature-gates={o.feature_gates}"] if o.feature_gates else []),
            *o.extra_apiserver_args,
        ]

    def _controller_common(self, st: State, comp: str, o: Options) -> list[str]:
        qps = ["--kube-api-qps=5000", "--kube-api-burst=10000"] if o.disable_qps_limits else [
            f"--kube-api-qps={o.kube_api_qps}", f"--kube-api-burst={o.kube_api_burst}"]
        return [
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={st.ports[comp]}",
            f"--cert-dir={self.dir / (comp + '-certs')}",
            "--leader-elect=false", *qps,
        ]

    def _kcm_args(self, st: State, o: Options) -> list[str]:
        k = self.pki
        return [
            *self._controller_common(st, "kube-controller-manager", o),
            f"--root-ca-file={k.ca_cert}", f"--service-account-private-key-file={k.sa_key}",
            f"--cluster-signing-cert-file={k.ca_cert}", f"--cluster-signing-key-file={k.ca_key}",
            f"--node-monitor-period={o.node_monitor_period}",
            f"--node-monitor-grace-period={o.node_monitor_grace_period}",
            "--controllers=*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle",
        ]

    def _scheduler_args(self, st: State, o: Options) -> list[str]:
        return self._controller_common(st, "kube-scheduler", o)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _wait_gone(p: Proc, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(p):
        if time.monotonic() > deadline:
            return False
        _reap(p.pid)
        time.sleep(0.02)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:])[-400:]
