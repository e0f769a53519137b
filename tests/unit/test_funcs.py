"""Tests for shardlet.stages.funcs: kwok's pure template functions and the sprig subset."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from shardlet.stages import funcs as F
from shardlet.stages.gotemplate import GoInt, JSONNumber, TemplateError, parse

FUNCS = F.base_funcs(datetime(2024, 5, 6, 7, 8, 9, 120000, tzinfo=UTC))


def render(text: str, data: Any = None, funcs: dict[str, Any] | None = None) -> str:
    fs = dict(FUNCS)
    fs.update(funcs or {})
    return parse(text, "t", funcs=fs.keys()).execute(data if data is not None else {}, fs)


# --------------------------------------------------------------------------------------------
# kwok's functions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("abc", '"abc"'),
        ("a<b>&c", '"a\\u003cb\\u003e\\u0026c"'),  # json.Marshal escapes HTML characters
        ('q"\\\n\t\x01\u2028é', '"q\\"\\\\\\n\\t\\u0001\\u2028é"'),
        (3, '"3"'),
        (JSONNumber("3"), '"3"'),
        (1.5, '"1.5"'),
        (True, '"true"'),
        (None, '"null"'),
        ({"b": 1, "a": [1, "x"]}, '"{\\"a\\":[1,\\"x\\"],\\"b\\":1}"'),
        (float("nan"), '"NaN"'),  # json.Marshal fails: strconv.Quote(fmt.Sprint(s))
    ],
)
def test_quote(value: Any, want: str) -> None:
    assert F.quote(value) == want


def test_quote_in_templates() -> None:
    assert render("{{ .a | Quote }} {{ Quote .n }}", {"a": "x", "n": 7}) == '"x" "7"'


def test_now_is_rfc3339nano_utc() -> None:
    out = FUNCS["Now"]()
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d{1,9})?Z", out)
    assert m is not None, out
    assert not (m.group(2) or "").endswith("0")  # trailing zeros trimmed, as Go does
    parsed = datetime.fromisoformat(m.group(1) + "+00:00")
    assert abs(parsed - datetime.now(UTC)) < timedelta(seconds=5)


@pytest.mark.parametrize(
    ("ns", "want"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (1_700_000_000_123_456_789, "2023-11-14T22:13:20.123456789Z"),
        (1_700_000_000_120_000_000, "2023-11-14T22:13:20.12Z"),
        (1_700_000_001_000_000_000, "2023-11-14T22:13:21Z"),
    ],
)
def test_rfc3339nano(ns: int, want: str) -> None:
    assert F.rfc3339nano(ns) == want


def test_start_time_and_version() -> None:
    assert render("{{ StartTime }} {{ Version }}") == "2024-05-06T07:08:09.12Z " + F.KWOK_VERSION
    other = F.base_funcs(datetime(2024, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=1))), version="v9")
    assert other["StartTime"]() == "2024-01-01T00:00:00Z"
    assert other["Version"]() == "v9"
    default = F.base_funcs()["StartTime"]
    assert default() == default()  # fixed when the functions are built
    started = datetime.fromisoformat(default().replace("Z", "+00:00")[:19] + "+00:00")
    assert abs(started - datetime.now(UTC)) < timedelta(seconds=5)


def test_node_conditions() -> None:
    conds = FUNCS["NodeConditions"]()
    assert [c["type"] for c in conds] == [
        "Ready",
        "MemoryPressure",
        "DiskPressure",
        "PIDPressure",
        "NetworkUnavailable",
    ]
    assert conds[0] == {
        "type": "Ready",
        "status": "True",
        "lastHeartbeatTime": None,
        "lastTransitionTime": None,
        "reason": "KubeletReady",
        "message": "kubelet is posting ready status",
    }
    conds[0]["status"] = "mutated"
    assert FUNCS["NodeConditions"]()[0]["status"] == "True"  # a fresh copy every call
    assert render("{{ range NodeConditions }}{{ .type }}={{ .status }};{{ end }}") == (
        "Ready=True;MemoryPressure=False;DiskPressure=False;PIDPressure=False;NetworkUnavailable=False;"
    )


def test_yaml() -> None:
    assert (
        render("{{ YAML .a }}", {"a": {"memory": "1Ti", "cpu": "1k", "pods": 110}})
        == "cpu: 1k\nmemory: 1Ti\npods: 110\n"
    )
    # kwok's indent: "\n" + data with every newline followed by 2*indent spaces
    assert render("x:{{ YAML .a 1 }}", {"a": {"b": "c", "d": ["e"]}}) == "x:\n  b: c\n  d:\n  - e\n  "
    assert render("{{ YAML .a 0 }}", {"a": ["x", 1.5, None, True]}) == "- x\n- 1.5\n- null\n- true\n"
    assert render("{{ YAML .a }}", {"a": "true"}) in ("'true'\n", '"true"\n')
    assert render("{{ YAML .missing }}") == "null\n"
    with pytest.raises(TemplateError, match="expected int"):
        render('{{ YAML .a "1" }}', {"a": 1})


def test_yaml_round_trips_kwok_node_resources() -> None:
    data = {"status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110", "n": 3, "f": 0.5}}}
    out = render("allocatable:\n{{ with .status.allocatable }}{{ YAML . 1 }}{{ end }}", data)
    assert yaml.safe_load(out) == {
        "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110", "n": 3, "f": 0.5}
    }


def test_go_json() -> None:
    assert F.go_json({"b": [1, 2.0, None], "a": "<x>"}) == '{"a":"\\u003cx\\u003e","b":[1,2,null]}'
    assert F.go_json({"a": "<x>"}, escape_html=False) == '{"a":"<x>"}'
    assert F.go_json({"a": [1, {"b": {}}], "c": []}, indent="  ") == (
        '{\n  "a": [\n    1,\n    {\n      "b": {}\n    }\n  ],\n  "c": []\n}'
    )
    assert F.go_json(1e21) == "1e+21" and F.go_json(JSONNumber("12")) == "12"
    with pytest.raises(ValueError, match="unsupported value"):
        F.go_json(float("inf"))
    with pytest.raises(ValueError, match="unsupported type"):
        F.go_json(object())


def test_runtime_func_names() -> None:
    assert {
        "NodeIP",
        "NodeName",
        "NodePort",
        "PodIP",
        "NodeIPWith",
        "NodeIPsWith",
        "PodIPWith",
        "PodIPsWith",
    } == F.RUNTIME_FUNC_NAMES
    assert not F.RUNTIME_FUNC_NAMES & FUNCS.keys()  # supplied by the shard, not here


def test_kwok_templates_parse_with_base_and_runtime_funcs() -> None:
    names = set(FUNCS) | F.RUNTIME_FUNC_NAMES
    text = (
        "{{ $now := Now }}{{ $lt := or .metadata.creationTimestamp $now }}"
        '{{ with NodeIP }}{{ . | Quote }}{{ end }}{{ printf "kwok-%s" Version }}'
        '{{ PodIPsWith .spec.nodeName (or .spec.hostNetwork false) "" "" "" }}'
    )
    parse(text, "node", funcs=names)  # no "function not defined"


# --------------------------------------------------------------------------------------------
# sprig subset
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (
            '{{ default "d" .missing }} {{ default "d" "" }} {{ default "d" "x" }} {{ default 5 0 }}',
            "d d x 5",
        ),
        ('{{ default "d" .n }}', "0"),  # json.Number "0" is a non-empty string
        (
            "{{ empty .missing }} {{ empty 0 }} {{ empty .e }} {{ empty .l }} {{ empty .n }} {{ empty false }}",
            "true true true false false true",
        ),
        ('{{ coalesce .missing "" "x" "y" }} {{ coalesce 0 "" }}', "x <no value>"),
        ('{{ true | ternary "yes" "no" }} {{ ternary "yes" "no" false }}', "yes no"),
        ('{{ quote "a" 1 .missing }} {{ squote "a" 2 }}', "\"a\" \"1\" 'a' '2'"),
        (
            '{{ upper "abc" }} {{ lower "ABC" }} {{ title "hello world" }} {{ trim "  x  " }}',
            "ABC abc Hello World x",
        ),
        (
            '{{ trimAll "$" "$5.00$" }} {{ trimPrefix "-" "-x" }} {{ trimSuffix ".yaml" "a.yaml" }}',
            "5.00 x a",
        ),
        (
            '{{ contains "ell" "hello" }} {{ hasPrefix "he" "hello" }} {{ hasSuffix "lo" "hello" }}',
            "true true true",
        ),
        (
            '{{ repeat 3 "ab" }} {{ substr 1 3 "hello" }} {{ trunc 3 "hello" }} {{ trunc -2 "hello" }}',
            "ababab el hel lo",
        ),
        ('{{ replace "-" "_" "a-b-c" }} {{ cat "a" 1 .missing "b" }}', "a_b_c a 1 b"),
        (
            '{{ $p := split "." "a.b.c" }}{{ $p._1 }} {{ splitList "," "x,y" }} {{ join "-" (list "a" 1 nil "b") }}',
            "b [x y] a-1-b",
        ),
        (
            '{{ list 1 "a" 2.5 }} {{ index (list 1 2) 1 | printf "%T" }} {{ eq (index (list 1 2) 0) 1 }}',
            "[1 a 2.5] int true",
        ),
        (
            '{{ $d := dict "a" 1 "b" }}{{ $d }} {{ get $d "a" }} {{ hasKey $d "b" }} {{ keys $d }}',
            "map[a:1 b:] 1 true [a b]",
        ),
        ("{{ first .l }} {{ last .l }} {{ first .e }} {{ until 3 }}", "1 c <no value> [0 1 2]"),
        (
            "{{ add 1 2 .n }} {{ add1 .n }} {{ sub 5 7 }} {{ mul 2 3 4 }} {{ div 7 2 }} {{ div -7 2 }} {{ mod -7 3 }}",
            "3 1 -2 24 3 -3 -1",
        ),
        ('{{ max 1 5 3 }} {{ min 4 2 }} {{ add "3" "0x10" "1.0" 1.9 true nil }}', "5 2 22"),
        (
            '{{ toString 3 }} {{ atoi "42" }} {{ atoi "x" }} {{ int "12" }} {{ int64 2.9 }} {{ float64 "1.5" }}',
            "3 42 0 12 2 1.5",
        ),
        (
            '{{ b64enc "hello" }} {{ b64dec "aGVsbG8=" }} {{ b64dec "!!" | hasPrefix "illegal" }}',
            "aGVsbG8= hello true",
        ),
        ('{{ indent 2 "a\\nb" }}|{{ nindent 2 "a" }}', "  a\n  b|\n  a"),
        ("{{ toJson .m }} {{ toRawJson .m }}", '{"a":"\\u003c","n":[1,null]} {"a":"<","n":[1,null]}'),
        ("{{ toPrettyJson .m }}", '{\n  "a": "\\u003c",\n  "n": [\n    1,\n    null\n  ]\n}'),
        ("{{ toYaml .m }}", 'a: "<"\n"n":\n- 1\n- null'),
        ('{{ sha256sum "abc" | trunc 12 }} {{ regexMatch "^w.b-[0-9]$" "web-0" }}', "ba7816bf8f01 true"),
        ("{{ len uuidv4 }}", "36"),
    ],
)
def test_sprig(text: str, want: str) -> None:
    data = {"n": 0, "l": [1, "b", "c"], "e": [], "m": {"a": "<", "n": [1, None]}}
    assert render(text, data) == want


def test_sprig_errors_are_template_errors() -> None:
    with pytest.raises(TemplateError, match="integer divide by zero"):
        render("{{ div 1 0 }}")
    with pytest.raises(TemplateError, match="expected bool"):
        render('{{ ternary "a" "b" "x" }}')
    with pytest.raises(TemplateError, match="expected string"):
        render("{{ upper .n }}", {"n": 1})


def test_containers_built_by_sprig_keep_go_types() -> None:
    out = FUNCS["list"](1, 2.5, "x")
    assert type(out[0]) is GoInt and type(out[1]) is F.GoFloat
    assert type(FUNCS["dict"]("a", 1)["a"]) is GoInt
    assert F.empty(JSONNumber("0")) is False and F.empty(0) is True


# --------------------------------------------------------------------------------------------
# YAML emitter: reads back as the same value
# --------------------------------------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(
        ["true", "no", "N", "null", "~", "1e3", "0x1F", "8Gi", "1:30", "2024-01-01", "- x", "a: b", "#c", ""]
    )
)
_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _same(a: Any, b: Any) -> bool:
    # Numbers are written as Go's JSON writes them (a float like 3.7e16 becomes an integer literal),
    # so compare them numerically; everything else must be equal.
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    num = (int, float)
    if isinstance(a, num) and isinstance(b, num) and not isinstance(a, bool) and not isinstance(b, bool):
        return float(a) == float(b)
    return type(a) is type(b) and a == b


@settings(max_examples=400, deadline=None)
@given(_values)
def test_go_yaml_round_trips(value: Any) -> None:
    text = F.go_yaml(value)
    assert text.endswith("\n")
    assert _same(yaml.safe_load(text), value), text


def test_go_yaml_layout() -> None:
    v = {"b": [{"x": 1, "y": [1, 2]}, [3, 4]], "a": {"k": "v", "e": {}}, "c": []}
    assert F.go_yaml(v) == 'a:\n  e: {}\n  k: v\nb:\n- x: 1\n  "y":\n  - 1\n  - 2\n- - 3\n  - 4\nc: []\n'
    assert F.go_yaml("8Gi") == "8Gi\n" and F.go_yaml("8") == '"8"\n' and F.go_yaml(JSONNumber("8")) == "8\n"
    assert F.go_yaml(1e21) == "1.0e+21\n" and F.go_yaml("\x85\u2028") == '"\\u0085\\u2028"\n'
