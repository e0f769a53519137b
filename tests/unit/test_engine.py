"""The Stage engine: matching, weighted choice, delays, and rendering writes in kwok's order."""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from shardlet.stages.engine import (
    Apply,
    Delete,
    Event,
    Patch,
    StageEngine,
    finalizer_ops,
    parse_rfc3339,
    patch_changes,
    yaml_to_json,
)
from shardlet.stages.model import (
    FinalizerSpec,
    PatchSpec,
    Stage,
    StageError,
    Step,
    load_profile,
    parse_stage,
    template_error_type,
)

NOW = 1136214245.0  # 2006-01-02T15:04:05Z


def doc(name: str, kind: str = "Pod", api_group: str = "v1", match: str = "Running", **spec: Any) -> dict[str, Any]:
    s: dict[str, Any] = {
        "resourceRef": {"apiGroup": api_group, "kind": kind},
        "selector": {"matchExpressions": [{"key": ".status.phase", "operator": "In", "values": [match]}]},
        "next": {"delete": True},
    }
    s.update(spec)
    return {"kind": "Stage", "metadata": {"name": name}, "spec": s}


def stage(name: str, **kw: Any) -> Stage:
    return parse_stage(doc(name, **kw))


def obj(phase: str = "Running", annotations: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "annotations": annotations or {}, **meta},
            "status": {"phase": phase}}


class FakeTemplate:
    """Stands in for a compiled Go template: renders with a Python function."""

    def __init__(self, render: Callable[[Any, Any], str]) -> None:
        self.render = render

    def execute(self, data: Any, funcs: Any = None) -> str:
        return self.render(data, funcs)


def with_patch(s: Stage, text: str | Callable[[Any, Any], str], root: str = "status", subresource: str = "status",
               type: Any = None, prepend: tuple[Step, ...] = ()) -> Stage:
    render = text if callable(text) else (lambda d, f: text)
    spec = PatchSpec(subresource=subresource, root=root, template_text="<fake>", template=FakeTemplate(render),
                     type=type, impersonation=None, field="spec.next.statusTemplate")
    return Stage(**{**{f: getattr(s, f) for f in Stage.__dataclass_fields__},
                    "steps": (*prepend, Step(patch=spec))})


# --------------------------------------------------------------------------- indexing and matching


def test_indexes_and_no_stages() -> None:
    e = StageEngine([stage("a"), stage("n", kind="Node"), parse_stage({**doc("inert"),
                                                                       "spec": {**doc("x")["spec"], "selector": None}})])
    assert e.kinds() == {"Pod", "Node"}
    assert e.has_stages_for("Pod") and not e.has_stages_for("Deployment")
    assert e.plan("Deployment", obj(), NOW) is None
    assert e.plan("Pod", obj("Pending"), NOW) is None
    plan = e.plan("Pod", obj(), NOW)
    assert plan is not None and plan.stage.name == "a" and plan.delay == 0


def test_api_group_must_match_when_known() -> None:
    e = StageEngine([stage("apps", kind="Pod", api_group="apps/v1")])
    assert e.plan("Pod", obj(), NOW) is None  # object says v1
    no_version = obj()
    del no_version["apiVersion"]
    plan = e.plan("Pod", no_version, NOW)
    assert plan is not None and plan.stage.name == "apps"
    assert e.plan("Pod", no_version, NOW, api_group="v1") is None


def test_cel_error_means_no_plan() -> None:
    s = stage("cel", selector={"matchExpressions": [{"cel": {"expression": "self.spec.nodeName == 'x'"}}]})
    assert StageEngine([s]).plan("Pod", obj(), NOW) is None  # no .spec: kwok's match fails for the object
    ok = obj()
    ok["spec"] = {"nodeName": "x"}
    assert StageEngine([s]).plan("Pod", ok, NOW) is not None


# --------------------------------------------------------------------------- weights


def draw(e: StageEngine, o: dict[str, Any], n: int = 4000) -> Counter[str]:
    c: Counter[str] = Counter()
    for _ in range(n):
        p = e.plan("Pod", o, NOW)
        assert p is not None
        c[p.stage.name] += 1
    return c


