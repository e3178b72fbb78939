"""Aggregate states: exact sums and means merged in any order, nulls, the total order, distinct counts."""
from __future__ import annotations

import math
import random
from collections import Counter
from fractions import Fraction
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.node.compute.aggregates import Accumulator, finish, make_accumulator
from shoal.node.compute.exact import ExactSum, exact_fixed, to_fixed
from shoal.node.compute.errors import EvaluationError


def travel(wire: Any) -> Any:
    """A wire after the msgpack round trip a partial makes between node and coordinator."""
    return msgpack.unpackb(msgpack.packb(wire, use_bin_type=True), raw=False, strict_map_key=False)


def wires_of(function: str, values: list[Any], cuts: list[int], batch: int = 5) -> list[Any]:
    """Split values into partials at `cuts`, feed each partial in batches, return the travelled wires."""
    wires = []
    bounds = [0, *sorted(set(cuts)), len(values)]
    for start, end in zip(bounds, bounds[1:]):
        rows: Counter[int] = Counter()
        accumulator = make_accumulator(function, "x", rows)
        part = values[start:end]
        for offset in range(0, len(part), batch):
            chunk = part[offset:offset + batch]
            rows[0] += len(chunk)
            accumulator.add(None, chunk, set(map(type, chunk)))
        wires.append(travel(accumulator.wire(0)))
    return wires


def grouped(function: str, groups: list[int], values: list[Any] | None, batch: int = 4) -> Accumulator:
    """An accumulator fed (group, value) rows in batches, as query.py feeds it."""
    rows: Counter[int] = Counter()
    accumulator = make_accumulator(function, None if values is None else "x", rows)
    for offset in range(0, len(groups), batch):
        chunk_groups = groups[offset:offset + batch]
        rows.update(chunk_groups)
        chunk = None if values is None else values[offset:offset + batch]
        accumulator.add(chunk_groups, chunk, frozenset() if chunk is None else set(map(type, chunk)))
    return accumulator


_finite_floats = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300)
_spread_floats = st.one_of(_finite_floats, st.floats(min_value=-1e-300, max_value=1e-300),
                           st.sampled_from([0.1, 1e16, -1e16, 5e-324, -0.0, 1.0, 2.0 ** 53]))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(values=st.lists(_spread_floats, min_size=1, max_size=60), data=st.data())
def test_float_sum_of_partials_in_any_order_equals_fsum(values: list[float], data: st.DataObject) -> None:
    """Floats split into random partitions, each partial through msgpack, merged in random order:
    the sum is math.fsum of all values (correctly rounded), and the mean the exact mean rounded once."""
    cuts = data.draw(st.lists(st.integers(0, len(values)), max_size=5))
    wires = wires_of("sum", values, cuts, batch=data.draw(st.integers(1, 7)))
    data.draw(st.randoms(use_true_random=False)).shuffle(wires)
    assert finish("sum", wires) == math.fsum(values)
    assert finish("mean", wires) == float(sum(map(Fraction, values)) / len(values))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(values=st.lists(st.one_of(st.none(), st.integers(-2 ** 70, 2 ** 70), st.booleans(), _finite_floats),
                       max_size=40), data=st.data())
def test_mixed_sum_and_mean_are_exact(values: list[Any], data: st.DataObject) -> None:
    """ints (also beyond 64 bits), bools (0/1), floats and nulls: an int sum stays an exact int; with a
    float the sum is the exact total correctly rounded; mean = exact total / count; no values -> None."""
    cuts = data.draw(st.lists(st.integers(0, len(values)), max_size=3))
    wires = wires_of("sum", values, cuts)
    present = [value for value in values if value is not None]
    exact = sum(map(Fraction, present), Fraction(0))
    total, mean = finish("sum", wires), finish("mean", wires)
    if not present:
        assert total is None and mean is None
    elif any(type(value) is float for value in present):
        assert type(total) is float and total == float(exact)
    else:
        assert type(total) is int and total == exact
    if present:
        assert mean == float(exact / len(present))


