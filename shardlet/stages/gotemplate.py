"""Go's ``text/template`` in pure Python, faithful enough to run kwok's Stage templates.

A template is parsed once (a port of Go's ``text/template/parse`` lexer and parser, with the same
error conditions) and compiled into a tree of small closures; executing it walks those closures
with no parsing, no regular expressions and no per-call allocation beyond the output list.

Value model.  Executions see plain JSON-like Python data, as kwok does: kwok JSON-encodes the
object and decodes it with ``json.Decoder.UseNumber()``, so every number that comes *out of the
object* is a ``json.Number`` -- a Go *string* kind that prints as its literal text, is always
truthy (``"0"`` is a non-empty string), compares equal to the string ``"3"`` and is an error to
compare with the integer ``3``.  The engine reproduces that: an ``int``/``float`` found inside a
``dict``/``list`` is seen by the template as a :class:`JSONNumber`.  Values produced by the
template itself (literals, ``len``, function results) keep their Go types (``int``, ``float64``).

Go values map to Python as: invalid/"no value" -> :data:`NOVALUE`; nil interface -> ``None``;
``bool``; ``int``; ``float64`` -> ``float``; ``string`` -> ``str``; ``json.Number`` ->
:class:`JSONNumber`; ``[]any`` -> ``list``/``tuple``; ``map[string]any`` -> ``dict``.
Functions (builtins and user functions) receive ``None`` for nil or missing values.

Only :class:`TemplateError` escapes :func:`parse` and :meth:`Template.execute`.
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, NoReturn

__all__ = [
    "BUILTINS",
    "NOVALUE",
    "GoInt",
    "JSONNumber",
    "Template",
    "TemplateError",
    "format_float",
    "go_quote",
    "json_float",
    "parse",
    "sprint",
    "sprintf",
]

MAX_EXEC_DEPTH = 100  # nested {{template}} calls (Go: 100000; Python's stack is far smaller)
# One Stage object must not stall a shard's event loop or exhaust its memory (Go's text/template
# has neither limit): range iterations per execution, {{template}} calls included, and output size.
# An object the apiserver would store is at most 1.5 MiB, so no useful render comes near either.
MAX_RANGE_STEPS = 100_000
MAX_OUTPUT = 4 << 20
MAX_PAREN_DEPTH = 100  # nested parenthesised pipelines (Go: 10000)
_CODEGEN = True  # compile statements to Python source (False: closure tree only; for tests)


class TemplateError(ValueError):
    """The only exception :func:`parse` and :meth:`Template.execute` raise; a one-line message."""


# --------------------------------------------------------------------------------------------
# Value model
# --------------------------------------------------------------------------------------------


class _NoValue:
    """Go's invalid ``reflect.Value``: what a missing map key evaluates to."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "NOVALUE"


NOVALUE: Any = _NoValue()


class _Missing:
    """Marks "no final value" in a pipeline (Go's ``missingVal``)."""

    __slots__ = ()


_MISSING: Any = _Missing()


class _Unset:
    __slots__ = ()


_UNSET: Any = _Unset()


class JSONNumber(str):
    """Go's ``encoding/json.Number``: a JSON number kept as its literal text (a string kind)."""

    __slots__ = ()


class GoInt(int):
    """An ``int`` that stays a Go ``int`` when stored in a container (see :func:`_cv`).

    Plain ints inside dicts/lists are taken to be object data (``json.Number``); functions that
    build containers from template values (sprig's ``list``, ``dict``...) wrap ints in this.
    """

    __slots__ = ()


def _num(v: int | float) -> JSONNumber:
    if type(v) is float:
        return JSONNumber(json_float(v))
    return JSONNumber(int.__repr__(v))


def _cv(v: Any) -> Any:
    """A value taken out of a container, as the template sees it."""
    t = type(v)
    if t is int or t is float:
        return _num(v)
    return v


def _gotype(v: Any) -> str:
    """Go's name for the dynamic type of ``v`` (for error messages and ``%T``)."""
    if v is None or v is NOVALUE:
        return "<nil>"
    t = type(v)
    if t is bool:
        return "bool"
    if isinstance(v, JSONNumber):
        return "json.Number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, complex):
        return "complex128"
    if isinstance(v, (bytes, bytearray)):
        return "[]uint8"
    if isinstance(v, (list, tuple)):
        return "[]interface {}"
    if isinstance(v, Mapping):
        return "map[string]interface {}"
    if callable(v):
        return "func(...) interface {}"
    return t.__name__


# --------------------------------------------------------------------------------------------
# strconv: float formatting and quoting
# --------------------------------------------------------------------------------------------


def _digits_shortest(a: float) -> tuple[str, int]:
    """Shortest round-trip decimal digits of ``a >= 0``: value = 0.DIGITS * 10**dp."""
    if a == 0:
        return "", 0
    r = repr(a)
    e = 0
    if "e" in r:
        r, es = r.split("e")
        e = int(es)
    ip, _, fp = r.partition(".")
    allds = ip + fp
    stripped = allds.lstrip("0")
    dp = len(ip) - (len(allds) - len(stripped)) + e
    return stripped.rstrip("0"), dp


def _digits_from_e(s: str) -> tuple[str, int]:
    m, _, es = s.partition("e")
    ds = m.replace(".", "").rstrip("0")
    if not ds:
        return "", 0
    return ds, int(es) + 1


def _digits_sig(a: float, n: int) -> tuple[str, int]:
    """``a`` correctly rounded to ``n`` significant digits."""
    if a == 0:
        return "", 0
    return _digits_from_e(f"{a:.{n - 1}e}")


def _digits_fixed(a: float, p: int) -> tuple[str, int]:
    """``a`` correctly rounded to ``p`` digits after the decimal point."""
    if a == 0:
        return "", 0
    s = f"{a:.{p}f}"
    ip, _, fp = s.partition(".")
    allds = ip + fp
    stripped = allds.lstrip("0")
    if not stripped.rstrip("0"):
        return "", 0
    dp = len(ip) - (len(allds) - len(stripped))
    return stripped.rstrip("0"), dp


def _fmt_e(neg: bool, ds: str, dp: int, prec: int, ch: str) -> str:
    parts = ["-" if neg else "", ds[0] if ds else "0"]
    if prec > 0:
        parts.append(".")
        m = min(len(ds), prec + 1)
        i = 1
        if i < m:
            parts.append(ds[i:m])
            i = m
        if prec + 1 > i:
            parts.append("0" * (prec + 1 - i))
    exp = dp - 1 if ds else 0
    sign = "+"
    if exp < 0:
        sign = "-"
        exp = -exp
    parts.append(ch)
    parts.append(sign)
    parts.append(f"{exp:02d}")
    return "".join(parts)


def _fmt_f(neg: bool, ds: str, dp: int, prec: int) -> str:
    parts = ["-" if neg else ""]
    if dp > 0:
        m = min(len(ds), dp)
        parts.append(ds[:m])
        if dp > m:
            parts.append("0" * (dp - m))
    else:
        parts.append("0")
    if prec > 0:
        parts.append(".")
        frac = []
        for i in range(1, prec + 1):
            j = dp + i - 1
            frac.append(ds[j] if 0 <= j < len(ds) else "0")
        parts.append("".join(frac))
    return "".join(parts)


def _fmt_hexfloat(v: float, prec: int, upper: bool) -> str:
    # Go's %x for floats: -0x1.8p+01 (shortest unless a precision is given).
    neg = math.copysign(1.0, v) < 0
    a = abs(v)
    if a == 0:
        mant, exp = "0", 0
        frac = ""
    else:
        m, e = math.frexp(a)  # a = m * 2**e, 0.5 <= m < 1
        exp = e - 1
        bits = int(m * (1 << 53))  # 53-bit mantissa with the leading 1
        mant = "1"
        frac_bits = bits - (1 << 52)
        frac = f"{frac_bits:013x}"
        if prec >= 0 and prec < 13:
            shift = (13 - prec) * 4
            full = frac_bits
            q, r = divmod(full, 1 << shift)
            half = 1 << (shift - 1)
            if r > half or (r == half and q & 1):
                q += 1
            if q >> (prec * 4):
                mant = "2"
                q = 0
            frac = f"{q:0{prec}x}" if prec > 0 else ""
        else:
            frac = frac.rstrip("0")
            if prec > 13:
                frac = frac.ljust(prec, "0")
        if mant == "2":
            mant = "1"
            exp += 1
    if prec > 0 and len(frac) < prec:
        frac = frac.ljust(prec, "0")
    s = ("-" if neg else "") + "0x" + mant + ("." + frac if frac else "") + "p" + f"{exp:+03d}"
    return s.upper() if upper else s


def format_float(v: float, fmt: str = "g", prec: int = -1) -> str:
    """Go's ``strconv.FormatFloat(v, fmt, prec, 64)`` for fmt in ``eEfgGxXb``."""
    if v != v:
        return "NaN"
    if v in (math.inf, -math.inf):
        return "+Inf" if v > 0 else "-Inf"
    if fmt in "xX":
        return _fmt_hexfloat(v, prec, fmt == "X")
    neg = math.copysign(1.0, v) < 0
    a = -v if neg else v
    if fmt == "b":
        if a == 0:
            return ("-" if neg else "") + "0p-1074"
        m, e = math.frexp(a)
        mant = int(m * (1 << 53))
        e -= 53
        if e < -1074:
            mant >>= -1074 - e
            e = -1074
        return ("-" if neg else "") + f"{mant}p{e:+d}"
    shortest = prec < 0
    if shortest:
        ds, dp = _digits_shortest(a)
        nd = len(ds)
        if fmt in "eE":
            prec = nd - 1
        elif fmt == "f":
            prec = max(nd - dp, 0)
        else:
            prec = nd
    elif fmt in "eE":
        ds, dp = _digits_sig(a, prec + 1)
    elif fmt == "f":
        ds, dp = _digits_fixed(a, prec)
    else:
        if prec == 0:
            prec = 1
        ds, dp = _digits_sig(a, prec)
    if fmt in "eE":
        return _fmt_e(neg, ds, dp, prec, fmt)
    if fmt == "f":
        return _fmt_f(neg, ds, dp, prec)
    nd = len(ds)
    eprec = prec
    if eprec > nd and nd >= dp:
        eprec = nd
    if shortest:
        eprec = 6
    exp = dp - 1
    if exp < -4 or exp >= eprec:
        if prec > nd:
            prec = nd
        return _fmt_e(neg, ds, dp, prec - 1, "e" if fmt == "g" else "E")
    if prec > dp:
        prec = nd
    return _fmt_f(neg, ds, dp, max(prec - dp, 0))


def json_float(v: float) -> str:
    """How Go's ``encoding/json`` writes a float64 (ES6 number formatting)."""
    if v != v or v in (math.inf, -math.inf):
        return format_float(v)
    a = abs(v)
    if a != 0 and (a < 1e-6 or a >= 1e21):
        s = format_float(v, "e", -1)
        n = len(s)
        if n >= 4 and s[n - 4] == "e" and s[n - 3] == "-" and s[n - 2] == "0":
            s = s[: n - 2] + s[n - 1]
        return s
    return format_float(v, "f", -1)


_SIMPLE_ESC = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def _escape_rune(ch: str, quote: str, ascii_only: bool) -> str:
    if ch == quote or ch == "\\":
        return "\\" + ch
    o = ord(ch)
    if ascii_only:
        if o < 0x80 and ch.isprintable():
            return ch
    elif ch.isprintable():
        return ch
    esc = _SIMPLE_ESC.get(ch)
    if esc is not None:
        return esc
    if o < 0x20 or o == 0x7F:
        return f"\\x{o:02x}"
    if 0xD800 <= o <= 0xDFFF:
        o = 0xFFFD
    if o < 0x10000:
        return f"\\u{o:04x}"
    return f"\\U{o:08x}"


def go_quote(s: str, ascii_only: bool = False, quote: str = '"') -> str:
    """Go's ``strconv.Quote`` (or ``QuoteToASCII``, or ``QuoteRune`` with ``quote="'"``)."""
    if s.isascii() and s.isprintable() and quote not in s and "\\" not in s:
        return quote + s + quote
    return quote + "".join([_escape_rune(c, quote, ascii_only) for c in s]) + quote


def _can_backquote(s: str) -> bool:
    for c in s:
        if c == "`" or c == "\ufeff":
            return False
        if (ord(c) < 0x20 and c != "\t") or c == "\x7f":
            return False
    return True


def _fmt_U(r: int) -> str:
    """Go's ``%#U``."""
    if r < 0:
        return "U+%X" % (r & 0xFFFFFFFFFFFFFFFF)
    s = f"U+{r:04X}"
    if r <= 0x10FFFF and not 0xD800 <= r <= 0xDFFF and chr(r).isprintable():
        s += " '" + chr(r) + "'"
    return s


# --------------------------------------------------------------------------------------------
# fmt: Print, Sprintf
# --------------------------------------------------------------------------------------------

_LDIGITS = "0123456789abcdefx"
_UDIGITS = "0123456789ABCDEFX"


