"""The jq subset used by Stage selectors and value expressions (gojq semantics)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardlet.stages.jq import JQError, compile_jq, jq_cmp, to_json

POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "web-0",
        "namespace": "default",
        "labels": {"app": "web", "tier": "front"},
        "annotations": {"pod-create.stage.kwok.x-k8s.io/weight": "5"},
        "ownerReferences": [{"kind": "Job", "name": "j"}, {"kind": "ReplicaSet", "name": "rs"}],
        "finalizers": ["a", "b"],
    },
    "spec": {
        "nodeName": "node-1",
        "priority": 0,
        "containers": [{"name": "c1", "image": "i1"}, {"name": "c2", "image": "i2", "ports": [80, 443]}],
    },
    "status": {
        "phase": "Pending",
        "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "False"}],
    },
}


def run(expr: str, data: Any = POD) -> list[Any]:
    return compile_jq(expr).run(data)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (".", [POD]),
        (".metadata.name", ["web-0"]),
        ('."metadata"."name"', ["web-0"]),
        ('.metadata["name"]', ["web-0"]),
        ('.metadata.labels["app"]', ["web"]),
        ('.metadata.annotations["pod-create.stage.kwok.x-k8s.io/weight"]', ["5"]),
        (".metadata.deletionTimestamp", [None]),
        (".missing.deeper.still", [None]),
        (".spec.containers[0].name", ["c1"]),
        (".spec.containers[-1].name", ["c2"]),
        (".spec.containers[7]", [None]),
        (".spec.containers[].name", ["c1", "c2"]),
        (".spec.containers.[].name", ["c1", "c2"]),  # kwok's spelling
        (".metadata.ownerReferences.[].kind", ["Job", "ReplicaSet"]),
        ('.status.conditions.[] | select( .type == "Ready" ) | .status', ["False"]),
        ('.status.conditions[] | select(.type != "Ready") | .type', ["Initialized"]),
        (".spec.containers | length", [2]),
        (".metadata.name | length", [5]),
        (".metadata.labels | length", [2]),
        ("null | length", [0]),
        ("-3 | length", [3]),
        ('.metadata | has("name")', [True]),
        ('.metadata | has("nope")', [False]),
        (".spec.containers | has(1)", [True]),
        ('.missing // "default"', ["default"]),
        ('.metadata.name // "default"', ["web-0"]),
        ("false // null // 3", [3]),
        ("(.a, .b) // 1", [1]),
        ("1, 2", [1, 2]),
        ("(1, 2) | . * 10", [10, 20]),
        ("[.spec.containers[] | .name]", [["c1", "c2"]]),
        ("{name: .metadata.name, n: 1}", [{"name": "web-0", "n": 1}]),
        ('{"a b": 1, (.metadata.name): 2}', [{"a b": 1, "web-0": 2}]),
        ("{a: (1, 2)}", [{"a": 1}, {"a": 2}]),
        ('"pod \\(.metadata.name) on \\(.spec.nodeName)"', ["pod web-0 on node-1"]),
        ('"esc\\t\\"q\\" \\u00e9"', ['esc\t"q" é']),
        ("true and false", [False]),
        ("true or error", [True]),
        ("false and error", [False]),
        ("null | not", [True]),
        ("1 | not", [False]),
        ("1 < 2, 2 <= 2, 3 > 4, 3 >= 4, 1 == 1.0, 1 != 2", [True, True, False, False, True, True]),
        ('null < false, false < true, true < 0, 0 < "a", "a" < [], [] < {}', [True] * 6),
        ("1 + 2 * 3 - 4 / 2", [5]),
        ("7 % 3, -7 % 3, 7 / 2", [1, -1, 3.5]),
        ("-(1 + 2)", [-3]),
        ('"a" + "b", [1] + [2], {"a":1} + {"b":2}, null + 1', ["ab", [1, 2], {"a": 1, "b": 2}, 1]),
        ("[1,2,3,2] - [2]", [[1, 3]]),
        ('{"a":{"b":1}} * {"a":{"c":2}}', [{"a": {"b": 1, "c": 2}}]),
        ('"a,b" / ","', [["a", "b"]]),
        ("if .spec.priority == 0 then \"zero\" else \"other\" end", ["zero"]),
        ("if false then 1 elif null then 2 else 3 end", [3]),
        ("if false then 1 end", [POD]),
        (". as $p | $p.metadata.namespace", ["default"]),
        ("reduce .spec.containers[] as $c (0; . + 1)", [2]),
        ('try error("boom") catch .', ["boom"]),
        ('try error({"x":1}) catch .x', [1]),
        ('"str" | .a?', []),
        ('[.[]?]', [[POD[k] for k in sorted(POD)]]),
        ("[.spec.containers[] | .ports // empty]", [[[80, 443]]]),
        (".spec.containers | map(.image)", [["i1", "i2"]]),
        (".metadata.labels | keys", [["app", "tier"]]),
        (".metadata.labels | to_entries | map(.key)", [["app", "tier"]]),
        (".metadata.labels | [.[]]", [["web", "front"]]),  # gojq: sorted key order
        ('[{"key":"a","value":1}] | from_entries', [{"a": 1}]),
        ('.metadata.labels | with_entries(select(.key == "app"))', [{"app": "web"}]),
        (".spec.containers | any(.name == \"c2\"), all(.name == \"c2\")", [True, False]),
        ("[true, false] | any, all", [True, False]),
        ('[.spec.containers[].name] | contains(["c1"])', [True]),
        ('"foobar" | contains("oba")', [True]),
        ('.metadata.name | test("^web-[0-9]+$")', [True]),
        ('"ABC" | test("b"; "i")', [True]),
        ('.metadata.name | startswith("web"), endswith("0")', [True, True]),
        ('"a,b,c" | split(",") | join("|")', ["a|b|c"]),
        ('["a", 1, null, true] | join("-")', ["a-1--true"]),
        ('"Hello" | ascii_downcase, ascii_upcase', ["hello", "HELLO"]),
        ('"web-0" | ltrimstr("web-") | tonumber', [0]),
        ("[3,1,2] | sort, min, max, reverse", [[1, 2, 3], 1, 3, [2, 1, 3]]),
        ("[1,1,2] | unique", [[1, 2]]),
        (".spec.containers | sort_by(.image) | map(.name)", [["c1", "c2"]]),
        ("[range(3)], [range(1;3)]", [[0, 1, 2], [1, 2]]),
        ("[limit(2; range(10))]", [[0, 1]]),
        ("first(range(5;10)), [.spec.containers | first.name, last.name]", [5, ["c1", "c2"]]),
        ('[1, "1", null] | map(tostring)', [["1", "1", "null"]]),
        ('{"b":1,"a":[1,2.5]} | tojson', ['{"a":[1,2.5],"b":1}']),
        ('"[1,2]" | fromjson', [[1, 2]]),
        ("[1,[2,[3]]] | flatten", [[1, 2, 3]]),
        ("[.[] | type]", [["string", "string", "object", "object", "object"]]),
        ('"2006-01-02T15:04:05Z" | fromdateiso8601', [1136214245]),
        ("1136214245 | todateiso8601", ["2006-01-02T15:04:05Z"]),
        ("[1,2,3][1:], \"abc\"[:2]", [[2, 3], "ab"]),
        ("6 / 3, 1 / 4", [2, 0.25]),
        ("[paths] | length > 10", [True]),
        ("[..] | length > 20", [True]),
        ('.spec | [numbers, (.containers | arrays | length)]', [[2]]),
        ("3 | IN(1, 3)", [True]),
        ("# comment\n.metadata.name", ["web-0"]),
    ],
)
def test_expressions(expr: str, expected: list[Any]) -> None:
    assert run(expr) == expected


@pytest.mark.parametrize(
    "expr",
    [
        ".metadata.name.first",  # index a string
        ".status.conditions.[] | .[0]",  # number index on an object
        ".metadata.missing.[]",  # iterate null
        ".metadata.name[]",  # iterate a string
        '{} | has(1)',
        "true | length",
        '"a" - 1',
        "{} + []",
        "1 / 0",
        "1 % 0",
        'error("x")',
        '"abc" | test("(")',  # invalid regex
        '"x" | tonumber',
    ],
)
def test_runtime_errors_raise_jqerror(expr: str) -> None:
    with pytest.raises(JQError):
        run(expr)


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        (".a[]]", "unexpected token ']' at 4"),
        (".a[", "unexpected end of input at 3"),
        ("(.a", "unexpected end of input"),
        ('"unterminated', "unterminated string"),
        (".a | nosuchfn", "function not defined: nosuchfn/0"),
        ("$nope", "variable not defined: $nope"),
        (".a = 1", "not supported"),
        ("def f: 1; f", "not supported"),
        ("1 == 2 == 3", "unexpected token '=='"),
        ("@base32", "not supported"),
        ("}", "unexpected token '}' at 0"),
    ],
)
def test_parse_errors_name_the_problem(expr: str, message: str) -> None:
    with pytest.raises(JQError, match=message.replace("$", r"\$").replace("(", r"\(")):
        compile_jq(expr)


def test_runtime_error_discards_earlier_outputs() -> None:
    # kwok relies on this: Execute returns nothing when the stream errors
    with pytest.raises(JQError):
        run("1, error(\"x\")")
    assert run("[1, (error(\"x\")?)]") == [[1]]


def test_try_keeps_outputs_before_the_error() -> None:
    assert run('[try (1, error("x"), 2)]') == [[1]]


def test_compiled_query_is_reusable_and_does_not_mutate_input() -> None:
    q = compile_jq('.status.conditions | map(select(.type == "Ready")) | length')
    before = repr(POD)
    assert [q.run(POD) for _ in range(3)] == [[1], [1], [1]]
    assert repr(POD) == before


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    with pytest.raises(JQError, match="nested too deeply"):
        compile_jq("(" * 5000 + "." + ")" * 5000)
    deep: Any = 0
    for _ in range(3000):
        deep = [deep]
    assert run("[..] | length", deep) == [3001]
    with pytest.raises(JQError, match="nested too deeply"):  # recursive builtins fail cleanly
        run("flatten", deep)


def test_ordering_and_json_helpers() -> None:
    values = [{"a": 1}, [1], "b", 2, True, False, None]
    assert sorted(values, key=__import__("functools").cmp_to_key(jq_cmp)) == values[::-1]
    assert jq_cmp({"a": 1, "b": 2}, {"a": 1, "c": 0}) < 0
    assert to_json(1.0) == "1" and to_json(1.5) == "1.5" and to_json(math.nan) == "null"


def test_large_results_are_bounded() -> None:
    with pytest.raises(JQError):
        run('"x" * 100000000')
    with pytest.raises(JQError):
        run("[range(1e12)] | length")


# --------------------------------------------------------------------------- fuzzing

_TOKENS = [
    ".", "..", ".a", ".b", ".[]", ".[0]", '.["a"]', "[", "]", "(", ")", "{", "}", "|", ",", "//", "?", ":", ";",
    "==", "!=", "<", ">=", "+", "-", "*", "/", "%", "and", "or", "not", "select(", "length", "has(", "map(",
    "if", "then", "else", "end", "as", "$x", "reduce", "try", "catch", '"s"', '"\\(', "1", "0", "-1", "1.5",
    "true", "false", "null", "keys", "empty", "error", "range(", "tostring", " ", "@", "#", "\\", "'",
]

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True) | st.text(max_size=4),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from("abc"), children, max_size=3),
    max_leaves=12,
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_TOKENS), max_size=14).map("".join), _JSON)
def test_fuzz_token_soup_only_raises_jqerror(expr: str, data: Any) -> None:
    try:
        q = compile_jq(expr)
    except JQError:
        return
    try:
        out = q.run(data)
    except JQError:
        return
    assert isinstance(out, list)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_fuzz_arbitrary_text_only_raises_jqerror(expr: str) -> None:
    try:
        q = compile_jq(expr)
    except JQError:
        return
    try:
        q.run(POD)
    except JQError:
        pass
