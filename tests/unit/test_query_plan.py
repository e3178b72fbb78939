"""Query plans: spec validation, partial() per shard + merge() against pure-Python and pandas references."""
from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shoal.node.compute.query as query_module
from shoal.node.compute import (
    CompiledQuery, EvaluationError, MsgpackDecoder, QueryError, Schema, compile_query, validate_spec,
)
from shoal.node.compute.query import JoinedArrayDecoder

PLAIN_DECODE = functools.partial(msgpack.unpackb, raw=False, strict_map_key=False)
_WIRE_TYPES = (dict, list, str, bytes, int, float, bool, type(None))


def key_of(index: int) -> bytes:
    return b"r%06d" % index


def assert_wire_safe(value: Any) -> None:
    """Only dict (str keys)/list/str/bytes/int (64-bit)/float/bool/None: what msgpack carries as is."""
    assert isinstance(value, _WIRE_TYPES), type(value)
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str)
            assert_wire_safe(item)
    elif isinstance(value, list):
        for item in value:
            assert_wire_safe(item)
    elif isinstance(value, int) and not isinstance(value, bool):
        assert -(2 ** 63) <= value < 2 ** 64


def travel(partial: Any) -> Any:
    assert_wire_safe(partial)
    return msgpack.unpackb(msgpack.packb(partial, use_bin_type=True), raw=False, strict_map_key=False)


def run(spec: dict[str, Any], docs: list[Any], *, shards: int = 3, seed: int = 0, fields: list[str] | None = None,
        schema: Schema | None = None, decode: Callable[[bytes], object] | None = None) -> list[dict[str, Any]]:
    """Records r000000.. spread over shards at random, one partial per shard (through msgpack),
    merged in a random order."""
    rng = random.Random(seed)
    query = compile_query(spec, schema.names if schema else fields)
    parts: list[list[tuple[bytes, bytes]]] = [[] for _ in range(shards)]
    for index, doc in enumerate(docs):
        value = schema.encode(doc) if schema else doc
        parts[rng.randrange(shards)].append((key_of(index), msgpack.packb(value, use_bin_type=True)))
    partials = []
    for pairs in parts:
        partial, scanned = query.partial(pairs, decode or MsgpackDecoder())
        assert scanned <= len(pairs)
        partials.append(travel(partial))
    rng.shuffle(partials)
    return query.merge(partials)


# --- spec validation ---

