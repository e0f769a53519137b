"""Template functions: kwok's pure functions plus the commonly used part of sprig.

kwok (``pkg/utils/gotpl``) gives every template ``sprig.TxtFuncMap()`` overlaid with its own
``Quote``, ``Now``, ``StartTime``, ``YAML``, ``Version`` and ``NodeConditions``; the controllers add
runtime functions that need the shard's state (see :data:`RUNTIME_FUNC_NAMES`).

Values follow :mod:`shardlet.stages.gotemplate`'s model: ``None`` is nil, numbers read from the
object are :class:`~shardlet.stages.gotemplate.JSONNumber`, containers are dicts and lists.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from shardlet.stages.gotemplate import (
    NOVALUE,
    GoInt,
    JSONNumber,
    _cv,
    _gotype,
    go_quote,
    json_float,
    sprint,
)

__all__ = [
    "KWOK_VERSION",
    "NODE_CONDITIONS",
    "RUNTIME_FUNC_NAMES",
    "GoFloat",
    "base_funcs",
    "go_json",
    "go_yaml",
    "quote",
    "rfc3339nano",
]

#: What kwok v0.8.0 release binaries report for ``Version`` (set by ``-ldflags`` from the git tag).
KWOK_VERSION = "v0.8.0"

RUNTIME_FUNC_NAMES: frozenset[str] = frozenset(
    {
        "NodeIP",
        "NodeName",
        "NodePort",
        "PodIP",
        "NodeIPWith",
        "NodeIPsWith",
        "PodIPWith",
        "PodIPsWith",
    }
)
"""Functions the shard supplies at execute time, with kwok v0.8.0's signatures.

Node stages (``pkg/kwok/controllers/node_controller.go``):

* ``NodeIP() string`` -- the configured node IP (``--node-ip``).
* ``NodeName() string`` -- the configured node name (``--node-name``).
* ``NodePort() int`` -- the kubelet port (``--node-port``), 0 when unset.

Pod stages (``pkg/kwok/controllers/pod_controller.go``):

* ``NodeIP() string`` -- as above.
* ``PodIP() string`` -- the next address from the default CIDR's pool.
* ``NodeIPWith(nodeName string) string`` -- the first host IP of that node (its
  ``status.addresses`` InternalIP/ExternalIP), else ``NodeIP()``.
* ``NodeIPsWith(nodeName string) []string`` -- all host IPs of that node, else ``[NodeIP()]``
  (``[]`` when no node IP is configured).
* ``PodIPWith(nodeName string, hostNetwork bool, uid, name, namespace string) (string, error)`` --
  ``NodeIPWith(nodeName)`` for host-network pods, otherwise the next address from the pool of the
  node's first pod CIDR (``spec.podCIDRs``, else ``spec.podCIDR``, else the default CIDR).
* ``PodIPsWith(nodeName string, hostNetwork bool, uid, name, namespace string) ([]string, error)`` --
  ``NodeIPsWith(nodeName)`` for host-network pods, otherwise one address from each pod CIDR's pool.

