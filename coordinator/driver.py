"""The Ray driver: start shard actors, push bucket tables, notice deaths, rebalance.

Shards are async Ray actors named `<cluster>-shard-<i>` in namespace "shardlet". The coordinator
stops them when it stops, and Ray ends them should it die (they are its actors), unless the user
asked for ``--keep-shards`` on an existing Ray cluster: then they are detached and outlive it, a
restarted coordinator finds them by name, reads the table they hold, and re-adopts them without
moving a node, and ``shardlet stop`` ends them. Ray restarts
a killed shard worker (max_restarts=-1); the monitor sees the fresh actor (started=False) and
pushes the current slice again. A shard that cannot come back is dropped from the table and its
buckets are acquired by the survivors, all well within the 40 s lease.

Every change of table is the same two-phase hand-off: the old owners release (keep only what
they own under both tables), and only once each has acked, or been killed for not acking, do
the new owners acquire; so no node is served by two live shards at once. (A killed shard may
run on for a moment: the new owner takes its leases over at once, being of the same instance,
and the lease controller gives a lease up to whoever wrote it since, so the old one stops playing
those nodes at its next renewal.) Besides scaling and
deaths, the monitor rebalances: node names hash to buckets, so the shards' node counts drift
from N/S by sampling noise; once the total has held still for a few rounds and a shard is off by
more than ``rebalance_tolerance``, a few whole buckets move (shardlet.ownership.balance).

Credentials: the user's own never reach a shard (shardlet.actor). With ``credentials`` the
coordinator obtains a short-lived token of the least-privilege account and pushes it to each
shard before every assignment (so a restarted or re-adopted worker has it too) and to all of
them again at 70-80% of its life; without, shards read the kubeconfig path they were built with
on their own host.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from coordinator.endpoint import Endpoint
from coordinator.messages import Slice, pack, unpack
from shardlet import aio
from shardlet.ownership import DEFAULT_BUCKETS, Table, balance

log = structlog.get_logger("coordinator.driver")

NAMESPACE = "shardlet"


class Coordinator:
    def __init__(self, *, name: str, shards: int, config: bytes, kubeconfig: str | None, actor: type,
                 detached: bool, credentials: Callable[[], Awaitable[tuple[dict[str, Any], float]]] | None = None,
                 shard_cpus: float = 0.0, dead_after: float = 8.0,
                 rebalance_tolerance: float = 0.02, settle_rounds: int = 3, adopt_timeout: float = 60.0,
                 spawn: Callable[[str], Any] | None = None,
                 kill: Callable[[Any, bool], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        # Ray, injectable: start a shard's actor, kill one (restart: Ray brings it back fresh)
        self.spawn = spawn or self._new_actor
        self.kill = kill or _ray_kill
        self.clock = clock
        self.actor = actor     # the shard's actor face (shardlet.actor.ShardActor), handed in by the runner
        self.want = shards
        self.config = config
        # with bucket labels the table has one entry per label value; without, the default count
        self.buckets = int(unpack(config).get("buckets") or 0) or DEFAULT_BUCKETS
        self.kubeconfig = kubeconfig        # a path each shard reads on its own host (None: in-cluster)
        self.credentials = credentials      # () -> (message for ShardActor.credentials, seconds valid)
        self._creds: bytes | None = None
        self._creds_renew_at = 0.0
        self._creds_failures = 0
        self.detached = detached
        self.shard_cpus = shard_cpus
        self.dead_after = dead_after
        self.adopt_timeout = adopt_timeout
        self.rebalance_tolerance = rebalance_tolerance
        self.settle_rounds = settle_rounds
        self.actors: dict[str, Any] = {}
        self.table: Table | None = None
        self.rebalances = 0
        self.imbalance: float | None = None   # the largest |shard's nodes - N/S| / (N/S) last seen
        self._settle: tuple[int, int] = (-1, 0)   # (node total, rounds it has held still)
        self.failing_since: dict[str, float] = {}
        self.last_status: dict[str, dict[str, Any]] = {}
        self.recoveries: list[dict[str, Any]] = []
        self._lock = asyncio.Lock()
        self._next_index = 0

    # -- actors ----------------------------------------------------------------------------
    def _actor_cls(self) -> Any:
        import ray

        return ray.remote(self.actor)

    def _new_actor(self, sid: str) -> Any:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # round-robin over the live raylets (SPREAD alone packs 0-CPU actors on one node). Hard
        # affinity (soft fell back to the local node here): a shard whose node is gone is dropped
        # from the table by the monitor and its slice goes to the survivors
        nodes = sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))  # type: ignore[no-untyped-call]
        strategy: Any = "SPREAD"
        if nodes:
            strategy = NodeAffinitySchedulingStrategy(nodes[int(sid.rsplit("-", 1)[1]) % len(nodes)], soft=False)
        opts: dict[str, Any] = dict(name=self._actor_name(sid), namespace=NAMESPACE, max_restarts=-1, max_task_retries=0,
                                    num_cpus=self.shard_cpus, scheduling_strategy=strategy,
                                    max_concurrency=1000)
        if self.detached:
            opts["lifetime"] = "detached"
        return self._actor_cls().options(**opts).remote(sid, self._actor_name(sid), self.config, self.kubeconfig)

    # Tables name "shard-<i>", not the actor's cluster-qualified name, so the same shard
    # count gives the same slices on every cluster (and in every test run).
    @staticmethod
    def _shard_id(i: int) -> str:
        return f"shard-{i}"

    def _actor_name(self, sid: str) -> str:
        return f"{self.name}-{sid}"

    async def _adopt_existing(self) -> bool:
        """After a coordinator restart: find live shards by name and keep the table they hold."""
        import ray

        found: dict[str, Any] = {}
        for info in ray.util.list_named_actors(all_namespaces=True):
            if info.get("namespace") == NAMESPACE and info["name"].startswith(f"{self.name}-shard-"):
                try:
                    found[info["name"][len(self.name) + 1:]] = ray.get_actor(info["name"], namespace=NAMESPACE)
                except ValueError:
                    continue
        if not found:
            return False
        # A busy shard (thousands of nodes on a loaded host) may take a while to answer: ask again
        # until one that holds a table answers or adopt_timeout has passed. Found and never
        # answering, they are killed, so that fresh shards can take their names.
        statuses: dict[str, dict[str, Any]] = {}
        errors: dict[str, str] = {}
        deadline = self.clock() + self.adopt_timeout

        async def ask(sid: str) -> None:
            try:
                statuses[sid] = unpack(await asyncio.wait_for(found[sid].status.remote(), 10))
            except Exception as e:  # asked again below; a dead one is the monitor's
                errors[sid] = repr(e)[:200]
        while True:
            await asyncio.gather(*(ask(sid) for sid in found if sid not in statuses))
            if any(s.get("table") for s in statuses.values()) or self.clock() >= deadline:
                break
            log.info("coordinator_adopt_waiting", answered=sorted(statuses), errors=errors)
            await asyncio.sleep(1)
        best = max((s for s in statuses.values() if s.get("table")), key=lambda s: s.get("epoch", 0), default=None)
        if best is None:
            log.warning("coordinator_adopt_failed", shards=sorted(found), answered=sorted(statuses), errors=errors)
            for a in found.values():
                self.kill(a, True)
            await self._names_free([self._actor_name(sid) for sid in found])
            return False
        self.actors = found
        inst = best.get("instance")
        if inst:   # shards started from now on are the same instance as the ones found
            cfg = unpack(self.config)
            cfg["instance"] = inst
            self.config = pack(cfg)
        self.table = Table(best["epoch"], tuple(best["table"]["shards"]), tuple(best["table"]["owners"]))
        self._next_index = 1 + max(int(s.rsplit("-", 1)[1]) for s in found)
        log.info("coordinator_readopted", shards=list(self.table.shards), epoch=self.table.epoch,
                 answered=sorted(statuses))
        # shards that missed the last phase get it now; the others answer "already there"
        await self._push(self.table, "acquire", list(self.table.shards))
        return True

    async def _names_free(self, names: list[str], timeout: float = 30) -> None:
        """Wait until killed actors' names can be taken again (ray.kill returns before that)."""
        import ray

        deadline = self.clock() + timeout
        while self.clock() < deadline:
            taken = []
            for n in names:
                try:
                    ray.get_actor(n, namespace=NAMESPACE)
                    taken.append(n)
                except ValueError:
                    pass
            if not taken:
                return
            await asyncio.sleep(0.5)

    async def _fetch_credentials(self) -> None:
        assert self.credentials is not None
        creds, valid = await self.credentials()
        self._creds = pack(creds)
        self._creds_renew_at = self.clock() + valid * (0.7 + 0.1 * random.random())

    async def keep_credentials(self) -> None:
        """Renew the shards' token when due and push it to every shard; a failure is retried with
        backoff (the old token stays valid for the rest of its life meanwhile)."""
        if self.credentials is None or self.clock() < self._creds_renew_at:
            return
        try:
            await self._fetch_credentials()
            self._creds_failures = 0
        except Exception as e:
            self._creds_failures += 1
            self._creds_renew_at = self.clock() + min(60.0, 2.0 ** self._creds_failures)
            log.warning("shard_token_renew_failed", error=repr(e)[:300], failures=self._creds_failures)
            return
        msg = self._creds

        async def one(sid: str, a: Any) -> None:
            try:
                await asyncio.wait_for(a.credentials.remote(msg), 30)
            except Exception as e:  # a dead one gets it again before its next assignment
                log.warning("shard_token_push_failed", shard=sid, error=repr(e)[:200])
        await asyncio.gather(*(one(sid, a) for sid, a in self.actors.items()))
        log.info("shard_token_renewed", shards=len(self.actors))

    async def start(self) -> None:
        if self.credentials is not None:
            await self._fetch_credentials()   # a UserError (no account, RBAC) ends the run here
        if self.detached and await self._adopt_existing():
            return
        ids = [self._shard_id(i) for i in range(self.want)]
        self._next_index = self.want
        for sid in ids:
            self.actors[sid] = self.spawn(sid)
        self.table = balance(ids, epoch=1, buckets=self.buckets)
        await self._push(self.table, "acquire", ids)

    @property
    def shards(self) -> tuple[str, ...]:
        return self.table.shards if self.table is not None else ()

    async def _push(self, table: Table, phase: str, targets: list[str], timeout: float = 120) -> dict[str, bool]:
        msg = Slice(phase, table).to_bytes()

        async def one(sid: str) -> tuple[str, bool]:
            try:
                if self._creds is not None:   # before every assignment: a restarted worker has none
                    await asyncio.wait_for(self.actors[sid].credentials.remote(self._creds), timeout)
                ack = unpack(await asyncio.wait_for(self.actors[sid].assign.remote(msg), timeout))
                return sid, bool(ack.get("ok"))
            except Exception as e:
                log.warning("assign_failed", shard=sid, phase=phase, epoch=table.epoch, error=repr(e)[:200])
                return sid, False
        return dict(await asyncio.gather(*(one(s) for s in targets)))

    def _weights(self) -> list[int] | None:
        """Nodes per bucket, summed over the shards' last reports (None before any report)."""
        out = [0] * self.buckets
        seen = False
        for sid in self.shards:
            for b, n in self.last_status.get(sid, {}).get("bucket_nodes") or ():
                out[int(b)] += n
                seen = True
        return out if seen else None

    async def _handoff(self, new: Table) -> dict[str, bool]:
        """Release under the old table, then acquire under ``new``. A shard that does not ack
        its release is killed before anyone acquires its nodes (Ray restarts it fresh, and the
        monitor gives it the current table)."""
        old = self.table
        assert old is not None
        released = await self._push(new, "release", list(old.shards))
        for sid, ok in released.items():
            if not ok and sid in self.actors:
                log.warning("release_not_acked", shard=sid, epoch=new.epoch)
                self.kill(self.actors[sid], False)
                self.failing_since.setdefault(sid, self.clock())
        self.table = new
        self._settle = (-1, 0)
        return await self._push(new, "acquire", list(new.shards))

    async def scale(self, n: int) -> dict[str, Any]:
        """Two-phase handoff to n shards: old owners release, then new owners acquire."""
        async with self._lock:
            t0 = self.clock()
            old = self.table
            assert old is not None
            # keep the oldest shards (Table.shards is sorted by name, not by creation)
            keep = sorted(old.shards, key=lambda sid: int(sid.rsplit("-", 1)[1]))[:n]
            new_ids = keep + [self._shard_id(self._next_index + i) for i in range(max(0, n - len(keep)))]
            self._next_index += max(0, n - len(keep))
            for sid in new_ids:
                if sid not in self.actors:
                    self.actors[sid] = self.spawn(sid)
            new = balance(new_ids, epoch=old.epoch + 1, prev=old, weights=self._weights())
            acks = await self._handoff(new)
            for sid in set(old.shards) - set(new_ids):
                await self._retire(sid)
            took = self.clock() - t0
            log.info("shards_scaled", shards=n, epoch=new.epoch, seconds=round(took, 3))
            return {"shards": n, "epoch": new.epoch, "seconds": took, "acked": acks}

    async def _maybe_rebalance(self) -> None:
        """Move a few buckets once the node total held still and a shard is off by more than the
        tolerance. Only on reports from every shard at the current epoch, after its acquire."""
        table = self.table
        if table is None:
            return
        reports = [self.last_status.get(sid) for sid in table.shards]
        if any(r is None or r.get("epoch") != table.epoch or r.get("phase") != "acquire" or sid in self.failing_since
               for sid, r in zip(table.shards, reports, strict=True)):
            self._settle = (-1, 0)
            return
        weights = self._weights() or [0] * self.buckets
        total = sum(weights)
        mean = total / len(table.shards)
        self.imbalance = max(abs(v - mean) for v in table.loads(weights).values()) / mean if total else 0.0
        last, rounds = self._settle
        self._settle = (total, rounds + 1 if total == last else 0)
        if self._settle[1] < self.settle_rounds or self.imbalance <= self.rebalance_tolerance:
            return
        new = balance(table.shards, epoch=table.epoch + 1, prev=table, weights=weights)
        if not new.moved(table):
            return
        t0 = self.clock()
        await self._handoff(new)
        self.rebalances += 1
        log.info("shards_rebalanced", epoch=new.epoch, buckets_moved=len(new.moved(table)),
                 nodes_moved=sum(weights[b] for b in new.moved(table)), imbalance=round(self.imbalance, 4),
                 seconds=round(self.clock() - t0, 3))

    async def _retire(self, sid: str) -> None:
        a = self.actors.pop(sid, None)
        self.failing_since.pop(sid, None)
        if a is None:
            return
        try:
            await asyncio.wait_for(a.stop.remote(False), 30)
        except Exception:
            pass
        self.kill(a, True)

    # -- monitoring ------------------------------------------------------------------------
    async def monitor(self, interval: float = 1.0, failing_interval: float = 0.25) -> None:
        """Check every shard each ``interval``; while one is failing (dead, or restarting under Ray)
        every ``failing_interval``, so its restart is seen and handed its slice without waiting out
        a whole tick: that wait is most of a kill -9's recovery time on a busy machine."""
        while True:
            failing = self.table is not None and any(s in self.failing_since for s in self.table.shards)
            await asyncio.sleep(failing_interval if failing else interval)
            async with self._lock:
                await self.keep_credentials()
                await self._check_all()
                await self._maybe_rebalance()

    async def _check_all(self) -> None:
        table = self.table
        if table is None:
            return

        async def one(sid: str) -> str | None:
            """Refresh one shard's status; the error text once it has failed for dead_after."""
            a = self.actors[sid]
            try:
                st = unpack(await asyncio.wait_for(a.status.remote(), 3))
            except Exception as e:
                since = self.failing_since.setdefault(sid, self.clock())
                return repr(e) if self.clock() - since > self.dead_after else None
            if not st.get("started") or st.get("epoch", 0) < table.epoch:
                # Ray restarted it (fresh state): give it its slice again
                t0 = self.failing_since.pop(sid, self.clock())
                await self._push(table, "acquire", [sid])
                rec = {"shard": self._actor_name(sid), "served_again_after_s": round(self.clock() - t0, 3), "at": time.time()}
                self.recoveries.append(rec)
                log.info("shard_recovered", **rec)
                try:   # report it served now, not a tick later
                    st = unpack(await asyncio.wait_for(a.status.remote(), 3))
                except Exception:
                    pass
            else:
                self.failing_since.pop(sid, None)
            self.last_status[sid] = st
            return None
        dead = await asyncio.gather(*(one(s) for s in table.shards))
        # one table change at a time: each drop plans from the table the previous one left
        for sid, why in zip(table.shards, dead, strict=True):
            if why is not None:
                await self._drop(sid, why)

    async def _drop(self, sid: str, why: str) -> None:
        """A shard that did not come back: survivors acquire its slice."""
        assert self.table is not None
        if self.table.shards == (sid,):
            return   # the last shard: nobody could take its nodes, so keep waiting for Ray's restart
        log.warning("shard_dead", shard=sid, error=why[:200])
        self.failing_since.pop(sid, None)
        a = self.actors.pop(sid, None)
        if a is not None:
            try:
                self.kill(a, True)
            except Exception:
                pass
        survivors = [s for s in self.table.shards if s != sid]
        # the dead shard released nothing: the survivors only acquire (they keep what they had)
        self.table = balance(survivors, epoch=self.table.epoch + 1, prev=self.table, weights=self._weights())
        self._settle = (-1, 0)
        await self._push(self.table, "acquire", survivors)

    # -- reporting -------------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        shards = []
        for sid in self.shards:
            st = {k: v for k, v in self.last_status.get(sid, {"shard": self._actor_name(sid)}).items()
                  if k not in ("table", "bucket_nodes")}   # the coordinator's own view is below
            st["alive"] = sid not in self.failing_since
            shards.append(st)
        epoch = self.table.epoch if self.table is not None else 0
        return {"coordinator": {"epoch": epoch, "shards": len(self.shards), "mode": "ray", "buckets": self.buckets,
                                "imbalance": self.imbalance, "rebalances": self.rebalances,
                                "recoveries": self.recoveries[-20:]}, "shards": shards}

    async def metrics(self) -> bytes:
        async def one(a: Any) -> bytes:
            try:
                out: bytes = await asyncio.wait_for(a.metrics.remote(), 5)
                return out
            except Exception:
                return b""
        parts = await asyncio.gather(*(one(self.actors[s]) for s in self.shards if s in self.actors))
        return _merge_exposition(list(parts))

    async def node_metrics(self, path: str) -> tuple[int, str]:
        """Ask the shard that owns the node in the path; paths without a node go to every shard."""
        parts = path.split("/")
        targets = list(self.shards)
        if path.startswith("/metrics/nodes/") and len(parts) > 3 and self.table is not None:
            owner = self.table.owner(parts[3])
            targets.remove(owner)
            targets.insert(0, owner)   # the owner first; the others only answer during a handoff
        last: tuple[int, str] = (404, f"no shard serves {path}\n")
        for sid in targets:
            a = self.actors.get(sid)
            if a is None:
                continue
            try:
                code, text = unpack(await asyncio.wait_for(a.node_metrics.remote(path), 10))
            except Exception as e:
                last = (503, f"shard {sid}: {type(e).__name__}\n")
                continue
            if code == 200:
                return code, text
            last = (code, text)
        return last

    async def metric_targets(self) -> list[tuple[str, str]]:
        async def one(a: Any) -> list[tuple[str, str]]:
            try:
                return [tuple(t) for t in unpack(await asyncio.wait_for(a.metric_targets.remote(), 10))]
            except Exception:
                return []
        parts = await asyncio.gather(*(one(self.actors[s]) for s in self.shards if s in self.actors))
        return list(dict.fromkeys(t for p in parts for t in p))   # a path without a node comes from every shard

    async def fail_task(self, prefix: str) -> list[str]:
        """The fire drill on every shard (shardlet.supervise.Supervisor.fail)."""
        async def one(sid: str, a: Any) -> list[str]:
            try:
                return [f"{sid}/{n}" for n in await asyncio.wait_for(a.fail_task.remote(prefix), 10)]
            except Exception as e:
                log.warning("fail_task_failed", shard=sid, error=repr(e)[:200])
                return []
        parts = await asyncio.gather(*(one(sid, a) for sid, a in self.actors.items()))
        return [n for p in parts for n in p]

    async def stop(self, release_leases: bool) -> None:
        if self.detached:
            return   # --keep-shards: they keep serving; a new coordinator re-adopts them
        async def one(a: Any) -> None:
            try:
                await asyncio.wait_for(a.stop.remote(release_leases), 30)
            except Exception as e:  # killed below all the same
                log.warning("shard_stop_failed", error=repr(e)[:200])
            self.kill(a, True)
        await asyncio.gather(*(one(a) for a in self.actors.values()))
        self.actors.clear()