@pytest.mark.parametrize(("spec", "message"), [
    ({"aggs": [["n", "median", "x"]]}, "aggs[0] (n): unknown aggregate function 'median'"),
    ({"aggs": "count"}, "aggs: expected a list, got str"),
    ({"aggs": [["n", "count"]]}, "aggs[0]: expected [output name, function, expression or None]"),
    ({"aggs": [["s", "sum", None]]}, "aggs[0] (s): sum needs an expression"),
    ({"limit": -1}, "limit: expected an int from 0"),
    ({"limit": True}, "limit: expected an int from 0"),
    ({"limit": 2.0}, "limit: expected an int from 0"),
    ({"where": "x > 1 and "}, "where: column 11: expected an operand after 'and'"),
    ({"where": 5}, "where: expected an expression string, got int"),
    ({"frobnicate": 1}, "unknown key 'frobnicate' in the query spec"),
    ([1, 2], "the query spec must be a dict, got list"),
    ({"select": ["a"], "aggs": [["n", "count", None]]}, "select: select cannot be combined with group_by or aggs"),
    ({"select": []}, "select: select needs at least one expression"),
    ({"select": ["a", " a "]}, "select[1]: output column 'a' is defined twice"),
    ({"group_by": ["g"], "aggs": [["g", "count", None]]}, "aggs[0]: output column 'g' is defined twice"),
    ({"group_by": ["g"], "order_by": [["n", True]]}, "order_by[0]: 'n' is not an output column; with group_by or aggs"),
    ({"select": ["a"], "distinct": True, "order_by": [["b", False]]}, "with select and distinct"),
    ({"order_by": [["a", "desc"]]}, "order_by[0]: descending must be a bool, got str"),
    ({"order_by": ["a"]}, "order_by[0]: expected [expression or output column, descending]"),
    ({"distinct": 1}, "distinct: distinct must be a bool, got int"),
    ({"with_columns": [["late", "x >"]]}, "with_columns[0] (late): column 4: expected an operand after '>'"),
    ({"with_columns": [["_key", "1"]]}, "_key is the record key"),
    ({"with_columns": [["a", "1"], ["a", "2"]]}, "with_columns[1] (a): column 'a' is defined twice"),
    ({"with_columns": [["", "1"]]}, "with_columns[0]: a name must be a non-empty string"),
    ({"with_columns": [["late", "1"]], "where": "late"}, "where: 'late' is a with_columns name"),
    ({"group_by": ["a"] * 33}, "group_by: 33 entries, at most 32"),
    ({"aggs": [["n" * 129, "count", None]]}, "name is 129 characters long, at most 128"),
    ({"where": "lower(a, b)"}, "where: column 1: lower() takes 1 argument, got 2"),
    ({"group_by": ["a + "]}, "group_by[0]: column 5: expected an operand after '+'"),
    ({"where": "a == 1 and 'x' > 1"}, "where: column 12: cannot compare str with int in `'x' > 1`"),
    ({"aggs": [["s", "sum", "lower(1)"]]}, "aggs[0] (s): column 1: lower() needs a str, got int"),
])
def test_spec_errors_name_the_entry(spec: Any, message: str) -> None:
    """A bad spec is one QueryError whose one-line message names the entry (and column)."""
    with pytest.raises(QueryError) as caught:
        validate_spec(spec)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_spec_defaults_and_accepted_forms() -> None:
    """Missing keys are defaults; None is accepted where a default is; count may say '*'; tuples work."""
    validate_spec({})
    validate_spec({"where": None, "with_columns": None, "group_by": None, "aggs": None, "select": None,
                   "distinct": None, "order_by": None, "limit": None})
    query = compile_query({"group_by": (" g ",), "aggs": [("n", "count", "*"), ("s", "sum", "v")],
                           "order_by": [("n", True)], "limit": 3})
    assert query.columns == ["g", "n", "s"]
    assert compile_query({"select": ["a", "b + 1"]}).columns == ["a", "b + 1"]
    assert compile_query({}).columns == []
    assert compile_query({"where": "a > 1", "with_columns": [["c", "b"]], "group_by": ["c"],
                          "aggs": [["n", "count", "d.e"]]}).referenced_fields == frozenset({"a", "b", "d"})


# --- group_by + aggs against references ---

_group_values = st.one_of(st.none(), st.sampled_from(["a", "b", "c"]), st.integers(0, 2), st.just(1.0), st.just(True))
_numbers = st.one_of(st.none(), st.integers(-1000, 1000), st.booleans(), st.integers(-400, 400).map(lambda v: v / 4))
_documents = st.one_of(
    st.fixed_dictionaries({}, optional={"g": _group_values, "h": st.sampled_from(["x", "y"]), "v": _numbers}),
    st.sampled_from([7, "text", [1, 2], None]))


def _tag(value: Any) -> Any:
    if isinstance(value, float):
        return ("float", "nan" if math.isnan(value) else value + 0.0)
    return (type(value).__name__, value)


def _sort_key(value: Any) -> tuple[Any, ...]:
    if value is None:
        return (1,)
    if isinstance(value, bool):
        return (0, 2, value)
    if isinstance(value, (int, float)):
        return (0, 0, value, isinstance(value, float))
    return (0, 3, value)


