"""Which cluster a command acts on (``--name`` or ``--kubeconfig``), shared by every command
that talks to one; below the commands so they need not import the CLI that dispatches them."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from shardlet.errors import UserError


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return v


def add_target(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("which cluster")
    g.add_argument("--name", default=os.environ.get("SHARDLET_CLUSTER", "shardlet"),
                   help="local cluster started by 'shardlet cluster up' (default: %(default)s)")
    g.add_argument("--kubeconfig", default=None,
                   help="use this kubeconfig instead of a local cluster's")


def resolve_kubeconfig(args: argparse.Namespace) -> str | None:
    """The kubeconfig to use: --kubeconfig, else the named local cluster's, else in-cluster."""
    if getattr(args, "kubeconfig", None):
        path = Path(args.kubeconfig).expanduser()
        if not path.is_file():
            raise UserError(f"--kubeconfig {args.kubeconfig}: no such file")
        return str(path)
    from shardlet.controlplane.cluster import Cluster

    c = Cluster(args.name)
    if c.exists():
        return str(c.kubeconfig)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None  # in-cluster config
    c.state()  # raises the unknown-cluster error with the known names
    return None
