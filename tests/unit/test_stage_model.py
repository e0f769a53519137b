"""Parsing, validating and compiling Stage objects; built-in profiles."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardlet.stages.model import (
    PROFILES,
    StageError,
    load_profile,
    load_stage_yaml,
    load_stages,
    parse_stage,
)


def templates_work() -> bool:
    """The Go-template engine is developed alongside; template tests run once it compiles kwok's stages."""
    try:
        load_profile("fast")
    except (ImportError, StageError):
        return False
    return True


needs_templates = pytest.mark.skipif(not templates_work(), reason="shardlet.stages.gotemplate/funcs not usable yet")


def stage_doc(name: str = "s", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
        "selector": {"matchExpressions": [{"key": ".status.phase", "operator": "In", "values": ["Running"]}]},
        "next": {"delete": True},
    }
    base.update(spec)
    return {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": name}, "spec": base}


def test_minimal_stage() -> None:
    s = parse_stage(stage_doc())
    assert (s.name, s.kind, s.api_group, s.weight) == ("s", "Pod", "v1", 0)
    assert s.weight_from is None and s.delay is None and not s.immediate_next_stage
    assert len(s.steps) == 1 and s.steps[0].delete
    assert s.selector is not None and s.selector.matches({"status": {"phase": "Running"}})


def test_api_group_defaults_to_v1() -> None:
    doc = stage_doc()
    del doc["spec"]["resourceRef"]["apiGroup"]
    assert parse_stage(doc).api_group == "v1"


def test_next_becomes_steps_in_kwok_order_without_templates() -> None:
    s = parse_stage(stage_doc(next={
        "delete": True,
        "finalizers": {"add": [{"value": "x"}], "remove": [{"value": "y"}]},
        "event": {"type": "Normal", "reason": "Created", "message": "hi"},
    }))
    kinds = [("event" if st.event else "finalizers" if st.finalizers else "delete" if st.delete else "?")
             for st in s.steps]
    assert kinds == ["event", "finalizers", "delete"]
    fin = s.steps[1].finalizers
    assert fin is not None and fin.add == ("x",) and fin.remove == ("y",) and not fin.empty


def test_steps_win_over_next() -> None:
    s = parse_stage(stage_doc(steps=[{"event": {"type": "Warning", "reason": "R"}}, {"delete": True}],
                              next={"delete": False}))
    assert [bool(st.event) for st in s.steps] == [True, False] and s.steps[1].delete


def test_selector_less_stage_loads_but_is_inert() -> None:
    doc = stage_doc()
    del doc["spec"]["selector"]
    assert parse_stage(doc).selector is None


def test_delay_weight_and_expressions() -> None:
    s = parse_stage(stage_doc(
        weight=3,
        weightFrom={"expressionFrom": '.metadata.annotations["w"]'},
        delay={"durationMilliseconds": 1000, "durationFrom": {"jq": {"expression": ".x"}},
               "jitterDurationMilliseconds": 5000, "jitterDurationFrom": {"cel": {"expression": "'1s'"}}},
        immediateNextStage=True,
    ))
    assert s.weight == 3 and s.immediate_next_stage
    assert s.weight_from is not None and s.weight_from.jq is not None
    assert s.weight_from.source == '.metadata.annotations["w"]'
    assert s.delay is not None and s.delay.duration_ms == 1000 and s.delay.jitter_ms == 5000
    assert s.delay.duration_from is not None and s.delay.duration_from.jq is not None
    assert s.delay.jitter_from is not None and s.delay.jitter_from.cel is not None


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["spec"]["selector"]["matchExpressions"].append({"key": ".a[]]", "operator": "Exists"}),
         r"^stage \"s\": spec\.selector\.matchExpressions\[1\]\.key: unexpected token '\]' at 4$"),
        (lambda d: d["spec"].update(weight=-1), r"^stage \"s\": spec\.weight: must be >= 0, got -1$"),
        (lambda d: d["spec"].update(weight="high"), r"spec\.weight: must be an integer, got string"),
        (lambda d: d["spec"].update(weightFrom={"expressionFrom": ".a |"}), r"spec\.weightFrom\.expressionFrom: "),
        (lambda d: d["spec"].update(delay={"durationMilliseconds": -5}), r"spec\.delay\.durationMilliseconds: must be >= 0"),
        (lambda d: d["spec"].update(delay={"durationFrom": {"jq": {"expression": "]"}}}),
         r"spec\.delay\.durationFrom\.jq\.expression: unexpected token"),
        (lambda d: d["spec"].update(delay={"jitterDurationFrom": {"cel": {"expression": "self."}}}),
         r"spec\.delay\.jitterDurationFrom\.cel\.expression: unexpected end of input"),
        (lambda d: d["spec"].update(resourceRef={"apiGroup": "v1"}), r"spec\.resourceRef\.kind: must be a non-empty string"),
        (lambda d: d["spec"].pop("resourceRef"), r"spec\.resourceRef: must be an object, got null"),
        (lambda d: d["spec"].update(next={"delete": "yes"}), r"spec\.next\.delete: must be a boolean, got string"),
        (lambda d: d["spec"].update(next={"statusTemplat": "x"}), r"spec\.next\.statusTemplat: unknown field"),
        (lambda d: d["spec"].update(next={"event": {"type": "Info"}}), r"spec\.next\.event\.type: must be Normal or Warning"),
        (lambda d: d["spec"].update(next={"finalizers": {"add": ["x"]}}), r"spec\.next\.finalizers\.add\[0\]: must be an object"),
        (lambda d: d["spec"].update(next={"patches": [{"type": "yaml", "template": "a: 1"}]}),
         r"spec\.next\.patches\[0\]\.type: must be one of json, merge, strategic"),
        (lambda d: d["spec"].update(steps=[{"apply": {"template": ""}}]), r"spec\.steps\[0\]\.apply\.template: must be"),
        (lambda d: d["spec"].update(steps={"delete": True}), r"spec\.steps: must be a list"),
        (lambda d: d["spec"].update(bogus=1), r"^stage \"s\": spec\.bogus: unknown field$"),
        (lambda d: d["spec"].update(immediateNextStage="true"), r"spec\.immediateNextStage: must be a boolean"),
        (lambda d: d["metadata"].pop("name"), r"^stage \"<unnamed>\": metadata\.name: must be a non-empty string$"),
        (lambda d: d.pop("spec"), r"spec: must be an object, got null"),
        (lambda d: d.update(kind="Stages"), r"kind: must be Stage"),
    ],
)
def test_validation_errors_are_one_line_and_name_stage_and_field(mutate: Any, message: str) -> None:
    doc = stage_doc()
    mutate(doc)
    with pytest.raises(StageError, match=message) as ei:
        parse_stage(doc)
    assert "\n" not in str(ei.value)


