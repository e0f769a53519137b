"""List-then-watch loops shaped like client-go's reflector.

List (paged), hand every object to the handler, then watch from the list's resourceVersion with
bookmarks. A 410 Gone (the server compacted past our resourceVersion) means relist once; any
other failure backs off with jitter and resumes the watch from the last resourceVersion seen.
After a relist, objects that vanished while we were away are reported as DELETED.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import aiohttp
import structlog

from shardlet.api import ApiError, Kube
from shardlet.supervise import Supervisor

log = structlog.get_logger("shardlet.watch")

HEALTHY_AFTER = 10.0   # a watch that ran this long was working: its failure starts the backoff afresh
# Node conditions are repaired through the node watch (kwok's node-initialize), not by a periodic
# status post as a kubelet does: after an outage the watch must be back within seconds, not the
# 30-45 s of client-go's cap, for nodes marked Unknown to be Ready again within 30 s.
MAX_BACKOFF = 8.0

Handler = Callable[[str, dict[str, Any]], None]   # (ADDED|MODIFIED|DELETED, object)


def obj_key(obj: dict[str, Any]) -> str:
    m = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(m, dict):
        m = {}
    ns = m.get("namespace")
    return f"{ns}/{m.get('name')}" if ns else str(m.get("name"))


class Reflector:
    def __init__(self, kube: Kube, path: str, handler: Handler, *, name: str,
                 label_selector: str | None = None, field_selector: str | None = None,
                 shard_selector: str | None = None, timeout_seconds: int = 300, on_event: Callable[[str], None] | None = None,
                 on_relist: Callable[[], None] | None = None, supervisor: Supervisor | None = None,
                 poll_when_missing: float | None = None) -> None:
        self.kube = kube
        # a failure the loop does not expect restarts it (a fresh list) instead of ending it
        self.supervisor = supervisor or Supervisor()
        self.path = path
        self.handler = handler
        self.name = name
        self.params: dict[str, str] = {}
        if label_selector:
            self.params["labelSelector"] = label_selector
        if field_selector:
            self.params["fieldSelector"] = field_selector
        if shard_selector:
            self.params["shardSelector"] = shard_selector
        self.timeout_seconds = timeout_seconds
        self.on_event = on_event
        self.on_relist = on_relist
        # a kind that may not be installed (a kwok CRD): a 404 is looked at again this often, quietly
        self.poll_when_missing = poll_when_missing
        self.rv = ""
        self.known: dict[str, str] = {}   # key -> resourceVersion, to skip no-change events
        self.synced = asyncio.Event()
        # set once the first list has been tried, listed or not (a forbidden or unavailable
        # resource must not hold up whoever waits to start), and why the last try failed
        self.tried = asyncio.Event()
        self.error = ""
        self.lists = 0
        self.events = 0
        # with a shardSelector: whether the apiserver applied it (it echoes shardInfo on the list;
        # without the ShardedListAndWatch gate it ignores the parameter); None without one
        self.server_filtered: bool | None = None
        self._redispatch = False
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Run the list-then-watch loop as a task of its own (``stop`` ends it)."""
        if self._task is None or self._task.done():
            self._task = self.supervisor.spawn("watch", self.name, self.run)

    def cancel(self) -> None:
        """Stop without waiting for the task to finish (from a synchronous handler)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def stop(self) -> None:
        t, self._task = self._task, None
        if t is not None:
            t.cancel()
            await asyncio.gather(t, return_exceptions=True)

    async def reselect(self, label_selector: str | None) -> None:
        """Watch another selection: list it afresh (objects no longer selected are reported as
        DELETED) and watch on. A re-selection is not counted as a relist."""
        await self.stop()
        self._set_params({"labelSelector": label_selector or None})
        self.synced.clear()
        self.lists = 0
        self.start()
        await self.synced.wait()

    async def replay(self, params: Mapping[str, str | None] | None = None) -> None:
        """Hand every object to the handler again (after a change of what the handler keeps),
        listing with ``params`` changed from now on (None drops one). Objects the new list does
        not have are reported as DELETED. Returns once the list was tried."""
        await self.stop()
        self._set_params(params or {})
        self._redispatch = True
        self.synced.clear()
        self.tried.clear()
        self.start()
        await self.tried.wait()   # listed, or failed to (and retrying): never stuck on a refusal

    def _set_params(self, params: Mapping[str, str | None]) -> None:
        """Query parameters for the next list and watch (None drops one)."""
        for k, v in params.items():
            if v is None:
                self.params.pop(k, None)
            else:
                self.params[k] = v

    def expect(self, key: str, resource_version: str) -> None:
        """Our own write made this version of the object: its watch event is no news, skip it."""
        self.known[key] = resource_version

    async def run(self) -> None:
        backoff = 0.8
        need_list = True
        while True:
            started = time.monotonic()
            try:
                if need_list:
                    await self._list()
                    need_list = False
                    self.error = ""
                    self.tried.set()
                await self._watch()
                backoff = 0.8
            except asyncio.CancelledError:
                raise
            except ApiError as e:
                if e.status == 410:
                    log.info("watch_expired", watch=self.name, rv=self.rv)
                    need_list = True
                    continue
                if e.status == 404 and self.poll_when_missing is not None:
                    await asyncio.sleep(self.poll_when_missing)
                    need_list = True
                    continue
                log.warning("watch_error", watch=self.name, status=e.status, error=e.message[:200])
                self._failed(f"{e.status} {e.reason}: {e.message[:200]}", need_list)
                backoff = await _sleep_backoff(_fresh(backoff, started), e.retry_after)
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as e:
                log.warning("watch_broken", watch=self.name, error=type(e).__name__, detail=str(e)[:200])
                self._failed(f"{type(e).__name__}: {str(e)[:200]}", need_list)
                backoff = await _sleep_backoff(_fresh(backoff, started))

    def _failed(self, why: str, listing: bool) -> None:
        if listing:            # a watch that breaks and resumes is no error worth reporting
            self.error = why
            self.tried.set()

    async def _list(self) -> None:
        items, lmeta = await self.kube.list_pages(self.path, **cast(dict[str, Any], self.params))
        rv = str(lmeta.get("resourceVersion", ""))
        self.server_filtered = "shardInfo" in lmeta if "shardSelector" in self.params else None
        redispatch = self._redispatch
        self.lists += 1
        if self.lists > 1:
            # rare (a 410, a restart of the loop) and costly at scale: worth a line of its own
            log.info("relisted", watch=self.name, items=len(items), rv=rv)
            if self.on_relist is not None:
                self.on_relist()
        seen: dict[str, str] = {}
        for obj in items:
            k = obj_key(obj)
            orv = obj["metadata"].get("resourceVersion", "")
            seen[k] = orv
            if self.known.get(k) == orv and not redispatch:
                continue
            self._dispatch("MODIFIED" if k in self.known else "ADDED", obj)
        for k in list(self.known.keys() - seen.keys()):
            ns, _, name = k.rpartition("/")
            meta: dict[str, Any] = {"name": name}
            if ns:
                meta["namespace"] = ns
            self._dispatch("DELETED", {"metadata": meta})
        self.known = seen
        self._redispatch = False
        self.rv = rv
        self.synced.set()
        log.debug("listed", watch=self.name, items=len(items), rv=rv)

    async def _watch(self) -> None:
        async for ev in self.kube.watch(self.path, resource_version=self.rv,
                                        timeout_seconds=self.timeout_seconds, **self.params):
            typ = ev.get("type")
            obj = ev.get("object") or {}
            if typ == "ERROR":
                code = int(obj.get("code") or 500)
                raise ApiError(code, str(obj.get("reason", "")), str(obj.get("message", "")))
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if rv:
                self.rv = rv
            if typ == "BOOKMARK":
                continue
            k = obj_key(obj)
            if typ == "DELETED":
                self.known.pop(k, None)
            else:
                if self.known.get(k) == rv:
                    continue
                self.known[k] = rv or ""
            self._dispatch(str(typ), obj)

    def _dispatch(self, typ: str, obj: dict[str, Any]) -> None:
        self.events += 1
        if self.on_event is not None:
            self.on_event(self.name)
        try:
            self.handler(typ, obj)
        except Exception:
            # a malformed object must never take the watch down with it
            log.exception("handler_failed", watch=self.name, object=obj_key(obj), type=typ)


def _fresh(backoff: float, started: float) -> float:
    """The backoff grows over failures in a row, not over the life of the watch."""
    return 0.8 if time.monotonic() - started >= HEALTHY_AFTER else backoff


async def _sleep_backoff(current: float, hint: float | None = None) -> float:
    delay = hint if hint is not None else current
    await asyncio.sleep(delay * (1 + random.random() * 0.5))
    return min(current * 2, MAX_BACKOFF)
