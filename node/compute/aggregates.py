"""Aggregate states: count, sum, min, max, mean, count_distinct; exact, and mergeable in any order.

An `Accumulator` (make_accumulator) keeps one aggregate for every group of one partial and is
fed a batch at a time: the group id of each record and the argument's values. Rows per group
are counted once for all aggregates (the caller's shared Counter), so each aggregate only
counts its nulls. Ints are summed by a tight loop (bools by Counter over the Trues); other
values are bucketed by group with C-level calls (list.append mapped over defaultdict lookups)
and, every PENDING_VALUES_MAX values, each bucket is reduced with builtins (min, math.fsum,
set.update): Python work per group, not per record. `wire(group)` is a group's state as
msgpack-safe data; `finish(function, wires)` merges the wires of all partials.

Semantics: every aggregate skips nulls; count(None) counts rows. Empty (or all-null) input
gives count 0 and null for the others (SQL; pandas' sum would say 0).
- sum / mean take int, float and bool (as 0/1, so sum(x > 9) counts matches); anything else
  is an EvaluationError. Ints sum exactly (Python ints); a sum that saw a float is a float,
  the correctly rounded value of the exact sum of every int and float; mean = exact sum /
  count, correctly rounded (exact.py: Shewchuk's summation via math.fsum, fixed-point ints).
- min / max use the total order of values.py (numbers, NaN, bools, strs, bytes, others).
- count_distinct counts distinct values by values.identity_key (1, 1.0 and True are three
  values), exactly: the set travels in the partial.

Wire formats (msgpack-safe): count -> int; sum/mean -> [int, fixed, count, saw_float, specials]
(exact.ExactSum; ints beyond 64 bits as bytes); min/max -> the value or None;
count_distinct -> list of values.
"""
from __future__ import annotations

import math
import operator
from collections import Counter, _count_elements, defaultdict, deque   # type: ignore[attr-defined]
from collections.abc import Callable, Sequence
from itertools import compress, repeat
from operator import is_not
from typing import Any

from shoal.node.compute.errors import EvaluationError
from shoal.node.compute.exact import ExactSum
from shoal.node.compute.values import identity_key, identity_keys, order_key, plain_value, type_name

AGGREGATE_FUNCTIONS = ("count", "sum", "min", "max", "mean", "count_distinct")
Types = set[type] | frozenset[type]
_NONE = type(None)
PENDING_VALUES_MAX = 32_768               # values buffered per aggregate before reducing them
_INTEGRAL = frozenset({int, bool})
_SUMMABLE = frozenset({int, bool, float})
_SUMMABLE_OR_NULL = _SUMMABLE | {_NONE}
_BOOLS = frozenset({bool})
_SELF_ORDERED = (frozenset({int}), frozenset({str}), frozenset({bool}), frozenset({bytes}))


class Accumulator:
    """One aggregate over all groups of one partial (base class; see make_accumulator).

    `rows` is shared by the accumulators of a query: rows per group id, kept by the caller
    (updated for a batch before the accumulators' add). An aggregate's value count is then
    rows minus its nulls, so only nulls are counted per aggregate.
    """

    def __init__(self, text: str, rows: Counter[int]) -> None:
        self.text = text                   # the argument's expression text, for error messages
        self.rows = rows
        self.nulls: Counter[int] = Counter()

    def add(self, groups: list[int] | None, values: list[Any] | None, types: Types) -> None:
        """Feed one batch: groups[i] is record i's group id (None: all in group 0); values[i] its
        argument (None for count(*)); `types` the set of types in values."""
        raise NotImplementedError

    def wire(self, group: int) -> Any:
        """The state of one group as msgpack-safe data (the empty state if it saw nothing)."""
        raise NotImplementedError

    def count_nulls(self, groups: list[int] | None, values: list[Any]) -> tuple[list[int] | None, list[Any]]:
        """Count the batch's nulls; return the groups and values without them."""
        if groups is None:
            self.nulls[0] += values.count(None)
            return None, [value for value in values if value is not None]
        keep = list(map(is_not, values, repeat(None)))
        _count_elements(self.nulls, compress(groups, map(operator.not_, keep)))
        return list(compress(groups, keep)), list(compress(values, keep))

    def value_count(self, group: int) -> int:
        """Non-null values this aggregate saw in `group`."""
        return self.rows.get(group, 0) - self.nulls.get(group, 0)


