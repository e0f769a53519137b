"""A jq subset (gojq flavoured) for Stage selectors and value expressions.

kwok evaluates ``matchExpressions[].key``, ``weightFrom``, ``durationFrom`` and
``jitterDurationFrom`` with gojq.  This module implements the part of the jq
language that Stages use and that users reasonably write, compiled once into
closures:

* paths: ``.``, ``..``, ``.a.b``, ``."a"``, ``.a["x"]``, ``.[0]``, ``.[1:3]``,
  ``.[]``, ``.a.[]`` (kwok writes ``.status.conditions.[]``), optional ``?``;
* pipes ``|``, comma ``,``, alternative ``//``, ``and``/``or``, comparisons,
  arithmetic ``+ - * / %``, unary minus, parentheses;
* literals (strings with ``\\(...)`` interpolation, numbers, true/false/null),
  array and object construction, ``$var`` and ``EXP as $x | ...``,
  ``if/elif/else/end``, ``try/catch``, ``reduce``;
* builtins: ``select``, ``length``, ``has``, ``not``, ``map``, ``keys``,
  ``any``/``all``, ``contains``, ``test``, ``startswith``, ``split``, ``join``,
  ``first``/``last``, ``tostring``/``tonumber``, ``sort_by``, ... (see _BUILTINS).

gojq semantics are followed where they differ from jq 1.6: object keys are
iterated in sorted order (``.[]``, ``keys``, ``to_entries``, ``tojson``).

Only :class:`JQError` ever escapes :func:`compile_jq` and :meth:`Query.run`.
"""

from __future__ import annotations

import base64
import calendar
import functools
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

__all__ = ["JQError", "Query", "compile_jq", "jq_cmp", "jq_truthy", "jq_type", "to_json"]


class JQError(ValueError):
    """A jq expression failed to parse, compile or evaluate."""


class _RuntimeError(JQError):
    """An error raised while evaluating; ``value`` is what ``try ... catch`` sees."""

    def __init__(self, value: Any) -> None:
        self.value = value
        super().__init__(value if isinstance(value, str) else to_json(value))


Vars = dict[str, Any]
Fn = Callable[[Any, Vars], Iterable[Any]]
Node = tuple[Any, ...]

_MAX_DEPTH: Final = 200
_MAX_STRING: Final = 10_000_000
_MAX_RANGE: Final = 10_000_000

# --------------------------------------------------------------------------- values


def jq_type(v: Any) -> str:
    """The jq type name of a JSON value."""
    if v is None:
        return "null"
    if v is True or v is False:
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list | tuple):
        return "array"
    if isinstance(v, dict):
        return "object"
    raise _RuntimeError(f"unsupported value of Python type {type(v).__name__}")


_ORDER: Final = {"null": 0, "boolean": 1, "number": 3, "string": 4, "array": 5, "object": 6}


def _rank(v: Any) -> int:
    if v is False:
        return 1
    if v is True:
        return 2
    return _ORDER[jq_type(v)]


def jq_cmp(a: Any, b: Any) -> int:
    """jq's total order: null < false < true < numbers < strings < arrays < objects."""
    ra, rb = _rank(a), _rank(b)
    if ra != rb:
        return -1 if ra < rb else 1
    if ra == 3 or ra == 4:
        return -1 if a < b else (1 if a > b else 0)
    if ra == 5:
        for x, y in zip(a, b, strict=False):
            c = jq_cmp(x, y)
            if c:
                return c
        return (len(a) > len(b)) - (len(a) < len(b))
    if ra == 6:
        ka, kb = sorted(a), sorted(b)
        c = jq_cmp(ka, kb)
        if c:
            return c
        for k in ka:
            c = jq_cmp(a[k], b[k])
            if c:
                return c
        return 0
    return 0


def jq_truthy(v: Any) -> bool:
    return v is not None and v is not False


def _fmt_number(v: int | float) -> str:
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "null"
    if math.isinf(v):
        return "1.7976931348623157e+308" if v > 0 else "-1.7976931348623157e+308"
    if v.is_integer() and abs(v) < 1e17:
        return str(int(v))
    return repr(v)


def to_json(v: Any) -> str:
    """Compact JSON as gojq prints it (sorted keys, integral floats without '.0')."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int | float):
        return _fmt_number(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list | tuple):
        return "[" + ",".join(to_json(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + to_json(v[k]) for k in sorted(v)) + "}"
    raise _RuntimeError(f"cannot encode Python {type(v).__name__} as JSON")


def _desc(v: Any) -> str:
    """'string ("abc")' as jq's error messages describe a value."""
    try:
        text = to_json(v)
    except JQError:
        text = "?"
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{jq_type(v)} ({text})"


# --------------------------------------------------------------------------- lexer

_PUNCT: Final = [
    "?//=", "?//", "|=", "+=", "-=", "*=", "/=", "%=", "//=", "==", "!=", "<=", ">=", "//", "..",
    "|", ",", ".", "[", "]", "{", "}", "(", ")", ":", ";", "=", "<", ">", "+", "-", "*", "/", "%", "?",
]
_KEYWORDS: Final = frozenset(
    {"def", "if", "then", "elif", "else", "end", "as", "reduce", "foreach", "try", "catch",
     "label", "import", "include", "and", "or", "__loc__"}
)
_IDENT_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*")
_FIELD_RE: Final = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)")
_NUM_RE: Final = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_WS_RE: Final = re.compile(r"(?:\s+|#[^\n]*)+")


class _Tok:
    __slots__ = ("kind", "pos", "value")

    def __init__(self, kind: str, value: Any, pos: int) -> None:
        self.kind = kind  # punct, ident, keyword, field, var, num, str, format, eof
        self.value = value
        self.pos = pos

    def text(self) -> str:
        if self.kind == "eof":
            return "end of input"
        if self.kind == "str":
            return "string"
        if self.kind == "field":
            return "." + str(self.value)
        if self.kind == "var":
            return "$" + str(self.value)
        return str(self.value)


