"""The coordinator's small HTTP face on 127.0.0.1: /status (JSON), /metrics (Prometheus text of
every shard), /metrics/nodes/NODE/... (kwok's node resource metrics, from the shard that serves
NODE), /discovery/prometheus (their scrape targets, for Prometheus' http_sd), POST /shards?n=N
(rebalance). Its address is written to a run file so that `shardlet status` and `shardlet shards
scale` find it by cluster name."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web


def run_dir() -> Path:
    base = os.environ.get("SHARDLET_HOME") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "shardlet")
    return Path(base) / "run"


def run_file(name: str) -> Path:
    return run_dir() / f"{name}.json"


class Endpoint:
    def __init__(self, status: Callable[[], Awaitable[dict[str, Any]]], metrics: Callable[[], Awaitable[bytes]],
                 scale: Callable[[int], Awaitable[dict[str, Any]]] | None = None,
                 node_metrics: Callable[[str], Awaitable[tuple[int, str]]] | None = None,
                 metric_targets: Callable[[], Awaitable[list[tuple[str, str]]]] | None = None,
                 fail_task: Callable[[str], Awaitable[list[str]]] | None = None) -> None:
        self._status, self._metrics, self._scale = status, metrics, scale
        self._fail_task = fail_task
        self._node_metrics = node_metrics
        self._metric_targets = metric_targets
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.name = ""

    async def start(self, name: str, port: int = 0, addr: str = "127.0.0.1") -> int:
        app = web.Application()
        app.router.add_get("/status", self._h_status)
        app.router.add_get("/metrics", self._h_metrics)
        app.router.add_get("/metrics/{rest:.+}", self._h_node_metrics)
        app.router.add_get("/discovery/prometheus", self._h_discovery)
        app.router.add_post("/shards", self._h_scale)
        app.router.add_post("/debug/fail-task", self._h_fail_task)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, addr, port)
        await site.start()
        self.port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        self.name = name
        run_dir().mkdir(parents=True, exist_ok=True)
        host = "127.0.0.1" if addr in ("0.0.0.0", "") else addr
        run_file(name).write_text(json.dumps({"url": f"http://{host}:{self.port}", "pid": os.getpid()}))
        return self.port

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        try:
            f = run_file(self.name)
            if json.loads(f.read_text()).get("pid") == os.getpid():
                f.unlink()
        except (OSError, ValueError):
            pass

    async def _h_status(self, _: web.Request) -> web.Response:
        return web.json_response(await self._status())

    async def _h_metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=await self._metrics(), content_type="text/plain")

    async def _h_node_metrics(self, req: web.Request) -> web.Response:
        if self._node_metrics is None:
            return web.Response(status=404, text="node metrics are not served here\n")
        code, text = await self._node_metrics(req.path)
        # kubelet's content type: Prometheus text format 0.0.4
        return web.Response(status=code, text=text, content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"} if code == 200 else None)

    async def _h_discovery(self, req: web.Request) -> web.Response:
        """Prometheus HTTP service discovery (http_sd_configs) of the node metrics, as kwok's."""
        targets = await self._metric_targets() if self._metric_targets is not None else []
        return web.json_response([{"targets": [req.host], "labels": {
            "metrics_name": name, "__scheme__": req.scheme, "__metrics_path__": path}} for name, path in targets])

    async def _h_fail_task(self, req: web.Request) -> web.Response:
        """A fire drill (shardlet.supervise): end the shards' running tasks whose name starts
        with ``name`` (e.g. ``watch:nodes``) as a bug would; they restart and show in status."""
        prefix = req.query.get("name", "")
        if not prefix or self._fail_task is None:
            return web.json_response({"error": "name=TASK-PREFIX is required (see task_errors in /status)"},
                                     status=400)
        return web.json_response({"failed": await self._fail_task(prefix)})

    async def _h_scale(self, req: web.Request) -> web.Response:
        if self._scale is None:
            return web.json_response({"error": "this runner has one in-process shard; start it with --shards N"},
                                     status=400)
        try:
            n = int(req.query.get("n", ""))
        except ValueError:
            return web.json_response({"error": f"n={req.query.get('n')!r} is not a whole number"}, status=400)
        if n < 1:
            return web.json_response({"error": f"n={n} must be at least 1"}, status=400)
        return web.json_response(await self._scale(n))
