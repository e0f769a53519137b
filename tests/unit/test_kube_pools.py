"""Connection pools of the API client: a sibling (the lease renewer's) is not starved by its
parent's backlog. A local HTTP server stands in for the network only; no Kubernetes semantics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from shardlet.api import Credentials, Kube
from shardlet.shard import Shard, ShardConfig


@dataclass
class Server:
    url: str = ""
    release: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)


@asynccontextmanager
async def server() -> AsyncIterator[Server]:
    """Started inside the test's own loop (an async fixture may run on another one)."""
    srv = Server()

    async def slow(_r: web.Request) -> web.Response:
        async with srv.changed:
            srv.in_flight += 1
            srv.changed.notify_all()
        await srv.release.wait()
        return web.json_response({"kind": "Status"})

    async def fast(_r: web.Request) -> web.Response:
        return web.json_response({"kind": "Lease"})

    app = web.Application()
    app.router.add_get("/slow", slow)
    app.router.add_put("/lease", fast)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    srv.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield srv
    finally:
        srv.release.set()
        await runner.cleanup()


async def test_a_sibling_is_not_held_back_by_a_full_parent_pool() -> None:
    async with server() as srv:
        parent = Kube(Credentials(server=srv.url, ssl=False), max_connections=2)
        seen: list[str] = []
        parent.on_request = lambda verb, code, _s: seen.append(f"{verb} {code}")
        lease = parent.sibling(max_connections=2, user_agent="shardlet-lease")
        try:
            busy = [asyncio.create_task(parent.get("/slow")) for _ in range(3)]   # 2 in flight, 1 queued
            async with srv.changed:
                await asyncio.wait_for(srv.changed.wait_for(lambda: srv.in_flight == 2), 5)
            got = await asyncio.wait_for(lease.replace("/lease", {"kind": "Lease"}), 5)
            assert got == {"kind": "Lease"}
            assert srv.in_flight == 2 and not any(t.done() for t in busy), "the parent's pool was full throughout"
            assert seen == ["PUT 200"], "the sibling reports to the parent's request metric"
            srv.release.set()
            assert [r["kind"] for r in await asyncio.wait_for(asyncio.gather(*busy), 5)] == ["Status"] * 3
        finally:
            await parent.close()
            await lease.close()


async def test_a_shard_renews_leases_over_its_own_pool() -> None:
    kube = Kube(Credentials(server="http://127.0.0.1:1", ssl=False))
    s = Shard(kube, ShardConfig(watch_stages=False, lease_concurrency=7))
    try:
        assert s.leases.kube is s.lease_kube and s.lease_kube is not kube
        assert s.lease_kube._max_connections == 7 and s.lease_kube.base == kube.base
    finally:
        await s.stop()