def test_one_bad_stage_among_good_ones() -> None:
    good1 = stage_doc("good-1")
    bad = stage_doc("pod-ready")
    bad["spec"]["selector"]["matchExpressions"].append({"key": '.status.conditions.[]]', "operator": "Exists"})
    good2 = stage_doc("good-2", weight=2)
    storage_class = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "x"}}
    stages, errors = load_stages([good1, None, bad, storage_class, good2])
    assert [s.name for s in stages] == ["good-1", "good-2"]
    assert len(errors) == 1
    assert str(errors[0]) == (
        "stage \"pod-ready\": spec.selector.matchExpressions[1].key: unexpected token ']' at 21"
    )


def test_non_object_documents_are_reported() -> None:
    stages, errors = load_stages([["not", "a", "stage"]])
    assert stages == [] and len(errors) == 1 and "stage #0: must be an object" in str(errors[0])


def test_load_stage_yaml_multi_doc_and_syntax_errors() -> None:
    text = yaml.safe_dump_all([stage_doc("a"), stage_doc("b")])
    stages, errors = load_stage_yaml(text)
    assert [s.name for s in stages] == ["a", "b"] and errors == []
    stages, errors = load_stage_yaml("kind: Stage\nspec: [unclosed\n")
    assert stages == [] and len(errors) == 1
    assert str(errors[0]).startswith("stage YAML at line") and "\n" not in str(errors[0])


def test_stage_is_frozen() -> None:
    s = parse_stage(stage_doc())
    with pytest.raises(AttributeError):
        s.name = "other"  # type: ignore[misc]


def test_unknown_profile() -> None:
    with pytest.raises(StageError, match="unknown stage profile 'slow'"):
        load_profile("slow")