# --------------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, src: str, pos: int = 0, depth: int = 0) -> None:
        self.src = src
        self.pos = pos
        self.depth = depth
        self._peeked: _Tok | None = None

    # ---- tokens
    def _error(self, tok: _Tok | None = None, what: str | None = None) -> JQError:
        tok = tok or self.peek()
        if what is None:
            if tok.kind == "eof":
                return JQError(f"unexpected end of input at {tok.pos}")
            return JQError(f"unexpected token {tok.text()!r} at {tok.pos}")
        return JQError(f"{what} at {tok.pos}")

    def _lex(self) -> _Tok:
        src, n = self.src, len(self.src)
        m = _WS_RE.match(src, self.pos)
        if m:
            self.pos = m.end()
        p = self.pos
        if p >= n:
            return _Tok("eof", None, p)
        c = src[p]
        if c == '"':
            return self._lex_string(p)
        if c == ".":
            m = _FIELD_RE.match(src, p)
            if m:
                self.pos = m.end()
                return _Tok("field", m.group(1), p)
            if p + 1 < n and src[p + 1] == '"':
                self.pos = p + 1
                s = self._lex_string(p + 1)
                return _Tok("qfield", s.value, p)
        if c.isdigit() or (c == "." and p + 1 < n and src[p + 1].isdigit()):
            m = _NUM_RE.match(src, p)
            if m:
                self.pos = m.end()
                return _Tok("num", _parse_number(m.group(0)), p)
        if c == "$":
            m = _IDENT_RE.match(src, p + 1)
            if not m:
                raise JQError(f"unexpected token '$' at {p}")
            self.pos = m.end()
            return _Tok("var", m.group(0), p)
        if c == "@":
            m = _IDENT_RE.match(src, p + 1)
            if not m:
                raise JQError(f"unexpected token '@' at {p}")
            self.pos = m.end()
            return _Tok("format", m.group(0), p)
        m = _IDENT_RE.match(src, p)
        if m:
            self.pos = m.end()
            word = m.group(0)
            return _Tok("keyword" if word in _KEYWORDS else "ident", word, p)
        for punct in _PUNCT:
            if src.startswith(punct, p):
                self.pos = p + len(punct)
                return _Tok("punct", punct, p)
        raise JQError(f"unexpected token {c!r} at {p}")

    def _lex_string(self, start: int) -> _Tok:
        """A string literal; interpolations ``\\(...)`` are parsed as sub-expressions."""
        src, n = self.src, len(self.src)
        p = start + 1
        parts: list[Any] = []
        buf: list[str] = []
        while True:
            if p >= n:
                raise JQError(f"unterminated string literal at {start}")
            c = src[p]
            if c == '"':
                p += 1
                break
            if c == "\\":
                if p + 1 >= n:
                    raise JQError(f"unterminated string literal at {start}")
                e = src[p + 1]
                if e == "(":
                    if buf:
                        parts.append("".join(buf))
                        buf = []
                    sub = _Parser(src, p + 2, self.depth + 1)
                    sub._check_depth()
                    node = sub.parse_pipe()
                    tok = sub.next()
                    if tok.kind != "punct" or tok.value != ")":
                        raise sub._error(tok)
                    parts.append(node)
                    p = sub.pos
                    continue
                simple = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
                if e in simple:
                    buf.append(simple[e])
                    p += 2
                    continue
                if e == "u":
                    hexs = src[p + 2 : p + 6]
                    if len(hexs) != 4 or not all(h in "0123456789abcdefABCDEF" for h in hexs):
                        raise JQError(f"invalid escape \\u{hexs} at {p}")
                    code = int(hexs, 16)
                    p += 6
                    if 0xD800 <= code < 0xDC00 and src.startswith("\\u", p):
                        low_hex = src[p + 2 : p + 6]
                        if len(low_hex) == 4 and all(h in "0123456789abcdefABCDEF" for h in low_hex):
                            low = int(low_hex, 16)
                            if 0xDC00 <= low < 0xE000:
                                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                                p += 6
                    if 0xD800 <= code < 0xE000:
                        code = 0xFFFD
                    buf.append(chr(code))
                    continue
                raise JQError(f"invalid escape '\\{e}' at {p}")
            buf.append(c)
            p += 1
        if buf or not parts:
            parts.append("".join(buf))
        self.pos = p
        if all(isinstance(x, str) for x in parts):
            return _Tok("str", "".join(parts), start)
        return _Tok("str", parts, start)

    def peek(self) -> _Tok:
        if self._peeked is None:
            self._peeked = self._lex()
        return self._peeked

    def next(self) -> _Tok:
        tok = self.peek()
        self._peeked = None
        return tok

    def _is(self, value: str, kind: str = "punct") -> bool:
        tok = self.peek()
        return tok.kind == kind and tok.value == value

    def _accept(self, value: str, kind: str = "punct") -> bool:
        if self._is(value, kind):
            self.next()
            return True
        return False

    def _expect(self, value: str, kind: str = "punct") -> _Tok:
        tok = self.next()
        if tok.kind != kind or tok.value != value:
            raise self._error(tok)
        return tok

    def _check_depth(self) -> None:
        if self.depth > _MAX_DEPTH:
            raise JQError(f"expression nested too deeply at {self.pos}")

    # ---- grammar (lowest to highest precedence)
    def parse_program(self) -> Node:
        node = self.parse_pipe()
        tok = self.peek()
        if tok.kind != "eof":
            raise self._error(tok)
        return node

    def parse_pipe(self, no_comma: bool = False) -> Node:
        self.depth += 1
        self._check_depth()
        try:
            tok = self.peek()
            if tok.kind == "keyword" and tok.value == "def":
                raise self._error(tok, "function definitions (def) are not supported")
            lhs = self._parse_comma() if not no_comma else self._parse_alt()
            if self._is("as", "keyword"):
                self.next()
                var = self.next()
                if var.kind != "var":
                    raise self._error(var, "only '$name' bindings are supported")
                self._expect("|")
                body = self.parse_pipe(no_comma)
                return ("bind", lhs, var.value, body)
            if self._accept("|"):
                rhs = self.parse_pipe(no_comma)
                return ("pipe", lhs, rhs)
            return lhs
        finally:
            self.depth -= 1

    def _parse_comma(self) -> Node:
        node = self._parse_alt()
        while self._is(","):
            self.next()
            rhs = self._parse_alt()
            node = ("comma", node, rhs)
        return node

    def _parse_alt(self) -> Node:
        lhs = self._parse_or()
        tok = self.peek()
        if tok.kind == "punct" and tok.value in ("=", "|=", "+=", "-=", "*=", "/=", "%=", "//=", "?//", "?//="):
            raise self._error(tok, f"operator {tok.value!r} is not supported")
        if self._accept("//"):
            self.depth += 1
            self._check_depth()
            try:
                rhs = self._parse_alt()
            finally:
                self.depth -= 1
            return ("alt", lhs, rhs)
        return lhs

    def _parse_or(self) -> Node:
        node = self._parse_and()
        while self._accept("or", "keyword"):
            node = ("or", node, self._parse_and())
        return node

    def _parse_and(self) -> Node:
        node = self._parse_cmp()
        while self._accept("and", "keyword"):
            node = ("and", node, self._parse_cmp())
        return node

    def _parse_cmp(self) -> Node:
        node = self._parse_add()
        tok = self.peek()
        if tok.kind == "punct" and tok.value in ("==", "!=", "<", "<=", ">", ">="):
            self.next()
            rhs = self._parse_add()
            node = ("cmp", tok.value, node, rhs)
            tok = self.peek()
            if tok.kind == "punct" and tok.value in ("==", "!=", "<", "<=", ">", ">="):
                raise self._error(tok)
        return node

    def _parse_add(self) -> Node:
        node = self._parse_mul()
        while True:
            tok = self.peek()
            if tok.kind == "punct" and tok.value in ("+", "-"):
                self.next()
                node = ("arith", tok.value, node, self._parse_mul())
            else:
                return node

    def _parse_mul(self) -> Node:
        node = self._parse_unary()
        while True:
            tok = self.peek()
            if tok.kind == "punct" and tok.value in ("*", "/", "%"):
                self.next()
                node = ("arith", tok.value, node, self._parse_unary())
            else:
                return node

    def _parse_unary(self) -> Node:
        if self._accept("-"):
            self.depth += 1
            self._check_depth()
            try:
                return ("neg", self._parse_unary())
            finally:
                self.depth -= 1
        return self._parse_postfix()

    def _parse_postfix(self) -> Node:
        node = self._parse_primary()
        while True:
            tok = self.peek()
            if tok.kind == "field":
                self.next()
                node = ("index", node, ("lit", tok.value))
            elif tok.kind == "qfield":
                self.next()
                node = ("index", node, self._string_node(tok.value))
            elif tok.kind == "punct" and tok.value == "[":
                self.next()
                node = self._parse_bracket(node)
            elif tok.kind == "punct" and tok.value == ".":
                # `.a.[]`, `.a.["x"]` (jq 1.7 / gojq)
                self.next()
                after = self.peek()
                if after.kind == "punct" and after.value == "[":
                    self.next()
                    node = self._parse_bracket(node)
                elif after.kind == "str":
                    self.next()
                    node = ("index", node, self._string_node(after.value))
                else:
                    raise self._error(after)
            elif tok.kind == "punct" and tok.value == "?":
                self.next()
                node = ("try", node, None)
            else:
                return node

    def _parse_bracket(self, base: Node) -> Node:
        """After '[': `]` (iterate), `expr]`, `expr:expr]`, `:expr]`, `expr:]`."""
        if self._accept("]"):
            return ("iter", base)
        if self._accept(":"):
            hi = self.parse_pipe()
            self._expect("]")
            return ("slice", base, None, hi)
        idx = self.parse_pipe()
        if self._accept(":"):
            if self._accept("]"):
                return ("slice", base, idx, None)
            hi = self.parse_pipe()
            self._expect("]")
            return ("slice", base, idx, hi)
        self._expect("]")
        return ("index", base, idx)

    @staticmethod
    def _string_node(value: Any) -> Node:
        if isinstance(value, str):
            return ("lit", value)
        return ("interp", tuple(value))

    def _parse_primary(self) -> Node:
        self.depth += 1
        self._check_depth()
        try:
            return self._parse_primary_inner()
        finally:
            self.depth -= 1

    def _parse_primary_inner(self) -> Node:
        tok = self.next()
        kind, value = tok.kind, tok.value
        if kind == "num":
            return ("lit", value)
        if kind == "str":
            return self._string_node(value)
        if kind == "field":
            return ("index", ("identity",), ("lit", value))
        if kind == "qfield":
            return ("index", ("identity",), self._string_node(value))
        if kind == "var":
            return ("var", value)
        if kind == "format":
            raise self._error(tok, f"format @{value} is not supported")
        if kind == "punct":
            if value == ".":
                nxt = self.peek()
                if nxt.kind == "punct" and nxt.value == "[":
                    self.next()
                    return self._parse_bracket(("identity",))
                if nxt.kind == "str":
                    self.next()
                    return ("index", ("identity",), self._string_node(nxt.value))
                return ("identity",)
            if value == "..":
                return ("recurse",)
            if value == "(":
                node = self.parse_pipe()
                self._expect(")")
                return node
            if value == "[":
                if self._accept("]"):
                    return ("array", None)
                node = self.parse_pipe()
                self._expect("]")
                return ("array", node)
            if value == "{":
                return self._parse_object()
            raise self._error(tok)
        if kind == "keyword":
            if value == "if":
                return self._parse_if()
            if value == "try":
                body = self._parse_postfix_for_try()
                handler = None
                if self._accept("catch", "keyword"):
                    handler = self._parse_postfix_for_try()
                return ("try", body, handler)
            if value == "reduce":
                source = self._parse_postfix()
                self._expect("as", "keyword")
                var = self.next()
                if var.kind != "var":
                    raise self._error(var, "only '$name' bindings are supported")
                self._expect("(")
                init = self.parse_pipe()
                self._expect(";")
                update = self.parse_pipe()
                self._expect(")")
                return ("reduce", source, var.value, init, update)
            raise self._error(tok, f"{value!r} is not supported" if value != "end" else None)
        if kind == "ident":
            if value in ("true", "false", "null"):
                if not self._is("("):
                    return ("lit", {"true": True, "false": False, "null": None}[value])
            args: list[Node] = []
            if self._accept("("):
                args.append(self.parse_pipe())
                while self._accept(";"):
                    args.append(self.parse_pipe())
                self._expect(")")
            return ("call", value, tuple(args), tok.pos)
        raise self._error(tok)

    def _parse_postfix_for_try(self) -> Node:
        # jq: `try` binds a PostTerm (tighter than binary operators)
        return self._parse_postfix()

    def _parse_if(self) -> Node:
        cond = self.parse_pipe()
        self._expect("then", "keyword")
        then = self.parse_pipe()
        if self._accept("elif", "keyword"):
            rest = self._parse_if()
            return ("if", cond, then, rest)
        if self._accept("else", "keyword"):
            other = self.parse_pipe()
            self._expect("end", "keyword")
            return ("if", cond, then, other)
        self._expect("end", "keyword")
        return ("if", cond, then, ("identity",))

    def _parse_object(self) -> Node:
        entries: list[tuple[Node, Node]] = []
        if self._accept("}"):
            return ("object", ())
        while True:
            tok = self.next()
            key: Node
            val: Node | None = None
            if tok.kind in ("ident", "keyword"):
                key = ("lit", tok.value)
                if not self._is(":"):
                    val = ("index", ("identity",), ("lit", tok.value))
            elif tok.kind == "var":
                key = ("lit", tok.value)
                val = ("var", tok.value)
                if self._is(":"):
                    raise self._error()
            elif tok.kind == "str":
                key = self._string_node(tok.value)
                if not self._is(":"):
                    val = ("index", ("identity",), key)
            elif tok.kind == "num":
                raise self._error(tok, "object keys must be strings")
            elif tok.kind == "punct" and tok.value == "(":
                key = self.parse_pipe()
                self._expect(")")
            else:
                raise self._error(tok)
            if val is None:
                self._expect(":")
                val = self.parse_pipe(no_comma=True)
            entries.append((key, val))
            if self._accept("}"):
                return ("object", tuple(entries))
            self._expect(",")


