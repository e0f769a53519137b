"""The pure Stage engine: which Stage an object is in next, when, and what to write.

No I/O happens here.  :meth:`StageEngine.plan` is called for every watch event of
every Pod and Node, so Stages are indexed by kind, selectors are compiled
closures and objects are never copied.  :meth:`StageEngine.actions` renders the
chosen Stage's steps into concrete writes, in kwok v0.8.0's order
(``pkg/utils/lifecycle/next.go``), for the shard to send.

kwok semantics reproduced here (``pkg/utils/lifecycle``):

* matching: a Stage without a selector never matches; the selector's labels,
  annotations, jq and CEL conditions are ANDed (see :mod:`.selector`); a CEL
  evaluation error aborts matching for the object (no plan);
* choice among matches (``Lifecycle.Match``): one match is taken as is; else
  each weight (``weight``, or ``weightFrom`` which falls back to ``weight`` when
  it yields nothing) is evaluated; when none is valid, or all are zero, the
  choice is uniform (over the valid ones when some are invalid); else a stage is
  drawn with probability weight/total;
* delay (``Stage.Delay``): ``durationMilliseconds`` or ``durationFrom`` (a
  RFC 3339 time means "that time minus now", else a Go duration string); the
  jitter is an *upper bound*: the delay is ``duration + rand[0, jitter-duration)``
  when jitter > duration, else ``jitter``;
* writes (``doStageSteps``): per step, event; then (unless deleted) the
  finalizers JSON patch, delete, the rendered patch, the rendered apply.  A
  patch whose ``type`` is unset is a strategic merge patch for Pods and Nodes and
  a JSON merge patch for everything else.  Patches that would not change the
  object are dropped, as kwok's controllers skip them.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
import random
import re
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast

import yaml

from shardlet.stages import blockyaml
from shardlet.stages.jq import JQError, JQLimitError
from shardlet.stages.model import (
    ApplySpec,
    DelaySpec,
    ExpressionFrom,
    FinalizerSpec,
    PatchSpec,
    Stage,
    StageError,
    template_error_type,
)
from shardlet.stages.selector import CelError, Duration, MatchError, parse_go_duration

__all__ = [
    "Actions",
    "Apply",
    "Delete",
    "Event",
    "Patch",
    "Plan",
    "StageEngine",
    "finalizer_ops",
    "parse_rfc3339",
    "yaml_to_json",
]

PatchType = Literal["json", "merge", "strategic"]
ApplyType = Literal["apply", "merge", "strategic"]
_NS: Final = 1_000_000_000
_MS: Final = 1_000_000


# =========================================================================== results


@dataclass(frozen=True, slots=True)
class Plan:
    """The Stage an object enters next and after how many seconds (>= 0)."""

    stage: Stage
    delay: float


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Patch:
    """A PATCH of the object (``subresource`` None: the object itself)."""

    subresource: str | None
    type: PatchType
    body: Any
    impersonation: str | None = None


@dataclass(frozen=True, slots=True)
class Apply:
    """A create-or-patch of the object the rendered template describes (``steps[].apply``)."""

    subresource: str | None
    type: ApplyType
    body: Any
    impersonation: str | None = None
    field: str = ""        # the Stage's field it came from, for errors: spec.next.steps[0].apply


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete the object (kwok deletes with grace period 0)."""


Action = Event | Patch | Delete | Apply


@dataclass(frozen=True, slots=True)
class Actions:
    """What to do for a Stage, in kwok's order.

    ``event``/``patches``/``delete`` cover ``spec.next`` (at most one event; the
    patches come before the delete).  ``ordered`` is the exact sequence for
    ``spec.steps`` (several events, applies, a delete between patches);
    ``immediate_next``: plan again right away with the object the last patch
    returned (kwok re-queues only when a patch was sent and nothing was deleted).
    """

    event: Event | None
    patches: list[Patch]
    delete: bool
    immediate_next: bool
    events: list[Event] = field(default_factory=list)
    applies: list[Apply] = field(default_factory=list)
    ordered: list[Action] = field(default_factory=list)


# =========================================================================== time and numbers


_RFC3339: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:(Z)|([+-])(\d{2}):(\d{2}))"
)


