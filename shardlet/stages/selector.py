"""Stage selectors, compiled once: matchLabels, matchAnnotations, matchExpressions.

Semantics follow kwok v0.8.0 (``pkg/utils/lifecycle`` and ``pkg/utils/expression``):

* ``matchLabels`` / ``matchAnnotations``: every key must be present with exactly
  that value (``labels.SelectorFromSet``); an empty map matches everything.
* ``matchExpressions[]`` with ``key``/``operator``/``values`` (or ``jq: {...}``):
  the jq query is run on the object; ``null`` results are dropped and a runtime
  error drops *all* results (kwok's ``Query.Execute``).  Then

  - ``In``: some result, stringified, is one of ``values``;
  - ``NotIn``: the negation of ``In``;
  - ``Exists``: there is at least one (non-null) result;
  - ``DoesNotExist``: the negation of ``Exists``.

  Stringification is kwok's ``hasValue``: strings as-is, booleans as
  ``"true"``/``"false"``, integers in decimal; floats, arrays and objects never
  match.
* ``matchExpressions[].cel.expression``: a CEL subset (see :func:`compile_cel`),
  evaluated after all jq requirements, with the object bound to ``self``.  A CEL
  evaluation error makes kwok fail the whole match for that object; here
  :meth:`Selector.matches` raises :class:`MatchError`.

Evaluation order is kwok's: labels, annotations, jq requirements, CEL conditions,
short-circuiting on the first miss.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Final

from shardlet.stages.jq import JQError, JQLimitError, Query, compile_jq

__all__ = [
    "CelDefaultMap",
    "CelError",
    "CelProgram",
    "CelValue",
    "MatchError",
    "Requirement",
    "Selector",
    "SelectorError",
    "compile_cel",
    "compile_selector",
]

OPERATORS: Final = ("In", "NotIn", "Exists", "DoesNotExist")


class SelectorError(ValueError):
    """A selector is invalid; the message starts with the field path."""


class MatchError(SelectorError):
    """A CEL condition failed while matching an object (kwok skips the object)."""


class CelError(SelectorError):
    """A CEL expression failed to parse or evaluate."""


# =========================================================================== jq requirements


def _has_value(results: list[Any], values: frozenset[str]) -> bool:
    for d in results:
        if isinstance(d, str):
            if d in values:
                return True
        elif d is True:
            if "true" in values:
                return True
        elif d is False:
            if "false" in values:
                return True
        elif isinstance(d, int) and str(d) in values:
            return True
    return False


class Requirement:
    """One jq ``matchExpressions`` entry."""

    __slots__ = ("_match", "key", "operator", "query", "values")

    def __init__(self, key: str, operator: str, values: Sequence[str], query: Query) -> None:
        self.key = key
        self.operator = operator
        self.values = tuple(values)
        self.query = query
        vs = frozenset(values)
        run = query.run

        def results(obj: Any) -> list[Any]:
            try:
                out = run(obj)
            except JQLimitError:
                raise   # the Stage is refused (StageEngine), not merely unmatched
            except JQError:
                return []
            if None in out:
                return [x for x in out if x is not None]
            return out

        m: Callable[[Any], bool]
        if operator == "In":
            def m(obj: Any) -> bool:
                return _has_value(results(obj), vs)
        elif operator == "NotIn":
            def m(obj: Any) -> bool:
                return not _has_value(results(obj), vs)
        elif operator == "Exists":
            def m(obj: Any) -> bool:
                return bool(results(obj))
        else:
            def m(obj: Any) -> bool:
                return not results(obj)
        self._match = m

    def matches(self, obj: Any) -> bool:
        return self._match(obj)

    def __repr__(self) -> str:
        return f"Requirement({self.key!r} {self.operator} {list(self.values)!r})"


def _compile_requirement(spec: Any, path: str) -> Requirement:
    if not isinstance(spec, Mapping):
        raise SelectorError(f"{path}: must be an object")
    for k in spec:
        if k not in ("key", "operator", "values"):
            raise SelectorError(f"{path}.{k}: unknown field")
    key = spec.get("key")
    if not isinstance(key, str) or not key:
        raise SelectorError(f"{path}.key: must be a non-empty jq expression string")
    try:
        query = compile_jq(key)
    except JQError as e:
        raise SelectorError(f"{path}.key: {e}") from None
    op = spec.get("operator")
    if op not in OPERATORS:
        raise SelectorError(f"{path}.operator: must be one of {', '.join(OPERATORS)}, got {op!r}")
    raw = spec.get("values")
    if raw is None:
        raw = []
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise SelectorError(f"{path}.values: must be a list of strings")
    if op in ("In", "NotIn") and not raw:
        raise SelectorError(f"{path}.values: must be non-empty for operator {op}")
    if op in ("Exists", "DoesNotExist") and raw:
        raise SelectorError(f"{path}.values: must be empty for operator {op}")
    return Requirement(key, op, raw, query)


# =========================================================================== selector


class Selector:
    """A compiled Stage selector; :meth:`matches` is cheap (no parsing, no copies)."""

    __slots__ = ("cel", "match_annotations", "match_labels", "requirements")

    def __init__(
        self,
        match_labels: Mapping[str, str] | None = None,
        match_annotations: Mapping[str, str] | None = None,
        requirements: Sequence[Requirement] = (),
        cel: Sequence[CelProgram] = (),
    ) -> None:
        self.match_labels: tuple[tuple[str, str], ...] = tuple((match_labels or {}).items())
        self.match_annotations: tuple[tuple[str, str], ...] = tuple((match_annotations or {}).items())
        self.requirements = tuple(requirements)
        self.cel = tuple(cel)

    def matches(self, obj: Mapping[str, Any]) -> bool:
        if self.match_labels or self.match_annotations:
            md = obj.get("metadata")
            if not isinstance(md, Mapping):
                md = {}
            if self.match_labels:
                labels = md.get("labels")
                if not isinstance(labels, Mapping):
                    return False
                for k, v in self.match_labels:
                    if labels.get(k) != v:
                        return False
            if self.match_annotations:
                annotations = md.get("annotations")
                if not isinstance(annotations, Mapping):
                    return False
                for k, v in self.match_annotations:
                    if annotations.get(k) != v:
                        return False
        for req in self.requirements:
            if not req.matches(obj):
                return False
        for prog in self.cel:
            try:
                ok = prog.eval(obj)
            except CelError as e:
                raise MatchError(f"cel {prog.source!r}: {e}") from None
            if ok is not True and ok is not False:
                raise MatchError(f"cel {prog.source!r}: result is {_cel_type(ok)}, not bool")
            if not ok:
                return False
        return True

    def __repr__(self) -> str:
        return (
            f"Selector(labels={dict(self.match_labels)!r}, annotations={dict(self.match_annotations)!r}, "
            f"requirements={list(self.requirements)!r}, cel={[p.source for p in self.cel]!r})"
        )


def _string_map(value: Any, path: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SelectorError(f"{path}: must be a map of strings")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise SelectorError(f"{path}[{k!r}]: values must be strings, got {type(v).__name__}")
        out[k] = v
    return out


def compile_selector(spec: Any, path: str = "spec.selector") -> Selector | None:
    """Compile a Stage ``selector``; ``None`` (kwok: matches nothing) stays ``None``.

    Errors raise :class:`SelectorError` whose message starts with the field path.
    """
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise SelectorError(f"{path}: must be an object")
    for k in spec:
        if k not in ("matchLabels", "matchAnnotations", "matchExpressions"):
            raise SelectorError(f"{path}.{k}: unknown field")
    labels = _string_map(spec.get("matchLabels"), f"{path}.matchLabels")
    annotations = _string_map(spec.get("matchAnnotations"), f"{path}.matchAnnotations")
    exprs = spec.get("matchExpressions")
    if exprs is None:
        exprs = []
    if not isinstance(exprs, list):
        raise SelectorError(f"{path}.matchExpressions: must be a list")
    reqs: list[Requirement] = []
    cels: list[CelProgram] = []
    for i, e in enumerate(exprs):
        p = f"{path}.matchExpressions[{i}]"
        if not isinstance(e, Mapping):
            raise SelectorError(f"{p}: must be an object")
        for k in e:
            if k not in ("jq", "cel", "key", "operator", "values"):
                raise SelectorError(f"{p}.{k}: unknown field")
        # kwok: `jq` wins over the deprecated key/operator/values, and both over `cel`
        if e.get("jq") is not None:
            reqs.append(_compile_requirement(e["jq"], f"{p}.jq"))
        elif e.get("key"):
            reqs.append(_compile_requirement({k: e[k] for k in ("key", "operator", "values") if k in e}, p))
        elif e.get("cel") is not None:
            cel = e["cel"]
            if not isinstance(cel, Mapping) or set(cel) - {"expression"}:
                raise SelectorError(f"{p}.cel: must be an object with only 'expression'")
            expr = cel.get("expression")
            if not isinstance(expr, str) or not expr.strip():
                raise SelectorError(f"{p}.cel.expression: must be a non-empty string")
            try:
                cels.append(compile_cel(expr))
            except CelError as ce:
                raise SelectorError(f"{p}.cel.expression: {ce}") from None
        else:
            raise SelectorError(f"{p}: needs one of 'jq', 'cel' or 'key'")
    return Selector(labels, annotations, reqs, cels)


# =========================================================================== CEL subset
#
# Enough of CEL for kwok's stages and simple user conditions over the object as a
# map (``self``): literals, lists, maps, field selection, indexing, ``has()``,
# ``! - * / % + - < <= > >= == != in && || ?:``, size/startsWith/endsWith/
# contains/matches, int/double/string/duration conversions, and the
# all/exists/exists_one/map/filter macros.  Missing map keys are errors (as for
# kwok's unstructured objects); ``&&``/``||`` absorb errors the CEL way.


class CelDefaultMap(dict[str, Any]):
    """A map whose missing keys have a value (kwok's ResourceList: a zero Quantity)."""

    def cel_default(self, key: Any) -> Any:
        raise CelError(f"no such key: {key}")


class CelValue:
    """A value type an extension brings (kwok's Quantity): it does its own arithmetic
    (``op`` is ``+ - * / %`` or ``neg``) and ordering, raising CelError. Like kwok's, it has
    no double()/string() conversion; ``cel_double`` is for reading a result as a number."""

    __slots__ = ()

    def cel_arith(self, op: str, other: Any) -> Any:
        raise CelError(f"no such overload: {type(self).__name__} {op} {_cel_type(other)}")

    def cel_key(self) -> Any:
        raise CelError(f"no such overload: {type(self).__name__} comparison")

    def cel_double(self) -> float:
        raise CelError(f"no such overload: double({type(self).__name__})")


class Duration:
    """A CEL duration, in nanoseconds."""

    __slots__ = ("ns",)

    def __init__(self, ns: int) -> None:
        self.ns = ns

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Duration) and other.ns == self.ns

    def __hash__(self) -> int:
        return hash(("duration", self.ns))

    def __repr__(self) -> str:
        return f"Duration({self.ns}ns)"