def _ray_kill(actor: Any, no_restart: bool) -> None:
    import ray

    ray.kill(actor, no_restart=no_restart)


def _merge_exposition(parts: list[bytes]) -> bytes:
    """Concatenate shard expositions, keeping one HELP/TYPE header per metric family."""
    seen: set[bytes] = set()
    out: list[bytes] = []
    for p in parts:
        for line in p.splitlines():
            if line.startswith(b"# "):
                if line in seen:
                    continue
                seen.add(line)
            out.append(line)
    return b"\n".join(out) + b"\n"


async def serve(coord: Coordinator, status_port: int, release_leases: bool, status_addr: str = "127.0.0.1") -> None:
    ep = Endpoint(coord.status, coord.metrics, coord.scale, node_metrics=coord.node_metrics,
                  metric_targets=coord.metric_targets, fail_task=coord.fail_task)
    await coord.start()
    port = await ep.start(coord.name, status_port, status_addr)
    log.info("coordinator_ready", name=coord.name, shards=len(coord.shards), epoch=coord.table.epoch if coord.table else 0,
             status=f"http://127.0.0.1:{port}/status")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    mon = asyncio.create_task(coord.monitor())
    await stop.wait()
    mon.cancel()
    await coord.stop(release_leases)
    await ep.stop()