def parse_rfc3339(s: str) -> int | None:
    """Go's ``time.Parse(time.RFC3339Nano, s)`` as Unix nanoseconds, or None."""
    m = _RFC3339.fullmatch(s)
    if not m:
        return None
    y, mo, d, h, mi, sec = (int(m.group(i)) for i in range(1, 7))
    try:
        dt.datetime(y, mo, d, h, mi, sec)
    except ValueError:
        return None
    frac = m.group(7) or ""
    ns = int((frac + "000000000")[:9]) if frac else 0
    offset = 0
    if m.group(8) is None:
        oh, om = int(m.group(10)), int(m.group(11))
        if oh > 23 or om > 59:
            return None
        offset = (oh * 3600 + om * 60) * (1 if m.group(9) == "+" else -1)
    return (calendar.timegm((y, mo, d, h, mi, sec, 0, 0, 0)) - offset) * _NS + ns


_GO_INT: Final = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|0[0-7_]*|[1-9][0-9_]*)")


def _go_parse_int(s: str) -> int | None:
    """Go's ``strconv.ParseInt(s, 0, 64)``, or None."""
    if not _GO_INT.fullmatch(s):
        return None
    sign = -1 if s[0] == "-" else 1
    body = s.lstrip("+-")
    prefixed = len(body) > 1 and body[1] in "xXbBoO"
    digits = body[2:] if prefixed else body
    # underscores only between digits, or between the base prefix and a digit
    check = ("0" + digits) if prefixed else digits
    if "_" in check and (check.startswith("_") or check.endswith("_") or "__" in check):
        return None
    plain = digits.replace("_", "")
    if not plain:
        return None
    if prefixed:
        base = {"x": 16, "b": 2, "o": 8}[body[1].lower()]
    elif len(body) > 1 and body[0] == "0":
        base = 8
    else:
        base = 10
    try:
        v = sign * int(plain, base)
    except ValueError:
        return None
    return v if -(2**63) <= v < 2**63 else None


def _to_ns(now: dt.datetime | float) -> int:
    if isinstance(now, dt.datetime):
        if now.tzinfo is None:
            now = now.replace(tzinfo=dt.UTC)
        delta = now - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        return (delta.days * 86400 + delta.seconds) * _NS + delta.microseconds * 1000
    return round(now * _NS)


# =========================================================================== YAML -> JSON (go-yaml v2)


class _GoYAMLLoader(yaml.SafeLoader):
    """PyYAML resolving plain scalars like go-yaml v2 (sigs.k8s.io/yaml.YAMLToJSON).

    Differences from PyYAML's YAML 1.1 resolver: y/Y/n/N are booleans, timestamps
    stay strings, no sexagesimal numbers, ``1e3`` is a float, ``0o17`` an int.
    """


_GoYAMLLoader.yaml_implicit_resolvers = {}
_GoYAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$"),
    list("yYnNtTfFoO"),
)
_GoYAMLLoader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"),
                                    ["~", "n", "N", ""])
_GoYAMLLoader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"])
_GoYAMLLoader.add_implicit_resolver("!gonum", re.compile(r"^[-+.0-9]"), list("-+.0123456789"))

_GO_BOOLS: Final = {s: True for s in ("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON")} | {
    s: False for s in ("n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF")
}
_YAML_FLOAT: Final = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_GO_INT_PLAIN: Final = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F]+|0[bB][01]+|0[oO][0-7]+|0[0-7]*|[1-9][0-9]*)")


_GO_SPECIAL_FLOATS: Final = {".nan": math.nan, ".NaN": math.nan, ".NAN": math.nan} | {
    sign + t: val for sign, val in (("", math.inf), ("+", math.inf), ("-", -math.inf)) for t in (".inf", ".Inf", ".INF")
}


def _gonum(s: str) -> Any:
    special = _GO_SPECIAL_FLOATS.get(s)
    if special is not None:
        return special
    if s[0] == ".":
        return float(s) if re.fullmatch(r"\.[0-9]+(?:[eE][-+]?[0-9]+)?", s) else s
    plain = s.replace("_", "")
    if _GO_INT_PLAIN.fullmatch(plain):
        body = plain.lstrip("+-")
        neg = plain.startswith("-")
        if len(body) > 1 and body[1] in "xXbBoO":
            v = int(body[2:], {"x": 16, "b": 2, "o": 8}[body[1].lower()])
        elif len(body) > 1 and body[0] == "0":
            v = int(body, 8)
        else:
            v = int(body)
        v = -v if neg else v
        if -(2**63) <= v < 2**64 and not (plain.startswith("+") and v >= 2**63) and not (neg and v >= 2**63):
            return v
    if _YAML_FLOAT.fullmatch(plain):
        return float(plain)
    return s


