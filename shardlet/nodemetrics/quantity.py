"""Kubernetes resource quantities ("250m", "1Gi", "1.5e3") as a CEL value, with kwok's
arithmetic (``pkg/utils/cel/quantity.go``): + and - between quantities are exact, * and /
by an int work in milli-units (truncating like Go), by a double go through float64."""

from __future__ import annotations

import math
import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any, Final

from shardlet.stages.selector import CelDefaultMap, CelError, CelValue

_SUFFIX: Final = {
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
}
_QUANTITY: Final = re.compile(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?:([eE][+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)")
_INT64: Final = 2**63


class QuantityError(ValueError):
    """Not a Kubernetes quantity."""


def parse_quantity(s: str) -> Decimal:
    """The exact value of a quantity string, as ``resource.ParseQuantity`` accepts it."""
    if not isinstance(s, str):
        raise QuantityError(f"quantity must be a string, got {type(s).__name__}")
    m = _QUANTITY.fullmatch(s.strip())
    if m is None:
        raise QuantityError(f"quantities must match the regular expression "
                            f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {s!r}")
    try:
        num = Decimal(m.group(1))
        if m.group(2):
            exp = int(m.group(2)[1:])
            if abs(exp) > 1000:
                raise QuantityError(f"quantity exponent out of range: {s!r}")
            return num.scaleb(exp)
        return num * _SUFFIX[m.group(3) or ""]
    except InvalidOperation:
        raise QuantityError(f"invalid quantity {s!r}") from None


class Quantity(CelValue):
    __slots__ = ("value",)

    def __init__(self, value: Decimal) -> None:
        self.value = value

    @classmethod
    def parse(cls, s: str) -> Quantity:
        return cls(parse_quantity(s))

    @classmethod
    def from_milli(cls, milli: int) -> Quantity:
        if not -_INT64 <= milli < _INT64:
            raise CelError("quantity overflows int64 milli-units")
        return cls(Decimal(milli).scaleb(-3))

    @classmethod
    def from_float(cls, v: float) -> Quantity:
        if not math.isfinite(v):
            raise CelError(f"quantity from non-finite double {v}")
        return cls.from_milli(int(v * 1e3))   # Go: int64(v*1e3), truncated

    def milli(self) -> int:
        return int((self.value * 1000).to_integral_value(rounding=ROUND_CEILING))   # MilliValue rounds up

    def cel_double(self) -> float:
        return float(self.value)

    def cel_key(self) -> Any:
        return self.value

    def cel_arith(self, op: str, other: Any) -> Any:
        if op == "neg":
            return Quantity(-self.value)
        if op in ("+", "-") and isinstance(other, Quantity):
            return Quantity(self.value + other.value if op == "+" else self.value - other.value)
        if op in ("*", "/") and isinstance(other, int) and not isinstance(other, bool):
            if op == "*":
                return Quantity.from_milli(self.milli() * other)
            if other == 0:
                raise CelError("division by zero")
            q = abs(self.milli()) // abs(other)   # Go's integer division truncates toward zero
            return Quantity.from_milli(q if (self.milli() >= 0) == (other >= 0) else -q)
        if op in ("*", "/") and isinstance(other, float):
            if op == "/" and other == 0:
                raise CelError("division by zero")
            f = float(self.value)
            return Quantity.from_float(f * other if op == "*" else f / other)
        return super().cel_arith(op, other)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Quantity) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)

    def __str__(self) -> str:
        v = self.value.normalize()
        if v == v.to_integral_value():
            return f"{int(v)}"
        milli = v * 1000
        if milli == milli.to_integral_value():
            return f"{int(milli)}m"
        return format(v, "f")

    def __repr__(self) -> str:
        return f"Quantity({self})"


class ResourceList(CelDefaultMap):
    """A pod's requests/limits or a node's capacity: resource name -> Quantity; a resource
    that is not listed reads as 0, as kwok's cel.ResourceList does."""

    def cel_default(self, key: Any) -> Any:
        if not isinstance(key, str):
            raise CelError(f"no such key: {key}")
        return Quantity(Decimal(0))
