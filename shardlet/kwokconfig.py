"""kwok's configuration file, read by ``--config`` beside shardlet's own flat map of flags.

A kwok user's ``--config`` holds YAML documents: a ``KwokConfiguration``
(``config.kwok.x-k8s.io/v1alpha1``) whose ``options`` are kwok's flags, and Stage (and other kwok)
objects. Each option shardlet honours becomes the flag it stands for (the command line still
wins, as in kwok); one it cannot honour is an error naming the document and the field, never
dropped. Options that only tune how kwok's own Go process spreads its work (its parallelism,
profiling, pager switches) have no meaning here and are accepted as such.
"""

from __future__ import annotations

from typing import Any

from shardlet.errors import UserError

__all__ = ["KWOK_CONFIG", "from_kwok_configuration"]

KWOK_CONFIG = ("config.kwok.x-k8s.io/v1alpha1", "KwokConfiguration")

# KwokConfigurationOptions field -> shardlet's flag
_FLAGS = {
    "cidr": "cidr",
    "nodeIP": "node-ip",
    "nodeName": "node-name",
    "nodePort": "node-port",
    "tlsCertFile": "tls-cert-file",
    "tlsPrivateKeyFile": "tls-private-key-file",
    "manageAllNodes": "manage-all-nodes",
    "manageNodesWithAnnotationSelector": "node-annotation-selector",
    "manageNodesWithLabelSelector": "node-label-selector",
    "serverAddress": "server-address",
    "nodeLeaseDurationSeconds": "lease-duration",
    "podPlayStageParallelism": "concurrency",
}
# how kwok's process spreads its own work: nothing to set in shardlet (its shards do that)
_KWOK_PROCESS_ONLY = {
    "nodePlayStageParallelism", "nodeLeaseParallelism", "podsOnNodeSyncParallelism",
    "enablePodsOnNodeSyncListPager", "enablePodsOnNodeSyncStreamWatch", "enableDebuggingHandlers",
}
# kwok's CRD kinds (--enable-crds): what each turns on here, or why it cannot
_CRDS: dict[str, tuple[str, Any] | None] = {
    "Stage": ("stages-from", "cluster"),
    "Metric": ("node-metrics", True),
    "ResourceUsage": ("node-metrics", True),
    "ClusterResourceUsage": ("node-metrics", True),
    "Logs": None,            # always watched by the kubelet server
    "ClusterLogs": None,
}
# kinds the kubelet server does not serve yet: accepted (kwok's own configuration enables every
# kind), with a warning, since their requests answer 501
_NOT_YET = {"Exec", "ClusterExec", "Attach", "ClusterAttach", "PortForward", "ClusterPortForward"}


def from_kwok_configuration(doc: dict[str, Any], where: str) -> tuple[dict[str, Any], list[str]]:
    """The flags (long name without --, value) a KwokConfiguration document sets, and warnings for
    what it enables that shardlet does not serve yet; UserError naming ``where`` (file and
    document) and the field for what shardlet cannot honour."""
    unknown = sorted(k for k in doc if k not in ("apiVersion", "kind", "metadata", "options"))
    if unknown:
        raise UserError(f"{where}: KwokConfiguration.{unknown[0]}: not a field of kwok v0.8.0's KwokConfiguration")
    opts = doc.get("options") or {}
    if not isinstance(opts, dict):
        raise UserError(f"{where}: KwokConfiguration.options: must be a mapping")
    out: dict[str, Any] = {}
    warnings: list[str] = []
    for k, v in opts.items():
        field = f"{where}: KwokConfiguration.options.{k}"
        if k in _FLAGS:
            out[_FLAGS[k]] = v
        elif k in _KWOK_PROCESS_ONLY:
            continue
        elif k in ("enableContentionProfiling", "enableProfilingHandler"):
            if v:
                raise UserError(f"{field}: shardlet has no pprof handlers (Python: use py-spy on the shard)")
        elif k == "enableCRDs":
            if not isinstance(v, list):
                raise UserError(f"{field}: must be a list of kinds")
            for kind in v:
                if kind in _NOT_YET:
                    warnings.append(f"{field}: {kind}: the kubelet server answers its requests with 501 (not yet)")
                    continue
                if kind not in _CRDS:
                    raise UserError(f"{field}: {kind}: not served by shardlet yet "
                                    f"(it serves {', '.join(sorted(_CRDS))})")
                flag = _CRDS[kind]
                if flag is not None:
                    out[flag[0]] = flag[1]
        elif k in ("manageSingleNode", "disregardStatusWithAnnotationSelector", "disregardStatusWithLabelSelector"):
            if v:
                raise UserError(f"{field}: not supported by shardlet yet")
        else:
            raise UserError(f"{field}: not an option of kwok v0.8.0's KwokConfiguration")
    if "nodeLeaseDurationSeconds" in opts and not isinstance(opts["nodeLeaseDurationSeconds"], int):
        raise UserError(f"{where}: KwokConfiguration.options.nodeLeaseDurationSeconds: must be a whole number")
    return out, warnings