class _PP:
    """A port of Go's ``fmt`` printer state (``pp`` + ``fmt``) over the Python value model."""

    __slots__ = (
        "buf",
        "erroring",
        "minus",
        "plus",
        "plus_v",
        "prec",
        "prec_present",
        "sharp",
        "sharp_v",
        "space",
        "wid",
        "wid_present",
        "zero",
    )

    def __init__(self) -> None:
        self.buf: list[str] = []
        self.erroring = False
        self.clearflags()

    def clearflags(self) -> None:
        self.wid = 0
        self.prec = 0
        self.wid_present = False
        self.prec_present = False
        self.minus = False
        self.plus = False
        self.sharp = False
        self.space = False
        self.zero = False
        self.plus_v = False
        self.sharp_v = False

    # -- padding ------------------------------------------------------------------------------
    def write_padding(self, n: int) -> None:
        if n <= 0:
            return
        self.buf.append(("0" if self.zero and not self.minus else " ") * n)

    def pad(self, s: str) -> None:
        if not self.wid_present or self.wid == 0:
            self.buf.append(s)
            return
        width = self.wid - len(s)
        if not self.minus:
            self.write_padding(width)
            self.buf.append(s)
        else:
            self.buf.append(s)
            self.write_padding(width)

    # -- scalars ------------------------------------------------------------------------------
    def fmt_bool(self, v: bool, verb: str, arg: Any) -> None:
        if verb in "tv":
            self.pad("true" if v else "false")
        else:
            self.bad_verb(verb, arg)

    def fmt_integer_base(self, v: int, base: int, verb: str, digits: str) -> None:
        negative = v < 0
        u = -v if negative else v
        prec = 0
        if self.prec_present:
            prec = self.prec
            if prec == 0 and u == 0:
                old = self.zero
                self.zero = False
                self.write_padding(self.wid)
                self.zero = old
                return
        elif self.zero and not self.minus and self.wid_present:
            prec = self.wid
            if negative or self.plus or self.space:
                prec -= 1
        if base == 10:
            s = str(u)
        elif base == 16:
            s = format(u, "x") if digits is _LDIGITS else format(u, "X")
        elif base == 8:
            s = format(u, "o")
        else:
            s = format(u, "b")
        if len(s) < prec:
            s = "0" * (prec - len(s)) + s
        if self.sharp:
            if base == 2:
                s = "0b" + s
            elif base == 8:
                if s[0] != "0":
                    s = "0" + s
            elif base == 16:
                s = "0" + digits[16] + s
        if verb == "O":
            s = "0o" + s
        if negative:
            s = "-" + s
        elif self.plus:
            s = "+" + s
        elif self.space:
            s = " " + s
        old = self.zero
        self.zero = False
        self.pad(s)
        self.zero = old

    def fmt_integer(self, v: int, verb: str, arg: Any) -> None:
        if verb == "v":
            self.fmt_integer_base(v, 10, verb, _LDIGITS)
        elif verb == "d":
            self.fmt_integer_base(v, 10, verb, _LDIGITS)
        elif verb == "b":
            self.fmt_integer_base(v, 2, verb, _LDIGITS)
        elif verb in "oO":
            self.fmt_integer_base(v, 8, verb, _LDIGITS)
        elif verb == "x":
            self.fmt_integer_base(v, 16, verb, _LDIGITS)
        elif verb == "X":
            self.fmt_integer_base(v, 16, verb, _UDIGITS)
        elif verb == "c":
            self.pad(_rune_str(v))
        elif verb == "q":
            r = _rune_str(v)
            self.pad(go_quote(r, self.plus, "'"))
        elif verb == "U":
            self.fmt_unicode(v)
        else:
            self.bad_verb(verb, arg)

    def fmt_unicode(self, u: int) -> None:
        prec = 4
        if self.prec_present and self.prec > 4:
            prec = self.prec
        s = "U+" + ("%X" % (u & 0xFFFFFFFFFFFFFFFF)).rjust(prec, "0")
        if self.sharp and 0 <= u <= 0x10FFFF and not 0xD800 <= u <= 0xDFFF and chr(u).isprintable():
            s += " '" + chr(u) + "'"
        old = self.zero
        self.zero = False
        self.pad(s)
        self.zero = old

    def fmt_float_verb(self, v: float, verb: str, arg: Any) -> None:
        if verb == "v":
            self.fmt_float(v, "g", -1)
        elif verb in "bgGxX":
            self.fmt_float(v, verb, -1)
        elif verb in "feE":
            self.fmt_float(v, verb, 6)
        elif verb == "F":
            self.fmt_float(v, "f", 6)
        else:
            self.bad_verb(verb, arg)

    def fmt_float(self, v: float, verb: str, prec: int) -> None:
        if self.prec_present:
            prec = self.prec
        num = format_float(v, verb, prec)
        if num[0] not in "+-":
            num = "+" + num
        if self.space and num[0] == "+" and not self.plus:
            num = " " + num[1:]
        if num[1] in "IN":
            old = self.zero
            self.zero = False
            if num[1] == "N" and not self.space and not self.plus:
                num = num[1:]
            self.pad(num)
            self.zero = old
            return
        if self.sharp and verb != "b":
            digits = 0
            if verb in "vgGx":
                digits = prec
                if digits == -1:
                    digits = 6
            tail = ""
            body = num
            for i in range(1, len(num)):
                if num[i] in "pP" or (num[i] in "eE" and verb not in "xX"):
                    tail = num[i:]
                    body = num[:i]
                    break
            has_point = "." in body
            saw_nonzero = False
            for c in body[1:]:
                if c == ".":
                    continue
                if c != "0":
                    saw_nonzero = True
                if saw_nonzero:
                    digits -= 1
            if not has_point:
                if len(body) == 2 and body[1] == "0":
                    digits -= 1
                body += "."
            if digits > 0:
                body += "0" * digits
            num = body + tail
        if self.plus or num[0] != "+":
            if self.zero and not self.minus and self.wid_present and self.wid > len(num):
                self.buf.append(num[0])
                self.write_padding(self.wid - len(num))
                self.buf.append(num[1:])
                return
            self.pad(num)
            return
        self.pad(num[1:])

    def fmt_complex(self, v: complex, verb: str, arg: Any) -> None:
        if verb in "vbgGxXfFeE":
            old = self.plus
            self.buf.append("(")
            self.fmt_float_verb(v.real, verb, arg)
            self.plus = True
            self.fmt_float_verb(v.imag, verb, arg)
            self.buf.append("i)")
            self.plus = old
        else:
            self.bad_verb(verb, arg)

    def truncate(self, s: str) -> str:
        if self.prec_present and self.prec < len(s):
            return s[: self.prec]
        return s

    def fmt_sx(self, s: str, digits: str) -> None:
        b = s.encode("utf-8", "surrogatepass")
        length = len(b)
        if self.prec_present and self.prec < length:
            length = self.prec
        width = 2 * length
        if width > 0:
            if self.space:
                if self.sharp:
                    width *= 2
                width += length - 1
            elif self.sharp:
                width += 2
        else:
            if self.wid_present:
                self.write_padding(self.wid)
            return
        if self.wid_present and self.wid > width and not self.minus:
            self.write_padding(self.wid - width)
        out = []
        if self.sharp:
            out.append("0" + digits[16])
        for i in range(length):
            if self.space and i > 0:
                out.append(" ")
                if self.sharp:
                    out.append("0" + digits[16])
            c = b[i]
            out.append(digits[c >> 4] + digits[c & 0xF])
        self.buf.append("".join(out))
        if self.wid_present and self.wid > width and self.minus:
            self.write_padding(self.wid - width)

    def fmt_q(self, s: str) -> None:
        s = self.truncate(s)
        if self.sharp and _can_backquote(s):
            self.pad("`" + s + "`")
            return
        self.pad(go_quote(s, self.plus))

    def fmt_string(self, s: str, verb: str, arg: Any) -> None:
        if verb == "v":
            if self.sharp_v:
                self.fmt_q(s)
            else:
                self.pad(self.truncate(s))
        elif verb == "s":
            self.pad(self.truncate(s))
        elif verb == "x":
            self.fmt_sx(s, _LDIGITS)
        elif verb == "X":
            self.fmt_sx(s, _UDIGITS)
        elif verb == "q":
            self.fmt_q(s)
        else:
            self.bad_verb(verb, arg)

    def bad_verb(self, verb: str, arg: Any) -> None:
        self.erroring = True
        self.buf.append("%!" + verb + "(")
        if arg is None or arg is NOVALUE:
            self.buf.append("<nil>")
        else:
            self.buf.append(_gotype(arg) + "=")
            self.print_arg(arg, "v")
        self.buf.append(")")
        self.erroring = False

    # -- composite ----------------------------------------------------------------------------
    def print_arg(self, arg: Any, verb: str) -> None:
        if arg is None or arg is NOVALUE:
            if verb in "Tv":
                self.pad("<nil>")
            else:
                self.bad_verb(verb, None)
            return
        if verb == "T":
            self.pad(self.truncate(_gotype(arg)))
            return
        t = type(arg)
        if t is str:
            self.fmt_string(arg, verb, arg)
        elif t is bool:
            self.fmt_bool(arg, verb, arg)
        elif t is JSONNumber:
            if verb in "vsxXq" and not self.erroring:
                self.fmt_string(str(arg), verb, arg)
            else:
                self.fmt_string(str(arg), verb, arg)
        elif isinstance(arg, int):
            self.fmt_integer(int(arg), verb, arg)
        elif isinstance(arg, float):
            self.fmt_float_verb(arg, verb, arg)
        elif isinstance(arg, str):
            self.fmt_string(str(arg), verb, arg)
        elif isinstance(arg, complex):
            self.fmt_complex(arg, verb, arg)
        elif isinstance(arg, (bytes, bytearray)):
            self.fmt_bytes(bytes(arg), verb, arg)
        elif isinstance(arg, (list, tuple)):
            self.print_list(arg, verb)
        elif isinstance(arg, Mapping):
            self.print_map(arg, verb)
        elif callable(arg):
            self.pad("0x1" if verb in "vp" else "%!" + verb + "(func)")
        elif verb in "vsxXq":
            self.fmt_string(str(arg), verb, arg)
        else:
            self.bad_verb(verb, arg)

    def fmt_bytes(self, b: bytes, verb: str, arg: Any) -> None:
        if verb in "vd":
            if self.sharp_v:
                self.buf.append("[]byte{" + ", ".join(f"0x{c:x}" for c in b) + "}")
            else:
                self.buf.append("[")
                for i, c in enumerate(b):
                    if i:
                        self.buf.append(" ")
                    self.fmt_integer_base(c, 10, verb, _LDIGITS)
                self.buf.append("]")
        elif verb == "s":
            self.pad(self.truncate(b.decode("utf-8", "replace")))
        elif verb in "xX":
            self.fmt_sx(b.decode("latin-1"), _LDIGITS if verb == "x" else _UDIGITS)
        elif verb == "q":
            self.fmt_q(b.decode("utf-8", "replace"))
        else:
            self.print_list(list(b), verb)

    def print_elem(self, v: Any, verb: str) -> None:
        if v is None or v is NOVALUE:
            self.buf.append("interface {}(nil)" if self.sharp_v else "<nil>")
            return
        self.print_arg(_cv(v), verb)

    def print_list(self, v: Iterable[Any], verb: str) -> None:
        if self.sharp_v:
            self.buf.append("[]interface {}{")
            sep = ", "
        else:
            self.buf.append("[")
            sep = " "
        for i, e in enumerate(v):
            if i:
                self.buf.append(sep)
            self.print_elem(e, verb)
        self.buf.append("}" if self.sharp_v else "]")

    def print_map(self, m: Mapping[Any, Any], verb: str) -> None:
        if self.sharp_v:
            self.buf.append("map[string]interface {}{")
            sep = ", "
        else:
            self.buf.append("map[")
            sep = " "
        for i, k in enumerate(_sorted_keys(m)):
            if i:
                self.buf.append(sep)
            self.print_elem(k, verb)
            self.buf.append(":")
            self.print_elem(m[k], verb)
        self.buf.append("}" if self.sharp_v else "]")

    # -- Printf -------------------------------------------------------------------------------
    def do_printf(self, fmt: str, a: list[Any]) -> None:
        end = len(fmt)
        argnum = 0
        after_index = False
        reordered = False
        i = 0
        buf = self.buf
        while i < end:
            good_argnum = True
            lasti = i
            i = fmt.find("%", i)
            if i < 0:
                i = end
            if i > lasti:
                buf.append(fmt[lasti:i])
            if i >= end:
                break
            i += 1
            self.clearflags()
            simple_done = False
            while i < end:
                c = fmt[i]
                if c == "#":
                    self.sharp = True
                elif c == "0":
                    self.zero = True
                elif c == "+":
                    self.plus = True
                elif c == "-":
                    self.minus = True
                elif c == " ":
                    self.space = True
                else:
                    if "a" <= c <= "z" and argnum < len(a):
                        if c == "v":
                            self.sharp_v = self.sharp
                            self.sharp = False
                            self.plus_v = self.plus
                            self.plus = False
                        self.print_arg(a[argnum], c)
                        argnum += 1
                        i += 1
                        simple_done = True
                    break
                i += 1
            if simple_done:
                continue
            # Go: "Zero padding is allowed only to the left." (minus overrides zero)
            if self.minus:
                self.zero = False

            argnum, i, after_index, ok, r = self._arg_number(argnum, fmt, i, len(a))
            reordered = reordered or r
            if not ok:
                good_argnum = False
            if i < end and fmt[i] == "*":
                i += 1
                self.wid, self.wid_present, argnum = _int_from_arg(a, argnum)
                if not self.wid_present:
                    buf.append("%!(BADWIDTH)")
                if self.wid < 0:
                    self.wid = -self.wid
                    self.minus = True
                    self.zero = False
                after_index = False
            else:
                self.wid, self.wid_present, i = _parsenum(fmt, i, end)
                if after_index and self.wid_present:
                    good_argnum = False
            if i + 1 < end and fmt[i] == ".":
                i += 1
                if after_index:
                    good_argnum = False
                argnum, i, after_index, ok, r = self._arg_number(argnum, fmt, i, len(a))
                reordered = reordered or r
                if not ok:
                    good_argnum = False
                if i < end and fmt[i] == "*":
                    i += 1
                    self.prec, self.prec_present, argnum = _int_from_arg(a, argnum)
                    if self.prec < 0:
                        self.prec = 0
                        self.prec_present = False
                    if not self.prec_present:
                        buf.append("%!(BADPREC)")
                    after_index = False
                else:
                    self.prec, self.prec_present, i = _parsenum(fmt, i, end)
                    if not self.prec_present:
                        self.prec = 0
                        self.prec_present = True
            if not after_index:
                argnum, i, after_index, ok, r = self._arg_number(argnum, fmt, i, len(a))
                reordered = reordered or r
                if not ok:
                    good_argnum = False
            if i >= end:
                buf.append("%!(NOVERB)")
                break
            verb = fmt[i]
            i += 1
            if verb == "%":
                buf.append("%")
            elif not good_argnum:
                buf.append("%!" + verb + "(BADINDEX)")
            elif argnum >= len(a):
                buf.append("%!" + verb + "(MISSING)")
            else:
                if verb == "v":
                    self.sharp_v = self.sharp
                    self.sharp = False
                    self.plus_v = self.plus
                    self.plus = False
                self.print_arg(a[argnum], verb)
                argnum += 1
        if not reordered and argnum < len(a):
            self.clearflags()
            buf.append("%!(EXTRA ")
            for j, arg in enumerate(a[argnum:]):
                if j:
                    buf.append(", ")
                if arg is None or arg is NOVALUE:
                    buf.append("<nil>")
                else:
                    buf.append(_gotype(arg) + "=")
                    self.print_arg(arg, "v")
            buf.append(")")

    def _arg_number(self, argnum: int, fmt: str, i: int, nargs: int) -> tuple[int, int, bool, bool, bool]:
        """Returns (argnum, i, found, ok, reordered)."""
        if len(fmt) <= i or fmt[i] != "[":
            return argnum, i, False, True, False
        # parseArgNumber
        sub = fmt[i:]
        if len(sub) < 3:
            return argnum, i + 1, False, False, True
        for j in range(1, len(sub)):
            if sub[j] == "]":
                width, isnum, newi = _parsenum(sub, 1, j)
                if not isnum or newi != j:
                    return argnum, i + j + 1, False, False, True
                index = width - 1
                if 0 <= index < nargs:
                    return index, i + j + 1, True, True, True
                return argnum, i + j + 1, True, False, True
        return argnum, i + 1, False, False, True


def _rune_str(v: int) -> str:
    if v < 0 or v > 0x10FFFF or 0xD800 <= v <= 0xDFFF:
        return "\ufffd"
    return chr(v)


def _int_from_arg(a: list[Any], argnum: int) -> tuple[int, bool, int]:
    num, is_int = 0, False
    if argnum < len(a):
        v = a[argnum]
        if isinstance(v, int) and not isinstance(v, bool):
            num, is_int = int(v), True
        argnum += 1
        if num > 1_000_000 or num < -1_000_000:
            num, is_int = 0, False
    return num, is_int, argnum


def _parsenum(s: str, start: int, end: int) -> tuple[int, bool, int]:
    if start >= end:
        return 0, False, end
    num = 0
    isnum = False
    i = start
    while i < end and "0" <= s[i] <= "9":
        if num > 1_000_000 or num < -1_000_000:
            return 0, False, end
        num = num * 10 + ord(s[i]) - 48
        isnum = True
        i += 1
    return num, isnum, i


def _sort_key(k: Any) -> tuple[int, Any]:
    if isinstance(k, bool):
        return (1, int(k))
    if isinstance(k, (int, float)):
        return (0, k)
    if isinstance(k, str):
        return (2, k)
    return (3, str(k))


def _sorted_keys(m: Mapping[Any, Any]) -> list[Any]:
    try:
        return sorted(m)
    except TypeError:
        return sorted(m, key=_sort_key)


def sprintf(fmt: str, *args: Any) -> str:
    """Go's ``fmt.Sprintf`` over the Python value model."""
    p = _PP()
    p.do_printf(fmt, list(args))
    return "".join(p.buf)


def _is_string_kind(v: Any) -> bool:
    return isinstance(v, str)


def sprint(*args: Any) -> str:
    """Go's ``fmt.Sprint``: spaces between operands when neither is a string."""
    if len(args) == 1:
        v = args[0]
        if type(v) is str:
            return v
    p = _PP()
    prev_string = False
    for i, arg in enumerate(args):
        is_string = _is_string_kind(arg)
        if i > 0 and not is_string and not prev_string:
            p.buf.append(" ")
        p.print_arg(arg, "v")
        prev_string = is_string
    return "".join(p.buf)


def _sprintln(*args: Any) -> str:
    p = _PP()
    for i, arg in enumerate(args):
        if i > 0:
            p.buf.append(" ")
        p.print_arg(arg, "v")
    p.buf.append("\n")
    return "".join(p.buf)