def test_weighted_choice_probabilities() -> None:
    e = StageEngine([stage("a", weight=1), stage("b", weight=3)], rng=random.Random(7))
    c = draw(e, obj())
    assert 0.21 < c["a"] / 4000 < 0.29


def test_zero_weights_are_uniform_and_zero_loses_to_positive() -> None:
    e = StageEngine([stage("a"), stage("b")], rng=random.Random(1))
    c = draw(e, obj())
    assert 0.45 < c["a"] / 4000 < 0.55
    e2 = StageEngine([stage("a"), stage("b", weight=1)], rng=random.Random(1))
    assert draw(e2, obj(), 200) == Counter({"b": 200})


WF = {"expressionFrom": '.metadata.annotations["a.stage.kwok.x-k8s.io/weight"]'}


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (None, {"a", "b"}),        # no annotation: falls back to weight 1
        ("0", {"b"}),               # override to zero
        ("0x10", {"a", "b"}),       # Go ParseInt base 0
        ("abc", {"b"}),             # invalid: a is left out
        ("", {"b"}),                # empty string is invalid too
        ("-1", {"a", "b"}),         # kwok quirk: -1 + 1 == 0 total, so the choice is uniform
        ("-5", {"a", "b"}),         # negative total: uniform too (kwok would panic in rand.Int63n)
    ],
)
def test_weight_from_annotation_override(annotation: str | None, expected: set[str]) -> None:
    a = stage("a", weight=1, weightFrom=WF)
    b = stage("b", weight=1)
    e = StageEngine([a, b], rng=random.Random(3))
    o = obj(annotations={"a.stage.kwok.x-k8s.io/weight": annotation} if annotation is not None else {})
    assert set(draw(e, o, 300)) == expected
    assert {s.name for s in e.possible("Pod", o)} == expected


def test_weight_values() -> None:
    a = stage("a", weight=7, weightFrom=WF)
    e = StageEngine([a])
    key = "a.stage.kwok.x-k8s.io/weight"
    assert e.weight(a, obj()) == (7, True)
    assert e.weight(a, obj(annotations={key: "12"})) == (12, True)
    assert e.weight(a, obj(annotations={key: "017"})) == (15, True)
    assert e.weight(a, obj(annotations={key: "1_000"})) == (1000, True)
    assert e.weight(a, obj(annotations={key: "1.5"})) == (0, False)
    num = stage("n", weight=2, weightFrom={"expressionFrom": ".spec.w"})
    assert e.weight(num, {"spec": {"w": 4.9}}) == (4, True)
    assert e.weight(num, {"spec": {"w": True}}) == (2, True)  # other types: the default
    cel = stage("c", weightFrom={"cel": {"expression": "size(self.metadata.name)"}})
    assert e.weight(cel, obj()) == (1, True)


def test_all_invalid_weights_are_uniform_and_zero_total_with_invalid_uses_valid_ones() -> None:
    wf = {"expressionFrom": ".metadata.annotations.w"}
    e = StageEngine([stage("a", weightFrom=wf), stage("b", weightFrom=wf)], rng=random.Random(5))
    assert set(draw(e, obj(annotations={"w": "x"}), 200)) == {"a", "b"}
    e2 = StageEngine([stage("a", weightFrom=wf), stage("b")], rng=random.Random(5))
    assert set(draw(e2, obj(annotations={"w": "x"}), 200)) == {"b"}


def test_single_match_skips_weights() -> None:
    e = StageEngine([stage("a", weightFrom={"expressionFrom": ".metadata.annotations.w"})])
    plan = e.plan("Pod", obj(annotations={"w": "0"}), NOW)
    assert plan is not None and plan.stage.name == "a"


# --------------------------------------------------------------------------- delays


def delays(e: StageEngine, s: Stage, o: dict[str, Any], n: int = 300) -> list[float]:
    return [e.delay_ns(s, o, NOW) / 1e9 for _ in range(n)]


