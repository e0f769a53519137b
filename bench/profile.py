"""py-spy's raw (collapsed-stack) output, summarised: where the simulator's CPU goes.

py-spy samples only threads that are running (not waiting in the event loop's select), so the
percentages are shares of the busy time. Native code (orjson, ssl, the C parts of aiohttp) shows
as the Python frame that called it.
"""

from __future__ import annotations

import re
import shutil
import ssl
import sys
from pathlib import Path
from typing import Any

_LINE = re.compile(r":\d+\)$")
_SPINE_FILES = ("threading.py", "asyncio/runners.py", "<frozen runpy>", "runpy.py", "shardlet/cli.py")
_SPINE_FUNCS = {"asyncio/base_events.py": ("run_forever", "_run_once", "run_until_complete"),
                "asyncio/events.py": ("Handle._run",), "shardlet/runner.py": ("_run", "run_single")}


def _spine(frame: str) -> bool:
    """The event loop's and the thread's own frames: on (nearly) every stack, they say nothing."""
    m = re.match(r"^(.*) \((.*)\)$", frame)
    if not m:
        return frame == "<module>"
    fn, path = m.groups()
    return fn == "<module>" or path in _SPINE_FILES or fn.endswith(_SPINE_FUNCS.get(path, ()))


def py_spy() -> str | None:
    cand = Path(sys.executable).parent / "py-spy"
    if cand.is_file():
        return str(cand)
    return shutil.which("py-spy")


