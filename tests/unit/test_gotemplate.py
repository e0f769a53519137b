"""Unit tests for shardlet.stages.gotemplate (Go text/template semantics, kwok's value model)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardlet.stages import gotemplate as gt
from shardlet.stages.gotemplate import BUILTINS, TemplateError, parse

POD: dict[str, Any] = {
    "kind": "Pod",
    "metadata": {"name": "web-0", "labels": {"b": "2", "a": "1"}, "generation": 3},
    "spec": {
        "nodeName": "n1",
        "replicas": 0,
        "ratio": 0.5,
        "big": 1e21,
        "containers": [{"name": "app", "image": "nginx"}, {"name": "side", "image": "busybox"}],
        "empty": [],
        "nullv": None,
        "flags": {"on": True, "off": False},
    },
}


def render(text: str, data: Any = POD, funcs: dict[str, Any] | None = None) -> str:
    return parse(text, "t").execute(data, funcs)


@pytest.fixture(params=[True, False], ids=["codegen", "closures"])
def both_compilers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Run a test against generated code (the default) and against the closure-tree fallback."""
    monkeypatch.setattr(gt, "_CODEGEN", request.param)
    return bool(request.param)


# --------------------------------------------------------------------------------------------
# Constructs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        # text, comments, trim markers
        ("plain", "plain"),
        ("", ""),
        ("a{{/* c */}}b", "ab"),
        ("a {{- /* c */ -}} b", "ab"),
        ("a  {{- 1 -}}  b", "a1b"),
        ("a {{-1}} b", "a -1 b"),  # "-1" without a space is a number, not a trim marker
        ("x\n  {{- .kind }}\n", "xPod\n"),
        # field access and printing
        ("{{ .metadata.name }}", "web-0"),
        ("{{ .metadata.missing }}", "<no value>"),
        ("{{ .metadata.missing.deeper }}", "<no value>"),
        ("{{ .spec.nullv }}", "<no value>"),
        ("{{ .metadata.labels }}", "map[a:1 b:2]"),
        ("{{ .spec.containers }}", "[map[image:nginx name:app] map[image:busybox name:side]]"),
        ("{{ .spec.empty }}", "[]"),
        ("{{ .spec.flags.on }}", "true"),
        ("{{ $.kind }}", "Pod"),
        ("{{ (index .spec.containers 1).name }}", "side"),
        ("{{ (.spec).nodeName }}", "n1"),
        ("{{ (.missing).x }}", "<no value>"),
        # numbers from the object are json.Number (kwok decodes with UseNumber)
        ("{{ .spec.replicas }} {{ .spec.ratio }} {{ .spec.big }}", "0 0.5 1e+21"),
        ("{{ if .spec.replicas }}truthy{{ end }}", "truthy"),
        ('{{ eq .spec.replicas "0" }}', "true"),
        ('{{ printf "%T" .spec.replicas }}', "json.Number"),
        ("{{ .spec.replicas.Int64 }}", "0"),
        ("{{ len .metadata.generation }}", "1"),
        # literals
        ("{{ 1 }} {{ -1 }} {{ 0x1F }} {{ 017 }} {{ 0o17 }} {{ 0b101 }} {{ 1_000 }}", "1 -1 31 15 15 5 1000"),
        (
            "{{ 1.5 }} {{ 1e3 }} {{ 3.0 }} {{ 1e21 }} {{ 1e6 }} {{ 123456.0 }} {{ 1e-7 }}",
            "1.5 1000 3 1e+21 1e+06 123456 1e-07",
        ),
        ("{{ 'a' }} {{ '\\n' }} {{ '\\u00e9' }}", "97 10 233"),
        ('{{ "a\\tb" }}|{{ `raw\\n` }}|{{ "\\u263a\\x41" }}', "a\tb|raw\\n|☺A"),
        ("{{ true }} {{ false }}", "true false"),
        ("{{ 1+2i }}", "(1+2i)"),
        # variables
        ("{{ $x := 1 }}{{ $x = 2 }}{{ $x }}", "2"),
        ("{{ $x := .metadata.name }}{{ $x }}{{ $x := .kind }}{{ $x }}", "web-0Pod"),
        ("{{ $n := 0 }}{{ range .spec.containers }}{{ $n = .name }}{{ end }}{{ $n }}", "side"),
        ("{{ $y := 0 }}{{ if false }}{{ $y := 1 }}{{ else }}{{ $y }}{{ end }}", "0"),
        ("{{ with $x := .metadata.name }}{{ $x }}{{ end }}", "web-0"),
        ("{{ ($z := 3) }}{{ $z }}", "33"),
        ("{{ with .spec }}{{ $.kind }}/{{ .nodeName }}{{ end }}", "Pod/n1"),
        # if / else if / else, with / else with
        ('{{ if eq .kind "Node" }}N{{ else if eq .kind "Pod" }}P{{ else }}O{{ end }}', "P"),
        ("{{ if .spec.empty }}y{{ else }}n{{ end }}", "n"),
        ("{{ with .missing }}x{{ else with .spec.nodeName }}{{ . }}{{ else }}z{{ end }}", "n1"),
        ("{{ with .missing }}x{{ else with .alsoMissing }}y{{ else }}z{{ end }}", "z"),
        # range
        ("{{ range .spec.containers }}{{ .name }},{{ end }}", "app,side,"),
        ("{{ range $i, $c := .spec.containers }}{{ $i }}={{ $c.image }};{{ end }}", "0=nginx;1=busybox;"),
        ("{{ range $k, $v := .metadata.labels }}{{ $k }}{{ $v }}{{ end }}", "a1b2"),
        ("{{ range .metadata.labels }}{{ . }}{{ end }}", "12"),
        ("{{ range .spec.empty }}x{{ else }}none{{ end }}", "none"),
        ("{{ range .missing }}x{{ else }}none{{ end }}", "none"),
        ("{{ range 3 }}{{ . }}{{ end }}", "012"),
        ("{{ range 0 }}x{{ else }}zero{{ end }}", "zero"),
        (
            "{{ range 5 }}{{ if eq . 1 }}{{ continue }}{{ end }}{{ if eq . 3 }}{{ break }}{{ end }}{{ . }}{{ end }}",
            "02",
        ),
        ("{{ range $i, $e := .spec.empty }}x{{ else }}[{{ $e }}]{{ end }}", "[[]]"),
        # define / template / block
        ('{{ define "c" }}<{{ .name }}>{{ end }}{{ template "c" (index .spec.containers 0) }}', "<app>"),
        ('{{ template "x" . }}{{ define "x" }}{{ .kind }}{{ end }}', "Pod"),
        ('{{ define "d" }}[{{ . }}]{{ end }}{{ template "d" }}', "[<no value>]"),
        ('{{ block "b" .metadata }}{{ .name }}{{ end }}!', "web-0!"),
        ('{{ define "v" }}{{ $.name }}{{ end }}{{ template "v" .metadata }}', "web-0"),
        # pipelines
        ('{{ .metadata.name | printf "%s-%s" "x" }}', "x-web-0"),
        ('{{ .spec.containers | len | printf "%03d" }}', "002"),
        ('{{ .missing | or "dflt" }}', "dflt"),
        ("{{ 0 | and 1 }}", "0"),
        ('{{ (printf "%d" (len .spec.containers)) }}', "2"),
    ],
)
def test_render(both_compilers: bool, text: str, want: str) -> None:
    assert render(text) == want


