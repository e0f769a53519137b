"""A thin async kube-apiserver client over raw JSON.

The `kubernetes` package is used only to load kubeconfig or in-cluster credentials; requests and
responses stay plain dicts encoded with orjson, which is what the hot paths want. Writes that
fail with 429, 5xx or a broken connection are retried with jittered exponential backoff (kwok's
rules: 1 s x 2^n, jitter 0.2); other errors surface as ApiError at once.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from ssl import SSLContext
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import structlog

from shardlet.httpclient import HttpPool, header_block

log = structlog.get_logger("shardlet.api")

PATCH_TYPES = {
    "json": "application/json-patch+json",
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",
}
RETRYABLE = frozenset({429, 500, 502, 503, 504})


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class Credentials:
    server: str
    ssl: ssl.SSLContext | bool
    token: str | None = None
    token_file: str | None = None
    # the same trust without the client certificate, when `ssl` presents one: requests that
    # carry a bearer token go out over it (see Kube.use_token)
    ssl_without_cert: SSLContext | bool | None = None


def load_credentials(kubeconfig: str | None, context: str | None = None) -> Credentials:
    """Read a kubeconfig (or the in-cluster service account when `kubeconfig` is None)."""
    from kubernetes import client, config  # heavy import, only here

    cfg = client.Configuration()
    token_file = None
    if kubeconfig:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context, client_configuration=cfg)
    else:
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        token_file = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    def trust() -> ssl.SSLContext | bool:
        if not cfg.verify_ssl:
            return False
        return ssl.create_default_context(cafile=cfg.ssl_ca_cert) if cfg.ssl_ca_cert else ssl.create_default_context()
    ctx = trust()
    bare: ssl.SSLContext | bool | None = None
    if cfg.cert_file:
        bare = trust()
        if isinstance(ctx, ssl.SSLContext):
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    token = None
    auth = cfg.api_key.get("authorization") or cfg.api_key.get("BearerToken")
    if auth:
        token = auth.split(" ", 1)[1] if auth.lower().startswith("bearer ") else auth
    return Credentials(cfg.host.rstrip("/"), ctx, token, token_file, bare if not token else None)


def server_trust(kubeconfig: str) -> dict[str, Any]:
    """The apiserver's address and how to trust it (CA PEM, or verify off), without the user's
    credentials: what a shard on another host gets besides a token (see shardlet.actor)."""
    from kubernetes import client, config  # heavy import, only here

    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)  # type: ignore[no-untyped-call]
    ca = None
    if cfg.verify_ssl and cfg.ssl_ca_cert:
        with open(cfg.ssl_ca_cert) as f:
            ca = f.read()
    return {"server": cfg.host.rstrip("/"), "ca": ca, "verify": bool(cfg.verify_ssl)}


def token_credentials(trust: dict[str, Any]) -> Credentials:
    """Credentials of a shard that talks with a token pushed to it (:meth:`Kube.set_bearer`)."""
    ctx: ssl.SSLContext | bool = False
    if trust.get("verify", True):
        ctx = ssl.create_default_context(cadata=trust["ca"]) if trust.get("ca") else ssl.create_default_context()
    return Credentials(str(trust["server"]), ctx)


@dataclass
class _Token:
    """A bearer token obtained at run time (shardlet.satoken), shared by a Kube and its siblings."""
    value: str | None = None
    stale: bool = False   # the apiserver refused it (401): the keeper mints a new one at once
    refused: int = 0      # requests it was refused (401, 403): errors, never retried with the certificate
    pushed: str | None = None   # a shard's only credential, pushed by its coordinator (set_bearer)


_LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"


def token_covers(method: str, path: str) -> bool:
    """Whether the exchanged token's role (shardlet.satoken.RULES) covers this request: the hot
    path. Anything else (a Stage on another kind, a node delete) goes with the kubeconfig's own
    credentials, as the user who started shardlet, by design rather than after a refusal."""
    if path.startswith("/api/v1/nodes"):
        return method in ("GET", "PATCH")
    if path.startswith(_LEASES):
        return method in ("GET", "POST", "PUT")
    if path.startswith("/apis/kwok.x-k8s.io/"):
        return method == "GET"
    if path.startswith("/api/v1/pods"):
        return method == "GET"
    if path.startswith("/api/v1/namespaces/"):
        parts = path.split("/", 8)   # "", api, v1, namespaces, ns, kind, name, subresource, ...
        kind = parts[5] if len(parts) > 5 else ""
        if kind == "events":
            return method == "POST"
        if kind == "pods":
            if len(parts) > 7:
                return parts[7] == "status" and method == "PATCH"
            return method in ("GET", "DELETE")
    return False


class Kube:
    """One apiserver, two connection pools: short requests, and long-lived watch streams.

    With a client-certificate kubeconfig, `use_token` switches the short requests to a bearer
    token over connections that present no certificate: the apiserver verifies a client
    certificate's chain on every request (kubernetes#90533), a token once per 10 s (its token
    cache). Which requests carry the token is :func:`token_covers`; one it is refused fails."""

    def __init__(self, creds: Credentials, *, max_connections: int = 32, user_agent: str = "shardlet") -> None:
        self.creds = creds
        self.base = creds.server
        self._headers = {"User-Agent": user_agent, "Accept": "application/json"}
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._watch_session: aiohttp.ClientSession | None = None
        self._pools: dict[bool, HttpPool] = {}    # by "carries the token"
        self._pool_loop: asyncio.AbstractEventLoop | None = None
        self._token = _Token()
        self._file_token: tuple[float, str | None] = (-1e9, None)   # (read at, token)
        # (bearer, content type, impersonated user) -> header lines
        self._heads: dict[tuple[str | None, str | None, str | None], bytes] = {}
        self.on_request: Callable[[str, int, float], None] | None = None  # (verb, code, seconds)

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | None, **kw: Any) -> Kube:
        return cls(load_credentials(kubeconfig), **kw)

    def sibling(self, *, max_connections: int, user_agent: str) -> Kube:
        """The same apiserver and credentials over pools of its own (the kubelet's heartbeat client)."""
        k = Kube(self.creds, max_connections=max_connections, user_agent=user_agent)
        k.on_request = self.on_request
        k._token = self._token
        return k

    @property
    def client_cert(self) -> bool:
        """Authenticates with a client certificate (and could use a token instead)."""
        return self.creds.ssl_without_cert is not None

    def use_token(self, token: str | None) -> None:
        """Send short requests with this bearer token (None: back to the certificate)."""
        if self.client_cert:
            self._token.value = token
            self._token.stale = False

    @property
    def auth(self) -> str:
        """How requests authenticate: "pushed" (a coordinator's token, shardlet.actor), "token"
        (exchanged for the certificate, shardlet.satoken), "cert" or "kubeconfig"."""
        if self._token.pushed is not None:
            return "pushed"
        return "token" if self.token_in_use else ("cert" if self.client_cert else "kubeconfig")

    @property
    def token_in_use(self) -> bool:
        return self._token.value is not None

    @property
    def token_stale(self) -> bool:
        return self._token.stale

    @property
    def token_refused(self) -> int:
        return self._token.refused

    def set_bearer(self, token: str) -> None:
        """Authenticate every request with this token from now on (a shard's coordinator pushes
        each renewal of it; the Kube and its siblings have no other credential)."""
        self._token.pushed = token

    def _bearer(self) -> str | None:
        """The pushed token, or the kubeconfig's or service account's. Projected tokens rotate: the
        file is re-read once a minute, as client-go's cached file token source does."""
        if self._token.pushed is not None:
            return self._token.pushed
        if not self.creds.token_file:
            return self.creds.token
        at, token = self._file_token
        if time.monotonic() - at > 60:
            try:
                with open(self.creds.token_file) as f:
                    token = f.read().strip() or None
            except OSError:
                token = token or self.creds.token
            self._file_token = (time.monotonic(), token)
        return token

    def _headers_with(self, bearer: str | None, content_type: str | None = None,
                      impersonate: str | None = None) -> dict[str, str]:
        h = dict(self._headers)
        if bearer:
            h["Authorization"] = f"Bearer {bearer}"
        if content_type:
            h["Content-Type"] = content_type
        if impersonate:
            h["Impersonate-User"] = impersonate
        return h

    def _auth_headers(self) -> dict[str, str]:
        return self._headers_with(self._bearer())

    def _head(self, bearer: str | None, content_type: str | None, impersonate: str | None = None) -> bytes:
        """Header lines of a short request, formatted once per (token, content type, user):
        building them per request costs a few percent of a busy shard's CPU."""
        key = (bearer, content_type, impersonate)
        head = self._heads.get(key)
        if head is None:
            if len(self._heads) > 16:   # tokens rotate; keep only the current ones
                self._heads.clear()
            head = self._heads[key] = header_block(self._headers_with(bearer, content_type, impersonate))
        return head

    def _sess(self, watch: bool = False) -> aiohttp.ClientSession:
        if watch:
            if self._watch_session is None or self._watch_session.closed:
                self._watch_session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(ssl=self.creds.ssl, limit=0),
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None))
            return self._watch_session
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.creds.ssl, limit=self._max_connections,
                                               keepalive_timeout=60),
                timeout=aiohttp.ClientTimeout(total=60, sock_connect=10))
        return self._session

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools = {}
        for s in (self._session, self._watch_session):
            if s is not None and not s.closed:
                await s.close()

    # -- single requests -------------------------------------------------------------------
    def _http(self, token: bool) -> HttpPool:
        loop = asyncio.get_running_loop()
        if self._pool_loop is not loop:
            self._pools = {}
            self._pool_loop = loop
        pool = self._pools.get(token)
        if pool is None:
            ctx = self.creds.ssl_without_cert if token else self.creds.ssl
            assert ctx is not None
            pool = self._pools[token] = HttpPool(self.base, ctx, limit=self._max_connections)
        return pool

    async def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                      body: Any = None, content_type: str = "application/json", impersonate: str | None = None) -> Any:
        raw = await self.request_bytes(method, path, params=params, body=body, content_type=content_type,
                                       impersonate=impersonate)
        return orjson.loads(raw) if raw else None

    async def request_bytes(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                            body: Any = None, content_type: str = "application/json",
                            impersonate: str | None = None) -> bytes:
        """The response body as it came (a caller that needs one field of it need not parse it all);
        raises ApiError for a status >= 400. With ``impersonate`` the request acts as that user
        (a Stage's ``impersonation``) and goes with the kubeconfig's own credentials, which are
        the ones a cluster admin lets impersonate, never with the exchanged token."""
        data = None
        ctype = None
        if body is not None:
            data = body if isinstance(body, bytes) else orjson.dumps(body)
            ctype = content_type
        t0 = time.monotonic()
        code = 0
        try:
            token = self._token.value if impersonate is None else None
            if token is not None and token_covers(method, path):
                code, raw, retry_after = await self._http(True).request(
                    method, path, params=params, headers=self._head(token, ctype), body=data)
                if code in (401, 403):
                    # outside the role (403): an error like any other, never sent again as someone
                    # else; expired or revoked (401): once more with the token the keeper mints
                    self._token.refused += 1
                    log.debug("token_refused", path=path, verb=method, status=code)
                    fresh = await self._fresh_token(token) if code == 401 else None
                    if fresh is not None:
                        code, raw, retry_after = await self._http(True).request(
                            method, path, params=params, headers=self._head(fresh, ctype), body=data)
            else:
                code, raw, retry_after = await self._http(False).request(
                    method, path, params=params, headers=self._head(self._bearer(), ctype, impersonate), body=data)
            if code >= 400:
                raise _api_error(code, raw, retry_after)
            return raw
        finally:
            if self.on_request is not None:
                self.on_request(method, code, time.monotonic() - t0)

    async def _fresh_token(self, refused: str, wait: float = 10.0) -> str | None:
        """After a 401: mark the token stale and wait (bounded) for the keeper's next one."""
        if self._token.value == refused:
            self._token.stale = True
        deadline = time.monotonic() + wait
        while self._token.value == refused and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return self._token.value if self._token.value not in (None, refused) else None

    async def retrying(self, fn: Callable[[], Awaitable[Any]], *, what: str, attempts: int = 8,
                       base: float = 1.0, cap: float = 32.0) -> Any:
        """Call `fn` until it succeeds or fails for good; kwok's backoff with 20% jitter."""
        for n in range(attempts):
            try:
                return await fn()
            except ApiError as e:
                if e.status not in RETRYABLE or n == attempts - 1:
                    raise
                delay = e.retry_after if e.retry_after is not None else min(cap, base * 2**n)
                err: str = f"{e.status}"
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                if n == attempts - 1:
                    raise ApiError(0, "ConnectionError", str(e) or type(e).__name__) from e
                delay = min(cap, base * 2**n)
                err = type(e).__name__
            delay *= 1 + 0.2 * random.random()
            log.debug("retry", what=what, attempt=n + 1, delay=round(delay, 2), error=err)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def get(self, path: str, **params: Any) -> Any:
        return await self.request("GET", path, params=params or None)

    async def create(self, path: str, obj: dict[str, Any], impersonate: str | None = None, **params: Any) -> Any:
        return await self.request("POST", path, body=obj, params=params or None, impersonate=impersonate)

    async def replace(self, path: str, obj: dict[str, Any]) -> Any:
        return await self.request("PUT", path, body=obj)

    async def patch(self, path: str, body: Any, type: str = "merge", impersonate: str | None = None,
                    **params: Any) -> Any:
        return await self.request("PATCH", path, body=body, content_type=PATCH_TYPES[type],
                                  params=params or None, impersonate=impersonate)

    async def delete(self, path: str, body: dict[str, Any] | None = None, **params: Any) -> Any:
        return await self.request("DELETE", path, body=body, params=params or None)

    async def list_all(self, path: str, *, page: int = 1000, **params: Any) -> tuple[list[dict[str, Any]], str]:
        """List every page; returns (items, resourceVersion of the list)."""
        items, meta = await self.list_pages(path, page=page, **params)
        return items, str(meta.get("resourceVersion", ""))

    async def list_pages(self, path: str, *, page: int = 1000,
                         **params: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """List every page; returns (items, the last page's list metadata)."""
        items: list[dict[str, Any]] = []
        cont = None
        while True:
            p = dict(params, limit=page)
            if cont:
                p["continue"] = cont
            res = await self.request("GET", path, params=p)
            items.extend(res.get("items") or [])
            meta: dict[str, Any] = res.get("metadata") or {}
            cont = meta.get("continue")
            if not cont:
                return items, meta

    # -- watch -----------------------------------------------------------------------------
    async def watch(self, path: str, *, resource_version: str, timeout_seconds: int = 300,
                    **params: Any) -> AsyncIterator[dict[str, Any]]:
        """Yield watch events as dicts; returns when the server closes the stream."""
        p = dict(params, watch="true", resourceVersion=resource_version,
                 allowWatchBookmarks="true", timeoutSeconds=str(timeout_seconds))
        async with self._sess(watch=True).get(self.base + path, params=p, headers=self._auth_headers()) as r:
            if r.status >= 400:
                raise _api_error(r.status, await r.read(), r.headers.get("Retry-After"))
            buf = b""
            async for chunk in r.content.iter_any():
                if b"\n" not in chunk:
                    buf += chunk
                    continue
                # one split per chunk: slicing line by line copies the rest of a big chunk per event
                *lines, buf = (buf + chunk).split(b"\n")
                for line in lines:
                    if line.strip():
                        yield orjson.loads(line)


def _api_error(status: int, raw: bytes, retry_after: str | None) -> ApiError:
    reason, message = "", raw[:300].decode(errors="replace")
    try:
        st = orjson.loads(raw)
        reason, message = st.get("reason", ""), st.get("message", message)
    except orjson.JSONDecodeError:
        pass
    ra = None
    if retry_after:
        try:
            ra = float(retry_after)
        except ValueError:
            ra = None
    return ApiError(status, reason, message, ra)


def path_for(kind: str, name: str = "", namespace: str = "", subresource: str = "") -> str:
    """REST path of the core kinds shardlet writes."""
    group, plural = RESOURCES[kind]
    prefix = "/api/v1" if group == "v1" else f"/apis/{group}"
    ns = f"/namespaces/{quote(namespace)}" if namespace else ""
    p = f"{prefix}{ns}/{plural}"
    if name:
        p += f"/{quote(name)}"
    if subresource:
        p += f"/{subresource}"
    return p


RESOURCES: dict[str, tuple[str, str]] = {
    "Node": ("v1", "nodes"),
    "Pod": ("v1", "pods"),
    "Event": ("v1", "events"),
    "Namespace": ("v1", "namespaces"),
    "Lease": ("coordination.k8s.io/v1", "leases"),
    "Stage": ("kwok.x-k8s.io/v1alpha1", "stages"),
    "Deployment": ("apps/v1", "deployments"),
    "Job": ("batch/v1", "jobs"),
}
