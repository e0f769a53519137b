"""Find, or build once, the pinned toolchain: kube-apiserver, kube-controller-manager,
kube-scheduler, kubectl, etcd, helm, kwok and kwokctl.

The build is `build-toolchain.sh` beside this file; it caches the binaries outside the repo,
keyed by version, so a second call costs one `test -x` per binary.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from shardlet.errors import UserError

SCRIPT = Path(__file__).with_name("build-toolchain.sh")
BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "etcd",
            "helm", "kwok", "kwokctl")


def ensure(quiet: bool = False) -> Path:
    """Return the directory holding every toolchain binary, building what is missing."""
    override = os.environ.get("SHARDLET_BIN_DIR")
    if override:
        d = Path(override)
        missing = [b for b in BINARIES if not (d / b).is_file()]
        if missing:
            raise UserError(f"SHARDLET_BIN_DIR={d}: missing {', '.join(missing)}")
        return d
    if shutil.which("bash") is None:
        raise UserError("toolchain: bash is needed to build the toolchain")
    t0 = time.monotonic()
    proc = subprocess.run(
        ["bash", str(SCRIPT)], stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if quiet else None, text=True,
    )
    if proc.returncode != 0:
        # the script already printed the failing step on stderr; name it in one line too
        raise UserError(f"toolchain: build failed (exit {proc.returncode}); see the 'toolchain:' lines above")
    bin_dir = Path(proc.stdout.strip().splitlines()[-1])
    if not quiet and time.monotonic() - t0 > 5:
        print(f"toolchain: built in {time.monotonic() - t0:.0f}s into {bin_dir}", file=sys.stderr)
    return bin_dir


def binary(name: str) -> Path:
    return ensure(quiet=True) / name