def _construct_gonum(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    return _gonum(str(node.value))


def _construct_gobool(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    return _GO_BOOLS.get(str(node.value), str(node.value))


_GO_NULLS: Final = frozenset(("~", "null", "Null", "NULL"))


def _resolve_plain(s: str) -> Any:
    """A non-empty plain scalar as the loader below resolves it (for blockyaml's fast path)."""
    if s in _GO_NULLS:
        return None
    b = _GO_BOOLS.get(s)
    if b is not None:
        return b
    if s[0] in "-+.0123456789":
        v = _gonum(s)
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(s)  # the full path reports it
        return v
    return s


_GoYAMLLoader.add_constructor("!gonum", _construct_gonum)
_GoYAMLLoader.add_constructor("tag:yaml.org,2002:bool", _construct_gobool)

# libyaml's parser with the same Go resolvers and constructors: the profile showed the pure-Python
# parser as a third of a shard's busy time
if hasattr(yaml, "CSafeLoader"):
    class _GoYAMLCLoader(yaml.CSafeLoader):
        yaml_implicit_resolvers = _GoYAMLLoader.yaml_implicit_resolvers
        yaml_constructors = _GoYAMLLoader.yaml_constructors

    _LOADER: type = _GoYAMLCLoader
else:  # pragma: no cover - PyYAML built without libyaml
    _LOADER = _GoYAMLLoader


def _go_float_key(v: float) -> str:
    if math.isnan(v):
        return ".nan"
    if math.isinf(v):
        return ".inf" if v > 0 else "-.inf"
    return f"{v:.7g}".replace("e+0", "e+").replace("e-0", "e-")


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        out: dict[str, Any] = {}
        for k, val in v.items():
            if isinstance(k, str):
                key = k
            elif isinstance(k, bool):
                key = "true" if k else "false"
            elif isinstance(k, int):
                key = str(k)
            elif isinstance(k, float):
                key = _go_float_key(k)
            else:
                raise ValueError(f"unsupported map key of type {type(k).__name__}: {k!r}")
            out[key] = _jsonable(val)
        return out
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"unsupported value: {v}")
    if v is None or isinstance(v, str | int | float):
        return v
    raise ValueError(f"unsupported YAML value of type {type(v).__name__}")


def yaml_to_json(text: str) -> Any:
    """Rendered template text to a JSON value, as kwok's ``yaml.YAMLToJSON`` (first document)."""
    simple, value = blockyaml.parse(text, _resolve_plain)
    if simple:
        return value
    return yaml_to_json_full(text)


def yaml_to_json_full(text: str) -> Any:
    """``yaml_to_json`` by PyYAML alone, without the block fast path."""
    docs = cast(Generator[Any, None, None], yaml.load_all(text, Loader=_LOADER))
    try:
        data = next(docs, None)  # go-yaml v2 reads only the first document
    finally:
        docs.close()
    return _jsonable(data)


# =========================================================================== finalizers and patch checks


def finalizer_ops(current: Sequence[str], spec: FinalizerSpec) -> list[dict[str, Any]]:
    """The JSON patch kwok sends for ``finalizers`` (``finalizersModify``); [] when nothing changes."""

    def add(meta: Sequence[str], items: Sequence[str]) -> list[dict[str, Any]]:
        if meta:
            return [{"op": "add", "path": "/metadata/finalizers/-", "value": f} for f in items if f not in meta]
        return [{"op": "add", "path": "/metadata/finalizers", "value": list(items)}]

    ops: list[dict[str, Any]] = []
    is_empty = False
    if spec.empty:
        is_empty = True
    elif spec.remove:
        removed = [{"op": "remove", "path": f"/metadata/finalizers/{i}"}
                   for i in range(len(current) - 1, -1, -1) if current[i] in spec.remove]
        if len(removed) == len(current):
            is_empty = True
        else:
            ops.extend(removed)
    if not is_empty:
        if spec.add:
            ops.extend(add(current, spec.add))
    else:
        if current:
            ops.append({"op": "remove", "path": "/metadata/finalizers"})
        if spec.add:
            ops.extend(add([], spec.add))
    return ops


def _same(a: Any, b: Any) -> bool:
    """Strict JSON equality (True is not 1)."""
    if a is b:
        return True
    if type(a) is not type(b):
        if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool) and not isinstance(
            b, bool
        ):
            return bool(a == b)
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# strategic-merge list semantics of the core/v1 fields a stage may patch: merge key, or None for
# a "merge" list of primitives; any other list is replaced
_SMP_LISTS: Final[dict[str, dict[tuple[str, ...], str | None]]] = {
    "Pod": {
        ("metadata", "finalizers"): None,
        ("metadata", "ownerReferences"): "uid",
        ("status", "conditions"): "type",
        ("status", "podIPs"): "ip",
        ("status", "hostIPs"): "ip",
        ("status", "resourceClaimStatuses"): "name",
        ("spec", "containers"): "name",
        ("spec", "initContainers"): "name",
        ("spec", "ephemeralContainers"): "name",
        ("spec", "volumes"): "name",
        ("spec", "imagePullSecrets"): "name",
        ("spec", "hostAliases"): "ip",
    },
    "Node": {
        ("metadata", "finalizers"): None,
        ("metadata", "ownerReferences"): "uid",
        ("status", "conditions"): "type",
        ("status", "addresses"): "type",
        ("spec", "podCIDRs"): None,
    },
}
_NO_LISTS: Final[dict[tuple[str, ...], str | None]] = {}


