"""The raw writer's protobuf Lease codec against the real kube-apiserver: the bytes it sends are
accepted as the Lease they mean, and what the apiserver sends back decodes to what JSON says."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import orjson

from bench.leaseproto import CONTENT_TYPE, decode_lease, decode_status, encode_lease
from shardlet.api import load_credentials
from shardlet.controllers.leases import micro_time
from shardlet.controlplane.cluster import Cluster
from shardlet.httpclient import HttpPool

LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
JSON = {"Accept": "application/json", "Content-Type": "application/json"}
PROTO = {"Accept": CONTENT_TYPE, "Content-Type": CONTENT_TYPE}


def _without_managed(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["metadata"].pop("managedFields", None)
    return out


def test_a_protobuf_put_is_the_lease_it_encodes_and_keeps_what_it_does_not_carry(cluster: Cluster) -> None:
    async def run() -> None:
        creds = load_credentials(str(cluster.kubeconfig))
        pool = HttpPool(cluster.server(), creds.ssl, limit=2)
        try:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": "proto-lease", "labels": {"app": "proto"}, "annotations": {"a": "ü"},
                                 "finalizers": ["example.com/keep"]},
                    "spec": {"holderIdentity": "json", "leaseDurationSeconds": 40, "renewTime": micro_time()}}
            status, raw, _ = await pool.request("POST", LEASES, headers=JSON, body=orjson.dumps(body))
            assert status == 201, raw
            created = orjson.loads(raw)

            sent = copy.deepcopy(created)
            sent["spec"].update(holderIdentity="shardlet-0", renewTime=micro_time(), acquireTime=micro_time(),
                                leaseTransitions=1)
            status, raw, _ = await pool.request("PUT", f"{LEASES}/proto-lease", headers=PROTO, body=encode_lease(sent))
            assert status == 200, raw[:300]
            answered = decode_lease(raw)
            status, raw, _ = await pool.request("GET", f"{LEASES}/proto-lease", headers=JSON)
            stored = orjson.loads(raw)
            # the protobuf answer is what a JSON read says, field for field
            assert answered == _without_managed(stored), (answered, stored)
            assert stored["spec"] == sent["spec"]
            assert stored["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
            for kept in ("labels", "annotations", "finalizers", "uid", "creationTimestamp"):
                assert stored["metadata"][kept] == created["metadata"][kept], kept
            # the write carried no managedFields: the apiserver kept the live ones and added its own
            managers = {e["manager"] for e in created["metadata"]["managedFields"]}
            assert managers and managers <= {e["manager"] for e in stored["metadata"]["managedFields"]}

            # a stale resourceVersion: 409, and the protobuf Status says why
            status, raw, _ = await pool.request("PUT", f"{LEASES}/proto-lease", headers=PROTO, body=encode_lease(sent))
            assert status == 409
            st = decode_status(raw)
            assert st["code"] == 409 and st["reason"] == "Conflict" and "proto-lease" in st["message"]

            done = dict(stored, metadata=dict(stored["metadata"], finalizers=[]))
            status, raw, _ = await pool.request("PUT", f"{LEASES}/proto-lease", headers=PROTO, body=encode_lease(done))
            assert status == 200 and "finalizers" not in decode_lease(raw)["metadata"]
        finally:
            await pool.request("DELETE", f"{LEASES}/proto-lease", headers=JSON)
            pool.close()
    asyncio.run(run())