@pytest.mark.parametrize(
    ("value", "truthy"),
    [
        (None, False),
        (True, True),
        (False, False),
        ("", False),
        ("x", True),
        ([], False),
        ([0], True),
        ({}, False),
        ({"a": None}, True),
        (0, True),
        (1, True),
        (0.0, True),
    ],
)
def test_truthiness_of_object_values(both_compilers: bool, value: Any, truthy: bool) -> None:
    # Numbers from the object are json.Number, a non-empty string: always true (as in kwok).
    assert render("{{ if .x }}T{{ else }}F{{ end }}", {"x": value}) == ("T" if truthy else "F")


@pytest.mark.parametrize(
    ("literal", "truthy"),
    [("0", False), ("1", True), ("0.0", False), ('""', False), ('"0"', True), ("nil", False)],
)
def test_truthiness_of_template_values(literal: str, truthy: bool) -> None:
    text = f"{{{{ if {literal} }}}}T{{{{ else }}}}F{{{{ end }}}}"
    if literal == "nil":
        with pytest.raises(TemplateError, match="nil is not a command"):
            render(text)
        return
    assert render(text) == ("T" if truthy else "F")


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ('{{ printf "%s|%v|%q|%x|%d" "hé" "hé" "hé" "hé" "hé" }}', 'hé|hé|"hé"|68c3a9|%!d(string=hé)'),
        (
            '{{ printf "%5d|%-5d|%05d|%+d|%x|%#x|%o|%b|%c|%U" 42 42 42 42 255 255 8 5 65 65 }}',
            "   42|42   |00042|+42|ff|0xff|10|101|A|U+0041",
        ),
        (
            '{{ printf "%f|%.2f|%8.3f|%e|%g|%v" 3.14159 3.14159 3.14159 3.14159 3.14159 3.14159 }}',
            "3.141590|3.14|   3.142|3.141590e+00|3.14159|3.14159",
        ),
        ('{{ printf "%t|%v|%%" true false }}', "true|false|%"),
        ('{{ printf "%5s|%-5s|%.2s|" "ab" "ab" "héllo" }}', "   ab|ab   |hé|"),
        ('{{ printf "%v %s" .metadata.labels .spec.empty }}', "map[a:1 b:2] []"),
        ('{{ printf "%d %d" 1 }}', "1 %!d(MISSING)"),
        ('{{ printf "%d" 1 2 }}', "1%!(EXTRA int=2)"),
        ('{{ printf "%[2]d %[1]d" 1 2 }}', "2 1"),
        ('{{ printf "%*d|%.*f" 5 1 2 3.14159 }}', "    1|3.14"),
        ('{{ printf "%v|%s" .missing .missing }}', "<nil>|%!s(<nil>)"),
        ('{{ printf "%d|%s" .spec.replicas .spec.replicas }}', "%!d(json.Number=0)|0"),
        (
            '{{ printf "%T %T %T %T" 1 1.5 "s" .metadata.labels }}',
            "int float64 string map[string]interface {}",
        ),
        ('{{ print 1 2 "a" "b" 3 nil }}', "1 2ab3 <nil>"),
        ('{{ println 1 "a" }}', "1 a\n"),
        ("{{ html \"<a href='x'>&\" }}", "&lt;a href=&#39;x&#39;&gt;&amp;"),
        ('{{ js "a\'b<c>" }}', "a\\'b\\u003Cc\\u003E"),
        ('{{ urlquery "a b&c" }}', "a+b%26c"),
    ],
)
def test_printf_and_print_builtins(both_compilers: bool, text: str, want: str) -> None:
    assert render(text) == want


