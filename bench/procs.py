"""CPU and memory of process trees, read from /proc (Linux only, no dependency).

A `Meter` samples a set of process trees in a background thread. Each process is keyed by
(pid, start time), so a recycled pid is never mistaken for the old process, and a process that
exits between two marks keeps the CPU it was last seen with. CPU between two marks is the sum of
the per-process differences; a process first seen after the first mark counts from zero.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

Key = tuple[int, int]   # (pid, start ticks)


@dataclass
class PStat:
    pid: int
    ppid: int
    start: int
    cpu_s: float
    rss: int
    comm: str

    @property
    def key(self) -> Key:
        return (self.pid, self.start)


def read_stat(pid: int) -> PStat | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    lp, rp = raw.index("("), raw.rindex(")")
    f = raw[rp + 2:].split()
    if f[0] in ("Z", "X"):
        return None
    # fields after the name: state(0) ppid(1) ... utime(11) stime(12) ... starttime(19) vsize(20) rss(21)
    return PStat(pid, int(f[1]), int(f[19]), (int(f[11]) + int(f[12])) / CLK, int(f[21]) * PAGE, raw[lp + 1:rp])


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def pss(pid: int) -> int:
    """Proportional set size in bytes (shared pages split between their users); 0 if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def all_stats() -> dict[int, PStat]:
    out: dict[int, PStat] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = read_stat(int(d))
            if st is not None:
                out[st.pid] = st
    return out


def descendants(root: int, stats: dict[int, PStat] | None = None) -> list[PStat]:
    """The root and every process below it."""
    stats = stats if stats is not None else all_stats()
    children: dict[int, list[int]] = {}
    for s in stats.values():
        children.setdefault(s.ppid, []).append(s.pid)
    out: list[PStat] = []
    todo = [root]
    while todo:
        p = todo.pop()
        if p in stats:
            out.append(stats[p])
        todo.extend(children.get(p, []))
    return out


def alive(key: Key) -> bool:
    st = read_stat(key[0])
    return st is not None and st.start == key[1]


def kill_keys(keys: Iterable[Key], sig: int = signal.SIGKILL) -> list[int]:
    """Signal exactly these processes (pid and start time must both match)."""
    done = []
    for k in keys:
        if alive(k):
            try:
                os.kill(k[0], sig)
                done.append(k[0])
            except ProcessLookupError:
                pass
    return done


Classifier = Callable[[PStat], str]


def constant(group: str) -> Classifier:
    def classify(_s: PStat) -> str:
        return group
    return classify


class Meter:
    """Samples named process trees; `mark()` snapshots cumulative CPU per process."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.roots: dict[str, tuple[int, Classifier, bool]] = {}   # name -> (root pid, classifier, whole tree)
        self.seen: dict[Key, tuple[str, PStat]] = {}          # last sample of every process ever seen
        self.live: set[Key] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, name: str, root: int, classify: Classifier | None = None, tree: bool = True) -> None:
        with self._lock:
            self.roots[name] = (root, classify or constant(name), tree)
        self.sample()

    def remove(self, name: str) -> None:
        with self._lock:
            self.roots.pop(name, None)

    def start(self) -> Meter:
        self._thread = threading.Thread(target=self._loop, name="bench-meter", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception:  # a process vanishing mid-read must not end the sampler
                pass

    def sample(self) -> None:
        stats = all_stats()
        with self._lock:
            live: set[Key] = set()
            for _name, (root, classify, tree) in self.roots.items():
                for s in (descendants(root, stats) if tree else [stats[root]] if root in stats else []):
                    self.seen[s.key] = (classify(s), s)
                    live.add(s.key)
            self.live = live

    def mark(self) -> dict[Key, tuple[str, float]]:
        """Cumulative CPU seconds per process, with its group, as of now."""
        self.sample()
        with self._lock:
            return {k: (g, s.cpu_s) for k, (g, s) in self.seen.items()}

    @staticmethod
    def cpu(m0: dict[Key, tuple[str, float]], m1: dict[Key, tuple[str, float]]) -> dict[str, float]:
        """CPU seconds per group between two marks."""
        out: dict[str, float] = {}
        for k, (g, c1) in m1.items():
            c0 = m0.get(k, (g, 0.0))[1]
            out[g] = out.get(g, 0.0) + max(0.0, c1 - c0)
        return {g: round(v, 3) for g, v in out.items()}

    @staticmethod
    def cpu_by_pid(m0: dict[Key, tuple[str, float]], m1: dict[Key, tuple[str, float]]) -> dict[int, float]:
        out: dict[int, float] = {}
        for k, (_g, c1) in m1.items():
            out[k[0]] = out.get(k[0], 0.0) + max(0.0, c1 - m0.get(k, ("", 0.0))[1])
        return out

    def memory(self, with_pss: bool = True) -> dict[str, dict[str, int]]:
        """RSS (and PSS) in bytes per group over the live processes; RSS double-counts shared pages."""
        self.sample()
        with self._lock:
            items = [(g, s) for k, (g, s) in self.seen.items() if k in self.live]
        out: dict[str, dict[str, int]] = {}
        for g, s in items:
            d = out.setdefault(g, {"rss": 0, "pss": 0, "procs": 0})
            d["rss"] += s.rss
            d["procs"] += 1
            if with_pss:
                d["pss"] += pss(s.pid)
        return out

    def processes(self) -> list[dict[str, object]]:
        with self._lock:
            items = [(g, s) for k, (g, s) in self.seen.items() if k in self.live]
        return [{"group": g, "pid": s.pid, "comm": s.comm, "cmd": cmdline(s.pid)[:120]} for g, s in items]


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def busy_others(exclude: set[int], seconds: float = 1.0, top: int = 5) -> list[dict[str, object]]:
    """The processes (outside `exclude` trees) that used the most CPU over `seconds`: the noise."""
    a = all_stats()
    time.sleep(seconds)
    b = all_stats()
    skip: set[int] = set()
    for r in exclude:
        skip.update(s.pid for s in descendants(r, b))
    rows = []
    for pid, s in b.items():
        if pid in skip or pid not in a or a[pid].start != s.start:
            continue
        used = s.cpu_s - a[pid].cpu_s
        if used > 0.02 * seconds:
            rows.append({"pid": pid, "comm": s.comm, "cpu_pct": round(100 * used / seconds, 1)})
    rows.sort(key=lambda r: -float(str(r["cpu_pct"])))
    return rows[:top]
