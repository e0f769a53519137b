"""Which requests carry the exchanged service-account token: exactly what its role covers
(shardlet.satoken.RULES / LEASE_RULES), so no request is refused for the role and then sent again
as someone else; everything else goes with the kubeconfig's own credentials."""

from __future__ import annotations

import pytest

from shardlet.api import token_covers
from shardlet.satoken import LEASE_NAMESPACE, LEASE_RULES, RULES


@pytest.mark.parametrize(("method", "path", "covered"), [
    ("GET", "/api/v1/nodes", True),
    ("PATCH", "/api/v1/nodes/n-1/status", True),
    ("PATCH", "/api/v1/nodes/n-1", True),                 # bucket labels
    ("DELETE", "/api/v1/nodes/n-1", False),               # not in the least-privilege role
    ("GET", "/api/v1/pods", True),
    ("PATCH", "/api/v1/namespaces/ns/pods/p/status", True),
    ("DELETE", "/api/v1/namespaces/ns/pods/p", True),
    ("POST", "/api/v1/namespaces/ns/pods/p/eviction", False),
    ("GET", "/api/v1/namespaces/ns/pods/p/log", False),
    ("POST", "/api/v1/namespaces/ns/events", True),
    ("GET", "/api/v1/namespaces/ns/events", False),
    ("POST", "/api/v1/namespaces/ns/pods", False),         # a Stage's apply creating a pod
    ("PATCH", "/api/v1/namespaces/ns/pods/p", False),
    ("PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n-1", True),
    ("PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-scheduler", False),
    ("GET", "/apis/kwok.x-k8s.io/v1alpha1/stages", True),
    ("GET", "/api/v1/namespaces/ns/configmaps", False),   # a generic Stage's kind: the user's credentials
    ("GET", "/api/v1/namespaces/ns/secrets", False),
    ("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", False),
])
def test_the_token_goes_only_where_its_role_reaches(method: str, path: str, covered: bool) -> None:
    assert token_covers(method, path) is covered


def test_the_role_is_the_least_privilege_set() -> None:
    verbs = {(g, r): set(v["verbs"]) for v in RULES for g in v["apiGroups"] for r in v["resources"]}
    assert "delete" not in verbs[("", "nodes")]
    assert not any(r == "leases" for _, r in verbs)                # leases: only in their namespace
    assert LEASE_NAMESPACE == "kube-node-lease" and LEASE_RULES[0]["resources"] == ["leases"]
    assert not any(r in ("secrets", "configmaps", "*") for _, r in verbs)
