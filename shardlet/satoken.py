"""A service-account token for the hot path, when shardlet was given a client certificate.

The apiserver verifies a client certificate's chain on every request, before anything else
(kubernetes#90533); in the bench's apiserver profile that was an eighth of its CPU while pods were
created. A bearer token is checked once and then cached for 10 s. So a shard that holds a
certificate (an admin kubeconfig, as kwokctl and kind hand out) asks for short-lived tokens of
the ServiceAccount ``kube-system/shardlet`` (TokenRequest) and renews them before they expire.

The account and its roles are the helm chart's least-privilege set: node leases only in
``kube-node-lease``, no node deletes. They are created only when the user asks (``run
--create-rbac``, ``shardlet rbac apply``; ``cluster up`` asks for its own cluster), never modify
an object shardlet does not manage (``app.kubernetes.io/managed-by``), and ``shardlet rbac
delete`` removes them. Without the account, or with ``--no-token-exchange``, the shard keeps
its certificate. Which requests carry the token is decided by what the role covers
(:func:`shardlet.api.token_covers`); a request the token is refused is an error, never sent again
with the certificate. In a cluster (the helm chart) shardlet runs on its own service account's
token and none of this happens.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from shardlet.api import ApiError, Kube
from shardlet.errors import UserError

log = structlog.get_logger("shardlet.satoken")

NAMESPACE = "kube-system"
NAME = "shardlet"
LEASE_NAMESPACE = "kube-node-lease"
LIFETIME = 3600          # seconds asked for; the apiserver may shorten it
MANAGED_BY = "app.kubernetes.io/managed-by"
_RBAC = "/apis/rbac.authorization.k8s.io/v1"

# the helm chart's cluster-wide rules with every option on but node deletes (deploy/helm/shardlet/
# templates/rbac.yaml); what a Stage needs beyond them goes with the kubeconfig's own credentials
RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": [""], "resources": ["nodes/status", "pods/status"], "verbs": ["patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "delete"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {"apiGroups": ["kwok.x-k8s.io"], "resources": ["stages", "metrics", "resourceusages", "clusterresourceusages",
                                                   "logs", "clusterlogs"],
     "verbs": ["get", "list", "watch"]},
]
LEASE_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list", "create", "update"]},
]


def load_rules(path: str | None) -> list[dict[str, Any]]:
    """Extra RBAC PolicyRules from a YAML list (``--rbac-extra-rules``, the chart's
    ``rbac.extraRules``): what Stages on other kinds need when shards run on the account's token."""
    if not path:
        return []
    import yaml

    try:
        with open(path) as f:
            rules = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"--rbac-extra-rules {path}: {e}") from None
    if not isinstance(rules, list) or not all(isinstance(r, dict) and isinstance(r.get("verbs"), list)
                                              for r in rules):
        raise UserError(f"--rbac-extra-rules {path}: must be a YAML list of RBAC rules, each with verbs")
    return rules