def test_sum_specials_and_overflow_follow_ieee() -> None:
    """inf and NaN propagate (inf + -inf = NaN) and a sum past the float range is inf, not an error."""
    def total(values: list[Any]) -> Any:
        return finish("sum", wires_of("sum", values, [1]))
    assert total([1.0, math.inf, 2]) == math.inf
    assert total([-math.inf, 1.0]) == -math.inf
    assert math.isnan(total([math.inf, 1.0, -math.inf]))
    assert math.isnan(total([math.nan, 1.0]))
    assert total([1e308, 1e308]) == math.inf and total([-1e308, -1e308, 3]) == -math.inf
    assert total([1e308, 1e308, -1e308]) == 1e308      # exact: math.fsum would raise OverflowError here
    assert finish("mean", wires_of("mean", [1e308, 1e308], [])) == 1e308


def test_exact_fixed_is_the_exact_sum() -> None:
    """The fsum peeling gives the exact sum in 2**-1074 units, also across magnitudes."""
    rng = random.Random(5)
    for _ in range(200):
        values = [rng.choice([rng.uniform(-1, 1), rng.uniform(-1e300, 1e300), 5e-324 * rng.randint(-9, 9)])
                  for _ in range(rng.randint(0, 30))]
        assert exact_fixed(values) == sum(map(to_fixed, values))
        assert Fraction(exact_fixed(values), 2 ** 1074) == sum(map(Fraction, values), Fraction(0))
    with pytest.raises(ValueError):
        exact_fixed([1.0, math.inf])


def test_sum_wire_carries_ints_beyond_64_bits() -> None:
    """A 2**70 sum travels as bytes in the wire and merges back exactly."""
    wires = wires_of("sum", [2 ** 63, 2 ** 63, 2 ** 64, 5], [2])
    assert finish("sum", wires) == 2 ** 63 * 2 + 2 ** 64 + 5
    state = ExactSum.from_wire(travel(ExactSum().to_wire()))
    assert state.total() is None and state.mean() is None


def test_sum_of_other_types_is_an_evaluation_error() -> None:
    """sum/mean take numbers and bools only; the message names the type and the expression."""
    with pytest.raises(EvaluationError, match="cannot sum or average str values of `x`"):
        wires_of("sum", [1, "a"], [])
    with pytest.raises(EvaluationError, match="list"):
        wires_of("mean", [[1]], [])


def test_count_counts_rows_or_non_null_values() -> None:
    """count(None) counts rows; count(x) skips nulls; per group; an unseen group counts 0."""
    groups = [0, 1, 0, 0, 2, 1]
    values = [1, None, None, "x", 0, False]
    rows = grouped("count", groups, None)
    non_null = grouped("count", groups, values)
    assert [finish("count", [travel(rows.wire(group))]) for group in range(4)] == [3, 2, 1, 0]
    assert [finish("count", [travel(non_null.wire(group))]) for group in range(4)] == [2, 1, 1, 0]
    assert finish("count", []) == 0


def test_min_max_use_the_total_order_and_skip_nulls() -> None:
    """numbers < NaN < bools < strs < bytes < lists/dicts; ints before equal floats; nulls skipped."""
    values = [None, "b", 3, 2.5, True, math.nan, b"x", [1], -1, None, "a"]
    assert finish("min", wires_of("min", values, [3, 6])) == -1
    assert finish("max", wires_of("max", values, [3, 6])) == [1]
    assert finish("max", wires_of("max", [1, 2.5, math.nan, 2], [2])) != finish("max", [])   # NaN above numbers
    assert math.isnan(finish("max", wires_of("max", [1, 2.5, math.nan, 2], [2])))
    lowest, highest = finish("min", wires_of("min", [1.0, 1, 3], [1])), finish("max", wires_of("max", [1, 1.0], []))
    assert (lowest, type(lowest)) == (1, int) and (highest, type(highest)) == (1.0, float)
    assert finish("min", wires_of("min", [None, None], [1])) is None
    assert finish("max", wires_of("max", ["b", "a", "c"], [])) == "c"


@settings(max_examples=200, deadline=None, derandomize=True)
@given(values=st.lists(st.one_of(
    st.none(), st.integers(-3, 3), st.booleans(), st.sampled_from([1.0, 0.0, -0.0, math.nan, 2.5]),
    st.sampled_from(["1", "a", ""]), st.just(b"1"), st.just([1]), st.just({"a": 1})), max_size=40), data=st.data())
