"""Stage objects (kwok.x-k8s.io/v1alpha1) parsed, validated and compiled once.

A Stage document is turned into a frozen :class:`Stage` whose selectors, jq/CEL
expressions and Go templates are already compiled.  The deprecated ``spec.next``
is converted to ``spec.steps`` exactly as kwok v0.8.0 does
(``pkg/apis/internalversion/conversion.go``)::

    event -> finalizers -> patches (or statusTemplate as a patch of root "status"
    on subresource statusSubresource|"status") -> delete

and ``spec.steps`` wins when both are given.  Every problem raises
:class:`StageError` with a one-line message naming the Stage and the field path,
e.g. ``stage "pod-ready": spec.selector.matchExpressions[1].key: unexpected token ']' at 14``.
"""

from __future__ import annotations

import copy
import functools
import importlib
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final, Literal, Protocol

import yaml

from shardlet.stages.jq import JQError, Query, compile_jq
from shardlet.stages.selector import (
    CelError,
    CelProgram,
    Selector,
    SelectorError,
    compile_cel,
    compile_selector,
)

__all__ = [
    "PROFILES",
    "ApplySpec",
    "DelaySpec",
    "EventSpec",
    "ExpressionFrom",
    "FinalizerSpec",
    "PatchSpec",
    "Stage",
    "StageError",
    "Step",
    "load_profile",
    "load_stage_yaml",
    "load_stages",
    "parse_stage",
]

PROFILES: Final = ("fast", "general", "chaos", "heartbeat", "volume")
PatchType = Literal["json", "merge", "strategic"]
ApplyType = Literal["apply", "merge", "strategic"]


class StageError(ValueError):
    """A Stage is invalid or failed to render; the message is one line naming Stage and field."""


class CompiledTemplate(Protocol):
    """What :mod:`shardlet.stages.gotemplate` returns from ``parse``."""

    def execute(self, data: Any, funcs: Any = None) -> str: ...


# --------------------------------------------------------------------------- compiled pieces


@dataclass(frozen=True, eq=False, slots=True)
class ExpressionFrom:
    """``weightFrom`` / ``durationFrom`` / ``jitterDurationFrom``: a jq or CEL expression."""

    jq: Query | None
    cel: CelProgram | None

    @property
    def source(self) -> str:
        if self.cel is not None:
            return self.cel.source
        return self.jq.source if self.jq is not None else ""


@dataclass(frozen=True, eq=False, slots=True)
class DelaySpec:
    duration_ms: int | None
    duration_from: ExpressionFrom | None
    jitter_ms: int | None
    jitter_from: ExpressionFrom | None


@dataclass(frozen=True, eq=False, slots=True)
class EventSpec:
    type: str
    reason: str
    message: str


@dataclass(frozen=True, eq=False, slots=True)
class FinalizerSpec:
    add: tuple[str, ...]
    remove: tuple[str, ...]
    empty: bool


@dataclass(frozen=True, eq=False, slots=True)
class PatchSpec:
    subresource: str
    root: str
    template_text: str
    template: CompiledTemplate
    type: PatchType | None
    impersonation: str | None
    field: str  # e.g. "spec.next.statusTemplate", for error messages


@dataclass(frozen=True, eq=False, slots=True)
class ApplySpec:
    subresource: str
    template_text: str
    template: CompiledTemplate
    type: ApplyType | None
    impersonation: str | None
    field: str


@dataclass(frozen=True, eq=False, slots=True)
class Step:
    event: EventSpec | None = None
    finalizers: FinalizerSpec | None = None
    delete: bool = False
    patch: PatchSpec | None = None
    apply: ApplySpec | None = None


@dataclass(frozen=True, eq=False, slots=True)
class Stage:
    """A compiled Stage.  ``steps`` is kwok's internal form of ``next``/``steps``."""

    name: str
    kind: str
    api_group: str
    selector: Selector | None  # None: kwok never matches a Stage without a selector
    weight: int
    weight_from: ExpressionFrom | None
    delay: DelaySpec | None
    steps: tuple[Step, ...]
    immediate_next_stage: bool
    raw: Mapping[str, Any]

    @property
    def status_template(self) -> str | None:
        """The template of the first patch of root ``status`` (what ``next.statusTemplate`` becomes)."""
        for s in self.steps:
            if s.patch is not None and s.patch.root == "status":
                return s.patch.template_text
        return None