def test_comparisons() -> None:
    assert render(
        '{{ eq 1 1 }} {{ eq 1 2 3 1 }} {{ ne 1 2 }} {{ lt 1 2 }} {{ le 2 2 }} {{ gt 1.5 2.5 }} {{ ge "b" "a" }}'
    ) == ("true true true true true false true")
    assert (
        render('{{ eq .missing nil }} {{ eq .metadata.name nil }} {{ eq .missing "x" }}')
        == "true false false"
    )
    with pytest.raises(TemplateError, match=r"incompatible types for comparison: json\.Number and int"):
        render("{{ eq .spec.replicas 0 }}")
    with pytest.raises(TemplateError, match="incompatible types for comparison"):
        render("{{ lt 1 1.5 }}")
    with pytest.raises(TemplateError, match="non-comparable type"):
        render("{{ eq .metadata.labels .metadata.labels }}")
    with pytest.raises(TemplateError, match="missing argument for comparison"):
        render("{{ eq 1 }}")


def test_and_or_short_circuit_and_return_values(both_compilers: bool) -> None:
    boom = {"boom": lambda: (_ for _ in ()).throw(RuntimeError("must not run"))}
    assert render('{{ or 0 "" "x" boom }}', funcs=boom) == "x"
    assert render("{{ and 1 0 boom }}", funcs=boom) == "0"
    assert render('{{ and 1 2 3 }} {{ or 0 "" }}') == "3 "
    with pytest.raises(TemplateError, match="must not run"):
        render("{{ or 0 boom }}", funcs=boom)


def test_index_slice_len() -> None:
    assert (
        render('{{ index .spec.containers 1 "name" }} {{ index .metadata.labels "nope" }}')
        == "side <no value>"
    )
    assert render('{{ slice "hello" 1 3 }} {{ len "héllo" }} {{ index "abc" 1 }}') == "el 6 98"
    with pytest.raises(TemplateError, match="index out of range: 5"):
        render("{{ index .spec.containers 5 }}")
    with pytest.raises(TemplateError, match=r"cannot index slice/array with type json\.Number"):
        render("{{ index .spec.containers .spec.replicas }}")
    with pytest.raises(TemplateError, match="index of untyped nil"):
        render("{{ index .missing 0 }}")
    with pytest.raises(TemplateError, match="invalid slice index: 3 > 1"):
        render('{{ slice "hello" 3 1 }}')


