"""Static type checks over a typed dataset (node/compute/typecheck.py): pure units.

A query whose expression fails on every record of a typed dataset is refused before any task
runs, with the message the evaluation itself gives; one that can succeed on some non-null
record is never refused.
"""
from __future__ import annotations

from typing import Any

import msgpack
import pytest

from shoal.node.compute import EvaluationError, MsgpackDecoder, QueryError, Schema, compile_query, validate_spec
from shoal.node.compute.typecheck import schema_types

SCHEMA = Schema.from_json({"s": "str", "n": "int?", "f": "float", "b": "bool", "t": "timestamp"})
RECORD = {"s": "abc", "n": 7, "f": 2.5, "b": True, "t": 1_700_000_000_000}


def validate(spec: dict[str, Any]) -> None:
    validate_spec(spec, SCHEMA.names, schema_types(SCHEMA))


def evaluate(spec: dict[str, Any]) -> None:
    """Run the query over one typical record, as a task would."""
    query = compile_query(spec, SCHEMA.names)
    query.partial([(b"k", msgpack.packb(SCHEMA.encode(RECORD)))], MsgpackDecoder())


@pytest.mark.parametrize("spec", [
    {"where": "n > 1 and f < 2.5 and t > 0 and s == 'x'"},
    {"where": "s > 'a' and b"},
    {"with_columns": [["x", "n * f"]], "select": ["x > 1"]},
    {"aggs": [["m", "sum", "n"], ["c", "sum", "b"], ["a", "mean", "f"]]},
    {"where": "len(s) > 2 and startswith(s, 'a') and abs(n) > 1 and round(f, 1) > 0"},
    {"where": "coalesce(n, 0) > 1 and n == 'a' and n in (1, 'x') and s is not null"},
    {"where": "_key > 'a' and s.x > 1"},            # unknown types (nested, the key): left to the run
    {"group_by": ["t / 86400000"], "aggs": [["c", "count", None]]},
])
def test_well_typed_queries_pass(spec: dict[str, Any]) -> None:
    validate(spec)
    evaluate(spec)


@pytest.mark.parametrize(("spec", "located"), [
    ({"where": "s > 1"}, "where: column 1: "),
    ({"where": "s + 1 > 2"}, "where: column 1: "),
    ({"where": "not s"}, "where: column 1: "),
    ({"aggs": [["m", "sum", "s"]]}, "aggs[0] (m): column 1: "),
    ({"where": "startswith(n, 'a')"}, "where: column 1: "),
    ({"with_columns": [["x", "lower(s)"]], "select": ["x > 1"]}, "select[0]: column 1: "),
    ({"where": "-s > 1"}, "where: column 1: "),
    ({"select": ["upper(n)"]}, "select[0]: column 1: "),
    ({"where": "b < 1"}, "where: column 1: "),
    ({"group_by": ["s * 2"], "aggs": [["c", "count", None]]}, "group_by[0]: column 1: "),
    ({"where": "f > 0 and len(f) > 1"}, "where: column 11: "),
])
def test_ill_typed_queries_are_refused_with_the_runtime_message(spec: dict[str, Any], located: str) -> None:
    """Found by hand: `--where "s > 1"` on a str field failed in every task instead of up front."""
    with pytest.raises(QueryError) as refused:
        validate(spec)
    assert str(refused.value).startswith(located), refused.value
    with pytest.raises(EvaluationError) as failed:
        evaluate(spec)
    assert str(refused.value) == located + str(failed.value)


def test_schema_less_queries_are_not_type_checked() -> None:
    validate_spec({"where": "s > 1"})    # a document may hold an int in s: the run decides


@pytest.mark.parametrize(("condition", "message"), [
    ("n and b", "where: column 1: 'and' needs bool operands, got int in `n and b`"),
    ("n", "where: column 1: the condition must be a bool, got int in `n`"),
    ("lower(s)", "where: column 1: the condition must be a bool, got str in `lower(s)`"),
])
def test_a_condition_that_is_never_a_bool_is_refused(condition: str, message: str) -> None:
    """A run keeps a record only when its condition is true, so a non-bool one silently kept
    nothing; refused up front instead."""
    with pytest.raises(QueryError) as refused:
        validate({"where": condition})
    assert str(refused.value) == message
    query = compile_query({"where": condition}, SCHEMA.names)
    partial, _ = query.partial([(b"k", msgpack.packb(SCHEMA.encode(RECORD)))], MsgpackDecoder())
    assert partial == {"rows": []}
