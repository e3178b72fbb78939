"""Fuzz target 2 (issue 19.7): the expression parser and the query spec compiler.

Feeds `parse_expression` / `compile_expression` with arbitrary text (surrogates included),
token soup from the grammar's vocabulary (unbalanced parentheses, bad escapes, huge numbers,
wrong arities), grammar-shaped expressions and deep nesting past the limits; and feeds
`compile_query` / `CompiledQuery.partial` / `merge` with arbitrary specs (known and unknown
keys, values of every msgpack type, entries of every shape, built from those expressions)
over documents of every type, schema-less and as a typed dataset's positional records.
Asserts (fuzz_targets.check_expression / check_spec): bad text or specs raise QueryError
only (SubmitJob's INVALID_QUERY), evaluation raises EvaluationError only (a failed task),
partials survive msgpack, and merge (run by GetJobResult) never raises.
"""
from __future__ import annotations

from typing import Any

import pytest
from hypothesis import strategies as st

from fuzz_targets import check_expression, check_spec
from shoal.node.compute.aggregates import AGGREGATE_FUNCTIONS
from shoal.node.compute.expressions import FUNCTION_ARITY
from shoal.node.compute.spec import SPEC_KEYS

# The strategies are large trees: hypothesis warns when it prints one (not a finding).
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")


_VOCABULARY = [
    "(", ")", ",", ".", "and", "OR", "not", "in", "is", "null", "true", "False", "==", "=", "!=", "<", "<=", ">",
    ">=", "+", "-", "*", "/", "%", "`a`", "``", "`", "`_key`", "'s'", '"x"', "'\\u00e9'", "'\\u12'", "'\\q'", "'",
    "0", "1", "1.5", "2e-3", "1e400", "9" * 40, ".5", "1.", "1e", "_key", "a", "i", "f", "s", "b", "t", "m", "m.x",
    "a.b.c", "\x00", "\u00e9", "#", "$", *FUNCTION_ARITY]
_SOUP = st.lists(st.sampled_from(_VOCABULARY), max_size=16).flatmap(
    lambda tokens: st.sampled_from([" ", ""]).map(lambda glue: glue.join(tokens)))
_LEAVES = st.sampled_from(["i", "f", "s", "b", "t", "m.x", "l", "1", "0", "-1", "2.5", "'a'", "''", "true", "null",
                           "_key", "`_key`", "9223372036854775807", "18446744073709551616", "1e308"])
_OPERATORS = ["+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "and", "or"]


def _extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(inner, st.sampled_from(_OPERATORS), inner).map(lambda p: f"({p[0]} {p[1]} {p[2]})"),
        inner.map("(not {})".format), inner.map("(-{})".format), inner.map("({} is not null)".format),
        st.tuples(inner, st.sampled_from(["1, 'a', true", "null", "1.5", "", "(1)"])).map(
            lambda p: f"({p[0]} in ({p[1]}))"),
        st.tuples(st.sampled_from(sorted(FUNCTION_ARITY)), st.lists(inner, max_size=3)).map(
            lambda p: f"{p[0]}({', '.join(p[1])})"))


EXPRESSIONS = st.recursive(_LEAVES, _extend, max_leaves=8)
_DEEP = st.tuples(st.sampled_from(["(", "not ", "-", "abs(", "a + ", "a and "]), st.integers(40, 400)).map(
    lambda p: p[0] * p[1] + "a" + (")" * p[1] if "(" in p[0] else ""))
ANY_TEXT = st.one_of(st.text(st.characters(codec=None, exclude_categories=()), max_size=60), _SOUP, EXPRESSIONS,
                     _DEEP, st.integers(10_001, 10_010).map(lambda length: "a" * length))

_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(), st.text(max_size=6),
                     st.binary(max_size=4))
_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.text(max_size=3), inner, max_size=3)),
                       max_leaves=6)
_TEXTS = st.one_of(EXPRESSIONS, EXPRESSIONS, EXPRESSIONS, _SOUP, _VALUES)
_NAMES = st.one_of(st.sampled_from(["n", "x", "y", "i"]), st.sampled_from(["n", "_key", "", " ", "x" * 129]), _VALUES)
_GOOD_NAMES = st.sampled_from(["n", "x", "y", "i"])


def _entries(texts: st.SearchStrategy[Any], names: st.SearchStrategy[Any], rough: bool) -> st.SearchStrategy[Any]:
    """A spec of the documented shape; `rough` also puts wrong types and shapes in its entries."""
    def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(strategy, strategy, _VALUES) if rough else strategy
    flags = maybe(st.booleans())
    entries = {
        "where": texts,
        "with_columns": maybe(st.lists(maybe(st.tuples(names, texts).map(list)), max_size=3)),
        "group_by": maybe(st.lists(texts, max_size=3)),
        "aggs": maybe(st.lists(maybe(st.tuples(names, st.sampled_from([*AGGREGATE_FUNCTIONS, "median"]),
                                               st.one_of(st.none(), st.just("*"), texts, texts)).map(list)),
                               max_size=3)),
        "select": st.one_of(st.none(), maybe(st.lists(texts, max_size=3))),
        "distinct": flags,
        "order_by": maybe(st.lists(maybe(st.tuples(st.one_of(st.sampled_from(["n", "x", "i"]), texts), flags)
                                         .map(list)), max_size=3)),
        "limit": maybe(st.one_of(st.integers(-1, 5), st.sampled_from([2**63 - 1, 2**63, 2**64 - 1]))),
    }
    return st.fixed_dictionaries({}, optional={key: entries[key] for key in SPEC_KEYS})


GOOD_SPECS = _entries(EXPRESSIONS, _GOOD_NAMES, rough=False)
SPECS = st.one_of(
    GOOD_SPECS, GOOD_SPECS, _entries(_TEXTS, _NAMES, rough=True),
    st.dictionaries(st.one_of(st.sampled_from([*SPEC_KEYS, "having"]), st.text(max_size=4)), _VALUES, max_size=4),
    _VALUES)
DOCUMENTS = st.one_of(
    st.fixed_dictionaries({}, optional={"i": st.one_of(st.integers(-3, 3), _SCALARS), "f": _SCALARS,
                                        "s": st.one_of(st.sampled_from(["a", "ab", "B"]), _SCALARS), "b": _SCALARS,
                                        "t": _SCALARS, "m": _VALUES, "x": _VALUES}),
    _VALUES)


def test_fuzz_expression_text_parses_or_raises_query_error(fuzz: Any) -> None:
    """Any text: parse and compile raise QueryError only, evaluation EvaluationError only."""
    fuzz("expressions.text", ANY_TEXT, check_expression, ci_examples=80)


def test_fuzz_query_spec_compiles_or_raises_query_error(fuzz: Any) -> None:
    """Any spec over any records: QueryError at compile, EvaluationError in partial(), msgpack-safe
    partials, and a merge that never raises."""
    fuzz("expressions.spec", st.tuples(SPECS, st.lists(DOCUMENTS, max_size=6)),
         lambda example: check_spec(*example), ci_examples=40)
