"""kwok v0.8.0's own Stage YAMLs and their testdata, run through our engine.

The YAMLs under ``kustomize/stage`` of the kwok Go module are loaded unmodified.
For every ``testdata/*.input.yaml`` we rebuild what kwok's ``stage_test.go``
prints (``*.output.yaml``): the possible stages (``ListAllPossible``), each with
its delay range, weight and rendered steps, using the same fixed template
functions (``<Now>``, ``<0 of NodeIPsWith("node")>``, ...) and the same clock.

One deliberate difference: kwok's test harness feeds the object as an
``Unstructured``, for which kwok sends a JSON merge patch when a patch has no
``type``.  kwok's real Pod and Node controllers hold typed objects and send a
strategic merge patch (``computePatch``), which is what our engine does for Pods
and Nodes; for them the expected type is adjusted accordingly.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shardlet.stages.engine import Apply, Delete, Event, Patch, StageEngine, yaml_to_json
from shardlet.stages.model import Stage, StageError, load_profile, load_stage_yaml, profile_objects

from .kwok_source import KWOK, kwok_stage_dir

NOW = 1136214245.0  # kwok's stage_test.go clock: 2006-01-02T15:04:05Z


STAGE_DIR = kwok_stage_dir()
pytestmark = pytest.mark.skipif(
    STAGE_DIR is None,
    reason=f"kwok source not found: {KWOK} is not in the Go module cache (go mod download {KWOK})",
)


def _templates_usable() -> str | None:
    try:
        load_profile("fast")
    except (ImportError, StageError) as e:
        return str(e)
    return None


def stage_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.yaml") if p.name != "kustomization.yaml")


def all_stage_dirs() -> list[Path]:
    if STAGE_DIR is None:
        return []
    return sorted({p.parent for p in STAGE_DIR.glob("*/*/*.yaml")})


def kwok_inputs() -> list[Path]:
    if STAGE_DIR is None:
        return []
    return sorted(STAGE_DIR.glob("*/*/testdata/*.input.yaml"))


# --------------------------------------------------------------------------- template functions as kwok's test


def _go_v(arg: Any) -> str:
    """Go's ``%#v`` for the values the stage templates pass."""
    if isinstance(arg, bool):
        return "true" if arg else "false"
    if arg is None:
        return "<nil>"
    if isinstance(arg, str):
        out = ['"']
        for ch in arg:
            if ch in '"\\':
                out.append("\\" + ch)
            elif ch == "\n":
                out.append("\\n")
            elif ch == "\t":
                out.append("\\t")
            elif ord(ch) < 0x20:
                out.append(f"\\x{ord(ch):02x}")
            else:
                out.append(ch)
        out.append('"')
        return "".join(out)
    return str(arg)


def _string_fn(name: str) -> Callable[..., Any]:
    def f(*args: Any) -> str:
        if not args:
            return f"<{name}>"
        return f"<{name}({', '.join(_go_v(a) for a in args)})>"

    return f


def _strings_fn(name: str) -> Callable[..., Any]:
    def f(*args: Any) -> list[str]:
        if not args:
            return [f"<0 of {name}>", f"<1 of {name}>"]
        joined = ", ".join(_go_v(a) for a in args)
        return [f"<0 of {name}({joined})>", f"<1 of {name}({joined})>"]

    return f


def kwok_test_funcs() -> dict[str, Callable[..., Any]]:
    from shardlet.stages.funcs import base_funcs

    funcs = dict(base_funcs())
    for name in ("NodeIP", "NodeName", "NodePort", "PodIP", "NodeIPWith", "PodIPWith", "Now", "now", "Version"):
        funcs[name] = _string_fn(name)
    for name in ("NodeIPsWith", "PodIPsWith"):
        funcs[name] = _strings_fn(name)
    return funcs


# --------------------------------------------------------------------------- kwok's stage_test.go, in Python

_MIME = {
    "json": "application/json-patch+json",
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",
}


def _format(action: Any) -> dict[str, Any]:
    if isinstance(action, Event):
        return {"kind": "event", "type": action.type, "reason": action.reason, "message": action.message}
    if isinstance(action, Delete):
        return {"kind": "delete"}
    if isinstance(action, Patch | Apply):
        out: dict[str, Any] = {"kind": "patch" if isinstance(action, Patch) else "apply",
                               "type": _MIME[action.type], "data": action.body}
        if action.subresource:
            out["subresource"] = action.subresource
        if action.impersonation:
            out["impersonation"] = action.impersonation
        return out
    raise AssertionError(f"unexpected action {action!r}")