def _parse_number(text: str) -> int | float:
    if all(c.isdigit() for c in text):
        v = int(text)
        if v < 2**63:
            return v
    try:
        return float(text)
    except (ValueError, OverflowError):  # pragma: no cover - regex guarantees a float literal
        return math.inf


# --------------------------------------------------------------------------- evaluation helpers


def _index(v: Any, k: Any) -> Any:
    if isinstance(k, str):
        if isinstance(v, dict):
            return v.get(k)
        if v is None:
            return None
        raise _RuntimeError(f"expected an object but got: {_desc(v)}")
    if isinstance(k, int | float) and not isinstance(k, bool):
        if isinstance(v, list):
            if isinstance(k, float):
                if math.isnan(k) or math.isinf(k):
                    return None
                k = math.floor(k)
            n = len(v)
            if k < 0:
                k += n
            return v[k] if 0 <= k < n else None
        if v is None:
            return None
        raise _RuntimeError(f"expected an array but got: {_desc(v)}")
    if isinstance(k, list) and isinstance(v, list):
        return _indices(v, k)
    raise _RuntimeError(f"cannot index {jq_type(v)} with {jq_type(k)}")


def _indices(v: list[Any], sub: list[Any]) -> list[int] | None:
    if not sub:
        return None
    out = []
    for i in range(len(v) - len(sub) + 1):
        if all(jq_cmp(v[i + j], sub[j]) == 0 for j in range(len(sub))):
            out.append(i)
    return out


def _clamp_slice_index(x: Any, n: int, default: int) -> int:
    if x is None:
        return default
    if not isinstance(x, int | float) or isinstance(x, bool):
        raise _RuntimeError(f"start and end indices of an array slice must be numbers, got {jq_type(x)}")
    if isinstance(x, float):
        if math.isnan(x):
            x = 0
        elif math.isinf(x):
            x = n if x > 0 else -n
        x = math.floor(x)
    if x < 0:
        x = max(0, n + x)
    return min(int(x), n)


def _slice(v: Any, lo: Any, hi: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, list | str):
        n = len(v)
        a = _clamp_slice_index(lo, n, 0)
        b = _clamp_slice_index(hi, n, n)
        return v[a:b] if b > a else v[:0]
    raise _RuntimeError(f"cannot slice {_desc(v)}")


def _iterate(v: Any) -> Iterable[Any]:
    if isinstance(v, list):
        return v
    if isinstance(v, dict):
        return [v[k] for k in sorted(v)]
    raise _RuntimeError(f"cannot iterate over: {_desc(v)}")


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _finite(x: Any) -> bool:
    return isinstance(x, int) or math.isfinite(x)


def _check_str_size(n: int) -> None:
    if n > _MAX_STRING:
        raise _RuntimeError("string too long")


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, bv in b.items():
        av = out.get(k)
        out[k] = _deep_merge(av, bv) if isinstance(av, dict) and isinstance(bv, dict) else bv
    return out