def make_accumulator(function: str, text: str | None, rows: Counter[int]) -> Accumulator:
    """An Accumulator for one of AGGREGATE_FUNCTIONS; text None only for count (count rows);
    rows: the shared rows-per-group counter (see Accumulator)."""
    if function == "count":
        return _Count(text or "", rows)
    assert text is not None, f"{function} needs an argument"
    return {"sum": _Sum, "mean": _Sum, "min": _Min, "max": _Max, "count_distinct": _Distinct}[function](text, rows)


def finish(function: str, wires: Sequence[Any]) -> Any:
    """The final value of one group from the wires of all partials (any order, maybe none)."""
    if function == "count":
        return sum(wires)
    if function in ("sum", "mean"):
        total = ExactSum()
        for wire in wires:
            total.merge(ExactSum.from_wire(wire))
        return total.mean() if function == "mean" else total.total()
    if function == "count_distinct":
        return len({identity_key(value) for wire in wires for value in wire})
    assert function in ("min", "max"), function
    present = [wire for wire in wires if wire is not None]
    if not present:
        return None
    return (min if function == "min" else max)(present, key=order_key)


class _Count(Accumulator):
    def add(self, groups: list[int] | None, values: list[Any] | None, types: Types) -> None:
        if values is not None and _NONE in types:
            self.count_nulls(groups, values)

    def wire(self, group: int) -> Any:
        return self.value_count(group)


class _Buffered(Accumulator):
    """Keeps the non-null values by group across batches; reduces every PENDING_VALUES_MAX values.

    Why buffer: batches are small (the CPU cache), and reducing a group costs a few Python
    calls; buffering spreads that over hundreds of values per group.
    """

    def __init__(self, text: str, rows: Counter[int]) -> None:
        super().__init__(text, rows)
        self.pending: defaultdict[int, list[Any]] = defaultdict(list)
        self.pending_count = 0
        self.pending_types: set[type] = set()

    def add(self, groups: list[int] | None, values: list[Any] | None, types: Types) -> None:
        assert values is not None
        if _NONE in types:
            groups, values = self.count_nulls(groups, values)
            types = types - {_NONE}
        if values:
            self.buffer(groups, self.prepare(values, types), types)

    def buffer(self, groups: list[int] | None, values: list[Any], types: Types) -> None:
        """Append non-null values to their groups' pending buckets (C-level)."""
        if groups is None:
            self.pending[0].extend(values)
        else:
            deque(map(list.append, map(self.pending.__getitem__, groups), values), maxlen=0)
        self.pending_count += len(values)
        self.pending_types |= types
        if self.pending_count >= PENDING_VALUES_MAX:
            self.flush()

    def flush(self) -> None:
        """Reduce every pending bucket into the group states."""
        for group, bucket in self.pending.items():
            self.reduce(group, bucket, self.pending_types)
        self.pending = defaultdict(list)
        self.pending_count = 0
        self.pending_types = set()

    def wire(self, group: int) -> Any:
        if self.pending_count:
            self.flush()
        return self.state_wire(group)

    def prepare(self, values: list[Any], types: Types) -> list[Any]:
        """The non-null values as they are buffered."""
        return values

    def reduce(self, group: int, bucket: list[Any], types: Types) -> None:
        raise NotImplementedError

    def state_wire(self, group: int) -> Any:
        raise NotImplementedError


