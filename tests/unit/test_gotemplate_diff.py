"""Differential test: shardlet's Go-template engine against Go's own text/template.

A small Go program (``gotemplate_diff/``, standard library only) renders every case the way kwok
does -- the object is JSON-encoded and decoded with ``UseNumber`` -- with deterministic stand-ins
for kwok's runtime functions.  The same cases are rendered by :mod:`shardlet.stages.gotemplate`
with identical Python stand-ins, and the outputs must match byte for byte (and fail together).

The corpus covers the template language case by case, plus kwok's own stage templates
(``kustomize/stage/**``) run against their testdata inputs and a few richer objects.
"""

from __future__ import annotations

import glob
import json
import os
import random
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from shardlet.stages import funcs as kfuncs
from shardlet.stages import gotemplate as gt

HERE = Path(__file__).parent
GO_SRC = HERE / "gotemplate_diff"
KWOK_DIR = Path(os.environ.get("KWOK_SRC", "/root/go/pkg/mod/sigs.k8s.io/kwok@v0.8.0"))

# --------------------------------------------------------------------------------------------
# Python twins of the Go program's functions
# --------------------------------------------------------------------------------------------


def _typed_str(v: Any) -> str:
    # Go validates typed parameters: nil and json.Number are not strings.
    if not isinstance(v, str) or isinstance(v, gt.JSONNumber):
        raise TypeError(f"expected string; got {gt._gotype(v)}")
    return v


def _typed_bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"expected bool; got {gt._gotype(v)}")
    return v


def _pod_ips(host_network: bool) -> list[str]:
    return ["192.168.0.1"] if host_network else ["10.0.0.2", "fd00::2"]


def _pod_ips_with(node: Any, host: Any, uid: Any, name: Any, ns: Any) -> list[str]:
    _typed_str(node)
    for v in (uid, name, ns):
        _typed_str(v)
    return _pod_ips(_typed_bool(host))


def _yaml_stub(s: Any, *indent: Any) -> str:
    for i in indent:  # Go checks each variadic argument against int (integral literals convert)
        if (not isinstance(i, int) or isinstance(i, bool)) and not (type(i) is float and i.is_integer()):
            raise TypeError(f"expected int; got {gt._gotype(i)}")
    indent = tuple(int(i) for i in indent)
    data = kfuncs.go_json(s, escape_html=False) + "\n"
    if len(indent) == 1 and indent[0] > 0:
        pad = " " * (indent[0] * 2)
        data = ("\n" + data).replace("\n", "\n" + pad)
    return data


def _fail(msg: Any) -> Any:
    raise RuntimeError(gt.sprint(msg))


def py_funcs() -> dict[str, Callable[..., Any]]:
    f = kfuncs.base_funcs()
    out: dict[str, Callable[..., Any]] = {
        "Quote": f["Quote"],
        "Now": lambda: "2024-05-06T07:08:09.123456789Z",
        "StartTime": lambda: "2024-05-06T00:00:00Z",
        "Version": lambda: "0.8.0",
        "NodeConditions": f["NodeConditions"],
        "NodeIP": lambda: "10.0.0.1",
        "NodeName": lambda: "kwok-node-0",
        "NodePort": lambda: 10250,
        "NodeIPWith": lambda n: (_typed_str(n), "192.168.0.1")[1],
        "NodeIPsWith": lambda n: (_typed_str(n), ["192.168.0.1"])[1],
        "PodIPWith": lambda *a: _pod_ips_with(*a)[0],
        "PodIPsWith": _pod_ips_with,
        "YAML": _yaml_stub,
        "default": f["default"],
        "dict": f["dict"],
        "fail": _fail,
        "echo": lambda *a: [kfuncs._go_value(x) for x in a],
        "nilf": lambda: None,
        "strs": lambda: ["a", "b"],
        "one": lambda: 1,
        "half": lambda: 0.5,
        "mkmap": lambda: {"a": gt.GoInt(1), "b": "x", "n": None},
    }
    return out


FUNCS = py_funcs()

# --------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------

POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "web-0",
        "namespace": "default",
        "uid": "1f1b7a54-0c0e-4d2c-a0b1-1d0e2c3b4a59",
        "labels": {"app": "web", "tier": "front"},
        "annotations": {"note": "a<b>&c", "n": "3"},
        "creationTimestamp": "2024-01-02T03:04:05Z",
        "generation": 3,
    },
    "spec": {
        "nodeName": "kwok-node-0",
        "replicas": 0,
        "ratio": 0.25,
        "big": 1e21,
        "float1": 1.0,
        "neg": -7,
        "huge": 12345678901234567890,
        "hostNetwork": False,
        "containers": [
            {"name": "app", "image": "nginx:1.25", "ports": [{"containerPort": 80}], "args": ["-v", "--x=1"]},
            {"name": "side", "image": "busybox", "restartPolicy": "Always"},
        ],
        "initContainers": [{"name": "init", "image": "alpine"}],
        "readinessGates": [{"conditionType": "example.com/ready"}],
        "tolerations": None,
        "empty": [],
        "emptyMap": {},
        "flags": {"on": True, "off": False},
        "text": "héllo wörld ✓",
        "nullv": None,
    },
    "status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}]},
}

SCALARS: list[Any] = [None, True, False, 0, 1, -1, 2.5, 0.0, "", "x", "0", [], [0], {}, {"a": None}]

L = list[tuple[str, Any]]


