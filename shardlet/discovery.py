"""Which REST resource serves a kind: the apiserver's discovery documents, cached.

A Stage names its resource as kwok does, ``resourceRef: {apiGroup, kind}``, where ``apiGroup``
is ``v1`` for the core group, ``GROUP/VERSION`` otherwise, or a bare ``GROUP`` (its preferred
version). An ``apply`` step names the object it writes by ``apiVersion`` and ``kind``. Both are
resolved here, from ``/api/v1`` and ``/apis/GROUP/VERSION``, the way client-go's REST mapper does,
so a CRD is playable as soon as the apiserver serves it: a kind that is not served yet is
answered with :class:`NotServed` and not cached, and the next lookup asks again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from shardlet.api import ApiError, Kube

__all__ = ["NODES", "PODS", "Discovery", "NotServed", "Resource"]


@dataclass(frozen=True, slots=True)
class Resource:
    """One REST resource: ``group_version`` (``v1``, ``apps/v1``), its kind and plural."""

    group_version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def base(self) -> str:
        return "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"

    def path(self, name: str = "", namespace: str = "", subresource: str = "") -> str:
        """The collection (no name; every namespace when ``namespace`` is empty) or one object."""
        p = self.base
        if self.namespaced and namespace:
            p += f"/namespaces/{quote(namespace)}"
        p += f"/{self.plural}"
        if name:
            p += f"/{quote(name)}"
        if subresource:
            p += f"/{subresource}"
        return p

    def __str__(self) -> str:
        return f"{self.kind} ({self.group_version}, {self.plural})"


class NotServed(LookupError):
    """The apiserver does not serve this kind (yet): a one-line reason."""


class Discovery:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._groups: dict[str, dict[str, Resource]] = {}   # group_version -> kind -> resource
        self._preferred: dict[str, str] = {}                 # bare group -> group_version

    async def resolve(self, api_group: str, kind: str) -> Resource:
        """The resource of ``kind`` in ``api_group`` (``v1``, ``GROUP/VERSION`` or ``GROUP``)."""
        gv = await self._group_version(api_group or "v1")
        kinds = self._groups.get(gv)
        if kinds is None:
            kinds = await self._fetch(gv)
        res = kinds.get(kind)
        if res is None:
            self._groups.pop(gv, None)   # a CRD may add the kind later: ask again next time
            raise NotServed(f"the apiserver serves no kind {kind} in {gv}")
        return res

    async def _group_version(self, api_group: str) -> str:
        if api_group == "v1" or "/" in api_group:
            return api_group
        gv = self._preferred.get(api_group)
        if gv is None:
            try:
                doc = await self.kube.get(f"/apis/{quote(api_group)}")
            except ApiError as e:
                if e.status == 404:
                    raise NotServed(f"the apiserver serves no API group {api_group}") from None
                raise
            gv = str(((doc or {}).get("preferredVersion") or {}).get("groupVersion") or "")
            if not gv:
                raise NotServed(f"API group {api_group} has no preferred version")
            self._preferred[api_group] = gv
        return gv

    async def _fetch(self, gv: str) -> dict[str, Resource]:
        path = "/api/v1" if gv == "v1" else f"/apis/{gv}"
        try:
            doc: Any = await self.kube.get(path)
        except ApiError as e:
            if e.status == 404:
                raise NotServed(f"the apiserver serves no API {gv}") from None
            raise
        kinds: dict[str, Resource] = {}
        for r in (doc or {}).get("resources") or ():
            name = r.get("name", "")
            if not name or "/" in name:   # subresources (pods/status) are not kinds of their own
                continue
            kinds.setdefault(str(r.get("kind", "")), Resource(gv, str(r.get("kind", "")), name, bool(r.get("namespaced"))))
        self._groups[gv] = kinds
        return kinds


# the two kinds the node and pod controllers play without asking discovery
NODES = Resource("v1", "Node", "nodes", False)
PODS = Resource("v1", "Pod", "pods", True)