def test_duration_and_jitter_upper_bound() -> None:
    e = StageEngine([], rng=random.Random(11))
    fixed = stage("f", delay={"durationMilliseconds": 1500})
    assert set(delays(e, fixed, obj())) == {1.5}
    jit = stage("j", delay={"durationMilliseconds": 1000, "jitterDurationMilliseconds": 5000})
    ds = delays(e, jit, obj())
    assert all(1.0 <= d < 5.0 for d in ds) and max(ds) > 4 and min(ds) < 2
    assert e.delay_range_ns(jit, obj(), NOW) == [10**9, 5 * 10**9]
    small = stage("s", delay={"durationMilliseconds": 5000, "jitterDurationMilliseconds": 1000})
    assert set(delays(e, small, obj())) == {1.0}  # jitter below duration wins
    assert e.delay_range_ns(small, obj(), NOW) == [10**9]
    assert e.delay_range_ns(stage("x"), obj(), NOW) is None


DF = {"expressionFrom": '.metadata.annotations["delay"]'}
JF = {"expressionFrom": '.metadata.annotations["jitter"]'}


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({}, 1.0),
        ({"delay": "250ms"}, 0.25),
        ({"delay": "1m"}, 60.0),
        ({"delay": "not-a-duration"}, 1.0),      # unparsable: the default
        ({"delay": ""}, 0.0),                    # empty string: no delay at all
        ({"delay": "2006-01-02T15:04:15Z"}, 10.0),  # a time: that time minus now
        ({"delay": "2006-01-02T16:04:05+01:00"}, 0.0),
        ({"delay": "2006-01-02T15:03:05Z"}, 0.0),  # in the past: played at once
        ({"jitter": "500ms"}, 0.5),              # jitter below duration
        ({"jitter": ""}, 1.0),                   # invalid jitter: duration only
    ],
)
def test_duration_from_annotation_override(annotations: dict[str, str], expected: float) -> None:
    s = stage("d", delay={"durationMilliseconds": 1000, "durationFrom": DF, "jitterDurationFrom": JF})
    plan = StageEngine([s]).plan("Pod", obj(annotations=annotations), NOW)
    assert plan is not None and plan.delay == pytest.approx(expected)


def test_jitter_from_deletion_timestamp_like_kwok_pod_delete() -> None:
    s = stage("pod-delete", delay={"durationMilliseconds": 1000,
                                   "jitterDurationFrom": {"expressionFrom": ".metadata.deletionTimestamp"}})
    e = StageEngine([s], rng=random.Random(2))
    later = obj(deletionTimestamp="2006-01-02T15:04:35Z")  # 30 s grace period left
    ds = delays(e, s, later)
    assert all(1 <= d < 30 for d in ds) and max(ds) > 20
    assert e.delay_range_ns(s, later, NOW) == [10**9, 30 * 10**9]
    assert e.delay_range_ns(s, obj(deletionTimestamp="2006-01-02T15:04:05Z"), NOW) == [0]
    assert e.delay_range_ns(s, obj(), NOW) == [10**9]  # no timestamp: duration only


def test_cel_delays_and_cel_only_jitter_is_ignored() -> None:
    s = stage("c", delay={"durationFrom": {"cel": {"expression": "'2s'"}},
                          "jitterDurationFrom": {"cel": {"expression": "'10s'"}}})
    e = StageEngine([s])
    assert delays(e, s, obj(), 5) == [2.0] * 5
    bad = stage("b", delay={"durationMilliseconds": 3000, "durationFrom": {"cel": {"expression": "self.nope"}}})
    assert e.delay_ns(bad, obj(), NOW) == 0  # kwok: an erroring delay means no delay


def test_now_may_be_a_datetime() -> None:
    s = stage("d", delay={"durationFrom": DF})
    e = StageEngine([s])
    o = obj(annotations={"delay": "2006-01-02T15:04:15Z"})
    aware = dt.datetime(2006, 1, 2, 15, 4, 5, tzinfo=dt.UTC)
    assert e.delay_ns(s, o, aware) == e.delay_ns(s, o, NOW) == e.delay_ns(s, o, aware.replace(tzinfo=None)) == 10**10


