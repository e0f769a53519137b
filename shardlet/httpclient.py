"""A minimal HTTP/1.1 keep-alive client for the apiserver's short requests.

Lease renewals, stage PATCHes and DELETEs are small requests to one host, thousands a second.
aiohttp's general-purpose request path (URL objects, cookie jar, tracing hooks, header
multidicts) was about a quarter of a shard's CPU in the bench profile; this client does only
what those requests need: a pool of persistent TLS connections, one write per request, and
llhttp (httptools, the parser uvicorn uses) for the response, chunked bodies included. Watch
streams stay on aiohttp (shardlet.api). Callers that send the same headers thousands of times
pass them once formatted (`header_block`), and request timeouts are one sweep per pool rather
than a timer per request (asyncio.timeout's enter and exit were about 5% of a shard's busy samples
renewing 968 leases a second at 20,000 nodes, py-spy).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from urllib.parse import urlencode, urlsplit

import httptools


class ConnectionLost(ConnectionError):
    """The connection closed or broke before the whole response arrived."""


class _Conn(asyncio.Protocol):
    """One connection; one request at a time (no pipelining)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, bytes, str | None]] | None = None
        self.body: list[bytes] = []
        self.retry_after: str | None = None
        self.open = False
        self.got_bytes = False   # any byte of the current response
        self.deadline = 0.0      # monotonic time the current response is due by

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.open = True

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(ConnectionLost(f"bad HTTP response: {e}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self._fail(ConnectionLost(str(exc) if exc else "connection closed by the server"))

    def eof_received(self) -> bool | None:
        self.open = False
        return None

    # -- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 11 and name.lower() == b"retry-after":
            self.retry_after = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            if not self.parser.should_keep_alive():
                self.open = False
            w.set_result((self.parser.get_status_code(), b"".join(self.body), self.retry_after))

    # --
    def _fail(self, exc: Exception) -> None:
        self.open = False
        w = self.waiter
        if w is not None and not w.done():
            w.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def send(self, data: bytes, deadline: float) -> asyncio.Future[tuple[int, bytes, str | None]]:
        assert self.transport is not None
        self.body = []
        self.retry_after = None
        self.got_bytes = False
        self.deadline = deadline
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter

    def close(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.close()


class HttpPool:
    """Up to `limit` persistent connections to one https:// (or http://) server."""

    def __init__(self, base_url: str, ssl_ctx: ssl.SSLContext | bool, *, limit: int = 32,
                 timeout: float = 60.0, connect_timeout: float = 10.0) -> None:
        u = urlsplit(base_url)
        self.host = u.hostname or "localhost"
        self.tls = u.scheme == "https"
        self.port = u.port or (443 if self.tls else 80)
        self.prefix = u.path.rstrip("/")
        self.host_header = (u.netloc.rsplit("@", 1)[-1]).encode("idna")
        self.ssl: ssl.SSLContext | None = None
        if self.tls:
            if isinstance(ssl_ctx, ssl.SSLContext):
                self.ssl = ssl_ctx
            else:   # kubeconfig's insecure-skip-tls-verify
                self.ssl = ssl.create_default_context()
                self.ssl.check_hostname = False
                self.ssl.verify_mode = ssl.CERT_NONE
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._slots = asyncio.Semaphore(limit)
        self._idle: list[_Conn] = []
        self._busy: set[_Conn] = set()
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout):
            _, conn = await loop.create_connection(
                _Conn, self.host, self.port, ssl=self.ssl,
                server_hostname=self.host if self.ssl is not None else None)
        return conn

    async def request(self, method: str, path: str, *, params: dict[str, object] | None = None,
                      headers: Mapping[str, str] | bytes, body: bytes | None = None) -> tuple[int, bytes, str | None]:
        """(status, body, Retry-After header) of one request; raises ConnectionLost or TimeoutError.
        `headers` as a dict, or as bytes from `header_block` when the same ones go out often."""
        if self._closed:
            raise ConnectionLost("client closed")
        target = self.prefix + path
        if params:
            target += "?" + urlencode({k: _qv(v) for k, v in params.items()})
        head = headers if isinstance(headers, bytes) else header_block(headers)
        parts = [f"{method} {target} HTTP/1.1\r\nHost: ".encode(), self.host_header, b"\r\n", head]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            parts.append(b"Content-Length: %d\r\n" % len(body or b""))
        parts.append(b"\r\n")
        if body:
            parts.append(body)
        data = b"".join(parts)
        async with self._slots:
            while True:
                reused = bool(self._idle)
                conn = self._idle.pop() if reused else await self._connect()
                if not conn.open:
                    continue
                self._busy.add(conn)
                if self._sweep is None:
                    self._arm()
                try:
                    res = await conn.send(data, time.monotonic() + self.timeout)
                except ConnectionLost:
                    # a kept-alive connection the server closed while idle: nothing of this
                    # request was read, so send it again on another connection
                    if reused and not conn.got_bytes:
                        continue
                    raise
                except BaseException:
                    conn.close()   # a timeout or cancel leaves it mid-response
                    raise
                finally:
                    self._busy.discard(conn)
                if conn.open and not self._closed:
                    self._idle.append(conn)
                else:
                    conn.close()
                return res

    def _arm(self) -> None:
        self._sweep = asyncio.get_running_loop().call_later(min(1.0, self.timeout / 4), self._expire)

    def _expire(self) -> None:
        """Fail the requests past their deadline (TimeoutError, connection aborted); re-arm while
        any request is out."""
        self._sweep = None
        now = time.monotonic()
        for conn in [c for c in self._busy if c.deadline <= now]:
            conn._fail(TimeoutError(f"no response within {self.timeout:g}s"))
        if self._busy and not self._closed:
            self._arm()

    def close(self) -> None:
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for c in self._idle:
            c.close()
        self._idle.clear()


def header_block(headers: Mapping[str, str]) -> bytes:
    """Request header lines, formatted once for requests that send the same ones."""
    return b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers.items())


def _qv(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)