def _print_value(v: Any) -> str:
    """How ``{{ pipeline }}`` prints its value (Go: printableValue + fmt.Fprint)."""
    t = type(v)
    if t is str:
        return v  # type: ignore[no-any-return]
    if v is NOVALUE or v is None:
        return "<no value>"
    if t is JSONNumber:
        return str(v)
    if t is int:
        return int.__repr__(v)
    if t is bool:
        return "true" if v else "false"
    if t is float:
        return format_float(v, "g", -1)
    p = _PP()
    p.print_arg(v, "v")
    return "".join(p.buf)


# --------------------------------------------------------------------------------------------
# Builtins
# --------------------------------------------------------------------------------------------


class _FuncError(Exception):
    """Raised by builtins; reported as ``error calling NAME: MSG``."""


class _ArgError(Exception):
    """Raised for argument count/type problems; reported without the "error calling" prefix."""


def _truth(v: Any) -> bool:
    # Go's isTrue agrees with Python's truthiness for every value of the model:
    # NOVALUE/None/""/0/0.0/[]/{} are false, JSONNumber is a non-empty string, objects are true.
    return bool(v)


def _b_not(*a: Any) -> bool:
    if len(a) != 1:
        raise _ArgError(f"wrong number of args for not: want 1 got {len(a)}")
    return not a[0]


def _b_and(*a: Any) -> Any:
    if not a:
        raise _ArgError("wrong number of args for and: want at least 1 got 0")
    for v in a:
        if not v:
            return v
    return a[-1]


def _b_or(*a: Any) -> Any:
    if not a:
        raise _ArgError("wrong number of args for or: want at least 1 got 0")
    for v in a:
        if v:
            return v
    return a[-1]


_INVALID, _BOOLK, _COMPLEXK, _INTK, _FLOATK, _STRINGK = range(6)


def _basic_kind(v: Any) -> int:
    t = type(v)
    if t is str or t is JSONNumber:
        return _STRINGK
    if t is bool:
        return _BOOLK
    if t is int:
        return _INTK
    if t is float:
        return _FLOATK
    if isinstance(v, str):
        return _STRINGK
    if isinstance(v, int):
        return _INTK
    if isinstance(v, float):
        return _FLOATK
    if isinstance(v, complex):
        return _COMPLEXK
    return _INVALID


def _is_nil(v: Any) -> bool:
    return v is None or v is NOVALUE


def _b_eq(*a: Any) -> bool:
    if not a:
        raise _ArgError("wrong number of args for eq: want at least 1 got 0")
    arg1 = a[0]
    if len(a) == 1:
        raise _FuncError("missing argument for comparison")
    k1 = _basic_kind(arg1)
    for arg in a[1:]:
        k2 = _basic_kind(arg)
        truth = False
        if k1 != k2:
            if not _is_nil(arg1) and not _is_nil(arg):
                raise _FuncError(f"incompatible types for comparison: {_gotype(arg1)} and {_gotype(arg)}")
        elif k1 == _INVALID:
            n1, n2 = _is_nil(arg1), _is_nil(arg)
            if n1 or n2:
                truth = n1 == n2
            else:
                if type(arg1) is not type(arg) and not (
                    (isinstance(arg1, Mapping) and isinstance(arg, Mapping))
                    or (isinstance(arg1, (list, tuple)) and isinstance(arg, (list, tuple)))
                ):
                    raise _FuncError(
                        f"non-comparable types {sprintf('%s', arg1)}: {_gotype(arg1)}, "
                        f"{_gotype(arg)}: {sprint(arg)}"
                    )
                if isinstance(arg, (Mapping, list, tuple)):
                    raise _FuncError(f"non-comparable type {sprintf('%s', arg)}: {_gotype(arg)}")
                truth = arg1 == arg
        else:
            truth = arg1 == arg
        if truth:
            return True
    return False


def _b_ne(*a: Any) -> bool:
    if len(a) != 2:
        raise _ArgError(f"wrong number of args for ne: want 2 got {len(a)}")
    return not _b_eq(a[0], a[1])


def _lt(arg1: Any, arg2: Any) -> bool:
    k1 = _basic_kind(arg1)
    if k1 == _INVALID:
        raise _FuncError("invalid type for comparison")
    k2 = _basic_kind(arg2)
    if k2 == _INVALID:
        raise _FuncError("invalid type for comparison")
    if k1 != k2:
        raise _FuncError(f"incompatible types for comparison: {_gotype(arg1)} and {_gotype(arg2)}")
    if k1 == _BOOLK or k1 == _COMPLEXK:
        raise _FuncError("invalid type for comparison")
    if k1 == _STRINGK:
        return str(arg1) < str(arg2)
    return bool(arg1 < arg2)


def _two(name: str, a: tuple[Any, ...]) -> None:
    if len(a) != 2:
        raise _ArgError(f"wrong number of args for {name}: want 2 got {len(a)}")


def _b_lt(*a: Any) -> bool:
    _two("lt", a)
    return _lt(a[0], a[1])


def _b_le(*a: Any) -> bool:
    _two("le", a)
    return _lt(a[0], a[1]) or _b_eq(a[0], a[1])


def _b_gt(*a: Any) -> bool:
    _two("gt", a)
    return not (_lt(a[0], a[1]) or _b_eq(a[0], a[1]))


def _b_ge(*a: Any) -> bool:
    _two("ge", a)
    return not _lt(a[0], a[1])


def _strlen(s: str) -> int:
    return len(s) if s.isascii() else len(s.encode("utf-8", "surrogatepass"))


def _b_len(*a: Any) -> int:
    if len(a) != 1:
        raise _ArgError(f"wrong number of args for len: want 1 got {len(a)}")
    item = a[0]
    if item is None or item is NOVALUE:
        raise _FuncError("len of nil pointer")
    if isinstance(item, str):
        return _strlen(item)
    if isinstance(item, (list, tuple, Mapping, bytes, bytearray)):
        return len(item)
    raise _FuncError(f"len of type {_gotype(item)}")


def _index_arg(index: Any, cap: int) -> int:
    if index is None or index is NOVALUE:
        raise _FuncError("cannot index slice/array with nil")
    if not isinstance(index, int) or isinstance(index, bool):
        raise _FuncError(f"cannot index slice/array with type {_gotype(index)}")
    x = int(index)
    if x < 0 or x > cap:
        raise _FuncError(f"index out of range: {x}")
    return x


def _b_index(*a: Any) -> Any:
    if not a:
        raise _ArgError("wrong number of args for index: want at least 1 got 0")
    item = a[0]
    if item is None or item is NOVALUE:
        raise _FuncError("index of untyped nil")
    for index in a[1:]:
        if item is None or item is NOVALUE:
            raise _FuncError("index of nil pointer")
        if isinstance(item, str):
            b = item.encode("utf-8", "surrogatepass")
            x = _index_arg(index, len(b))
            if x >= len(b):
                raise _FuncError("reflect: string index out of range")
            item = b[x]
        elif isinstance(item, (list, tuple)):
            x = _index_arg(index, len(item))
            if x >= len(item):
                raise _FuncError("reflect: slice index out of range")
            item = _cv(item[x])
        elif isinstance(item, Mapping):
            if index is None or index is NOVALUE:
                raise _FuncError("value is nil; should be of type string")
            if type(index) is not str:
                raise _FuncError(f"value has type {_gotype(index)}; should be string")
            item = _cv(item.get(index))
        elif isinstance(item, (bytes, bytearray)):
            x = _index_arg(index, len(item))
            if x >= len(item):
                raise _FuncError("reflect: slice index out of range")
            item = item[x]
        else:
            raise _FuncError(f"can't index item of type {_gotype(item)}")
    return item


def _b_slice(*a: Any) -> Any:
    if not a:
        raise _ArgError("wrong number of args for slice: want at least 1 got 0")
    item, indexes = a[0], a[1:]
    if item is None or item is NOVALUE:
        raise _FuncError("slice of untyped nil")
    if len(indexes) > 3:
        raise _FuncError(f"too many slice indexes: {len(indexes)}")
    if isinstance(item, str):
        if len(indexes) == 3:
            raise _FuncError("cannot 3-index slice a string")
        b = item.encode("utf-8", "surrogatepass")
        length = len(b)
    elif isinstance(item, (list, tuple, bytes, bytearray)):
        length = len(item)
    else:
        raise _FuncError(f"can't slice item of type {_gotype(item)}")
    idx = [0, length, length]
    for i, index in enumerate(indexes):
        idx[i] = _index_arg(index, length)
    if idx[0] > idx[1]:
        raise _FuncError(f"invalid slice index: {idx[0]} > {idx[1]}")
    if len(indexes) == 3 and idx[1] > idx[2]:
        raise _FuncError(f"invalid slice index: {idx[1]} > {idx[2]}")
    if isinstance(item, str):
        if item.isascii():
            r = item[idx[0] : idx[1]]
        else:
            r = b[idx[0] : idx[1]].decode("utf-8", "replace")
        return JSONNumber(r) if type(item) is JSONNumber else r  # Go keeps the named type
    return item[idx[0] : idx[1]]


def _b_print(*a: Any) -> str:
    return sprint(*a)


def _b_println(*a: Any) -> str:
    return _sprintln(*a)


def _b_printf(*a: Any) -> str:
    if not a:
        raise _ArgError("wrong number of args for printf: want at least 1 got 0")
    fmt = a[0]
    if type(fmt) is not str:
        if fmt is None or fmt is NOVALUE:
            raise _ArgError("invalid value; expected string")
        raise _ArgError(f"wrong type for value; expected string; got {_gotype(fmt)}")
    p = _PP()
    p.do_printf(fmt, list(a[1:]))
    return "".join(p.buf)


def _eval_args(a: tuple[Any, ...]) -> str:
    if len(a) == 1 and type(a[0]) is str:
        return str(a[0])
    return sprint(*["<no value>" if v is None or v is NOVALUE else v for v in a])