def reference_groups(docs: list[Any], group_fields: list[str], value_field: str) -> list[dict[str, Any]]:
    """Plain Python: group by type-tagged field values (missing/non-dict -> None), aggregate `value_field`."""
    groups: dict[tuple[Any, ...], tuple[list[Any], list[Any]]] = {}
    for doc in docs:
        record = doc if isinstance(doc, dict) else {}
        key = [record.get(name) for name in group_fields]
        entry = groups.setdefault(tuple(map(_tag, key)), (key, []))
        entry[1].append(record.get(value_field))
    rows = []
    for key, values in groups.values():
        present = [value for value in values if value is not None]
        exact = sum(map(Fraction, present), Fraction(0))
        saw_float = any(type(value) is float for value in present)
        numbers = sorted(present, key=_sort_key)
        row = dict(zip(group_fields, key))
        row.update({
            "rows": len(values), "n": len(present),
            "total": None if not present else (float(exact) if saw_float else int(exact)),
            "mean": None if not present else float(exact / len(present)),
            "low": numbers[0] if numbers else None, "high": numbers[-1] if numbers else None,
            "distinct": len({_tag(value) for value in present}),
        })
        rows.append(row)
    for name in reversed(group_fields):
        rows.sort(key=lambda row: _sort_key(row[name]))
    return rows


_AGGS = [["rows", "count", None], ["n", "count", "v"], ["total", "sum", "v"], ["mean", "mean", "v"],
         ["low", "min", "v"], ["high", "max", "v"], ["distinct", "count_distinct", "v"]]