kwok has no ``PodIPs``; ``PodIPsWith`` is the multi-address form.
"""


class GoFloat(float):
    """A ``float`` that stays a Go ``float64`` inside a container (see ``gotemplate.GoInt``)."""

    __slots__ = ()


# --------------------------------------------------------------------------------------------
# Go encoding helpers
# --------------------------------------------------------------------------------------------

_JSON_ESC = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_HTML_ESC = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}


def _json_string(s: str, escape_html: bool) -> str:
    if s.isascii() and s.isprintable() and '"' not in s and "\\" not in s:
        if not escape_html or not ("<" in s or ">" in s or "&" in s):
            return '"' + s + '"'
    out = ['"']
    for c in s:
        e = _JSON_ESC.get(c)
        if e is not None:
            out.append(e)
            continue
        o = ord(c)
        if o < 0x20:
            out.append(f"\\u{o:04x}")
        elif escape_html and c in _HTML_ESC:
            out.append(_HTML_ESC[c])
        elif o == 0x2028 or o == 0x2029:
            out.append(f"\\u{o:04x}")
        elif 0xD800 <= o <= 0xDFFF:
            out.append("\\ufffd")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def go_json(v: Any, escape_html: bool = True, indent: str | None = None, _level: int = 0) -> str:
    """Go's ``json.Marshal`` (or ``MarshalIndent(v, "", indent)``) of a template value.

    Map keys are sorted, as Go sorts ``map[string]any`` keys.  Raises ``ValueError`` where Go's
    encoder fails (NaN/Inf, unsupported types).
    """
    if v is None or v is NOVALUE:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, JSONNumber):
        return str(v)
    if isinstance(v, str):
        return _json_string(v, escape_html)
    if isinstance(v, int):
        return int.__repr__(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            raise ValueError(f"json: unsupported value: {sprint(v)}")
        return json_float(v)
    if isinstance(v, (bytes, bytearray)):
        return '"' + base64.b64encode(bytes(v)).decode("ascii") + '"'
    nl = sep = ""
    if indent is not None:
        nl = "\n" + indent * (_level + 1)
        sep = " "
    if isinstance(v, Mapping):
        if not v:
            return "{}"
        items = []
        for k in sorted(v, key=str):
            ks = _json_string(str(k), escape_html)
            items.append(nl + ks + ":" + sep + go_json(v[k], escape_html, indent, _level + 1))
        end = "\n" + indent * _level if indent is not None else ""
        return "{" + ",".join(items) + end + "}"
    if isinstance(v, (list, tuple)):
        if not v:
            return "[]"
        parts = [nl + go_json(e, escape_html, indent, _level + 1) for e in v]
        end = "\n" + indent * _level if indent is not None else ""
        return "[" + ",".join(parts) + end + "]"
    raise ValueError(f"json: unsupported type: {type(v).__name__}")


_PLAIN = re.compile(r"(?:[A-Za-z_/][A-Za-z0-9_./-]*|[1-9][0-9]*[A-Za-z]+)\Z")  # e.g. nginx, 8Gi
_YAML_WORDS = frozenset(["y", "n", "yes", "no", "true", "false", "on", "off", "null"])  # YAML 1.1


def _yaml_escape(c: str) -> str:
    e = _JSON_ESC.get(c)
    if e is not None:
        return e
    o = ord(c)
    if o < 0x20 or 0x7F <= o <= 0x9F or o in (0x2028, 0x2029, 0xFEFF, 0xFFFE, 0xFFFF):
        return f"\\u{o:04x}"
    if 0xD800 <= o <= 0xDFFF:
        return "\\ufffd"
    return c


def _yaml_str(s: str) -> str:
    """A string scalar: plain when unambiguous, else double-quoted (JSON-style escapes)."""
    if _PLAIN.match(s) and s.lower() not in _YAML_WORDS:
        return s
    if s.isascii() and s.isprintable() and '"' not in s and "\\" not in s:
        return '"' + s + '"'
    return '"' + "".join([_yaml_escape(c) for c in s]) + '"'


def _yaml_number(text: str) -> str:
    # YAML 1.1 (PyYAML) only reads "1e+21" as a float with a dot in the mantissa.
    if ("e" in text or "E" in text) and "." not in text:
        i = text.lower().index("e")
        return text[:i] + ".0" + text[i:]
    return text


def _yaml_scalar(v: Any) -> str | None:
    if v is None or v is NOVALUE:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, JSONNumber):
        return _yaml_number(str(v))
    if isinstance(v, str):
        return _yaml_str(v)
    if isinstance(v, int):
        return int.__repr__(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            raise ValueError(f"json: unsupported value: {sprint(v)}")
        return _yaml_number(json_float(v))
    if isinstance(v, (bytes, bytearray)):
        return base64.b64encode(bytes(v)).decode("ascii")
    if isinstance(v, Mapping):
        return None if v else "{}"
    if isinstance(v, (list, tuple)):
        return None if v else "[]"
    raise ValueError(f"json: unsupported type: {type(v).__name__}")


def _yaml_block(v: Any, pad: str, out: list[str]) -> None:
    """Append the lines of a non-empty mapping or sequence, each prefixed by ``pad``."""
    if isinstance(v, Mapping):
        for k in sorted(v, key=str):
            e = v[k]
            key = _yaml_str(str(k))
            sc = _yaml_scalar(e)
            if sc is not None:
                out.append(f"{pad}{key}: {sc}")
            elif isinstance(e, Mapping):
                out.append(f"{pad}{key}:")
                _yaml_block(e, pad + "  ", out)
            else:  # sequences are not indented under their key, as go-yaml writes them
                out.append(f"{pad}{key}:")
                _yaml_block(e, pad, out)
        return
    for e in v:
        sc = _yaml_scalar(e)
        if sc is not None:
            out.append(f"{pad}- {sc}")
            continue
        sub: list[str] = []
        _yaml_block(e, "", sub)
        out.append(f"{pad}- {sub[0]}")
        out.extend(f"{pad}  {line}" for line in sub[1:])


def go_yaml(v: Any) -> str:
    """``sigs.k8s.io/yaml.Marshal`` of a template value: block style, sorted keys, a final newline.

    The text is YAML that reads back as the same JSON value; strings are quoted whenever a plain
    scalar could be read as something else.
    """
    sc = _yaml_scalar(v)
    if sc is not None:
        return sc + "\n"
    out: list[str] = []
    _yaml_block(v, "", out)
    return "\n".join(out) + "\n"


def quote(s: Any) -> str:
    """kwok's ``Quote``: JSON-encode the value; non-strings are then quoted as a Go string."""
    if type(s) is str:
        if (
            s.isascii()
            and s.isprintable()
            and not ('"' in s or "\\" in s or "<" in s or ">" in s or "&" in s)
        ):
            return '"' + s + '"'
        return _json_string(s, True)
    try:
        data = go_json(s)
    except ValueError:
        return go_quote(sprint(s))
    if data[0] == '"':
        return data
    return go_quote(data)


