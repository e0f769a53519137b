"""Where kwok v0.8.0's sources are: the Go module cache the toolchain build filled."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

KWOK = "sigs.k8s.io/kwok@v0.8.0"


def kwok_stage_dir() -> Path | None:
    """kwok's `kustomize/stage` directory in the module cache, or None when it is not there."""
    candidates: list[str] = []
    go = shutil.which("go")
    if go:
        try:
            out = subprocess.run([go, "env", "GOMODCACHE"], capture_output=True, text=True, timeout=30)
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(out.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    if os.environ.get("GOMODCACHE"):
        candidates.append(os.environ["GOMODCACHE"])
    candidates.append(str(Path(os.environ.get("GOPATH", str(Path.home() / "go"))) / "pkg" / "mod"))
    for c in candidates:
        p = Path(c) / KWOK / "kustomize" / "stage"
        if p.is_dir():
            return p
    return None
