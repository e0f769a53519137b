"""A real local control plane for the e2e tests, started once per session and always torn down."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from shardlet.controlplane import toolchain
from shardlet.controlplane.cluster import Cluster, Options

ROOT = Path(__file__).resolve().parents[2]
SHARDLET = [sys.executable, "-m", "shardlet.cli"]


def poll(cond: Callable[[], Any], timeout: float, interval: float = 0.5, what: str = "condition") -> Any:
    """Poll until `cond()` is truthy; fail with `what` at the deadline. Never a bare sleep."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {str(last)[:300]})")


class Kubectl:
    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.exe = str(toolchain.binary("kubectl"))

    def run(self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([self.exe, f"--kubeconfig={self.kubeconfig}", *args], capture_output=True,
                           text=True, input=input, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {p.stderr.strip()}")
        return p

    def json(self, *args: str) -> Any:
        return orjson.loads(self.run(*args, "-o", "json").stdout)

    def apply(self, manifest: str) -> None:
        self.run("apply", "-f", "-", input=manifest)


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    return toolchain.ensure(quiet=True)


@pytest.fixture(scope="session")
def cluster(bin_dir: Path) -> Iterator[Cluster]:
    c = Cluster(f"e2e-{os.getpid()}")
    c.up(Options(node_monitor_grace_period="50s"), timeout=180)
    try:
        yield c
    finally:
        c.down()


@pytest.fixture(scope="session")
def kubectl(cluster: Cluster) -> Kubectl:
    return Kubectl(cluster.kubeconfig)