def _arith(op: str, a: Any, b: Any) -> Any:
    if op == "+":
        if a is None:
            return b
        if b is None:
            return a
        if _num(a) and _num(b):
            return a + b
        if isinstance(a, str) and isinstance(b, str):
            _check_str_size(len(a) + len(b))
            return a + b
        if isinstance(a, list) and isinstance(b, list):
            return a + b
        if isinstance(a, dict) and isinstance(b, dict):
            return {**a, **b}
    elif op == "-":
        if _num(a) and _num(b):
            return a - b
        if isinstance(a, list) and isinstance(b, list):
            return [x for x in a if not any(jq_cmp(x, y) == 0 for y in b)]
    elif op == "*":
        if _num(a) and _num(b):
            return a * b
        if (isinstance(a, str) and _num(b)) or (_num(a) and isinstance(b, str)):
            s, n = (a, b) if isinstance(a, str) else (b, a)
            if n <= 0 or math.isnan(n):
                return None
            reps = max(1, math.ceil(n)) if n < 1 else int(n)
            _check_str_size(len(s) * reps)
            return s * reps
        if isinstance(a, dict) and isinstance(b, dict):
            return _deep_merge(a, b)
    elif op == "/":
        if _num(a) and _num(b):
            if b == 0:
                raise _RuntimeError(f"{_desc(a)} and {_desc(b)} cannot be divided because the divisor is zero")
            if isinstance(a, int) and isinstance(b, int) and a % b == 0:
                return a // b
            return a / b
        if isinstance(a, str) and isinstance(b, str):
            return _split(a, b)
    elif op == "%":
        if _num(a) and _num(b):
            if not _finite(a) or not _finite(b):
                raise _RuntimeError(f"{_desc(a)} and {_desc(b)} cannot be divided")
            ia, ib = int(a), int(b)
            if ib == 0:
                raise _RuntimeError(f"{_desc(a)} and {_desc(b)} cannot be divided because the divisor is zero")
            r = abs(ia) % abs(ib)
            return -r if ia < 0 else r
    raise _RuntimeError(f"{_desc(a)} and {_desc(b)} cannot be {_OPNAMES[op]}")


_OPNAMES: Final = {"+": "added", "-": "subtracted", "*": "multiplied", "/": "divided", "%": "divided"}


def _compare(op: str, a: Any, b: Any) -> bool:
    c = jq_cmp(a, b)
    if op == "==":
        return c == 0
    if op == "!=":
        return c != 0
    if op == "<":
        return c < 0
    if op == "<=":
        return c <= 0
    if op == ">":
        return c > 0
    return c >= 0


def _split(s: str, sep: str) -> list[str]:
    if s == "":
        return []
    if sep == "":
        return list(s)
    return s.split(sep)


def _length(v: Any) -> Any:
    if v is None:
        return 0
    if v is True or v is False:
        raise _RuntimeError(f"length cannot be applied to: {_desc(v)}")
    if _num(v):
        return abs(v)
    if isinstance(v, str | list | dict):
        return len(v)
    raise _RuntimeError(f"length cannot be applied to: {_desc(v)}")


def _contains(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return all(k in a and _contains(a[k], bv) for k, bv in b.items())
    if isinstance(a, list) and isinstance(b, list):
        return all(any(_contains(x, y) for x in a) for y in b)
    if isinstance(a, str) and isinstance(b, str):
        return b in a
    if jq_type(a) == jq_type(b):
        return jq_cmp(a, b) == 0
    raise _RuntimeError(f"{_desc(a)} and {_desc(b)} cannot have their containment checked")


def _tostring(v: Any) -> str:
    return v if isinstance(v, str) else to_json(v)


_NUMBER_TEXT: Final = re.compile(r"\s*[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\s*")


def _tonumber(v: Any) -> Any:
    if _num(v):
        return v
    if isinstance(v, str) and _NUMBER_TEXT.fullmatch(v):
        return _parse_number(v.strip().lstrip("+"))
    raise _RuntimeError(f"cannot parse {_desc(v)} as number")


def _regex(pattern: Any, flags: Any) -> re.Pattern[str]:
    if not isinstance(pattern, str):
        raise _RuntimeError(f"{_desc(pattern)} cannot be matched, as it is not a string")
    f = 0
    if flags is not None:
        if not isinstance(flags, str):
            raise _RuntimeError(f"{_desc(flags)} is not a string")
        for ch in flags:
            if ch == "i":
                f |= re.IGNORECASE
            elif ch == "x":
                f |= re.VERBOSE
            elif ch == "s":
                f |= re.DOTALL
            elif ch in "gnpl":
                pass
            else:
                raise _RuntimeError(f"{flags} is not a valid modifier string")
    try:
        return re.compile(pattern, f)
    except (re.error, OverflowError, RecursionError) as e:
        raise _RuntimeError(f"{pattern} (at offset 0) is not a valid regex: {e}") from None


_ISO_RE: Final = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?Z")


def _fromdate(v: Any) -> int:
    if not isinstance(v, str):
        raise _RuntimeError(f"fromdateiso8601 cannot be applied to: {_desc(v)}")
    m = _ISO_RE.fullmatch(v)
    if not m:
        raise _RuntimeError(f'date "{v}" does not match format "%Y-%m-%dT%H:%M:%SZ"')
    try:
        parts = tuple(int(x) for x in m.groups())
        return calendar.timegm((*parts, 0, 0, 0))
    except (ValueError, OverflowError):
        raise _RuntimeError(f'date "{v}" does not match format "%Y-%m-%dT%H:%M:%SZ"') from None


def _todate(v: Any) -> str:
    if not _num(v) or not _finite(v):
        raise _RuntimeError(f"todateiso8601 cannot be applied to: {_desc(v)}")
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.floor(v)))
    except (ValueError, OverflowError, OSError):
        raise _RuntimeError(f"todateiso8601 cannot be applied to: {_desc(v)}") from None


def _implode(v: Any) -> str:
    if not isinstance(v, list) or not all(_num(c) for c in v):
        raise _RuntimeError(f"implode input must be an array of codepoints: {_desc(v)}")
    try:
        return "".join(chr(int(c)) for c in v)
    except (ValueError, OverflowError):
        raise _RuntimeError("invalid codepoint in implode input") from None