def rfc3339nano(ns: int | None = None) -> str:
    """Go's ``time.Now().UTC().Format(time.RFC3339Nano)`` for a Unix time in nanoseconds."""
    global _SECOND
    if ns is None:
        ns = time.time_ns()
    sec, frac = divmod(ns, 1_000_000_000)
    cached = _SECOND
    if cached[0] == sec:
        s = cached[1]
    else:
        s = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _SECOND = (sec, s)
    if frac:
        return s + f".{frac:09d}".rstrip("0") + "Z"
    return s + "Z"


_SECOND: tuple[int, str] = (-1, "")  # the last formatted second (Now is called per render)


def _dt_to_rfc3339nano(dt: datetime) -> str:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    dt = dt.astimezone(UTC)
    s = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if dt.microsecond:
        s += f".{dt.microsecond:06d}".rstrip("0")
    return s + "Z"


#: kwok's default node conditions (``pkg/utils/gotpl/funcs.go``), as the JSON-standard value the
#: ``NodeConditions`` function returns (the zero ``metav1.Time`` fields encode as null).
NODE_CONDITIONS: tuple[Mapping[str, Any], ...] = (
    {
        "type": "Ready",
        "status": "True",
        "lastHeartbeatTime": None,
        "lastTransitionTime": None,
        "reason": "KubeletReady",
        "message": "kubelet is posting ready status",
    },
    {
        "type": "MemoryPressure",
        "status": "False",
        "lastHeartbeatTime": None,
        "lastTransitionTime": None,
        "reason": "KubeletHasSufficientMemory",
        "message": "kubelet has sufficient memory available",
    },
    {
        "type": "DiskPressure",
        "status": "False",
        "lastHeartbeatTime": None,
        "lastTransitionTime": None,
        "reason": "KubeletHasNoDiskPressure",
        "message": "kubelet has no disk pressure",
    },
    {
        "type": "PIDPressure",
        "status": "False",
        "lastHeartbeatTime": None,
        "lastTransitionTime": None,
        "reason": "KubeletHasSufficientPID",
        "message": "kubelet has sufficient PID available",
    },
    {
        "type": "NetworkUnavailable",
        "status": "False",
        "lastHeartbeatTime": None,
        "lastTransitionTime": None,
        "reason": "RouteCreated",
        "message": "RouteController created a route",
    },
)


# --------------------------------------------------------------------------------------------
# sprig helpers (Masterminds/sprig v3 semantics, spf13/cast conversions)
# --------------------------------------------------------------------------------------------


