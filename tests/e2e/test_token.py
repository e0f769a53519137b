"""A shard given a client certificate sends its requests with a service-account token, against
the real apiserver: who the apiserver says it is, what happens outside the role, and after the
token stops working."""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any

import pytest

from shardlet.api import Credentials, Kube
from shardlet.controlplane.cluster import Cluster
from shardlet.satoken import NAME, NAMESPACE, TokenKeeper

from .conftest import Kubectl, ShardletProcess

pytestmark = pytest.mark.e2e

SA_USER = f"system:serviceaccount:{NAMESPACE}:{NAME}"


async def whoami(kube: Kube) -> str:
    res: dict[str, Any] = await kube.create("/apis/authentication.k8s.io/v1/selfsubjectreviews",
                                            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    return str(res["status"]["userInfo"]["username"])


async def until(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.2)


def test_the_shardlet_process_talks_with_the_token(shardlet: ShardletProcess, kubectl: Kubectl) -> None:
    ev = shardlet.wait_for("token_exchange", 60)
    assert ev["account"] == f"{NAMESPACE}/{NAME}"
    sa = kubectl.json("get", "serviceaccount", NAME, "-n", NAMESPACE)
    assert sa["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "shardlet"
    role = kubectl.json("get", "clusterrole", NAME)
    assert any("pods/status" in r["resources"] and r["verbs"] == ["patch"] for r in role["rules"])


def test_token_identity_fallback_outside_the_role_and_renewal_after_revocation(cluster: Cluster) -> None:
    async def go() -> None:
        kube = Kube.from_kubeconfig(str(cluster.kubeconfig))
        keeper = TokenKeeper(kube, "e2e-token")
        try:
            assert kube.client_cert
            assert await keeper.start()
            assert kube.token_in_use
            # RBAC reaches the new binding through an informer: allow it a moment
            await until(lambda: _is(whoami(kube), SA_USER), 20, "requests authenticated as the service account")
            # secrets are outside the role: the request goes again with the certificate
            before = kube.token_fallbacks
            res = await kube.get(f"/api/v1/namespaces/{NAMESPACE}/secrets")
            assert res["kind"] == "SecretList"
            assert kube.token_fallbacks == before + 1
            # a token the apiserver refuses (revoked, expired): requests go on with the certificate
            # and the keeper fetches a new token
            kube.use_token("not-a-valid-token")
            assert await whoami(kube) != SA_USER
            minted = keeper.tokens
            await until(lambda: _true(kube.token_in_use and keeper.tokens > minted), 30, "a new token")
            assert await whoami(kube) == SA_USER
        finally:
            await keeper.stop()
            await kube.close()
        assert not kube.token_in_use
    asyncio.run(go())


def test_no_exchange_without_a_client_certificate(cluster: Cluster) -> None:
    async def go() -> None:
        admin = Kube.from_kubeconfig(str(cluster.kubeconfig))
        keeper = TokenKeeper(admin, "e2e-token-src")
        try:
            assert await keeper.start()
            token = admin._token.value
            assert token
            ctx = admin.creds.ssl_without_cert
            assert isinstance(ctx, ssl.SSLContext)
            # a kubeconfig that already holds a token (as in a pod) is used as it is
            plain = Kube(Credentials(server=admin.base, ssl=ctx, token=token))
            other = TokenKeeper(plain, "e2e-token-plain")
            try:
                assert not plain.client_cert
                assert not await other.start()
                assert not plain.token_in_use
                assert await whoami(plain) == SA_USER
            finally:
                await plain.close()
        finally:
            await keeper.stop()
            await admin.close()
    asyncio.run(go())


async def _is(c: Any, want: str) -> bool:
    return bool(await c == want)


async def _true(v: bool) -> bool:
    return v