def _from_entries(v: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for e in _iterate(v):
        if not isinstance(e, dict):
            raise _RuntimeError(f"cannot index {jq_type(e)} with \"key\"")
        k: Any = None
        for name in ("key", "k", "name", "Name", "Key", "K"):
            if jq_truthy(e.get(name)):
                k = e[name]
                break
        else:
            for name in ("key", "k", "name", "Name", "Key", "K"):
                if name in e:
                    k = e[name]
                    break
        if _num(k) or isinstance(k, bool):
            k = to_json(k)
        elif k is None:
            k = "null"
        if not isinstance(k, str):
            raise _RuntimeError(f"cannot use {_desc(k)} as object key")
        val = None
        for name in ("value", "v", "Value", "V"):
            if name in e:
                val = e[name]
                break
        out[k] = val
    return out


def _sorted(v: Any, keys: list[Any] | None = None) -> list[Any]:
    if not isinstance(v, list):
        raise _RuntimeError(f"{_desc(v)} cannot be sorted, as it is not an array")
    if keys is None:
        return sorted(v, key=functools.cmp_to_key(jq_cmp))
    return _sorted_pairs(v, keys)[1]


def _unique(v: list[Any], keys: list[Any]) -> list[Any]:
    out: list[Any] = []
    last: Any = object()
    first = True
    for k, item in zip(*_sorted_pairs(v, keys), strict=True):
        if first or jq_cmp(k, last) != 0:
            out.append(item)
            last = k
            first = False
    return out


def _cmp_first(a: tuple[Any, int], b: tuple[Any, int]) -> int:
    return jq_cmp(a[0], b[0])


def _sorted_pairs(v: list[Any], keys: list[Any]) -> tuple[list[Any], list[Any]]:
    pairs = sorted(zip(keys, range(len(v)), strict=True), key=functools.cmp_to_key(_cmp_first))
    return [k for k, _ in pairs], [v[i] for _, i in pairs]


def _group(v: list[Any], keys: list[Any]) -> list[list[Any]]:
    ks, items = _sorted_pairs(v, keys)
    out: list[list[Any]] = []
    for i, (k, item) in enumerate(zip(ks, items, strict=True)):
        if i == 0 or jq_cmp(k, ks[i - 1]) != 0:
            out.append([item])
        else:
            out[-1].append(item)
    return out


def _recurse_all(v: Any) -> Iterator[Any]:
    stack = [v]
    while stack:
        x = stack.pop()
        yield x
        if isinstance(x, list):
            stack.extend(reversed(x))
        elif isinstance(x, dict):
            stack.extend(x[k] for k in sorted(x, reverse=True))


def _getpath(v: Any, path: Any) -> Any:
    if not isinstance(path, list):
        raise _RuntimeError("path must be specified as an array")
    for k in path:
        if v is None:
            return None
        v = _index(v, k)
    return v


def _b64decode(v: Any) -> str:
    if not isinstance(v, str):
        raise _RuntimeError(f"{_desc(v)} cannot be base64-decoded")
    try:
        data = base64.b64decode(v + "=" * (-len(v) % 4), validate=False)
    except ValueError:
        raise _RuntimeError(f"{_desc(v)} is not valid base64 data") from None
    return data.decode("utf-8", errors="replace")


# --------------------------------------------------------------------------- compiler

_LOWER: Final[dict[int, int]] = {i: i + 32 for i in range(ord("A"), ord("Z") + 1)}
_UPPER: Final[dict[int, int]] = {i: i - 32 for i in range(ord("a"), ord("z") + 1)}

# builtins of arity 0 that map one input value to one output value
_SIMPLE0: Final[dict[str, Callable[[Any], Any]]] = {
    "length": _length,
    "utf8bytelength": lambda v: len(v.encode("utf-8")) if isinstance(v, str) else _raise(
        f"{_desc(v)} only strings have UTF-8 byte length"),
    "not": lambda v: not jq_truthy(v),
    "type": jq_type,
    "keys": lambda v: sorted(v) if isinstance(v, dict) else (
        list(range(len(v))) if isinstance(v, list) else _raise(f"{_desc(v)} has no keys")),
    "keys_unsorted": lambda v: sorted(v) if isinstance(v, dict) else (
        list(range(len(v))) if isinstance(v, list) else _raise(f"{_desc(v)} has no keys")),
    "to_entries": lambda v: [{"key": k, "value": v[k]} for k in sorted(v)] if isinstance(v, dict) else _raise(
        f"{_desc(v)} has no keys"),
    "from_entries": _from_entries,
    "add": lambda v: _add_all(list(_iterate(v))),
    "any": lambda v: any(jq_truthy(x) for x in _iterate(v)),
    "all": lambda v: all(jq_truthy(x) for x in _iterate(v)),
    "tostring": _tostring,
    "tojson": to_json,
    "fromjson": lambda v: _fromjson(v),
    "tonumber": _tonumber,
    "ascii_downcase": lambda v: v.translate(_LOWER) if isinstance(v, str) else _raise(
        f"ascii_downcase input must be a string: {_desc(v)}"),
    "ascii_upcase": lambda v: v.translate(_UPPER) if isinstance(v, str) else _raise(
        f"ascii_upcase input must be a string: {_desc(v)}"),
    "reverse": lambda v: v[::-1] if isinstance(v, list | str) else ([] if v is None else _raise(
        f"cannot reverse {_desc(v)}")),
    "sort": lambda v: _sorted(v),
    "unique": lambda v: _unique(v, v) if isinstance(v, list) else _raise(f"{_desc(v)} cannot be sorted"),
    "min": lambda v: _sorted(v)[0] if _sorted(v) else None,
    "max": lambda v: _sorted(v)[-1] if _sorted(v) else None,
    "floor": lambda v: math.floor(v) if _num(v) and _finite(v) else _mathfail("floor", v),
    "ceil": lambda v: math.ceil(v) if _num(v) and _finite(v) else _mathfail("ceil", v),
    "round": lambda v: (math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)) if _num(v) and _finite(
        v) else _mathfail("round", v),
    "fabs": lambda v: abs(v) if _num(v) else _mathfail("fabs", v),
    "abs": lambda v: abs(v) if _num(v) else _mathfail("abs", v),
    "sqrt": lambda v: math.sqrt(v) if _num(v) and v >= 0 else (math.nan if _num(v) else _mathfail("sqrt", v)),
    "isnan": lambda v: isinstance(v, float) and math.isnan(v) if _num(v) else _mathfail("isnan", v),
    "isinfinite": lambda v: isinstance(v, float) and math.isinf(v) if _num(v) else _mathfail("isinfinite", v),
    "isnormal": lambda v: v != 0 and _finite(v) if _num(v) else _mathfail("isnormal", v),
    "nan": lambda v: math.nan,
    "infinite": lambda v: math.inf,
    "null": lambda v: None,
    "explode": lambda v: [ord(c) for c in v] if isinstance(v, str) else _raise(
        f"explode input must be a string: {_desc(v)}"),
    "implode": _implode,
    "fromdateiso8601": _fromdate,
    "fromdate": _fromdate,
    "todateiso8601": _todate,
    "todate": _todate,
    "trim": lambda v: v.strip(" \t\n\r\f\v") if isinstance(v, str) else _raise(
        f"trim input must be a string: {_desc(v)}"),
    "ltrim": lambda v: v.lstrip(" \t\n\r\f\v") if isinstance(v, str) else _raise(
        f"trim input must be a string: {_desc(v)}"),
    "rtrim": lambda v: v.rstrip(" \t\n\r\f\v") if isinstance(v, str) else _raise(
        f"trim input must be a string: {_desc(v)}"),
    "ascii": lambda v: chr(int(v)) if _num(v) and 0 <= v < 128 else _raise(f"ascii cannot be applied to: {_desc(v)}"),
    "@base64": lambda v: base64.b64encode(_tostring(v).encode("utf-8")).decode("ascii"),
    "@base64d": _b64decode,
    "@text": _tostring,
    "@json": to_json,
    "flatten": lambda v: _flatten(v, math.inf),
}

# type filters: arity 0, yield the input when its type matches
_TYPE_FILTERS: Final = {
    "arrays": ("array",),
    "objects": ("object",),
    "iterables": ("array", "object"),
    "booleans": ("boolean",),
    "numbers": ("number",),
    "strings": ("string",),
    "nulls": ("null",),
    "values": ("boolean", "number", "string", "array", "object"),
    "scalars": ("null", "boolean", "number", "string"),
}


def _raise(msg: str) -> Any:
    raise _RuntimeError(msg)


def _mathfail(name: str, v: Any) -> Any:
    if _num(v):
        if name in ("floor", "ceil", "round"):
            return v  # nan/inf pass through
    raise _RuntimeError(f"{name} cannot be applied to: {_desc(v)}")


def _fromjson(v: Any) -> Any:
    if not isinstance(v, str):
        raise _RuntimeError(f"{_desc(v)} cannot be parsed as JSON")
    try:
        return json.loads(v, parse_constant=lambda c: math.nan if c == "NaN" else _raise(f"invalid JSON: {c}"))
    except (ValueError, RecursionError) as e:
        raise _RuntimeError(f"{v} (while parsing '{v}') cannot be parsed as JSON: {e}") from None


def _add_all(items: list[Any]) -> Any:
    acc: Any = None
    for x in items:
        acc = _arith("+", acc, x)
    return acc