def html_escape(s: str) -> str:
    """Go's ``template.HTMLEscapeString``."""
    if not any(c in s for c in "'\"&<>\0"):
        return s
    return (
        s.replace("&", "&amp;")
        .replace("\0", "\ufffd")
        .replace('"', "&#34;")
        .replace("'", "&#39;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
    )


_JS_ESC = {
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "<": "\\u003C",
    ">": "\\u003E",
    "&": "\\u0026",
    "=": "\\u003D",
}


def js_escape(s: str) -> str:
    """Go's ``template.JSEscapeString``."""
    out = []
    for c in s:
        o = ord(c)
        e = _JS_ESC.get(c)
        if e is not None:
            out.append(e)
        elif o < 0x20:
            out.append(f"\\u00{o:02X}")
        elif o < 0x80 or c.isprintable():
            out.append(c)
        else:
            out.append(f"\\u{o:04X}")
    return "".join(out)


def _b_html(*a: Any) -> str:
    return html_escape(_eval_args(a))


def _b_js(*a: Any) -> str:
    return js_escape(_eval_args(a))


def _b_urlquery(*a: Any) -> str:
    return urllib.parse.quote_plus(_eval_args(a), safe="")


def _b_call(*a: Any) -> Any:
    if not a:
        raise _ArgError("wrong number of args for call: want at least 1 got 0")
    fn = a[0]
    if fn is None or fn is NOVALUE:
        raise _FuncError("call of nil")
    if not callable(fn):
        raise _FuncError(f"non-function of type {_gotype(fn)}")
    return fn(*a[1:])


BUILTINS: Mapping[str, Callable[..., Any]] = {
    "and": _b_and,
    "call": _b_call,
    "html": _b_html,
    "index": _b_index,
    "slice": _b_slice,
    "js": _b_js,
    "len": _b_len,
    "not": _b_not,
    "or": _b_or,
    "print": _b_print,
    "printf": _b_printf,
    "println": _b_println,
    "urlquery": _b_urlquery,
    "eq": _b_eq,
    "ge": _b_ge,
    "gt": _b_gt,
    "le": _b_le,
    "lt": _b_lt,
    "ne": _b_ne,
}


# --------------------------------------------------------------------------------------------
# Lexer (port of text/template/parse/lex.go)
# --------------------------------------------------------------------------------------------

(
    _ERROR,
    _BOOL,
    _CHAR,
    _CHARCONST,
    _COMMENT,
    _COMPLEX,
    _ASSIGN,
    _DECLARE,
    _EOF,
    _FIELD,
    _IDENT,
    _LDELIM,
    _LPAREN,
    _NUMBER,
    _PIPE,
    _RAWSTRING,
    _RDELIM,
    _RPAREN,
    _SPACE,
    _STRING,
    _TEXT,
    _VARIABLE,
    _KEYWORD,
    _BLOCK,
    _BREAK,
    _CONTINUE,
    _DOT,
    _DEFINE,
    _ELSE,
    _END,
    _IF,
    _NIL,
    _RANGE,
    _TEMPLATE,
    _WITH,
) = range(35)

_KEYWORDS = {
    ".": _DOT,
    "block": _BLOCK,
    "break": _BREAK,
    "continue": _CONTINUE,
    "define": _DEFINE,
    "else": _ELSE,
    "end": _END,
    "if": _IF,
    "range": _RANGE,
    "nil": _NIL,
    "template": _TEMPLATE,
    "with": _WITH,
}

_SPACES = " \t\r\n"
_LEFT = "{{"
_RIGHT = "}}"


class _Tok:
    __slots__ = ("pos", "typ", "val")

    def __init__(self, typ: int, pos: int, val: str) -> None:
        self.typ = typ
        self.pos = pos
        self.val = val

    def __str__(self) -> str:
        if self.typ == _EOF:
            return "EOF"
        if self.typ == _ERROR:
            return self.val
        if self.typ > _KEYWORD:
            return f"<{self.val}>"
        if len(self.val) > 10:
            return go_quote(self.val[:10]) + "..."
        return go_quote(self.val)


def _is_alnum(r: str) -> bool:
    return r == "_" or r.isalpha() or r.isdecimal()


class _Lexer:
    def __init__(self, text: str, break_ok: bool, continue_ok: bool) -> None:
        self.input = text
        self.n = len(text)
        self.pos = 0
        self.start = 0
        self.at_eof = False
        self.paren_depth = 0
        self.items: list[_Tok] = []
        self.break_ok = break_ok
        self.continue_ok = continue_ok

    def run(self) -> list[_Tok]:
        state: Callable[[], Any] | None = self.lex_text
        while state is not None:
            state = state()
        return self.items

    # -- primitives -----------------------------------------------------------------------------
    def next(self) -> str:
        if self.pos >= self.n:
            self.at_eof = True
            return ""
        c = self.input[self.pos]
        self.pos += 1
        return c

    def peek(self) -> str:
        c = self.next()
        self.backup()
        return c

    def backup(self) -> None:
        if not self.at_eof and self.pos > 0:
            self.pos -= 1

    def emit(self, typ: int) -> None:
        self.items.append(_Tok(typ, self.start, self.input[self.start : self.pos]))
        self.start = self.pos

    def ignore(self) -> None:
        self.start = self.pos

    def accept(self, valid: str) -> bool:
        c = self.next()
        if c and c in valid:
            return True
        self.backup()
        return False

    def accept_run(self, valid: str) -> None:
        while True:
            c = self.next()
            if not c or c not in valid:
                break
        self.backup()

    def errorf(self, msg: str) -> None:
        self.items.append(_Tok(_ERROR, self.start, msg))
        return None

    def has_left_trim(self, p: int) -> bool:
        s = self.input
        return p + 1 < self.n and s[p] == "-" and s[p + 1] in _SPACES

    def has_right_trim(self, p: int) -> bool:
        s = self.input
        return 0 <= p and p + 1 < self.n and s[p] in _SPACES and s[p + 1] == "-"

    def at_right_delim(self) -> tuple[bool, bool]:
        if self.has_right_trim(self.pos) and self.input.startswith(_RIGHT, self.pos + 2):
            return True, True
        if self.input.startswith(_RIGHT, self.pos):
            return True, False
        return False, False

    def left_trim_len(self, p: int) -> int:
        s = self.input
        q = p
        while q < self.n and s[q] in _SPACES:
            q += 1
        return q - p

    # -- states -----------------------------------------------------------------------------------
    def lex_text(self) -> Any:
        x = self.input.find(_LEFT, self.pos)
        if x >= 0:
            if x > self.pos:
                self.pos = x
                trim = 0
                if self.has_left_trim(x + 2):
                    seg = self.input[self.start : self.pos]
                    trim = len(seg) - len(seg.rstrip(_SPACES))
                self.pos -= trim
                if self.pos > self.start:
                    self.emit(_TEXT)
                self.pos += trim
                self.ignore()
            return self.lex_left_delim
        self.pos = self.n
        if self.pos > self.start:
            self.emit(_TEXT)
        self.emit(_EOF)
        return None

    def lex_left_delim(self) -> Any:
        self.pos += 2
        trim = self.has_left_trim(self.pos)
        after = 2 if trim else 0
        if self.input.startswith("/*", self.pos + after):
            self.pos += after
            self.ignore()
            return self.lex_comment
        self.emit(_LDELIM)
        self.pos += after
        self.ignore()
        self.paren_depth = 0
        return self.lex_inside_action

    def lex_comment(self) -> Any:
        self.pos += 2
        x = self.input.find("*/", self.pos)
        if x < 0:
            return self.errorf("unclosed comment")
        self.pos = x + 2
        delim, trim = self.at_right_delim()
        if not delim:
            return self.errorf("comment ends before closing delimiter")
        if trim:
            self.pos += 2
        self.pos += 2
        if trim:
            self.pos += self.left_trim_len(self.pos)
        self.ignore()
        return self.lex_text

    def lex_right_delim(self) -> Any:
        _, trim = self.at_right_delim()
        if trim:
            self.pos += 2
            self.ignore()
        self.pos += 2
        self.emit(_RDELIM)
        if trim:
            self.pos += self.left_trim_len(self.pos)
            self.ignore()
        return self.lex_text

    def lex_inside_action(self) -> Any:
        delim, _ = self.at_right_delim()
        if delim:
            if self.paren_depth == 0:
                return self.lex_right_delim
            return self.errorf("unclosed left paren")
        r = self.next()
        if r == "":
            return self.errorf("unclosed action")
        if r in _SPACES:
            self.backup()
            return self.lex_space
        if r == "=":
            self.emit(_ASSIGN)
        elif r == ":":
            if self.next() != "=":
                return self.errorf("expected :=")
            self.emit(_DECLARE)
        elif r == "|":
            self.emit(_PIPE)
        elif r == '"':
            return self.lex_quote
        elif r == "`":
            return self.lex_raw_quote
        elif r == "$":
            return self.lex_variable
        elif r == "'":
            return self.lex_char
        elif r == "." and self.pos < self.n and not ("0" <= self.input[self.pos] <= "9"):
            return self.lex_field
        elif r == "." or r == "+" or r == "-" or "0" <= r <= "9":
            self.backup()
            return self.lex_number
        elif _is_alnum(r):
            self.backup()
            return self.lex_identifier
        elif r == "(":
            self.paren_depth += 1
            self.emit(_LPAREN)
        elif r == ")":
            self.paren_depth -= 1
            if self.paren_depth < 0:
                return self.errorf("unexpected right paren")
            self.emit(_RPAREN)
        elif ord(r) < 0x80 and r.isprintable():
            self.emit(_CHAR)
        else:
            return self.errorf(f"unrecognized character in action: {_fmt_U(ord(r))}")
        return self.lex_inside_action

    def lex_space(self) -> Any:
        num = 0
        while True:
            r = self.peek()
            if r == "" or r not in _SPACES:
                break
            self.next()
            num += 1
        if self.has_right_trim(self.pos - 1) and self.input.startswith(_RIGHT, self.pos + 1):
            self.backup()
            if num == 1:
                return self.lex_right_delim
        self.emit(_SPACE)
        return self.lex_inside_action

    def at_terminator(self) -> bool:
        r = self.peek()
        if r == "" or r in _SPACES or r in ".,|:)(":
            return True
        return self.input.startswith(_RIGHT, self.pos)

    def lex_identifier(self) -> Any:
        while True:
            r = self.next()
            if r and _is_alnum(r):
                continue
            self.backup()
            word = self.input[self.start : self.pos]
            if not self.at_terminator():
                return self.errorf(f"bad character {_fmt_U(ord(r) if r else -1)}")
            kw = _KEYWORDS.get(word)
            if kw is not None and kw > _KEYWORD:
                if (kw == _BREAK and not self.break_ok) or (kw == _CONTINUE and not self.continue_ok):
                    self.emit(_IDENT)
                else:
                    self.emit(kw)
            elif word in ("true", "false"):
                self.emit(_BOOL)
            else:
                self.emit(_IDENT)
            return self.lex_inside_action

    def lex_field(self) -> Any:
        return self.lex_field_or_variable(_FIELD)

    def lex_variable(self) -> Any:
        if self.at_terminator():
            self.emit(_VARIABLE)
            return self.lex_inside_action
        return self.lex_field_or_variable(_VARIABLE)

    def lex_field_or_variable(self, typ: int) -> Any:
        if self.at_terminator():
            self.emit(_VARIABLE if typ == _VARIABLE else _DOT)
            return self.lex_inside_action
        r = ""
        while True:
            r = self.next()
            if not r or not _is_alnum(r):
                self.backup()
                break
        if not self.at_terminator():
            return self.errorf(f"bad character {_fmt_U(ord(r) if r else -1)}")
        self.emit(typ)
        return self.lex_inside_action

    def lex_char(self) -> Any:
        while True:
            c = self.next()
            if c == "\\":
                c2 = self.next()
                if c2 != "" and c2 != "\n":
                    continue
                return self.errorf("unterminated character constant")
            if c == "" or c == "\n":
                return self.errorf("unterminated character constant")
            if c == "'":
                break
        self.emit(_CHARCONST)
        return self.lex_inside_action

    def lex_number(self) -> Any:
        if not self.scan_number():
            return self.errorf(f"bad number syntax: {go_quote(self.input[self.start : self.pos])}")
        sign = self.peek()
        if sign == "+" or sign == "-":
            if not self.scan_number() or self.input[self.pos - 1] != "i":
                return self.errorf(f"bad number syntax: {go_quote(self.input[self.start : self.pos])}")
            self.emit(_COMPLEX)
            return self.lex_inside_action
        self.emit(_NUMBER)
        return self.lex_inside_action

    def scan_number(self) -> bool:
        self.accept("+-")
        digits = "0123456789_"
        if self.accept("0"):
            if self.accept("xX"):
                digits = "0123456789abcdefABCDEF_"
            elif self.accept("oO"):
                digits = "01234567_"
            elif self.accept("bB"):
                digits = "01_"
        self.accept_run(digits)
        if self.accept("."):
            self.accept_run(digits)
        if len(digits) == 11 and self.accept("eE"):
            self.accept("+-")
            self.accept_run("0123456789_")
        if len(digits) == 23 and self.accept("pP"):
            self.accept("+-")
            self.accept_run("0123456789_")
        self.accept("i")
        p = self.peek()
        if p and _is_alnum(p):
            self.next()
            return False
        return True

    def lex_quote(self) -> Any:
        while True:
            c = self.next()
            if c == "\\":
                c2 = self.next()
                if c2 != "" and c2 != "\n":
                    continue
                return self.errorf("unterminated quoted string")
            if c == "" or c == "\n":
                return self.errorf("unterminated quoted string")
            if c == '"':
                break
        self.emit(_STRING)
        return self.lex_inside_action

    def lex_raw_quote(self) -> Any:
        while True:
            c = self.next()
            if c == "":
                return self.errorf("unterminated raw quoted string")
            if c == "`":
                break
        self.emit(_RAWSTRING)
        return self.lex_inside_action


# --------------------------------------------------------------------------------------------
# strconv: unquoting and number parsing
# --------------------------------------------------------------------------------------------


class _SyntaxError(Exception):
    pass


_UNESC = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92}
_HEX = "0123456789abcdefABCDEF"


def _unquote_char(s: str, i: int, quote: str) -> tuple[int, bool, int]:
    """Go's strconv.UnquoteChar at s[i:]; returns (value, is_byte, new_index)."""
    c = s[i]
    if c == quote and quote in "'\"":
        raise _SyntaxError
    if c != "\\":
        return ord(c), False, i + 1
    if i + 1 >= len(s):
        raise _SyntaxError
    c = s[i + 1]
    i += 2
    if c in _UNESC:
        return _UNESC[c], False, i
    if c in "xuU":
        n = {"x": 2, "u": 4, "U": 8}[c]
        h = s[i : i + n]
        if len(h) < n or any(ch not in _HEX for ch in h):
            raise _SyntaxError
        v = int(h, 16)
        if c == "x":
            return v, True, i + n
        if v > 0x10FFFF or 0xD800 <= v <= 0xDFFF:
            raise _SyntaxError
        return v, False, i + n
    if "0" <= c <= "7":
        o = s[i - 1 : i + 2]
        if len(o) < 3 or any(not "0" <= ch <= "7" for ch in o):
            raise _SyntaxError
        v = int(o, 8)
        if v > 255:
            raise _SyntaxError
        return v, True, i + 2
    if c in "'\"":
        if c != quote:
            raise _SyntaxError
        return ord(c), False, i
    raise _SyntaxError


def _unquote(s: str) -> str:
    """Go's strconv.Unquote for "..." and `...` literals (the lexer guarantees the shape)."""
    if len(s) < 2:
        raise _SyntaxError
    q = s[0]
    if q == "`":
        if s[-1] != "`" or "`" in s[1:-1]:
            raise _SyntaxError
        return s[1:-1].replace("\r", "")
    if q != '"' or s[-1] != '"':
        raise _SyntaxError
    body = s[1:-1]
    if "\\" not in body and "\n" not in body and '"' not in body:
        return body
    out = bytearray()
    i = 0
    while i < len(body):
        if body[i] == "\n":
            raise _SyntaxError
        v, is_byte, i = _unquote_char(body, i, '"')
        if is_byte or v < 0x80:
            out.append(v)
        else:
            out += chr(v).encode("utf-8")
    return out.decode("utf-8", "replace")


def _underscore_ok(s: str) -> bool:
    # Go's strconv.underscoreOK: underscores only between digits (or after a base prefix).
    saw = "^"
    i = 0
    if s and s[0] in "+-":
        s = s[1:]
    hexa = False
    if len(s) >= 2 and s[0] == "0" and s[1].lower() in "bxo":
        i = 2
        saw = "0"
        hexa = s[1].lower() == "x"
    while i < len(s):
        c = s[i]
        if "0" <= c <= "9" or (hexa and c.lower() in "abcdef"):
            saw = "0"
        elif c == "_":
            if saw != "0":
                return False
            saw = "_"
        else:
            if saw == "_":
                return False
            saw = "!"
        i += 1
    return saw != "_"


def _parse_int_base0(text: str) -> int | None:
    """Go's strconv.ParseInt/ParseUint(text, 0, 64) without the range check; None if invalid."""
    s = text
    neg = False
    if s and s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if not s:
        return None
    base = 10
    body = s
    if s[0] == "0":
        if len(s) >= 2 and s[1] in "xX":
            base, body = 16, s[2:]
        elif len(s) >= 2 and s[1] in "oO":
            base, body = 8, s[2:]
        elif len(s) >= 2 and s[1] in "bB":
            base, body = 2, s[2:]
        else:
            base, body = 8, s[1:] or "0"
    if "_" in body or "_" in s:
        if not _underscore_ok(s):
            return None
        body = body.replace("_", "")
    if not body:
        return None
    valid = {16: "0123456789abcdefABCDEF", 10: "0123456789", 8: "01234567", 2: "01"}[base]
    if any(c not in valid for c in body):
        return None
    v = int(body, base)
    return -v if neg else v


def _parse_float(text: str) -> float | None:
    """Go's strconv.ParseFloat(text, 64) for the syntax the lexer admits; None if invalid."""
    s = text
    if "_" in s:
        if not _underscore_ok(s):
            return None
        s = s.replace("_", "")
    body = s.lstrip("+-")
    if len(s) - len(body) > 1:
        return None
    if body[:2].lower() == "0x":
        if "p" not in body.lower():
            return None
        try:
            v = float.fromhex(s)
        except (ValueError, OverflowError):
            return None
        return v
    if not body or any(c not in "0123456789.eE+-" for c in body):
        return None
    try:
        v = float(s)
    except ValueError:
        return None
    if math.isinf(v):
        return None  # Go: "value out of range"
    return v


# --------------------------------------------------------------------------------------------
# Parse tree
# --------------------------------------------------------------------------------------------


class _Node:
    __slots__ = ("pos",)

    def __init__(self, pos: int) -> None:
        self.pos = pos


class _ListNode(_Node):
    __slots__ = ("nodes",)

    def __init__(self, pos: int) -> None:
        super().__init__(pos)
        self.nodes: list[_Node] = []

    def __str__(self) -> str:
        return "".join(str(n) for n in self.nodes)


class _TextNode(_Node):
    __slots__ = ("text",)

    def __init__(self, pos: int, text: str) -> None:
        super().__init__(pos)
        self.text = text

    def __str__(self) -> str:
        return self.text


class _CommentNode(_Node):
    __slots__ = ()

    def __str__(self) -> str:
        return "{{/* */}}"


class _VariableNode(_Node):
    """``$x.f.g``.  ``slot`` locates the variable in the frame: an int, ``_POISON`` (parses but is
    undefined at run time), or a conditional binding ``(slot, fallback)`` -- see ``_load``."""

    __slots__ = ("ident", "slot")

    def __init__(self, pos: int, name: str, slot: Any = -1) -> None:
        super().__init__(pos)
        self.ident = name.split(".")
        self.slot = slot

    def __str__(self) -> str:
        return ".".join(self.ident)


class _CommandNode(_Node):
    __slots__ = ("args",)

    def __init__(self, pos: int) -> None:
        super().__init__(pos)
        self.args: list[_Node] = []

    def __str__(self) -> str:
        return " ".join(f"({a})" if isinstance(a, _PipeNode) else str(a) for a in self.args)


class _PipeNode(_Node):
    __slots__ = ("cmds", "cond_slots", "decl", "is_assign")

    def __init__(self, pos: int) -> None:
        super().__init__(pos)
        self.is_assign = False
        self.cond_slots: list[int] = []  # conditional declarations to reset before evaluation
        self.decl: list[_VariableNode] = []
        self.cmds: list[_CommandNode] = []

    def __str__(self) -> str:
        s = ""
        if self.decl:
            s = ", ".join(str(v) for v in self.decl) + (" = " if self.is_assign else " := ")
        return s + " | ".join(str(c) for c in self.cmds)


class _ActionNode(_Node):
    __slots__ = ("pipe",)

    def __init__(self, pos: int, pipe: _PipeNode) -> None:
        super().__init__(pos)
        self.pipe = pipe

    def __str__(self) -> str:
        return f"{{{{{self.pipe}}}}}"


class _IdentifierNode(_Node):
    __slots__ = ("ident",)

    def __init__(self, pos: int, ident: str) -> None:
        super().__init__(pos)
        self.ident = ident

    def __str__(self) -> str:
        return self.ident


class _DotNode(_Node):
    __slots__ = ()

    def __str__(self) -> str:
        return "."


class _NilNode(_Node):
    __slots__ = ()

    def __str__(self) -> str:
        return "nil"


class _FieldNode(_Node):
    __slots__ = ("ident",)

    def __init__(self, pos: int, ident: str) -> None:
        super().__init__(pos)
        self.ident = ident[1:].split(".")

    def __str__(self) -> str:
        return "".join("." + i for i in self.ident)


class _ChainNode(_Node):
    __slots__ = ("field", "node")

    def __init__(self, pos: int, node: _Node) -> None:
        super().__init__(pos)
        self.node = node
        self.field: list[str] = []

    def add(self, field: str) -> None:
        self.field.append(field[1:])

    def __str__(self) -> str:
        s = f"({self.node})" if isinstance(self.node, _PipeNode) else str(self.node)
        return s + "".join("." + f for f in self.field)


