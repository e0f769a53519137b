"""The `shardlet-<name>` context in the user's own kubeconfig, as kwokctl adds `kwok-<name>`.

`cluster up` adds a cluster, a user and a context named `shardlet-<name>` to the first file of
``KUBECONFIG`` (else ``~/.kube/config``) and leaves the rest of an existing file as it is, its
current context included (a new file gets ours as its current context). The user's entry points
at the certificate and key in the cluster's 0700 directory, so no key is copied. `cluster down`
takes the entries out again; a file that did not exist before and holds nothing else is removed,
so it is as before to the byte. Every read-modify-write holds client-go's lock (``<file>.lock``,
created exclusively), so neither two `up`s nor a kubectl writing at the same time lose an entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from shardlet.controlplane.pki import write_private
from shardlet.errors import UserError

__all__ = ["add_context", "context_name", "remove_context", "user_kubeconfig"]

_SECTIONS = ("clusters", "users", "contexts")


def context_name(cluster: str) -> str:
    return f"shardlet-{cluster}"


def user_kubeconfig() -> Path:
    env = os.environ.get("KUBECONFIG", "")
    first = next((p for p in env.split(os.pathsep) if p), "")
    return Path(first).expanduser() if first else Path.home() / ".kube" / "config"


@contextmanager
def _locked(path: Path, timeout: float = 10.0) -> Iterator[None]:
    """client-go's lock: ``<file>.lock`` created exclusively (kubectl waits on the same file)."""
    lock = f"{path}.lock"
    deadline = time.monotonic() + timeout
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"kubeconfig {path}: not writable ({e.strerror})") from None
    while True:
        try:
            os.close(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
            break
        except FileExistsError:
            if time.monotonic() > deadline:
                raise UserError(f"kubeconfig {path}: locked by another writer ({lock}); remove it if none runs") from None
            time.sleep(0.05)
        except OSError as e:
            raise UserError(f"kubeconfig {path}: not writable ({e.strerror})") from None
    try:
        yield
    finally:
        try:
            os.unlink(lock)
        except OSError:
            pass


def _read(path: Path) -> tuple[bytes | None, dict[str, Any]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, {}
    except OSError as e:
        raise UserError(f"kubeconfig {path}: {e.strerror}") from None
    try:
        cfg = yaml.safe_load(raw) or {}
    except yaml.YAMLError as e:
        raise UserError(f"kubeconfig {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(cfg, dict):
        raise UserError(f"kubeconfig {path}: not a kubeconfig (a mapping)")
    return raw, cfg


def _without(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    out = dict(cfg)
    for s in _SECTIONS:
        entries = [e for e in (cfg.get(s) or []) if not (isinstance(e, dict) and e.get("name") == name)]
        if s in cfg:
            out[s] = entries
    return out


def add_context(cluster: str, server: str, ca: Path, cert: Path, key: Path, record: Path) -> tuple[Path, str]:
    """Add (or refresh) the context; ``record`` (in the cluster's directory) remembers how to undo
    it. Returns (the kubeconfig, the context's name)."""
    path, name = user_kubeconfig(), context_name(cluster)
    with _locked(path):
        before, cfg = _read(path)
        cfg = _without(cfg, name)
        cfg.setdefault("apiVersion", "v1")
        cfg.setdefault("kind", "Config")
        # a new file gets ours as its current context (kubectl then works without --context);
        # an existing one keeps whatever the user chose
        cfg.setdefault("current-context", name if before is None else "")
        cfg.setdefault("clusters", []).append({"name": name, "cluster": {"server": server,
                                                                         "certificate-authority": str(ca)}})
        cfg.setdefault("users", []).append({"name": name, "user": {"client-certificate": str(cert),
                                                                   "client-key": str(key)}})
        cfg.setdefault("contexts", []).append({"name": name, "context": {"cluster": name, "user": name}})
        after = yaml.safe_dump(cfg, sort_keys=False).encode()
        try:
            write_private(path, after)
        except OSError as e:
            raise UserError(f"kubeconfig {path}: not writable ({e.strerror})") from None
        record.write_text(json.dumps({"path": str(path), "existed": before is not None,
                                      "after": hashlib.sha256(after).hexdigest()}))
    return path, name


def remove_context(cluster: str, record: Path) -> Path | None:
    """Undo :func:`add_context` from its record; the file it changed (None: nothing to undo)."""
    try:
        rec = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    path, name = Path(rec["path"]), context_name(cluster)
    with _locked(path):
        raw, cfg = _read(path)
        if raw is None:
            return path
        if not rec["existed"] and hashlib.sha256(raw).hexdigest() == rec["after"]:
            path.unlink()          # ours alone, nothing else written since
            return path
        rest = _without(cfg, name)
        if rest.get("current-context") == name:
            rest["current-context"] = ""
        write_private(path, yaml.safe_dump(rest, sort_keys=False).encode())
    return path