# --------------------------------------------------------------------------- templates


# The Go-template engine (shardlet.stages.gotemplate) and the template functions
# (shardlet.stages.funcs) are imported on first use.


@functools.lru_cache(maxsize=1)
def _template_func_names() -> frozenset[str]:
    funcs = importlib.import_module("shardlet.stages.funcs")
    return frozenset(funcs.base_funcs()) | frozenset(funcs.RUNTIME_FUNC_NAMES)


def _compile_template(text: str, name: str, field: str) -> CompiledTemplate:
    gotemplate = importlib.import_module("shardlet.stages.gotemplate")
    try:
        # kwok trims the template (strings.TrimSpace) before parsing it
        tpl: CompiledTemplate = gotemplate.parse(text.strip(), name=f"{name}/{field}", funcs=_template_func_names())
    except gotemplate.TemplateError as e:
        raise _err(name, field, str(e)) from None
    return tpl


class _NoTemplateEngine(Exception):
    """Stands in for TemplateError while the template engine cannot be imported."""


def template_error_type() -> type[Exception]:
    """The template engine's error class (``TemplateError``)."""
    try:
        err: type[Exception] = importlib.import_module("shardlet.stages.gotemplate").TemplateError
    except (ImportError, AttributeError):
        return _NoTemplateEngine
    return err


# --------------------------------------------------------------------------- validation helpers


def _one_line(msg: str) -> str:
    return " ".join(msg.split())


def _err(stage: str, field: str, msg: str) -> StageError:
    where = f"{field}: " if field else ""
    return StageError(f'stage "{stage}": {where}{_one_line(msg)}')


class _V:
    """Typed field access with paths for one Stage document."""

    def __init__(self, name: str) -> None:
        self.name = name

    def fail(self, field: str, msg: str) -> StageError:
        return _err(self.name, field, msg)

    def obj(self, value: Any, field: str, allowed: Collection[str] | None = None) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(field, f"must be an object, got {_tname(value)}")
        if allowed is not None:
            for k in value:
                if k not in allowed:
                    raise self.fail(f"{field}.{k}" if field else str(k), "unknown field")
        return value

    def opt_obj(self, parent: Mapping[str, Any], key: str, field: str,
                allowed: Collection[str] | None = None) -> Mapping[str, Any] | None:
        v = parent.get(key)
        if v is None:
            return None
        return self.obj(v, f"{field}.{key}", allowed)

    def string(self, parent: Mapping[str, Any], key: str, field: str, default: str = "") -> str:
        v = parent.get(key)
        if v is None:
            return default
        if not isinstance(v, str):
            raise self.fail(f"{field}.{key}", f"must be a string, got {_tname(v)}")
        return v

    def boolean(self, parent: Mapping[str, Any], key: str, field: str) -> bool:
        v = parent.get(key)
        if v is None:
            return False
        if not isinstance(v, bool):
            raise self.fail(f"{field}.{key}", f"must be a boolean, got {_tname(v)}")
        return v

    def integer(self, parent: Mapping[str, Any], key: str, field: str, minimum: int | None = 0) -> int | None:
        v = parent.get(key)
        if v is None:
            return None
        if isinstance(v, float) and math.isfinite(v) and v.is_integer():
            v = int(v)
        if not isinstance(v, int) or isinstance(v, bool):
            raise self.fail(f"{field}.{key}", f"must be an integer, got {_tname(v)}")
        if not -(2**63) <= v < 2**63:
            raise self.fail(f"{field}.{key}", "is out of the int64 range")
        if minimum is not None and v < minimum:
            raise self.fail(f"{field}.{key}", f"must be >= {minimum}, got {v}")
        return v

    def lst(self, parent: Mapping[str, Any], key: str, field: str) -> list[Any]:
        v = parent.get(key)
        if v is None:
            return []
        if not isinstance(v, list):
            raise self.fail(f"{field}.{key}", f"must be a list, got {_tname(v)}")
        return v


