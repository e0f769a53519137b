"""Credentials against the real apiserver, on a cluster of this module's own (it deletes and
fakes the objects the others' shardlet would use): a client-certificate run creates no RBAC object
unless asked; asked, it creates the least-privilege set, uses its token for the hot path, and
`shardlet rbac delete` removes it; an object of the same name that shardlet does not manage is
never modified; a refused token is an error (or a fresh token after 401), never the certificate."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from shardlet.api import ApiError, Credentials, Kube
from shardlet.controlplane.cluster import Cluster
from shardlet.satoken import NAME, NAMESPACE, TokenKeeper

from .conftest import SHARDLET, Kubectl, ShardletProcess, poll

pytestmark = pytest.mark.e2e

SA_USER = f"system:serviceaccount:{NAMESPACE}:{NAME}"
OBJECTS = [("serviceaccount", NAMESPACE), ("clusterrole", ""), ("clusterrolebinding", ""),
           ("role", "kube-node-lease"), ("rolebinding", "kube-node-lease")]


@pytest.fixture(scope="module")
def own(bin_dir: Path) -> Iterator[Cluster]:
    c = Cluster(f"e2e-token-{os.getpid()}")
    c.up(timeout=180)
    try:
        yield c
    finally:
        c.down()


def present(k: Kubectl) -> list[str]:
    out = []
    for kind, ns in OBJECTS:
        p = k.run("get", kind, NAME, *(["-n", ns] if ns else []), check=False)
        if p.returncode == 0:
            out.append(kind)
    return out


def rbac(c: Cluster, action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SHARDLET, "rbac", action, "--kubeconfig", str(c.kubeconfig)], capture_output=True,
                          text=True, timeout=120)


def can(k: Kubectl, *args: str) -> bool:
    return k.run("auth", "can-i", *args, f"--as={SA_USER}", check=False).stdout.strip() == "yes"


def test_without_opt_in_a_run_creates_no_rbac_object(own: Cluster, tmp_path: Path) -> None:
    k = Kubectl(own.kubeconfig)
    sp = ShardletProcess(own.kubeconfig, tmp_path / "run.log")
    try:
        off = sp.wait_for("token_exchange_off", 60)
        sp.wait_for("shard_ready", 60)
    finally:
        sp.stop()
    assert "rbac apply" in off["reason"]
    assert present(k) == []


def test_opt_in_creates_the_least_privilege_set_and_rbac_delete_removes_it(own: Cluster, tmp_path: Path) -> None:
    k = Kubectl(own.kubeconfig)
    sp = ShardletProcess(own.kubeconfig, tmp_path / "run.log", "--create-rbac")
    try:
        assert sp.wait_for("token_exchange", 60)["account"] == f"{NAMESPACE}/{NAME}"
        created = sp.wait_for("rbac_created", 10)["objects"]
        sp.wait_for("shard_ready", 60)
    finally:
        sp.stop()
    assert len(created) == 5 and present(k) == [kind for kind, _ in OBJECTS]
    # RBAC reaches new bindings through an informer: the first answers may lag
    poll(lambda: can(k, "update", "leases", "-n", "kube-node-lease"), 20, what="lease rights in kube-node-lease")
    assert not can(k, "update", "leases", "-n", "kube-system")      # leader-election leases: no
    assert not can(k, "delete", "nodes")
    assert can(k, "patch", "pods", "--subresource=status") and not can(k, "get", "secrets", "-n", "kube-system")
    out = rbac(own, "delete")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(": deleted") == 5, out.stdout
    assert present(k) == []


def test_an_object_shardlet_does_not_manage_is_left_untouched(own: Cluster) -> None:
    k = Kubectl(own.kubeconfig)
    k.apply(f"""
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: {NAME}}}
rules: [{{apiGroups: [""], resources: [configmaps], verbs: [get]}}]
""")
    try:
        out = rbac(own, "apply")
        assert out.returncode != 0
        err = out.stderr.strip().splitlines()
        assert err == [f"shardlet: error: ClusterRole {NAME}: exists and is not managed by shardlet (no label "
                       "app.kubernetes.io/managed-by=shardlet); left untouched: delete it, or run with "
                       "--no-token-exchange"], out.stderr
        assert k.json("get", "clusterrole", NAME)["rules"] == [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]
        out = rbac(own, "delete")
        assert f"ClusterRole {NAME}: not managed by shardlet, left untouched" in out.stdout, out.stdout
        assert "ServiceAccount kube-system/shardlet: deleted" in out.stdout    # the one apply created
        assert present(k) == ["clusterrole"]
    finally:
        k.run("delete", "clusterrole", NAME, check=False)


def test_a_refused_token_is_an_error_or_a_fresh_token_never_the_certificate(own: Cluster) -> None:
    k = Kubectl(own.kubeconfig)

    async def go() -> None:
        kube = Kube.from_kubeconfig(str(own.kubeconfig))
        keeper = TokenKeeper(kube, "e2e-token", create=True)
        try:
            assert kube.client_cert and await keeper.start() and kube.token_in_use

            async def nodes_listed() -> bool:    # RBAC reaches a new binding through an informer
                try:
                    return bool((await kube.get("/api/v1/nodes"))["kind"] == "NodeList")
                except ApiError as e:
                    assert e.status == 403, e
                    await asyncio.sleep(0.2)
                    return False
            for _ in range(100):
                if await nodes_listed():
                    break
            else:
                raise AssertionError("the token was never allowed to list nodes")
            # the role loses pods (an admin edits it): a pod list is refused as the service
            # account, an error, not sent again with the certificate
            k.run("patch", "clusterrole", NAME, "--type=json", "-p",
                  '[{"op": "replace", "path": "/rules/2/verbs", "value": ["delete"]}]')
            refused0, errors = kube.token_refused, []
            for _ in range(100):
                try:
                    await kube.get("/api/v1/namespaces/default/pods")
                except ApiError as e:
                    errors.append(e)
                    break
                await asyncio.sleep(0.2)           # RBAC reaches the edit through an informer
            assert errors and errors[0].status == 403 and SA_USER in errors[0].message, errors
            assert kube.token_refused == refused0 + 1
            # `rbac apply` brings a managed role back to its rules
            assert rbac(own, "apply").returncode == 0
            for _ in range(100):
                try:
                    await kube.get("/api/v1/namespaces/default/pods")
                    break
                except ApiError:
                    await asyncio.sleep(0.2)
            else:
                raise AssertionError("pods never listable again after rbac apply")
            refused0 = kube.token_refused - 1
            # a secret is not the hot path: the kubeconfig's own credentials, by design
            assert (await kube.get(f"/api/v1/namespaces/{NAMESPACE}/secrets"))["kind"] == "SecretList"
            assert kube.token_refused == refused0 + 1
            # a token the apiserver no longer takes (401): the same request again with a fresh one
            minted = keeper.tokens
            kube.use_token("not-a-valid-token")
            assert (await kube.get("/api/v1/nodes"))["kind"] == "NodeList"
            assert keeper.tokens == minted + 1 and kube.token_refused == refused0 + 2 and kube.token_in_use
        finally:
            await keeper.stop()
            await kube.close()
        assert not kube.token_in_use
    asyncio.run(go())
    assert rbac(own, "delete").returncode == 0


def test_no_exchange_without_a_client_certificate(own: Cluster) -> None:
    async def go() -> None:
        admin = Kube.from_kubeconfig(str(own.kubeconfig))
        keeper = TokenKeeper(admin, "e2e-token-src", create=True)
        try:
            assert await keeper.start()
            token = admin._token.value
            assert token
            ctx = admin.creds.ssl_without_cert
            assert isinstance(ctx, ssl.SSLContext)
            # a kubeconfig that already holds a token (as in a pod) is used as it is
            plain = Kube(Credentials(server=admin.base, ssl=ctx, token=token))
            other = TokenKeeper(plain, "e2e-token-plain", create=True)
            try:
                assert not plain.client_cert
                assert not await other.start()
                assert not plain.token_in_use
                res = await plain.create("/apis/authentication.k8s.io/v1/selfsubjectreviews",
                                         {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
                assert res["status"]["userInfo"]["username"] == SA_USER
            finally:
                await plain.close()
        finally:
            await keeper.stop()
            await admin.close()
    asyncio.run(go())
    assert rbac(own, "delete").returncode == 0


def _nobody_kubeconfig(c: Cluster, k: Kubectl, path: Path) -> Path:
    """A kubeconfig for a ServiceAccount with no rights at all."""
    import yaml
    k.run("create", "serviceaccount", "nobody", "-n", "default", check=False)
    token = k.run("create", "token", "nobody", "-n", "default", "--duration=1h").stdout.strip()
    cfg = yaml.safe_load(c.kubeconfig.read_text())
    cfg["users"] = [{"name": "nobody", "user": {"token": token}}]
    cfg["contexts"][0]["context"]["user"] = "nobody"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_start_that_cannot_finish_stops_on_sigterm_and_times_out_saying_why(own: Cluster, tmp_path: Path) -> None:
    k = Kubectl(own.kubeconfig)
    kc = _nobody_kubeconfig(own, k, tmp_path / "nobody.kubeconfig")
    sp = ShardletProcess(kc, tmp_path / "sigterm.log")
    try:
        sp.wait_for("watch_error", 60, watch="nodes", status=403)
    finally:
        rc = sp.stop()         # SIGTERM, 30 s before SIGKILL
    assert rc == 0, sp.tail()
    stopped = [e for e in sp.events() if e.get("event") == "stopped_while_starting"]
    assert stopped and stopped[0]["waiting_for"].startswith("the node list (403 Forbidden"), sp.tail()
    # past the Stage list's wait for the CRD (10 s): at the node list
    p = subprocess.run([*SHARDLET, "run", "--kubeconfig", str(kc), "--start-timeout", "20"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 1
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("shardlet: error: shard shardlet-0: not ready after 20s: the node list (403 Forbidden: "
                           'nodes is forbidden: User "system:serviceaccount:default:nobody"'), p.stderr[-2000:]
