"""The block-YAML fast path against PyYAML with go-yaml's resolution (engine.yaml_to_json_full).

Wherever the fast path answers it must answer what the full loader does; where the full loader
fails, the fast path must give up so that the error is the full loader's.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from shardlet.stages import blockyaml, engine
from shardlet.stages.engine import yaml_to_json, yaml_to_json_full


def fast(text: str) -> tuple[bool, Any]:
    return blockyaml.parse(text, engine._resolve_plain)


def full(text: str) -> tuple[bool, Any]:
    try:
        return True, yaml_to_json_full(text)
    except (yaml.YAMLError, ValueError):
        return False, None


def agree(text: str) -> bool:
    """Assert the two readers agree on ``text``; True when the fast path answered."""
    ok, value = fast(text)
    if ok:
        full_ok, expected = full(text)
        assert full_ok, f"fast path accepted what PyYAML rejects: {text!r}"
        assert value == expected and _types(value) == _types(expected), text
    return ok


def _types(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _types(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_types(x) for x in v]
    return type(v).__name__


ACCEPTED = [
    ("a: 1\nb: x\n", {"a": 1, "b": "x"}),
    ("conditions:\n- type: Ready\n  status: \"True\"\n- type: Initialized\n", {
        "conditions": [{"type": "Ready", "status": "True"}, {"type": "Initialized"}]}),
    ("\n\n  \nphase: Running\nhostIP: \"10.0.0.1\"\npodIPs:\n  - ip: '10.0.0.1'\n", {
        "phase": "Running", "hostIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}]}),
    ("a: y\nb: 2006-01-02T15:04:05Z\nc: 1e3\nd: 0o17\ne: ''\nf: null\ng: 1_000\nh: '1'\ni: ~\nj: -3\nk: .5",
     {"a": True, "b": "2006-01-02T15:04:05Z", "c": 1000.0, "d": 15, "e": "", "f": None, "g": 1000,
      "h": "1", "i": None, "j": -3, "k": 0.5}),
    ("a:\nb: []\nc: {}\nd:\n  -\n  - x\n", {"a": None, "b": [], "c": {}, "d": [None, "x"]}),
    ("spec:\n  containers:\n  - name: c\n    image: i\n  nodeName: nd\nstatus:\n- x\nlast: 1", {
        "spec": {"containers": [{"name": "c", "image": "i"}], "nodeName": "nd"}, "status": ["x"], "last": 1}),
    ('msg: "it\'s \\"quoted\\"\\n\\u00e9"\nq: \'it\'\'s\'\n', {"msg": 'it\'s "quoted"\n\u00e9', "q": "it's"}),
    ("- a: 1\n  b:\n    c: [x]\n" if False else "- a: 1\n  b:\n    c: d\n-   e: f\n    g: h\n",
     [{"a": 1, "b": {"c": "d"}}, {"e": "f", "g": "h"}]),
    ("kwok.x-k8s.io/node: fake\nnode.alpha_1/x-y: a:b, c [d]\n", {
        "kwok.x-k8s.io/node": "fake", "node.alpha_1/x-y": "a:b, c [d]"}),
    ("allocatable:\n  cpu: \"32\"\n  memory: 256Gi\n  pods: \"110\"\n", {
        "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"}}),
]

REFUSED = [
    "a: 1 # comment",
    "a: &x 1\nb: *x",
    "a: !!str 1",
    "a: |\n  text\n",
    "a: >-\n  text\n",
    "a: [1, 2]",
    "a: {b: 1}",
    "a: multi\n  line plain",
    "yes: 1",
    "null: 1",
    "1: a",
    "'q': 1",
    "a: 1\na: 2",
    "a:\tb",
    "a: 1\n---\nb: 2",
    "%YAML 1.1\n---\na: 1",
    'a: "\\x41"',
    'a: "\\ud83d\\ude00"',
    'a: "open',
    'a: "x" y',
    "a: 'x' y",
    "a: b: c",
    "a: b:",
    "a: .inf",
    "a:\n  b: 1\n c: 2",
    "a: 1\n  b: 2",
    "- - a",
    "plain scalar",
    "",
    "a: \x7f",
    "a: x\u2028y",
    'a: "x\x85y"',
    'a: "x\u2029y"',
    "a: 1\n- b",
    "? a\n: b",
]


@pytest.mark.parametrize(("text", "expected"), ACCEPTED)
def test_accepted_and_equal_to_pyyaml(text: str, expected: Any) -> None:
    ok, value = fast(text)
    assert ok, text
    assert value == expected
    assert full(text) == (True, expected)
    assert yaml_to_json(text) == expected


@pytest.mark.parametrize("text", REFUSED)
def test_refused_goes_to_pyyaml(text: str) -> None:
    assert fast(text) == (False, None)
    full_ok, expected = full(text)
    if full_ok:
        assert yaml_to_json(text) == expected
    else:
        with pytest.raises((yaml.YAMLError, ValueError)):
            yaml_to_json(text)


# --------------------------------------------------------------------------- random documents

TRICKY = ["y", "n", "yes", "No", "on", "OFF", "true", "null", "~", "1e3", "0x1F", "0o17", "017", "1_000",
          ".5", "-", "-1", "+2", "-.inf", ".nan", "1.", "a: b", "a:b", "#x", "x #y", " lead", "trail ",
          "", "'", '"', "it's", "[x]", "{x}", "&a", "*a", "!t", "|", ">", "%", "@", "`", "?", ":", ",x",
          "2006-01-02T15:04:05Z", "10.0.0.1", "256Gi", "é", "\\", "a\\nb", "line\nbreak", "tab\tin", "nel\x85", "ls\u2028",
          "99999999999999999999", "-9223372036854775809", "0b101", "1e400", "<<", "=", "x:"]


def _scalar(rng: random.Random) -> Any:
    r = rng.random()
    if r < 0.5:
        return rng.choice(TRICKY)
    if r < 0.6:
        return rng.randint(-10**6, 10**6)
    if r < 0.65:
        return rng.choice([True, False, None])
    if r < 0.7:
        return round(rng.uniform(-100, 100), 3)
    return "".join(rng.choice("abcxyz-._/ :'\"0129") for _ in range(rng.randint(1, 8)))


def _key(rng: random.Random) -> str:
    if rng.random() < 0.8:
        return rng.choice(["name", "type", "status", "ip", "podIP", "kwok.x-k8s.io/node", "a_b", "x-y", "k1"])
    return str(_scalar(rng))


def _value(rng: random.Random, depth: int) -> Any:
    r = rng.random()
    if depth > 3 or r < 0.4:
        return _scalar(rng)
    if r < 0.7:
        return {_key(rng): _value(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]


def _emit(rng: random.Random, v: Any, indent: int, compact: bool) -> list[str]:
    """Block YAML the way a template writes it: plain, single- or double-quoted scalars."""
    pad = " " * indent
    if isinstance(v, dict):
        lines = []
        for k, x in v.items():
            if isinstance(x, dict | list) and x:
                lines.append(f"{pad}{k}:")
                lines.extend(_emit(rng, x, indent if compact and isinstance(x, list) else indent + 2, compact))
            else:
                lines.append(f"{pad}{k}: {_text(rng, x)}")
        return lines
    if isinstance(v, list):
        lines = []
        for x in v:
            sub = _emit(rng, x, indent + 2, compact) if isinstance(x, dict | list) and x else []
            if sub:
                lines.append(f"{pad}- {sub[0].lstrip()}")
                lines.extend(sub[1:])
            else:
                lines.append(f"{pad}- {_text(rng, x)}")
        return lines
    return [pad + _text(rng, v)]


def _text(rng: random.Random, v: Any) -> str:
    if v == {}:
        return "{}"
    if v == []:
        return "[]"
    if v is None:
        return rng.choice(["", "null", "~"])
    if isinstance(v, bool):
        return "true" if v else "false"
    s = str(v)
    style = rng.random()
    if style < 0.4:
        return s
    if style < 0.7:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'
    return "'" + s.replace("'", "''") + "'"


def test_random_documents_agree_with_pyyaml() -> None:
    rng = random.Random(20261127)
    answered = 0
    n = 4000
    for _ in range(n):
        doc = _value(rng, 0)
        if not isinstance(doc, dict | list) or not doc:
            doc = {"root": doc}
        text = "\n".join(_emit(rng, doc, rng.choice([0, 0, 2]), rng.random() < 0.5))
        if rng.random() < 0.3:  # pyyaml's own emitter too
            text = yaml.safe_dump(doc, default_flow_style=False, allow_unicode=rng.random() < 0.5)
        answered += agree(text)
    assert answered > n // 2, answered  # the fast path must actually serve most plain documents


def test_every_kwok_template_output_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run kwok's own stage testdata with a recorder on the fast path: all agree, most are fast."""
    from .test_kwok_stages import STAGE_DIR, kwok_inputs, run_kwok_case

    if STAGE_DIR is None:
        pytest.skip("kwok source not in the Go module cache")
    seen: list[str] = []
    real = blockyaml.parse

    def recording(text: str, resolve: Any) -> tuple[bool, Any]:
        seen.append(text)
        return real(text, resolve)

    monkeypatch.setattr(blockyaml, "parse", recording)
    for f in kwok_inputs():
        got, expected = run_kwok_case(Path(f))
        assert got == expected
    monkeypatch.undo()
    assert len(seen) > 20
    answered = sum(agree(t) for t in seen)
    assert answered == len(seen), (answered, len(seen))  # kwok's templates are all plain block YAML