def run_kwok_case(input_file: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    obj = yaml_to_json(input_file.read_text())
    stages: list[Stage] = []
    for f in stage_files(input_file.parent.parent):
        good, bad = load_stage_yaml(f.read_text())
        assert bad == [], f"{f}: {bad}"
        stages.extend(good)
    api_group, kind = obj["apiVersion"], obj["kind"]
    stages = [s for s in stages if (s.api_group, s.kind) == (api_group, kind)]
    engine = StageEngine(stages)
    funcs = kwok_test_funcs()

    got: dict[str, Any] = {"apiGroup": api_group, "kind": kind, "name": obj["metadata"]["name"]}
    if obj["metadata"].get("namespace"):
        got["namespace"] = obj["metadata"]["namespace"]
    out = []
    for s in engine.possible(kind, obj):
        entry: dict[str, Any] = {"stage": s.name}
        delay = engine.delay_range_ns(s, obj, NOW)
        if delay is not None:
            entry["delay"] = delay
        weight, ok = engine.weight(s, obj)
        if ok:
            entry["weight"] = weight
        actions = engine.actions(s, obj, funcs, skip_noop=False)  # kwok's harness does not skip no-ops
        nxt = [_format(a) for a in actions.ordered]
        if s.immediate_next_stage:
            nxt.append({"kind": "immediate"})
        entry["next"] = nxt
        out.append(entry)
    got["stages"] = out

    expected = yaml_to_json(input_file.with_name(input_file.name.replace(".input.", ".output.")).read_text())
    if kind in ("Pod", "Node") and api_group == "v1":
        for entry in expected["stages"]:
            for step in entry["next"]:
                if step.get("kind") == "patch" and step.get("type") == _MIME["merge"]:
                    step["type"] = _MIME["strategic"]  # typed objects in kwok's controllers (see module doc)
    return got, expected


# --------------------------------------------------------------------------- tests


def test_kwok_source_is_there() -> None:
    assert STAGE_DIR is not None
    assert len(kwok_inputs()) >= 15
    assert len(all_stage_dirs()) >= 8


@pytest.mark.parametrize("directory", all_stage_dirs(), ids=lambda p: str(p.relative_to(STAGE_DIR or p)))
def test_every_kwok_stage_yaml_loads(directory: Path) -> None:
    problem = _templates_usable()
    if problem is not None:
        pytest.skip(f"template engine not usable yet: {problem}")
    import yaml

    for f in stage_files(directory):
        text = f.read_text()
        docs = [d for d in yaml.safe_load_all(text) if d]
        stage_docs = [d for d in docs if d.get("kind") == "Stage"]
        good, bad = load_stage_yaml(text)
        assert bad == [], f"{f.name}: {[str(e) for e in bad]}"
        assert [s.name for s in good] == [d["metadata"]["name"] for d in stage_docs], f.name


@pytest.mark.parametrize("input_file", kwok_inputs(), ids=lambda p: str(p.relative_to(STAGE_DIR or p)))
def test_kwok_testdata(input_file: Path) -> None:
    problem = _templates_usable()
    if problem is not None:
        pytest.skip(f"template engine not usable yet: {problem}")
    got, expected = run_kwok_case(input_file)
    assert got == expected


def test_builtin_profiles_are_kwoks_stages() -> None:
    """Our profiles hold kwok's stages unchanged."""
    problem = _templates_usable()
    if problem is not None:
        pytest.skip(f"template engine not usable yet: {problem}")
    assert STAGE_DIR is not None

    def raw(files: list[Path]) -> list[Any]:
        import yaml

        return [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]

    fast = [STAGE_DIR / "node/fast/node-initialize.yaml",
            STAGE_DIR / "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
            *(STAGE_DIR / "pod/fast" / f for f in ("pod-ready.yaml", "pod-complete.yaml", "pod-delete.yaml"))]
    general = [*fast[:2], *(STAGE_DIR / "pod/general" / f for f in (
        "pod-create.yaml", "pod-init-container-running.yaml", "pod-init-container-completed.yaml",
        "pod-ready.yaml", "pod-complete.yaml", "pod-delete.yaml"))]
    chaos = [STAGE_DIR / "node/chaos/node-not-ready.yaml",
             STAGE_DIR / "pod/chaos/pod-container-running-failed.yaml",
             STAGE_DIR / "pod/chaos/pod-init-container-running-failed.yaml"]
    volume = [STAGE_DIR / "volume/fast" / f for f in ("pvc-provision.yaml", "pv-bind.yaml", "pvc-delete.yaml",
                                                      "pv-delete.yaml")]
    heartbeat = [STAGE_DIR / "node/heartbeat/node-heartbeat.yaml"]
    for name, files in (("fast", fast), ("general", general), ("chaos", chaos), ("volume", volume),
                        ("heartbeat", heartbeat)):
        assert [dict(s.raw) for s in load_profile(name)] == raw(files), name
    # the volume set's StorageClass is kwok's too, created beside the stages
    assert profile_objects("volume") == raw([STAGE_DIR / "volume/fast/storage-class.yaml"])
    assert profile_objects("fast") == []