def _language_cases() -> L:
    c: L = []
    add = c.append
    # text, trim markers, comments
    for t in [
        "plain text",
        "",
        "a {{- /* c */ -}} b",
        "a  {{- 1 -}}  b",
        "a {{-1}} b",
        "a\n\t {{- .metadata.name }}\n  {{- .kind -}}\n\n z",
        "{{/* comment */}}x{{/*\nmulti\nline */}}y",
        "{{- /* trimmed */ -}}  \n x",
        "x{{ `a` }}{{ \"b\" }}{{ 'c' }}",
        "{{ 1 }}{{- 2 -}}{{ 3 }}",
        "{{.}}",
        "{{ . }}",
        "{{$}}",
        "unicode: {{ .spec.text }} {{ len .spec.text }}",
    ]:
        add((t, POD))
    # field access and printing
    for f in [
        ".metadata.name",
        ".metadata.missing",
        ".metadata.missing.deeper",
        ".spec.nullv",
        ".spec.nullv.x",
        ".spec.tolerations",
        ".spec.containers",
        ".spec.containers.x",
        ".spec.flags",
        ".spec.flags.on",
        ".spec.empty",
        ".spec.emptyMap",
        ".spec.replicas",
        ".spec.ratio",
        ".spec.big",
        ".spec.float1",
        ".spec.neg",
        ".spec.huge",
        ".metadata.generation",
        ".metadata.labels",
        ".metadata.name.x",
        ".spec.replicas.x",
        ".spec.replicas.String",
        ".spec.replicas.Int64",
        ".spec.ratio.Float64",
        ".spec.ratio.Int64",
        ".spec.containers.name",
        ".metadata",
        "(index .spec.containers 0).name",
        "(index .spec.containers 0).ports",
        "(index .spec.containers 5).name",
        "(.spec).nodeName",
        "(.missing).x",
        "(.spec.nullv).x",
        ".metadata.name 1",
        ".spec.nodeName | .x",
        "$.kind",
        "$.spec.containers",
        "nil",
        "nilf",
        "nilf.x",
        "(nilf).x",
        "mkmap",
        "mkmap.a",
        "mkmap.n",
        "strs",
        'echo 1 2.5 "s" nil true',
        "echo",
        "one",
        "half",
        "NodeConditions",
        "NodePort",
    ]:
        add((f"{{{{ {f} }}}}", POD))
    for v in SCALARS:
        add(('[{{ . }}] [{{ .x }}] [{{ print . }}] [{{ printf "%v|%s|%d" . . . }}]', {"x": v}))
        add(("{{ with .x }}T{{ . }}{{ else }}F{{ end }} {{ if .x }}T{{ else }}F{{ end }}", {"x": v}))
        add(("{{ not .x }} {{ and .x 1 }} {{ or .x 2 }} {{ len (print .x) }}", {"x": v}))
        add(("{{ range .x }}<{{ . }}>{{ else }}empty{{ end }}", {"x": v}))
        add(("{{ eq .x .x }}", {"x": v}))
        add(("{{ .x | Quote }}", {"x": v}))
    # variables
    for t in [
        "{{ $x := 1 }}{{ $x }}",
        "{{ $x := 1 }}{{ $x = 2 }}{{ $x }}",
        "{{ $x := .metadata.name }}{{ $x }} {{ $x := .kind }}{{ $x }}",
        "{{ $x := .missing }}[{{ $x }}] [{{ $x.y }}]",
        "{{ $x := .spec.nullv }}[{{ $x }}] [{{ $x.y }}]",
        "{{ $n := 0 }}{{ range .spec.containers }}{{ $n = .name }}{{ end }}{{ $n }}",
        "{{ if true }}{{ $y := 1 }}{{ $y }}{{ end }}",
        "{{ if false }}{{ $y := 1 }}{{ else }}{{ $y }}{{ end }}",
        "{{ $y := 0 }}{{ if false }}{{ $y := 1 }}{{ else }}{{ $y }}{{ end }}",
        "{{ with $x := .metadata.name }}{{ $x }}{{ end }}",
        "{{ with $x := .missing }}{{ $x }}{{ else }}[{{ $x }}]{{ end }}",
        "{{ range $i, $c := .spec.containers }}{{ $i }}:{{ $c.name }} {{ end }}",
        "{{ range $c := .spec.containers }}{{ $c.name }} {{ end }}",
        "{{ range $k, $v := .metadata.labels }}{{ $k }}={{ $v }};{{ end }}",
        "{{ range $k, $v := .spec.empty }}x{{ else }}[{{ $k }}][{{ $v }}]{{ end }}",
        "{{ $i := 9 }}{{ range $i, $e := .spec.containers }}{{ end }}{{ $i }}",
        "{{ $i := 0 }}{{ $e := 0 }}{{ range $i, $e = .spec.containers }}{{ end }}{{ $i }} {{ $e.name }}",
        "{{ $x := 1 }}{{ $x := $x }}{{ $x }}",
        "{{ $ }}",
        "{{ $.metadata.name }}{{ with .spec }}{{ $.kind }}{{ end }}",
        "{{ ($z := 3) }}{{ $z }}",
        "{{ $v := print ($v := 1) 2 }}{{ $v }}",
        "{{ $v := 0 }}{{ $v = print ($v := 1) $v }}{{ $v }}",
        "{{ $v := print ($v := .metadata.name) }}{{ $v.x }}",
        "{{ range $i, $e := (echo ($e := 5) 6) }}{{ $e }}{{ end }}{{ $e }}",
        "{{ $v := 2 }}{{ or 1 ($v := 1) }}{{ $v }}{{ and 1 ($v := 3) }}{{ $v }}",
        "{{ $v := 2 }}{{ range 3 }}{{ or (eq . 1) ($v := .) }}{{ $v }};{{ end }}{{ $v }}",
        "{{ $v := 2 }}{{ or 1 ($v := 1) }}{{ $v = 5 }}{{ $v }}{{ and 1 ($v := 3) }}{{ $v = 6 }}{{ $v }}",
        "{{ $i := 0 }}{{ or 1 ($i := 7) }}{{ range $i, $e = .spec.containers }}{{ end }}{{ $i }}",
        "{{ or true ($w := 1) }}",
        '{{ $x := 1 }}{{ template "t" }}{{ define "t" }}{{ $ }}{{ end }}',
        "{{ $x = 1 }}",
        "{{ $undefined }}",
    ]:
        add((t, POD))
    # control flow
    for t in [
        "{{ if .spec.replicas }}yes{{ else }}no{{ end }}",
        '{{ if eq .status.phase "Running" }}R{{ else if eq .status.phase "Pending" }}P{{ else }}O{{ end }}',
        "{{ if .missing }}1{{ else if .spec.flags.off }}2{{ else if .spec.flags.on }}3{{ end }}",
        "{{ with .spec.flags }}{{ .on }}{{ end }}",
        "{{ with .missing }}x{{ else with .spec.nodeName }}{{ . }}{{ else }}z{{ end }}",
        "{{ with .missing }}x{{ else with .alsoMissing }}y{{ else }}z{{ end }}",
        "{{ range .spec.containers }}{{ .name }}{{ if .restartPolicy }}({{ .restartPolicy }}){{ end }} {{ end }}",
        "{{ range .metadata.labels }}{{ . }},{{ end }}",
        "{{ range .spec.empty }}x{{ else }}none{{ end }}",
        "{{ range .spec.emptyMap }}x{{ else }}none{{ end }}",
        "{{ range .spec.missing }}x{{ else }}none{{ end }}",
        "{{ range .spec.nullv }}x{{ else }}none{{ end }}",
        "{{ range 3 }}{{ . }}{{ end }}",
        "{{ range $i := 3 }}{{ $i }}{{ end }}",
        "{{ range $i, $j := 3 }}{{ $i }}{{ end }}",
        "{{ range 0 }}x{{ else }}zero{{ end }}",
        "{{ range -2 }}x{{ else }}neg{{ end }}",
        "{{ range .spec.replicas }}x{{ end }}",
        "{{ range .metadata.name }}x{{ end }}",
        "{{ range true }}x{{ end }}",
        "{{ range 2.5 }}x{{ end }}",
        "{{ range $i, $e := .spec.containers }}{{ if eq $i 1 }}{{ break }}{{ end }}{{ $e.name }}{{ end }}",
        '{{ range .spec.containers }}{{ if eq .name "app" }}{{ continue }}{{ end }}{{ .name }}{{ end }}',
        '{{ range .spec.containers }}{{ range .args }}{{ if eq . "-v" }}{{ break }}{{ end }}{{ . }}{{ end }}|{{ .name }}{{ end }}',
        "{{ range 5 }}{{ if eq . 2 }}{{ continue }}{{ end }}{{ if eq . 4 }}{{ break }}{{ end }}{{ . }}{{ end }}",
        "{{ range .spec.containers }}{{ .name }}{{ range .ports }}:{{ .containerPort }}{{ end }} {{ end }}",
        "{{ range (index .spec.containers 0).args }}{{ . }} {{ end }}",
        "{{ range $x := .spec.tolerations }}{{ $x }}{{ else }}[{{ $x }}]{{ end }}",
        "{{ if }}x{{ end }}",
        "{{ break }}",
        "{{ range . }}{{ end }}{{ continue }}",
        "{{ range $i, $c := .spec.containers }}{{ range $.spec.empty }}x{{ else }}"
        "{{ if eq $i 1 }}{{ break }}{{ end }}{{ end }}{{ $c.name }}{{ end }}|done",
        "{{ range .spec.containers }}{{ with .restartPolicy }}{{ break }}{{ end }}{{ .name }}{{ end }}",
        "{{ range $i, $c := .spec.containers }}{{ range $.spec.empty }}x{{ else }}"
        "{{ if eq $i 0 }}{{ continue }}{{ end }}[{{ $i }}]{{ end }}{{ $c.name }}{{ end }}|done",
        "{{ range .spec.containers }}{{ range .missing }}{{ else }}a{{ break }}b{{ end }}{{ .name }}{{ end }}",
        "{{ range 2 }}{{ range 0 }}{{ else }}{{ range 3 }}{{ if eq . 1 }}{{ break }}{{ end }}{{ . }}"
        "{{ else }}{{ break }}{{ end }}-{{ break }}{{ end }}{{ . }}{{ end }}",
        "{{ range .spec.containers }}{{ range .args }}{{ continue }}{{ . }}{{ end }}{{ .name }}{{ end }}",
        '{{ range $i, $e := (echo 1 2.5) }}{{ $i }}{{ printf "%T" $e }}{{ end }}',
        '{{ range (echo 1 2.5 nil) }}{{ printf "%T;" . }}{{ end }}',
        '{{ range $i := 3 }}{{ printf "%T" $i }}{{ end }}',
        "{{ range .metadata.labels }}{{ break }}{{ end }}x",
        '{{ range $k, $v := .metadata.labels }}{{ if eq $k "app" }}{{ continue }}{{ end }}{{ $k }}{{ end }}',
        "{{ range .spec.containers }}{{ $x := .name }}{{ range 2 }}{{ $x }}{{ . }}{{ end }}{{ end }}",
        "{{ with .spec }}{{ range .containers }}{{ with $.metadata }}{{ .name }}{{ end }}{{ end }}{{ end }}",
    ]:
        add((t, POD))
    # define/template/block
    for t in [
        '{{ define "a" }}A{{ .name }}{{ end }}{{ template "a" (index .spec.containers 0) }}',
        '{{ define "a" }}[{{ . }}]{{ end }}{{ template "a" }}',
        '{{ template "a" . }}{{ define "a" }}{{ .kind }}{{ end }}',
        '{{ block "b" .metadata }}{{ .name }}{{ end }}!',
        '{{ template "nope" }}',
        '{{ define "r" }}{{ if . }}{{ index . 0 }}{{ template "r" (slice . 1) }}{{ end }}{{ end }}{{ template "r" (echo 1 2 3) }}',
        '{{ define "x" }}1{{ end }}{{ define "x" }}2{{ end }}',
        '{{ define "x" }}{{ end }}{{ define "x" }}2{{ end }}{{ template "x" }}',
        '{{ define "t" }}tt{{ end }}',
        '{{ define "v" }}{{ $ }}|{{ $.kind }}{{ end }}{{ template "v" .metadata }}',
        '{{ define "l" }}{{ range . }}{{ if eq . 2 }}{{ break }}{{ end }}{{ . }}{{ end }}{{ end }}{{ template "l" (echo 1 2 3) }}',
    ]:
        add((t, POD))
    # literals
    for t in [
        "{{ 1 }} {{ -1 }} {{ +1 }} {{ 0x1F }} {{ 0o17 }} {{ 017 }} {{ 0b101 }} {{ 1_000 }}",
        "{{ 1.5 }} {{ 1e3 }} {{ 1E-7 }} {{ .5 }} {{ 1. }} {{ 0x1p-2 }} {{ 100000000.0 }} {{ 123456.0 }}",
        "{{ 'a' }} {{ '\\n' }} {{ '\\x41' }} {{ '\\u00e9' }} {{ 'é' }}",
        '{{ "a\\tb\\n" }}{{ "\\u263a\\x41\\101\\"" }}{{ `raw\\n` }}',
        "{{ true }} {{ false }}",
        "{{ 1i }}",
        "{{ 1+2i }}",
        "{{ 9223372036854775807 }}",
        "{{ 9223372036854775808 }}",
        "{{ 99999999999999999999 }}",
        "{{ 08 }}",
        "{{ 1__0 }}",
        "{{ 0x }}",
        "{{ 1e }}",
        "{{ 'ab' }}",
        "{{ '' }}",
        '{{ "\\q" }}',
        "{{ 3.0 }} {{ -0.0 }} {{ 1e21 }} {{ 1e20 }} {{ 0.000001 }} {{ 0.0000001 }}",
    ]:
        add((t, POD))
    # pipelines and parens
    for t in [
        '{{ .metadata.name | printf "%s-%s" "x" }}',
        '{{ "a" | printf "%s%s" "b" | printf "%s%s" "c" }}',
        '{{ (printf "%d" 3) }}',
        '{{ printf "%s" (printf "%d" (len .spec.containers)) }}',
        "{{ ( ( 1 ) ) }}",
        "{{ 1 | 2 }}",
        "{{ .metadata.name | nil }}",
        "{{ (1) 2 }}",
        "{{ $x := 1 }}{{ $x 2 }}",
        "{{ .spec.nodeName | len }}",
        '{{ .spec.containers | len | printf "%03d" }}',
        '{{ index . "kind" | Quote }}',
        '{{ .missing | or "dflt" }}',
        '{{ "" | or .missing }}',
        "{{ .spec.nodeName | and true }}",
        "{{ 0 | and 1 }}",
        "{{ false | or false }}",
        "{{ .spec.nodeName | not }}",
        "{{ nilf | print }}",
    ]:
        add((t, POD))
    return c


