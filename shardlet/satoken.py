"""A service-account token for the hot path, when shardlet was given a client certificate.

The apiserver verifies a client certificate's chain on every request, before anything else
(kubernetes#90533); in the bench's apiserver profile that was an eighth of its CPU while pods were
created. A bearer token is checked once and then cached for 10 s. So a shard that holds a
certificate (an admin kubeconfig, as kwokctl and kind hand out) makes itself a ServiceAccount
with a role covering what shardlet does, asks for short-lived tokens (TokenRequest) and renews
them before they expire. Anything the token may not do goes out again with the certificate
(shardlet.api), and without the rights to set this up, or with `--no-token-exchange`, the shard
simply keeps using the certificate. In a cluster (the helm chart) shardlet already runs on its
service account's token and none of this happens.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from typing import Any

import structlog

from shardlet.api import ApiError, Kube

log = structlog.get_logger("shardlet.satoken")

NAMESPACE = "kube-system"
NAME = "shardlet"
LIFETIME = 3600          # seconds asked for; the apiserver may shorten it
_RBAC = "/apis/rbac.authorization.k8s.io/v1"

# what `shardlet run` does with any flags (the helm chart's rules, all options on); a Stage that
# needs more goes out with the certificate
RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["nodes/status", "pods/status"], "verbs": ["patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "delete"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]},
    {"apiGroups": ["kwok.x-k8s.io"], "resources": ["stages", "metrics", "resourceusages", "clusterresourceusages"],
     "verbs": ["get", "list", "watch"]},
]


def _objects() -> list[tuple[str, dict[str, Any]]]:
    labels = {"app.kubernetes.io/managed-by": "shardlet"}
    ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME}
    subject = {"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}
    return [
        (f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts",
         {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": NAME, "labels": labels}}),
        (f"{_RBAC}/clusterroles",
         {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
          "metadata": {"name": NAME, "labels": labels}, "rules": RULES}),
        (f"{_RBAC}/clusterrolebindings",
         {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
          "metadata": {"name": NAME, "labels": labels}, "roleRef": ref, "subjects": [subject]}),
    ]


async def ensure_account(kube: Kube) -> None:
    """Create the ServiceAccount and its ClusterRole(Binding) unless they exist."""
    for path, obj in _objects():
        try:
            await kube.create(path, obj)
        except ApiError as e:
            if e.status != 409:
                raise
        if obj["kind"] == "ClusterRole":
            # an older shardlet's role may lack a rule: bring it up to date (idempotent)
            await kube.patch(f"{path}/{NAME}", {"rules": RULES}, "merge")


async def request_token(kube: Kube, seconds: int = LIFETIME) -> tuple[str, float]:
    """(token, seconds it is valid for) from the TokenRequest API."""
    res = await kube.create(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{NAME}/token",
                            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                             "spec": {"expirationSeconds": seconds}})
    st = res.get("status") or {}
    token = st.get("token")
    if not token:
        raise ApiError(0, "NoToken", "TokenRequest answered without a token")
    valid = float(seconds)
    exp = st.get("expirationTimestamp")
    if exp:
        try:
            when = dt.datetime.strptime(exp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
            valid = (when - dt.datetime.now(dt.UTC)).total_seconds()
        except ValueError:
            pass
    return str(token), valid


class TokenKeeper:
    """Obtains the token and renews it at 70-80% of its life; on 401 (revoked) at once."""

    def __init__(self, kube: Kube, shard: str) -> None:
        self.kube = kube
        self.shard = shard
        self.task: asyncio.Task[None] | None = None
        self.renew_at = 0.0
        self.tokens = 0

    async def start(self) -> bool:
        """True when the shard now talks with a token; False: it stays on its certificate."""
        if not self.kube.client_cert:
            return False
        try:
            await ensure_account(self.kube)
            await self._renew()
        except (ApiError, OSError, TimeoutError) as e:
            log.info("token_exchange_unavailable", shard=self.shard, error=str(e)[:200])
            return False
        self.task = asyncio.create_task(self._keep())
        log.info("token_exchange", shard=self.shard, account=f"{NAMESPACE}/{NAME}",
                 renew_in=round(self.renew_at - time.monotonic()))
        return True

    async def _renew(self) -> None:
        token, valid = await request_token(self.kube)
        self.kube.use_token(token)
        self.tokens += 1
        self.renew_at = time.monotonic() + valid * (0.7 + 0.1 * random.random())

    async def _keep(self) -> None:
        failures = 0
        while True:
            wait = self.renew_at - time.monotonic()
            if wait > 0 and self.kube.token_in_use:
                await asyncio.sleep(min(wait, 5.0))
                continue
            try:
                await self._renew()
                failures = 0
            except (ApiError, OSError, TimeoutError) as e:
                # the certificate carries on meanwhile (requests fall back by themselves)
                failures += 1
                log.warning("token_renew_failed", shard=self.shard, error=str(e)[:200])
                await asyncio.sleep(min(60.0, 2.0 ** failures))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
            self.task = None
        self.kube.use_token(None)
