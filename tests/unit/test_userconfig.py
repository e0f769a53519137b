"""The shardlet-<name> context in the user's kubeconfig (shardlet.controlplane.userconfig), on
files only; `cluster up`/`down` with a real kubectl: tests/e2e/test_cluster.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from shardlet.controlplane import userconfig
from shardlet.errors import UserError

PKI = (Path("/c/ca.crt"), Path("/c/admin.crt"), Path("/c/admin.key"))


@pytest.fixture
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "kube" / "config"
    monkeypatch.setenv("KUBECONFIG", f"{path}:{tmp_path / 'second'}")
    return path


def test_added_to_a_new_file_and_removed_with_it(kubeconfig: Path, tmp_path: Path) -> None:
    record = tmp_path / "rec.json"
    path, ctx = userconfig.add_context("dev", "https://127.0.0.1:6443", *PKI, record)
    assert path == kubeconfig and ctx == "shardlet-dev"
    cfg = yaml.safe_load(kubeconfig.read_text())
    assert cfg["contexts"] == [{"name": "shardlet-dev", "context": {"cluster": "shardlet-dev", "user": "shardlet-dev"}}]
    assert cfg["users"][0]["user"] == {"client-certificate": "/c/admin.crt", "client-key": "/c/admin.key"}
    assert cfg["current-context"] == "shardlet-dev" and kubeconfig.stat().st_mode & 0o777 == 0o600
    assert userconfig.remove_context("dev", record) == kubeconfig
    assert not kubeconfig.exists() and not Path(f"{kubeconfig}.lock").exists()


def test_nothing_else_in_an_existing_file_is_touched(kubeconfig: Path, tmp_path: Path) -> None:
    mine = {"apiVersion": "v1", "kind": "Config", "current-context": "work",
            "clusters": [{"name": "work", "cluster": {"server": "https://work:6443"}}],
            "users": [{"name": "me", "user": {"token": "t"}}],
            "contexts": [{"name": "work", "context": {"cluster": "work", "user": "me"}}]}
    kubeconfig.parent.mkdir(parents=True)
    kubeconfig.write_text(yaml.safe_dump(mine))
    record = tmp_path / "rec.json"
    userconfig.add_context("dev", "https://127.0.0.1:6443", *PKI, record)
    userconfig.add_context("dev", "https://127.0.0.1:7443", *PKI, record)     # again: replaced, not doubled
    cfg = yaml.safe_load(kubeconfig.read_text())
    assert [c["name"] for c in cfg["contexts"]] == ["work", "shardlet-dev"] and cfg["current-context"] == "work"
    assert cfg["clusters"][1]["cluster"]["server"] == "https://127.0.0.1:7443"
    userconfig.remove_context("dev", record)
    assert yaml.safe_load(kubeconfig.read_text()) == mine


def test_a_held_lock_or_an_unwritable_place_is_one_line(kubeconfig: Path, tmp_path: Path) -> None:
    kubeconfig.parent.mkdir(parents=True)
    Path(f"{kubeconfig}.lock").write_text("")
    with pytest.raises(UserError, match="locked by another writer"), userconfig._locked(kubeconfig, timeout=0.1):
        pass
    Path(f"{kubeconfig}.lock").unlink()
    (tmp_path / "file").write_text("")
    with pytest.MonkeyPatch.context() as m:
        m.setenv("KUBECONFIG", str(tmp_path / "file" / "config"))    # a directory that cannot exist
        with pytest.raises(UserError, match=r"kubeconfig .*file/config: not writable"):
            userconfig.add_context("dev", "https://x", *PKI, tmp_path / "rec.json")