def _builtin_cases() -> L:
    c: L = []
    add = c.append
    cmp_vals = [
        "1",
        "2",
        "1.5",
        '"a"',
        '"b"',
        "true",
        "nil",
        ".spec.replicas",
        ".metadata.name",
        ".missing",
        ".spec.nullv",
        ".spec.containers",
        ".spec.flags",
        '"0"',
        "one",
        "half",
    ]
    for a in cmp_vals:
        for b in cmp_vals:
            add((f"{{{{ eq {a} {b} }}}} {{{{ ne {a} {b} }}}}", POD))
    for a in ["1", "2", "1.5", '"a"', '"b"', ".spec.replicas", ".metadata.name", "true", ".missing"]:
        for b in ["1", "2.5", '"a"', ".spec.replicas", '"0"']:
            add(("{{ lt %s %s }} {{ le %s %s }} {{ gt %s %s }} {{ ge %s %s }}" % ((a, b) * 4), POD))
    for t in [
        '{{ eq 1 2 3 1 }} {{ eq "a" "b" "a" }} {{ eq 1 }}',
        "{{ eq }}",
        "{{ ne 1 }}",
        "{{ lt 1 }}",
        "{{ eq .spec.containers .spec.containers }}",
        "{{ eq .spec.flags nil }}",
        "{{ eq nil nil }}",
        "{{ not }}",
        "{{ not 1 2 }}",
        "{{ and }}",
        "{{ or }}",
        '{{ and 1 2 3 }} {{ and 1 0 3 }} {{ or 0 "" .missing }} {{ or 0 "x" (fail "boom") }}',
        '{{ and 0 (fail "boom") }}',
        '{{ or 0 (fail "boom") }}',
        '{{ len .spec.containers }} {{ len .metadata.labels }} {{ len "héllo" }} {{ len .spec.empty }}',
        "{{ len .missing }}",
        "{{ len .spec.nullv }}",
        "{{ len 3 }}",
        "{{ len .spec.replicas }}",
        '{{ index .spec.containers 1 "name" }}',
        '{{ index .metadata.labels "app" }}',
        '{{ index .metadata.labels "nope" }}',
        '{{ index .metadata "labels" "tier" }}',
        "{{ index .spec.containers 2 }}",
        "{{ index .spec.containers -1 }}",
        '{{ index .spec.containers "0" }}',
        "{{ index .spec.containers .spec.replicas }}",
        "{{ index .spec.containers nil }}",
        "{{ index .metadata.labels 1 }}",
        "{{ index .metadata.labels nil }}",
        "{{ index .missing 0 }}",
        "{{ index .spec.nullv 0 }}",
        '{{ index .metadata "missing" "x" }}',
        '{{ index "abc" 1 }}',
        "{{ index 5 0 }}",
        "{{ index .spec.containers }}",
        '{{ index (index .spec.containers 0).ports 0 "containerPort" }}',
        '{{ slice "hello" 1 3 }} {{ slice "hello" 2 }} {{ slice "hello" }}',
        "{{ slice (echo 1 2 3 4) 1 3 }} {{ slice .spec.containers 1 }}",
        '{{ slice "hello" 3 1 }}',
        '{{ slice "hello" 1 2 3 }}',
        "{{ slice (echo 1 2 3) 0 1 2 }}",
        '{{ slice "hello" 9 }}',
        "{{ slice .missing 1 }}",
        "{{ slice 3 1 }}",
        '{{ print 1 2 "a" "b" 3 nil .missing .spec.nullv }}',
        "{{ print }}",
        '{{ println 1 "a" }}',
        "{{ print .spec.replicas .spec.ratio 1 }}",
        "{{ print .metadata.labels .spec.containers }}",
        '{{ html "<a href=\'x\'>&\\"" }} {{ html .missing }} {{ html 1 2 }}',
        '{{ js "a\'b\\"c<d>&=\\n\\u2028é" }} {{ js .missing }}',
        '{{ urlquery "a b&c=d/é~._-" }} {{ urlquery .missing }}',
        "{{ call .missing }}",
        "{{ call nilf }}",
        "{{ call 1 }}",
        '{{ fail "boom" }}',
        "{{ fail .missing }}",
        "{{ undefinedFunc 1 }}",
        "{{ NodeIPsWith .missing }}",
        "{{ NodeIPsWith .spec.replicas }}",
        "{{ NodeIPsWith .spec.nodeName }}",
        "{{ index (NodeIPsWith .spec.nodeName) 0 }}",
        '{{ PodIPsWith .spec.nodeName (or .spec.hostNetwork false) (or .metadata.uid "") (or .metadata.name "") (or .metadata.namespace "") }}',
        '{{ PodIPsWith .spec.nodeName true "" "" "" }}',
        '{{ default "d" .missing }} {{ default "d" .metadata.name }} {{ default "d" .spec.replicas }} {{ default 5 "" }}',
        '{{ dict }} {{ dict "a" 1 "b" }} {{ len (dict "a" 1) }}',
        '{{ $a := or .metadata.annotations dict }}{{ index $a "note" }} {{ index $a "nope" }}',
        "{{ Quote .metadata.annotations.note }} {{ Quote .metadata.labels }} {{ Quote .spec.containers }} {{ Quote 1 }} {{ Quote 1.5 }} {{ Quote true }} {{ Quote nil }} {{ Quote .spec.ratio }} {{ Quote .spec.huge }}",
        '{{ Quote "tab\\tnl\\nq\\"\\u2028\\u0001é✓" }}',
        "{{ YAML .metadata.labels }}|{{ YAML .metadata.labels 1 }}|{{ YAML .spec.containers 2 }}|{{ YAML .missing 1 }}",
    ]:
        add((t, POD))
    return c