class _BoolNode(_Node):
    __slots__ = ("val",)

    def __init__(self, pos: int, val: bool) -> None:
        super().__init__(pos)
        self.val = val

    def __str__(self) -> str:
        return "true" if self.val else "false"


class _NumberNode(_Node):
    __slots__ = ("complex128", "float64", "int64", "is_complex", "is_float", "is_int", "is_uint", "text")

    def __init__(self, pos: int, text: str) -> None:
        super().__init__(pos)
        self.text = text
        self.is_int = self.is_uint = self.is_float = self.is_complex = False
        self.int64 = 0
        self.float64 = 0.0
        self.complex128 = 0j

    def __str__(self) -> str:
        return self.text


class _StringNode(_Node):
    __slots__ = ("quoted", "text")

    def __init__(self, pos: int, quoted: str, text: str) -> None:
        super().__init__(pos)
        self.quoted = quoted
        self.text = text

    def __str__(self) -> str:
        return self.quoted


class _EndNode(_Node):
    __slots__ = ()

    def __str__(self) -> str:
        return "{{end}}"


class _ElseNode(_Node):
    __slots__ = ()

    def __str__(self) -> str:
        return "{{else}}"


class _BranchNode(_Node):
    __slots__ = ("else_list", "kind", "list", "pipe")

    def __init__(
        self, kind: str, pos: int, pipe: _PipeNode, lst: _ListNode, else_list: _ListNode | None
    ) -> None:
        super().__init__(pos)
        self.kind = kind
        self.pipe = pipe
        self.list = lst
        self.else_list = else_list

    def __str__(self) -> str:
        s = f"{{{{{self.kind} {self.pipe}}}}}{self.list}"
        if self.else_list is not None:
            s += f"{{{{else}}}}{self.else_list}"
        return s + "{{end}}"


class _TemplateNode(_Node):
    __slots__ = ("name", "pipe")

    def __init__(self, pos: int, name: str, pipe: _PipeNode | None) -> None:
        super().__init__(pos)
        self.name = name
        self.pipe = pipe

    def __str__(self) -> str:
        if self.pipe is None:
            return f"{{{{template {go_quote(self.name)}}}}}"
        return f"{{{{template {go_quote(self.name)} {self.pipe}}}}}"


class _BreakNode(_Node):
    __slots__ = ()

    def __str__(self) -> str:
        return "{{break}}"


class _ContinueNode(_Node):
    __slots__ = ()

    def __str__(self) -> str:
        return "{{continue}}"


_POISON = -2  # a variable that parses but is not defined at run time (Go: "undefined variable")


class _Tree:
    __slots__ = ("name", "nslots", "range_depth", "root", "vars")

    def __init__(self, name: str) -> None:
        self.name = name
        self.root: _ListNode | None = None
        self.vars: list[tuple[str, Any]] = [("$", 0)]
        self.nslots = 1
        self.range_depth = 0

    def new_slot(self) -> int:
        self.nslots += 1
        return self.nslots - 1

    def lookup(self, name: str) -> Any:
        for n, s in reversed(self.vars):
            if n == name:
                return s
        return None


def _is_empty_tree(n: _Node | None) -> bool:
    if n is None:
        return True
    if isinstance(n, _ListNode):
        return all(_is_empty_tree(c) for c in n.nodes)
    if isinstance(n, _TextNode):
        return not n.text.strip(" \t\r\n\v\f\x85\xa0")
    if isinstance(n, _CommentNode):
        return True
    return False


class _ParseError(Exception):
    pass


class _Parser:
    def __init__(self, name: str, text: str, funcs: Collection[str] | None) -> None:
        self.name = name
        self.text = text
        self.funcs = funcs
        break_ok = continue_ok = True
        if funcs is not None:
            break_ok = "break" not in funcs
            continue_ok = "continue" not in funcs
        self.toks = _Lexer(text, break_ok, continue_ok).run()
        self.i = 0
        self.last = self.toks[0]
        self.trees: dict[str, _Tree] = {}
        self.tree = _Tree(name)
        self.paren_depth = 0
        self.cond_depth = 0  # inside an argument of and/or that may be skipped
        self.cond_slots: list[int] = []

    # -- errors -------------------------------------------------------------------------------
    def location(self, pos: int) -> str:
        line = self.text.count("\n", 0, pos) + 1
        col = pos - (self.text.rfind("\n", 0, pos) + 1)
        return f"{self.name}:{line}:{col}"

    def errorf(self, msg: str, pos: int | None = None) -> NoReturn:
        if pos is None:
            pos = self.last.pos
        raise _ParseError(f"template: {self.location(pos)}: {msg}")

    def unexpected(self, tok: _Tok, context: str) -> NoReturn:
        if tok.typ == _ERROR:
            self.errorf(str(tok), tok.pos)
        self.errorf(f"unexpected {tok} in {context}", tok.pos)

    # -- token stream ---------------------------------------------------------------------------
    def next(self) -> _Tok:
        tok = self.toks[min(self.i, len(self.toks) - 1)]
        self.i += 1
        self.last = tok
        return tok

    def backup(self) -> None:
        self.i -= 1

    def peek(self) -> _Tok:
        return self.toks[min(self.i, len(self.toks) - 1)]

    def next_non_space(self) -> _Tok:
        while True:
            tok = self.next()
            if tok.typ != _SPACE:
                return tok

    def peek_non_space(self) -> _Tok:
        while self.peek().typ == _SPACE:
            self.i += 1
        return self.peek()

    def expect(self, typ: int, context: str) -> _Tok:
        tok = self.next_non_space()
        if tok.typ != typ:
            self.unexpected(tok, context)
        return tok

    # -- structure ------------------------------------------------------------------------------
    def parse(self) -> tuple[_Tree, dict[str, _Tree]]:
        t = self.tree
        t.root = _ListNode(self.peek().pos)
        while self.peek().typ != _EOF:
            if self.peek().typ == _LDELIM:
                mark = self.i
                self.next()
                if self.next_non_space().typ == _DEFINE:
                    self.parse_definition()
                    continue
                self.i = mark
            n = self.text_or_action()
            if isinstance(n, (_EndNode, _ElseNode)):
                self.errorf(f"unexpected {n}", n.pos)
            if n is not None:
                t.root.nodes.append(n)
        self.add(t)
        return t, self.trees

    def add(self, t: _Tree) -> None:
        old = self.trees.get(t.name)
        if old is None or _is_empty_tree(old.root):
            self.trees[t.name] = t
            return
        if not _is_empty_tree(t.root):
            self.errorf(f"template: multiple definition of template {go_quote(t.name)}")

    def with_tree(self, t: _Tree, fn: Callable[[], Any]) -> None:
        saved, saved_depth = self.tree, self.paren_depth
        self.tree = t
        try:
            fn()
        finally:
            self.tree, self.paren_depth = saved, saved_depth

    def parse_definition(self) -> None:
        context = "define clause"
        tok = self.next_non_space()
        if tok.typ not in (_STRING, _RAWSTRING):
            self.unexpected(tok, context)
        try:
            name = _unquote(tok.val)
        except _SyntaxError:
            self.errorf("invalid syntax", tok.pos)
        self.expect(_RDELIM, context)
        t = _Tree(name)

        def body() -> None:
            t.root, end = self.item_list()
            if not isinstance(end, _EndNode):
                self.errorf(f"unexpected {end} in {context}", end.pos)

        self.with_tree(t, body)
        self.add(t)

    def item_list(self) -> tuple[_ListNode, _Node]:
        lst = _ListNode(self.peek_non_space().pos)
        while self.peek_non_space().typ != _EOF:
            n = self.text_or_action()
            if isinstance(n, (_EndNode, _ElseNode)):
                return lst, n
            if n is not None:
                lst.nodes.append(n)
        self.errorf("unexpected EOF", self.peek().pos)

    def text_or_action(self) -> _Node | None:
        tok = self.next_non_space()
        if tok.typ == _TEXT:
            return _TextNode(tok.pos, tok.val)
        if tok.typ == _LDELIM:
            return self.action()
        if tok.typ == _COMMENT:
            return _CommentNode(tok.pos)
        self.unexpected(tok, "input")

    def action(self) -> _Node:
        tok = self.next_non_space()
        typ = tok.typ
        if typ == _BLOCK:
            return self.block_control()
        if typ == _BREAK:
            return self.branch_stmt(tok, _BreakNode, "{{break}}")
        if typ == _CONTINUE:
            return self.branch_stmt(tok, _ContinueNode, "{{continue}}")
        if typ == _ELSE:
            return self.else_control()
        if typ == _END:
            return _EndNode(self.expect(_RDELIM, "end").pos)
        if typ == _IF:
            return self.control("if")
        if typ == _RANGE:
            return self.control("range")
        if typ == _TEMPLATE:
            return self.template_control()
        if typ == _WITH:
            return self.control("with")
        self.backup()
        tok = self.peek()
        return _ActionNode(tok.pos, self.pipeline("command", _RDELIM))

    def branch_stmt(self, tok: _Tok, cls: type[_Node], what: str) -> _Node:
        t2 = self.next_non_space()
        if t2.typ != _RDELIM:
            self.unexpected(t2, what)
        if self.tree.range_depth == 0:
            self.errorf(f"{what} outside {{{{range}}}}", tok.pos)
        return cls(tok.pos)

    def else_control(self) -> _Node:
        peek = self.peek_non_space()
        if peek.typ in (_IF, _WITH):
            return _ElseNode(peek.pos)
        tok = self.expect(_RDELIM, "else")
        return _ElseNode(tok.pos)

    def control(self, context: str) -> _BranchNode:
        t = self.tree
        start_len = len(t.vars)
        try:
            pipe = self.pipeline(context, _RDELIM)
            if context == "range":
                t.range_depth += 1
            mark = len(t.vars)
            lst, nxt = self.item_list()
            if context == "range":
                t.range_depth -= 1
            else_list: _ListNode | None = None
            if isinstance(nxt, _ElseNode):
                # Variables declared in the body are popped before the else branch runs; they
                # still parse there (Go's parser keeps them), so reference them as undefined.
                outer = {n for n, _ in t.vars[:mark]}
                t.vars = t.vars[:mark] + [(n, _POISON) for n, _ in t.vars[mark:] if n not in outer]
                if context == "if" and self.peek().typ == _IF:
                    self.next()
                    else_list = _ListNode(nxt.pos)
                    else_list.nodes.append(self.control("if"))
                elif context == "with" and self.peek().typ == _WITH:
                    self.next()
                    else_list = _ListNode(nxt.pos)
                    else_list.nodes.append(self.control("with"))
                else:
                    else_list, nxt2 = self.item_list()
                    if not isinstance(nxt2, _EndNode):
                        self.errorf(f"expected end; found {nxt2}", nxt2.pos)
            return _BranchNode(context, pipe.pos, pipe, lst, else_list)
        finally:
            t.vars = t.vars[:start_len]

    def block_control(self) -> _Node:
        context = "block clause"
        tok = self.next_non_space()
        name = self.template_name(tok, context)
        pipe = self.pipeline(context, _RDELIM)
        t = _Tree(name)

        def body() -> None:
            t.root, end = self.item_list()
            if not isinstance(end, _EndNode):
                self.errorf(f"unexpected {end} in {context}", end.pos)

        self.with_tree(t, body)
        self.add(t)
        return _TemplateNode(tok.pos, name, pipe)

    def template_control(self) -> _Node:
        context = "template clause"
        tok = self.next_non_space()
        name = self.template_name(tok, context)
        pipe = None
        if self.next_non_space().typ != _RDELIM:
            self.backup()
            pipe = self.pipeline(context, _RDELIM)
        return _TemplateNode(tok.pos, name, pipe)

    def template_name(self, tok: _Tok, context: str) -> str:
        if tok.typ in (_STRING, _RAWSTRING):
            try:
                return _unquote(tok.val)
            except _SyntaxError:
                self.errorf("invalid syntax", tok.pos)
        self.unexpected(tok, context)

    # -- pipelines ------------------------------------------------------------------------------
    def pipeline(self, context: str, end: int) -> _PipeNode:
        t = self.tree
        tok = self.peek_non_space()
        pipe = _PipeNode(tok.pos)
        top = context != "parenthesized pipeline"
        if top:
            saved_cond_slots, self.cond_slots = self.cond_slots, []
        decl_names: list[_Tok] = []
        while True:
            v = self.peek_non_space()
            if v.typ != _VARIABLE:
                break
            vi = self.i
            self.next()
            tok_after = self.peek()
            nxt = self.peek_non_space()
            if nxt.typ in (_ASSIGN, _DECLARE):
                pipe.is_assign = nxt.typ == _ASSIGN
                self.next_non_space()
                decl_names.append(v)
                break
            if nxt.typ == _CHAR and nxt.val == ",":
                self.next_non_space()
                decl_names.append(v)
                if context == "range" and len(decl_names) < 2:
                    if self.peek_non_space().typ in (_VARIABLE, _RDELIM, _RPAREN):
                        continue
                    self.errorf("range can only initialize variables")
                self.errorf(f"too many declarations in {context}")
            if tok_after.typ == _SPACE:
                self.i = vi
            else:
                self.i = vi
            break
        # Resolve declared/assigned variables to frame slots.  At run time Go evaluates the
        # commands first and only then pushes (or assigns to the latest binding of) the variables,
        # so while the commands are parsed a name keeps its previous meaning (Go's parser already
        # lists it: undefined at run time if it had none), and slots are settled afterwards.
        pending: list[tuple[int, _VariableNode]] = []
        for v in decl_names:
            node = _VariableNode(v.pos, v.val)
            prior = t.lookup(v.val)
            pending.append((len(t.vars), node))
            t.vars.append((v.val, _POISON if prior is None else prior))
            pipe.decl.append(node)
        while True:
            tok = self.next_non_space()
            if tok.typ == end:
                self.check_pipeline(pipe, context, tok)
                for idx, _ in reversed(pending):
                    del t.vars[idx]
                for _, node in pending:
                    name = node.ident[0]
                    if pipe.is_assign:
                        slot = t.lookup(name)
                        node.slot = _POISON if slot is None else slot
                        if slot is None:
                            t.vars.append((name, _POISON))
                    else:
                        node.slot = t.new_slot()
                        if self.cond_depth:
                            # Declared inside an and/or argument that may be skipped: later uses
                            # fall back to the previous binding unless this one ran (see _load).
                            prior = t.lookup(name)
                            t.vars.append((name, (node.slot, _POISON if prior is None else prior)))
                            self.cond_slots.append(node.slot)
                        else:
                            t.vars.append((name, node.slot))
                if top:
                    pipe.cond_slots, self.cond_slots = self.cond_slots, saved_cond_slots
                return pipe
            if tok.typ in (
                _BOOL,
                _CHARCONST,
                _COMPLEX,
                _DOT,
                _FIELD,
                _IDENT,
                _NUMBER,
                _NIL,
                _RAWSTRING,
                _STRING,
                _VARIABLE,
                _LPAREN,
            ):
                self.backup()
                pipe.cmds.append(self.command())
            else:
                self.unexpected(tok, context)

    def check_pipeline(self, pipe: _PipeNode, context: str, tok: _Tok) -> None:
        if not pipe.cmds:
            self.errorf(f"missing value for {context}", tok.pos)
        for i, c in enumerate(pipe.cmds[1:]):
            if isinstance(c.args[0], (_BoolNode, _DotNode, _NilNode, _NumberNode, _StringNode)):
                self.errorf(f"non executable command in pipeline stage {i + 2}", c.pos)

    def command(self) -> _CommandNode:
        cmd = _CommandNode(self.peek_non_space().pos)
        while True:
            self.peek_non_space()
            a = cmd.args
            # and/or skip the evaluation of their arguments after the first decisive one.
            cond = len(a) >= 2 and isinstance(a[0], _IdentifierNode) and a[0].ident in ("and", "or")
            self.cond_depth += cond
            try:
                operand = self.operand()
            finally:
                self.cond_depth -= cond
            if operand is not None:
                cmd.args.append(operand)
            tok = self.next()
            if tok.typ == _SPACE:
                continue
            if tok.typ in (_RDELIM, _RPAREN):
                self.backup()
            elif tok.typ != _PIPE:
                self.unexpected(tok, "operand")
            break
        if not cmd.args:
            self.errorf("empty command")
        return cmd

    def operand(self) -> _Node | None:
        node = self.term()
        if node is None:
            return None
        if self.peek().typ == _FIELD:
            chain = _ChainNode(self.peek().pos, node)
            while self.peek().typ == _FIELD:
                chain.add(self.next().val)
            if isinstance(node, _FieldNode):
                return _FieldNode(chain.pos, str(chain))
            if isinstance(node, _VariableNode):
                return _VariableNode(chain.pos, str(chain), node.slot)
            if isinstance(node, (_BoolNode, _StringNode, _NumberNode, _NilNode, _DotNode)):
                self.errorf(f"unexpected . after term {go_quote(str(node))}", node.pos)
            return chain
        return node

    def term(self) -> _Node | None:
        tok = self.next_non_space()
        typ = tok.typ
        if typ == _IDENT:
            if self.funcs is not None and tok.val not in self.funcs and tok.val not in BUILTINS:
                self.errorf(f"function {go_quote(tok.val)} not defined", tok.pos)
            return _IdentifierNode(tok.pos, tok.val)
        if typ == _DOT:
            return _DotNode(tok.pos)
        if typ == _NIL:
            return _NilNode(tok.pos)
        if typ == _VARIABLE:
            return self.use_var(tok)
        if typ == _FIELD:
            return _FieldNode(tok.pos, tok.val)
        if typ == _BOOL:
            return _BoolNode(tok.pos, tok.val == "true")
        if typ in (_CHARCONST, _COMPLEX, _NUMBER):
            return self.new_number(tok)
        if typ == _LPAREN:
            if self.paren_depth >= MAX_PAREN_DEPTH:
                self.errorf("max expression depth exceeded", tok.pos)
            self.paren_depth += 1
            try:
                return self.pipeline("parenthesized pipeline", _RPAREN)
            finally:
                self.paren_depth -= 1
        if typ in (_STRING, _RAWSTRING):
            try:
                s = _unquote(tok.val)
            except _SyntaxError:
                self.errorf("invalid syntax", tok.pos)
            return _StringNode(tok.pos, tok.val, s)
        self.backup()
        return None

    def use_var(self, tok: _Tok) -> _VariableNode:
        name = tok.val.split(".")[0]
        slot = self.tree.lookup(name)
        if slot is None:
            self.errorf(f"undefined variable {go_quote(name)}", tok.pos)
        return _VariableNode(tok.pos, tok.val, slot)

    def new_number(self, tok: _Tok) -> _NumberNode:
        text = tok.val
        n = _NumberNode(tok.pos, text)
        if tok.typ == _CHARCONST:
            try:
                v, _, i = _unquote_char(text, 1, "'")
            except _SyntaxError:
                self.errorf("invalid syntax", tok.pos)
            if text[i:] != "'":
                self.errorf(f"malformed character constant: {text}", tok.pos)
            n.int64 = v
            n.is_int = n.is_uint = n.is_float = True
            n.float64 = float(v)
            return n
        if tok.typ == _COMPLEX:
            # "re+imi": split at the sign that starts the imaginary part.
            k = max(text.rfind("+", 1), text.rfind("-", 1))
            while k > 0 and text[k - 1] in "eEpP":
                k = max(text.rfind("+", 1, k - 1), text.rfind("-", 1, k - 1))
            re_v = _parse_float(text[:k]) if k > 0 else None
            im_v = _parse_float(text[k:-1]) if k > 0 else None
            if re_v is None or im_v is None:
                self.errorf(f"illegal number syntax: {go_quote(text)}", tok.pos)
            self.simplify_complex(n, complex(re_v, im_v))
            return n
        if text.endswith("i"):
            f = _parse_float(text[:-1])
            if f is not None:
                self.simplify_complex(n, complex(0, f))
                return n
        iv = _parse_int_base0(text)
        if iv is not None:
            if 0 <= iv < 1 << 64:
                n.is_uint = True
            if -(1 << 63) <= iv < 1 << 63:
                n.is_int = True
                n.int64 = iv
        if n.is_int or n.is_uint:
            n.is_float = True
            n.float64 = float(iv) if iv is not None else 0.0
            if not n.is_int:
                n.int64 = iv if iv is not None else 0
        else:
            f = _parse_float(text)
            if f is not None:
                if not any(c in text for c in ".eEpP"):
                    self.errorf(f"integer overflow: {go_quote(text)}", tok.pos)
                n.is_float = True
                n.float64 = f
                if f == int(f) and -(1 << 63) <= int(f) < 1 << 63:
                    n.is_int = True
                    n.int64 = int(f)
                if f == int(f) and 0 <= int(f) < 1 << 64:
                    n.is_uint = True
        if not (n.is_int or n.is_uint or n.is_float):
            self.errorf(f"illegal number syntax: {go_quote(text)}", tok.pos)
        return n

    @staticmethod
    def simplify_complex(n: _NumberNode, c: complex) -> None:
        n.is_complex = True
        n.complex128 = c
        if c.imag == 0:
            n.is_float = True
            n.float64 = c.real
            if c.real == int(c.real) and -(1 << 63) <= int(c.real) < 1 << 63:
                n.is_int = True
                n.int64 = int(c.real)


