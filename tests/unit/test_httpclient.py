"""The lean keep-alive client against a scripted local HTTP/1.1 server (no TLS, no cluster)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from shardlet.httpclient import ConnectionLost, HttpPool, header_block

Handler = Callable[[bytes, bytes, asyncio.StreamWriter], Awaitable[bool]]


class Server:
    """Reads requests (head + Content-Length body) and lets a handler write the raw response;
    the handler returns False to close the connection afterwards."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                n = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        n = int(line.split(b":", 1)[1])
                body = await r.readexactly(n) if n else b""
                self.requests.append(head + body)
                keep = await self.handler(head, body, w)
                await w.drain()
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()


def response(status: int, body: bytes, *extra: str) -> bytes:
    head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def test_request_line_headers_query_and_body_reach_the_server() -> None:
    async def echo(head: bytes, body: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(response(200, body))
        return True

    async with Server(echo) as srv:
        pool = HttpPool(srv.url, False)
        status, body, _ = await pool.request("PATCH", "/api/v1/namespaces/a/pods/p/status",
                                             params={"fieldSelector": "spec.nodeName=n 1", "watch": True},
                                             headers={"Content-Type": "application/merge-patch+json"},
                                             body=b'{"a":1}')
        pool.close()
    assert (status, body) == (200, b'{"a":1}')
    head = srv.requests[0].split(b"\r\n")
    assert head[0] == b"PATCH /api/v1/namespaces/a/pods/p/status?fieldSelector=spec.nodeName%3Dn+1&watch=true HTTP/1.1"
    assert b"Content-Type: application/merge-patch+json" in head
    assert b"Content-Length: 7" in head
    assert head[1].startswith(b"Host: 127.0.0.1:")


async def test_connections_are_kept_alive_and_bounded() -> None:
    async def slow(head: bytes, body: bytes, w: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.01)
        w.write(response(200, b"{}"))
        return True

    async with Server(slow) as srv:
        pool = HttpPool(srv.url, False, limit=3)
        res = await asyncio.gather(*(pool.request("GET", f"/x/{i}", headers={}) for i in range(30)))
        pool.close()
    assert all(r[0] == 200 for r in res)
    assert len(srv.requests) == 30
    assert srv.connections == 3


async def test_chunked_body_and_retry_after_header() -> None:
    async def chunked(head: bytes, body: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 429 Too Many\r\nRetry-After: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        return True

    async with Server(chunked) as srv:
        pool = HttpPool(srv.url, False)
        first = await pool.request("GET", "/a", headers={})
        second = await pool.request("GET", "/b", headers={})
        pool.close()
    assert first == (429, b"hello world", "3")
    assert second == first
    assert srv.connections == 1


async def test_a_kept_alive_connection_the_server_closed_is_replaced_transparently() -> None:
    async def once(head: bytes, body: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(response(200, b"ok"))
        return False   # close after every response, without saying so

    async with Server(once) as srv:
        pool = HttpPool(srv.url, False)
        a = await pool.request("GET", "/a", headers={})
        await asyncio.sleep(0.05)   # let the close arrive, or not: both must work
        b = await pool.request("GET", "/b", headers={})
        pool.close()
    assert a[1] == b[1] == b"ok"
    assert srv.connections == 2


async def test_connection_close_header_is_honoured() -> None:
    async def close_hdr(head: bytes, body: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(response(200, b"ok", "Connection: close"))
        return False

    async with Server(close_hdr) as srv:
        pool = HttpPool(srv.url, False)
        for _ in range(3):
            assert (await pool.request("GET", "/a", headers={}))[1] == b"ok"
        pool.close()
    assert srv.connections == 3


async def test_a_response_cut_short_raises_connection_lost() -> None:
    async def cut(head: bytes, body: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
        return False

    async with Server(cut) as srv:
        pool = HttpPool(srv.url, False)
        with pytest.raises(ConnectionLost):
            await pool.request("GET", "/a", headers={})
        pool.close()


async def test_a_server_that_never_answers_times_out_and_the_pool_recovers() -> None:
    calls = 0

    async def hang_first(head: bytes, body: bytes, w: asyncio.StreamWriter) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(5)
        w.write(response(200, b"late" if calls == 1 else b"ok"))
        return True

    async with Server(hang_first) as srv:
        pool = HttpPool(srv.url, False, limit=1, timeout=0.2)
        with pytest.raises(TimeoutError):
            await pool.request("GET", "/a", headers={})
        # the timed-out connection is dropped, not reused with a stale response pending
        assert (await pool.request("GET", "/b", headers={}))[1] == b"ok"
        pool.close()


async def test_closed_pool_refuses() -> None:
    pool = HttpPool("http://127.0.0.1:1", False)
    pool.close()
    with pytest.raises(ConnectionLost):
        await pool.request("GET", "/", headers={})


async def test_a_preformatted_header_block_goes_out_as_given() -> None:
    async def echo(head: bytes, body: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(response(200, body))
        return True

    block = header_block({"Authorization": "Bearer t", "Content-Type": "application/json"})
    assert block == b"Authorization: Bearer t\r\nContent-Type: application/json\r\n"
    async with Server(echo) as srv:
        pool = HttpPool(srv.url, False)
        assert (await pool.request("PUT", "/l", headers=block, body=b"{}"))[1] == b"{}"
        assert (await pool.request("GET", "/g", headers=block))[0] == 200
        pool.close()
    put, get = (r.split(b"\r\n") for r in srv.requests)
    assert put[0] == b"PUT /l HTTP/1.1" and b"Authorization: Bearer t" in put and b"Content-Length: 2" in put
    assert put[-1] == b"{}" and put[-2] == b""   # the blank line, then the body
    assert get[0] == b"GET /g HTTP/1.1" and not any(h.startswith(b"Content-Length") for h in get)


async def test_one_request_times_out_while_the_others_on_the_pool_complete() -> None:
    async def hang_a(head: bytes, body: bytes, w: asyncio.StreamWriter) -> bool:
        if head.startswith(b"GET /a "):
            await asyncio.sleep(5)
        w.write(response(200, b"ok"))
        return True

    async with Server(hang_a) as srv:
        pool = HttpPool(srv.url, False, limit=4, timeout=0.4)
        t0 = asyncio.get_running_loop().time()
        res = await asyncio.gather(pool.request("GET", "/a", headers={}),
                                   *(pool.request("GET", f"/b{i}", headers={}) for i in range(3)),
                                   return_exceptions=True)
        took = asyncio.get_running_loop().time() - t0
        assert isinstance(res[0], TimeoutError)
        assert [r[1] for r in res[1:]] == [b"ok"] * 3   # type: ignore[index]
        # the sweep runs every timeout/4: late by at most that, never waits for the server's 5 s
        assert 0.4 <= took < 1.5
        assert not pool._busy   # nothing left for the sweep to watch ...
        await asyncio.sleep(0.25)
        assert pool._sweep is None   # ... so it stopped re-arming
        pool.close()