def _merge_changes(orig: Any, patch: Any, path: tuple[str, ...], lists: Mapping[tuple[str, ...], str | None]) -> bool:
    """Whether applying a merge (or strategic merge) ``patch`` to ``orig`` changes it."""
    if isinstance(patch, dict):
        if not isinstance(orig, dict):
            return True
        for k, pv in patch.items():
            if k.startswith("$"):
                return True  # strategic-merge directives: assume a change
            if pv is None:
                if k in orig:
                    return True
                continue
            if k not in orig:
                return True
            if _merge_changes(orig[k], pv, (*path, k), lists):
                return True
        return False
    if isinstance(patch, list) and path in lists and isinstance(orig, list):
        key = lists[path]
        for item in patch:
            if key is None:
                if not any(_same(item, o) for o in orig):
                    return True
                continue
            if not isinstance(item, dict) or key not in item:
                return True
            match = next((o for o in orig if isinstance(o, dict) and _same(o.get(key), item[key])), None)
            if match is None or _merge_changes(match, item, (), _NO_LISTS):
                return True
        return False
    return not _same(orig, patch)


class _PatchFailed(Exception):
    pass


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise _PatchFailed(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]] if path else []


def _cow_parent(doc: Any, tokens: list[str]) -> tuple[Any, Any, str]:
    """Copy the containers along ``tokens[:-1]``; return (new root, parent copy, last token)."""
    if not tokens:
        raise _PatchFailed("cannot address the document root")
    root = _shallow(doc)
    cur = root
    for t in tokens[:-1]:
        if isinstance(cur, dict):
            if t not in cur:
                raise _PatchFailed(f"missing path segment {t!r}")
            cur[t] = _shallow(cur[t])
            cur = cur[t]
        elif isinstance(cur, list):
            i = _list_index(cur, t, allow_end=False)
            cur[i] = _shallow(cur[i])
            cur = cur[i]
        else:
            raise _PatchFailed(f"cannot traverse {type(cur).__name__}")
    return root, cur, tokens[-1]


def _shallow(v: Any) -> Any:
    if isinstance(v, dict):
        return dict(v)
    if isinstance(v, list):
        return list(v)
    return v


def _list_index(lst: list[Any], t: str, allow_end: bool) -> int:
    if t == "-" and allow_end:
        return len(lst)
    if not t.isdigit() or (len(t) > 1 and t[0] == "0"):
        raise _PatchFailed(f"invalid array index {t!r}")
    i = int(t)
    if i > len(lst) or (i == len(lst) and not allow_end):
        raise _PatchFailed(f"array index {i} out of range")
    return i


