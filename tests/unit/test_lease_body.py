"""What a renewal sends and keeps: the Lease without managedFields, and only the new
resourceVersion taken from the apiserver's answer (no cluster; the e2e lease tests cover the
apiserver's side)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import orjson

from shardlet.api import ApiError
from shardlet.controllers.leases import LeaseController, LeaseControllerConfig, lean, resource_version

# as kube-apiserver v1.36 writes a Lease (compact JSON, ObjectMeta in its Go field order)
ANSWER = (b'{"kind":"Lease","apiVersion":"coordination.k8s.io/v1","metadata":{"name":"n1",'
          b'"namespace":"kube-node-lease","uid":"u-1","resourceVersion":"4711","creationTimestamp":'
          b'"2026-11-29T10:00:00Z","labels":{"resourceVersion":"x"},"ownerReferences":[{"apiVersion":"v1",'
          b'"kind":"Node","name":"n1","uid":"nu"}],"managedFields":[{"manager":"shardlet","operation":'
          b'"Update","apiVersion":"coordination.k8s.io/v1","time":"2026-11-29T10:00:00Z","fieldsType":'
          b'"FieldsV1","fieldsV1":{"f:spec":{"f:renewTime":{}}}}]},"spec":{"holderIdentity":"h",'
          b'"leaseDurationSeconds":40,"renewTime":"2026-11-29T10:00:00.000001Z"}}')


def test_the_objects_own_resource_version_is_found_before_any_label_of_that_name() -> None:
    assert resource_version(ANSWER) == "4711"
    assert resource_version(b'{"kind":"Status"}') is None
    assert resource_version(b'{"metadata":{"resourceVersion":"') is None   # cut short


def test_lean_drops_only_managed_fields() -> None:
    obj = orjson.loads(ANSWER)
    kept = lean(orjson.loads(ANSWER))
    assert "managedFields" not in kept["metadata"]
    del obj["metadata"]["managedFields"]
    assert kept == obj
    assert lean({"kind": "Lease"}) == {"kind": "Lease"}


class _Apiserver:
    """Answers lease requests the way kube-apiserver does for these cases."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.rv = 4711
        self.conflict_next = False

    async def create(self, _path: str, body: dict[str, Any]) -> dict[str, Any]:
        raise ApiError(409, "AlreadyExists", "exists")

    async def get(self, _path: str) -> dict[str, Any]:
        return orjson.loads(ANSWER.replace(b'"4711"', b'"%d"' % self.rv))

    async def replace(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return orjson.loads(await self.request_bytes("PUT", path, body=orjson.dumps(body)))

    async def request_bytes(self, method: str, _path: str, *, body: bytes) -> bytes:
        sent = orjson.loads(body)
        self.sent.append(sent)
        if self.conflict_next or sent["metadata"]["resourceVersion"] != str(self.rv):
            self.conflict_next = False
            self.rv += 1
            raise ApiError(409, "Conflict", "the object has been modified")
        self.rv += 1
        answer = dict(sent, metadata=dict(sent["metadata"], resourceVersion=str(self.rv),
                                          managedFields=[{"manager": "shardlet"}]))
        return orjson.dumps(answer)


async def test_renewals_send_no_managed_fields_and_carry_the_answers_resource_version() -> None:
    api = _Apiserver()
    r = LeaseController(cast(Any, api), LeaseControllerConfig("h"))
    r.uids["n1"] = "nu"
    await r._renew_once("n1")            # adopts the existing lease (409 on create, GET, PUT)
    await r._renew_once("n1")
    await r._renew_once("n1")
    assert [s["metadata"]["resourceVersion"] for s in api.sent] == ["4711", "4712", "4713"]
    assert all("managedFields" not in s["metadata"] for s in api.sent)
    assert r.leases["n1"]["metadata"]["resourceVersion"] == "4714"
    assert "managedFields" not in r.leases["n1"]["metadata"]
    # someone else wrote it: the 409 re-reads and the next renewal goes with the new version
    api.conflict_next = True
    await r._renew_once("n1")
    await r._renew_once("n1")
    assert api.sent[-1]["metadata"]["resourceVersion"] == str(api.rv - 1)
    assert r.leases["n1"]["metadata"]["resourceVersion"] == str(api.rv)


def test_a_free_calm_slot_is_taken_without_waiting() -> None:
    async def go() -> tuple[bool, bool]:
        r = LeaseController(cast(Any, None), LeaseControllerConfig("h", concurrency=4, calm=1))
        first = await r._calm_slot(due=0.0)       # long past due, but a slot is free
        second = await asyncio.wait_for(r._calm_slot(due=0.0), 1)   # none free and urgent: goes at once
        return first, second

    assert asyncio.run(go()) == (True, False)


async def test_release_clears_a_lease_a_late_renewal_wrote_after_our_copy() -> None:
    """A renewal cancelled at shutdown may land after the copy release_all sends: that PUT
    conflicts, and the lease is read again and cleared while it is still ours."""
    class Api:
        def __init__(self) -> None:
            self.live = lean(orjson.loads(ANSWER))
            self.live["metadata"]["resourceVersion"] = "5000"      # the late renewal's write
            self.puts: list[dict[str, Any]] = []

        async def replace(self, _path: str, body: dict[str, Any]) -> Any:
            self.puts.append(orjson.loads(orjson.dumps(body)))
            if body["metadata"]["resourceVersion"] != self.live["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", "the object has been modified")
            self.live = body
            return body

        async def get(self, _path: str) -> dict[str, Any]:
            return orjson.loads(orjson.dumps(self.live))

    api = Api()
    r = LeaseController(cast(Any, api), LeaseControllerConfig("h"))
    r.leases["n1"] = lean(orjson.loads(ANSWER))                  # our copy: resourceVersion 4711
    r.held.add("n1")
    await r.release_all()
    assert [p["metadata"]["resourceVersion"] for p in api.puts] == ["4711", "5000"]
    assert api.live["spec"]["holderIdentity"] is None
    # a lease another holder took meanwhile is left to it
    api.live = dict(api.live, spec=dict(api.live["spec"], holderIdentity="other"), metadata=dict(api.live["metadata"], resourceVersion="6000"))
    await r.release_all()
    assert api.live["spec"]["holderIdentity"] == "other"