def _printf_cases() -> L:
    c: L = []
    fmts = [
        ('"%s|%v|%q|%x|%X|%d"', ['"héllo"'] * 6),
        ('"%d|%v|%x|%X|%o|%O|%b|%c|%q|%U|%#U|%e|%s"', ["65"] * 13),
        (
            '"%5d|%-5d|%05d|%+d|% d|%x|%#x|%#o|%.3d|%8.3d|%-08d|%+05d"',
            ["-42", "42", "42", "42", "42", "-255", "255", "8", "7", "7", "7", "7"],
        ),
        ('"%f|%.2f|%8.3f|%-8.1f|%e|%E|%.3e|%g|%G|%.3g|%v|%+.1f|%08.2f|% .2f"', ["3.14159"] * 14),
        (
            '"%v %v %v %v %v %v %v %v"',
            ["1e21", "1e20", "1e6", "123456.0", "0.0001", "0.00001", "-0.0", "100.0"],
        ),
        (
            '"%g %g %g %.0f %.0f %.0f %.1f %.2g"',
            ["1e21", "1e-5", "2.5", "0.5", "1.5", "2.5", "0.25", "123456.0"],
        ),
        ('"%#g|%#.3g|%#v|%#x|%x|%X|%b"', ["1.0", "2.0", "1.5", "1.0", "1.5", "-2.75", "1.0"]),
        ('"%t|%v|%5t|%d|%s"', ["true", "false", "true", "true", "false"]),
        (
            '"%s|%5s|%-5s|%.2s|%5.1s|%q|%+q|%#q|%x|% x|%#x|%X"',
            [
                '"ab"',
                '"ab"',
                '"ab"',
                '"héllo"',
                '"héllo"',
                '"é\\n"',
                '"é\\n"',
                '"back"',
                '"hi"',
                '"hi"',
                '"hi"',
                '"hi"',
            ],
        ),
        ('"%v|%s|%d|%q"', [".metadata.labels", ".metadata.labels", ".metadata.labels", ".metadata.labels"]),
        ('"%v|%s|%d|%x"', ["(echo 1 2)", "(echo 1 2)", "(echo 1 2)", "(echo 10 11)"]),
        ('"%v|%s|%q"', [".spec.containers", '(echo "a" nil)', "(strs)"]),
        ('"%v|%s|%d|%q|%x|%f|%t|%T"', [".spec.replicas"] * 8),
        ('"%v|%s|%d|%T|%t|%x"', [".missing"] * 6),
        ('"%v|%d|%T"', ["nilf", "nilf", "nilf"]),
        (
            '"%T %T %T %T %T %T %T %T"',
            ["1", "1.5", '"s"', "true", ".metadata.labels", ".spec.containers", ".spec.replicas", "(echo)"],
        ),
        ('"%#v %#v %#v %#v"', ["1", '"s"', ".spec.replicas", '(echo 1 "a")']),
        ('"%d %d"', ["1"]),
        ('"%d"', ["1", "2", '"x"']),
        ('"%!"', []),
        ('"%"', []),
        ('"%z %!"', ["1"]),
        ('"100%% %5%|%-5%|"', []),
        ('"%[2]d %[1]d %d"', ["1", "2"]),
        ('"%[3]d %[0]d %[x]d"', ["1", "2"]),
        ('"%*d|%-*d|%.*f|%*d"', ["5", "1", "5", "2", "2", "3.14159", '"x"', "1"]),
        ('"%.*d"', ["-1", "5"]),
        ('"%v %v"', ["1+2i", "(echo 1.5 -0.5)"]),
        ('"%6.2f|%-8v|%08.3f|%+v"', ["-1.5", '"x"', "-3.5", "3"]),
        ('"%c|%c|%q|%U"', ["0x1F600", "-1", "0x1F600", "0x1F600"]),
        ('"%s %s"', [".spec.ratio", ".spec.big"]),
        ('"%10.4v|%-10v|"', ['"abcdefgh"', "1.5"]),
        ('"%x|%X|% X|%#x"', ['""', '""', '"\\x00\\x7f"', '"ab"']),
    ]
    for f, args in fmts:
        c.append(("{{{{ printf {} {} }}}}".format(f, " ".join(args)), POD))
    c.append(("{{ printf .spec.replicas }}", POD))
    c.append(("{{ printf .missing }}", POD))
    c.append(("{{ printf 1 }}", POD))
    c.append(("{{ printf }}", POD))
    return c


