"""The minimal lease writer: how many Lease PUTs/s this apiserver + etcd accept.

`python -m bench.writer --kubeconfig K --prefix P --count N --concurrency C --duration D
[--part i/k]` lists the leases P-000000.. (its share i of k), oldest renewTime first, then for D
seconds keeps C PUTs in flight, each worker renewing its own disjoint set of leases in turn (so no 409s between workers):
renewTime = now, body = the last object the apiserver returned less its managedFields (which the
apiserver keeps), as shardlet renews. Prints one JSON line.

Nothing else happens per request (no stage engine, no watch), so this is the ceiling a fake
kubelet's lease renewals can approach on this box, with the writer's own CPU reported beside it.
It writes the way shardlet does: shardlet's lean keep-alive client (shardlet.httpclient) and, when
the kubeconfig holds a client certificate, a service-account token (shardlet.satoken), which spares
the apiserver a certificate verification per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import time

import aiohttp
import orjson

from bench.leaseproto import CONTENT_TYPE as PROTOBUF
from bench.leaseproto import decode_lease, encode_lease
from shardlet.api import Kube, load_credentials
from shardlet.controllers.leases import lean, micro_time, renewed
from shardlet.httpclient import HttpPool, header_block
from shardlet.satoken import ensure_account, request_token

LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"


def parse_level(text: str) -> tuple[int, int, str]:
    """A writer level `[Px]C[pb]`: P processes (default 1) with C PUTs in flight each, in JSON, or
    in protobuf with the suffix `pb`. Raises ValueError naming the level."""
    body = text.strip()
    encoding = "protobuf" if body.endswith("pb") else "json"
    body = body.removesuffix("pb")
    p, sep, c = body.partition("x")
    if not (p.isdigit() and int(p) > 0 and (not sep or (c.isdigit() and int(c) > 0))):
        raise ValueError(f"writer level {text!r}: expected levels like 64, 2x64 or 64pb "
                         "(processes x in flight, pb = protobuf)")
    return (int(p), int(c), encoding) if sep else (1, int(p), encoding)


async def run(args: argparse.Namespace) -> dict[str, object]:
    creds = load_credentials(args.kubeconfig)
    i, k = (int(x) for x in args.part.split("/"))
    names = [f"{args.prefix}-{n:06d}" for n in range(args.count)][i::k]
    conn = aiohttp.TCPConnector(ssl=creds.ssl, limit=args.concurrency)
    headers = {"Accept": "application/json", "Content-Type": "application/json", "User-Agent": "bench-writer"}
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as s:
        cache: dict[str, dict[str, object]] = {}
        cont = ""
        while True:
            params = {"limit": "5000", **({"continue": cont} if cont else {})}
            async with s.get(creds.server + LEASES, params=params, headers=headers) as r:
                body = orjson.loads(await r.read())
            for it in body.get("items") or []:
                cache[it["metadata"]["name"]] = lean(it)
            cont = (body.get("metadata") or {}).get("continue") or ""
            if not cont:
                break
        # oldest renewTime first: taking over the live leases of Ready nodes (lease-hold's in-state
        # writer), the ones closest to expiry are renewed in the first round
        mine = sorted((n for n in names if n in cache),
                      key=lambda n: str((cache[n].get("spec") or {}).get("renewTime") or ""))
        if not mine:
            raise SystemExit(f"writer: no leases named {args.prefix}-* found")
        ctx, auth = creds.ssl, {"Authorization": f"Bearer {creds.token}"} if creds.token else {}
        if creds.ssl_without_cert is not None:
            kube = Kube(creds)
            try:
                await ensure_account(kube)
                token, _ = await request_token(kube)
            finally:
                await kube.close()
            ctx, auth = creds.ssl_without_cert, {"Authorization": f"Bearer {token}"}
        pool = HttpPool(creds.server, ctx, limit=args.concurrency, timeout=30)
        put_headers = {**headers, **auth}
        proto = args.encoding == "protobuf"
        if proto:   # the kubelet's encoding (no cheaper for this apiserver per write: bench/leaseproto.py)
            put_headers.update({"Accept": PROTOBUF, "Content-Type": PROTOBUF})
        encode, decode = (encode_lease, decode_lease) if proto else (orjson.dumps, orjson.loads)
        head = header_block(put_headers)   # formatted once, as shardlet.api does
        ok = conflicts = errors = 0
        lat: list[float] = []
        c = max(1, min(args.concurrency, len(mine)))
        start = time.monotonic()
        end = start + args.duration

        async def worker(w: int) -> None:
            nonlocal ok, conflicts, errors
            own = mine[w::c]
            j = 0
            while time.monotonic() < end:
                name = own[j % len(own)]
                j += 1
                obj = cache[name]
                obj["spec"]["renewTime"] = micro_time()  # type: ignore[index]
                t0 = time.monotonic()
                try:
                    status, raw, _ = await pool.request("PUT", f"{LEASES}/{name}", headers=head,
                                                        body=encode(obj))
                    if status == 200:
                        ok += 1
                        # JSON: the new resourceVersion is all that changed, as shardlet reads it
                        cache[name] = lean(decode(raw)) if proto else renewed(obj, raw)
                        lat.append(time.monotonic() - t0)
                    elif status == 409:
                        conflicts += 1
                        status, raw, _ = await pool.request("GET", f"{LEASES}/{name}", headers=head)
                        if status == 200:
                            cache[name] = lean(decode(raw))
                    else:
                        errors += 1
                except (TimeoutError, OSError):
                    errors += 1
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.gather(*(worker(w) for w in range(c)))
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        took = time.monotonic() - start
        pool.close()
    lat.sort()

    def q(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else None
    return {"part": args.part, "leases": len(mine), "concurrency": c, "seconds": round(took, 2), "ok": ok,
            "conflicts": conflicts, "errors": errors, "writes_per_s": round(ok / took, 1),
            "auth": "token" if auth else "certificate", "encoding": args.encoding,
            "latency_ms_p50": q(0.5), "latency_ms_p99": q(0.99),
            "writer_cpu_s": round(ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime, 2), "pid": os.getpid()}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.writer")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--prefix", default="bench-lease")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--duration", type=float, default=30)
    p.add_argument("--encoding", choices=("json", "protobuf"), default="json",
                   help="the PUTs' body and response: JSON, or protobuf as the kubelet sends")
    p.add_argument("--part", default="0/1", help="i/k: take every k-th lease starting at i")
    args = p.parse_args()
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