def _short(frame: str) -> str:
    frame = _LINE.sub(")", frame)
    m = re.match(r"^(.*) \((.*)\)$", frame)
    if not m:
        return frame
    fn, path = m.groups()
    for marker in ("site-packages/", "/lib/python3", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/lib/python3":
                path = path.split("/", 1)[1] if "/" in path else path
            break
    return f"{fn} ({path})"


def _package(frame: str) -> str:
    m = re.match(r"^.* \((.*)\)$", frame)
    if not m:
        return "?"
    path = m.group(1)
    if path.startswith(("shardlet/", "coordinator/")):
        return path.rsplit(".py", 1)[0].replace("/", ".")
    top = path.split("/", 1)[0].removesuffix(".py")
    return top


def parse_raw(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive shares per function and per package from py-spy --format raw."""
    total = 0
    self_c: dict[str, int] = {}
    incl_c: dict[str, int] = {}
    pkg_c: dict[str, int] = {}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return {"error": f"no profile: {e}"}
    for line in lines:
        stack, _, n = line.rpartition(" ")
        try:
            count = int(n)
        except ValueError:
            continue
        frames = [_short(f) for f in stack.split(";") if f and not f.startswith("process ")]
        if not frames:
            continue
        total += count
        leaf = frames[-1]
        self_c[leaf] = self_c.get(leaf, 0) + count
        pkg = _package(leaf)
        pkg_c[pkg] = pkg_c.get(pkg, 0) + count
        for f in set(frames):
            incl_c[f] = incl_c.get(f, 0) + count
    if not total:
        return {"samples": 0}

    def rows(d: dict[str, int], skip_spine: bool = False) -> list[dict[str, Any]]:
        items = sorted(d.items(), key=lambda kv: -kv[1])
        out = []
        for k, v in items:
            if skip_spine and (_spine(k) or v >= 0.97 * total):
                continue
            out.append({"frame": k, "samples": v, "pct": round(100 * v / total, 1)})
            if len(out) >= top:
                break
        return out
    return {"samples": total, "self": rows(self_c), "inclusive": rows(incl_c, True), "packages": rows(pkg_c)}


# -- the apiserver's own CPU profile (Go pprof) --------------------------------------------------
# What each simulator costs the apiserver, split by the handler the time was spent under. Every
# sample's stack is attributed to the first of these frames found from the leaf up, so nested
# handlers (a watch encode inside a patch's fan-out) count where they run.
_API_BUCKETS = (
    ("client-cert authentication (x509 verify per request)", ("x509.(*Authenticator).AuthenticateRequest",)),
    ("Go GC", ("runtime.gcBgMarkWorker", "runtime.gcAssistAlloc", "runtime.bgsweep", "runtime.bgscavenge")),
    ("TLS records", ("crypto/tls.(*Conn).Write", "crypto/tls.(*Conn).Read", "crypto/tls.(*Conn).readRecord")),
    ("TLS handshakes", ("crypto/tls.(*Conn).serverHandshake",)),
    ("watch: encode and send events", ("WatchServer).HandleHTTP", "handlers.serveWatch")),
    ("watch cache: dispatch to watchers", ("Cacher).dispatchEvent", "cacheWatcher).process",
                                           "Cacher).processEvent", "watchCache).processEvent")),
    ("PATCH", ("handlers.(*patcher)", "handlers.PatchResource")),
    ("PUT", ("handlers.UpdateResource",)),
    ("POST", ("handlers.CreateResource", "handlers.createHandler")),
    ("DELETE", ("handlers.DeleteResource", "handlers.DeleteCollection")),
    ("GET / LIST", ("handlers.GetResource", "handlers.ListResource", "handlers.getResourceHandler")),
    ("etcd client", ("go.etcd.io/etcd/client",)),
    ("HTTP serving and filters", ("net/http.(*conn).serve",)),
)


def go() -> str | None:
    return shutil.which("go")


def fetch_pprof(base_url: str, ctx: ssl.SSLContext, seconds: int, out: Path) -> None:
    """A CPU profile of the apiserver (it serves /debug/pprof to cluster-admin by default)."""
    import urllib.request

    url = f"{base_url}/debug/pprof/profile?seconds={seconds}"
    with urllib.request.urlopen(url, timeout=seconds + 60, context=ctx) as r:
        out.write_bytes(r.read())


def _pprof_traces(go_bin: str, path: Path) -> list[tuple[float, list[str]]]:
    """(seconds, frames leaf first) per distinct stack, from `go tool pprof -traces`."""
    import subprocess

    text = subprocess.run([go_bin, "tool", "pprof", "-traces", str(path)], capture_output=True, text=True,
                          timeout=300, check=True).stdout
    out: list[tuple[float, list[str]]] = []
    for block in text.split("-----------+-------------------------------------------------------")[1:]:
        lines = [ln for ln in block.strip("\n").splitlines() if ln.strip()]
        if not lines:
            continue
        head = lines[0].split()
        if len(head) < 2:
            continue
        value = _go_seconds(head[0])
        frames = [head[1]] + [ln.strip() for ln in lines[1:]]
        out.append((value, frames))
    return out


def _go_seconds(v: str) -> float:
    for suffix, mult in (("ms", 1e-3), ("us", 1e-6), ("µs", 1e-6), ("ns", 1e-9), ("s", 1.0), ("min", 60.0)):
        if v.endswith(suffix):
            try:
                return float(v[: -len(suffix)]) * mult
            except ValueError:
                return 0.0
    return 0.0


def parse_pprof(go_bin: str, path: Path, top: int = 15) -> dict[str, Any]:
    """CPU-seconds by handler bucket, and the top functions by self and inclusive time."""
    try:
        traces = _pprof_traces(go_bin, path)
    except Exception as e:   # a profile that cannot be read is reported, not fatal
        return {"error": f"go tool pprof: {e}"}
    total = sum(v for v, _ in traces)
    if not total:
        return {"cpu_s": 0.0}
    buckets: dict[str, float] = {}
    self_s: dict[str, float] = {}
    incl_s: dict[str, float] = {}
    for v, frames in traces:
        name = "other"
        for fr in frames:
            hit = next((b for b, marks in _API_BUCKETS if any(m in fr for m in marks)), None)
            if hit is not None:
                name = hit
                break
        buckets[name] = buckets.get(name, 0.0) + v
        self_s[frames[0]] = self_s.get(frames[0], 0.0) + v
        for fr in set(frames):
            incl_s[fr] = incl_s.get(fr, 0.0) + v

    def rows(d: dict[str, float], n: int) -> list[dict[str, Any]]:
        items = sorted(d.items(), key=lambda kv: -kv[1])[:n]
        return [{"frame": k, "cpu_s": round(s, 2), "pct": round(100 * s / total, 1)} for k, s in items]
    return {"cpu_s": round(total, 2), "buckets": rows(buckets, len(buckets)), "self": rows(self_s, top),
            "inclusive": rows(incl_s, top + 10)}