def _parse_error_cases() -> L:
    c: L = []
    for t in [
        "{{",
        "{{ .a",
        "{{ .a }",
        "}}",
        "{{ end }}",
        "{{ else }}",
        "{{ if .a }}",
        "{{ if .a }}{{ else }}{{ else }}{{ end }}",
        "{{ range .a }}{{ else if .b }}{{ end }}",
        "{{ with }}{{ end }}",
        "{{ (1 }}",
        "{{ 1) }}",
        "{{ .a | }}",
        "{{ | .a }}",
        "{{ $x := }}",
        "{{ $x, $y := 1 }}",
        "{{ range $x, $y, $z := 1 }}{{ end }}",
        "{{ range $x, 1 }}{{ end }}",
        "{{ $x=1 }}",
        "{{ $x:=1 }}{{ $x }}",
        "{{ .a.b.c.d.e.f }}",
        "{{ ..a }}",
        "{{ .a. }}",
        "{{ 1.a }}",
        '{{ "s".x }}',
        "{{ nil.x }}",
        "{{ true.x }}",
        "{{ @ }}",
        "{{ # }}",
        "{{ \x01 }}",
        "{{ a% }}",
        '{{ "unterminated }}',
        "{{ `unterminated }}",
        "{{ 'x }}",
        "{{/* unclosed",
        "{{/* x */ }}",
        "{{ /* x */ }}",
        "{{ define }}{{ end }}",
        '{{ define "a" }}',
        '{{ define "a" }}{{ else }}{{ end }}',
        '{{ if true }}{{ define "a" }}{{ end }}{{ end }}',
        "{{ template }}",
        "{{ template x }}",
        '{{ template "x" 1 2 }}',
        "{{ block }}",
        "{{ break 1 }}",
        "{{ range . }}{{ break 1 }}{{ end }}",
        "{{ range . }}{{ else }}{{ break }}{{ end }}",
        "{{ continue }}",
        "{{ end 1 }}",
        "{{ else 1 }}",
        "{{ if 1 }}{{ else 1 }}{{ end }}",
        "{{ 1 2 | 3 }}",
        "{{ .a | true }}",
        '{{ .a | "s" }}',
        "{{ .a | . }}",
        "{{ .a | 1 }}",
        "{{ .a | $ }}",
        "{{ .a (.b }}",
        "{{ $ := 1 }}",
        "{{ $.x := 1 }}",
        "{{ $x := 1 | $y := 2 }}",
        "{{ with $x := 1 }}{{ end }}{{ $x }}",
        "{{ range 1 }}{{ $y := 1 }}{{ end }}{{ $y }}",
        "{{ -}}",
        "{{- }}",
        "{{- -}}",
        "{{- 3 -}}",
        "{{-3}}",
        "{{ 3 -}}",
        "{{ 3- }}",
        "{{ - 3 }}",
        "{{ - }}",
        "{{ +- }}",
        "{{ 1:2 }}",
        "{{ . 1 }}",
        "{{ :=  }}",
        "{{ = }}",
        "{{ x := 1 }}",
    ]:
        c.append((t, {"a": 1}))
    return c