def _tname(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "list"
    if isinstance(v, Mapping):
        return "object"
    return type(v).__name__


def _expression_from(v: _V, parent: Mapping[str, Any], key: str, field: str) -> ExpressionFrom | None:
    spec = v.opt_obj(parent, key, field, ("jq", "cel", "expressionFrom"))
    if spec is None:
        return None
    f = f"{field}.{key}"
    jq: Query | None = None
    cel: CelProgram | None = None
    jq_spec = v.opt_obj(spec, "jq", f, ("expression",))
    if jq_spec is not None:
        expr = v.string(jq_spec, "expression", f"{f}.jq")
        jq_field = f"{f}.jq.expression"
    else:
        expr = v.string(spec, "expressionFrom", f)
        jq_field = f"{f}.expressionFrom"
    if expr:
        try:
            jq = compile_jq(expr)
        except JQError as e:
            raise v.fail(jq_field, str(e)) from None
    cel_spec = v.opt_obj(spec, "cel", f, ("expression",))
    if cel_spec is not None:
        cexpr = v.string(cel_spec, "expression", f"{f}.cel")
        if cexpr:
            try:
                cel = compile_cel(cexpr)
            except CelError as e:
                raise v.fail(f"{f}.cel.expression", str(e)) from None
    return ExpressionFrom(jq, cel)


def _impersonation(v: _V, parent: Mapping[str, Any], key: str, field: str) -> str | None:
    spec = v.opt_obj(parent, key, field, ("username",))
    if spec is None:
        return None
    user = v.string(spec, "username", f"{field}.{key}")
    if not user:
        raise v.fail(f"{field}.{key}.username", "must be a non-empty string")
    return user


def _event(v: _V, parent: Mapping[str, Any], field: str) -> EventSpec | None:
    spec = v.opt_obj(parent, "event", field, ("type", "reason", "message"))
    if spec is None:
        return None
    f = f"{field}.event"
    typ = v.string(spec, "type", f)
    if typ not in ("", "Normal", "Warning"):
        raise v.fail(f"{f}.type", f"must be Normal or Warning, got {typ!r}")
    return EventSpec(typ, v.string(spec, "reason", f), v.string(spec, "message", f))


def _finalizers(v: _V, parent: Mapping[str, Any], field: str) -> FinalizerSpec | None:
    spec = v.opt_obj(parent, "finalizers", field, ("add", "remove", "empty"))
    if spec is None:
        return None
    f = f"{field}.finalizers"

    def items(key: str) -> tuple[str, ...]:
        out = []
        for i, item in enumerate(v.lst(spec, key, f)):
            it = v.obj(item, f"{f}.{key}[{i}]", ("value",))
            out.append(v.string(it, "value", f"{f}.{key}[{i}]"))
        return tuple(out)

    return FinalizerSpec(items("add"), items("remove"), v.boolean(spec, "empty", f))


_PATCH_TYPES: Final = ("json", "merge", "strategic")
_APPLY_TYPES: Final = ("apply", "merge", "strategic")


def _patch(v: _V, spec: Mapping[str, Any], f: str) -> PatchSpec:
    v.obj(spec, f, ("subresource", "root", "template", "type", "impersonation"))
    typ = spec.get("type")
    if typ is not None and typ not in _PATCH_TYPES:
        raise v.fail(f"{f}.type", f"must be one of {', '.join(_PATCH_TYPES)}, got {typ!r}")
    text = v.string(spec, "template", f)
    return PatchSpec(
        subresource=v.string(spec, "subresource", f),
        root=v.string(spec, "root", f),
        template_text=text,
        template=_compile_template(text, v.name, f"{f}.template"),
        type=typ,
        impersonation=_impersonation(v, spec, "impersonation", f),
        field=f"{f}.template",
    )


def _apply(v: _V, spec: Mapping[str, Any], f: str) -> ApplySpec:
    v.obj(spec, f, ("subresource", "template", "type", "impersonation"))
    typ = spec.get("type")
    if typ is not None and typ not in _APPLY_TYPES:
        raise v.fail(f"{f}.type", f"must be one of {', '.join(_APPLY_TYPES)}, got {typ!r}")
    text = v.string(spec, "template", f)
    if not text.strip():
        raise v.fail(f"{f}.template", "must be a non-empty template")
    return ApplySpec(
        subresource=v.string(spec, "subresource", f),
        template_text=text,
        template=_compile_template(text, v.name, f"{f}.template"),
        type=typ,
        impersonation=_impersonation(v, spec, "impersonation", f),
        field=f"{f}.template",
    )


def _steps_from_next(v: _V, nxt: Mapping[str, Any]) -> list[Step]:
    f = "spec.next"
    v.obj(nxt, f, ("event", "finalizers", "delete", "patches", "statusTemplate", "statusSubresource",
                   "statusPatchAs"))
    steps: list[Step] = []
    event = _event(v, nxt, f)
    if event is not None:
        steps.append(Step(event=event))
    fin = _finalizers(v, nxt, f)
    if fin is not None:
        steps.append(Step(finalizers=fin))
    patches = v.lst(nxt, "patches", f)
    template = v.string(nxt, "statusTemplate", f)
    subresource = v.string(nxt, "statusSubresource", f, default="status")
    impersonation = _impersonation(v, nxt, "statusPatchAs", f)
    if patches:
        for i, p in enumerate(patches):
            steps.append(Step(patch=_patch(v, v.obj(p, f"{f}.patches[{i}]"), f"{f}.patches[{i}]")))
    elif template:
        steps.append(Step(patch=PatchSpec(
            subresource=subresource,
            root="status",
            template_text=template,
            template=_compile_template(template, v.name, f"{f}.statusTemplate"),
            type=None,
            impersonation=impersonation,
            field=f"{f}.statusTemplate",
        )))
    if v.boolean(nxt, "delete", f):
        steps.append(Step(delete=True))
    return steps


def _steps(v: _V, raw: list[Any]) -> list[Step]:
    out: list[Step] = []
    for i, item in enumerate(raw):
        f = f"spec.steps[{i}]"
        spec = v.obj(item, f, ("patch", "event", "finalizers", "delete", "apply"))
        patch = spec.get("patch")
        apply = spec.get("apply")
        step = Step(
            event=_event(v, spec, f),
            finalizers=_finalizers(v, spec, f),
            delete=v.boolean(spec, "delete", f),
            patch=_patch(v, v.obj(patch, f"{f}.patch"), f"{f}.patch") if patch is not None else None,
            apply=_apply(v, v.obj(apply, f"{f}.apply"), f"{f}.apply") if apply is not None else None,
        )
        out.append(step)
    return out


def _delay(v: _V, spec: Mapping[str, Any]) -> DelaySpec | None:
    d = v.opt_obj(spec, "delay", "spec",
                  ("durationMilliseconds", "durationFrom", "jitterDurationMilliseconds", "jitterDurationFrom"))
    if d is None:
        return None
    f = "spec.delay"
    return DelaySpec(
        duration_ms=v.integer(d, "durationMilliseconds", f),
        duration_from=_expression_from(v, d, "durationFrom", f),
        jitter_ms=v.integer(d, "jitterDurationMilliseconds", f),
        jitter_from=_expression_from(v, d, "jitterDurationFrom", f),
    )


_SPEC_FIELDS: Final = ("resourceRef", "selector", "weight", "weightFrom", "delay", "next", "immediateNextStage",
                       "steps")


def parse_stage(doc: Mapping[str, Any]) -> Stage:
    """Validate and compile one Stage document; problems raise :class:`StageError`."""
    if not isinstance(doc, Mapping):
        raise StageError(f"stage: must be an object, got {_tname(doc)}")
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    v = _V(name if isinstance(name, str) and name else "<unnamed>")
    v.obj(doc, "", ("apiVersion", "kind", "metadata", "spec", "status"))
    kind = doc.get("kind")
    if kind is not None and kind != "Stage":
        raise v.fail("kind", f"must be Stage, got {kind!r}")
    if not isinstance(meta, Mapping):
        raise v.fail("metadata", "must be an object with a name")
    if not isinstance(name, str) or not name:
        raise v.fail("metadata.name", "must be a non-empty string")
    spec = v.obj(doc.get("spec"), "spec", _SPEC_FIELDS)
    ref = v.obj(spec.get("resourceRef"), "spec.resourceRef", ("apiGroup", "kind"))
    res_kind = v.string(ref, "kind", "spec.resourceRef")
    if not res_kind:
        raise v.fail("spec.resourceRef.kind", "must be a non-empty string")
    api_group = v.string(ref, "apiGroup", "spec.resourceRef") or "v1"
    try:
        selector = compile_selector(spec.get("selector"), "spec.selector")
    except SelectorError as e:
        raise _err(name, "", str(e)) from None
    weight = v.integer(spec, "weight", "spec")
    weight_from = _expression_from(v, spec, "weightFrom", "spec")
    delay = _delay(v, spec)
    raw_steps = v.lst(spec, "steps", "spec")
    steps = _steps(v, raw_steps)
    nxt = spec.get("next")
    if nxt is not None:
        next_steps = _steps_from_next(v, v.obj(nxt, "spec.next"))
        if not raw_steps:  # kwok: steps win over the deprecated next
            steps = next_steps
    return Stage(
        name=name,
        kind=res_kind,
        api_group=api_group,
        selector=selector,
        weight=weight or 0,
        weight_from=weight_from,
        delay=delay,
        steps=tuple(steps),
        immediate_next_stage=v.boolean(spec, "immediateNextStage", "spec"),
        raw=copy.deepcopy(dict(doc)),
    )


def load_stages(docs: Iterable[Any]) -> tuple[list[Stage], list[StageError]]:
    """Compile many Stage documents: good ones are kept, bad ones reported.

    Documents of another ``kind`` (a StorageClass or Kustomization next to the
    Stages) are skipped, as kwok's config loader does; ``None`` (an empty YAML
    document) too.
    """
    good: list[Stage] = []
    bad: list[StageError] = []
    for i, doc in enumerate(docs):
        if doc is None:
            continue
        if isinstance(doc, Mapping) and doc.get("kind") not in (None, "Stage"):
            continue
        try:
            good.append(parse_stage(doc))
        except StageError as err:
            bad.append(err if isinstance(doc, Mapping) else StageError(f"stage #{i}: must be an object, got {_tname(doc)}"))
    return good, bad


def load_stage_yaml(text: str) -> tuple[list[Stage], list[StageError]]:
    """Compile the Stages of a (multi-document) YAML text."""
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        return [], [StageError(f"stage YAML{where}: {_one_line(str(problem))}")]
    return load_stages(docs)


@functools.cache
def _profile(name: str) -> tuple[Stage, ...]:
    text = resources.files("shardlet.stages").joinpath("profiles", f"{name}.yaml").read_text("utf-8")
    good, bad = load_stage_yaml(text)
    if bad:
        raise StageError(f"built-in profile {name!r} is invalid: {bad[0]}")
    return tuple(good)


def load_profile(name: str) -> list[Stage]:
    """The Stages of a built-in profile (kwok v0.8.0's stage sets), one of ``PROFILES``."""
    if name not in PROFILES:
        raise StageError(f"unknown stage profile {name!r}: expected one of {', '.join(PROFILES)}")
    return list(_profile(name))


def profile_objects(name: str) -> list[dict[str, Any]]:
    """The objects other than Stages that a built-in profile needs in the cluster (the volume
    set's StorageClass), as kwokctl applies them with the set."""
    if name not in PROFILES:
        raise StageError(f"unknown stage profile {name!r}: expected one of {', '.join(PROFILES)}")
    text = resources.files("shardlet.stages").joinpath("profiles", f"{name}.yaml").read_text("utf-8")
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict) and d.get("kind") != "Stage"]
