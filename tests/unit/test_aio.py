"""shardlet's processes run on uvloop unless told otherwise."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from shardlet import aio


async def _loop_type() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_runs_on_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHARDLET_LOOP", raising=False)
    assert aio.loop_factory() is uvloop.new_event_loop
    assert aio.run(_loop_type()).startswith("uvloop")


def test_standard_loop_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARDLET_LOOP", "asyncio")
    assert aio.loop_factory() is None
    assert aio.run(_loop_type()).startswith("asyncio")