# kwok stage templates ------------------------------------------------------------------------


class _NoTimestampLoader(yaml.SafeLoader):
    pass


_NoTimestampLoader.yaml_implicit_resolvers = {
    k: [r for r in v if r[0] != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _load_yaml(path: str) -> Any:
    with open(path) as f:
        return yaml.load(f, Loader=_NoTimestampLoader)


def _templates_in(doc: Any) -> list[str]:
    out: list[str] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            if isinstance(v, str) and k in ("statusTemplate", "template"):
                out.append(v)
            else:
                out.extend(_templates_in(v))
    elif isinstance(doc, list):
        for v in doc:
            out.extend(_templates_in(v))
    return out


EXTRA_OBJECTS: dict[str, list[Any]] = {
    "Pod": [
        POD,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "p",
                "namespace": "ns",
                "uid": "u",
                "deletionTimestamp": "2024-01-01T00:00:00Z",
                "annotations": {
                    "pod-container-running-failed.stage.kwok.x-k8s.io/reason": "Oops",
                    "pod-init-container-running-failed.stage.kwok.x-k8s.io/message": "boom",
                },
            },
            "spec": {
                "hostNetwork": True,
                "nodeName": "n1",
                "containers": [{"name": "c", "image": "i"}],
                "initContainers": [
                    {"name": "i1", "image": "x", "restartPolicy": "Always"},
                    {"name": "i2", "image": "y"},
                ],
                "readinessGates": [{"conditionType": "a"}, {"conditionType": "b"}],
            },
            "status": {
                "phase": "Running",
                "containerStatuses": [{"name": "c", "image": "i", "state": {"running": {"startedAt": "t0"}}}],
                "initContainerStatuses": [{"name": "i1", "image": "x", "restartCount": 2}],
            },
        },
    ],
    "Node": [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "n", "creationTimestamp": "2024-01-01T00:00:00Z", "annotations": {}},
            "status": {
                "addresses": [{"type": "InternalIP", "address": "10.1.2.3"}],
                "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110", "weird": 3},
                "nodeInfo": {"architecture": "arm64", "kubeletVersion": "v1.30.0"},
                "conditions": [{"type": "Ready", "status": "False"}],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": "n2",
                "annotations": {"node-not-ready.stage.kwok.x-k8s.io/reason": "Down"},
            },
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": "10.1.2.3"},
                    {"type": "Hostname", "address": "n2"},
                ]
            },
        },
    ],
    "PersistentVolumeClaim": [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "c", "namespace": "d", "uid": "u1", "resourceVersion": "7"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
                "storageClassName": "kwok-volume",
                "volumeMode": "Block",
            },
        }
    ],
}