def test_number_formatting_matches_go() -> None:
    cases = {
        3.0: "3",
        1e21: "1e+21",
        1e20: "1e+20",
        100000.0: "100000",
        1e6: "1e+06",
        0.0001: "0.0001",
        0.00001: "1e-05",
        -0.0: "-0",
        123456789.0: "1.23456789e+08",
        2.5: "2.5",
        1 / 3: "0.3333333333333333",
    }
    for f, want in cases.items():
        assert gt.format_float(f) == want, f
    json_cases = {
        3.0: "3",
        1e21: "1e+21",
        1e20: "100000000000000000000",
        1e-7: "1e-7",
        0.5: "0.5",
        1e6: "1000000",
    }
    for f, want in json_cases.items():
        assert gt.json_float(f) == want, f
    assert gt.format_float(2.5, "f", 0) == "2" and gt.format_float(3.5, "f", 0) == "4"
    assert gt.format_float(1234.0, "g", 3) == "1.23e+03"
    assert gt.format_float(1.0, "e", 2) == "1.00e+00"
    assert gt.format_float(float("inf")) == "+Inf" and gt.format_float(float("nan")) == "NaN"


def test_go_quote() -> None:
    assert gt.go_quote("plain") == '"plain"'
    assert gt.go_quote('a"b\\c\n\t\x01é☺\u2028') == '"a\\"b\\\\c\\n\\t\\x01é☺\\u2028"'
    assert gt.go_quote("é", ascii_only=True) == '"\\u00e9"'
    assert gt.sprintf("%q", "x") == '"x"'


# --------------------------------------------------------------------------------------------
# Functions
# --------------------------------------------------------------------------------------------


def _recorder(into: list[Any]) -> Any:
    def rec(*args: Any) -> str:
        into.extend(args)
        return ""

    return rec


def test_user_functions_and_pipeline_final_argument() -> None:
    funcs = {"join2": lambda a, b: f"{a}+{b}", "none": lambda: None, "twice": lambda s: s * 2}
    assert (
        render('{{ join2 "a" "b" }} {{ "x" | join2 "y" }} {{ .kind | twice }}', funcs=funcs)
        == "a+b y+x PodPod"
    )
    assert render('{{ none }}|{{ none | printf "%v" }}', funcs=funcs) == "<no value>|<nil>"
    # missing values reach functions as None
    seen: list[Any] = []
    render("{{ rec .missing .spec.nullv nil }}", funcs={"rec": _recorder(seen)})
    assert seen == [None, None, None]


def test_functions_receive_json_numbers_and_containers() -> None:
    got: list[Any] = []
    render("{{ rec .spec.replicas .spec.containers }}", funcs={"rec": _recorder(got)})
    assert isinstance(got[0], gt.JSONNumber) and got[0] == "0"
    assert got[1] is POD["spec"]["containers"]


def test_user_functions_override_builtins() -> None:
    assert render("{{ len .kind }}", funcs={"len": lambda x: "custom"}) == "custom"
    # a user "or" is an ordinary function: all arguments are evaluated
    assert render("{{ or 1 2 }}", funcs={"or": lambda *a: sum(a)}) == "3"


def test_function_errors_are_wrapped() -> None:
    def boom(x: Any) -> str:
        raise KeyError("bad\nthing")

    with pytest.raises(TemplateError) as ei:
        render("line1\n  {{ boom .kind }}", funcs={"boom": boom})
    msg = str(ei.value)
    assert msg.startswith('template: t:2:5: executing "t" at <boom .kind>: error calling boom:')
    assert "\n" not in msg
    assert isinstance(ei.value.__cause__, KeyError)


def test_unknown_function() -> None:
    with pytest.raises(TemplateError, match=r'template: t:1:3: function "nope" not defined'):
        parse("{{ nope }}", "t", funcs={"Quote"})
    tmpl = parse("{{ nope 1 }}", "t")  # without a function list the check waits for execution
    with pytest.raises(TemplateError, match=r'"nope" is not a defined function'):
        tmpl.execute({})
    assert tmpl.execute({}, {"nope": lambda x: x + 1}) == "2"
    assert parse("{{ Quote 1 }}", "t", funcs=["Quote"]).execute({}, {"Quote": str}) == "1"