def test_rfc3339_parsing() -> None:
    assert parse_rfc3339("2006-01-02T15:04:05Z") == 1136214245 * 10**9
    assert parse_rfc3339("2006-01-02T15:04:05.123456789Z") == 1136214245 * 10**9 + 123456789
    assert parse_rfc3339("2006-01-02T17:04:05+02:00") == 1136214245 * 10**9
    for bad in ("2006-01-02", "2006-01-02 15:04:05Z", "2006-02-30T00:00:00Z", "2006-01-02T15:04:05", "x"):
        assert parse_rfc3339(bad) is None


# --------------------------------------------------------------------------- finalizers


@pytest.mark.parametrize(
    ("current", "add", "remove", "empty", "expected"),
    [
        ([], ["a"], [], False, [{"op": "add", "path": "/metadata/finalizers", "value": ["a"]}]),
        (["x"], ["a", "x"], [], False, [{"op": "add", "path": "/metadata/finalizers/-", "value": "a"}]),
        (["a"], ["a"], [], False, []),  # already there: no patch
        (["a", "b", "c"], [], ["a", "c"], False,
         [{"op": "remove", "path": "/metadata/finalizers/2"}, {"op": "remove", "path": "/metadata/finalizers/0"}]),
        (["a"], [], ["a"], False, [{"op": "remove", "path": "/metadata/finalizers"}]),
        ([], [], ["a"], False, []),
        (["a", "b"], [], [], True, [{"op": "remove", "path": "/metadata/finalizers"}]),
        ([], [], [], True, []),
        (["a"], ["z"], [], True, [{"op": "remove", "path": "/metadata/finalizers"},
                                  {"op": "add", "path": "/metadata/finalizers", "value": ["z"]}]),
    ],
)
def test_finalizer_ops_match_kwok(current: list[str], add: list[str], remove: list[str], empty: bool,
                                  expected: list[dict[str, Any]]) -> None:
    assert finalizer_ops(current, FinalizerSpec(tuple(add), tuple(remove), empty)) == expected


# --------------------------------------------------------------------------- rendering


def test_next_order_event_finalizers_patch_delete() -> None:
    s = stage("s", next={"event": {"type": "Normal", "reason": "Killing", "message": "bye"},
                         "finalizers": {"empty": True}, "delete": True})
    o = obj(finalizers=["kubernetes"])
    a = StageEngine([s]).actions(s, o, {})
    assert a.event == Event("Normal", "Killing", "bye")
    assert a.patches == [Patch(None, "json", [{"op": "remove", "path": "/metadata/finalizers"}])]
    assert a.delete and not a.immediate_next
    assert [type(x) for x in a.ordered] == [Event, Patch, Delete]


