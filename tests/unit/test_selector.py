"""Stage selectors: kwok's matchLabels / matchAnnotations / matchExpressions (jq and CEL)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardlet.stages.selector import (
    CelError,
    MatchError,
    SelectorError,
    compile_cel,
    compile_selector,
    parse_go_duration,
)

READY_KEY = '.status.conditions.[] | select( .type == "Ready" ) | .status'


def pod(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "labels": {"app": "web"}, "annotations": {"a": "1"}},
        "spec": {"containers": [{"name": "c"}], "priority": 0, "hostNetwork": False},
        "status": status,
    }


def sel(*exprs: dict[str, Any], **kw: Any) -> Any:
    s = compile_selector({"matchExpressions": list(exprs), **kw})
    assert s is not None
    return s


def test_kwok_pod_ready_selector() -> None:
    s = sel(
        {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
        {"key": ".status.phase", "operator": "In", "values": ["Pending"]},
        {"key": READY_KEY, "operator": "NotIn", "values": ["True"]},
    )
    assert s.matches(pod(phase="Pending"))  # no conditions: .[] errors -> no results -> NotIn holds
    assert s.matches(pod(phase="Pending", conditions=[{"type": "Ready", "status": "False"}]))
    assert not s.matches(pod(phase="Pending", conditions=[{"type": "Ready", "status": "True"}]))
    assert not s.matches(pod(phase="Running"))
    terminating = pod(phase="Pending")
    terminating["metadata"]["deletionTimestamp"] = "2006-01-02T15:04:05Z"
    assert not s.matches(terminating)


@pytest.mark.parametrize(
    ("operator", "values", "results_expr", "expected"),
    [
        # In: some (non-null) result stringifies to one of the values
        ("In", ["a"], '"a"', True),
        ("In", ["a"], '"b", "a"', True),
        ("In", ["true"], "true", True),
        ("In", ["false"], "false", True),
        ("In", ["0"], "0", True),
        ("In", ["1"], ".spec.containers | length", True),
        ("In", ["1.5"], "1.5", False),  # floats never match (kwok's hasValue)
        ("In", ["[]"], "[]", False),
        ("In", ["null"], "null", False),
        ("In", ["a"], "empty", False),
        ("In", ["a"], '"a", error("x")', False),  # an error drops every result
        ("NotIn", ["a"], '"a"', False),
        ("NotIn", ["a"], "null", True),
        ("NotIn", ["a"], "error(\"x\")", True),
        ("Exists", None, '"x"', True),
        ("Exists", None, "false", True),
        ("Exists", None, "null", False),
        ("Exists", None, "null, null", False),
        ("Exists", None, "empty", False),
        ("Exists", None, '.missing.[]', False),
        ("DoesNotExist", None, "null", True),
        ("DoesNotExist", None, "0", False),
        ("DoesNotExist", None, "error(\"x\")", True),
    ],
)
def test_operator_semantics(operator: str, values: list[str] | None, results_expr: str, expected: bool) -> None:
    expr: dict[str, Any] = {"key": results_expr, "operator": operator}
    if values is not None:
        expr["values"] = values
    assert sel(expr).matches(pod()) is expected


def test_jq_form_is_equivalent_to_deprecated_key_form() -> None:
    a = sel({"jq": {"key": ".status.phase", "operator": "In", "values": ["Running"]}})
    b = sel({"key": ".status.phase", "operator": "In", "values": ["Running"]})
    for obj in (pod(phase="Running"), pod(phase="Pending"), pod()):
        assert a.matches(obj) == b.matches(obj)


def test_labels_and_annotations() -> None:
    s = compile_selector({"matchLabels": {"app": "web"}, "matchAnnotations": {"a": "1"}})
    assert s is not None and s.matches(pod())
    s2 = compile_selector({"matchLabels": {"app": "db"}})
    assert s2 is not None and not s2.matches(pod())
    s3 = compile_selector({"matchLabels": {"missing": ""}})
    assert s3 is not None and not s3.matches(pod())  # key must exist
    no_meta = compile_selector({"matchAnnotations": {"a": "1"}})
    assert no_meta is not None and not no_meta.matches({})
    everything = compile_selector({})
    assert everything is not None and everything.matches({}) and everything.matches(pod())
    empty_maps = compile_selector({"matchLabels": {}, "matchAnnotations": {}})
    assert empty_maps is not None and empty_maps.matches({})


def test_null_selector_is_none() -> None:
    assert compile_selector(None) is None


def test_cel_conditions_kwok_volume() -> None:
    s = sel(
        {"cel": {"expression": "self.spec.storageClassName == 'kwok-volume'"}},
        {"cel": {"expression": "!has(self.metadata.deletionTimestamp)"}},
        {"cel": {"expression": "has(self.spec.claimRef.name)"}},
        {"cel": {"expression": "!(self.status.phase in ['Bound', 'Released', 'Failed'])"}},
    )
    pv: dict[str, Any] = {"metadata": {"name": "pv"}, "spec": {"storageClassName": "kwok-volume", "claimRef": {"name": "c"}},
          "status": {"phase": "Pending"}}
    assert s.matches(pv)
    pv["status"]["phase"] = "Bound"
    assert not s.matches(pv)


def test_cel_error_raises_match_error_after_jq_short_circuit() -> None:
    s = sel(
        {"key": ".status.phase", "operator": "In", "values": ["Running"]},
        {"cel": {"expression": "self.spec.missing == 1"}},
    )
    assert not s.matches(pod(phase="Pending"))  # jq fails first: CEL not evaluated
    with pytest.raises(MatchError, match="no such key: missing"):
        s.matches(pod(phase="Running"))
    non_bool = sel({"cel": {"expression": "1 + 1"}})
    with pytest.raises(MatchError, match="not bool"):
        non_bool.matches(pod())


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("1 + 2 * 3 == 7", True),
        ("-7 / 2 == -3 && -7 % 2 == -1", True),
        ("'ab' + 'c' == 'abc' && size('abc') == 3 && 'abc'.size() == 3", True),
        ("[1, 2] + [3] == [1, 2, 3]", True),
        ("{'a': 1}['a'] == 1 && 'a' in {'a': 1} && 2 in [1, 2]", True),
        ("1 == 1.0 && 1 != 'a' && null == null", True),
        ("true ? 'x' : 'y'", "x"),
        ("[1, 2, 3].all(x, x > 0) && [1, 2, 3].exists(x, x == 2) && [1, 2].exists_one(x, x == 1)", True),
        ("[1, 2, 3].filter(x, x > 1) == [2, 3] && [1, 2].map(x, x * 2) == [2, 4]", True),
        ("[1, 2, 3].map(x, x > 1, x * 10)", [20, 30]),
        ("'kwok-volume'.startsWith('kwok') && 'abc'.endsWith('c') && 'abc'.contains('b')", True),
        ("'node-12'.matches('^node-[0-9]+$')", True),
        ("int('42') + int(2.9) == 44 && double(1) == 1.0 && string(5) == '5'", True),
        ("duration('1m30s') > duration('90s') || duration('1m30s') == duration('90s')", True),
        ("false && (1 / 0 == 1)", False),
        ("(1 / 0 == 1) || true", True),
        ("r'\\d' == '\\\\d'", True),
        ("0x10 == 16 && 3u == 3", True),
    ],
)
def test_cel_subset(expr: str, expected: Any) -> None:
    assert compile_cel(expr).eval({}) == expected


@pytest.mark.parametrize(
    "expr", ["1 / 0 == 1", "'a' < 1", "!1", "[1][5]", "{'a': 1}['b']", "self.x", "int('x')",
             "9223372036854775807 + 1", "true && 1"]
)
def test_cel_runtime_errors(expr: str) -> None:
    with pytest.raises(CelError):
        compile_cel(expr).eval({})


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("self.", "unexpected end of input at 5"),
        ("other.x", "undeclared reference to 'other'"),
        ("Now()", "undeclared reference to 'Now'"),
        ("has(self)", "invalid argument to has"),
        ("1 +", "unexpected end of input"),
        ("'abc", "unexpected character"),
        ("[1].all(1, true)", "invalid macro"),
        ("if", "reserved identifier"),
    ],
)
def test_cel_compile_errors(expr: str, message: str) -> None:
    with pytest.raises(CelError, match=message):
        compile_cel(expr)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"matchExpressions": [{"key": ".a", "operator": "In", "values": ["x"]}, {"key": ".a[]]", "operator": "Exists"}]},
         r"^spec\.selector\.matchExpressions\[1\]\.key: unexpected token '\]' at 4$"),
        ({"matchExpressions": [{"key": ".a", "operator": "Has"}]},
         r"matchExpressions\[0\]\.operator: must be one of In, NotIn, Exists, DoesNotExist"),
        ({"matchExpressions": [{"key": ".a", "operator": "In"}]}, r"matchExpressions\[0\]\.values: must be non-empty"),
        ({"matchExpressions": [{"key": ".a", "operator": "Exists", "values": ["x"]}]},
         r"matchExpressions\[0\]\.values: must be empty"),
        ({"matchExpressions": [{"key": ".a", "operator": "In", "values": [1]}]}, r"values: must be a list of strings"),
        ({"matchExpressions": [{}]}, r"matchExpressions\[0\]: needs one of 'jq', 'cel' or 'key'"),
        ({"matchExpressions": [{"cel": {"expression": "self."}}]}, r"matchExpressions\[0\]\.cel\.expression: unexpected"),
        ({"matchExpressions": [{"jq": {"key": "(", "operator": "Exists"}}]}, r"matchExpressions\[0\]\.jq\.key: "),
        ({"matchExpressions": [{"key": ".a", "operator": "Exists", "extra": 1}]}, r"matchExpressions\[0\]\.extra: unknown field"),
        ({"matchLabels": {"a": True}}, r"spec\.selector\.matchLabels\['a'\]: values must be strings"),
        ({"matchLabels": ["a"]}, r"matchLabels: must be a map of strings"),
        ({"matchExpressions": {"a": 1}}, r"matchExpressions: must be a list"),
        ({"bogus": 1}, r"spec\.selector\.bogus: unknown field"),
        ("x", r"spec\.selector: must be an object"),
    ],
)
def test_selector_errors_name_the_field(spec: Any, message: str) -> None:
    with pytest.raises(SelectorError, match=message):
        compile_selector(spec)


@pytest.mark.parametrize(
    ("text", "ns"),
    [("0", 0), ("1s", 10**9), ("1.5s", 1_500_000_000), ("-2m", -120 * 10**9), ("1h2m3s4ms5us6ns", 3723004005006),
     (".5ms", 500_000), ("1µs", 1000), ("", None), ("1", None), ("s", None), ("1d", None), ("1.s", 10**9),
     ("+3s", 3 * 10**9), ("99999999999h", None)],
)
def test_go_duration(text: str, ns: int | None) -> None:
    assert parse_go_duration(text) == ns


# --------------------------------------------------------------------------- fuzzing

_KEY_TOKENS = [".", ".a", ".[]", "[0]", '["x"]', "|", "select(", ")", "(", "==", '"x"', "1", "and", "or",
               "length", "has(", "//", ",", "]", "[", "?", "$v", "not", " "]
_CEL_TOKENS = ["self", ".", "a", "b", "has(", ")", "(", "==", "!=", "&&", "||", "!", "'x'", "1", "2.5", "[", "]",
               "{", "}", ":", ",", "in", "size(", "?", "-", "+", "*", "/", "%", "true", "null", "exists", "x", " "]
_OBJ = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=3),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "x"]), c, max_size=3),
    max_leaves=10,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(_KEY_TOKENS), max_size=10).map("".join),
    st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist", "Bogus", None]),
    st.one_of(st.none(), st.lists(st.text(max_size=3), max_size=2), st.integers()),
    st.lists(st.sampled_from(_CEL_TOKENS), max_size=10).map("".join),
    _OBJ,
)
def test_fuzz_selector_only_raises_selector_error(key: str, op: Any, values: Any, cel: str, obj: Any) -> None:
    spec = {"matchExpressions": [{"key": key, "operator": op, "values": values}, {"cel": {"expression": cel}}]}
    try:
        s = compile_selector(spec)
    except SelectorError:
        return
    assert s is not None
    try:
        result = s.matches(obj if isinstance(obj, dict) else {"a": obj})
    except SelectorError:
        return
    assert isinstance(result, bool)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_fuzz_cel_text_only_raises_cel_error(expr: str) -> None:
    try:
        compile_cel(expr).eval({"a": 1})
    except CelError:
        pass