def _go_value(v: Any) -> Any:
    """Mark a template value stored into a new container as a Go value, not object data."""
    t = type(v)
    if t is int:
        return GoInt(v)
    if t is float:
        return GoFloat(v)
    return v


def empty(given: Any) -> bool:
    """sprig ``empty``: nil, zero numbers, false and empty strings/collections."""
    if given is None or given is NOVALUE:
        return True
    if isinstance(given, (str, list, tuple, Mapping, bytes)):
        return len(given) == 0
    if isinstance(given, (bool, int, float, complex)):
        return given == 0
    return False


def _strval(v: Any) -> str:
    if isinstance(v, str):
        return str(v)
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8", "replace")
    return sprint(v)


def _strslice(v: Any) -> list[str]:
    if v is None or v is NOVALUE:
        return []
    if isinstance(v, (list, tuple)):
        return [_strval(_cv(e)) for e in v if e is not None]
    return [_strval(v)]


_ZERO_DECIMAL = re.compile(r"^(-?\d+)\.0*$")


def _to_int(v: Any) -> int:
    """spf13/cast ``ToInt64`` (errors become 0)."""
    if v is None or v is NOVALUE:
        return 0
    if isinstance(v, bool):
        return 1 if v else 0
    if isinstance(v, str):  # string or json.Number
        s = str(v)
        m = _ZERO_DECIMAL.match(s)
        if m:
            s = m.group(1)
        try:
            return int(s, 0) if not re.fullmatch(r"-?0\d+", s) else int(s, 8)
        except ValueError:
            return 0
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return 0
        return int(v)
    return 0


def _to_float(v: Any) -> float:
    """spf13/cast ``ToFloat64`` (errors become 0)."""
    if v is None or v is NOVALUE:
        return 0.0
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(str(v))
        except ValueError:
            return 0.0
    return 0.0


def _go_div(a: int, b: int) -> int:
    if b == 0:
        raise ZeroDivisionError("runtime error: integer divide by zero")
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _go_mod(a: int, b: int) -> int:
    if b == 0:
        raise ZeroDivisionError("runtime error: integer divide by zero")
    return a - b * _go_div(a, b)


def _str_arg(name: str, v: Any) -> str:
    if isinstance(v, str) and type(v) is not JSONNumber:
        return str(v)
    if v is None or v is NOVALUE:
        raise TypeError("invalid value; expected string")
    raise TypeError(f"wrong type for value; expected string; got {_gotype(v)}")


def _int_arg(v: Any) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return int(v)
    if type(v) is float and v.is_integer():
        return int(v)  # Go converts an integral literal such as 2.0 to an int parameter
    if v is None or v is NOVALUE:
        raise TypeError("invalid value; expected int")
    raise TypeError(f"wrong type for value; expected int; got {_gotype(v)}")


# sprig has no limits here; one Stage object must not take a shard's memory. Both stay far above
# anything a manifest needs (kwok's own templates use neither).
MAX_UNTIL = 100_000
MAX_REPEAT = 1 << 20


def _until(n: Any) -> list[GoInt]:
    count = _int_arg(n)
    if count > MAX_UNTIL:
        raise ValueError(f"until {count}: more than {MAX_UNTIL} items")
    return [GoInt(i) for i in range(count)]


def _repeat(n: Any, s: Any) -> str:
    text, count = _str_arg("repeat", s), max(_int_arg(n), 0)
    if len(text) * count > MAX_REPEAT:
        raise ValueError(f"repeat {count}: result longer than {MAX_REPEAT >> 20} MiB")
    return text * count


def _indent(spaces: Any, v: Any) -> str:
    pad = " " * _int_arg(spaces)
    return pad + _str_arg("indent", v).replace("\n", "\n" + pad)


def _substr(start: Any, end: Any, s: Any) -> str:
    start, end, st = _int_arg(start), _int_arg(end), _str_arg("substr", s)
    if start < 0:
        return st[:end]
    if end < 0 or end > len(st):
        return st[start:]
    return st[start:end]


def _trunc(c: Any, s: Any) -> str:
    n, st = _int_arg(c), _str_arg("trunc", s)
    if n < 0 and len(st) + n > 0:
        return st[len(st) + n :]
    if n >= 0 and len(st) > n:
        return st[:n]
    return st