def _get(doc: Any, tokens: list[str]) -> Any:
    cur = doc
    for t in tokens:
        if isinstance(cur, dict) and t in cur:
            cur = cur[t]
        elif isinstance(cur, list):
            cur = cur[_list_index(cur, t, allow_end=False)]
        else:
            raise _PatchFailed(f"missing path segment {t!r}")
    return cur


def _jp_add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    root, parent, last = _cow_parent(doc, tokens)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_list_index(parent, last, allow_end=True), value)
    else:
        raise _PatchFailed("cannot add to a scalar")
    return root


def _jp_remove(doc: Any, tokens: list[str]) -> Any:
    root, parent, last = _cow_parent(doc, tokens)
    if isinstance(parent, dict):
        if last not in parent:
            raise _PatchFailed(f"missing key {last!r}")
        del parent[last]
    elif isinstance(parent, list):
        del parent[_list_index(parent, last, allow_end=False)]
    else:
        raise _PatchFailed("cannot remove from a scalar")
    return root


def _json_patch(doc: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise _PatchFailed("a JSON patch must be a list")
    for op in ops:
        if not isinstance(op, dict):
            raise _PatchFailed("a JSON patch operation must be an object")
        kind = op.get("op")
        tokens = _pointer(op.get("path"))
        if kind == "add":
            doc = _jp_add(doc, tokens, op.get("value"))
        elif kind == "remove":
            doc = _jp_remove(doc, tokens)
        elif kind == "replace":
            _get(doc, tokens)
            doc = _jp_add(_jp_remove(doc, tokens), tokens, op.get("value")) if tokens else op.get("value")
        elif kind in ("move", "copy"):
            src = _pointer(op.get("from"))
            value = _get(doc, src)
            if kind == "move":
                doc = _jp_remove(doc, src)
            doc = _jp_add(doc, tokens, value)
        elif kind == "test":
            if not _same(_get(doc, tokens), op.get("value")):
                raise _PatchFailed("test failed")
        else:
            raise _PatchFailed(f"unknown operation {kind!r}")
    return doc


def patch_changes(kind: str, obj: Mapping[str, Any], patch: Patch) -> bool:
    """Whether ``patch`` would change ``obj`` (kwok's checkNeedPatch); unsure means yes."""
    body = patch.body
    if patch.type == "json":
        try:
            return not _same(_json_patch(obj, body), obj)
        except (_PatchFailed, RecursionError):
            return True  # let the API server answer
    lists = _SMP_LISTS.get(kind, _NO_LISTS) if patch.type == "strategic" else _NO_LISTS
    try:
        return _merge_changes(obj, body, (), lists)
    except RecursionError:
        return True


# =========================================================================== engine


class StageEngine:
    """Plans and renders Stages; pure and cheap to call per watch event."""

    def __init__(self, stages: Iterable[Stage], rng: random.Random | None = None) -> None:
        self.stages: tuple[Stage, ...] = tuple(stages)
        self._rng = rng if rng is not None else random.Random()
        by_kind: dict[str, list[Stage]] = {}
        for s in self.stages:
            if s.selector is None:
                continue  # kwok: a Stage without a selector matches nothing
            by_kind.setdefault(s.kind, []).append(s)
        self._by_kind: dict[str, tuple[Stage, ...]] = {k: tuple(v) for k, v in by_kind.items()}
        self._template_error: type[Exception] | None = None
        # Stages whose jq went past a bound (jq.JQLimitError): taken out of play for good, since
        # the same program would burn the same CPU on every event of every object
        self.refused: dict[str, str] = {}
        self._refusals: list[tuple[str, str]] = []

    def _refuse(self, stage: Stage, field: str, e: Exception) -> None:
        msg = f"{field}: {_one_line(str(e))}; the Stage is refused until it is changed"
        self.refused[stage.name] = f'stage "{stage.name}": {msg}'
        self._refusals.append((stage.name, msg))
        rest = tuple(s for s in self._by_kind.get(stage.kind, ()) if s is not stage)
        if rest:
            self._by_kind[stage.kind] = rest
        else:
            self._by_kind.pop(stage.kind, None)

    def take_refusals(self) -> list[tuple[str, str]]:
        """(stage name, one-line error) of the Stages refused since the last call."""
        out, self._refusals = self._refusals, []
        return out

    # ---- indexes
    def kinds(self) -> set[str]:
        """The kinds that some matchable Stage is for."""
        return set(self._by_kind)

    def has_stages_for(self, kind: str) -> bool:
        return kind in self._by_kind

    def stages_for(self, kind: str) -> tuple[Stage, ...]:
        return self._by_kind.get(kind, ())

    # ---- matching
    def matching(self, kind: str, obj: Mapping[str, Any], api_group: str | None = None) -> list[Stage]:
        """Stages whose selector matches, in order; a CEL error raises :class:`MatchError`.

        ``api_group`` (e.g. ``"v1"``, ``"apps/v1"``) defaults to the object's
        ``apiVersion``; when neither is known, every Stage of the kind is tried.
        """
        stages = self._by_kind.get(kind)
        if not stages:
            return []
        if api_group is None:
            av = obj.get("apiVersion")
            api_group = av if isinstance(av, str) and av else None
        out = []
        for s in stages:
            if api_group is not None and s.api_group != api_group:
                continue
            try:
                if s.selector is not None and s.selector.matches(obj):
                    out.append(s)
            except JQLimitError as e:
                self._refuse(s, "spec.selector.matchExpressions", e)
        return out

    def plan(self, kind: str, obj: Mapping[str, Any], now: dt.datetime | float,
             api_group: str | None = None) -> Plan | None:
        """The Stage ``obj`` enters next and its delay, or None when no Stage applies."""
        try:
            matched = self.matching(kind, obj, api_group)
            if not matched:
                return None
            stage = matched[0] if len(matched) == 1 else self._choose(matched, obj)
        except MatchError:
            return None  # kwok: a failing CEL condition fails the match for this object
        if stage is None:
            return None
        delay = self.delay_ns(stage, obj, now)
        if stage.name in self.refused:   # refused on the way (weight or delay): plan without it
            return self.plan(kind, obj, now, api_group)
        return Plan(stage, max(0, delay) / _NS)

    def possible(self, kind: str, obj: Mapping[str, Any], api_group: str | None = None) -> list[Stage]:
        """Every Stage that :meth:`plan` may choose (kwok's ``ListAllPossible``)."""
        try:
            matched = self.matching(kind, obj, api_group)
            if len(matched) <= 1:
                return matched
            weights = [self.weight(s, obj) for s in matched]
        except MatchError:
            return []
        valid = [w for w, ok in weights if ok]
        if not valid:
            return matched
        total = sum(valid)
        if total <= 0:
            if len(valid) == len(matched):
                return matched
            return [s for s, (w, ok) in zip(matched, weights, strict=True) if ok and w >= 0]
        return [s for s, (w, ok) in zip(matched, weights, strict=True) if ok and w > 0]

    def _choose(self, stages: list[Stage], obj: Mapping[str, Any]) -> Stage | None:
        weights: list[int] = []
        total = 0
        errors = 0
        for s in stages:
            w, ok = self.weight(s, obj)
            if ok:
                total += w
                weights.append(w)
            else:
                weights.append(-1)
                errors += 1
        rng = self._rng
        if errors == len(stages):
            return stages[rng.randrange(len(stages))]
        if total <= 0:  # kwok: == 0 (a negative total would make it panic)
            if errors == 0:
                return stages[rng.randrange(len(stages))]
            valid = [s for s, w in zip(stages, weights, strict=True) if w >= 0]
            return valid[rng.randrange(len(valid))]
        off = rng.randrange(total)
        for s, w in zip(stages, weights, strict=True):
            if w <= 0:
                continue
            off -= w
            if off < 0:
                return s
        return stages[-1]

    # ---- weight and delay
    def weight(self, stage: Stage, obj: Mapping[str, Any]) -> tuple[int, bool]:
        """kwok's ``Stage.Weight``: (weight, valid).  A CEL error raises :class:`MatchError`."""
        src = stage.weight_from
        if src is None:
            return stage.weight, True
        if src.cel is not None:
            try:
                return _cel_int64(src.cel.eval(obj)), True
            except CelError as e:
                raise MatchError(f"stage {stage.name!r} weightFrom: {e}") from None
        if src.jq is not None:
            try:
                out = _jq_values(src, obj)
            except JQLimitError as e:
                self._refuse(stage, "spec.weightFrom.expressionFrom", e)
                return 0, False
            if out:
                v = out[0]
                if isinstance(v, str):
                    if v == "":
                        return 0, False
                    n = _go_parse_int(v)
                    return (n, True) if n is not None else (0, False)
                if isinstance(v, int | float) and not isinstance(v, bool):
                    if isinstance(v, float) and not math.isfinite(v):
                        return 0, False
                    return int(v), True
        return stage.weight, True

    def delay_ns(self, stage: Stage, obj: Mapping[str, Any], now: dt.datetime | float) -> int:
        """kwok's ``Stage.Delay`` in nanoseconds (0 on error; may be negative for past times)."""
        d = stage.delay
        if d is None:
            return 0
        now_ns = _to_ns(now)
        try:
            duration, ok = _duration(d.duration_ms or 0, d.duration_from, obj, now_ns)
            if not ok:
                return 0
            jitter_src = _jitter_source(d)
            if d.jitter_ms is None and d.jitter_from is None:
                return duration
            jitter, ok = _duration(d.jitter_ms, jitter_src, obj, now_ns)
        except CelError:
            return 0  # kwok logs the error and plays the stage without delay
        except JQLimitError as e:
            self._refuse(stage, "spec.delay", e)
            return 0
        if not ok:
            return duration
        if jitter <= duration:
            return jitter
        return duration + self._rng.randrange(jitter - duration)

    def delay_range_ns(self, stage: Stage, obj: Mapping[str, Any], now: dt.datetime | float) -> list[int] | None:
        """kwok's ``DelayRangePossible``: [duration] or [duration, jitter]; None without delay."""
        d = stage.delay
        if d is None:
            return None
        now_ns = _to_ns(now)
        duration, ok = _duration(d.duration_ms or 0, d.duration_from, obj, now_ns)
        if not ok:
            return None
        if d.jitter_ms is None and d.jitter_from is None:
            return [duration]
        jitter, ok = _duration(d.jitter_ms, _jitter_source(d), obj, now_ns)
        if not ok:
            return [duration]
        if jitter <= duration:
            return [jitter]
        return [duration, jitter]

    # ---- rendering
    def actions(self, stage: Stage, obj: Mapping[str, Any], funcs: Mapping[str, Callable[..., Any]],
                skip_noop: bool = True) -> Actions:
        """Render ``stage``'s steps for ``obj`` into writes, in kwok's order.

        ``funcs`` are the template functions (``base_funcs()`` plus the shard's
        runtime ones).  Template or YAML errors raise :class:`StageError` naming
        the Stage and the template's field.  With ``skip_noop`` patches that
        would not change ``obj`` are dropped.
        """
        meta = obj.get("metadata")
        current = (meta.get("finalizers") if isinstance(meta, Mapping) else None) or []
        strategic_default = stage.api_group == "v1" and stage.kind in ("Pod", "Node")
        ordered: list[Action] = []
        events: list[Event] = []
        patches: list[Patch] = []
        applies: list[Apply] = []
        deleted = False
        for step in stage.steps:
            if step.event is not None:
                ev = Event(step.event.type, step.event.reason, step.event.message)
                events.append(ev)
                ordered.append(ev)
            if deleted:
                continue
            if step.finalizers is not None:
                ops = finalizer_ops(current, step.finalizers)
                if ops:
                    p = Patch(None, "json", ops)
                    if not skip_noop or patch_changes(stage.kind, obj, p):
                        patches.append(p)
                        ordered.append(p)
            if step.delete:
                deleted = True
                ordered.append(Delete())
                continue
            if step.patch is not None:
                p = self._render_patch(stage, step.patch, obj, funcs, strategic_default)
                if not skip_noop or patch_changes(stage.kind, obj, p):
                    patches.append(p)
                    ordered.append(p)
            if step.apply is not None:
                a = self._render_apply(stage, step.apply, obj, funcs)
                applies.append(a)
                ordered.append(a)
        return Actions(
            event=events[0] if events else None,
            patches=patches,
            delete=deleted,
            immediate_next=stage.immediate_next_stage and bool(patches) and not deleted,
            events=events,
            applies=applies,
            ordered=ordered,
        )

    def render(self, stage: Stage, text_field: str, template: Any, obj: Mapping[str, Any],
               funcs: Mapping[str, Callable[..., Any]]) -> Any:
        """Execute a compiled template and parse its YAML output to JSON."""
        if self._template_error is None:
            self._template_error = template_error_type()
        try:
            text = template.execute(obj, funcs)
        except self._template_error as e:
            raise StageError(f'stage "{stage.name}": {text_field}: {_one_line(str(e))}') from None
        try:
            return yaml_to_json(text)
        except (yaml.YAMLError, ValueError) as e:
            raise StageError(
                f'stage "{stage.name}": {text_field}: rendered text is not valid YAML: {_one_line(str(e))}'
            ) from None

    def _render_patch(self, stage: Stage, spec: PatchSpec, obj: Mapping[str, Any],
                      funcs: Mapping[str, Callable[..., Any]], strategic_default: bool) -> Patch:
        data = self.render(stage, spec.field, spec.template, obj, funcs)
        ptype: PatchType
        if spec.type == "json":
            ptype = "json"
            if spec.root:
                if not isinstance(data, list) or not all(isinstance(op, dict) for op in data):
                    raise StageError(f'stage "{stage.name}": {spec.field}: a json patch must render to a list of '
                                     "operations")
                data = [_prefix_op(op, spec.root) for op in data]
        else:
            if spec.type is not None:
                ptype = spec.type
            else:
                ptype = "strategic" if strategic_default else "merge"
            if spec.root:
                data = {spec.root: data}
        return Patch(spec.subresource or None, ptype, data, spec.impersonation)

    def _render_apply(self, stage: Stage, spec: ApplySpec, obj: Mapping[str, Any],
                      funcs: Mapping[str, Callable[..., Any]]) -> Apply:
        data = self.render(stage, spec.field, spec.template, obj, funcs)
        return Apply(spec.subresource or None, spec.type or "apply", data, spec.impersonation,
                     spec.field.removesuffix(".template"))


def _prefix_op(op: dict[str, Any], root: str) -> dict[str, Any]:
    out = {"op": op.get("op", ""), "path": "/" + root + str(op.get("path", ""))}
    if "value" in op:
        out["value"] = op["value"]
    if op.get("from"):
        out["from"] = op["from"]
    return out


def _one_line(msg: str) -> str:
    return " ".join(msg.split())


def _jq_values(src: ExpressionFrom, obj: Any) -> list[Any]:
    """kwok's ``Query.Execute``: nulls dropped, a runtime error yields nothing."""
    assert src.jq is not None
    try:
        out = src.jq.run(obj)
    except JQLimitError:
        raise   # the Stage is refused (StageEngine._refuse), not merely without a value
    except JQError:
        return []
    return [v for v in out if v is not None]


def _jitter_source(d: DelaySpec) -> ExpressionFrom | None:
    # kwok uses jitterDurationFrom only when it has a jq expression
    src = d.jitter_from
    if src is not None and src.jq is None:
        return None
    return src


def _duration(value_ms: int | None, src: ExpressionFrom | None, obj: Mapping[str, Any],
              now_ns: int) -> tuple[int, bool]:
    """kwok's ``durationFrom.Get`` in nanoseconds; a CEL error raises :class:`CelError`."""
    default = (value_ms * _MS, True) if value_ms is not None else (0, False)
    if src is None:
        return default
    if src.cel is not None:
        return _cel_duration_ns(src.cel.eval(obj)), True
    if src.jq is not None:
        out = _jq_values(src, obj)
        if not out:
            return default
        v = out[0]
        if isinstance(v, str):
            if v == "":
                return 0, False
            t = parse_rfc3339(v)
            if t is not None:
                return t - now_ns, True
            d = parse_go_duration(v)
            if d is not None:
                return d, True
    return default


def _cel_int64(v: Any) -> int:
    if isinstance(v, bool):
        return 1 if v else 0
    if isinstance(v, int):
        return v
    if isinstance(v, float) and math.isfinite(v):
        return int(v)
    if isinstance(v, Duration):
        return v.ns
    raise CelError(f"cannot use {type(v).__name__} as an int64")


def _cel_duration_ns(v: Any) -> int:
    if isinstance(v, str):
        d = parse_go_duration(v)
        if d is None:
            raise CelError(f"invalid duration {v!r}")
        return d
    if isinstance(v, Duration):
        return v.ns
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, float) and math.isfinite(v):
        return int(v)
    raise CelError(f"cannot use {type(v).__name__} as a duration")
