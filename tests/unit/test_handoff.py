"""The coordinator's live hand-off (coordinator.driver.Coordinator), with stand-in actors and an
injected clock: no node is acquired before its old owner acked the release or was killed, a
shard that stops answering is dropped only after ``dead_after``, and a restarted one is given
its slice again; the shards' token is pushed before every assignment and again when renewed.
Real Ray: tests/e2e/test_coordinator.py and test_faults.py."""

from __future__ import annotations

import asyncio
from typing import Any

from coordinator.driver import Coordinator
from coordinator.messages import Slice, pack, unpack


class Method:
    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def remote(self, *args: Any) -> Any:
        return self.fn(*args)


class Log:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []     # (shard, phase or "kill", epoch)


class Actor:
    """A shard actor as the coordinator sees it: acks assignments, answers status."""

    def __init__(self, sid: str, log: Log) -> None:
        self.sid = sid
        self.log = log
        self.ack = True           # answer release/acquire with ok
        self.alive = True
        self.started = False
        self.epoch = 0
        self.assign = Method(self._assign)
        self.status = Method(self._status)
        self.stop = Method(self._stop)
        self.credentials = Method(self._credentials)
        self.token: str | None = None

    async def _credentials(self, msg: bytes) -> bool:
        if not self.alive:
            raise ConnectionError("actor died")
        self.token = unpack(msg)["token"]
        self.log.calls.append((self.sid, f"token {self.token}", -2))
        return True

    async def _assign(self, msg: bytes) -> bytes:
        s = Slice.from_bytes(msg)
        self.log.calls.append((self.sid, s.phase, s.table.epoch))
        if not self.alive:
            raise ConnectionError("actor died")
        if self.ack:
            self.started, self.epoch = True, s.table.epoch
        return pack({"ok": self.ack, "epoch": self.epoch})

    async def _status(self) -> bytes:
        if not self.alive:
            raise ConnectionError("actor died")
        return pack({"started": self.started, "epoch": self.epoch, "nodes": 10, "phase": "acquire"})

    async def _stop(self, _release: bool) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def coordinator(n: int, clock: Clock | None = None, credentials: Any = None) -> tuple[Coordinator, Log, dict[str, Actor]]:
    log = Log()
    actors: dict[str, Actor] = {}

    def spawn(sid: str) -> Actor:
        actors[sid] = Actor(sid, log)
        return actors[sid]

    def kill(actor: Actor, no_restart: bool) -> None:
        log.calls.append((actor.sid, "kill", -1))
        actor.alive = False

    c = Coordinator(name="t", shards=n, config=pack({"buckets": 64}), kubeconfig=None, actor=object,
                    detached=False, credentials=credentials, dead_after=8.0, spawn=spawn, kill=kill, clock=clock or Clock())
    asyncio.run(c.start())
    return c, log, actors


def test_scale_acquires_only_after_every_old_owner_acked_its_release() -> None:
    c, log, _ = coordinator(2)
    log.calls.clear()
    res = asyncio.run(c.scale(3))
    assert res["shards"] == 3 and res["epoch"] == 2
    phases = [(sid, ph) for sid, ph, ep in log.calls if ep == 2]
    releases = [i for i, (_, ph) in enumerate(phases) if ph == "release"]
    acquires = [i for i, (_, ph) in enumerate(phases) if ph == "acquire"]
    assert {phases[i][0] for i in releases} == {"shard-0", "shard-1"}
    assert {phases[i][0] for i in acquires} == {"shard-0", "shard-1", "shard-2"}
    assert max(releases) < min(acquires)
    assert c.table is not None and c.table.shards == ("shard-0", "shard-1", "shard-2")


def test_a_shard_that_does_not_ack_its_release_is_killed_before_anyone_acquires() -> None:
    c, log, actors = coordinator(3)
    actors["shard-1"].ack = False
    log.calls.clear()
    asyncio.run(c.scale(2))
    kill = log.calls.index(("shard-1", "kill", -1))
    first_acquire = next(i for i, (_, ph, _) in enumerate(log.calls) if ph == "acquire")
    assert kill < first_acquire
    assert "shard-1" in c.failing_since