def _split_list(sep: str, orig: str) -> list[str]:
    if sep == "":
        return list(orig)
    return orig.split(sep)


def _dict(*v: Any) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for i in range(0, len(v), 2):
        key = _strval(v[i])
        d[key] = _go_value(v[i + 1]) if i + 1 < len(v) else ""
    return d


def _get(d: Any, key: Any) -> Any:
    if not isinstance(d, Mapping):
        raise TypeError(f"wrong type for value; expected map[string]interface {{}}; got {_gotype(d)}")
    k = _str_arg("get", key)
    return _cv(d[k]) if k in d else ""


def _has_key(d: Any, key: Any) -> bool:
    if not isinstance(d, Mapping):
        raise TypeError(f"wrong type for value; expected map[string]interface {{}}; got {_gotype(d)}")
    return _str_arg("hasKey", key) in d


def _keys(*dicts: Any) -> list[str]:
    out: list[str] = []
    for d in dicts:
        if not isinstance(d, Mapping):
            raise TypeError(f"wrong type for value; expected map[string]interface {{}}; got {_gotype(d)}")
        out.extend(str(k) for k in d)
    return sorted(out)


def _list_arg(v: Any) -> list[Any] | tuple[Any, ...] | None:
    if v is None or v is NOVALUE:
        return None
    if isinstance(v, (list, tuple)):
        return v
    raise TypeError(f"Cannot find first on type {_gotype(v)}")


def _first(v: Any) -> Any:
    lst = _list_arg(v)
    return _cv(lst[0]) if lst else None


def _last(v: Any) -> Any:
    lst = _list_arg(v)
    return _cv(lst[-1]) if lst else None


def _ternary(vt: Any, vf: Any, v: Any) -> Any:
    if not isinstance(v, bool):
        raise TypeError(f"wrong type for value; expected bool; got {_gotype(v)}")
    return vt if v else vf


def _b64dec(s: Any) -> str:
    try:
        return base64.b64decode(_str_arg("b64dec", s), validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError) as e:
        return f"illegal base64 data: {e}"


def _to_yaml(v: Any) -> str:
    try:
        return go_yaml(v).removesuffix("\n")
    except ValueError:
        return ""


def _to_json(v: Any) -> str:
    try:
        return go_json(v)
    except ValueError:
        return ""


def _to_pretty_json(v: Any) -> str:
    try:
        return go_json(v, indent="  ")
    except ValueError:
        return ""


def _to_raw_json(v: Any) -> str:
    try:
        return go_json(v, escape_html=False)
    except ValueError:
        return ""


def _regex_match(regex: Any, s: Any) -> bool:
    return re.search(_str_arg("regexMatch", regex), _str_arg("regexMatch", s)) is not None