class _Sum(_Buffered):
    """sum and mean share the state; finish() decides which value it gives.

    Ints (and bools) go to `integers` by group id: a counter of Trues for bool-only batches
    (C-level Counter.update), a tight zip loop otherwise. Floats are buffered and reduced
    exactly (ExactSum.add_floats). The count is the shared row count minus nulls.
    """

    def __init__(self, text: str, rows: Counter[int]) -> None:
        super().__init__(text, rows)
        self.integers: list[int] = []
        self.trues: Counter[int] = Counter()
        self.floats: dict[int, ExactSum] = {}

    def add(self, groups: list[int] | None, values: list[Any] | None, types: Types) -> None:
        assert values is not None
        if not types <= _SUMMABLE_OR_NULL:
            bad = next(value for value in values if value is not None and type(value) not in _SUMMABLE)
            raise EvaluationError(f"cannot sum or average {type_name(bad)} values of `{self.text}`")
        if _NONE in types:
            groups, values = self.count_nulls(groups, values)
            types = types - {_NONE}
        if not values:
            return
        if float in types:
            if len(types) == 1:
                self.buffer(groups, values, types)
                return
            floats = [value.__class__ is float for value in values]
            self.buffer(None if groups is None else list(compress(groups, floats)),
                        list(compress(values, floats)), {float})
            integral = list(map(operator.not_, floats))
            groups = None if groups is None else list(compress(groups, integral))
            values = list(compress(values, integral))
        if groups is None:
            self._grow(1)
            self.integers[0] += sum(values)
        elif types == _BOOLS:
            _count_elements(self.trues, compress(groups, values))
        else:
            self._add_integers(groups, values)

    def _add_integers(self, groups: list[int], values: list[Any]) -> None:
        """integers[group] += value for each pair: a tight loop over a list sized by the number of
        groups seen (query.py numbers groups 0, 1, ... and counts each one's rows before the
        accumulators' add, so len(rows) covers every id: no max() per batch); a larger id (a
        caller with ids not dense) grows the list and the loop resumes where it stopped."""
        integers = self._grow(len(self.rows))
        try:
            for group, value in zip(groups, values):
                integers[group] += value
        except IndexError:
            size = len(integers)
            start = next(index for index, group in enumerate(groups) if group >= size)   # the pair not added
            integers = self._grow(max(groups) + 1)
            for group, value in zip(groups[start:], values[start:]):
                integers[group] += value

    def _grow(self, size: int) -> list[int]:
        integers = self.integers
        if len(integers) < size:
            integers.extend([0] * (size - len(integers)))
        return integers

    def reduce(self, group: int, bucket: list[Any], types: Types) -> None:
        state = self.floats.get(group)
        if state is None:
            state = self.floats[group] = ExactSum()
        state.add_floats(bucket)

    def state_wire(self, group: int) -> Any:
        state = ExactSum()
        floats = self.floats.get(group)
        if floats is not None:
            state.merge(floats)
        state.integer += (self.integers[group] if group < len(self.integers) else 0) + self.trues.get(group, 0)
        state.count = self.value_count(group)
        return state.to_wire()


class _Extreme(_Buffered):
    """min or max in the total order of values.py."""

    pick: Callable[..., Any] = min

    def __init__(self, text: str, rows: Counter[int]) -> None:
        super().__init__(text, rows)
        self.best: dict[int, Any] = {}

    def reduce(self, group: int, bucket: list[Any], types: Types) -> None:
        pick = type(self).pick
        plain = types in _SELF_ORDERED or (types == {float} and not any(map(math.isnan, bucket)))
        candidate = pick(bucket) if plain else pick(bucket, key=order_key)
        if group in self.best:
            candidate = pick((self.best[group], candidate), key=order_key)
        self.best[group] = candidate

    def state_wire(self, group: int) -> Any:
        return self.best.get(group)


class _Min(_Extreme):
    pick = min


class _Max(_Extreme):
    pick = max


class _Distinct(_Buffered):
    def __init__(self, text: str, rows: Counter[int]) -> None:
        super().__init__(text, rows)
        self.seen: dict[int, set[Any]] = {}

    def prepare(self, values: list[Any], types: Types) -> list[Any]:
        return identity_keys(values, types)

    def reduce(self, group: int, bucket: list[Any], types: Types) -> None:
        known = self.seen.get(group)
        if known is None:
            self.seen[group] = set(bucket)
        else:
            known.update(bucket)

    def state_wire(self, group: int) -> Any:
        return [plain_value(key) for key in self.seen.get(group, ())]