_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


class _CelEval(CelError):
    pass


def _cel_type(v: Any) -> str:
    if v is None:
        return "null_type"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "double"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list | tuple):
        return "list"
    if isinstance(v, Mapping):
        return "map"
    if isinstance(v, Duration):
        return "google.protobuf.Duration"
    return type(v).__name__


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _cel_eq(a: Any, b: Any) -> bool:
    if _is_num(a) and _is_num(b):
        return bool(a == b)
    ta, tb = _cel_type(a), _cel_type(b)
    if ta != tb:
        return False
    if ta == "list":
        return len(a) == len(b) and all(_cel_eq(x, y) for x, y in zip(a, b, strict=True))
    if ta == "map":
        return len(a) == len(b) and all(k in b and _cel_eq(a[k], b[k]) for k in a)
    return bool(a == b)


def _cel_cmp(op: str, a: Any, b: Any) -> bool:
    if op == "==":
        return _cel_eq(a, b)
    if op == "!=":
        return not _cel_eq(a, b)
    if op == "in":
        if isinstance(b, list | tuple):
            return any(_cel_eq(a, x) for x in b)
        if isinstance(b, Mapping):
            return a in b if isinstance(a, str | int | bool) else False
        raise _CelEval(f"no such overload: {_cel_type(a)} in {_cel_type(b)}")
    if (_is_num(a) and _is_num(b)) or (isinstance(a, str) and isinstance(b, str)) or (
        isinstance(a, bool) and isinstance(b, bool)
    ):
        x, y = a, b
    elif isinstance(a, Duration) and isinstance(b, Duration):
        x, y = a.ns, b.ns
    elif isinstance(a, CelValue) and type(a) is type(b):
        x, y = a.cel_key(), b.cel_key()
    else:
        raise _CelEval(f"no such overload: {_cel_type(a)} {op} {_cel_type(b)}")
    if op == "<":
        return bool(x < y)
    if op == "<=":
        return bool(x <= y)
    if op == ">":
        return bool(x > y)
    return bool(x >= y)


