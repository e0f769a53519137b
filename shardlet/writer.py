"""A Stage's rendered actions, sent to the apiserver in kwok's order.

One writer serves every resource a shard plays (Node, Pod and the generic Stage controllers), so
patches, deletes, events and ``apply`` behave the same on every kind:

* a patch goes to the object's own path (or its ``subresource``), as the Stage's
  ``impersonation`` user when it names one;
* ``apply`` creates the object the template renders, of whatever kind and namespace it names
  (the played object's namespace when it names none), and patches it when it already exists
  (kwok's ``pkg/utils/lifecycle/apply.go``); with a ``subresource`` it only patches;
* a delete has grace period 0 and the object's uid as precondition;
* events are best effort, as in the kubelet: a failed event never fails the stage.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import structlog

from shardlet.api import ApiError, Kube
from shardlet.discovery import Discovery, NotServed, Resource
from shardlet.stages.engine import Actions, Apply, Delete, Event, Patch
from shardlet.stages.model import StageError

log = structlog.get_logger("shardlet.writer")

FIELD_MANAGER = "shardlet"


class Writer:
    def __init__(self, kube: Kube, discovery: Discovery, source: str) -> None:
        self.kube = kube
        self.discovery = discovery
        self.source = source   # the events' source.host

    async def play(self, res: Resource, obj: dict[str, Any], actions: Actions, stage: str) -> dict[str, Any] | None:
        """Send ``actions`` for ``obj``; the object after the last patch (None once deleted).

        ApiErrors propagate (the caller retries or gives up); an ``apply`` whose template names
        no kind the apiserver serves raises StageError naming the stage.
        """
        meta = obj.get("metadata") or {}
        name, ns = meta.get("name", ""), meta.get("namespace", "")
        steps: list[Any] = list(actions.ordered)
        if not steps:
            steps = ([actions.event] if actions.event is not None else []) + list(actions.patches)
            if actions.delete:
                steps.append(Delete())
        result: dict[str, Any] | None = obj
        for step in steps:
            if isinstance(step, Event):
                await self.event(res, obj, step)
            elif isinstance(step, Patch):
                result = await self._patch(res.path(name, ns, step.subresource or ""), step, f"patch {res.kind} {name}")
            elif isinstance(step, Apply):
                await self._apply(step, ns, stage)
            elif isinstance(step, Delete):
                body: dict[str, Any] = {"gracePeriodSeconds": 0}
                if meta.get("uid"):
                    body["preconditions"] = {"uid": meta["uid"]}
                await self._delete(res.path(name, ns), body, f"delete {res.kind} {name}")
                result = None
        return result

    async def _patch(self, path: str, step: Patch, what: str) -> dict[str, Any]:
        kube = self.kube
        out: dict[str, Any] = await kube.retrying(
            lambda: kube.patch(path, step.body, step.type, step.impersonation), what=what)
        return out

    async def _delete(self, path: str, body: dict[str, Any], what: str) -> None:
        kube = self.kube
        await kube.retrying(lambda: kube.delete(path, body), what=what)

    async def _apply(self, step: Apply, source_ns: str, stage: str) -> dict[str, Any]:
        where = f'stage "{stage}": {step.field or "apply"}'
        body = step.body
        if not isinstance(body, dict) or not body.get("apiVersion") or not body.get("kind"):
            raise StageError(f"{where}: the template must render an object with apiVersion and kind")
        try:
            res = await self.discovery.resolve(str(body["apiVersion"]), str(body["kind"]))
        except NotServed as e:
            raise StageError(f"{where}: {e}") from None
        meta = body.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise StageError(f"{where}: metadata must be a map")
        ns = ""
        if res.namespaced:
            ns = meta.get("namespace") or source_ns
            meta["namespace"] = ns
        name = str(meta.get("name") or "")
        params = {"fieldManager": FIELD_MANAGER, "force": "true"} if step.type == "apply" else {}
        kube, who = self.kube, step.impersonation
        target = f"{res.kind} {ns + '/' if ns else ''}{name}"
        out: dict[str, Any]
        try:
            if step.subresource:
                out = await kube.retrying(
                    lambda: kube.patch(res.path(name, ns, step.subresource or ""), body, step.type, who, **params),
                    what=f"apply {target}")
                return out
            try:
                out = await kube.retrying(lambda: kube.create(res.path("", ns), body, who), what=f"create {target}")
                return out
            except ApiError as e:
                if e.status != 409 or not name:
                    raise
            out = await kube.retrying(lambda: kube.patch(res.path(name, ns), body, step.type, who, **params),
                                      what=f"apply {target}")
            return out
        except ApiError as e:
            # a refusal (RBAC, validation) names the step and the object it was writing
            raise ApiError(e.status, e.reason, f"{step.field or 'apply'} ({target}): {e.message}",
                           e.retry_after) from None

    async def ensure(self, body: dict[str, Any]) -> None:
        """Create ``body`` unless an object of its name exists (a stage set's StorageClass)."""
        res = await self.discovery.resolve(str(body.get("apiVersion", "")), str(body.get("kind", "")))
        ns = (body.get("metadata") or {}).get("namespace", "") if res.namespaced else ""
        try:
            await self.kube.retrying(lambda: self.kube.create(res.path("", ns), body), what=f"create {res.kind}")
        except ApiError as e:
            if e.status != 409:
                raise

    async def event(self, res: Resource, obj: dict[str, Any], ev: Event) -> None:
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace") or "default"
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {"generateName": f"{meta.get('name')}.", "namespace": ns},
            "involvedObject": {"apiVersion": res.group_version, "kind": res.kind, "name": meta.get("name"),
                               "namespace": meta.get("namespace", ""), "uid": meta.get("uid")},
            "type": ev.type or "Normal", "reason": ev.reason, "message": ev.message,
            "source": {"component": "shardlet", "host": self.source},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        try:
            await self.kube.create(f"/api/v1/namespaces/{ns}/events", body)
        except ApiError as e:  # events are best effort, as in the kubelet
            log.debug("event_failed", shard=self.source, object=meta.get("name"), status=e.status)
