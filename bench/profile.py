"""py-spy's raw (collapsed-stack) output, summarised: where the simulator's CPU goes.

py-spy samples only threads that are running (not waiting in the event loop's select), so the
percentages are shares of the busy time. Native code (orjson, ssl, the C parts of aiohttp) shows
as the Python frame that called it.
"""

from __future__ import annotations

import re
import shutil
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
