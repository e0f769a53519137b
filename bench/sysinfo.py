"""Hardware, kernel and versions of everything measured, for the results file."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def _run(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (out.stdout or out.stderr).strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def hardware() -> dict[str, Any]:
    model, phys = "", set()
    try:
        cur_phys = ""
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            k, _, v = line.partition(":")
            k, v = k.strip(), v.strip()
            if k == "model name" and not model:
                model = v
            elif k == "physical id":
                cur_phys = v
            elif k == "core id":
                phys.add((cur_phys, v))
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except OSError:
        affinity = os.cpu_count() or 0
    return {"host": socket.gethostname(), "cpu_model": model, "logical_cpus": os.cpu_count(),
            "usable_cpus": affinity, "physical_cores": len(phys) or None,
            "memory_gib": round(mem / 2**30, 1), "kernel": platform.release(),
            "os": _os_release(), "machine": platform.machine()}


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return ""


def _first_version(text: str) -> str:
    m = re.search(r"v?\d+\.\d+\.\d+[\w.+-]*", text)
    return m.group(0) if m else text[:60]


def versions(bin_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {
        "python": sys.version.split()[0],
        "kube-apiserver": _first_version(_run([str(bin_dir / "kube-apiserver"), "--version"])),
        "kube-controller-manager": _first_version(_run([str(bin_dir / "kube-controller-manager"), "--version"])),
        "etcd": _first_version(_run([str(bin_dir / "etcd"), "--version"])),
        "kwok": _first_version(_run([str(bin_dir / "kwok"), "--version"])),
    }
    for pkg in ("shardlet", "ray", "aiohttp", "orjson"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    out["shardlet_commit"] = code_state()
    return out


def code_state(repo: Path = REPO) -> str:
    """The commit of shardlet's and the coordinator's sources, with a hash of what is uncommitted in
    them: the code a simulator started now runs (each measurement starts shardlet afresh from the
    working tree, so a tree edited during a run changes what later steps measure)."""
    commit = _run(["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"])
    paths = ["--", "shardlet", "coordinator"]
    dirty = (_run(["git", "-C", str(repo), "status", "--porcelain", *paths])
             + _run(["git", "-C", str(repo), "diff", "HEAD", *paths]))
    if not dirty:
        return commit
    h = hashlib.sha1(dirty.encode())
    # a new module is in neither the diff nor the status but by name: its content counts too
    for name in _run(["git", "-C", str(repo), "ls-files", "--others", "--exclude-standard", *paths]).splitlines():
        try:
            h.update((repo / name).read_bytes())
        except OSError:
            pass
    return f"{commit}+dirty.{h.hexdigest()[:8]}"
