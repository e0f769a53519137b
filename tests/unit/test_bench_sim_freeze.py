"""The held-cluster writer's handover: freeze() stops a simulator's whole tree at once, and stop()
then kills it (a frozen process ignores SIGTERM until woken)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from bench import procs
from bench.sims import Simulator

# a parent that starts a child and both burn CPU: a stand-in process tree for a simulator
TREE = ("import subprocess, sys\n"
        "subprocess.Popen([sys.executable, '-c', 'while True: pass'])\n"
        "while True: pass\n")


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


def _poll(cond, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_freeze_stops_the_whole_tree_and_stop_kills_it(tmp_path: Path) -> None:
    sim = Simulator("s1", "kubeconfig", "t", tmp_path, tmp_path)
    sim.argv = [sys.executable, "-c", TREE]
    sim.start()
    try:
        assert _poll(lambda: len(procs.descendants(sim.pid)) == 2)
        tree = procs.descendants(sim.pid)
        out = sim.freeze()
        assert out["frozen"] == 2 and out["freeze_s"] < 1
        assert _poll(lambda: all(_state(s.pid) == "T" for s in tree))
        cpu = [procs.read_stat(s.pid) for s in tree]
        time.sleep(0.3)   # a frozen tree uses no CPU over a while: the while is the measurement
        assert [procs.read_stat(s.pid) for s in tree] == cpu
        t0 = time.monotonic()
        stopped = sim.stop(grace=30)
        assert time.monotonic() - t0 < 15 and stopped["rc"] is not None
        assert not any(procs.alive(s.key) for s in tree)
    finally:
        procs.kill_keys(s.key for s in procs.descendants(sim.pid))


def test_freeze_of_an_exited_simulator_freezes_nothing(tmp_path: Path) -> None:
    sim = Simulator("s1", "kubeconfig", "t", tmp_path, tmp_path)
    sim.argv = [sys.executable, "-c", "pass"]
    sim.start()
    assert sim.proc is not None and sim.proc.wait(10) == 0
    assert sim.freeze() == {"frozen": 0}
    assert sim.stop()["rc"] == 0