def _check_int(v: int) -> int:
    if v < _INT64_MIN or v > _INT64_MAX:
        raise _CelEval("integer overflow")
    return v


def _cel_arith(op: str, a: Any, b: Any) -> Any:
    if isinstance(a, bool) or isinstance(b, bool):
        raise _CelEval(f"no such overload: {_cel_type(a)} {op} {_cel_type(b)}")
    if isinstance(a, int) and isinstance(b, int):
        if op == "+":
            return _check_int(a + b)
        if op == "-":
            return _check_int(a - b)
        if op == "*":
            return _check_int(a * b)
        if b == 0:
            raise _CelEval("division by zero" if op == "/" else "modulus by zero")
        q = abs(a) // abs(b)
        if op == "/":
            return _check_int(q if (a >= 0) == (b >= 0) else -q)
        r = abs(a) % abs(b)
        return r if a >= 0 else -r
    if isinstance(a, float) and isinstance(b, float):
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            if b == 0:
                return math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a) * math.copysign(1, b)
            return a / b
    if op == "+":
        if isinstance(a, str) and isinstance(b, str):
            return a + b
        if isinstance(a, list) and isinstance(b, list):
            return a + b
        if isinstance(a, Duration) and isinstance(b, Duration):
            return Duration(_check_int(a.ns + b.ns))
    if op == "-" and isinstance(a, Duration) and isinstance(b, Duration):
        return Duration(_check_int(a.ns - b.ns))
    if isinstance(a, CelValue):
        return a.cel_arith(op, b)
    raise _CelEval(f"no such overload: {_cel_type(a)} {op} {_cel_type(b)}")


_GO_DURATION_UNITS: Final = {"ns": 1, "us": 1000, "µs": 1000, "μs": 1000, "ms": 10**6, "s": 10**9,
                             "m": 60 * 10**9, "h": 3600 * 10**9}