class _Compiler:
    def __init__(self) -> None:
        self.vars: list[str] = ["$ENV", "$__prog_name"]

    def compile(self, node: Node, scope: frozenset[str]) -> Fn:
        tag = node[0]
        meth = getattr(self, "_c_" + tag)
        fn: Fn = meth(node, scope)
        return fn

    # ---- structural
    def _c_identity(self, node: Node, scope: frozenset[str]) -> Fn:
        return lambda v, env: (v,)

    def _c_recurse(self, node: Node, scope: frozenset[str]) -> Fn:
        return lambda v, env: _recurse_all(v)

    def _c_lit(self, node: Node, scope: frozenset[str]) -> Fn:
        value = node[1]
        out = (value,)
        return lambda v, env: out

    def _path_chain(self, node: Node) -> list[Any] | None:
        """`.a.b[0]` with literal keys -> ['a', 'b', 0] (compiled to one loop)."""
        keys: list[Any] = []
        while node[0] == "index" and node[2][0] == "lit":
            keys.append(node[2][1])
            node = node[1]
        if node[0] != "identity":
            return None
        keys.reverse()
        return keys

    def _c_index(self, node: Node, scope: frozenset[str]) -> Fn:
        chain = self._path_chain(node)
        if chain is not None:
            if all(isinstance(k, str) for k in chain):
                keys = tuple(chain)

                def get_path(v: Any, env: Vars) -> Iterable[Any]:
                    for k in keys:
                        if isinstance(v, dict):
                            v = v.get(k)
                        elif v is None:
                            return (None,)
                        else:
                            raise _RuntimeError(f"expected an object but got: {_desc(v)}")
                    return (v,)

                return get_path
            keys2 = tuple(chain)

            def get_path_mixed(v: Any, env: Vars) -> Iterable[Any]:
                for k in keys2:
                    v = _index(v, k)
                return (v,)

            return get_path_mixed
        base = self.compile(node[1], scope)
        key = self.compile(node[2], scope)

        def index(v: Any, env: Vars) -> Iterator[Any]:
            for k in key(v, env):
                for b in base(v, env):
                    yield _index(b, k)

        return index

    def _c_slice(self, node: Node, scope: frozenset[str]) -> Fn:
        base = self.compile(node[1], scope)
        lo = self.compile(node[2], scope) if node[2] is not None else None
        hi = self.compile(node[3], scope) if node[3] is not None else None

        def slice_(v: Any, env: Vars) -> Iterator[Any]:
            his = list(hi(v, env)) if hi is not None else [None]
            los = list(lo(v, env)) if lo is not None else [None]
            for h in his:
                for lval in los:
                    for b in base(v, env):
                        yield _slice(b, lval, h)

        return slice_

    def _c_iter(self, node: Node, scope: frozenset[str]) -> Fn:
        base = self.compile(node[1], scope)

        def iterate(v: Any, env: Vars) -> Iterator[Any]:
            for b in base(v, env):
                yield from _iterate(b)

        return iterate

    def _c_pipe(self, node: Node, scope: frozenset[str]) -> Fn:
        lhs = self.compile(node[1], scope)
        rhs = self.compile(node[2], scope)

        def pipe(v: Any, env: Vars) -> Iterator[Any]:
            for x in lhs(v, env):
                yield from rhs(x, env)

        return pipe

    def _c_comma(self, node: Node, scope: frozenset[str]) -> Fn:
        lhs = self.compile(node[1], scope)
        rhs = self.compile(node[2], scope)

        def comma(v: Any, env: Vars) -> Iterator[Any]:
            yield from lhs(v, env)
            yield from rhs(v, env)

        return comma

    def _c_alt(self, node: Node, scope: frozenset[str]) -> Fn:
        lhs = self.compile(node[1], scope)
        rhs = self.compile(node[2], scope)

        def alt(v: Any, env: Vars) -> Iterator[Any]:
            found = False
            try:
                for x in lhs(v, env):
                    if jq_truthy(x):
                        found = True
                        yield x
            except _RuntimeError:
                pass
            if not found:
                yield from rhs(v, env)

        return alt

    def _c_and(self, node: Node, scope: frozenset[str]) -> Fn:
        lhs = self.compile(node[1], scope)
        rhs = self.compile(node[2], scope)

        def and_(v: Any, env: Vars) -> Iterator[Any]:
            for a in lhs(v, env):
                if not jq_truthy(a):
                    yield False
                    continue
                for b in rhs(v, env):
                    yield jq_truthy(b)

        return and_

    def _c_or(self, node: Node, scope: frozenset[str]) -> Fn:
        lhs = self.compile(node[1], scope)
        rhs = self.compile(node[2], scope)

        def or_(v: Any, env: Vars) -> Iterator[Any]:
            for a in lhs(v, env):
                if jq_truthy(a):
                    yield True
                    continue
                for b in rhs(v, env):
                    yield jq_truthy(b)

        return or_

    def _c_cmp(self, node: Node, scope: frozenset[str]) -> Fn:
        op = node[1]
        lhs = self.compile(node[2], scope)
        if node[3][0] == "lit":
            lit = node[3][1]
            if op == "==" and isinstance(lit, str):
                # hot path: `.type == "Ready"`
                def eq_str(v: Any, env: Vars) -> Iterator[Any]:
                    for a in lhs(v, env):
                        yield a == lit if isinstance(a, str) else False

                return eq_str

            def cmp_lit(v: Any, env: Vars) -> Iterator[Any]:
                for a in lhs(v, env):
                    yield _compare(op, a, lit)

            return cmp_lit
        rhs = self.compile(node[3], scope)

        def cmp(v: Any, env: Vars) -> Iterator[Any]:
            for b in rhs(v, env):
                for a in lhs(v, env):
                    yield _compare(op, a, b)

        return cmp

    def _c_arith(self, node: Node, scope: frozenset[str]) -> Fn:
        op = node[1]
        lhs = self.compile(node[2], scope)
        rhs = self.compile(node[3], scope)

        def arith(v: Any, env: Vars) -> Iterator[Any]:
            for b in rhs(v, env):
                for a in lhs(v, env):
                    yield _arith(op, a, b)

        return arith

    def _c_neg(self, node: Node, scope: frozenset[str]) -> Fn:
        inner = self.compile(node[1], scope)

        def neg(v: Any, env: Vars) -> Iterator[Any]:
            for a in inner(v, env):
                if not _num(a):
                    raise _RuntimeError(f"{_desc(a)} cannot be negated")
                yield -a

        return neg

    def _c_array(self, node: Node, scope: frozenset[str]) -> Fn:
        if node[1] is None:
            return lambda v, env: ([],)
        inner = self.compile(node[1], scope)
        return lambda v, env: (list(inner(v, env)),)

    def _c_object(self, node: Node, scope: frozenset[str]) -> Fn:
        entries = [(self.compile(k, scope), self.compile(val, scope)) for k, val in node[1]]

        def build(v: Any, env: Vars) -> Iterator[Any]:
            partials: list[dict[str, Any]] = [{}]
            for kf, vf in entries:
                nxt: list[dict[str, Any]] = []
                for part in partials:
                    for k in kf(v, env):
                        if not isinstance(k, str):
                            raise _RuntimeError(f"object keys must be strings: {_desc(k)}")
                        for val in vf(v, env):
                            d = dict(part)
                            d[k] = val
                            nxt.append(d)
                partials = nxt
            yield from partials

        return build

    def _c_interp(self, node: Node, scope: frozenset[str]) -> Fn:
        parts: list[str | Fn] = [p if isinstance(p, str) else self.compile(p, scope) for p in node[1]]

        def interp(v: Any, env: Vars) -> Iterator[Any]:
            results = [""]
            for p in parts:
                if isinstance(p, str):
                    results = [r + p for r in results]
                else:
                    results = [r + _tostring(x) for x in p(v, env) for r in results]
                _check_str_size(sum(len(r) for r in results))
            yield from results

        return interp

    def _c_var(self, node: Node, scope: frozenset[str]) -> Fn:
        name = node[1]
        if name == "ENV":
            return lambda v, env: ({},)
        if name == "__loc__":
            return lambda v, env: ({"file": "<stdin>", "line": 1},)
        if name not in scope:
            raise JQError(f"variable not defined: ${name}")
        return lambda v, env: (env[name],)

    def _c_bind(self, node: Node, scope: frozenset[str]) -> Fn:
        source = self.compile(node[1], scope)
        name = node[2]
        body = self.compile(node[3], scope | {name})

        def bind(v: Any, env: Vars) -> Iterator[Any]:
            for x in source(v, env):
                env2 = dict(env)
                env2[name] = x
                yield from body(v, env2)

        return bind

    def _c_if(self, node: Node, scope: frozenset[str]) -> Fn:
        cond = self.compile(node[1], scope)
        then = self.compile(node[2], scope)
        other = self.compile(node[3], scope)

        def if_(v: Any, env: Vars) -> Iterator[Any]:
            for c in cond(v, env):
                yield from (then if jq_truthy(c) else other)(v, env)

        return if_

    def _c_try(self, node: Node, scope: frozenset[str]) -> Fn:
        body = self.compile(node[1], scope)
        handler = self.compile(node[2], scope) if node[2] is not None else None

        def try_(v: Any, env: Vars) -> Iterator[Any]:
            try:
                yield from body(v, env)
            except _RuntimeError as e:
                if handler is not None:
                    yield from handler(e.value, env)

        return try_

    def _c_reduce(self, node: Node, scope: frozenset[str]) -> Fn:
        source = self.compile(node[1], scope)
        name = node[2]
        init = self.compile(node[3], scope)
        update = self.compile(node[4], scope | {name})

        def reduce_(v: Any, env: Vars) -> Iterator[Any]:
            for acc in init(v, env):
                for x in source(v, env):
                    env2 = dict(env)
                    env2[name] = x
                    out = list(update(acc, env2))
                    acc = out[-1] if out else None
                yield acc

        return reduce_

    # ---- function calls
    def _c_call(self, node: Node, scope: frozenset[str]) -> Fn:
        name, args, pos = node[1], node[2], node[3]
        arity = len(args)
        if arity == 0:
            if name in _SIMPLE0:
                f0 = _SIMPLE0[name]
                return lambda v, env: (f0(v),)
            if name in _TYPE_FILTERS:
                wanted = _TYPE_FILTERS[name]
                return lambda v, env: (v,) if jq_type(v) in wanted else ()
            if name == "empty":
                return lambda v, env: ()
            if name == "error":
                return lambda v, env: _raise_value(v)
            if name == "recurse":
                return lambda v, env: _recurse_all(v)
            if name in ("first", "last"):
                idx = 0 if name == "first" else -1
                return lambda v, env: (_index(v, idx),)
            if name == "input" or name == "inputs" or name == "now" or name == "env" or name == "halt":
                raise JQError(f"function {name}/0 is not supported (no I/O) at {pos}")
            if name == "paths":
                return self._paths()
        cargs = [self.compile(a, scope) for a in args]
        builder = getattr(self, f"_f_{name}_{arity}", None)
        if builder is None:
            raise JQError(f"function not defined: {name}/{arity} at {pos}")
        fn: Fn = builder(*cargs)
        return fn

    @staticmethod
    def _paths() -> Fn:
        def paths(v: Any, env: Vars) -> Iterator[Any]:
            stack: list[tuple[list[Any], Any]] = [([], v)]
            while stack:
                path, x = stack.pop()
                if path:
                    yield path
                if isinstance(x, list):
                    stack.extend(([*path, i], x[i]) for i in reversed(range(len(x))))
                elif isinstance(x, dict):
                    stack.extend(([*path, k], x[k]) for k in sorted(x, reverse=True))

        return paths

    @staticmethod
    def _map1(f: Callable[[Any, Any], Any]) -> Callable[[Fn], Fn]:
        """A builtin of arity 1 whose argument is evaluated against the input."""

        def build(a: Fn) -> Fn:
            def call(v: Any, env: Vars) -> Iterator[Any]:
                for x in a(v, env):
                    yield f(v, x)

            return call

        return build

    def _f_select_1(self, f: Fn) -> Fn:
        def select(v: Any, env: Vars) -> Iterator[Any]:
            for c in f(v, env):
                if jq_truthy(c):
                    yield v

        return select

    def _f_map_1(self, f: Fn) -> Fn:
        return lambda v, env: ([y for x in _iterate(v) for y in f(x, env)],)

    def _f_map_values_1(self, f: Fn) -> Fn:
        def map_values(v: Any, env: Vars) -> Iterable[Any]:
            if isinstance(v, dict):
                out = {}
                for k in v:
                    for y in f(v[k], env):
                        out[k] = y
                        break
                return (out,)
            if isinstance(v, list):
                return ([y for x in v for y in list(f(x, env))[:1]],)
            raise _RuntimeError(f"cannot iterate over: {_desc(v)}")

        return map_values

    def _f_recurse_1(self, f: Fn) -> Fn:
        def recurse(v: Any, env: Vars) -> Iterator[Any]:
            stack = [v]
            count = 0
            while stack:
                x = stack.pop()
                count += 1
                if count > _MAX_RANGE:
                    raise _RuntimeError("recursion produced too many values")
                yield x
                stack.extend(reversed(list(f(x, env))))

        return recurse

    def _f_has_1(self, f: Fn) -> Fn:
        return self._map1(_has)(f)

    def _f_in_1(self, f: Fn) -> Fn:
        def in_(v: Any, env: Vars) -> Iterator[Any]:
            for container in f(v, env):
                yield _has(container, v)

        return in_

    def _f_inside_1(self, f: Fn) -> Fn:
        return self._map1(lambda v, b: _contains(b, v))(f)

    def _f_contains_1(self, f: Fn) -> Fn:
        return self._map1(_contains)(f)

    def _f_startswith_1(self, f: Fn) -> Fn:
        def startswith(v: Any, s: Any) -> bool:
            if isinstance(v, str) and isinstance(s, str):
                return v.startswith(s)
            raise _RuntimeError("startswith() requires string inputs")

        return self._map1(startswith)(f)

    def _f_endswith_1(self, f: Fn) -> Fn:
        def endswith(v: Any, s: Any) -> bool:
            if isinstance(v, str) and isinstance(s, str):
                return v.endswith(s)
            raise _RuntimeError("endswith() requires string inputs")

        return self._map1(endswith)(f)

    def _f_ltrimstr_1(self, f: Fn) -> Fn:
        return self._map1(
            lambda v, s: v[len(s):] if isinstance(v, str) and isinstance(s, str) and v.startswith(s) else v
        )(f)

    def _f_rtrimstr_1(self, f: Fn) -> Fn:
        return self._map1(
            lambda v, s: v[: len(v) - len(s)]
            if isinstance(v, str) and isinstance(s, str) and s and v.endswith(s)
            else v
        )(f)

    def _f_split_1(self, f: Fn) -> Fn:
        def split(v: Any, s: Any) -> list[str]:
            if isinstance(v, str) and isinstance(s, str):
                return _split(v, s)
            raise _RuntimeError("split input and separator must be strings")

        return self._map1(split)(f)

    def _f_join_1(self, f: Fn) -> Fn:
        def join(v: Any, sep: Any) -> str:
            if not isinstance(sep, str):
                raise _RuntimeError(f"{_desc(sep)} cannot be used as a separator")
            parts = []
            for x in _iterate(v):
                if x is None:
                    parts.append("")
                elif isinstance(x, str):
                    parts.append(x)
                elif _num(x) or isinstance(x, bool):
                    parts.append(to_json(x))
                else:
                    raise _RuntimeError(f"cannot join with {_desc(x)}")
            out = sep.join(parts)
            _check_str_size(len(out))
            return out

        return self._map1(join)(f)

    def _f_test_1(self, f: Fn) -> Fn:
        return self._map1(lambda v, r: _test(v, r, None))(f)

    def _f_test_2(self, f: Fn, g: Fn) -> Fn:
        def test(v: Any, env: Vars) -> Iterator[Any]:
            for flags in g(v, env):
                for r in f(v, env):
                    yield _test(v, r, flags)

        return test

    def _f_index_1(self, f: Fn) -> Fn:
        def index(v: Any, s: Any) -> Any:
            if isinstance(v, str) and isinstance(s, str):
                if not s:
                    return None
                i = v.find(s)
                return i if i >= 0 else None
            if v is None:
                return None
            found = _index(v, [s] if not isinstance(s, list) else s)
            return found[0] if found else None

        return self._map1(index)(f)

    def _f_getpath_1(self, f: Fn) -> Fn:
        return self._map1(_getpath)(f)

    def _f_error_1(self, f: Fn) -> Fn:
        def error(v: Any, env: Vars) -> Iterator[Any]:
            for m in f(v, env):
                raise _RuntimeError(m)
            return
            yield  # pragma: no cover

        return error

    def _f_any_1(self, f: Fn) -> Fn:
        return lambda v, env: (any(jq_truthy(y) for x in _iterate(v) for y in f(x, env)),)

    def _f_all_1(self, f: Fn) -> Fn:
        return lambda v, env: (all(jq_truthy(y) for x in _iterate(v) for y in f(x, env)),)

    def _f_any_2(self, g: Fn, f: Fn) -> Fn:
        return lambda v, env: (any(jq_truthy(y) for x in g(v, env) for y in f(x, env)),)

    def _f_all_2(self, g: Fn, f: Fn) -> Fn:
        return lambda v, env: (all(jq_truthy(y) for x in g(v, env) for y in f(x, env)),)

    def _f_isempty_1(self, f: Fn) -> Fn:
        def isempty(v: Any, env: Vars) -> Iterable[Any]:
            for _ in f(v, env):
                return (False,)
            return (True,)

        return isempty

    def _f_first_1(self, f: Fn) -> Fn:
        def first(v: Any, env: Vars) -> Iterable[Any]:
            for x in f(v, env):
                return (x,)
            return ()

        return first

    def _f_last_1(self, f: Fn) -> Fn:
        def last(v: Any, env: Vars) -> Iterable[Any]:
            out = list(f(v, env))
            return (out[-1],) if out else ()

        return last

    def _f_limit_2(self, n: Fn, f: Fn) -> Fn:
        def limit(v: Any, env: Vars) -> Iterator[Any]:
            for count in n(v, env):
                if not _num(count):
                    raise _RuntimeError("limit count must be a number")
                if count <= 0:
                    continue
                i = 0
                for x in f(v, env):
                    yield x
                    i += 1
                    if i >= count:
                        break

        return limit

    def _f_nth_1(self, n: Fn) -> Fn:
        return self._map1(lambda v, i: _index(v, i))(n)

    def _f_range_1(self, n: Fn) -> Fn:
        return self._f_range_2(lambda v, env: (0,), n)

    def _f_range_2(self, lo: Fn, hi: Fn) -> Fn:
        def range_(v: Any, env: Vars) -> Iterator[Any]:
            for a in lo(v, env):
                for b in hi(v, env):
                    if not _num(a) or not _num(b):
                        raise _RuntimeError("range bounds must be numbers")
                    if math.isinf(b) or math.isnan(b) or b - a > _MAX_RANGE:
                        raise _RuntimeError("range is too large")
                    x = a
                    while x < b:
                        yield x
                        x += 1

        return range_

    def _f_with_entries_1(self, f: Fn) -> Fn:
        def with_entries(v: Any, env: Vars) -> Iterable[Any]:
            if not isinstance(v, dict):
                raise _RuntimeError(f"{_desc(v)} has no keys")
            entries = [y for k in sorted(v) for y in f({"key": k, "value": v[k]}, env)]
            return (_from_entries(entries),)

        return with_entries

    def _by(self, f: Fn, fold: Callable[[list[Any], list[Any]], Any]) -> Fn:
        def by(v: Any, env: Vars) -> Iterable[Any]:
            if not isinstance(v, list):
                raise _RuntimeError(f"{_desc(v)} cannot be sorted, as it is not an array")
            keys = [list(f(x, env)) for x in v]
            return (fold(v, keys),)

        return by

    def _f_sort_by_1(self, f: Fn) -> Fn:
        return self._by(f, lambda v, keys: _sorted(v, keys))

    def _f_group_by_1(self, f: Fn) -> Fn:
        return self._by(f, _group)

    def _f_unique_by_1(self, f: Fn) -> Fn:
        return self._by(f, _unique)

    def _f_min_by_1(self, f: Fn) -> Fn:
        return self._by(f, lambda v, keys: _sorted(v, keys)[0] if v else None)

    def _f_max_by_1(self, f: Fn) -> Fn:
        return self._by(f, lambda v, keys: _sorted(v, keys)[-1] if v else None)

    def _f_flatten_1(self, f: Fn) -> Fn:
        def flatten(v: Any, depth: Any) -> Any:
            if not _num(depth) or depth < 0:
                raise _RuntimeError("flatten depth must not be negative")
            return _flatten(v, depth)

        return self._map1(flatten)(f)

    def _f_add_1(self, f: Fn) -> Fn:
        return lambda v, env: (_add_all(list(f(v, env))),)

    def _f_IN_1(self, f: Fn) -> Fn:
        def in_(v: Any, env: Vars) -> Iterable[Any]:
            return (any(jq_cmp(v, x) == 0 for x in f(v, env)),)

        return in_

    def _f_IN_2(self, src: Fn, f: Fn) -> Fn:
        def in2(v: Any, env: Vars) -> Iterable[Any]:
            wanted = list(f(v, env))
            return (any(jq_cmp(x, w) == 0 for x in src(v, env) for w in wanted),)

        return in2

    def _f_splits_1(self, f: Fn) -> Fn:
        def splits(v: Any, env: Vars) -> Iterator[Any]:
            for r in f(v, env):
                if not isinstance(v, str):
                    raise _RuntimeError(f"{_desc(v)} cannot be matched, as it is not a string")
                yield from _regex(r, None).split(v)

        return splits