# --------------------------------------------------------------------------------------------
# Compiler: parse tree -> closures
# --------------------------------------------------------------------------------------------

Stmt = Callable[["_State", Any], None]
Val = Callable[["_State", Any], Any]
Cmd = Callable[["_State", Any, Any], Any]


class _Budget:
    """What one execution may still spend; shared by the {{template}} calls it makes. Checked per
    range iteration and per call, not per write: without them a template writes at most its own
    text and the values it prints once each, so a plain template pays nothing per write."""

    __slots__ = ("name", "out", "seen", "size", "steps")

    def __init__(self, name: str, out: list[str]) -> None:
        self.name = name
        self.out = out
        self.steps = MAX_RANGE_STEPS
        self.seen = 0      # pieces of out already counted into size
        self.size = 0

    def tick(self) -> None:
        self.steps -= 1
        if self.steps < 0:
            raise TemplateError(f"template: {self.name}: more than {MAX_RANGE_STEPS} range iterations")
        if len(self.out) - self.seen > 16:   # measured every few pieces: a small loop pays nothing
            self.measure()

    def measure(self) -> None:
        out = self.out
        for i in range(self.seen, len(out)):
            self.size += len(out[i])
        self.seen = len(out)
        if self.size > MAX_OUTPUT:
            raise TemplateError(f"template: {self.name}: output larger than {MAX_OUTPUT >> 20} MiB")


class _State:
    __slots__ = ("budget", "depth", "funcs", "tmpls", "vars", "w")

    def __init__(
        self,
        w: Callable[[str], None],
        vars: list[Any],
        funcs: Mapping[str, Callable[..., Any]],
        tmpls: dict[str, _Compiled],
        depth: int,
        budget: _Budget,
    ) -> None:
        self.w = w
        self.vars = vars
        self.funcs = funcs
        self.tmpls = tmpls
        self.depth = depth
        self.budget = budget


class _Compiled:
    __slots__ = ("name", "nslots", "run")

    def __init__(self, name: str, run: Stmt, nslots: int) -> None:
        self.name = name
        self.run = run
        self.nslots = nslots


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


def _oneline(e: BaseException) -> str:
    msg = str(e) or type(e).__name__
    return " ".join(msg.split("\n"))


def _noop(st: _State, dot: Any) -> None:
    return None


def _is_poison(slot: Any) -> bool:
    return type(slot) is int and slot < 0


def _load(vars: list[Any], slot: Any, pre: str, name: str) -> Any:
    """Read a variable through conditional bindings: the first one that was declared wins."""
    while type(slot) is tuple:
        v = vars[slot[0]]
        if v is not _UNSET:
            return v
        slot = slot[1]
    v = vars[slot] if slot >= 0 else _UNSET
    if v is _UNSET:
        raise TemplateError(pre + "undefined variable: " + name)
    return v


def _store(vars: list[Any], slot: Any, value: Any, pre: str, name: str) -> None:
    """Assign to the latest binding that exists at run time (Go's setVar)."""
    while type(slot) is tuple:
        if vars[slot[0]] is not _UNSET:
            vars[slot[0]] = value
            return
        slot = slot[1]
    if slot < 0:
        raise TemplateError(pre + "undefined variable: " + name)
    vars[slot] = value


def _field_slow(v: Any, k: str, pre: str, boxed: bool = False) -> Any:
    """One ``.k`` step on a receiver that is not a plain dict.

    ``boxed``: the receiver was read out of a container, so Go reports its static type as
    ``interface {}`` in errors.
    """
    if v is NOVALUE:
        return NOVALUE
    if v is None:
        raise TemplateError(pre + f"nil pointer evaluating interface {{}}.{k}")
    if isinstance(v, Mapping):
        return _cv(v.get(k, NOVALUE)) if k in v else NOVALUE
    if type(v) is JSONNumber and k in _NUMBER_METHODS:
        return _number_method(v, k, [], pre)
    if _has_go_attr(v, k):
        a = getattr(v, k)
        return a() if callable(a) else a
    raise TemplateError(pre + f"can't evaluate field {k} in type {'interface {}' if boxed else _gotype(v)}")


def _has_go_attr(v: Any, k: str) -> bool:
    return (
        not isinstance(v, (str, int, float, complex, list, tuple, bytes, bytearray))
        and k[:1].isupper()
        and hasattr(v, k)
    )


_NUMBER_METHODS = ("String", "Int64", "Float64")


def _number_method(v: JSONNumber, k: str, args: list[Any], pre: str) -> Any:
    if args:
        raise TemplateError(pre + f"wrong number of args for {k}: want 0 got {len(args)}")
    s = str(v)
    if k == "String":
        return s
    try:
        if k == "Int64":
            r = _parse_int_base0(s) if s[:1].isdigit() or s[:1] == "-" else None
            if r is None or "_" in s or (len(s) > 1 and s.lstrip("-")[:1] == "0"):
                r = int(s, 10)
            return r
        return float(s)
    except ValueError:
        kind = "ParseInt" if k == "Int64" else "ParseFloat"
        raise TemplateError(
            pre + f"error calling {k}: strconv.{kind}: parsing {go_quote(s)}: invalid syntax"
        ) from None


def _chain(v: Any, names: list[str], pre: str) -> Any:
    """Walk ``.a.b.c`` from receiver ``v``; NOVALUE for a missing key."""
    boxed = False
    for k in names:
        if type(v) is dict:
            v = v.get(k, NOVALUE)
            t = type(v)
            if t is int or t is float:
                v = _num(v)
        else:
            v = _field_slow(v, k, pre, boxed)
        boxed = True
    return v


def _field_getter(names: list[str], pre: str, missing: Any) -> Val:
    """A getter for ``.a.b`` on dot; ``missing`` is what a missing key yields."""
    n = len(names)
    if n == 1:
        k = names[0]

        def g1(st: _State, dot: Any) -> Any:
            if type(dot) is dict:
                v = dot.get(k, missing)
                t = type(v)
                if t is int or t is float:
                    return _num(v)
                return v
            v = _field_slow(dot, k, pre)
            return missing if v is NOVALUE else v

        return g1
    if n == 2:
        k1, k2 = names

        def g2(st: _State, dot: Any) -> Any:
            if type(dot) is dict:
                v = dot.get(k1, NOVALUE)
                if type(v) is dict:
                    v = v.get(k2, missing)
                    t = type(v)
                    if t is int or t is float:
                        return _num(v)
                    return v
            v = _chain(dot, names, pre)
            return missing if v is NOVALUE else v

        return g2

    def gn(st: _State, dot: Any) -> Any:
        v = _chain(dot, names, pre)
        return missing if v is NOVALUE else v

    return gn


def _method_call(recv: Any, k: str, args: list[Any], pre: str) -> Any:
    """``.k arg...`` (or ``X | .k``) on ``recv``: a method call in Go."""
    if recv is NOVALUE:
        return NOVALUE
    if recv is None:
        raise TemplateError(pre + f"nil pointer evaluating interface {{}}.{k}")
    if isinstance(recv, Mapping):
        raise TemplateError(pre + f"{k} is not a method but has arguments")
    if type(recv) is JSONNumber and k in _NUMBER_METHODS:
        return _number_method(recv, k, args, pre)
    if _has_go_attr(recv, k):
        a = getattr(recv, k)
        if not callable(a):
            raise TemplateError(pre + f"{k} has arguments but cannot be invoked as function")
        try:
            return a(*args)
        except Exception as e:
            raise TemplateError(pre + f"error calling {k}: {_oneline(e)}") from e
    raise TemplateError(pre + f"can't evaluate field {k} in type {_gotype(recv)}")


def _ideal_constant(n: _NumberNode) -> tuple[bool, Any]:
    """(ok, value-or-error-message) for a number literal used without a type context."""
    if n.is_complex:
        return True, n.complex128
    t = n.text
    is_hex_int = len(t) > 2 and t[0] == "0" and t[1] in "xX" and not any(c in t for c in "pP")
    if n.is_float and not is_hex_int and t[0] != "'" and any(c in t for c in ".eEpP"):
        return True, n.float64
    if n.is_int:
        return True, n.int64
    if n.is_uint:
        return False, f"{t} overflows int"
    return True, NOVALUE