_GO_DURATION_PART: Final = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(s: str) -> int | None:
    """Go's ``time.ParseDuration`` in nanoseconds, or ``None`` when invalid."""
    neg = False
    if s[:1] in ("-", "+"):
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        return None
    total = 0
    pos = 0
    while pos < len(s):
        m = _GO_DURATION_PART.match(s, pos)
        if not m or m.group(1) in ("", "."):
            return None
        num = m.group(1)
        unit = _GO_DURATION_UNITS[m.group(2)]
        whole, _, frac = num.partition(".")
        v = int(whole or "0") * unit
        if frac:
            v += int(frac) * unit // (10 ** len(frac))
        total += v
        if total > 2**63 - (0 if neg else 1):
            return None
        pos = m.end()
    return -total if neg else total


def _cel_size(v: Any) -> int:
    if isinstance(v, str | list | tuple | Mapping):
        return len(v)
    raise _CelEval(f"no such overload: size({_cel_type(v)})")


def _cel_int(v: Any) -> int:
    if isinstance(v, bool):
        raise _CelEval("no such overload: int(bool)")
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        if not math.isfinite(v) or not _INT64_MIN <= v < 2.0**63:
            raise _CelEval("double out of int range")
        return int(v)
    if isinstance(v, str):
        try:
            return _check_int(int(v, 10))
        except ValueError:
            raise _CelEval(f"cannot convert {v!r} to int") from None
    if isinstance(v, Duration):
        return v.ns
    raise _CelEval(f"no such overload: int({_cel_type(v)})")


def _cel_double(v: Any) -> float:
    if _is_num(v):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            raise _CelEval(f"cannot convert {v!r} to double") from None
    raise _CelEval(f"no such overload: double({_cel_type(v)})")