def stop_detached(name: str, ray_address: str, release_leases: bool = False) -> list[str]:
    """Stop the shards a ``--keep-shards`` run named ``name`` left on a Ray cluster: each is asked
    to stop (releasing its leases if asked), then killed for good. Returns their names."""
    import os

    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address=ray_address, namespace=NAMESPACE, log_to_driver=False)
    try:
        names = sorted(i["name"] for i in ray.util.list_named_actors(all_namespaces=True)
                       if i.get("namespace") == NAMESPACE and i["name"].startswith(f"{name}-shard-"))
        for n in names:
            try:
                a = ray.get_actor(n, namespace=NAMESPACE)
            except ValueError:
                continue
            try:
                ray.get(a.stop.remote(release_leases), timeout=30)
            except Exception as e:  # killed all the same
                log.warning("shard_stop_failed", shard=n, error=repr(e)[:200])
            ray.kill(a, no_restart=True)
        return names
    finally:
        ray.shutdown()


def run(*, name: str, shards: int, config: bytes, kubeconfig: str | None, actor: type, ray_address: str | None,
        credentials: Callable[[], Awaitable[tuple[dict[str, Any], float]]] | None = None,
        status_port: int = 0, release_leases: bool = False, shard_cpus: float = 0.0,
        status_addr: str = "127.0.0.1", keep_shards: bool = False) -> int:
    import os

    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray_address:
        ray.init(address=ray_address, namespace=NAMESPACE, log_to_driver=True)
    else:
        # address="local": always a private Ray, never one some `ray start` left on the host
        ray.init(address="local", namespace=NAMESPACE, include_dashboard=False, num_cpus=max(2, os.cpu_count() or 2),
                 object_store_memory=128 << 20, log_to_driver=True)
    coord = Coordinator(name=name, shards=shards, config=config, kubeconfig=kubeconfig, actor=actor,
                        detached=keep_shards, shard_cpus=shard_cpus, credentials=credentials)
    try:
        aio.run(serve(coord, status_port, release_leases, status_addr))
    finally:
        ray.shutdown()
    return 0