class _Compiler:
    def __init__(self, parse_name: str, text: str, tname: str) -> None:
        self.parse_name = parse_name
        self.text = text
        self.tname = tname

    def pre(self, node: _Node) -> str:
        pos = node.pos
        line = self.text.count("\n", 0, pos) + 1
        col = pos - (self.text.rfind("\n", 0, pos) + 1)
        return f"template: {self.parse_name}:{line}:{col}: executing {go_quote(self.tname)} at <{node}>: "

    def fail(self, node: _Node, msg: str) -> Val:
        """A closure that raises an execution error when (and only when) it runs."""
        err = self.pre(node) + msg

        def f(st: _State, dot: Any, final: Any = None) -> Any:
            raise TemplateError(err)

        return f

    # -- statements -----------------------------------------------------------------------------
    def list_(self, node: _ListNode | None) -> Stmt:
        if node is None:
            return _noop
        fs: list[Stmt] = []
        texts: list[str] = []
        for n in node.nodes:
            if isinstance(n, _CommentNode):
                continue
            if isinstance(n, _TextNode):
                texts.append(n.text)
                continue
            if texts and isinstance(n, _ActionNode) and not n.pipe.decl:
                # Fuse the text before a printing action into the action's closure.
                fs.append(self.action(n, "".join(texts)))
                texts = []
                continue
            if texts:
                fs.append(self.text_stmt("".join(texts)))
                texts = []
            fs.append(self.stmt(n))
        if texts:
            fs.append(self.text_stmt("".join(texts)))
        if not fs:
            return _noop
        if len(fs) == 1:
            return fs[0]
        if len(fs) == 2:
            f0, f1 = fs

            def run2(st: _State, dot: Any) -> None:
                f0(st, dot)
                f1(st, dot)

            return run2
        ft = tuple(fs)

        def run(st: _State, dot: Any) -> None:
            for f in ft:
                f(st, dot)

        return run

    @staticmethod
    def text_stmt(text: str) -> Stmt:
        def run(st: _State, dot: Any) -> None:
            st.w(text)

        return run

    def stmt(self, n: _Node) -> Stmt:
        if isinstance(n, _ActionNode):
            return self.action(n)
        if isinstance(n, _BranchNode):
            if n.kind == "range":
                return self.range_(n)
            return self.if_with(n)
        if isinstance(n, _TemplateNode):
            return self.template(n)
        if isinstance(n, _BreakNode):

            def brk(st: _State, dot: Any) -> None:
                raise _Break

            return brk
        if isinstance(n, _ContinueNode):

            def cont(st: _State, dot: Any) -> None:
                raise _Continue

            return cont
        if isinstance(n, _ListNode):
            return self.list_(n)
        raise TemplateError(f"template: {self.parse_name}: unknown node: {n}")  # pragma: no cover

    def shower(self, n: _ActionNode) -> Callable[[Any], str]:
        """How an action prints a non-string value (Go refuses to print functions)."""
        pre = self.pre(n)
        pipe = n.pipe

        def show(v: Any) -> str:
            if callable(v) and not isinstance(v, (Mapping, list, tuple, str, type)):
                raise TemplateError(pre + f"can't print {pipe} of type {_gotype(v)}")
            return _print_value(v)

        return show

    def action(self, n: _ActionNode, text: str = "") -> Stmt:
        pipe = n.pipe
        if pipe.decl:
            ev = self.pipe(pipe)

            def run_decl(st: _State, dot: Any) -> None:
                ev(st, dot)

            return run_decl
        ev = self.pipe_value(pipe)
        pre = self.pre(n)

        def show(v: Any) -> str:
            if callable(v) and not isinstance(v, (Mapping, list, tuple, str, type)):
                raise TemplateError(pre + f"can't print {pipe} of type {_gotype(v)}")
            return _print_value(v)

        if text:

            def run_text(st: _State, dot: Any) -> None:
                w = st.w
                w(text)
                v = ev(st, dot)
                w(v if type(v) is str else show(v))

            return run_text

        def run(st: _State, dot: Any) -> None:
            v = ev(st, dot)
            st.w(v if type(v) is str else show(v))

        return run

    def if_with(self, n: _BranchNode) -> Stmt:
        # Without declarations the raw value will do: nil and NOVALUE are both false.
        ev = self.pipe(n.pipe) if n.pipe.decl else self.pipe_value(n.pipe)
        body = self.list_(n.list)
        els = self.list_(n.else_list) if n.else_list is not None else None
        if n.kind == "with":
            if els is None:

                def with_(st: _State, dot: Any) -> None:
                    v = ev(st, dot)
                    if v:
                        body(st, v)

                return with_

            def with_else(st: _State, dot: Any) -> None:
                v = ev(st, dot)
                if v:
                    body(st, v)
                else:
                    els(st, dot)

            return with_else
        if els is None:

            def if_(st: _State, dot: Any) -> None:
                if ev(st, dot):
                    body(st, dot)

            return if_

        def if_else(st: _State, dot: Any) -> None:
            if ev(st, dot):
                body(st, dot)
            else:
                els(st, dot)

        return if_else

    def range_(self, n: _BranchNode) -> Stmt:
        pipe = n.pipe
        ev = self.pipe_value(pipe)
        pre = self.pre(pipe.cmds[-1])
        slots = [d.slot for d in pipe.decl]
        nd = len(slots)
        for d in pipe.decl:
            if _is_poison(d.slot):
                return self.fail(d, f"undefined variable: {d.ident[0]}")
        plain = all(type(sl) is int for sl in slots)
        names = [d.ident[0] for d in pipe.decl]
        s0 = slots[0] if nd and plain else 0
        s1 = slots[1] if nd > 1 and plain else 0
        body = self.list_(n.list)
        els = self.list_(n.else_list) if n.else_list is not None else None
        loops = _has_loop_control(n.list)
        else_breaks = _has_loop_control(n.else_list)

        def iterate(st: _State, items: Iterable[tuple[Any, Any]]) -> bool:
            ran = False
            vars = st.vars
            tick = st.budget.tick
            for i, e in items:
                ran = True
                tick()
                if not plain:
                    for sl, nm, x in zip(slots, names, (e,) if nd == 1 else (i, e), strict=False):
                        _store(vars, sl, x, pre, nm)
                elif nd == 1:
                    vars[s0] = e
                elif nd == 2:
                    vars[s0] = i
                    vars[s1] = e
                if loops:
                    try:
                        body(st, e)
                    except _Continue:
                        pass
                    except _Break:
                        break
                else:
                    body(st, e)
            return ran

        def run(st: _State, dot: Any) -> None:
            val = ev(st, dot)
            if val is None:
                val = NOVALUE
            if nd:
                for sl, nm in zip(slots, names, strict=True):
                    if plain:
                        st.vars[sl] = val
                    else:
                        _store(st.vars, sl, val, pre, nm)
            t = type(val)
            if t is list or t is tuple:
                if nd != 2 and not loops and plain:
                    # Fast path: no index variable and no break/continue.
                    if val:
                        vars = st.vars
                        tick = st.budget.tick
                        for e in val:
                            tick()
                            te = type(e)
                            if te is int or te is float:
                                e = _num(e)
                            if nd:
                                vars[s0] = e
                            body(st, e)
                        return
                elif iterate(st, ((i, _cv(e)) for i, e in enumerate(val))):
                    return
            elif t is dict or isinstance(val, Mapping):
                if iterate(st, ((k, _cv(val[k])) for k in _sorted_keys(val))):
                    return
            elif isinstance(val, int) and not isinstance(val, bool):
                if nd > 1:
                    raise TemplateError(pre + f"can't use {val} to iterate over more than one variable")
                if iterate(st, ((NOVALUE, i) for i in range(int(val)))):
                    return
            elif val is NOVALUE:
                pass
            elif isinstance(val, (list, tuple)):
                if iterate(st, ((i, _cv(e)) for i, e in enumerate(val))):
                    return
            else:
                raise TemplateError(pre + f"range can't iterate over {sprint(val)}")
            if els is not None:
                if else_breaks:
                    # Go recovers a {{break}} of the else branch in the same walkRange (it just
                    # ends the branch); a {{continue}} there reaches the enclosing range.
                    try:
                        els(st, dot)
                    except _Break:
                        pass
                else:
                    els(st, dot)

        return run

    def template(self, n: _TemplateNode) -> Stmt:
        name = n.name
        ev = self.pipe(n.pipe) if n.pipe is not None else None
        pre = self.pre(n)

        def run(st: _State, dot: Any) -> None:
            t = st.tmpls.get(name)
            if t is None:
                raise TemplateError(pre + f"template {go_quote(name)} not defined")
            if st.depth >= MAX_EXEC_DEPTH:
                raise TemplateError(pre + f"exceeded maximum template depth ({MAX_EXEC_DEPTH})")
            newdot = ev(st, dot) if ev is not None else NOVALUE
            vars = [_UNSET] * t.nslots
            vars[0] = newdot
            st.budget.measure()
            st.budget.tick()
            t.run(_State(st.w, vars, st.funcs, st.tmpls, st.depth + 1, st.budget), newdot)

        return run

    # -- pipelines ------------------------------------------------------------------------------
    def pipe_value(self, pipe: _PipeNode) -> Val:
        """The raw value of a pipeline without declarations (may be None for a nil result)."""
        if pipe.cond_slots:
            inner = self.pipe_value_(pipe)
            resets = tuple(pipe.cond_slots)

            def reset(st: _State, dot: Any) -> Any:
                vars = st.vars
                for s in resets:
                    vars[s] = _UNSET  # not declared (yet) in this run of the statement
                return inner(st, dot)

            return reset
        return self.pipe_value_(pipe)

    def pipe_value_(self, pipe: _PipeNode) -> Val:
        cmds = pipe.cmds
        c0: Val = self.command(cmds[0], True)
        if len(cmds) == 1:
            return c0
        if len(cmds) == 2:
            fused = self.fused_call(cmds[0], c0, cmds[1])
            if fused is not None:
                return fused
        rest: list[Cmd] = [self.command(c, False) for c in cmds[1:]]
        if len(rest) == 1:
            r0 = rest[0]

            def ev2(st: _State, dot: Any) -> Any:
                v = c0(st, dot)
                return r0(st, dot, NOVALUE if v is None else v)

            return ev2
        rt = tuple(rest)

        def evn(st: _State, dot: Any) -> Any:
            v = c0(st, dot)
            for c in rt:
                v = c(st, dot, NOVALUE if v is None else v)
            return v

        return evn

    def fused_call(self, first: _CommandNode, c0: Val, second: _CommandNode) -> Val | None:
        """``X | fn`` (a function without arguments, e.g. ``$now | Quote``) as one closure."""
        ident = second.args[0]
        if len(second.args) != 1 or not isinstance(ident, _IdentifierNode) or ident.ident in ("and", "or"):
            return None
        name = ident.ident
        builtin = BUILTINS.get(name)
        pre_id = self.pre(ident)
        pre_cmd = self.pre(second) + f"error calling {name}: "
        undefined = pre_id + f"{go_quote(name)} is not a defined function"
        w = first.args[0]
        slot = -1
        if (
            isinstance(w, _VariableNode)
            and len(w.ident) == 1
            and len(first.args) == 1
            and type(w.slot) is int
        ):
            slot = w.slot
        var_name = w.ident[0] if isinstance(w, _VariableNode) else ""
        var_pre = self.pre(w)

        def fused(st: _State, dot: Any) -> Any:
            if slot >= 0:
                v = st.vars[slot]
                if v is _UNSET:
                    raise TemplateError(var_pre + f"undefined variable: {var_name}")
            else:
                v = c0(st, dot)
            fn = st.funcs.get(name) or builtin
            if fn is None:
                raise TemplateError(undefined)
            try:
                return fn(None if v is NOVALUE else v)
            except _ArgError as e:
                raise TemplateError(pre_id + str(e)) from None
            except Exception as e:
                raise TemplateError(pre_cmd + _oneline(e)) from e

        return fused

    def pipe(self, pipe: _PipeNode) -> Val:
        """A pipeline's value as Go's evalPipeline returns it (nil -> NOVALUE), declaring variables."""
        ev = self.pipe_value(pipe)
        if not pipe.decl:

            def val(st: _State, dot: Any) -> Any:
                v = ev(st, dot)
                return NOVALUE if v is None else v

            return val
        for d in pipe.decl:
            if _is_poison(d.slot):
                return self.fail(d, f"undefined variable: {d.ident[0]}")
        slots = tuple(d.slot for d in pipe.decl)
        if any(type(sl) is not int for sl in slots):
            pre = self.pre(pipe)
            names = [d.ident[0] for d in pipe.decl]

            def store(st: _State, dot: Any) -> Any:
                v = ev(st, dot)
                if v is None:
                    v = NOVALUE
                for sl, nm in zip(slots, names, strict=True):
                    _store(st.vars, sl, v, pre, nm)
                return v

            return store
        if len(slots) == 1:
            s = slots[0]

            def decl1(st: _State, dot: Any) -> Any:
                v = ev(st, dot)
                if v is None:
                    v = NOVALUE
                st.vars[s] = v
                return v

            return decl1

        def decln(st: _State, dot: Any) -> Any:
            v = ev(st, dot)
            if v is None:
                v = NOVALUE
            for s in slots:
                st.vars[s] = v
            return v

        return decln

    # -- commands -------------------------------------------------------------------------------
    def command(self, cmd: _CommandNode, first: bool) -> Any:
        """First command: (st, dot) -> value.  Later commands: (st, dot, final) -> value."""
        w = cmd.args[0]
        if isinstance(w, _FieldNode):
            return self.field_cmd(w, w.ident, None, cmd, first)
        if isinstance(w, _ChainNode):
            if isinstance(w.node, _NilNode):
                return self.fail(w, f"indirection through explicit nil in {w}")
            if isinstance(w.node, _PipeNode):
                base = self.pipe(w.node)
            else:
                base = self.arg(w.node, raw=True)
            return self.field_cmd(w, w.field, base, cmd, first)
        if isinstance(w, _IdentifierNode):
            return self.func_cmd(w, cmd, first)
        if isinstance(w, _VariableNode):
            var = self.var_getter(w)
            if len(w.ident) == 1:
                if len(cmd.args) > 1 or not first:
                    return self.fail(w, f"can't give argument to non-function {w}")
                return var
            return self.field_cmd(w, w.ident[1:], var, cmd, first)
        if len(cmd.args) > 1 or not first:
            return self.fail(w, f"can't give argument to non-function {w}")
        if isinstance(w, _PipeNode):
            return self.pipe(w)
        if isinstance(w, _NilNode):
            return self.fail(w, "nil is not a command")
        if isinstance(w, _DotNode):

            def dot_(st: _State, dot: Any) -> Any:
                return dot

            return dot_
        return self.const(w)

    def const(self, w: _Node) -> Val:
        if isinstance(w, _NumberNode):
            ok, v = _ideal_constant(w)
            if not ok:
                return self.fail(w, v)
        elif isinstance(w, _BoolNode):
            v = w.val
        elif isinstance(w, _StringNode):
            v = w.text
        else:  # pragma: no cover
            return self.fail(w, f"can't evaluate command {go_quote(str(w))}")

        def c(st: _State, dot: Any) -> Any:
            return v

        return c

    def var_getter(self, w: _VariableNode) -> Val:
        slot = w.slot
        name = w.ident[0]
        pre = self.pre(w)
        if type(slot) is tuple:

            def cond_var(st: _State, dot: Any) -> Any:
                return _load(st.vars, slot, pre, name)

            return cond_var
        if slot < 0:
            return self.fail(w, f"undefined variable: {name}")

        def var(st: _State, dot: Any) -> Any:
            v = st.vars[slot]
            if v is _UNSET:
                raise TemplateError(pre + f"undefined variable: {name}")
            return v

        return var

    def field_cmd(self, w: _Node, names: list[str], base: Val | None, cmd: _CommandNode, first: bool) -> Any:
        """``.a.b``/``$x.a.b``/``(pipe).a.b``, possibly with arguments (a method call)."""
        pre = self.pre(w)
        has_args = len(cmd.args) > 1 or not first
        if not has_args:
            if base is None:
                return _field_getter(names, pre, NOVALUE)
            b = base

            def chained(st: _State, dot: Any) -> Any:
                return _chain(b(st, dot), names, pre)

            return chained
        getters = [self.arg(a) for a in cmd.args[1:]]
        head, last = names[:-1], names[-1]

        def method(st: _State, dot: Any, final: Any = _MISSING) -> Any:
            recv = base(st, dot) if base is not None else dot
            if head:
                recv = _chain(recv, head, pre)
            if recv is NOVALUE:
                return NOVALUE
            args = [g(st, dot) for g in getters]
            if final is not _MISSING:
                args.append(None if final is NOVALUE else final)
            return _method_call(recv, last, args, pre)

        if first:

            def method0(st: _State, dot: Any) -> Any:
                return method(st, dot)

            return method0
        return method

    def arg(self, n: _Node, raw: bool = False) -> Val:
        """An argument as a function receives it: nil/missing -> None."""
        if isinstance(n, _DotNode):

            def dot_(st: _State, dot: Any) -> Any:
                return None if dot is NOVALUE else dot

            return dot_
        if isinstance(n, _NilNode):

            def nil(st: _State, dot: Any) -> Any:
                return None

            return nil
        if isinstance(n, _FieldNode):
            return _field_getter(n.ident, self.pre(n), None)
        if isinstance(n, _VariableNode):
            var = self.var_getter(n)
            if len(n.ident) > 1:
                names = n.ident[1:]
                pre = self.pre(n)

                def vchain(st: _State, dot: Any) -> Any:
                    v = _chain(var(st, dot), names, pre)
                    return None if v is NOVALUE else v

                return vchain

            def vget(st: _State, dot: Any) -> Any:
                v = var(st, dot)
                return None if v is NOVALUE else v

            return vget
        if isinstance(n, _PipeNode):
            p = self.pipe(n)

            def pget(st: _State, dot: Any) -> Any:
                v = p(st, dot)
                return None if v is NOVALUE else v

            return pget
        if isinstance(n, _IdentifierNode):
            cmd = _CommandNode(n.pos)
            cmd.args.append(n)
            f: Val = self.func_cmd(n, cmd, True)
            return f
        if isinstance(n, _ChainNode):
            cmd = _CommandNode(n.pos)
            cmd.args.append(n)
            c: Val = self.command(cmd, True)

            def cget(st: _State, dot: Any) -> Any:
                v = c(st, dot)
                return None if v is NOVALUE else v

            return cget
        return self.const(n)

    def func_cmd(self, ident: _IdentifierNode, cmd: _CommandNode, first: bool) -> Any:
        name = ident.ident
        pre_id = self.pre(ident)
        pre_cmd = self.pre(cmd) + f"error calling {name}: "
        getters = tuple(self.arg(a) for a in cmd.args[1:])
        builtin = BUILTINS.get(name)
        undefined = pre_id + f"{go_quote(name)} is not a defined function"

        def resolve(st: _State) -> Callable[..., Any]:
            fn = st.funcs.get(name)
            if fn is None:
                if builtin is None:
                    raise TemplateError(undefined)
                return builtin
            return fn

        def invoke(fn: Callable[..., Any], args: Any) -> Any:
            try:
                return fn(*args)
            except _ArgError as e:
                raise TemplateError(pre_id + str(e)) from None
            except Exception as e:
                raise TemplateError(pre_cmd + _oneline(e)) from e

        if name in ("and", "or") and builtin is not None:
            is_or = name == "or"
            arity = pre_id + f"wrong number of args for {name}: want at least 1 got 0"

            def andor(st: _State, dot: Any, final: Any = _MISSING) -> Any:
                fn = st.funcs.get(name)
                if fn is not None:
                    args = [g(st, dot) for g in getters]
                    if final is not _MISSING:
                        args.append(None if final is NOVALUE else final)
                    return invoke(fn, args)
                if not getters and final is _MISSING:
                    raise TemplateError(arity)
                v = None
                for g in getters:
                    v = g(st, dot)
                    if bool(v) is is_or:
                        return v
                if final is not _MISSING:
                    v = final
                return v

            if first:

                def andor0(st: _State, dot: Any) -> Any:
                    return andor(st, dot)

                return andor0
            return andor

        n = len(getters)
        if first:
            if n == 0:

                def call0(st: _State, dot: Any) -> Any:
                    fn = st.funcs.get(name) or resolve(st)
                    try:
                        return fn()
                    except _ArgError as e:
                        raise TemplateError(pre_id + str(e)) from None
                    except Exception as e:
                        raise TemplateError(pre_cmd + _oneline(e)) from e

                return call0
            if n == 1:
                g0 = getters[0]

                def call1(st: _State, dot: Any) -> Any:
                    fn = st.funcs.get(name) or resolve(st)
                    a0 = g0(st, dot)
                    try:
                        return fn(a0)
                    except _ArgError as e:
                        raise TemplateError(pre_id + str(e)) from None
                    except Exception as e:
                        raise TemplateError(pre_cmd + _oneline(e)) from e

                return call1
            if n == 2:
                g0, g1 = getters

                def call2(st: _State, dot: Any) -> Any:
                    fn = st.funcs.get(name) or resolve(st)
                    a0 = g0(st, dot)
                    a1 = g1(st, dot)
                    try:
                        return fn(a0, a1)
                    except _ArgError as e:
                        raise TemplateError(pre_id + str(e)) from None
                    except Exception as e:
                        raise TemplateError(pre_cmd + _oneline(e)) from e

                return call2

            def calln(st: _State, dot: Any) -> Any:
                fn = st.funcs.get(name) or resolve(st)
                return invoke(fn, [g(st, dot) for g in getters])

            return calln
        if n == 0:

            def pcall0(st: _State, dot: Any, final: Any) -> Any:
                fn = st.funcs.get(name) or resolve(st)
                try:
                    return fn(None if final is NOVALUE else final)
                except _ArgError as e:
                    raise TemplateError(pre_id + str(e)) from None
                except Exception as e:
                    raise TemplateError(pre_cmd + _oneline(e)) from e

            return pcall0

        def pcalln(st: _State, dot: Any, final: Any) -> Any:
            fn = st.funcs.get(name) or resolve(st)
            args = [g(st, dot) for g in getters]
            args.append(None if final is NOVALUE else final)
            return invoke(fn, args)

        return pcalln