def _cel_string(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if not v.is_integer() else f"{v:.0f}" if abs(v) < 1e21 else repr(v)
    if isinstance(v, Duration):
        return f"{v.ns / 1e9:g}s"
    raise _CelEval(f"no such overload: string({_cel_type(v)})")


def _cel_duration(v: Any) -> Duration:
    if isinstance(v, Duration):
        return v
    if isinstance(v, str):
        ns = parse_go_duration(v)
        if ns is None:
            raise _CelEval(f"invalid duration {v!r}")
        return Duration(ns)
    raise _CelEval(f"no such overload: duration({_cel_type(v)})")


def _str_method(name: str) -> Callable[[Any, Any], Any]:
    def call(recv: Any, arg: Any) -> Any:
        if not isinstance(recv, str) or not isinstance(arg, str):
            raise _CelEval(f"no such overload: {_cel_type(recv)}.{name}({_cel_type(arg)})")
        if name == "startsWith":
            return recv.startswith(arg)
        if name == "endsWith":
            return recv.endswith(arg)
        if name == "contains":
            return arg in recv
        try:
            return re.search(arg, recv) is not None
        except re.error as e:
            raise _CelEval(f"invalid regex {arg!r}: {e}") from None

    return call


_GLOBALS1: Final[dict[str, Callable[[Any], Any]]] = {
    "size": _cel_size,
    "int": _cel_int,
    "double": _cel_double,
    "string": _cel_string,
    "duration": _cel_duration,
    "dyn": lambda v: v,
    "bool": lambda v: v if isinstance(v, bool) else (
        {"true": True, "false": False}[v] if v in ("true", "false") else _cel_raise(f"cannot convert {v!r} to bool")),
}
_METHODS1: Final[dict[str, Callable[[Any, Any], Any]]] = {
    name: _str_method(name) for name in ("startsWith", "endsWith", "contains", "matches")
}


def _cel_raise(msg: str) -> Any:
    raise _CelEval(msg)


_CelFn = Callable[[dict[str, Any]], Any]

_CEL_TOKEN: Final = re.compile(
    r"""
    (?P<ws>\s+|//[^\n]*)
  | (?P<num>0[xX][0-9a-fA-F]+[uU]?|(?:[0-9]+\.[0-9]+(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+|\.[0-9]+(?:[eE][-+]?[0-9]+)?)|[0-9]+[uU]?)
  | (?P<str>[rR]?(?:\"\"\"(?:[^\\]|\\.)*?\"\"\"|'''(?:[^\\]|\\.)*?'''|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|&&|\|\||[-+*/%!<>?:.,\[\](){}])
    """,
    re.VERBOSE | re.DOTALL,
)
_CEL_RESERVED: Final = frozenset(
    {"as", "break", "const", "continue", "else", "for", "function", "if", "import", "let", "loop",
     "package", "namespace", "return", "var", "void", "while"}
)


def _cel_unescape(body: str, raw: bool) -> str:
    if raw:
        return body
    out: list[str] = []
    i = 0
    simple = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", "'": "'", '"': '"', "`": "`", "?": "?",
              "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        e = body[i + 1] if i + 1 < len(body) else ""
        if e in simple:
            out.append(simple[e])
            i += 2
        elif e in ("u", "U", "x"):
            n = {"u": 4, "U": 8, "x": 2}[e]
            h = body[i + 2 : i + 2 + n]
            if len(h) != n or not all(ch in "0123456789abcdefABCDEF" for ch in h):
                raise CelError(f"invalid escape \\{e}{h}")
            cp = int(h, 16)
            if cp > 0x10FFFF or 0xD800 <= cp < 0xE000:
                raise CelError(f"invalid code point \\{e}{h}")
            out.append(chr(cp))
            i += 2 + n
        elif e in "0123":
            o = body[i + 1 : i + 4]
            if len(o) != 3 or not all(ch in "01234567" for ch in o):
                raise CelError(f"invalid octal escape \\{o}")
            out.append(chr(int(o, 8)))
            i += 4
        else:
            raise CelError(f"invalid escape \\{e}")
    return "".join(out)


class _CelParser:
    def __init__(self, src: str, ext: frozenset[str] = frozenset()) -> None:
        self.src = src
        self.ext = ext
        self.toks: list[tuple[str, Any, int]] = []
        pos = 0
        while pos < len(src):
            m = _CEL_TOKEN.match(src, pos)
            if not m:
                raise CelError(f"unexpected character {src[pos]!r} at {pos}")
            kind = m.lastgroup or ""
            text = m.group(0)
            if kind == "num":
                self.toks.append(("lit", self._number(text, pos), pos))
            elif kind == "str":
                raw = text[0] in "rR"
                t = text[1:] if raw else text
                q = 3 if t[:3] in ('"""', "'''") else 1
                self.toks.append(("lit", _cel_unescape(t[q:-q], raw), pos))
            elif kind == "ident":
                if text in ("true", "false", "null"):
                    self.toks.append(("lit", {"true": True, "false": False, "null": None}[text], pos))
                elif text == "in":
                    self.toks.append(("op", "in", pos))
                # reserved words are fine as field names: pod.metadata.namespace
                elif text in _CEL_RESERVED and not (
                        self.toks and self.toks[-1][:2] == ("op", ".")):
                    raise CelError(f"reserved identifier {text!r} at {pos}")
                else:
                    self.toks.append(("ident", text, pos))
            elif kind == "op":
                self.toks.append(("op", text, pos))
            pos = m.end()
        self.toks.append(("eof", None, len(src)))
        self.i = 0
        self.depth = 0

    @staticmethod
    def _number(text: str, pos: int) -> int | float:
        t = text.rstrip("uU")
        try:
            if t[:2] in ("0x", "0X"):
                v = int(t, 16)
            elif any(c in t for c in ".eE"):
                return float(t)
            else:
                v = int(t)
        except ValueError:
            raise CelError(f"invalid number {text!r} at {pos}") from None
        if v > (2**64 - 1 if t != text else _INT64_MAX):
            raise CelError(f"integer literal out of range at {pos}")
        return v

    def peek(self) -> tuple[str, Any, int]:
        return self.toks[self.i]

    def next(self) -> tuple[str, Any, int]:
        t = self.toks[self.i]
        if t[0] != "eof":
            self.i += 1
        return t

    def is_op(self, *ops: str) -> bool:
        t = self.toks[self.i]
        return t[0] == "op" and t[1] in ops

    def expect(self, op: str) -> None:
        t = self.next()
        if t[0] != "op" or t[1] != op:
            raise self.unexpected(t)

    def unexpected(self, t: tuple[str, Any, int]) -> CelError:
        if t[0] == "eof":
            return CelError(f"unexpected end of input at {t[2]}")
        return CelError(f"unexpected token {t[1]!r} at {t[2]}")

    def parse(self) -> tuple[Any, ...]:
        node = self.expr()
        if self.peek()[0] != "eof":
            raise self.unexpected(self.peek())
        return node

    def expr(self) -> tuple[Any, ...]:
        self.depth += 1
        if self.depth > 150:
            raise CelError("expression nested too deeply")
        try:
            cond = self.or_()
            if self.is_op("?"):
                self.next()
                a = self.or_()
                self.expect(":")
                b = self.expr()
                return ("cond", cond, a, b)
            return cond
        finally:
            self.depth -= 1

    def or_(self) -> tuple[Any, ...]:
        node = self.and_()
        while self.is_op("||"):
            self.next()
            node = ("or", node, self.and_())
        return node

    def and_(self) -> tuple[Any, ...]:
        node = self.rel()
        while self.is_op("&&"):
            self.next()
            node = ("and", node, self.rel())
        return node

    def rel(self) -> tuple[Any, ...]:
        node = self.add()
        while self.is_op("<", "<=", ">", ">=", "==", "!=", "in"):
            op = self.next()[1]
            node = ("rel", op, node, self.add())
        return node

    def add(self) -> tuple[Any, ...]:
        node = self.mul()
        while self.is_op("+", "-"):
            op = self.next()[1]
            node = ("arith", op, node, self.mul())
        return node

    def mul(self) -> tuple[Any, ...]:
        node = self.unary()
        while self.is_op("*", "/", "%"):
            op = self.next()[1]
            node = ("arith", op, node, self.unary())
        return node

    def unary(self) -> tuple[Any, ...]:
        if self.is_op("!"):
            self.next()
            self.depth += 1
            if self.depth > 150:
                raise CelError("expression nested too deeply")
            try:
                return ("not", self.unary())
            finally:
                self.depth -= 1
        if self.is_op("-"):
            self.next()
            t = self.peek()
            if t[0] == "lit" and _is_num(t[1]):
                self.next()
                return self.member(("lit", -t[1]))
            self.depth += 1
            if self.depth > 150:
                raise CelError("expression nested too deeply")
            try:
                return ("neg", self.unary())
            finally:
                self.depth -= 1
        return self.member(self.primary())

    def args(self) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        if self.is_op(")"):
            self.next()
            return out
        while True:
            out.append(self.expr())
            if self.is_op(","):
                self.next()
                continue
            self.expect(")")
            return out

    def member(self, node: tuple[Any, ...]) -> tuple[Any, ...]:
        while True:
            if self.is_op("."):
                self.next()
                t = self.next()
                if t[0] != "ident":
                    raise self.unexpected(t)
                if self.is_op("("):
                    self.next()
                    node = self.method(node, t[1], self.args(), t[2])
                else:
                    node = ("select", node, t[1])
            elif self.is_op("["):
                self.next()
                idx = self.expr()
                self.expect("]")
                node = ("index", node, idx)
            else:
                return node

    def method(self, recv: tuple[Any, ...], name: str, args: list[tuple[Any, ...]], pos: int) -> tuple[Any, ...]:
        if name in ("all", "exists", "exists_one", "filter", "map"):
            if len(args) not in ((2, 3) if name == "map" else (2,)) or args[0][0] != "ident":
                raise CelError(f"invalid macro {name}() at {pos}")
            return ("macro", name, recv, args[0][1], *args[1:])
        if name == "size" and not args:
            return ("call1", "size", recv)
        if name in _METHODS1 and len(args) == 1:
            return ("method1", name, recv, args[0])
        if name in self.ext:   # kwok's FuncsToMethods: x.F(a) is F(x, a)
            return ("ext", name, (recv, *args))
        raise CelError(f"undeclared reference to '{name}' (in container '') at {pos}")

    def primary(self) -> tuple[Any, ...]:
        t = self.next()
        kind, val, pos = t
        if kind == "lit":
            return ("lit", val)
        if kind == "ident":
            if self.is_op("("):
                self.next()
                args = self.args()
                if val == "has":
                    if len(args) != 1 or args[0][0] != "select":
                        raise CelError(f"invalid argument to has() macro at {pos}")
                    return ("has", args[0][1], args[0][2])
                if val in _GLOBALS1 and len(args) == 1:
                    return ("call1", val, args[0])
                if val in self.ext:
                    return ("ext", val, tuple(args))
                raise CelError(f"undeclared reference to '{val}' (in container '') at {pos}")
            return ("ident", val, pos)
        if kind == "op":
            if val == "(":
                node = self.expr()
                self.expect(")")
                return node
            if val == "[":
                items: list[tuple[Any, ...]] = []
                while not self.is_op("]"):
                    items.append(self.expr())
                    if not self.is_op(","):
                        break
                    self.next()
                self.expect("]")
                return ("list", tuple(items))
            if val == "{":
                entries: list[tuple[tuple[Any, ...], tuple[Any, ...]]] = []
                while not self.is_op("}"):
                    k = self.expr()
                    self.expect(":")
                    entries.append((k, self.expr()))
                    if not self.is_op(","):
                        break
                    self.next()
                self.expect("}")
                return ("map", tuple(entries))
            if val == ".":
                t2 = self.next()
                if t2[0] != "ident":
                    raise self.unexpected(t2)
                return ("ident", t2[1], t2[2])
        raise self.unexpected(t)


class _CelCompiler:
    def __init__(self, functions: Mapping[str, Callable[..., Any]] | None = None) -> None:
        self.functions = functions or {}

    def _c_ext(self, node: tuple[Any, ...], scope: frozenset[str]) -> _CelFn:
        name, f = node[1], self.functions[node[1]]
        args = [self.compile(a, scope) for a in node[2]]

        def call(env: dict[str, Any]) -> Any:
            vals = [a(env) for a in args]
            try:
                return f(*vals)
            except TypeError:
                raise _CelEval(f"no matching overload for '{name}' applied to "
                               f"({', '.join(_cel_type(v) for v in vals)})") from None
            except (ValueError, ArithmeticError) as e:
                raise _CelEval(f"{name}: {e}") from None

        return call

    def compile(self, node: tuple[Any, ...], scope: frozenset[str]) -> _CelFn:
        fn: _CelFn = getattr(self, "_c_" + node[0])(node, scope)
        return fn

    def _c_lit(self, node: tuple[Any, ...], scope: frozenset[str]) -> _CelFn:
        v = node[1]
        return lambda env: v

    def _c_ident(self, node: tuple[Any, ...], scope: frozenset[str]) -> _CelFn:
        name = node[1]
        if name not in scope:
            raise CelError(f"undeclared reference to '{name}' (in container '') at {node[2]}")
        return lambda env: env[name]

    def _c_select(self, node: tuple[Any, ...], scope: frozenset[str]) -> _CelFn:
        base = self.compile(node[1], scope)
        field = node[2]

        def select(env: dict[str, Any]) -> Any:
            v = base(env)
            if isinstance(v, Mapping):
                if field in v:
                    return v[field]
                raise _CelEval(f"no such key: {field}")
            raise _CelEval(f"type '{_cel_type(v)}' does not support field selection")

        return select

    def _c_has(self, node: tuple[Any, ...], scope: frozenset[str]) -> _CelFn:
        base = self.compile(node[1], scope)
        field = node[2]

        def has(env: dict[str, Any]) -> Any:
            v = base(env)
            if isinstance(v, Mapping):
                return field in v
            raise _CelEval(f"invalid type for field selection: {_cel_type(v)}")

        return has

    def _c_index(self, node: tuple[Any, ...], scope: frozenset[str]) -> _CelFn:
        base = self.compile(node[1], scope)
        idx = self.compile(node[2], scope)

        def index(env: dict[str, Any]) -> Any:
            v, k = base(env), idx(env)
            if isinstance(v, list | tuple):
                if isinstance(k, float) and k.is_integer():
                    k = int(k)
                if not isinstance(k, int) or isinstance(k, bool):
                    raise _CelEval(f"invalid list index type {_cel_type(k)}")
                if not 0 <= k < len(v):
                    raise _CelEval(f"index out of range: {k}")
                return v[k]
            if isinstance(v, Mapping):
                if isinstance(k, str | int) and not isinstance(k, bool) and k in v:
                    return v[k]
                if isinstance(v, CelDefaultMap):
                    return v.cel_default(k)
                raise _CelEval(f"no such key: {k}")
            raise _CelEval(f"no such overload: index {_cel_type(v)}")

        return index

    def _c_list(self, node: tuple[Any, ...], scope: frozenset[str]) -> _CelFn:
        items = [self.compile(n, scope) for n in node[1]]
        return lambda env: [f(env) for f in items]

    def _c_map(self, node: tuple[Any, ...], scope: frozenset[str]) -> _CelFn:
        entries = [(self.compile(k, scope), self.compile(v, scope)) for k, v in node[1]]

        def build(env: dict[str, Any]) -> Any:
            out: dict[Any, Any] = {}
            for kf, vf in entries:
                k = kf(env)
                if not isinstance(k, str | int):
                    raise _CelEval(f"unsupported map key type {_cel_type(k)}")
                if k in out:
                    raise _CelEval(f"repeated key: {k}")
                out[k] = vf(env)
            return out

        return build

    def _c_not(self, node: tuple[Any, ...], scope: frozenset[str]) -> _CelFn:
        inner = self.compile(node[1], scope)

        def not_(env: dict[str, Any]) -> Any:
            v = inner(env)
            if not isinstance(v, bool):
                raise _CelEval(f"no such overload: !{_cel_type(v)}")
            return not v

        return not_

    def _c_neg(self, node: tuple[Any, ...], scope: frozenset[str]) -> _CelFn:
        inner = self.compile(node[1], scope)

        def neg(env: dict[str, Any]) -> Any:
            v = inner(env)
            if isinstance(v, int) and not isinstance(v, bool):
                return _check_int(-v)
            if isinstance(v, float):
                return -v
            if isinstance(v, Duration):
                return Duration(-v.ns)
            if isinstance(v, CelValue):
                return v.cel_arith("neg", None)
            raise _CelEval(f"no such overload: -{_cel_type(v)}")

        return neg

    def _logic(self, node: tuple[Any, ...], scope: frozenset[str], absorbing: bool) -> _CelFn:
        lhs = self.compile(node[1], scope)
        rhs = self.compile(node[2], scope)

        def logic(env: dict[str, Any]) -> Any:
            err: CelError | None = None
            try:
                a = lhs(env)
                if a is absorbing:
                    return absorbing
                if not isinstance(a, bool):
                    err = _CelEval(f"no such overload: {_cel_type(a)} {'||' if absorbing else '&&'} ...")
            except CelError as e:
                err = e
            b = rhs(env)  # an error here propagates unless the lhs absorbed it
            if b is absorbing:
                return absorbing
            if not isinstance(b, bool):
                raise _CelEval(f"no such overload: ... {'||' if absorbing else '&&'} {_cel_type(b)}")
            if err is not None:
                raise err
            return not absorbing

        return logic

    def _c_or(self, node: tuple[Any, ...], scope: frozenset[str]) -> _CelFn:
        return self._logic(node, scope, True)

    def _c_and(self, node: tuple[Any, ...], scope: frozenset[str]) -> _CelFn:
        return self._logic(node, scope, False)

    def _c_cond(self, node: tuple[Any, ...], scope: frozenset[str]) -> _CelFn:
        c, a, b = (self.compile(n, scope) for n in node[1:])

        def cond(env: dict[str, Any]) -> Any:
            v = c(env)
            if not isinstance(v, bool):
                raise _CelEval(f"no such overload: {_cel_type(v)} ? _ : _")
            return a(env) if v else b(env)

        return cond

    def _c_rel(self, node: tuple[Any, ...], scope: frozenset[str]) -> _CelFn:
        op = node[1]
        lhs = self.compile(node[2], scope)
        rhs = self.compile(node[3], scope)
        return lambda env: _cel_cmp(op, lhs(env), rhs(env))

    def _c_arith(self, node: tuple[Any, ...], scope: frozenset[str]) -> _CelFn:
        op = node[1]
        lhs = self.compile(node[2], scope)
        rhs = self.compile(node[3], scope)
        return lambda env: _cel_arith(op, lhs(env), rhs(env))

    def _c_call1(self, node: tuple[Any, ...], scope: frozenset[str]) -> _CelFn:
        f = _GLOBALS1[node[1]]
        arg = self.compile(node[2], scope)
        return lambda env: f(arg(env))

    def _c_method1(self, node: tuple[Any, ...], scope: frozenset[str]) -> _CelFn:
        f = _METHODS1[node[1]]
        recv = self.compile(node[2], scope)
        arg = self.compile(node[3], scope)
        return lambda env: f(recv(env), arg(env))

    def _c_macro(self, node: tuple[Any, ...], scope: frozenset[str]) -> _CelFn:
        name, recv_node, var = node[1], node[2], node[3]
        recv = self.compile(recv_node, scope)
        inner = scope | {var}
        fns = [self.compile(n, inner) for n in node[4:]]

        def items(env: dict[str, Any]) -> list[Any]:
            v = recv(env)
            if isinstance(v, list | tuple):
                return list(v)
            if isinstance(v, Mapping):
                return list(v.keys())
            raise _CelEval(f"cannot range over {_cel_type(v)}")

        def pred(f: _CelFn, env: dict[str, Any], x: Any) -> Any:
            sub = dict(env)
            sub[var] = x
            return f(sub)

        def as_bool(v: Any) -> bool:
            if not isinstance(v, bool):
                raise _CelEval(f"macro predicate is {_cel_type(v)}, not bool")
            return v

        def run(env: dict[str, Any]) -> Any:
            xs = items(env)
            if name == "map":
                if len(fns) == 1:
                    return [pred(fns[0], env, x) for x in xs]
                return [pred(fns[1], env, x) for x in xs if as_bool(pred(fns[0], env, x))]
            if name == "filter":
                return [x for x in xs if as_bool(pred(fns[0], env, x))]
            if name == "exists_one":
                return sum(1 for x in xs if as_bool(pred(fns[0], env, x))) == 1
            want = name == "exists"
            err: CelError | None = None
            for x in xs:
                try:
                    if as_bool(pred(fns[0], env, x)) is want:
                        return want
                except CelError as e:
                    err = err or e
            if err is not None:
                raise err
            return not want

        return run


class CelProgram:
    """A compiled CEL expression over ``self`` (the object)."""

    __slots__ = ("_fn", "source")

    def __init__(self, source: str, fn: _CelFn) -> None:
        self.source = source
        self._fn = fn

    def eval(self, obj: Any) -> Any:
        """The value of the expression; evaluation errors raise :class:`CelError`."""
        return self.eval_vars({"self": obj})

    def eval_vars(self, env: dict[str, Any]) -> Any:
        """The value with the variables of ``compile_cel(..., variables=)`` bound by ``env``."""
        try:
            return self._fn(env)
        except CelError:
            raise
        except RecursionError:
            raise CelError("evaluation nested too deeply") from None
        except Exception as e:  # defensive: only CelError escapes
            raise CelError(f"evaluation failed: {type(e).__name__}: {e}") from None

    def __repr__(self) -> str:
        return f"CelProgram({self.source!r})"


def compile_cel(expr: str, *, variables: Collection[str] = ("self",),
                functions: Mapping[str, Callable[..., Any]] | None = None) -> CelProgram:
    """Compile a CEL expression (the subset described above); errors raise :class:`CelError`.

    ``functions`` adds global functions that are also callable as methods on their first
    argument (``pod.Usage("cpu")`` is ``Usage(pod, "cpu")``), as kwok's CEL environments do;
    they raise CelError, ValueError or TypeError (no matching overload)."""
    if not isinstance(expr, str):
        raise CelError(f"expression must be a string, got {type(expr).__name__}")
    try:
        node = _CelParser(expr, frozenset(functions or ())).parse()
        fn = _CelCompiler(functions).compile(node, frozenset(variables))
    except CelError:
        raise
    except RecursionError:
        raise CelError("expression nested too deeply") from None
    except Exception as e:  # defensive: only CelError escapes
        raise CelError(f"cannot compile expression: {type(e).__name__}: {e}") from None
    return CelProgram(expr, fn)