def test_status_patch_types_and_wrapping() -> None:
    body = "phase: Running\nconditions:\n- type: Ready\n  status: 'True'\n"
    pod = with_patch(stage("p"), body)
    node = with_patch(stage("n", kind="Node"), body)
    pv = with_patch(stage("v", kind="PersistentVolume"), body)
    e = StageEngine([pod, node, pv])
    expected = {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
    cases: list[tuple[Stage, Any]] = [(pod, "strategic"), (node, "strategic"), (pv, "merge")]
    for s, typ in cases:
        a = e.actions(s, obj(), {})
        assert a.patches == [Patch("status", typ, expected)] and not a.delete
    explicit = with_patch(stage("m"), body, type="merge", root="", subresource="")
    assert e.actions(explicit, obj(), {}).patches == [Patch(None, "merge", json.loads(json.dumps(expected["status"])))]


def test_json_patch_paths_are_prefixed_with_root() -> None:
    s = with_patch(stage("j"), '- op: add\n  path: /labels/x\n  value: "1"\n', root="metadata", subresource="",
                   type="json")
    a = StageEngine([s]).actions(s, obj(), {})
    assert a.patches == [Patch(None, "json", [{"op": "add", "path": "/metadata/labels/x", "value": "1"}])]
    bad = with_patch(stage("j"), "a: 1", root="metadata", type="json")
    with pytest.raises(StageError, match=r'^stage "j": spec.next.statusTemplate: a json patch must render'):
        StageEngine([bad]).actions(bad, obj(), {})


def test_template_receives_object_and_funcs() -> None:
    seen: dict[str, Any] = {}

    def render(data: Any, funcs: Any) -> str:
        seen["data"], seen["funcs"] = data, funcs
        return f"podIP: {funcs['PodIP']()}\nname: {data['metadata']['name']}"

    s = with_patch(stage("f"), render)
    o = obj()
    funcs = {"PodIP": lambda: "10.0.0.7"}
    a = StageEngine([s]).actions(s, o, funcs)
    assert seen["data"] is o and seen["funcs"] is funcs  # no copies
    assert a.patches[0].body == {"status": {"podIP": "10.0.0.7", "name": "p"}}


def test_rendered_yaml_follows_go_yaml() -> None:
    assert yaml_to_json("a: y\nb: 2006-01-02T15:04:05Z\nc: 1e3\nd: 0o17\ne: ''\nf: null\ng: 1_000\nh: '1'") == {
        "a": True, "b": "2006-01-02T15:04:05Z", "c": 1000.0, "d": 15, "e": "", "f": None, "g": 1000, "h": "1"}
    assert yaml_to_json("") is None
    assert yaml_to_json("a: 1\n---\nb: 2") == {"a": 1}
    with pytest.raises(ValueError):
        yaml_to_json("a: .nan")


def test_render_errors_name_stage_and_field() -> None:
    err = template_error_type()

    def boom(data: Any, funcs: Any) -> str:
        raise err("template: x:1: executing: nil pointer\nsecond line")

    s = with_patch(stage("pod-ready"), boom)
    with pytest.raises(StageError, match=r'^stage "pod-ready": spec.next.statusTemplate: .*nil pointer second line$'):
        StageEngine([s]).actions(s, obj(), {})
    bad_yaml = with_patch(stage("pod-ready"), "a: [unclosed")
    with pytest.raises(StageError, match=r'^stage "pod-ready": spec.next.statusTemplate: rendered text is not valid'):
        StageEngine([bad_yaml]).actions(bad_yaml, obj(), {})


def test_noop_patches_are_dropped() -> None:
    o = obj()
    o["status"]["conditions"] = [{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}]
    same = with_patch(stage("s"), "phase: Running\nconditions:\n- type: Ready\n  status: 'True'\n")
    e = StageEngine([same])
    assert e.actions(same, o, {}).patches == []  # strategic: conditions merge by type
    assert len(e.actions(same, o, {}, skip_noop=False).patches) == 1
    pv = with_patch(stage("v", kind="PersistentVolume"), "phase: Running\nconditions:\n- type: Ready\n  status: 'True'\n")
    assert len(e.actions(pv, o, {}).patches) == 1  # merge: the list is replaced, which changes it
    changed = with_patch(stage("c"), "conditions:\n- type: Ready\n  status: 'False'\n")
    assert len(e.actions(changed, o, {}).patches) == 1
    deleting = with_patch(stage("d"), "phase: null\n")
    assert len(e.actions(deleting, o, {}).patches) == 1
    absent = with_patch(stage("a"), "podIP: null\n")
    assert e.actions(absent, o, {}).patches == []


def test_patch_changes_json_patch() -> None:
    o = obj(finalizers=["a"])
    add_same = Patch(None, "json", [{"op": "add", "path": "/metadata/finalizers/0", "value": "a"}])
    assert patch_changes("Pod", o, add_same)  # inserts a second "a"
    replace_same = Patch(None, "json", [{"op": "replace", "path": "/metadata/finalizers", "value": ["a"]}])
    assert not patch_changes("Pod", o, replace_same)
    assert o["metadata"]["finalizers"] == ["a"]  # the object is never modified
    broken = Patch(None, "json", [{"op": "remove", "path": "/metadata/nope"}])
    assert patch_changes("Pod", o, broken)  # cannot tell: let the API server decide


def test_steps_delete_in_the_middle() -> None:
    s = parse_stage(doc("steps", steps=[
        {"event": {"type": "Normal", "reason": "A"}},
        {"finalizers": {"add": [{"value": "f"}]}},
        {"delete": True},
        {"event": {"type": "Warning", "reason": "B"}, "finalizers": {"empty": True}},
    ]))
    a = StageEngine([s]).actions(s, obj(), {})
    assert [type(x).__name__ for x in a.ordered] == ["Event", "Patch", "Delete", "Event"]
    assert a.events == [Event("Normal", "A", ""), Event("Warning", "B", "")] and a.event == a.events[0]
    assert a.patches == [Patch(None, "json", [{"op": "add", "path": "/metadata/finalizers", "value": ["f"]}])]


def test_immediate_next_needs_a_sent_patch() -> None:
    base = stage("i", immediateNextStage=True, next={"event": {"reason": "x"}})
    e = StageEngine([base])
    assert not e.actions(base, obj(), {}).immediate_next  # nothing patched
    patched = with_patch(base, "phase: Succeeded")
    assert e.actions(patched, obj(), {}).immediate_next
    noop = with_patch(base, "phase: Running")
    assert not e.actions(noop, obj(), {}).immediate_next


def test_apply_steps() -> None:
    s = parse_stage(doc("ap", steps=[{"delete": False}]))
    spec_cls = __import__("shardlet.stages.model", fromlist=["ApplySpec"]).ApplySpec
    apply = spec_cls(subresource="status", template_text="<fake>",
                     template=FakeTemplate(lambda d, f: "apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: x}"),
                     type=None, impersonation=None, field="spec.steps[0].apply.template")
    s2 = Stage(**{**{f: getattr(s, f) for f in Stage.__dataclass_fields__}, "steps": (Step(apply=apply),)})
    a = StageEngine([s2]).actions(s2, obj(), {})
    assert a.applies == [Apply("status", "apply", {"apiVersion": "v1", "kind": "PersistentVolume",
                                                   "metadata": {"name": "x"}}, field="spec.steps[0].apply")]
    assert a.ordered == a.applies and a.patches == [] and not a.delete


# --------------------------------------------------------------------------- hot path


def test_plan_is_cheap_for_many_objects() -> None:
    stages = [
        stage("pod-ready", match="Pending", selector={"matchExpressions": [
            {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
            {"key": ".status.phase", "operator": "In", "values": ["Pending"]},
            {"key": '.status.conditions.[] | select( .type == "Ready" ) | .status', "operator": "NotIn",
             "values": ["True"]}]}),
        stage("pod-delete", selector={"matchExpressions": [
            {"key": ".metadata.deletionTimestamp", "operator": "Exists"}]}),
    ]
    e = StageEngine(stages)
    pods = [obj("Pending" if i % 2 else "Running") for i in range(20000)]
    for p in pods[::2]:
        p["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    t0 = time.perf_counter()
    planned = sum(e.plan("Pod", p, NOW) is not None for p in pods)
    elapsed = time.perf_counter() - t0
    assert planned == 10000
    assert elapsed < 5.0, f"{elapsed / len(pods) * 1e6:.1f} µs per plan()"


def test_builtin_profiles_plan_nodes_and_pods() -> None:
    try:
        fast = load_profile("fast")
    except (ImportError, StageError) as err:
        pytest.skip(f"template engine not usable yet: {err}")
    e = StageEngine(fast, rng=random.Random(0))
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}}
    plan = e.plan("Node", node, NOW)
    assert plan is not None and plan.stage.name == "node-initialize" and plan.delay == 0
    ready = {**node, "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
    hb = e.plan("Node", ready, NOW)
    assert hb is not None and hb.stage.name == "node-heartbeat-with-lease" and 600 <= hb.delay < 610
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "status": {"phase": "Pending"},
           "spec": {"nodeName": "n", "containers": [{"name": "c", "image": "i"}]}}
    pp = e.plan("Pod", pod, NOW)
    assert pp is not None and pp.stage.name == "pod-ready"


# --------------------------------------------------------------------------- with the real template engine


def _runtime_funcs() -> dict[str, Callable[..., Any]]:
    from shardlet.stages.funcs import base_funcs

    f: dict[str, Callable[..., Any]] = dict(base_funcs())
    f.update({
        "NodeIP": lambda: "10.0.0.1", "NodeName": lambda: "node-1", "NodePort": lambda: 10250,
        "NodeIPWith": lambda node: "10.0.0.1", "NodeIPsWith": lambda node: ["10.0.0.1"],
        "PodIP": lambda: "10.244.0.5", "PodIPWith": lambda *a: "10.244.0.5", "PodIPsWith": lambda *a: ["10.244.0.5"],
    })
    return f


def _profile_or_skip(name: str) -> list[Stage]:
    try:
        return load_profile(name)
    except (ImportError, StageError) as err:
        pytest.skip(f"template engine not usable yet: {err}")


def test_fast_pod_ready_renders_a_strategic_status_patch() -> None:
    stages = {s.name: s for s in _profile_or_skip("fast")}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
           "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "img"}]},
           "status": {"phase": "Pending"}}
    e = StageEngine(list(stages.values()))
    plan = e.plan("Pod", pod, NOW)
    assert plan is not None and plan.stage.name == "pod-ready"
    a = e.actions(plan.stage, pod, _runtime_funcs())
    assert len(a.patches) == 1 and a.event is None and not a.delete and not a.immediate_next
    p = a.patches[0]
    assert (p.subresource, p.type) == ("status", "strategic")
    status = p.body["status"]
    assert status["phase"] == "Running" and status["podIP"] == "10.244.0.5" and status["hostIP"] == "10.0.0.1"
    assert [c["type"] for c in status["conditions"]] == ["Initialized", "Ready", "ContainersReady"]
    assert status["containerStatuses"][0]["name"] == "c" and status["containerStatuses"][0]["ready"] is True
    assert parse_rfc3339(status["startTime"]) is not None  # Now renders RFC 3339