def _sprig_funcs() -> dict[str, Callable[..., Any]]:
    return {
        # defaults / flow
        "default": lambda d, *given: d if not given or empty(given[0]) else given[0],
        "empty": empty,
        "coalesce": lambda *v: next((x for x in v if not empty(x)), None),
        "ternary": _ternary,
        # strings
        "quote": lambda *s: " ".join(go_quote(_strval(x)) for x in s if x is not None and x is not NOVALUE),
        "squote": lambda *s: " ".join("'" + sprint(x) + "'" for x in s if x is not None and x is not NOVALUE),
        "upper": lambda s: _str_arg("upper", s).upper(),
        "lower": lambda s: _str_arg("lower", s).lower(),
        "title": lambda s: re.sub(
            r"(^|[^\w'])(\w)", lambda m: m.group(1) + m.group(2).upper(), _str_arg("title", s)
        ),
        "trim": lambda s: _str_arg("trim", s).strip(" \t\n\r\v\f\x85\xa0"),
        "trimAll": lambda a, s: _str_arg("trimAll", s).strip(_str_arg("trimAll", a)),
        "trimPrefix": lambda a, s: _str_arg("trimPrefix", s).removeprefix(_str_arg("trimPrefix", a)),
        "trimSuffix": lambda a, s: _str_arg("trimSuffix", s).removesuffix(_str_arg("trimSuffix", a)),
        "contains": lambda sub, s: _str_arg("contains", sub) in _str_arg("contains", s),
        "hasPrefix": lambda p, s: _str_arg("hasPrefix", s).startswith(_str_arg("hasPrefix", p)),
        "hasSuffix": lambda p, s: _str_arg("hasSuffix", s).endswith(_str_arg("hasSuffix", p)),
        "repeat": _repeat,
        "substr": _substr,
        "trunc": _trunc,
        "replace": lambda old, new, src: _str_arg("replace", src).replace(
            _str_arg("replace", old), _str_arg("replace", new)
        ),
        "split": lambda sep, s: {
            f"_{i}": p for i, p in enumerate(_split_list(_str_arg("split", sep), _str_arg("split", s)))
        },
        "splitList": lambda sep, s: _split_list(_str_arg("splitList", sep), _str_arg("splitList", s)),
        "join": lambda sep, v: _str_arg("join", sep).join(_strslice(v)),
        "cat": lambda *v: " ".join(sprint(x) for x in v if x is not None and x is not NOVALUE),
        "indent": _indent,
        "nindent": lambda n, v: "\n" + _indent(n, v),
        "toString": _strval,
        "toStrings": _strslice,
        "b64enc": lambda s: base64.b64encode(_str_arg("b64enc", s).encode("utf-8")).decode("ascii"),
        "b64dec": _b64dec,
        "sha256sum": lambda s: hashlib.sha256(_str_arg("sha256sum", s).encode("utf-8")).hexdigest(),
        "uuidv4": lambda: str(uuid.uuid4()),
        "regexMatch": _regex_match,
        # encodings
        "toJson": _to_json,
        "toPrettyJson": _to_pretty_json,
        "toRawJson": _to_raw_json,
        "toYaml": _to_yaml,
        # lists and dicts
        "list": lambda *v: [_go_value(x) for x in v],
        "dict": _dict,
        "get": _get,
        "hasKey": _has_key,
        "keys": _keys,
        "first": _first,
        "last": _last,
        "until": _until,
        # arithmetic (int64, as sprig)
        "add": lambda *v: sum(_to_int(x) for x in v),
        "add1": lambda v: _to_int(v) + 1,
        "sub": lambda a, b: _to_int(a) - _to_int(b),
        "mul": lambda a, *v: math.prod([_to_int(a), *(_to_int(x) for x in v)]),
        "div": lambda a, b: _go_div(_to_int(a), _to_int(b)),
        "mod": lambda a, b: _go_mod(_to_int(a), _to_int(b)),
        "max": lambda a, *v: max([_to_int(a), *(_to_int(x) for x in v)]),
        "min": lambda a, *v: min([_to_int(a), *(_to_int(x) for x in v)]),
        # conversions
        "atoi": lambda s: _atoi(_str_arg("atoi", s)),
        "int": _to_int,
        "int64": _to_int,
        "float64": lambda v: GoFloat(_to_float(v)),
    }


def _atoi(s: str) -> int:
    if not re.fullmatch(r"[+-]?[0-9]+", s):
        return 0
    return int(s)


def base_funcs(
    start_time: datetime | None = None, *, version: str = KWOK_VERSION
) -> dict[str, Callable[..., Any]]:
    """The pure functions every kwok template has: sprig's subset plus kwok's own.

    ``StartTime`` reports ``start_time`` (default: now), formatted like Go's RFC3339Nano in UTC.
    """
    start = _dt_to_rfc3339nano(start_time) if start_time is not None else rfc3339nano()

    def yaml_func(s: Any, *indent: Any) -> str:
        levels = [_int_arg(i) for i in indent]  # func(s any, indent ...int): only one is used
        data = go_yaml(s)
        if len(levels) == 1 and levels[0] > 0:
            pad = " " * (levels[0] * 2)
            data = ("\n" + data).replace("\n", "\n" + pad)
        return data

    funcs = _sprig_funcs()
    funcs.update(
        {
            "Quote": quote,
            "Now": lambda: rfc3339nano(),
            "StartTime": lambda: start,
            "YAML": yaml_func,
            "Version": lambda: version,
            "NodeConditions": lambda: [dict(c) for c in NODE_CONDITIONS],
        }
    )
    return funcs