def _flatten(v: Any, depth: float) -> list[Any]:
    if not isinstance(v, list):
        raise _RuntimeError(f"cannot flatten {_desc(v)}")
    out: list[Any] = []
    for x in v:
        if isinstance(x, list) and depth > 0:
            out.extend(_flatten(x, depth - 1))
        else:
            out.append(x)
    return out


def _has(v: Any, k: Any) -> bool:
    if isinstance(v, dict) and isinstance(k, str):
        return k in v
    if isinstance(v, list) and _num(k):
        return bool(0 <= k < len(v))
    raise _RuntimeError(f"cannot check whether {jq_type(v)} has a {jq_type(k)} key")


def _raise_value(v: Any) -> Iterable[Any]:
    raise _RuntimeError(v)


def _test(v: Any, r: Any, flags: Any) -> bool:
    if not isinstance(v, str):
        raise _RuntimeError(f"{_desc(v)} cannot be matched, as it is not a string")
    return _regex(r, flags).search(v) is not None


# --------------------------------------------------------------------------- public API


class Query:
    """A compiled jq program; :meth:`run` returns every value of its output stream."""

    __slots__ = ("_fn", "source")

    def __init__(self, source: str, fn: Fn) -> None:
        self.source = source
        self._fn = fn

    def run(self, obj: Any) -> list[Any]:
        """All outputs for input ``obj``; a runtime error raises :class:`JQError`."""
        try:
            out = self._fn(obj, {})
            return out if isinstance(out, list) else list(out)
        except JQError:
            raise
        except RecursionError:
            raise JQError("evaluation nested too deeply") from None
        except MemoryError:
            raise JQError("evaluation ran out of memory") from None
        except Exception as e:  # defensive: nothing but JQError may escape
            raise JQError(f"evaluation failed: {type(e).__name__}: {e}") from None

    def __repr__(self) -> str:
        return f"Query({self.source!r})"


def compile_jq(expr: str) -> Query:
    """Parse and compile ``expr``; syntax errors and undefined names raise :class:`JQError`."""
    if not isinstance(expr, str):
        raise JQError(f"expression must be a string, got {type(expr).__name__}")
    try:
        node = _Parser(expr).parse_program()
        fn = _Compiler().compile(node, frozenset())
    except JQError:
        raise
    except RecursionError:
        raise JQError("expression nested too deeply") from None
    except Exception as e:  # defensive: nothing but JQError may escape
        raise JQError(f"cannot compile expression: {type(e).__name__}: {e}") from None
    return Query(expr, fn)