def _range_items(val: Any, pre: str) -> Any:
    """Elements for ``{{range}}`` with fewer than two variables (lists are handled inline)."""
    if val is None or val is NOVALUE:
        return None
    if isinstance(val, (list, tuple)):
        return [_cv(e) for e in val] or None
    if isinstance(val, Mapping):
        return [_cv(val[k]) for k in _sorted_keys(val)] or None
    if isinstance(val, int) and not isinstance(val, bool):
        # lazily: the budget stops {{range 100000000}} before a list that size exists
        return (GoInt(i) for i in range(int(val))) if val > 0 else None
    raise TemplateError(pre + "range can't iterate over " + sprint(val))


def _range_pairs(val: Any, pre: str) -> Any:
    """(index/key, element) pairs for ``{{range $i, $e := ...}}`` (lists are handled inline)."""
    if val is None or val is NOVALUE:
        return None
    if isinstance(val, (list, tuple)):
        return [(i, _cv(e)) for i, e in enumerate(val)] or None
    if isinstance(val, Mapping):
        return [(k, _cv(val[k])) for k in _sorted_keys(val)] or None
    if isinstance(val, int) and not isinstance(val, bool):
        raise TemplateError(pre + f"can't use {val} to iterate over more than one variable")
    raise TemplateError(pre + "range can't iterate over " + sprint(val))


class _CodeGen:
    """Compiles a template's statements into one Python function (expressions stay closures).

    Text becomes ``w("...")``, if/with become ``if``, range becomes a ``for`` loop (so break and
    continue are Python's own), and every expression is a call of its compiled closure.  This
    removes the per-statement call overhead of the closure tree, which the compiler falls back to
    when Python refuses the generated code (e.g. nesting beyond its static limits).
    """

    def __init__(self, comp: _Compiler) -> None:
        self.comp = comp
        self.lines: list[str] = []
        self.env: dict[str, Any] = {
            "NOVALUE": NOVALUE,
            "_num": _num,
            "_noop": _noop,
            "_Break": _Break,
            "_Continue": _Continue,
        }
        self.n = 0
        self.brk = ["break"]  # how {{break}} is spelled in the current context

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def const(self, obj: Any, prefix: str = "K") -> str:
        k = self.name(prefix)
        self.env[k] = obj
        return k

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def build(self, root: _ListNode | None, label: str) -> Stmt:
        self.emit(0, "def run(st, dot):")
        self.emit(1, "w = st.w")
        self.emit(1, "V = st.vars")
        self.block(root, 1, "dot")
        src = "\n".join(self.lines) + "\n"
        code = compile(src, f"<template {label}>", "exec")
        exec(code, self.env)  # the source was generated above from the parse tree
        fn: Stmt = self.env["run"]
        return fn

    def block(self, node: _ListNode | None, depth: int, dot: str) -> None:
        start = len(self.lines)
        texts: list[str] = []
        for n in node.nodes if node is not None else ():
            if isinstance(n, _CommentNode):
                continue
            if isinstance(n, _TextNode):
                texts.append(n.text)
                continue
            if texts:
                self.emit(depth, f"w({''.join(texts)!r})")
                texts = []
            self.stmt(n, depth, dot)
        if texts:
            self.emit(depth, f"w({''.join(texts)!r})")
        if len(self.lines) == start:
            self.emit(depth, "pass")

    def stmt(self, n: _Node, depth: int, dot: str) -> None:
        comp = self.comp
        if isinstance(n, _ActionNode):
            pipe = n.pipe
            if pipe.decl:
                self.emit(depth, f"{self.const(comp.pipe(pipe), 'E')}(st, {dot})")
                return
            ev = self.const(comp.pipe_value(pipe), "E")
            show = self.const(comp.shower(n), "S")
            self.emit(depth, f"v = {ev}(st, {dot})")
            self.emit(depth, f"w(v if type(v) is str else {show}(v))")
        elif isinstance(n, _BranchNode):
            if n.kind == "range":
                self.range_(n, depth, dot)
            elif n.kind == "if":
                ev = self.const(comp.pipe(n.pipe) if n.pipe.decl else comp.pipe_value(n.pipe), "E")
                self.emit(depth, f"if {ev}(st, {dot}):")
                self.block(n.list, depth + 1, dot)
                if n.else_list is not None:
                    self.emit(depth, "else:")
                    self.block(n.else_list, depth + 1, dot)
            else:
                ev = self.const(comp.pipe(n.pipe) if n.pipe.decl else comp.pipe_value(n.pipe), "E")
                d = self.name("d")
                self.emit(depth, f"{d} = {ev}(st, {dot})")
                self.emit(depth, f"if {d}:")
                self.block(n.list, depth + 1, d)
                if n.else_list is not None:
                    self.emit(depth, "else:")
                    self.block(n.else_list, depth + 1, dot)
        elif isinstance(n, _TemplateNode):
            self.emit(depth, f"{self.const(comp.template(n), 'T')}(st, {dot})")
        elif isinstance(n, _BreakNode):
            self.emit(depth, self.brk[-1])
        elif isinstance(n, _ContinueNode):
            self.emit(depth, "continue")
        elif isinstance(n, _ListNode):
            self.block(n, depth, dot)
        else:  # pragma: no cover
            raise TemplateError(f"template: {comp.parse_name}: unknown node: {n}")

    def range_(self, n: _BranchNode, depth: int, dot: str) -> None:
        comp = self.comp
        pipe = n.pipe
        pre = comp.pre(pipe.cmds[-1])
        for var in pipe.decl:
            if _is_poison(var.slot):
                fail = self.const(comp.fail(var, "undefined variable: " + var.ident[0]), "F")
                self.emit(depth, f"{fail}(st, {dot})")
                return
        if any(type(var.slot) is not int for var in pipe.decl):
            # Assigning to conditional bindings: rare enough to leave to the closure compiler.
            closure = self.const(comp.range_(n), "T")
            if len(self.brk) > 1 and _has_loop_control(n.else_list):
                self.emit(depth, "try:")
                self.emit(depth + 1, f"{closure}(st, {dot})")
                self.emit(depth, "except _Continue:")
                self.emit(depth + 1, "continue")
            else:
                self.emit(depth, f"{closure}(st, {dot})")
            return
        slots = [var.slot for var in pipe.decl]
        nd = len(slots)
        ev = self.const(comp.pipe_value(pipe), "E")
        r, it, d, k, t, tk = (self.name(x) for x in ("r", "it", "d", "k", "t", "tk"))
        self.emit(depth, f"{r} = {ev}(st, {dot})")
        self.emit(depth, f"if {r} is None:")
        self.emit(depth + 1, f"{r} = NOVALUE")
        for sl in slots:
            self.emit(depth, f"V[{sl}] = {r}")
        self.emit(depth, f"if type({r}) is list:")
        if nd == 2:
            self.emit(depth + 1, f"{it} = enumerate({r}) if {r} else None")
            helper = self.const(lambda val: _range_pairs(val, pre), "R")
        else:
            self.emit(depth + 1, f"{it} = {r} or None")
            helper = self.const(lambda val: _range_items(val, pre), "R")
        self.emit(depth, "else:")
        self.emit(depth + 1, f"{it} = {helper}({r})")
        self.emit(depth, f"if {it} is not None:")
        self.emit(depth + 1, f"{tk} = st.budget.tick")
        self.emit(depth + 1, f"for {k + ', ' if nd == 2 else ''}{d} in {it}:")
        self.emit(depth + 2, f"{tk}()")
        self.emit(depth + 2, f"{t} = type({d})")
        self.emit(depth + 2, f"if {t} is int or {t} is float:")
        self.emit(depth + 3, f"{d} = _num({d})")
        if nd == 1:
            self.emit(depth + 2, f"V[{slots[0]}] = {d}")
        elif nd == 2:
            self.emit(depth + 2, f"V[{slots[0]}] = {k}")
            self.emit(depth + 2, f"V[{slots[1]}] = {d}")
        self.brk.append("break")
        self.block(n.list, depth + 2, d)
        self.brk.pop()
        if n.else_list is not None:
            self.emit(depth, "else:")
            if _has_loop_control(n.else_list):
                # A {{break}} in the else branch only ends the branch (Go recovers it in the same
                # walkRange); {{continue}} stays Python's and reaches the enclosing loop, as in Go.
                self.emit(depth + 1, "try:")
                self.brk.append("raise _Break")
                self.block(n.else_list, depth + 2, dot)
                self.brk.pop()
                self.emit(depth + 1, "except _Break:")
                self.emit(depth + 2, "pass")
            else:
                self.block(n.else_list, depth + 1, dot)


def _has_loop_control(n: _Node | None) -> bool:
    """Whether a range body contains a break/continue that belongs to it."""
    if n is None:
        return False
    if isinstance(n, (_BreakNode, _ContinueNode)):
        return True
    if isinstance(n, _ListNode):
        return any(_has_loop_control(c) for c in n.nodes)
    if isinstance(n, _BranchNode):
        if n.kind == "range":
            return _has_loop_control(n.else_list)
        return _has_loop_control(n.list) or _has_loop_control(n.else_list)
    return False


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

_EMPTY_FUNCS: Mapping[str, Callable[..., Any]] = {}


class Template:
    """A compiled template; :meth:`execute` it as often as needed (it keeps no per-run state)."""

    __slots__ = ("_main", "_tmpls", "name")

    def __init__(self, name: str, main: _Compiled, tmpls: dict[str, _Compiled]) -> None:
        self.name = name
        self._main = main
        self._tmpls = tmpls

    @property
    def templates(self) -> frozenset[str]:
        """Names of the templates defined by the text (including this one)."""
        return frozenset(self._tmpls)

    def execute(self, data: Any, funcs: Mapping[str, Callable[..., Any]] | None = None) -> str:
        """Render with ``data`` as dot; ``funcs`` supplies (or overrides) functions by name."""
        out: list[str] = []
        main = self._main
        root = NOVALUE if data is None else data
        vars = [_UNSET] * main.nslots
        vars[0] = root
        st = _State(out.append, vars, funcs if funcs is not None else _EMPTY_FUNCS, self._tmpls, 0,
                    _Budget(self.name, out))
        try:
            main.run(st, root)
        except TemplateError:
            raise
        except RecursionError:
            raise TemplateError(f"template: {self.name}: template nesting too deep") from None
        except (_Break, _Continue):  # pragma: no cover - the parser rejects these outside range
            raise TemplateError(f"template: {self.name}: break/continue outside range") from None
        except Exception as e:  # pragma: no cover - defensive: never leak other exception types
            raise TemplateError(f"template: {self.name}: internal error: {_oneline(e)}") from e
        return "".join(out)

    def __repr__(self) -> str:
        return f"Template({self.name!r})"


def parse(text: str, name: str = "template", funcs: Collection[str] | None = None) -> Template:
    """Parse and compile ``text``.

    With ``funcs`` (the names of functions that :meth:`Template.execute` will be given, besides
    the builtins) an unknown function is a parse error, as in Go; without it, the check is
    deferred to execution.
    """
    try:
        parser = _Parser(name, text, frozenset(funcs) if funcs is not None else None)
        _, trees = parser.parse()
        compiled: dict[str, _Compiled] = {}
        for tname, tree in trees.items():
            comp = _Compiler(name, text, tname)
            try:
                if not _CODEGEN:
                    raise ValueError("code generation disabled")
                run = _CodeGen(comp).build(tree.root, tname)
            except (SyntaxError, RecursionError, MemoryError, ValueError):
                run = comp.list_(tree.root)  # beyond Python's static nesting limits
            compiled[tname] = _Compiled(tname, run, tree.nslots)
    except _ParseError as e:
        raise TemplateError(str(e)) from None
    except TemplateError:
        raise
    except RecursionError:
        raise TemplateError(f"template: {name}: template nesting too deep") from None
    except Exception as e:  # pragma: no cover - defensive
        raise TemplateError(f"template: {name}: internal parse error: {_oneline(e)}") from e
    return Template(name, compiled[name], compiled)