def same_rows(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> bool:
    """Equal rows, with equal types for every value (1 is not 1.0 is not True)."""
    if len(got) != len(expected):
        return False
    for left, right in zip(got, expected):
        if left.keys() != right.keys():
            return False
        for name in left:
            if type(left[name]) is not type(right[name]) or left[name] != right[name]:
                return False
    return True


@settings(max_examples=150, deadline=None, derandomize=True)
@given(docs=st.lists(_documents, max_size=40), shards=st.integers(1, 4), seed=st.integers(0, 99),
       batch=st.sampled_from([1, 3, 256]), two_keys=st.booleans())
def test_group_by_matches_a_python_reference(docs: list[Any], shards: int, seed: int, batch: int,
                                             two_keys: bool) -> None:
    """Documents with nulls, missing fields and non-dicts; keys 1, 1.0 and True are separate groups,
    null is its own group (last); every aggregate equals a plain-Python computation; rows come
    sorted by group key whatever the shard split and merge order."""
    original = query_module.BATCH_RECORDS
    query_module.BATCH_RECORDS = batch
    try:
        group_fields = ["g", "h"] if two_keys else ["g"]
        rows = run({"group_by": group_fields, "aggs": _AGGS}, docs, shards=shards, seed=seed)
    finally:
        query_module.BATCH_RECORDS = original
    expected = reference_groups(docs, group_fields, "v")
    assert same_rows(rows, expected), (rows, expected)


def test_aggregates_without_group_by_give_one_row_even_with_no_data() -> None:
    """aggs only: one row; over nothing: count 0 and nulls; merge of no partials too."""
    docs = [{"v": 1}, {"v": 2.5}, {"v": None}, {}]
    assert run({"aggs": _AGGS}, docs) == [{"rows": 4, "n": 2, "total": 3.5, "mean": 1.75, "low": 1, "high": 2.5,
                                           "distinct": 2}]
    empty = {"rows": 0, "n": 0, "total": None, "mean": None, "low": None, "high": None, "distinct": 0}
    assert run({"aggs": _AGGS}, []) == [empty]
    assert compile_query({"aggs": _AGGS}).merge([]) == [empty]
    assert compile_query({"group_by": ["g"], "aggs": _AGGS}).merge([]) == []


def test_group_by_against_pandas() -> None:
    """count/sum/mean/min/max/nunique per group agree with pandas on a sample with NaN (null here)."""
    pandas = pytest.importorskip("pandas")
    rng = random.Random(11)
    docs = []
    for _ in range(500):
        doc: dict[str, Any] = {"carrier": rng.choice(["AA", "DL", "UA", "WN"])}
        if rng.random() < 0.85:
            doc["delay"] = rng.randint(-80, 800) / 4 if rng.random() < 0.9 else None
        docs.append(doc)
    rows = run({"group_by": ["carrier"], "aggs": [
        ["n", "count", "delay"], ["total", "sum", "delay"], ["mean", "mean", "delay"], ["low", "min", "delay"],
        ["high", "max", "delay"], ["distinct", "count_distinct", "delay"]]}, docs, shards=4)
    frame = pandas.DataFrame([{"carrier": d["carrier"], "delay": d.get("delay")} for d in docs])
    frame["delay"] = frame["delay"].astype("float64")        # None -> NaN, as pandas stores missing floats
    grouped = frame.groupby("carrier")["delay"]
    expected = pandas.DataFrame({
        "n": grouped.count(), "total": grouped.sum(min_count=1), "mean": grouped.mean(),
        "low": grouped.min(), "high": grouped.max(), "distinct": grouped.nunique()})
    assert [row["carrier"] for row in rows] == list(expected.index)
    for row in rows:
        reference = expected.loc[row["carrier"]]
        assert row["n"] == reference["n"] and row["distinct"] == reference["distinct"]
        for name in ("total", "low", "high"):
            assert row[name] == reference[name]                # quarters: every sum is exact in both
        assert math.isclose(row["mean"], reference["mean"], rel_tol=1e-15)


def test_group_keys_switch_from_raw_to_identity_keys_without_mixing_groups() -> None:
    """String keys first (raw fast path), then 1, 1.0 and True in the same and a later batch: the
    number keys stay three groups and the string groups keep their counts."""
    original = query_module.BATCH_RECORDS
    query_module.BATCH_RECORDS = 4
    try:
        docs = [{"g": "a"}, {"g": "b"}, {"g": "a"}, {"g": None}, {"g": "a"}, {"g": 1}, {"g": True},
                {"g": 1.0}, {"g": 1}, {"g": [1]}, {"g": [1]}, {"g": math.nan}, {"g": math.nan}]
        rows = run({"group_by": ["g"], "aggs": [["n", "count", None]]}, docs, shards=1)
    finally:
        query_module.BATCH_RECORDS = original

    def is_nan(value: Any) -> bool:
        return isinstance(value, float) and math.isnan(value)
    assert [(row["g"], type(row["g"]), row["n"]) for row in rows if not is_nan(row["g"])] == [
        (1, int, 2), (1.0, float, 1), (True, bool, 1), ("a", str, 3), ("b", str, 1), ([1], list, 2),
        (None, type(None), 1)]
    assert [row["n"] for row in rows if is_nan(row["g"])] == [2]                  # NaN after the numbers


def test_group_rows_order_by_and_limit() -> None:
    """order_by an aggregate (descending), ties broken by group key, then limit."""
    docs = [{"c": c} for c in "abacabdd"]
    rows = run({"group_by": ["c"], "aggs": [["n", "count", None]], "order_by": [["n", True]], "limit": 3}, docs)
    assert rows == [{"c": "a", "n": 3}, {"c": "b", "n": 2}, {"c": "d", "n": 2}]


def test_group_by_expression_and_computed_columns() -> None:
    """Group by an expression over a computed column; the output column is the stripped text."""
    docs = [{"dep": d, "arr": a} for d, a in [(10, 70), (90, 50), (65, 80), (None, 100)]]
    rows = run({"where": "arr > 60", "with_columns": [["late", "arr > 60"], ["both", "late and dep > 60"]],
                "group_by": [" coalesce(both, false) "], "aggs": [["n", "count", None], ["avg", "mean", "arr"]]}, docs)
    assert rows == [{"coalesce(both, false)": False, "n": 2, "avg": 85.0},
                    {"coalesce(both, false)": True, "n": 1, "avg": 80.0}]


# --- rows: select, whole documents, distinct, order_by, limit ---

_row_documents = st.fixed_dictionaries({}, optional={
    "v": st.one_of(st.none(), st.integers(-5, 5), st.sampled_from([0.5, -1.5])), "s": st.sampled_from(["a", "b", "c"])})


def _reference_order(entries: list[tuple[bytes, Any, Any]], descending: bool) -> list[tuple[bytes, Any, Any]]:
    """(key, sort value, row) by sort value (nulls last either way), then key."""
    ordered = sorted(entries, key=lambda entry: entry[0])
    present = [entry for entry in ordered if entry[1] is not None]
    nulls = [entry for entry in ordered if entry[1] is None]
    present.sort(key=lambda entry: _sort_key(entry[1]), reverse=descending)
    return present + nulls


@settings(max_examples=150, deadline=None, derandomize=True)
@given(docs=st.lists(_row_documents, max_size=30), limit=st.one_of(st.none(), st.integers(0, 8)),
       descending=st.booleans(), shards=st.integers(1, 4), seed=st.integers(0, 99))
def test_top_k_rows_match_a_sorted_reference(docs: list[dict[str, Any]], limit: int | None, descending: bool,
                                             shards: int, seed: int) -> None:
    """select with order_by (an expression not selected) and limit = the first rows of a full sort
    (nulls last, ties by record key), whatever the split into shards."""
    spec = {"where": "s != 'c'", "select": ["s", "_key"], "order_by": [["v * 2", descending]], "limit": limit}
    rows = run(spec, docs, shards=shards, seed=seed)
    entries = [(key_of(index), None if doc.get("v") is None else doc["v"] * 2,
                {"s": doc.get("s"), "_key": key_of(index).decode()})
               for index, doc in enumerate(docs) if doc.get("s") not in ("c", None)]     # null != 'c' is null
    expected = [row for _, _, row in _reference_order(entries, descending)]
    assert rows == (expected if limit is None else expected[:limit])


@settings(max_examples=100, deadline=None, derandomize=True)
@given(docs=st.lists(_row_documents, max_size=30), limit=st.one_of(st.none(), st.integers(0, 5)),
       shards=st.integers(1, 4), seed=st.integers(0, 99), ordered=st.booleans())
def test_distinct_rows(docs: list[dict[str, Any]], limit: int | None, shards: int, seed: int, ordered: bool) -> None:
    """distinct select rows (1 and 1.0 distinct), ordered by a selected column, or by the first
    record key of each distinct row; limit after distinct."""
    spec: dict[str, Any] = {"select": ["s", "v"], "distinct": True, "limit": limit}
    if ordered:
        spec["order_by"] = [["v", True]]
    rows = run(spec, docs, shards=shards, seed=seed)
    first: dict[Any, tuple[bytes, Any, Any]] = {}
    for index, doc in enumerate(docs):
        identity = (_tag(doc.get("s")), _tag(doc.get("v")))
        first.setdefault(identity, (key_of(index), doc.get("v"), {"s": doc.get("s"), "v": doc.get("v")}))
    entries = list(first.values())
    ranked = _reference_order(entries, True) if ordered else sorted(entries, key=lambda entry: entry[0])
    expected = [row for _, _, row in ranked]
    assert rows == (expected if limit is None else expected[:limit])


def test_whole_documents_with_computed_columns() -> None:
    """No select and no aggs: rows are the documents plus computed columns, in key order; a
    non-dict document becomes {"_value": ...}."""
    docs = [{"a": 2}, 5, {"a": 7, "b": {"c": 1}}]
    rows = run({"with_columns": [["twice", "a * 2"], ["big", "twice > 10"]]}, docs, shards=2)
    assert rows == [{"a": 2, "twice": 4, "big": False}, {"_value": 5, "twice": None, "big": None},
                    {"a": 7, "b": {"c": 1}, "twice": 14, "big": True}]
    rows = run({"order_by": [["a", True]], "limit": 2, "where": "a is not null"}, docs, shards=2)
    assert rows == [{"a": 7, "b": {"c": 1}}, {"a": 2}]
    assert run({"distinct": True, "order_by": [["a", False]]}, [{"a": 1}, {"a": 1}, {"a": 1.0}, 3]) == \
        [{"a": 1}, {"a": 1.0}, {"_value": 3}]


def test_limit_without_order_keeps_the_smallest_keys_and_stops_reading() -> None:
    """limit alone returns the rows of the smallest record keys; a shard stops after `limit` matches."""
    docs = [{"i": index} for index in range(10_000)]
    query = compile_query({"select": ["i"], "where": "i % 3 == 0", "limit": 5})
    pairs = [(key_of(index), msgpack.packb(doc)) for index, doc in enumerate(docs)]
    partial, scanned = query.partial(pairs, MsgpackDecoder())
    assert scanned < len(pairs)
    assert query.merge([travel(partial)]) == [{"i": i} for i in (0, 3, 6, 9, 12)]
    assert run({"select": ["i"], "limit": 4}, docs[:50], shards=4) == [{"i": i} for i in range(4)]
    assert compile_query({"select": ["i"], "limit": 0}).partial(pairs, MsgpackDecoder())[1] == 0


def test_where_keeps_only_true_and_type_errors_raise() -> None:
    """where keeps a record only when the expression is exactly True (not null, not 1); a record
    that does not fit an operator is an EvaluationError."""
    docs = [{"x": 5}, {"x": None}, {}, {"x": 1}, {"flag": 1}, {"flag": True}]
    assert run({"where": "x > 2", "select": ["x"]}, docs) == [{"x": 5}]
    assert run({"where": "flag", "select": ["flag"]}, docs) == [{"flag": True}]
    with pytest.raises(EvaluationError, match="cannot compare str with int in `x > 2`"):
        run({"where": "x > 2", "aggs": [["n", "count", None]]}, [{"x": "a"}])


def test_positional_records_give_the_same_rows_as_documents() -> None:
    """With a schema, records are positional lists; every kind of query gives the document path's rows."""
    schema = Schema.from_json({"carrier": "str", "delay": "float?", "late": "bool?", "n": "int"})
    rng = random.Random(3)
    docs = [{"carrier": rng.choice("ABC"), "delay": rng.choice([None, rng.randint(-20, 200) / 2]),
             "late": rng.choice([None, True, False]), "n": rng.randint(0, 9)} for _ in range(300)]
    stored = [schema.decode(schema.encode(doc)) for doc in docs]       # ints in a float field become floats
    specs: list[dict[str, Any]] = [
        {"group_by": ["carrier", "late"], "aggs": _AGGS[:1] + [["d", "mean", "delay"], ["m", "max", "n"]]},
        {"where": "delay > 10 and not late", "aggs": [["s", "sum", "delay"], ["k", "count_distinct", "carrier"]]},
        {"select": ["carrier", "delay * 2", "_key"], "order_by": [["delay", True], ["n", False]], "limit": 17},
        {"with_columns": [["slow", "coalesce(delay, 0) > 50"]], "select": ["carrier", "slow"], "distinct": True},
        {"with_columns": [["slow", "delay > 50"]], "where": "n < 3", "order_by": [["slow", False]]},
    ]
    for spec in specs:
        assert run(spec, docs, schema=schema, shards=3) == run(spec, stored, shards=2), spec
    with pytest.raises(QueryError, match="^where: column 1: unknown field 'nope' \\(schema fields: carrier, delay"):
        validate_spec({"where": "nope > 1"}, schema.names)


def test_merge_is_the_same_in_any_order() -> None:
    """Shuffled partials give identical results (float sums included)."""
    rng = random.Random(8)
    docs = [{"g": rng.choice(["x", "y"]), "v": rng.uniform(-1e10, 1e10) * 10 ** rng.randint(-12, 12)}
            for _ in range(400)]
    spec = {"group_by": ["g"], "aggs": [["s", "sum", "v"], ["m", "mean", "v"]]}
    results = [run(spec, docs, shards=5, seed=seed) for seed in range(6)]
    assert all(result == results[0] for result in results)
    assert results[0][0]["s"] == math.fsum(d["v"] for d in docs if d["g"] == "x")


def test_decoders_give_the_same_result() -> None:
    """MsgpackDecoder (batch fast path, falling back for int map keys) == a plain per-record decode."""
    docs = [{"g": "a", "v": 1}, {"g": "b", "v": 2, 5: "int key"}, {"g": "a", "v": 3}]
    spec = {"group_by": ["g"], "aggs": [["s", "sum", "v"]]}
    assert run(spec, docs, decode=PLAIN_DECODE) == run(spec, docs) == [{"g": "a", "s": 4}, {"g": "b", "s": 2}]
    assert MsgpackDecoder().decode_batch([msgpack.packb({1: 2})]) == [{1: 2}]
    with pytest.raises(Exception):
        MsgpackDecoder().decode_batch([b"\xc1"])


def test_joined_array_decoder_equals_per_value_decoding_and_names_a_bad_value() -> None:
    """One unpackb over joined arrays == one per value; a truncated value never borrows its
    neighbour's bytes silently: the batch falls back to per-value decoding, which raises."""
    arrays = [[i, f"u{i}", None, i / 3, {"k": [1, 2]}, i % 2 == 0, b"\x00"] for i in range(300)] + [[], [{1: "x"}]]
    raws = [msgpack.packb(a, use_bin_type=True) for a in arrays]
    assert JoinedArrayDecoder().decode_batch(raws) == MsgpackDecoder().decode_batch(raws) == arrays
    truncated = [msgpack.packb([1, 2]), b"\x92\x01", msgpack.packb([3, 4])]   # [1] of 2, then a whole one
    with pytest.raises(Exception):
        JoinedArrayDecoder().decode_batch(truncated)


def test_joined_decoder_on_schema_less_maps_equals_per_value_decoding() -> None:
    """The worker decodes schema-less values joined too (each stored value was checked to be one
    msgpack object): maps with nulls, bools, ints, floats, nested maps and lists, missing fields
    and non-map documents decode as one call per value would; a map with a non-string key
    (refused by the joined call's strict_map_key) falls back; a query over them gives the answer
    of the per-record decode."""
    docs: list[Any] = [{"g": "a", "v": 1, "n": None, "t": True, "f": 0.5, "o": {"x": [1, {"y": None}]}},
                       {"g": "b"}, {"v": 2**63}, [1, "a"], "text", 7, None, {"g": "a", "v": -3.25}]
    raws = [msgpack.packb(doc, use_bin_type=True) for doc in docs]
    assert JoinedArrayDecoder().decode_batch(raws) == [msgpack.unpackb(raw) for raw in raws] == docs
    int_keys = raws + [msgpack.packb({1: "one", "g": "c"})]
    assert JoinedArrayDecoder().decode_batch(int_keys) == docs + [{1: "one", "g": "c"}]
    spec = {"group_by": ["g"], "aggs": [["n", "count", None], ["s", "sum", "v"], ["t", "sum", "t"]]}
    many = [{"g": "ab"[i % 2], "v": i if i % 3 else i / 4, "t": i % 5 == 0} for i in range(600)] + docs[:3]
    assert run(spec, many, decode=JoinedArrayDecoder()) == run(spec, many, decode=PLAIN_DECODE)


def test_values_alone_give_the_same_partial_as_pairs() -> None:
    """partial_of_values (no keys read) == partial over pairs for a query that reads no key;
    a query reading keys refuses it."""
    docs = [{"g": "ab"[i % 2], "v": i} for i in range(700)]
    pairs = [(key_of(i), msgpack.packb(d)) for i, d in enumerate(docs)]
    aggregate = compile_query({"where": "v > 10", "group_by": ["g"], "aggs": [["s", "sum", "v"]]})
    assert not aggregate.reads_keys
    assert aggregate.partial_of_values([raw for _, raw in pairs], MsgpackDecoder()) == \
        aggregate.partial(pairs, MsgpackDecoder())
    rows = compile_query({"select": ["v"], "limit": 3})
    assert rows.reads_keys
    with pytest.raises(AssertionError):
        rows.partial_of_values([raw for _, raw in pairs], MsgpackDecoder())


def test_compiled_query_is_reusable() -> None:
    """One CompiledQuery runs many partials (the worker caches it); each starts empty."""
    query: CompiledQuery = compile_query({"group_by": ["g"], "aggs": [["n", "count", None]]})
    pairs = [(key_of(0), msgpack.packb({"g": "a"}))]
    first = query.partial(pairs, MsgpackDecoder())
    second = query.partial(pairs, MsgpackDecoder())
    assert first == second
    assert query.merge([travel(first[0]), travel(second[0])]) == [{"g": "a", "n": 2}]


# --- integers past 64 bits: one clear error naming the column, never a result that cannot be sent ---

def test_a_sum_past_64_bits_fails_the_merge_naming_the_aggregate() -> None:
    """Found by hand: three int64 maxima summed to 27670116110564327421; the job said done and
    reading its result failed with msgpack's "Integer value out of range" (INTERNAL)."""
    big = 2 ** 63 - 1
    with pytest.raises(EvaluationError, match=r"aggregate s = sum\(i\): the result 27670116110564327421 is outside "
                                              r"-2\^63\.\.2\^64-1"):
        run({"aggs": [["s", "sum", "i"]]}, [{"i": big}] * 3, shards=2)
    with pytest.raises(EvaluationError, match=r"aggregate low = sum\(i\): the result -18446744073709551616"):
        run({"group_by": ["g"], "aggs": [["low", "sum", "i"]]}, [{"g": "a", "i": -(2 ** 63)}] * 2, shards=1)
    assert run({"aggs": [["s", "sum", "i * 1.0"]]}, [{"i": big}] * 3) == [{"s": float(3 * big)}]
    assert run({"aggs": [["s", "sum", "i"], ["m", "mean", "i"]]}, [{"i": big}, {"i": -big}, {"i": big}]) == [
        {"s": big, "m": big / 3}]   # past the range midway, back inside at the end: exact


@pytest.mark.parametrize(("spec", "place"), [
    ({"with_columns": [["x", "i * 9223372036854775807"]], "select": ["x"]}, "x"),
    ({"with_columns": [["y", "i * i * i"]], "group_by": ["y"], "aggs": [["n", "count", None]]}, "group key y"),
    ({"with_columns": [["z", "-i * i"]], "aggs": [["lo", "min", "z"]]}, "aggregate lo"),
    ({"select": ["i"], "order_by": [["i * i * i", True]]}, "order_by i * i * i"),
])
def test_a_computed_integer_past_64_bits_is_named_by_its_column(spec: dict[str, Any], place: str) -> None:
    """A partial msgpack cannot pack (an int past 64 bits): out_of_range_error names where it is."""
    query = compile_query(spec, None)
    pairs = [(key_of(i), msgpack.packb({"i": i}, use_bin_type=True)) for i in (3, 2 ** 40, 9)]
    partial, _ = query.partial(pairs, MsgpackDecoder())
    with pytest.raises(OverflowError):
        msgpack.packb(partial, use_bin_type=True)
    error = query.out_of_range_error(partial)
    assert str(error).startswith(f"{place}: "), error
    assert "is an integer outside -2^63..2^64-1" in str(error) and "multiply by 1.0" in str(error)
