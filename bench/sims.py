"""The simulators under test, each started as a subprocess against a kubeconfig and stopped after.

- `kwok`: the pinned `kwok` binary with kwok's 'fast' stages (node-initialize,
  node-heartbeat-with-lease, pod-ready, pod-complete, pod-delete) given with --config, and 40 s
  node leases (`--node-lease-duration-seconds`; the `kwok` binary's own default is 0: no leases).
- `s1`, `s2`, `s4`, ...: `shardlet run --shards S` (S = 1 in-process, more as Ray actors) with its
  built-in 'fast' profile, which is the same kwok v0.8.0 Stage YAML, and 40 s leases.

Both manage nodes annotated `kwok.x-k8s.io/node=fake` and nothing else, and log at their default
level (info) into a file.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import procs

FAST_STAGES = Path(__file__).resolve().parent.parent / "shardlet" / "stages" / "profiles" / "fast.yaml"
SELECTOR = "kwok.x-k8s.io/node=fake"
LEASE_SECONDS = 40
_PLAIN = re.compile(r"\t(WARNING|ERROR|CRITICAL) (\S+) -- (.*)")
RAY_TMPDIR = Path(f"/tmp/sbray-{os.getpid()}")   # short: Ray's unix socket paths must fit 107 bytes


def parse_sim(key: str) -> tuple[str, int]:
    if key == "kwok":
        return "kwok", 0
    m = re.fullmatch(r"s(\d+)", key)
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"unknown simulator {key!r}: use kwok or sN (shardlet with N shards, e.g. s1, s4)")
    return "shardlet", int(m.group(1))


def label(key: str) -> str:
    kind, s = parse_sim(key)
    return "kwok" if kind == "kwok" else f"shardlet S={s}"


def argv(key: str, kubeconfig: str, name: str, bin_dir: Path) -> list[str]:
    kind, shards = parse_sim(key)
    if kind == "kwok":
        return [str(bin_dir / "kwok"), f"--kubeconfig={kubeconfig}", "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={SELECTOR}",
                f"--node-lease-duration-seconds={LEASE_SECONDS}", f"--config={FAST_STAGES}",
                "--cidr=10.0.0.0/24", "--node-ip=127.0.0.1", "--node-port=10250"]
    return [sys.executable, "-m", "shardlet.cli", "--log-format", "json", "run", "--kubeconfig", kubeconfig,
            "--name", name, "--shards", str(shards), "--profile", "fast",
            "--lease-duration", str(LEASE_SECONDS), "--node-annotation-selector", SELECTOR,
            "--no-stage-crd", "--cidr", "10.0.0.0/24", "--node-ip", "127.0.0.1", "--node-port", "10250",
            "--create-rbac"]   # the bench's own cluster: the token spares the apiserver certificate checks


class Simulator:
    def __init__(self, key: str, kubeconfig: str, name: str, bin_dir: Path, log_dir: Path) -> None:
        self.key = key
        self.kind, self.shards = parse_sim(key)
        self.kubeconfig = kubeconfig
        self.name = name
        self.argv = argv(key, kubeconfig, name, bin_dir)
        self.log_path = log_dir / f"{name}-{key}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.root_key: procs.Key | None = None
        self.stopped: dict[str, Any] | None = None   # stop()'s result: a second stop() returns it
        self.frozen = False                            # freeze() stopped the tree: stop() kills it

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1", RAY_USAGE_STATS_ENABLED="0", RAY_TMPDIR=str(RAY_TMPDIR))
        # Always a private Ray instance: without an address ray.init() joins the cluster that the last
        # `ray start` on this host recorded in /tmp/ray/ray_current_cluster (and shardlet's driver then
        # fails on num_cpus); a temp dir of our own has no such record.
        env.pop("RAY_ADDRESS", None)
        with open(self.log_path, "ab") as logf:
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(self.argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, env=env,
                                         cwd=str(Path(__file__).resolve().parent.parent))
        st = procs.read_stat(self.proc.pid)
        self.root_key = st.key if st else (self.proc.pid, 0)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def classify(self, s: procs.PStat) -> str:
        """Group of a process in this simulator's tree: what 'simulator-only' CPU counts."""
        if self.kind == "kwok":
            return "kwok"
        if self.proc is not None and s.pid == self.proc.pid:
            return "runner"
        if s.comm.startswith("ray::ShardActor") or procs.cmdline(s.pid).startswith("ray::ShardActor"):
            return "shard"
        return "ray"

    def freeze(self) -> dict[str, Any]:
        """SIGSTOP the simulator's whole process tree: it stops writing at once, where a graceful
        stop under load takes seconds (13.7 s at 27,000 nodes) in which leases near their grace
        lapse. A frozen simulator costs nothing but its open connections; stop() then kills it."""
        if self.proc is None or self.proc.poll() is not None:
            return {"frozen": 0}
        t0 = time.monotonic()
        done = procs.kill_keys([s.key for s in procs.descendants(self.proc.pid)], signal.SIGSTOP)
        self.frozen = True
        return {"frozen": len(done), "freeze_s": round(time.monotonic() - t0, 3)}

    def stop(self, grace: float = 30.0) -> dict[str, Any]:
        """SIGTERM the simulator, wait, then SIGKILL whatever of its tree is left (by pid + start time).
        A frozen simulator is killed outright: woken, it would renew with stale resourceVersions."""
        if self.proc is None:
            return {}
        if self.stopped is not None:
            return self.stopped
        tree = [s.key for s in procs.descendants(self.proc.pid)]
        t0 = time.monotonic()
        if self.frozen:   # a stopped process neither forks nor exits: the tree is what was frozen
            procs.kill_keys(tree)
        rc = self.proc.poll()
        if rc is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                rc = self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                procs.kill_keys(tree)
                rc = self.proc.wait(10)
        # Ray's daemons normally go with ray.shutdown(); give them a moment, then end the rest
        deadline = time.monotonic() + 10
        while any(procs.alive(k) for k in tree) and time.monotonic() < deadline:
            time.sleep(0.2)
        leftover = procs.kill_keys(tree)
        self.stopped = {"rc": rc, "stop_s": round(time.monotonic() - t0, 2), "killed_leftovers": len(leftover)}
        return self.stopped

    # -- shardlet's own view -----------------------------------------------------------------
    def status(self, timeout: float = 10.0) -> dict[str, Any] | None:
        """`shardlet status -o json` (the coordinator's /status) or None (kwok, or not up yet)."""
        if self.kind != "shardlet":
            return None
        from coordinator.endpoint import run_file

        try:
            url = json.loads(run_file(self.name).read_text())["url"]
            with urllib.request.urlopen(url + "/status", timeout=timeout) as r:
                out: dict[str, Any] = json.loads(r.read())
                return out
        except (OSError, ValueError, KeyError):
            return None

    def shard_pids(self) -> dict[str, int]:
        st = self.status() or {}
        return {str(s.get("shard")): int(s["pid"]) for s in st.get("shards", []) if s.get("pid")}

    def log_tail(self, lines: int = 6) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:])[-800:]

    def problems(self, limit: int = 8) -> dict[str, Any]:
        """Warnings and errors in the simulator's log, counted by message."""
        counts: dict[str, int] = {}
        examples: dict[str, str] = {}
        tracebacks = 0
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return {}
        for line in lines:
            if "Traceback (most recent call last)" in line:
                tracebacks += 1
            plain = _PLAIN.search(line)   # Ray's own log lines: "<time>\tWARNING file.py:85 -- message"
            if plain:
                k = f"{plain.group(1).lower()}: ray {plain.group(2)}: {re.sub(r'[0-9]+', 'N', plain.group(3))[:100]}"
                counts[k] = counts.get(k, 0) + 1
                examples.setdefault(k, line[:400])
                continue
            i = line.find("{")
            if i < 0:
                continue
            try:
                rec = json.loads(line[i:])
            except ValueError:
                continue
            if not isinstance(rec, dict):
                continue
            lvl = str(rec.get("level", "")).lower()
            if lvl not in ("warn", "warning", "error", "critical", "fatal"):
                continue
            msg = str(rec.get("event") or rec.get("msg") or "?")
            err = str(rec.get("err") or rec.get("error") or "")
            if "context canceled" in err:
                msg += " (context canceled: shutdown)"
            elif err:
                # the same error on different objects counts once: numbers and names become N
                msg += ": " + re.sub(r"\d+", "N", err)[:140]
            if rec.get("stage"):
                msg = f"[{rec['stage']}] {msg}"
            k = f"{lvl}: {msg}"
            counts[k] = counts.get(k, 0) + 1
            if k not in examples:
                examples[k] = line[i:][:400]
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:limit]
        return {"counts": dict(top), "examples": {k: examples[k] for k, _ in top}, "tracebacks": tracebacks,
                "log": str(self.log_path)}