def test_node_initialize_and_heartbeat_render() -> None:
    e = StageEngine(_profile_or_skip("fast"))
    node: dict[str, Any] = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}}
    plan = e.plan("Node", node, NOW)
    assert plan is not None and plan.stage.name == "node-initialize"
    body = e.actions(plan.stage, node, _runtime_funcs()).patches[0].body["status"]
    assert body["addresses"] == [{"address": "10.0.0.1", "type": "InternalIP"},
                                 {"address": "node-1", "type": "Hostname"}]
    assert body["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 10250}}
    assert body["allocatable"] == {"cpu": "1k", "memory": "1Ti", "pods": "1M"}
    node["status"] = body
    hb = e.plan("Node", node, NOW)
    assert hb is not None and hb.stage.name == "node-heartbeat-with-lease"
    beat = e.actions(hb.stage, node, _runtime_funcs()).patches
    assert len(beat) == 1 and beat[0].body["status"]["addresses"] == body["addresses"]


def test_real_template_runtime_error_names_stage_and_field() -> None:
    _profile_or_skip("fast")
    s = parse_stage(doc("bad-render", next={"statusTemplate": "phase: {{ index .spec.containers 5 }}"}))
    with pytest.raises(StageError, match=r'^stage "bad-render": spec\.next\.statusTemplate: .*index out of range'):
        StageEngine([s]).actions(s, {"spec": {"containers": []}}, _runtime_funcs())


def test_chaos_node_not_ready_wins_by_weight_with_annotation_overrides() -> None:
    e = StageEngine(_profile_or_skip("fast") + _profile_or_skip("chaos"), rng=random.Random(4))
    node: dict[str, Any] = {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n", "labels": {"node-not-ready.stage.kwok.x-k8s.io": "true"}, "annotations": {}},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
    assert {s.name for s in e.possible("Node", node)} == {"node-not-ready"}  # weight 10000 vs 0
    plan = e.plan("Node", node, NOW)
    assert plan is not None and plan.stage.name == "node-not-ready" and plan.delay == 1.0
    node["metadata"]["annotations"] = {"node-not-ready.stage.kwok.x-k8s.io/weight": "0",
                                       "node-not-ready.stage.kwok.x-k8s.io/delay": "30s"}
    names = Counter(p.stage.name for p in (e.plan("Node", node, NOW) for _ in range(400)) if p is not None)
    assert set(names) == {"node-not-ready", "node-heartbeat-with-lease"}  # all weights 0: uniform
    node["metadata"]["annotations"]["node-not-ready.stage.kwok.x-k8s.io/weight"] = "1"
    plan = e.plan("Node", node, NOW)
    assert plan is not None and plan.stage.name == "node-not-ready" and plan.delay == 1.0  # jitter 1s < 30s
