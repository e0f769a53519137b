"""The kubelet's HTTPS API at the address a shard's nodes advertise, as kwok's server offers it.

The apiserver reaches a node's kubelet at the node's InternalIP and
``status.daemonEndpoints.kubeletEndpoint.Port`` for ``kubectl logs`` (and exec, attach,
port-forward, which this server does not answer yet: 501); metrics-server and Prometheus read
``/metrics/resource`` there. One server per shard answers for every node it plays, so the
node stages advertise its port (``NodePort``). Like kwok's, it reads fake containers' logs from the
files ``Logs`` (per pod) and ``ClusterLogs`` (pods by namespace and name) objects name.

TLS always (the apiserver speaks nothing else to a kubelet): the serving certificate given
(``cluster up`` signs one with the cluster's CA) or a self-signed one, which the apiserver accepts
unless it was started with ``--kubelet-certificate-authority``. With a client CA the apiserver's
client certificate is required (``--kubelet-client-certificate``), as a kubelet with anonymous
access off requires it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from shardlet.crilog import LogOptions, parse_time, render, tail_start

log = structlog.get_logger("shardlet.kubeletserver")

__all__ = ["KubeletServer", "KubeletServerConfig", "LogSources", "listen_address"]

_MAX_READ = 64 << 20     # bytes of a log file read at once (the tail of a bigger one)


@dataclass(frozen=True, slots=True)
class KubeletServerConfig:
    address: str = "127.0.0.1"          # the nodes' InternalIP (--node-ip), where the apiserver comes
    port: int = 10250                   # 0: a free port (advertised by the nodes)
    cert_file: str | None = None        # serving certificate and key (None: self-signed)
    key_file: str | None = None
    client_ca_file: str | None = None   # require the apiserver's client certificate, signed by it
    follow_poll: float = 0.25           # seconds between looks at a followed file

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"kubelet server: port {self.port} out of range")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("kubelet server: give both the certificate and the key, or neither")
        if self.follow_poll <= 0:
            raise ValueError(f"kubelet server: follow_poll must be > 0, got {self.follow_poll}")


def listen_address(server_address: str, node_ip: str, node_port: int) -> tuple[str, int] | None:
    """Where the server listens: ``server_address`` ("HOST:PORT", port 0 for any free one; an
    empty host means every interface), else the nodes' InternalIP at their port (kwok binds every
    interface there; loopback stays loopback here); None for no server (no address, node port 0).
    ValueError for an address that is not HOST:PORT."""
    if not server_address:
        return (node_ip, node_port) if node_port else None
    host, sep, port = server_address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{server_address!r}: must be HOST:PORT (port 0: any free one)")
    return host.strip("[]") or "0.0.0.0", int(port)


def _names(v: Any) -> list[str]:
    return [str(x) for x in v] if isinstance(v, list) else []


class LogSources:
    """kwok's ``Logs`` and ``ClusterLogs`` objects, as their watches report them; ``find`` is
    kwok's getPodLogs: the pod's own Logs object first, else the first ClusterLogs whose
    selector matches; within one, the entry naming the container, else the first without
    containers."""

    def __init__(self) -> None:
        self.logs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.cluster: dict[str, tuple[list[str], list[str], list[dict[str, Any]]]] = {}

    def on_logs(self, typ: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        if typ == "DELETED":
            self.logs.pop(key, None)
        else:
            self.logs[key] = list(((obj.get("spec") or {}).get("logs")) or [])

    def on_cluster_logs(self, typ: str, obj: dict[str, Any]) -> None:
        name = str((obj.get("metadata") or {}).get("name", ""))
        if typ == "DELETED":
            self.cluster.pop(name, None)
            return
        spec = obj.get("spec") or {}
        sel = spec.get("selector") or {}
        self.cluster[name] = (_names(sel.get("matchNamespaces")), _names(sel.get("matchNames")),
                              list(spec.get("logs") or []))

    @staticmethod
    def _in(entries: list[dict[str, Any]], container: str) -> dict[str, Any] | None:
        default = None
        for e in entries:
            cs = _names(e.get("containers"))
            if not cs and default is None:
                default = e
            elif container in cs:
                return e
        return default

    def find(self, ns: str, pod: str, container: str) -> dict[str, Any] | None:
        own = self.logs.get((ns, pod))
        if own is not None:
            return self._in(own, container)
        for name in sorted(self.cluster):
            nss, names, entries = self.cluster[name]
            if (nss and ns not in nss) or (names and pod not in names):
                continue
            found = self._in(entries, container)
            if found is not None:
                return found
        return None


def _self_signed(host: str) -> tuple[str, str]:
    """A throwaway serving certificate for ``host`` in a fresh 0700 directory: (cert, key); the
    caller removes the directory once the context has loaded them."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shardlet-kubelet")])
    sans: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        sans.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        sans.append(x509.DNSName(host))
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(key, hashes.SHA256()))
    d = tempfile.mkdtemp(prefix="shardlet-kubelet-")
    cert_path, key_path = os.path.join(d, "tls.crt"), os.path.join(d, "tls.key")
    for path, data in ((cert_path, cert.public_bytes(serialization.Encoding.PEM)),
                       (key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    return cert_path, key_path


def _int(q: Any, name: str) -> int | None:
    v = q.get(name)
    if v in (None, ""):
        return None
    try:
        return int(v)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}={v!r}: not a whole number\n") from None


def _options(q: Any) -> tuple[LogOptions, bool, bool]:
    """PodLogOptions from the query the apiserver forwards: (options, follow, previous)."""
    tail = q.get("tailLines") or q.get("tail")
    tail_lines = None if tail in (None, "", "all") else _int({"tailLines": tail}, "tailLines")
    since = None
    secs = _int(q, "sinceSeconds")
    if secs is not None:
        since = time.time() - secs
    if q.get("sinceTime"):
        t = parse_time(q["sinceTime"])
        if t is None:
            raise web.HTTPBadRequest(text=f"sinceTime={q['sinceTime']!r}: not an RFC 3339 time\n")
        since = t if since is None else max(since, t)
    def flag(k: str) -> bool:
        return str(q.get(k, "")).lower() in ("true", "1")
    return (LogOptions(tail_lines=tail_lines, since=since, timestamps=flag("timestamps"),
                       limit_bytes=_int(q, "limitBytes")), flag("follow"), flag("previous"))


class KubeletServer:
    def __init__(self, config: KubeletServerConfig, sources: LogSources, *,
                 pod_known: Callable[[str, str], bool] = lambda _ns, _pod: True) -> None:
        self.cfg = config
        self.sources = sources
        self.pod_known = pod_known      # (namespace, name) -> does this shard play that pod
        self.port = 0
        self.requests = 0
        self._runner: web.AppRunner | None = None

    def _ssl(self) -> ssl.SSLContext:
        cert, key = self.cfg.cert_file, self.cfg.key_file
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        if cert is None or key is None:
            cert, key = _self_signed(self.cfg.address if self.cfg.address not in ("", "0.0.0.0") else "127.0.0.1")
            try:
                ctx.load_cert_chain(cert, key)
            finally:   # held in memory from here: no private key left on disk
                shutil.rmtree(os.path.dirname(key), ignore_errors=True)
        else:
            ctx.load_cert_chain(cert, key)
        if self.cfg.client_ca_file:
            ctx.load_verify_locations(self.cfg.client_ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    async def start(self) -> int:
        app = web.Application()
        for p in ("/healthz", "/readyz", "/livez"):
            app.router.add_get(p, self._h_ok)
        app.router.add_get("/containerLogs/{ns}/{pod}/{container}", self._h_logs)
        for p in ("/exec/{rest:.*}", "/attach/{rest:.*}", "/portForward/{rest:.*}", "/run/{rest:.*}"):
            app.router.add_route("*", p, self._h_not_yet)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.cfg.address or None, self.cfg.port, ssl_context=self._ssl())
        await site.start()
        self.port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        log.info("kubelet_serving", address=self.cfg.address, port=self.port,
                 client_auth=bool(self.cfg.client_ca_file))
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _h_ok(self, _req: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _h_not_yet(self, req: web.Request) -> web.Response:
        return web.Response(status=501, text=f"{req.path.split('/')[1]}: not served by shardlet yet\n")

    async def _h_logs(self, req: web.Request) -> web.StreamResponse:
        self.requests += 1
        ns, pod, container = req.match_info["ns"], req.match_info["pod"], req.match_info["container"]
        opts, follow, previous = _options(req.query)
        if not self.pod_known(ns, pod):
            raise web.HTTPNotFound(text=f"pod {ns}/{pod} is not played by this shard\n")
        entry = self.sources.find(ns, pod, container)
        path = entry.get("previousLogsFile" if previous else "logsFile") if entry else None
        if not isinstance(path, str) or not path:
            # kwok's wording: no Logs/ClusterLogs object for the pod's container
            raise web.HTTPBadRequest(text=f'no logs found for container "{container}" in pod "{ns}/{pod}"\n')
        try:
            f = open(path, "rb")
        except OSError as e:
            raise web.HTTPBadRequest(text=f"logs of {ns}/{pod}/{container}: {e.strerror}: {path}\n") from None
        with f:
            resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
            resp.enable_chunked_encoding()
            await resp.prepare(req)
            size = os.fstat(f.fileno()).st_size
            start = max(0, size - _MAX_READ)
            f.seek(start)
            data = f.read(size - start)
            if start and b"\n" in data:
                data = data[data.index(b"\n") + 1:]
            if opts.tail_lines is not None:
                data = data[tail_start(data, opts.tail_lines):]
            rest = b""
            if follow and data and not data.endswith(b"\n"):
                cut = data.rfind(b"\n") + 1               # a line being written: shown once finished
                data, rest = data[:cut], data[cut:]
            left = opts.limit_bytes

            async def send(lines: bytes) -> None:
                nonlocal left
                for chunk in self._pieces(lines, opts, left):
                    await resp.write(chunk)
                    if left is not None:
                        left -= len(chunk)
            await send(data)
            tr = req.transport      # a client that went away ends the follow (aiohttp also cancels us)
            while follow and (left is None or left > 0) and tr is not None and not tr.is_closing():
                await asyncio.sleep(self.cfg.follow_poll)
                more = f.read(_MAX_READ)
                if not more:
                    continue
                more, rest = rest + more, b""
                if not more.endswith(b"\n"):
                    cut = more.rfind(b"\n") + 1
                    more, rest = more[:cut], more[cut:]
                await send(more)
            await resp.write_eof()
            return resp

    @staticmethod
    def _pieces(data: bytes, opts: LogOptions, left: int | None) -> list[bytes]:
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        o = LogOptions(tail_lines=None, since=opts.since, timestamps=opts.timestamps, limit_bytes=left)
        return list(render(lines, o))