def _kwok_cases() -> list[tuple[str, str, Any]]:
    """(id, template, object) for kwok's stage templates against testdata and extra objects."""
    root = KWOK_DIR / "kustomize" / "stage"
    if not root.is_dir():
        return []
    cases: list[tuple[str, str, Any]] = []
    for stage_file in sorted(glob.glob(str(root / "**" / "*.yaml"), recursive=True)):
        if "testdata" in stage_file or os.path.basename(stage_file) == "kustomization.yaml":
            continue
        for doc in yaml.load_all(open(stage_file), Loader=_NoTimestampLoader):
            if not isinstance(doc, dict) or doc.get("kind") != "Stage":
                continue
            kind = doc["spec"]["resourceRef"]["kind"]
            objs: list[tuple[str, Any]] = []
            for inp in sorted(
                glob.glob(os.path.join(os.path.dirname(stage_file), "testdata", "*.input.yaml"))
            ):
                obj = _load_yaml(inp)
                if isinstance(obj, dict) and obj.get("kind") == kind:
                    objs.append((os.path.basename(inp), obj))
            objs += [(f"extra{i}", o) for i, o in enumerate(EXTRA_OBJECTS.get(kind, []))]
            for ti, tmpl in enumerate(_templates_in(doc["spec"])):
                for oname, obj in objs:
                    cid = f"{os.path.relpath(stage_file, root)}#{ti}@{oname}"
                    # kwok's renderer trims the template text before parsing.
                    cases.append((cid, tmpl.strip(), obj))
    return cases


def _generated_cases(seed: int, n: int) -> L:
    """Random but well-formed templates from a small grammar (a fixed seed: reproducible)."""
    rnd = random.Random(seed)
    fields = [
        ".",
        ".a",
        ".a.b",
        ".x",
        ".spec",
        ".spec.replicas",
        ".spec.ratio",
        ".spec.big",
        ".spec.containers",
        ".metadata.labels",
        ".metadata.name",
        ".spec.nullv",
        ".spec.flags",
        ".spec.empty",
        ".missing",
        ".spec.huge",
        ".spec.neg",
        ".spec.float1",
        "$",
        "$.kind",
        "$v",
        "$v.name",
    ]
    lits = [
        '"s"',
        '""',
        '"0"',
        "0",
        "1",
        "-2",
        "1.5",
        "0.0",
        "1e21",
        "true",
        "false",
        "nil",
        "'a'",
        "0x10",
        "`raw`",
    ]
    funcs0 = ["nilf", "one", "half", "mkmap", "dict", "NodeConditions", "Now", "NodePort"]
    funcsn = [
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
        "and",
        "or",
        "not",
        "len",
        "index",
        "slice",
        "print",
        "println",
        "printf",
        "html",
        "js",
        "urlquery",
        "Quote",
        "default",
        "echo",
        "dict",
    ]
    fmts = [
        '"%v"',
        '"%d"',
        '"%s"',
        '"%q"',
        '"%x"',
        '"%5.2f"',
        '"%T"',
        '"%t"',
        '"%-4v|"',
        '"%+d"',
        '"%e"',
        '"%g"',
        '"%#v"',
        '"%c"',
        '"%o"',
        '"%U"',
        '"%08.3f"',
        '"%6s"',
    ]

    def arg(depth: int) -> str:
        r = rnd.random()
        if r < 0.35:
            return rnd.choice(fields)
        if r < 0.6:
            return rnd.choice(lits)
        if r < 0.7:
            return rnd.choice(funcs0)
        if depth < 2:
            return "(" + pipeline(depth + 1) + ")"
        return rnd.choice(fields)

    def cmd(depth: int, first: bool = True) -> str:
        if rnd.random() < 0.45 or not first:
            f = rnd.choice(funcsn)
            args = [arg(depth) for _ in range(rnd.randint(0, 3))]
            if f == "printf":
                args = [rnd.choice(fmts), *args]
            if first and rnd.random() < 0.2:
                return "({}).{}".format(" ".join([f, *args]), rnd.choice(["name", "a", "x"]))
            return " ".join([f, *args])
        return arg(depth)

    def pipeline(depth: int = 0) -> str:
        cs = [cmd(depth)] + [cmd(depth, False) for _ in range(rnd.choice([0, 0, 0, 1, 1, 2]))]
        p = " | ".join(cs)
        return "$v := " + p if rnd.random() < 0.1 else p

    def act(inner: str) -> str:
        return "{{ " + inner + " }}"

    def stmt(depth: int = 0, in_range: bool = False) -> str:
        r = rnd.random()
        if in_range and r < 0.12:
            return act(rnd.choice(["break", "continue"]))
        if r < 0.4 or depth > 3:
            return act(pipeline())
        if r < 0.55:
            cond = act("if " + pipeline())
            return cond + stmt(depth + 1, in_range) + act("else") + stmt(depth + 1, in_range) + act("end")
        if r < 0.65:
            return (
                act("with " + pipeline()) + stmt(depth + 1, in_range) + stmt(depth + 1, in_range) + act("end")
            )
        if r < 0.88:
            decl = rnd.choice(["", "$i, $v :=", "$v :="])
            over = rnd.choice(
                [pipeline(), ".spec.containers", ".metadata.labels", "3", ".missing", "(echo 1 2 3)"]
            )
            body = stmt(depth + 1, True) + stmt(depth + 1, True)
            els = stmt(depth + 1, in_range)
            return act(f"range {decl} {over}") + "<" + body + ">" + act("else") + "E" + els + act("end")
        return act("$v := " + pipeline()) + stmt(depth + 1, in_range)

    datas = [
        POD,
        {"a": {"b": [1, 2.5, None, "s"]}, "x": 0, "spec": {"replicas": 3}},
        {"x": [1, "a", None, {"k": True}]},
    ]
    return [("[" + stmt() + "]", rnd.choice(datas)) for _ in range(n)]