@needs_templates
@pytest.mark.parametrize(
    ("profile", "names"),
    [
        ("fast", ["node-initialize", "node-heartbeat-with-lease", "pod-ready", "pod-complete", "pod-delete"]),
        ("general", ["node-initialize", "node-heartbeat-with-lease", "pod-create", "pod-init-container-running",
                     "pod-init-container-completed", "pod-ready", "pod-complete", "pod-delete"]),
        ("chaos", ["node-not-ready", "pod-container-running-failed", "pod-init-container-running-failed"]),
        ("heartbeat", ["node-heartbeat"]),
        ("volume", ["pvc-provision", "pv-bind", "pvc-delete", "pv-delete"]),
    ],
)
def test_builtin_profiles(profile: str, names: list[str]) -> None:
    assert profile in PROFILES
    stages = load_profile(profile)
    assert [s.name for s in stages] == names
    assert load_profile(profile) is not stages  # callers may mutate their list
    assert all(s.selector is not None for s in stages)


@needs_templates
def test_status_template_becomes_a_status_patch_step() -> None:
    s = {st.name: st for st in load_profile("fast")}["pod-ready"]
    patches = [st.patch for st in s.steps if st.patch is not None]
    assert len(patches) == 1
    p = patches[0]
    assert (p.subresource, p.root, p.type, p.field) == ("status", "status", None, "spec.next.statusTemplate")
    assert s.status_template is not None and "containerStatuses" in s.status_template


@needs_templates
def test_template_parse_errors_name_the_field() -> None:
    doc = stage_doc(next={"statusTemplate": "phase: {{ .status.phase "})
    with pytest.raises(StageError, match=r"^stage \"s\": spec\.next\.statusTemplate: ") as ei:
        parse_stage(doc)
    assert "\n" not in str(ei.value)
    doc = stage_doc(steps=[{"patch": {"template": "{{ NoSuchFunc }}"}}])
    with pytest.raises(StageError, match=r"spec\.steps\[0\]\.patch\.template: "):
        parse_stage(doc)


# --------------------------------------------------------------------------- fuzzing

_FRAGMENTS = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 3), st.text(max_size=6),
    st.sampled_from([".a", ".a[]]", "In", "Exists", "1s", "Normal", "status", "json", "merge"]),
    st.lists(st.text(max_size=3), max_size=2),
)
_PATHS = [
    ("weight",), ("weightFrom",), ("weightFrom", "expressionFrom"), ("delay",), ("delay", "durationMilliseconds"),
    ("delay", "durationFrom", "expressionFrom"), ("delay", "jitterDurationFrom", "cel", "expression"),
    ("selector",), ("selector", "matchLabels"), ("selector", "matchExpressions"), ("resourceRef", "kind"),
    ("next",), ("next", "delete"), ("next", "event"), ("next", "event", "type"), ("next", "finalizers"),
    ("next", "finalizers", "add"), ("steps",), ("immediateNextStage",), ("resourceRef",),
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_PATHS), _FRAGMENTS), max_size=4))
def test_fuzz_stage_documents_only_raise_stage_error(edits: list[tuple[tuple[str, ...], Any]]) -> None:
    doc = copy.deepcopy(stage_doc())
    for path, value in edits:
        cur = doc["spec"]
        for k in path[:-1]:
            if not isinstance(cur.get(k), dict):
                cur[k] = {}
            cur = cur[k]
        cur[path[-1]] = value
    stages, errors = load_stages([doc])
    assert len(stages) + len(errors) == 1
    for e in errors:
        assert isinstance(e, StageError) and "\n" not in str(e) and str(e).startswith('stage "s": ')


def test_stage_controller_config_is_validated() -> None:
    from shardlet.controllers.stages import StageControllerConfig
    from shardlet.discovery import Resource

    res = Resource("v1", "ConfigMap", "configmaps", True)
    assert res.path("a", "ns", "status") == "/api/v1/namespaces/ns/configmaps/a/status"
    assert Resource("kwok.x-k8s.io/v1alpha1", "Stage", "stages", False).path("s", "ignored") == \
        "/apis/kwok.x-k8s.io/v1alpha1/stages/s"
    with pytest.raises(ValueError, match=r"ConfigMap \(v1, configmaps\): concurrency must be >= 1"):
        StageControllerConfig(res, "shard", concurrency=0)
    with pytest.raises(ValueError, match="retry_after"):
        StageControllerConfig(res, "shard", retry_after=-1)
