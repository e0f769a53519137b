"""Which code a run's simulators ran: shardlet starts afresh from the working tree for every
cluster, so an edit during a run changes what its later steps measure, and the run must say so."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bench import report, scenarios, sysinfo

FULL = Path(__file__).resolve().parents[2] / "bench" / "results" / "2026-11-27T0811-vm.json"


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_the_code_state_is_the_commit_plus_a_hash_of_each_different_uncommitted_change(tmp_path: Path) -> None:
    (tmp_path / "shardlet").mkdir()
    (tmp_path / "shardlet" / "lease.py").write_text("A = 1\n")
    (tmp_path / "README.md").write_text("docs\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "one")
    clean = sysinfo.code_state(tmp_path)
    assert len(clean) == 12 and "+" not in clean
    (tmp_path / "README.md").write_text("other docs\n")          # not simulator code
    assert sysinfo.code_state(tmp_path) == clean
    (tmp_path / "shardlet" / "lease.py").write_text("A = 2\n")
    first = sysinfo.code_state(tmp_path)
    (tmp_path / "shardlet" / "lease.py").write_text("A = 3\n")
    second = sysinfo.code_state(tmp_path)
    assert first.startswith(clean + "+dirty.") and second.startswith(clean + "+dirty.") and first != second
    (tmp_path / "shardlet" / "lease.py").write_text("A = 1\n")
    (tmp_path / "shardlet" / "new.py").write_text("B = 1\n")      # a new module counts too
    added = sysinfo.code_state(tmp_path)
    assert added.startswith(clean + "+dirty.")
    (tmp_path / "shardlet" / "new.py").write_text("B = 2\n")      # and so does its content
    assert sysinfo.code_state(tmp_path) not in (added, clean)


def test_a_shardlet_started_from_changed_code_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    logged: list[str] = []
    bench = scenarios.Bench(sizes={}, bin_dir=Path("."), log_dir=Path("."), log=logged.append, code="abc")
    monkeypatch.setattr(sysinfo, "code_state", lambda: "abc")
    bench.check_code("bench-1-1", "s1")
    assert bench.code_changed == [] and not logged
    monkeypatch.setattr(sysinfo, "code_state", lambda: "abc+dirty.0123abcd")
    bench.check_code("bench-1-2", "s1")
    assert [(c["env"], c["sim"], c["code"]) for c in bench.code_changed] == [("bench-1-2", "s1", "abc+dirty.0123abcd")]
    assert "changed code abc+dirty.0123abcd" in logged[0]


def test_the_readme_says_which_clusters_ran_changed_code_and_shows_notes_added_later(tmp_path: Path) -> None:
    shutil.copy(FULL, tmp_path / FULL.name)
    data = json.loads(FULL.read_text())
    data["meta"]["scenarios"] = ["ready"]
    data["meta"]["argv"] = ["--scenarios", "ready"]
    data["records"] = [r for r in data["records"] if r["scenario"] == "ready"]
    data["meta"]["code_changed"] = [{"env": "bench-9-3", "sim": "s1", "code": "abc+dirty.0123abcd",
                                     "at": "2026-11-29T20:12:30+00:00"}]
    data["meta"]["notes"] = ["the bisect ran the change later committed as def4567."]
    later = tmp_path / "2026-11-28T0000-vm.json"
    later.write_text(json.dumps(data))
    report.render(later, tmp_path / "README.md")
    head, _, part = (tmp_path / "README.md").read_text().partition("## Later partial run:")
    assert "Code changed during the run" not in head and "Note added after the run" not in head
    assert ("bench-9-3 (shardlet S=1, 2026-11-29T20:12:30+00:00) started `abc+dirty.0123abcd`" in part
            and "> **Note added after the run**: the bisect ran the change later committed as def4567." in part)
