"""A fast reader for the plain block YAML that stage templates render to.

Every pod and node a stage touches has its template output parsed, and PyYAML (even with
libyaml) builds a node object per scalar and resolves each in Python: the largest cost of a
shard's stage path. Rendered status templates are almost always the simplest YAML there is:
block mappings and sequences, one ``key: scalar`` per line, double-quoted strings from
``Quote``. This module reads exactly that and gives up (``(False, None)``) on anything else, so
that the caller falls back to the full loader; on what it accepts it returns the same JSON value as
``engine.yaml_to_json`` (go-yaml v2's resolution of plain scalars, via ``resolve_plain``).

Given up on: comments, tabs, NEL/LS/PS line breaks, document markers and directives, anchors,
aliases, tags, block and flow scalars or collections (except ``[]`` and ``{}``), multi-line
scalars, quoted or non-string keys, escapes outside JSON's, duplicate keys, a top level that is
not a block.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

import orjson

# a plain key starting with a letter or underscore; one that resolves to a bool or null (y, no,
# null, ...) is rejected after the match
_KEY: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_./-]*):(?: +|$)")
# characters that open something other than a plain scalar, or that may need a comment or a flow
# context to read
_SPECIAL_START: Final = frozenset("[]{}&*!|>%@`#?,:")
# given up on anywhere in the text, in one scan: what the YAML reader refuses (PyYAML's
# Reader.NON_PRINTABLE) and what YAML 1.1 reads as line breaks besides \n and \r (NEL \x85,
# LS \u2028, PS \u2029), i.e. NON_PRINTABLE's ranges without those three
_REFUSED_CHARS: Final = re.compile(
    "[^\x09\x0A\x0D\x20-\x7E\xA0-\u2027\u202A-\uD7FF\uE000-\uFFFD\U00010000-\U0010ffff]")
# escapes that mean the same in JSON and in YAML 1.1 double quotes (no surrogate halves)
_ESCAPE: Final = re.compile(r"\\(?:[\"\\/bfnrt]|u(?![dD][89a-fA-F])[0-9a-fA-F]{4})|(\\)")


class _Unsupported(Exception):
    pass


def _is_item(content: str) -> bool:
    """A block sequence entry: "-" alone or followed by a space."""
    return content == "-" or content.startswith("- ")


def parse(text: str, resolve_plain: Callable[[str], Any]) -> tuple[bool, Any]:
    """(True, value) when ``text`` is plain block YAML; (False, None) to use the full loader.

    ``resolve_plain`` maps a plain scalar's text to its value as the full loader would; it may
    raise ``ValueError`` to give up.
    """
    if "\t" in text or "#" in text or _REFUSED_CHARS.search(text):
        return False, None
    lines: list[tuple[int, str]] = []
    for raw in text.split("\n"):
        content = raw.strip(" \r")
        if not content:
            continue
        if content.startswith(("---", "...", "%")):
            return False, None
        lines.append((len(raw) - len(raw.lstrip(" ")), content))
    if not lines:
        return False, None
    try:
        value, end = _Reader(lines, resolve_plain).block(0, lines[0][0])
    except (_Unsupported, ValueError):
        return False, None
    if end != len(lines):
        return False, None
    return True, value


class _Reader:
    def __init__(self, lines: list[tuple[int, str]], resolve_plain: Callable[[str], Any]) -> None:
        self.lines = lines
        self.resolve_plain = resolve_plain

    def block(self, i: int, indent: int) -> tuple[Any, int]:
        content = self.lines[i][1]
        if _is_item(content):
            return self.sequence(i, indent)
        return self.mapping(i, indent, content)

    def sequence(self, i: int, indent: int) -> tuple[list[Any], int]:
        out: list[Any] = []
        lines = self.lines
        while i < len(lines):
            ind, content = lines[i]
            if ind < indent:
                break
            if ind > indent:
                raise _Unsupported
            if not _is_item(content):
                break  # the next key of a mapping whose "key:" this sequence shares a column with
            rest = content[1:].lstrip(" ")
            if not rest:
                if i + 1 < len(lines) and lines[i + 1][0] > indent:
                    value, i = self.block(i + 1, lines[i + 1][0])
                else:
                    value, i = None, i + 1
            elif _is_item(rest):
                raise _Unsupported
            elif _KEY.match(rest):
                # "- key: v": a mapping whose keys sit at the column of "key"
                col = ind + len(content) - len(rest)
                value, i = self.mapping(i, col, rest)
            else:
                value, i = self.scalar(rest), i + 1
            out.append(value)
        return out, i

    def mapping(self, i: int, indent: int, first: str) -> tuple[dict[str, Any], int]:
        out: dict[str, Any] = {}
        lines = self.lines
        content = first
        while True:
            m = _KEY.match(content)
            if m is None:
                raise _Unsupported
            key = m.group(1)
            if key in out or not isinstance(self.resolve_plain(key), str):
                raise _Unsupported
            rest = content[m.end():]
            i += 1
            if rest:
                out[key] = self.scalar(rest)
            elif i < len(lines) and lines[i][0] > indent:
                out[key], i = self.block(i, lines[i][0])
            elif i < len(lines) and lines[i][0] == indent and _is_item(lines[i][1]):
                out[key], i = self.sequence(i, indent)  # "key:" then "- item" at the key's column
            else:
                out[key] = None
            if i >= len(lines) or lines[i][0] < indent:
                return out, i
            ind, content = lines[i]
            if ind > indent:
                raise _Unsupported

    def scalar(self, s: str) -> Any:
        c = s[0]
        if c == '"':
            if s[-1] != '"' or len(s) < 2:
                raise _Unsupported
            if "\\" in s and any(m.group(1) for m in _ESCAPE.finditer(s)):
                raise _Unsupported  # an escape only YAML has (\x, \a, \N, ...)
            try:
                v = orjson.loads(s)  # JSON's escapes are a subset of YAML's double-quoted ones
            except orjson.JSONDecodeError:
                raise _Unsupported from None
            if not isinstance(v, str):
                raise _Unsupported
            return v
        if c == "'":
            inner = s[1:-1]
            if len(s) < 2 or s[-1] != "'" or "'" in inner.replace("''", ""):
                raise _Unsupported
            return inner.replace("''", "'")
        if s == "[]":
            return []
        if s == "{}":
            return {}
        if c in _SPECIAL_START or ": " in s or s.endswith(":") or s == "<<" or _is_item(s):
            raise _Unsupported
        return self.resolve_plain(s)