def _variable_cases(seed: int, n: int) -> L:
    """Generated templates that declare, assign and shadow variables across scopes (Go resolves
    variables on a run-time stack; the engine resolves them to slots when compiling)."""
    rnd = random.Random(seed)
    names = ["$v", "$w", "$u"]

    def val(depth: int) -> str:
        r = rnd.random()
        if r < 0.3:
            return rnd.choice(names)
        if r < 0.5:
            return rnd.choice(['"a"', "1", "0", '""', "true", "false", ".x", ".l"])
        if depth < 3 and r < 0.8:
            return "(" + pipe(depth + 1) + ")"
        return rnd.choice(names)

    def pipe(depth: int = 0) -> str:
        f = rnd.choice(["print", "or", "and", "print", "not"])
        p = f + " " + " ".join(val(depth) for _ in range(1 if f == "not" else rnd.randint(1, 3)))
        if rnd.random() < 0.2:
            p += " | print"
        r = rnd.random()
        if r < 0.25:
            p = rnd.choice(names) + " := " + p
        elif r < 0.45:
            p = rnd.choice(names) + " = " + p
        return p

    def act(inner: str) -> str:
        return "{{ " + inner + " }}"

    def stmt(depth: int = 0, in_range: bool = False) -> str:
        r = rnd.random()
        if in_range and r < 0.08:
            return act(rnd.choice(["break", "continue"]))
        if r < 0.45 or depth > 3:
            return act(pipe())
        if r < 0.6:
            then, other = stmt(depth + 1, in_range), stmt(depth + 1, in_range)
            return act("if " + pipe()) + then + act("else") + other + act("end")
        if r < 0.7:
            return act("with " + pipe()) + stmt(depth + 1, in_range) + "{{ . }}" + act("end")
        if r < 0.85:
            decl = rnd.choice(["", "$i, $v :=", "$v :=", "$w :=", "$i, $w ="])
            head = act(f"range {decl} {rnd.choice(['.l', '2', '$v', '.x'])}")
            body = stmt(depth + 1, True) + stmt(depth + 1, True)
            return head + "<" + body + ">" + act("else") + "E" + stmt(depth + 1, in_range) + act("end")
        return stmt(depth + 1, in_range) + stmt(depth + 1, in_range)

    prologue = "{{ $v := 1 }}{{ $w := 2 }}{{ $u := 3 }}{{ $i := 4 }}"
    epilogue = "|{{ $v }}{{ $w }}{{ $u }}{{ $i }}"
    return [(prologue + stmt() + stmt() + epilogue, {"x": 0, "l": ["p", "q"]}) for _ in range(n)]


def all_cases() -> list[tuple[str, str, Any]]:
    out: list[tuple[str, str, Any]] = []
    for group, cases in [
        ("lang", _language_cases()),
        ("builtin", _builtin_cases()),
        ("printf", _printf_cases()),
        ("parse", _parse_error_cases()),
        ("gen", _generated_cases(20240506, 600)),
        ("var", _variable_cases(20240507, 400)),
    ]:
        for i, (t, d) in enumerate(cases):
            out.append((f"{group}{i:03d}", t, d))
    out.extend(("kwok:" + cid, t, d) for cid, t, d in _kwok_cases())
    return out


CASES = all_cases()

# --------------------------------------------------------------------------------------------
# Running both engines
# --------------------------------------------------------------------------------------------


def render_py(template: str, data: Any, codegen: bool = True) -> dict[str, str]:
    saved = gt._CODEGEN
    gt._CODEGEN = codegen
    try:
        t = gt.parse(template, "t", funcs=FUNCS.keys())
    except gt.TemplateError as e:
        return {"out": "", "err": str(e), "phase": "parse"}
    finally:
        gt._CODEGEN = saved
    try:
        out = t.execute(json.loads(json.dumps(data)), FUNCS)
    except gt.TemplateError as e:
        return {"out": "", "err": str(e), "phase": "exec"}
    return {"out": out, "err": "", "phase": ""}


def build_go(dest: Path) -> Path:
    go = shutil.which("go")
    if go is None:
        pytest.skip("the differential test needs the Go toolchain ('go' is not on PATH)")
    binary = dest / "gotemplatediff"
    env = dict(os.environ, GOFLAGS="-mod=mod", GOTOOLCHAIN="local", CGO_ENABLED="0")
    proc = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=GO_SRC,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if proc.returncode != 0:
        pytest.fail("go build failed:\n" + proc.stdout + proc.stderr)
    return binary


def render_go(binary: Path, cases: list[tuple[str, str, Any]]) -> list[dict[str, str]]:
    payload = json.dumps({"cases": [{"template": t, "data": d} for _, t, d in cases]})
    proc = subprocess.run(
        [str(binary)], input=payload, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stderr
    results: list[dict[str, str]] = json.loads(proc.stdout)
    assert len(results) == len(cases)
    return results


@pytest.fixture(scope="module")
def go_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    binary = build_go(tmp_path_factory.mktemp("gotemplatediff"))
    return {cid: r for (cid, _, _), r in zip(CASES, render_go(binary, CASES), strict=True)}


def test_corpus_is_large_and_includes_kwok_templates() -> None:
    assert len(CASES) >= 300
    kwok = [c for c in CASES if c[0].startswith("kwok:")]
    if KWOK_DIR.is_dir():
        assert len(kwok) >= 30
        assert any("pod-ready" in c[0] for c in kwok)
        assert any("node-initialize" in c[0] for c in kwok)


@pytest.mark.parametrize(("cid", "template", "data"), CASES, ids=[c[0] for c in CASES])
def test_matches_go(go_results: dict[str, dict[str, str]], cid: str, template: str, data: Any) -> None:
    want = go_results[cid]
    assert want["phase"] != "panic", want["err"]
    # Both statement compilers: generated Python (the default) and the closure tree (its fallback).
    for codegen in (True, False):
        got = render_py(template, data, codegen)
        if want["err"] or got["err"]:
            # Both must fail, in the same phase; Go may have written partial output first.
            assert got["phase"] == want["phase"], f"\ntemplate: {template!r}\n go: {want}\n py: {got}"
            continue
        assert got["out"] == want["out"], f"\ntemplate: {template!r} (codegen={codegen})"