def _objects(extra_rules: list[dict[str, Any]] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(collection path, object) of everything the exchange needs, in creation order."""
    meta = {"name": NAME, "labels": {MANAGED_BY: "shardlet"}}
    subject = [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]
    rbac = "rbac.authorization.k8s.io/v1"
    return [
        (f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts",
         {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}),
        (f"{_RBAC}/clusterroles", {"apiVersion": rbac, "kind": "ClusterRole", "metadata": meta,
                                   "rules": RULES + list(extra_rules or ())}),
        (f"{_RBAC}/clusterrolebindings",
         {"apiVersion": rbac, "kind": "ClusterRoleBinding", "metadata": meta, "subjects": subject,
          "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME}}),
        (f"{_RBAC}/namespaces/{LEASE_NAMESPACE}/roles",
         {"apiVersion": rbac, "kind": "Role", "metadata": meta, "rules": LEASE_RULES}),
        (f"{_RBAC}/namespaces/{LEASE_NAMESPACE}/rolebindings",
         {"apiVersion": rbac, "kind": "RoleBinding", "metadata": meta, "subjects": subject,
          "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME}}),
    ]


def _describe(path: str, obj: dict[str, Any]) -> str:
    ns = path.split("/namespaces/")[1].split("/")[0] if "/namespaces/" in path else ""
    return f"{obj['kind']} {ns + '/' if ns else ''}{NAME}"


async def _get(kube: Kube, path: str) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = await kube.get(path)
        return obj
    except ApiError as e:
        if e.status == 404:
            return None
        raise


def _managed(obj: dict[str, Any]) -> bool:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(MANAGED_BY) == "shardlet"


async def ensure_account(kube: Kube, extra_rules: list[dict[str, Any]] | None = None) -> list[str]:
    """Create (or bring up to date) the ServiceAccount and its roles; what was created. An object
    of the same name that shardlet does not manage is left untouched: UserError naming it."""
    created = []
    for path, obj in _objects(extra_rules):
        what = _describe(path, obj)
        cur = await _get(kube, f"{path}/{NAME}")
        if cur is None:
            try:
                await kube.create(path, obj)
                created.append(what)
                continue
            except ApiError as e:
                if e.status != 409:     # another shard created it meanwhile: check it as found
                    raise
                cur = await _get(kube, f"{path}/{NAME}")
                if cur is None:
                    raise
        if not _managed(cur):
            raise UserError(f"{what}: exists and is not managed by shardlet (no label {MANAGED_BY}=shardlet); "
                            "left untouched: delete it, or run with --no-token-exchange")
        for field in ("rules", "subjects"):   # an older shardlet's role may differ: bring it up to date
            if field in obj and cur.get(field) != obj[field]:
                await kube.patch(f"{path}/{NAME}", {field: obj[field]}, "merge")
    return created


async def delete_account(kube: Kube) -> list[str]:
    """Delete what :func:`ensure_account` creates; one line per object (deleted, absent, or left
    because shardlet does not manage it)."""
    out = []
    for path, obj in reversed(_objects()):
        what = _describe(path, obj)
        cur = await _get(kube, f"{path}/{NAME}")
        if cur is None:
            out.append(f"{what}: not found")
        elif not _managed(cur):
            out.append(f"{what}: not managed by shardlet, left untouched")
        else:
            try:
                await kube.delete(f"{path}/{NAME}")
                out.append(f"{what}: deleted")
            except ApiError as e:
                if e.status != 404:
                    raise
                out.append(f"{what}: not found")
    return out


async def account_exists(kube: Kube) -> bool:
    return await _get(kube, f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{NAME}") is not None


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
    """Obtains the token and renews it at 70-80% of its life; on 401 (revoked) at once. With
    ``create`` it sets the account up first; without, it uses one only if it exists."""

    def __init__(self, kube: Kube, shard: str, *, create: bool = False,
                 extra_rules: list[dict[str, Any]] | None = None) -> None:
        self.kube = kube
        self.shard = shard
        self.create = create
        self.extra_rules = extra_rules
        self.task: asyncio.Task[None] | None = None
        self.renew_at = 0.0
        self.tokens = 0

    async def start(self) -> bool:
        """True when the shard now talks with a token; False: it stays on its certificate."""
        if not self.kube.client_cert:
            return False
        try:
            if self.create:
                created = await ensure_account(self.kube, self.extra_rules)
                if created:
                    log.info("rbac_created", shard=self.shard, objects=created)
            elif not await account_exists(self.kube):
                log.info("token_exchange_off", shard=self.shard,
                         reason=f"no ServiceAccount {NAMESPACE}/{NAME}: 'shardlet rbac apply' or run "
                                "--create-rbac sets it up (the apiserver then checks a token instead of the "
                                "certificate on every request)")
                return False
            await self._renew()
        except (ApiError, OSError, TimeoutError, UserError) as e:
            log.warning("token_exchange_unavailable", shard=self.shard, error=str(e)[:300])
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
            if wait > 0 and self.kube.token_in_use and not self.kube.token_stale:
                await asyncio.sleep(min(wait, 1.0))   # a 401 waits for the next token: notice it soon
                continue
            try:
                await self._renew()
                failures = 0
            except (ApiError, OSError, TimeoutError) as e:
                if isinstance(e, ApiError) and e.status == 404:
                    # the account was deleted ('shardlet rbac delete'): its tokens no longer work,
                    # and the user's own credentials are what is left, as without the exchange
                    log.warning("token_exchange_stopped", shard=self.shard, reason=f"{NAMESPACE}/{NAME} is gone")
                    self.kube.use_token(None)
                    return
                # hot-path requests fail meanwhile (401) and are retried by their callers
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


def shard_token_source(kubeconfig: str, *, create: bool, extra_rules: list[dict[str, Any]] | None = None
                       ) -> Callable[[], Awaitable[tuple[dict[str, Any], float]]]:
    """What a coordinator pushes to its Ray shards instead of the user's credentials: the
    apiserver's address and CA and a token of this account (TokenRequest, an hour), as
    ``(message, seconds valid)``. The account is set up first with ``create``; without it, and
    without the account, a UserError says what to do."""
    from shardlet.api import server_trust

    trust = server_trust(kubeconfig)
    kube: Kube | None = None

    async def fetch() -> tuple[dict[str, Any], float]:
        nonlocal kube
        try:
            if kube is None:
                k = Kube.from_kubeconfig(kubeconfig)
                if create:
                    made = await ensure_account(k, extra_rules)
                    if made:
                        log.info("rbac_created", objects=made)
                elif not await account_exists(k):
                    await k.close()
                    raise UserError(f"shards on Ray get a token of the ServiceAccount {NAMESPACE}/{NAME}, never the "
                                    "kubeconfig's own credentials: create it ('shardlet rbac apply' or run "
                                    "--create-rbac), or place a kubeconfig on every Ray host and pass "
                                    "--shard-kubeconfig PATH")
                kube = k
            token, valid = await request_token(kube)
        except ApiError as e:
            raise UserError(f"shard token for {NAMESPACE}/{NAME}: {e}") from None
        return {"trust": trust, "token": token}, valid
    return fetch