def test_builtins_mapping() -> None:
    assert set(BUILTINS) == {
        "and",
        "or",
        "not",
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
        "len",
        "index",
        "slice",
        "print",
        "printf",
        "println",
        "html",
        "js",
        "urlquery",
        "call",
    }
    assert BUILTINS["eq"](1, 2, 1) is True
    assert BUILTINS["printf"]("%05.1f", 3.14159) == "003.1"
    assert BUILTINS["index"]({"a": [1, 2]}, "a", 1) == "2"  # a container element: json.Number
    assert BUILTINS["call"](lambda a: a * 2, 4) == 8
    assert BUILTINS["and"](1, 0) == 0 and BUILTINS["or"](0, "x") == "x"


def test_call_builtin() -> None:
    assert render("{{ call .f 2 }}", {"f": lambda x: x * 3}) == "6"
    with pytest.raises(TemplateError, match="call of nil"):
        render("{{ call .missing }}")


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "msg"),
    [
        ("{{", "template: t:1:2: unclosed action"),
        ("a\n{{ .x }", 'template: t:2:6: unexpected "}" in operand'),
        ("{{ end }}", "template: t:1:7: unexpected {{end}}"),
        ("{{ if 1 }}", "template: t:1:10: unexpected EOF"),
        ("{{ $x }}", 'template: t:1:3: undefined variable "$x"'),
        ("{{ break }}", "template: t:1:3: {{break}} outside {{range}}"),
        ("{{ 1 | 2 }}", "template: t:1:7: non executable command in pipeline stage 2"),
        ('{{ define "a" }}1{{ end }}{{ define "a" }}2{{ end }}', 'multiple definition of template "a"'),
        ("{{ 0x }}", 'illegal number syntax: "0x"'),
        ("{{ 0x1g }}", 'bad number syntax: "0x1g"'),
        ("{{ 99999999999999999999 }}", 'integer overflow: "99999999999999999999"'),
        ("{{ 'ab' }}", "malformed character constant: 'ab'"),
        ("{{ $x=1 }}", "bad character U+003D '='"),
        ("{{/* x */ }}", "comment ends before closing delimiter"),
        ("{{ .a.  }}", "unexpected <.> in operand"),
        ('{{ "s".x }}', 'unexpected . after term "\\"s\\""'),
    ],
)
def test_parse_errors(text: str, msg: str) -> None:
    with pytest.raises(TemplateError) as ei:
        parse(text, "t")
    assert msg in str(ei.value)
    assert str(ei.value).startswith("template: t:")


@pytest.mark.parametrize(
    ("text", "msg"),
    [
        (
            "{{ .spec.nullv.x }}",
            'template: t:1:8: executing "t" at <.spec.nullv.x>: nil pointer evaluating interface {}.x',
        ),
        ("{{ .kind.x }}", "can't evaluate field x in type interface {}"),
        ("{{ $k := .kind }}{{ $k.x }}", "can't evaluate field x in type string"),
        ("{{ .kind 1 }}", "kind is not a method but has arguments"),
        ("{{ nil }}", "nil is not a command"),
        ("{{ range .kind }}{{ end }}", "range can't iterate over Pod"),
        ("{{ range $i, $e := 3 }}{{ end }}", "can't use 3 to iterate over more than one variable"),
        ('{{ template "nope" }}', 'template "nope" not defined'),
        ("{{ 9223372036854775808 }}", "9223372036854775808 overflows int"),
        ("{{ if false }}{{ $y := 1 }}{{ else }}{{ $y }}{{ end }}", "undefined variable: $y"),
        ("{{ $x = 1 }}", "undefined variable: $x"),
        ("{{ not 1 2 }}", "wrong number of args for not: want 1 got 2"),
        ("{{ len 3 }}", "error calling len: len of type int"),
        ("{{ printf .spec.replicas }}", "wrong type for value; expected string; got json.Number"),
    ],
)
def test_exec_errors(both_compilers: bool, text: str, msg: str) -> None:
    tmpl = parse(text, "t")
    with pytest.raises(TemplateError) as ei:
        tmpl.execute(POD)
    assert msg in str(ei.value)
    assert str(ei.value).startswith("template: t:1:")


def test_recursion_limit(both_compilers: bool) -> None:
    tmpl = parse('{{ define "r" }}{{ template "r" . }}{{ end }}{{ template "r" . }}', "t")
    with pytest.raises(TemplateError, match="exceeded maximum template depth"):
        tmpl.execute({})