def test_count_distinct_keeps_types_apart_and_merges_exactly(values: list[Any], data: st.DataObject) -> None:
    """1, 1.0 and True are three values; 0.0 == -0.0; NaN is one value; lists and dicts count too;
    split over partials and merged after msgpack, the count is exact."""
    cuts = data.draw(st.lists(st.integers(0, len(values)), max_size=4))
    wires = wires_of("count_distinct", values, cuts)
    distinct = set()
    for value in values:
        if value is None:
            continue
        if isinstance(value, float):
            distinct.add(("float", "nan" if math.isnan(value) else value + 0.0))
        else:
            distinct.add((type(value).__name__, repr(value)))
    assert finish("count_distinct", wires) == len(distinct)


def test_count_distinct_examples() -> None:
    """A worked example of the identity rule."""
    assert finish("count_distinct", wires_of("count_distinct", [1, 1.0, True, "1", None, 1, -0.0, 0.0, 0], [2, 5])) == 6


@settings(max_examples=150, deadline=None, derandomize=True)
@given(rows=st.lists(st.tuples(st.integers(0, 4), st.one_of(st.none(), st.integers(-50, 50), st.booleans(),
                                                             st.floats(-1e6, 1e6))), max_size=60),
       batch=st.integers(1, 9))
def test_grouped_accumulators_match_a_plain_reference(rows: list[tuple[int, Any]], batch: int) -> None:
    """Grouped feeding in batches (buckets, counters, int loops) gives each group's own aggregate."""
    groups = [group for group, _ in rows]
    values = [value for _, value in rows]
    for function in ("sum", "mean", "count", "min", "max", "count_distinct"):
        accumulator = grouped(function, groups, values, batch)
        for group in range(6):
            mine = [value for g, value in rows if g == group and value is not None]
            got = finish(function, [travel(accumulator.wire(group))])
            exact = sum(map(Fraction, mine), Fraction(0))
            if function == "count":
                assert got == len(mine)
            elif not mine:
                assert got == (0 if function == "count_distinct" else None)
            elif function == "sum":
                assert got == (float(exact) if any(type(v) is float for v in mine) else exact)
            elif function == "mean":
                assert got == float(exact / len(mine))
            elif function in ("min", "max"):       # numbers first, then bools (False < True)
                ranked = sorted(mine, key=lambda v: (type(v) is bool, v))
                assert got == (ranked[0] if function == "min" else ranked[-1])
            else:
                assert got == len({(type(v), v) for v in mine})


def test_pending_buffers_flush_at_their_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reducing every few values (a tiny PENDING_VALUES_MAX) changes no result."""
    import shoal.node.compute.aggregates as aggregates
    monkeypatch.setattr(aggregates, "PENDING_VALUES_MAX", 3)
    values = [0.1] * 10 + [1, 2, 3]
    assert finish("sum", wires_of("sum", values, [4])) == math.fsum(values)
    assert finish("max", wires_of("max", values, [4])) == 3
    assert finish("count_distinct", wires_of("count_distinct", values, [4])) == 4


def test_int_sum_with_group_ids_dense_or_not() -> None:
    """The int sum sizes its per-group list by the rows counter (query.py's group ids are dense,
    so no max() per batch); ids beyond it (a caller whose ids skip numbers) grow the list mid-batch
    without losing or doubling a value; ints, bools, mixed int/float and nulls per group."""
    groups = [0, 1, 0, 2, 1]
    dense = grouped("sum", groups, [1, 2, 3, 4, 5], batch=5)
    assert [finish("sum", [travel(dense.wire(group))]) for group in range(3)] == [4, 7, 4]
    sparse_groups = [1, 7, 1, 3, 7, 9, 0]
    sparse = grouped("sum", sparse_groups, [1, 2, 3, 4, 5, 6, 7], batch=3)
    assert [finish("sum", [travel(sparse.wire(group))]) for group in (0, 1, 3, 7, 9, 5)] == [7, 4, 4, 7, 6, None]
    mixed = grouped("sum", [2, 0, 2, 0, 1], [True, 1, 2.5, None, False], batch=5)
    assert [finish("sum", [travel(mixed.wire(group))]) for group in range(3)] == [1, 0, 3.5]
