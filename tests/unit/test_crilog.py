"""Container log files read as the kubelet reads them (shardlet.crilog), and kwok's choice of
the file for a pod's container (shardlet.kubeletserver.LogSources). The server itself answers
`kubectl logs` through the real apiserver in tests/e2e/test_kubelet_server.py."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import aiohttp

from shardlet.crilog import LogOptions, parse_line, parse_time, render, tail_start
from shardlet.kubeletserver import KubeletServer, KubeletServerConfig, LogSources

CRI = (b"2026-01-01T00:00:00.000000001Z stdout F one\n"
       b"2026-01-01T00:00:01Z stderr P tw\n"
       b"2026-01-01T00:00:01.5Z stderr F o\n"
       b"not a log line\n"
       b"2026-01-01T00:00:02Z stdout F\n"
       b"2026-01-01T00:00:03Z stdout F three\n")


def out(data: bytes, opts: LogOptions | None = None) -> bytes:
    return b"".join(render(data.splitlines(), opts or LogOptions()))


def test_cri_lines_partials_joined_empty_and_foreign_lines() -> None:
    assert out(CRI) == b"one\ntwo\n\nthree\n"


def test_timestamps_only_before_a_lines_first_piece() -> None:
    assert out(CRI, LogOptions(timestamps=True)).splitlines() == [
        b"2026-01-01T00:00:00.000000001Z one", b"2026-01-01T00:00:01Z two", b"2026-01-01T00:00:02Z ",
        b"2026-01-01T00:00:03Z three"]


def test_since_and_limit_bytes() -> None:
    assert out(CRI, LogOptions(since=parse_time("2026-01-01T00:00:01.2Z"))) == b"o\n\nthree\n"
    assert out(CRI, LogOptions(limit_bytes=6)) == b"one\ntw"
    assert out(CRI, LogOptions(limit_bytes=0)) == b""


def test_tail_counts_every_line_of_the_file() -> None:
    assert out(CRI[tail_start(CRI, 2):]) == b"\nthree\n"
    assert tail_start(CRI, 0) == len(CRI) and tail_start(CRI, 100) == 0
    assert tail_start(b"a\nb", 1) == 2        # no newline at the end


def test_docker_json_lines() -> None:
    line = parse_line(b'{"log":"hi\\n","stream":"stderr","time":"2026-01-01T00:00:00Z"}')
    assert line is not None and (line.stream, line.partial, line.content) == ("stderr", False, b"hi")
    assert parse_line(b'{"log": 3}') is None and parse_line(b"{broken") is None


def test_times_with_nanoseconds_and_offsets() -> None:
    assert parse_time("2026-01-01T00:00:00.5+01:00") == parse_time("2025-12-31T23:00:00.5Z")
    assert abs(parse_time("2026-01-01T00:00:00.123456789Z") - parse_time("2026-01-01T00:00:00Z") - 0.123456789) < 1e-6  # type: ignore[operator]
    assert parse_time("yesterday") is None


def test_kwok_picks_the_pods_logs_then_cluster_logs_then_the_default_entry() -> None:
    s = LogSources()
    s.on_cluster_logs("ADDED", {"metadata": {"name": "b"}, "spec": {
        "selector": {"matchNamespaces": ["web"]}, "logs": [{"logsFile": "/b"}]}})
    s.on_cluster_logs("ADDED", {"metadata": {"name": "a"}, "spec": {
        "selector": {"matchNames": ["api"]}, "logs": [{"containers": ["sidecar"], "logsFile": "/a-side"}]}})
    s.on_logs("ADDED", {"metadata": {"namespace": "web", "name": "own"}, "spec": {
        "logs": [{"logsFile": "/own-default"}, {"containers": ["app"], "logsFile": "/own-app"}]}})
    assert s.find("web", "own", "app") == {"containers": ["app"], "logsFile": "/own-app"}
    assert s.find("web", "own", "other") == {"logsFile": "/own-default"}
    assert s.find("web", "api", "sidecar") == {"containers": ["sidecar"], "logsFile": "/a-side"}
    assert s.find("web", "api", "main") == {"logsFile": "/b"}      # "a" has nothing for it: the next
    assert s.find("db", "x", "main") is None
    s.on_logs("DELETED", {"metadata": {"namespace": "web", "name": "own"}})
    assert s.find("web", "own", "app") == {"logsFile": "/b"}


async def test_the_server_answers_logs_errors_and_follows_a_growing_file(tmp_path: Path) -> None:
    """The kubelet server on a local TLS socket (self-signed): what the apiserver gets back."""
    f = tmp_path / "a.log"
    f.write_bytes(b"2026-01-01T00:00:00Z stdout F one\n2026-01-01T00:00:01Z stdout F two\n")
    s = LogSources()
    s.on_logs("ADDED", {"metadata": {"namespace": "ns", "name": "p"}, "spec": {"logs": [{"logsFile": str(f)}]}})
    srv = KubeletServer(KubeletServerConfig("127.0.0.1", 0, follow_poll=0.02), s,
                        pod_known=lambda ns, pod: pod != "elsewhere")
    before = set(Path(tempfile.gettempdir()).glob("shardlet-kubelet-*"))
    port = await srv.start()
    # the self-signed key is read into the TLS context, then its directory goes
    assert set(Path(tempfile.gettempdir()).glob("shardlet-kubelet-*")) == before
    base = f"https://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as c:
            async def get(path: str) -> tuple[int, str]:
                async with c.get(base + path, ssl=False) as r:
                    return r.status, await r.text()
            assert await get("/healthz") == (200, "ok")
            assert await get("/containerLogs/ns/p/app?tailLines=1&timestamps=true") == (200, "2026-01-01T00:00:01Z two\n")
            assert await get("/containerLogs/ns/q/app") == (400, 'no logs found for container "app" in pod "ns/q"\n')
            assert (await get("/containerLogs/ns/elsewhere/app"))[0] == 404
            assert await get("/containerLogs/ns/p/app?limitBytes=x") == (400, "limitBytes='x': not a whole number\n")
            assert (await get("/exec/ns/p/app"))[0] == 501
            async with c.get(base + "/containerLogs/ns/p/app?follow=true", ssl=False) as r:
                assert [await r.content.readline() for _ in range(2)] == [b"one\n", b"two\n"]
                with f.open("ab") as w:
                    w.write(b"2026-01-01T00:00:02Z stdout F thr")
                    w.flush()
                    await asyncio.sleep(0.1)          # half a line: not sent yet
                    w.write(b"ee\n")
                assert await asyncio.wait_for(r.content.readline(), 5) == b"three\n"
    finally:
        await srv.stop()