def test_codegen_falls_back_to_closures_beyond_python_nesting_limits() -> None:
    # CPython allows 20 statically nested loops; 30 nested ranges still work (closure tree).
    nested = "{{ range . }}" * 30 + "x" + "{{ end }}" * 30
    data: Any = ["leaf"]
    for _ in range(29):
        data = [data]
    assert parse(nested).execute(data) == "x"
    assert parse(nested).execute([[], []]) == ""


def test_break_in_range_else_ends_only_that_branch(both_compilers: bool) -> None:
    # Go recovers {{break}} of an else branch in that same range; {{continue}} reaches the outer one.
    text = (
        "{{ range $i, $c := .spec.containers }}{{ range $.spec.empty }}{{ else }}"
        "{{ if eq $i 0 }}{{ continue }}{{ end }}a{{ break }}b{{ end }}{{ $c.name }}{{ end }}|"
    )
    assert render(text) == "aside|"


def test_deep_nesting_is_a_template_error() -> None:
    with pytest.raises(TemplateError, match="max expression depth exceeded"):
        parse("{{ " + "(" * 200 + "1" + ")" * 200 + " }}")
    text = "{{ if 1 }}" * 400 + "x" + "{{ end }}" * 400
    try:
        out = parse(text).execute({})
    except TemplateError as e:
        assert "nesting too deep" in str(e)
    else:
        assert out == "x"


# --------------------------------------------------------------------------------------------
# Compile once, execute many
# --------------------------------------------------------------------------------------------


def test_template_is_reusable_and_thread_safe(both_compilers: bool) -> None:
    tmpl = parse("{{ range .items }}{{ $x := . }}{{ $x }}{{ end }}|{{ .n }}", "t")
    assert tmpl.name == "t"
    results: list[str] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        for _ in range(200):
            out = tmpl.execute({"items": [i, i + 1], "n": i})
            with lock:
                results.append(out)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 1600
    assert all(r == f"{r.split('|')[1]}{int(r.split('|')[1]) + 1}|{r.split('|')[1]}" for r in results)


def test_data_root_variants() -> None:
    assert render("{{ . }}", None) == "<no value>"
    assert render("{{ . }}", [1, 2]) == "[1 2]"
    assert render("{{ .a }}", {"a": gt.GoInt(3)}) == "3"


def test_break_and_continue_as_function_names() -> None:
    tmpl = parse("{{ break }}", "t", funcs={"break"})
    assert tmpl.execute({}, {"break": lambda: "b"}) == "b"


# --------------------------------------------------------------------------------------------
# Fuzz: only TemplateError ever escapes
# --------------------------------------------------------------------------------------------

FRAGMENTS = [
    "{{",
    "}}",
    "{{-",
    "-}}",
    " ",
    "  ",
    "\n",
    ".",
    ".a",
    ".a.b",
    ".x",
    "$",
    "$x",
    "$y",
    ":=",
    "=",
    "|",
    "(",
    ")",
    ",",
    "if",
    "else",
    "end",
    "range",
    "with",
    "define",
    "template",
    "block",
    "break",
    "continue",
    "nil",
    "true",
    "false",
    '"s"',
    '"a\\"b"',
    "`r`",
    "'c'",
    "'\\n'",
    "1",
    "-1",
    "0x1F",
    "1.5e3",
    "1e400",
    "9223372036854775808",
    "1i",
    "2+3i",
    "printf",
    '"%v %d"',
    "eq",
    "ne",
    "lt",
    "index",
    "slice",
    "len",
    "and",
    "or",
    "not",
    "print",
    "html",
    "js",
    "urlquery",
    "call",
    "f",
    "/*",
    "*/",
    "x",
    "é",
    "\t",
    "@",
]

DATA: dict[str, Any] = {"a": {"b": [1, 2.5, None, "s"]}, "x": 0, "s": "str"}
FUNCS = {"f": lambda *a: a[0] if a else None}


def _only_template_errors(text: str) -> None:
    try:
        tmpl = parse(text, "fuzz")
    except TemplateError:
        return
    for data in (DATA, None, [1, "a"], 3):
        try:
            out = tmpl.execute(data, FUNCS)
        except TemplateError:
            continue
        assert isinstance(out, str)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join))
def test_fuzz_template_like_text(text: str) -> None:
    _only_template_errors(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_fuzz_arbitrary_text(text: str) -> None:
    _only_template_errors(text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="{}-/*.$:=|()\"'`ifelsndrgw 0123456789x\n", max_size=50))
def test_fuzz_syntax_alphabet(text: str) -> None:
    _only_template_errors(text)
