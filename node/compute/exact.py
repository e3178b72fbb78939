"""Exact sums of ints and floats, mergeable in any order; the final division rounds once.

Floats: math.fsum (CPython's msum: Shewchuk, "Adaptive Precision Floating-Point Arithmetic and
Fast Robust Geometric Predicates", Discrete & Computational Geometry 18, 1997) is exact inside
but returns a rounded float. `exact_fixed` peels that float off and sums again until the
residual is exactly 0 (fsum's partials are exact, so it only returns 0.0 for an exact 0),
usually 2-3 C passes per batch; the peeled floats are added to a fixed-point Python int
counting units of 2**-1074, the smallest subnormal, of which every finite double is an
integer multiple. Merging is int addition, exact in any order. Results are one correctly
rounded division (CPython's int true division). inf and NaN are kept as flags (IEEE: inf +
-inf = NaN); an exact sum beyond the float range gives +-inf.
"""
from __future__ import annotations

import math
from itertools import chain
from typing import Any

from shoal.node.compute.values import unwire_int, wire_int

_FIXED_SHIFT = 1074                        # fixed point: units of 2**-1074
_PEEL_ROUNDS_MAX = 45                      # 2,098 bits of exponent range / 53 bits per round, and spare
_NAN, _POSITIVE_INFINITY, _NEGATIVE_INFINITY = 1, 2, 4


class ExactSum:
    """The exact sum of ints and floats: `integer` + `fixed` * 2**-1074, plus IEEE specials."""

    __slots__ = ("integer", "fixed", "count", "saw_float", "specials")

    def __init__(self) -> None:
        self.integer = 0
        self.fixed = 0
        self.count = 0
        self.saw_float = False
        self.specials = 0

    def add_integers(self, values: list[Any]) -> None:
        self.integer += sum(values)
        self.count += len(values)

    def add_floats(self, values: list[float]) -> None:
        if not values:
            return
        self.count += len(values)
        self.saw_float = True
        try:
            self.fixed += exact_fixed(values)
        except ValueError:            # inf or NaN among them: keep them aside, sum the rest
            finite = [value for value in values if math.isfinite(value)]
            for value in values:
                if math.isnan(value):
                    self.specials |= _NAN
                elif math.isinf(value):
                    self.specials |= _POSITIVE_INFINITY if value > 0 else _NEGATIVE_INFINITY
            self.fixed += exact_fixed(finite)

    def merge(self, other: ExactSum) -> None:
        self.integer += other.integer
        self.fixed += other.fixed
        self.count += other.count
        self.saw_float |= other.saw_float
        self.specials |= other.specials

    def to_wire(self) -> list[Any]:
        return [wire_int(self.integer), wire_int(self.fixed), self.count, self.saw_float, self.specials]

    @classmethod
    def from_wire(cls, wire: Any) -> ExactSum:
        state = cls()
        integer, fixed, state.count, state.saw_float, state.specials = wire
        state.integer, state.fixed = unwire_int(integer), unwire_int(fixed)
        return state

    def total(self) -> int | float | None:
        """The sum: None if no values; an int if only ints (and bools) were seen; else a float."""
        if self.count == 0:
            return None
        if not self.saw_float:
            return self.integer
        special = self._special()
        return special if special is not None else _divide(self._numerator(), 1 << _FIXED_SHIFT)

    def mean(self) -> float | None:
        """exact sum / count, correctly rounded; None if no values."""
        if self.count == 0:
            return None
        if not self.saw_float:
            return _divide(self.integer, self.count)
        special = self._special()
        return special if special is not None else _divide(self._numerator(), self.count << _FIXED_SHIFT)

    def _numerator(self) -> int:
        return (self.integer << _FIXED_SHIFT) + self.fixed

    def _special(self) -> float | None:
        if self.specials & _NAN or self.specials == _POSITIVE_INFINITY | _NEGATIVE_INFINITY:
            return math.nan
        if self.specials:
            return math.inf if self.specials == _POSITIVE_INFINITY else -math.inf
        return None


def _divide(numerator: int, denominator: int) -> float:
    """numerator / denominator correctly rounded (CPython's int true division), +-inf past the range."""
    try:
        return numerator / denominator
    except OverflowError:
        return math.inf if numerator > 0 else -math.inf


def to_fixed(value: float) -> int:
    """A finite float as an exact integer count of 2**-1074 units."""
    numerator, denominator = value.as_integer_ratio()
    return numerator << (_FIXED_SHIFT + 1 - denominator.bit_length())


def exact_fixed(values: list[float]) -> int:
    """The exact sum of finite floats in 2**-1074 units. ValueError if one is inf or NaN.

    Peels math.fsum's correctly rounded result off until the residual is exactly 0; fsum's
    partials are exact, so it returns 0.0 only for an exact 0 (see the module docstring).
    """
    if len(values) <= 1:
        if values and not math.isfinite(values[0]):
            raise ValueError("inf or nan")
        return to_fixed(values[0]) if values else 0
    fixed = 0
    peeled: list[float] = []
    try:
        for _ in range(_PEEL_ROUNDS_MAX):
            head = math.fsum(chain(values, peeled))
            if head == 0.0:
                return fixed
            if not math.isfinite(head):
                raise ValueError("inf or nan")
            fixed += to_fixed(head)
            peeled.append(-head)
    except OverflowError:          # the partial sums left the float range: one value at a time
        pass
    if not all(map(math.isfinite, values)):
        raise ValueError("inf or nan")
    return sum(map(to_fixed, values))
