"""Container log files as the kubelet reads them (k8s.io/cri-client/pkg/logs), for the kubelet
server's ``/containerLogs``: kwok points a fake container at a file with a ``Logs`` or
``ClusterLogs`` object, and ``kubectl logs`` then shows that file as if a runtime had written it.

Two line formats, as the kubelet accepts: CRI (``2016-10-06T00:17:09.669794202Z stdout F text``,
``P`` for a partial line continued by the next) and Docker's json-file
(``{"log":"text\\n","stream":"stdout","time":"..."}``). A line that is neither is skipped, as the
kubelet does. Options are the PodLogOptions the apiserver forwards: tailLines, sinceSeconds or
sinceTime, timestamps, limitBytes (follow is the server's: it keeps reading the file).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import orjson

__all__ = ["LogLine", "LogOptions", "parse_line", "parse_time", "render", "tail_start"]


@dataclass(frozen=True, slots=True)
class LogOptions:
    tail_lines: int | None = None      # the last N lines only (None: all)
    since: float | None = None         # only lines at or after this time (seconds since the epoch)
    timestamps: bool = False           # prefix each line with its RFC 3339 time
    limit_bytes: int | None = None     # stop after this many bytes of output


@dataclass(frozen=True, slots=True)
class LogLine:
    time: str                # RFC 3339 with nanoseconds, as written
    stream: str              # stdout or stderr
    partial: bool            # continued by the next line (CRI "P")
    content: bytes           # without the line's newline


_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$")


def parse_time(s: str) -> float | None:
    """Seconds since the epoch of an RFC 3339 time with up to nanoseconds (Python keeps micro)."""
    m = _TIME.match(s)
    if m is None:
        return None
    head, frac, tz = m.groups()
    try:
        t = dt.datetime.fromisoformat(head + ("+00:00" if tz in (None, "Z") else tz))
    except ValueError:
        return None
    return t.timestamp() + (int(frac[:9].ljust(9, "0")) / 1e9 if frac else 0.0)


def parse_line(raw: bytes) -> LogLine | None:
    """One line of a log file (without its newline), or None when it is in neither format."""
    if raw.startswith(b"{"):
        try:
            d = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(d, dict) or not isinstance(d.get("log"), str):
            return None
        text = d["log"].encode()
        partial = not text.endswith(b"\n")
        return LogLine(str(d.get("time") or ""), str(d.get("stream") or "stdout"), partial,
                       text[:-1] if not partial else text)
    parts = raw.split(b" ", 3)
    if len(parts) < 3 or parts[1] not in (b"stdout", b"stderr"):
        return None
    if len(parts) == 3:      # an empty line: "TIME stdout F"
        parts.append(b"")
    tag = parts[2].split(b":")
    return LogLine(parts[0].decode(errors="replace"), parts[1].decode(), tag[0] == b"P", parts[3])


def tail_start(data: bytes, n: int) -> int:
    """The offset in ``data`` where its last ``n`` lines begin (each line of the file counts, a
    partial one too, as the kubelet's FindTailLineStartIndex counts them)."""
    if n <= 0:
        return len(data)
    end = len(data) - 1 if data.endswith(b"\n") else len(data)
    pos = end
    for _ in range(n):
        i = data.rfind(b"\n", 0, pos)
        if i < 0:
            return 0
        pos = i
    return pos + 1


def render(lines: Iterable[bytes], opts: LogOptions) -> Iterator[bytes]:
    """What the kubelet writes for these raw lines: content (with a newline for a full line),
    its time first when asked; lines before ``since`` left out; cut at ``limit_bytes``."""
    left = opts.limit_bytes
    new_line = True          # the time goes before a line's first piece only, as the kubelet's
    for raw in lines:
        line = parse_line(raw)
        if line is None:
            continue
        if opts.since is not None:
            t = parse_time(line.time)
            if t is not None and t < opts.since:
                continue
        out = line.content if line.partial else line.content + b"\n"
        if opts.timestamps and new_line:
            out = line.time.encode() + b" " + out
        new_line = not line.partial
        if left is not None:
            if left <= 0:
                return
            out = out[:left]
            left -= len(out)
        yield out
        if left is not None and left <= 0:
            return
