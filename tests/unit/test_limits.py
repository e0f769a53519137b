"""One Stage object must not stall a shard or take its memory: sprig's `until`/`repeat`, range
loops, template output and jq programs are bounded, and going past a bound is a one-line error
naming the Stage and the field, while the other Stages still play."""

from __future__ import annotations

import time
import tracemalloc
from typing import Any

import pytest

from shardlet.stages import jq
from shardlet.stages.engine import StageEngine
from shardlet.stages.funcs import base_funcs
from shardlet.stages.gotemplate import MAX_OUTPUT, MAX_RANGE_STEPS, TemplateError, parse
from shardlet.stages.model import StageError, parse_stage

FUNCS = base_funcs()


def render(src: str) -> str:
    return parse(src, "t", FUNCS.keys()).execute({}, FUNCS)


def stage(name: str, template: str) -> Any:
    return parse_stage({"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": name},
                        "spec": {"resourceRef": {"apiGroup": "v1", "kind": "ConfigMap"},
                                 "selector": {"matchLabels": {"x": "y"}},
                                 "next": {"patches": [{"type": "merge", "template": template}]}}})


@pytest.mark.parametrize(("src", "why"), [
    ("{{ until 100000000 }}", "until 100000000: more than 100000 items"),
    ('{{ repeat 100000000 "a" }}', "result longer than 1 MiB"),
    ("{{ range 100000000 }}{{ end }}", f"more than {MAX_RANGE_STEPS} range iterations"),
    ("{{ range until 1000 }}{{ range until 1000 }}{{ end }}{{ end }}", f"more than {MAX_RANGE_STEPS} range iterations"),
    ('{{ $x := repeat 1000000 "a" }}{{ range until 100 }}{{ $x }}{{ end }}', f"output larger than {MAX_OUTPUT >> 20} MiB"),
    ('{{ define "b" }}{{ repeat 1000000 "x" }}{{ end }}{{ range until 10 }}{{ template "b" }}{{ end }}',
     "output larger than 4 MiB"),
])
def test_runaway_templates_fail_fast_with_little_memory(src: str, why: str) -> None:
    tracemalloc.start()
    t0 = time.process_time()
    try:
        with pytest.raises(TemplateError, match=why):
            render(src)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # bounded by the limits (a list of 10^5 ints, 4 MiB of output plus the piece that crossed it),
    # not by what the template asked for (10^8 items, 100 MiB strings)
    assert peak < 16 << 20, f"{peak >> 20} MiB"
    assert time.process_time() - t0 < 30


def test_templates_within_the_limits_render_as_before() -> None:
    assert render('{{ range $i, $e := until 3 }}{{ $i }}{{ end }}-{{ repeat 2 "ab" }}-{{ len (until 100000) }}') \
        == "012-abab-100000"
    assert len(render("{{ range until 300 }}{{ range until 300 }}x{{ end }}{{ end }}")) == 90_000


def test_a_runaway_stage_fails_alone_naming_itself_and_the_field() -> None:
    bad, good = stage("runaway", "{{ until 100000000 }}"), stage("fine", "metadata: {annotations: {ok: 'yes'}}")
    engine = StageEngine([bad, good])
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "d", "labels": {"x": "y"}}}
    with pytest.raises(StageError, match=r'^stage "runaway": spec.next.patches\[0\].template: .*more than 100000 items$'):
        engine.actions(bad, cm, FUNCS)
    assert engine.actions(good, cm, FUNCS).patches[0].body == {"metadata": {"annotations": {"ok": "yes"}}}


@pytest.mark.parametrize("src", ["[range(10000) | range(10000)] | length", "[0 | recurse(. + 1)] | length"])
def test_runaway_jq_fails_fast(src: str) -> None:
    t0 = time.process_time()
    with pytest.raises(jq.JQError, match=f"more than {jq.MAX_STEPS} values"):
        jq.compile_jq(src).run({})
    assert time.process_time() - t0 < 30
    # the budget is per run: the next run starts afresh
    assert jq.compile_jq("[range(1000)] | length").run({}) == [1000]


def test_runaway_jq_is_not_caught_by_try_or_alternative() -> None:
    for src in ("try ([range(10000) | range(10000)] | length) catch 0", "([0 | recurse(. + 1)] | length) // 0"):
        with pytest.raises(jq.JQLimitError):
            jq.compile_jq(src).run({})


def _selected(name: str, key: str) -> Any:
    return parse_stage({"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": name},
                        "spec": {"resourceRef": {"apiGroup": "v1", "kind": "ConfigMap"},
                                 "selector": {"matchExpressions": [{"key": key, "operator": "Exists"}]},
                                 "next": {"patches": [{"type": "merge", "template": "metadata: {labels: {n: x}}"}]}}})


def test_a_runaway_jq_selector_refuses_its_stage_once_and_the_others_play() -> None:
    bad = _selected("runaway", "[range(10000) | range(10000)] | length")
    good = _selected("fine", ".metadata.name")
    engine = StageEngine([bad, good])
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "d"}}
    plan = engine.plan("ConfigMap", cm, 0.0)
    assert plan is not None and plan.stage.name == "fine"
    [(name, msg)] = engine.take_refusals()
    assert name == "runaway" and msg.startswith("spec.selector.matchExpressions: evaluation generated more than")
    assert "\n" not in msg and "runaway" in engine.refused["runaway"]
    # refused for good: later objects are not evaluated against it again (no CPU burnt per event)
    t0 = time.process_time()
    for i in range(20):
        p = engine.plan("ConfigMap", {**cm, "metadata": {"name": f"c{i}", "namespace": "d"}}, 0.0)
        assert p is not None and p.stage.name == "fine"
    assert time.process_time() - t0 < 0.5 and not engine.take_refusals()


def test_a_runaway_weight_refuses_its_stage_and_the_plan_goes_on_without_it() -> None:
    raw = {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": "heavy"},
           "spec": {"resourceRef": {"apiGroup": "v1", "kind": "ConfigMap"},
                    "selector": {"matchExpressions": [{"key": ".metadata.name", "operator": "Exists"}]},
                    "weightFrom": {"expressionFrom": "[0 | recurse(. + 1)] | length"},
                    "next": {"patches": [{"type": "merge", "template": "metadata: {labels: {n: x}}"}]}}}
    engine = StageEngine([parse_stage(raw), _selected("fine", ".metadata.name")])
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "d"}}
    plan = engine.plan("ConfigMap", cm, 0.0)
    assert plan is not None and plan.stage.name == "fine"
    assert [n for n, _ in engine.take_refusals()] == ["heavy"]