def test_a_silent_shard_is_dropped_only_after_dead_after() -> None:
    clock = Clock()
    c, log, actors = coordinator(3, clock)
    asyncio.run(c._check_all())
    actors["shard-2"].alive = False
    log.calls.clear()
    for dt in (0.0, 4.0, 8.0):           # failing, but not for more than dead_after yet
        clock.t = 1000.0 + dt
        asyncio.run(c._check_all())
    assert c.table is not None and "shard-2" in c.table.shards and not log.calls
    clock.t = 1008.5
    asyncio.run(c._check_all())
    assert c.table.shards == ("shard-0", "shard-1")
    assert log.calls[0] == ("shard-2", "kill", -1)     # killed before the survivors acquire
    assert {(sid, ph) for sid, ph, _ in log.calls[1:]} == {("shard-0", "acquire"), ("shard-1", "acquire")}
    assert set(c.table.owners) == {0, 1}                # the dead shard owns no bucket


def test_a_restarted_shard_gets_its_slice_again_and_is_not_dropped() -> None:
    clock = Clock()
    c, log, actors = coordinator(2, clock)
    a = actors["shard-1"]
    a.alive = False
    asyncio.run(c._check_all())
    clock.t += 3
    a.alive, a.started, a.epoch = True, False, 0      # Ray brought it back, fresh
    log.calls.clear()
    asyncio.run(c._check_all())
    assert log.calls == [("shard-1", "acquire", 1)]
    assert "shard-1" not in c.failing_since and c.recoveries[-1]["served_again_after_s"] == 3.0
    assert unpack(asyncio.run(a._status()))["started"]


class Tokens:
    """A stand-in token source: token-1, token-2, ... each valid for ``valid`` seconds."""

    def __init__(self, valid: float = 3600.0) -> None:
        self.n = 0
        self.valid = valid
        self.fail = False

    async def __call__(self) -> tuple[dict[str, Any], float]:
        if self.fail:
            raise ConnectionError("apiserver down")
        self.n += 1
        return {"trust": {"server": "https://x"}, "token": f"token-{self.n}"}, self.valid


def test_each_shard_gets_the_token_before_its_first_assignment() -> None:
    _c, log, actors = coordinator(2, credentials=Tokens())
    for sid in ("shard-0", "shard-1"):
        mine = [ph for s, ph, _ in log.calls if s == sid]
        assert mine == ["token token-1", "acquire"], mine
    assert all(a.token == "token-1" for a in actors.values())


def test_the_token_is_renewed_at_70_to_80_percent_of_its_life_and_pushed_to_every_shard() -> None:
    clock = Clock()
    tokens = Tokens(valid=1000.0)
    c, log, actors = coordinator(2, clock, credentials=tokens)
    log.calls.clear()
    clock.t += 690.0
    asyncio.run(c.keep_credentials())
    assert tokens.n == 1 and not log.calls                   # not due before 70%
    clock.t += 120.0
    asyncio.run(c.keep_credentials())
    assert tokens.n == 2 and all(a.token == "token-2" for a in actors.values())
    # a failed renewal is retried with backoff; the shards keep the token they have
    tokens.fail = True
    clock.t += 900.0
    asyncio.run(c.keep_credentials())
    assert c._creds_failures == 1 and all(a.token == "token-2" for a in actors.values())
    tokens.fail = False
    clock.t += 2.5
    asyncio.run(c.keep_credentials())
    assert tokens.n == 3 and all(a.token == "token-3" for a in actors.values())


def test_a_restarted_shard_gets_the_current_token_before_its_slice() -> None:
    clock = Clock()
    tokens = Tokens(valid=1000.0)
    c, log, actors = coordinator(2, clock, credentials=tokens)
    clock.t += 800.0
    asyncio.run(c.keep_credentials())
    a = actors["shard-1"]
    a.alive, a.started, a.epoch, a.token = True, False, 0, None     # Ray brought it back, fresh
    log.calls.clear()
    asyncio.run(c._check_all())
    assert [(s, ph) for s, ph, _ in log.calls] == [("shard-1", "token token-2"), ("shard-1", "acquire")]
