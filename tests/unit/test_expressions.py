"""Expressions: parse errors with columns, limits, null and type semantics, column paths == reference."""
from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.node.compute import QueryError
from shoal.node.compute.columns import Batch, compile_expression
from shoal.node.compute.errors import EvaluationError
from shoal.node.compute.expressions import parse_expression
from shoal.node.compute.syntax import Field, Literal, Logical

DOCS: list[Any] = [
    {"a": 1, "b": 2.5, "s": "Hello", "t": True, "n": None, "o": {"x": 10, "y": {"z": "deep"}}, "l": [1, 2]},
    {"a": None, "b": -1.0, "s": "world", "t": False},
    {"a": 7, "s": "", "o": "not a dict"},
    42,
    {"a": 2.0, "b": 0, "s": "hey", "t": None, "o": {"x": None}},
]


def column(text: str, docs: list[Any] = DOCS, keys: list[bytes] | None = None) -> list[Any]:
    """The expression's column over docs (keys k0, k1, ... unless given)."""
    keys = keys if keys is not None else [b"k%d" % index for index in range(len(docs))]
    return compile_expression(parse_expression(text))(Batch(list(docs), keys))


def reference(text: str, docs: list[Any] = DOCS) -> list[Any]:
    """The expression evaluated record by record (the reference semantics)."""
    compiled = compile_expression(parse_expression(text))
    return [compiled.evaluate(doc, b"k%d" % index) for index, doc in enumerate(docs)]


def same(left: list[Any], right: list[Any]) -> bool:
    """Equal values of equal types (NaN equal to NaN)."""
    if len(left) != len(right):
        return False
    for x, y in zip(left, right):
        if type(x) is not type(y):
            return False
        if isinstance(x, float) and math.isnan(x):
            if not math.isnan(y):
                return False
        elif x != y:
            return False
    return True


@pytest.mark.parametrize(("text", "position", "problem"), [
    ("x > 1 and ", 11, "expected an operand after 'and'"),
    ("x >", 4, "expected an operand after '>'"),
    ("foo(1)", 1, "unknown function 'foo'"),
    ("a < b < c", 7, "comparisons cannot be chained"),
    ("(a + 1", 7, "expected ')' to close '(' at column 1"),
    ("a b", 3, "expected an operator or the end of the expression, found 'b'"),
    ("s == 'abc", 6, "unterminated string"),
    ("x in ()", 7, "expected a literal in the 'in' list"),
    ("x in (null)", 7, "null in an 'in' list never matches"),
    ("x is 5", 6, "expected 'null' after 'is'"),
    ("a && b", 3, "'&&' is not an operator; use 'and'"),
    ("a $ b", 3, "unexpected character '$'"),
    ("round(1, 2, 3)", 1, "round() takes 1 or 2 arguments, got 3"),
    ("lower()", 1, "lower() takes 1 argument, got 0"),
    ("1.5.3", 1, "malformed number"),
    ("``", 1, "empty back-quoted name"),
    ("", 1, "empty expression"),
    (")", 1, "expected an operand, found ')'"),
    ("not", 4, "expected an operand after 'not'"),
    ("a.", 3, "expected a field name after '.'"),
    ("'\\q'", 2, "unknown escape '\\q'"),
    ("x = 1e999", 5, "too large for a float"),
    ("__import__('os')", 1, "unknown function '__import__'"),
    ("_key.x", 5, "_key is a string and has no fields"),
])
def test_expression_errors_give_column_and_problem(text: str, position: int, problem: str) -> None:
    """Every malformed expression is one QueryError with the 1-based column and a readable problem."""
    with pytest.raises(QueryError) as caught:
        parse_expression(text)
    assert caught.value.position == position, str(caught.value)
    assert problem in caught.value.problem
    assert str(caught.value).startswith(f"column {position}: ")
    assert "\n" not in str(caught.value)
    assert caught.value.within("where").args[0] == f"where: column {position}: {caught.value.problem}"


def test_expression_limits_are_clear_errors() -> None:
    """Over-long text, deep nesting and long operator chains are QueryErrors, not RecursionErrors."""
    with pytest.raises(QueryError, match="at most 10000"):
        parse_expression("a" * 10_001)
    with pytest.raises(QueryError, match="nested more than 50 levels"):
        parse_expression("(" * 51 + "a" + ")" * 51)
    with pytest.raises(QueryError, match="nested more than 50 levels"):
        parse_expression("-" * 60 + "a")
    with pytest.raises(QueryError, match="more than 200 operators deep"):
        parse_expression(" + ".join(["a"] * 300))
    assert isinstance(parse_expression("(" * 50 + "a" + ")" * 50), Field)
    long_or = parse_expression(" or ".join(f"a == {index}" for index in range(700)))
    assert isinstance(long_or, Logical) and len(long_or.operands) == 700
    with pytest.raises(QueryError, match="expected an expression string"):
        parse_expression(5)


def test_expression_grammar_literals_names_and_keywords() -> None:
    """Strings with escapes, back-quoted names, case-insensitive keywords, `=` as `==`, _key."""
    assert parse_expression(r"'it\'s \u00e9\n'") == Literal("it's \u00e9\n", r"'it\'s \u00e9\n'", 1)
    assert parse_expression('"double \\"q\\""').value == 'double "q"'  # type: ignore[union-attr]
    node = parse_expression("`odd name`.x.`a``b`")
    assert isinstance(node, Field) and node.path == ("odd name", "x", "a`b")
    assert parse_expression("a.in.null").path == ("a", "in", "null")  # type: ignore[union-attr]
    assert column("A = 1 AND NOT T IS NULL".replace("A", "a").replace("T", "t")) == \
        column("a == 1 and not t is null")
    assert column("TRUE and Null is NULL", [{}]) == [True]
    assert column("_key") == ["k0", "k1", "k2", "k3", "k4"]
    assert column("`_key`", [{"_key": "field"}, {}]) == ["field", None]
    assert column("-a", [{"a": 3}]) == [-3] and column("- -a", [{"a": 3}]) == [3] and column("+a", [{"a": 3}]) == [3]
    assert column("o.y.z") == ["deep", None, None, None, None]
    assert column("o.x") == [10, None, None, None, None]       # a field of a non-dict or a null is null


def test_expression_nulls_propagate_and_logic_is_three_valued() -> None:
    """Comparisons and arithmetic with null are null; and/or/not follow SQL's three-valued tables."""
    docs = [{"p": p, "q": q} for p in (True, False, None) for q in (True, False, None)]
    table = {True: True, False: False, None: None}
    for doc, got_and, got_or in zip(docs, column("p and q", docs), column("p or q", docs)):
        p, q = table[doc["p"]], table[doc["q"]]
        assert got_and == (False if False in (p, q) else None if None in (p, q) else True)
        assert got_or == (True if True in (p, q) else None if None in (p, q) else False)
    assert column("not p", docs) == [False, False, False, True, True, True, None, None, None]
    for text in ("a > 1", "a + 1", "a * b", "-n", "n == 1", "n != 1", "lower(n)", "n in (1, 2)", "n not in (1)"):
        assert column(text, [{"a": None, "b": 2, "n": None}]) == [None], text
    assert column("n is null", [{"n": None}, {}, 5, {"n": 0}]) == [True, True, True, False]
    assert column("n is not null", [{"n": None}, {"n": 0}]) == [False, True]


def test_expression_division_and_modulo_by_zero_are_null() -> None:
    """x / 0 and x % 0 are null (also 0.0); / is true division; % takes the divisor's sign."""
    assert column("a / b", [{"a": 1, "b": 0}, {"a": 1.5, "b": 0.0}, {"a": 7, "b": 2}, {"a": -7, "b": 2}]) == \
        [None, None, 3.5, -3.5]
    assert column("a % b", [{"a": 1, "b": 0}, {"a": -7, "b": 2}, {"a": 7.5, "b": 2}]) == [None, 1, 1.5]


def test_expression_equality_keeps_bool_apart_from_numbers() -> None:
    """1 == 1.0 holds; a bool equals only a bool; different types are unequal, never an error."""
    docs = [{"v": 1}, {"v": 1.0}, {"v": True}, {"v": "1"}, {"v": [1]}]
    assert column("v == 1", docs) == [True, True, False, False, False]
    assert column("v == true", docs) == [False, False, True, False, False]
    assert column("v != 1", docs) == [False, False, True, True, True]
    assert column("v in (1, 'x')", docs) == [True, True, False, False, False]
    assert column("v in (true)", docs) == [False, False, True, False, False]
    assert column("v not in (1)", docs) == [False, False, True, True, True]


@pytest.mark.parametrize(("text", "message"), [
    ("origin > 1", "cannot compare str with int in `origin > 1`"),
    ("flag < 2", "cannot compare bool with int in `flag < 2`"),
    ("origin + 1", "cannot apply '+' to str and int in `origin + 1`"),
    ("flag * 2", "cannot apply '*' to bool and int in `flag * 2`"),
    ("-origin", "cannot negate str in `-origin`"),
    ("not origin", "'not' needs bool operands, got str in `not origin`"),
    ("size and flag", "'and' needs bool operands, got int in `size and flag`"),
    ("lower(size)", "lower() needs a str, got int in `lower(size)`"),
    ("startswith(origin, size)", "startswith() needs str arguments, got str and int"),
    ("len(size)", "len() needs a str, bytes, list or dict, got int"),
    ("abs(origin)", "abs() needs a number, got str"),
    ("round(size, 1.5)", "round() needs a number and an int, got int and float"),
    ("size * 1.0 * 10 ** 2", None),
])
def test_expression_type_errors_name_the_text_and_types(text: str, message: str | None) -> None:
    """A value that does not fit an operator is an EvaluationError quoting the sub-expression and types."""
    if message is None:      # `**` is not an operator at all
        with pytest.raises(QueryError):
            parse_expression(text)
        return
    docs = [{"origin": "SFO", "flag": True, "size": 3}]
    with pytest.raises(EvaluationError) as from_column:
        column(text, docs)
    with pytest.raises(EvaluationError) as from_reference:
        reference(text, docs)
    assert message in str(from_column.value)
    assert str(from_column.value) == str(from_reference.value)


def test_expression_functions() -> None:
    """The whitelisted functions, on values and nulls."""
    docs = [{"s": "Hello", "n": -2.5, "i": -3, "l": [1, 2, 3], "d": {"a": 1}}, {"s": None}]
    assert column("startswith(s, 'He')", docs) == [True, None]
    assert column("endswith(s, 'lo')", docs) == [True, None]
    assert column("contains(s, 'ell')", docs) == [True, None]
    assert column("lower(s)", docs) == ["hello", None] and column("upper(s)", docs) == ["HELLO", None]
    assert column("len(s)", docs) == [5, None] and column("len(l) + len(d)", docs) == [4, None]
    assert column("abs(n)", docs) == [2.5, None] and column("abs(i)", docs) == [3, None]
    assert same(column("round(n)", docs), [-2.0, None])                  # half to even, keeps float
    assert same(column("round(i, -1)", docs), [0, None])
    assert column("round(2.675, 2)", [{}]) == [2.67]                     # the binary value, as Python
    assert column("coalesce(s, 'none')", docs) == ["Hello", "none"]
    assert column("coalesce(x, y, 3)", docs) == [3, 3]


def test_expression_short_circuit_skips_records_that_do_not_need_later_operands() -> None:
    """`and`/`or`/coalesce only evaluate later operands where needed, so a guard avoids type errors."""
    docs = [{"kind": "n", "v": 5}, {"kind": "s", "v": "text"}]
    assert column("kind == 'n' and v > 1", docs) == [True, False]
    assert column("kind == 's' or v > 1", docs) == [True, True]
    assert column("coalesce(v, v + 1)", [{"v": "x"}]) == ["x"]
    with pytest.raises(EvaluationError):
        column("v > 1 and kind == 'n'", docs)


def test_expression_constants_fold_and_bad_constants_fail_at_compile_time() -> None:
    """A part without fields is computed once; one that cannot evaluate is a QueryError with a column."""
    compiled = compile_expression(parse_expression("1 + 2 * 3"))
    assert compiled.constant and compiled.value == 7
    with pytest.raises(QueryError) as caught:
        compile_expression(parse_expression("a == 1 or 'x' > 1"))
    assert caught.value.position == 11 and "cannot compare str with int" in str(caught.value)


def test_expression_positional_fields_compile_to_indexes() -> None:
    """With schema fields, records are lists; an unknown name is a QueryError naming the fields."""
    compiled = compile_expression(parse_expression("b * 2 > a"), fields=["a", "b"])
    assert compiled(Batch([[1, 2], [5, 2], [None, 1]], None)) == [True, False, None]
    assert compiled.referenced_fields() == frozenset({"a", "b"})
    with pytest.raises(QueryError, match="unknown field 'c' \\(schema fields: a, b\\)"):
        compile_expression(parse_expression("a + c"), fields=["a", "b"])
    with pytest.raises(EvaluationError, match="does not match the schema"):
        compiled(Batch([[1]], None))


def test_expression_referenced_fields_and_computed_columns() -> None:
    """referenced_fields lists record fields read (not computed columns, not _key)."""
    compiled = compile_expression(parse_expression("late and a.b > c or _key == 'x'"), computed={"late": 0})
    assert compiled.referenced_fields() == frozenset({"a", "c"})
    assert compiled.uses_key()
    batch = Batch([{"a": {"b": 5}, "c": 1}, {"a": {"b": 0}, "c": 1}], [b"x", b"y"], [[True, True]])
    assert compiled(batch) == [True, False]


# --- the column paths agree with the record-at-a-time reference on random data and expressions ---

_values = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.sampled_from([0.0, -0.0, 1.0, 2.5, -3.5, math.nan, math.inf]),
    st.sampled_from(["", "a", "ab", "B"]), st.just([1, 2]), st.just({"x": 1}))
_documents = st.one_of(st.dictionaries(st.sampled_from(["a", "b", "s", "t"]), _values, max_size=4), _values)
_typed_documents = st.fixed_dictionaries({}, optional={
    "a": st.one_of(st.none(), st.integers(-5, 5), st.sampled_from([0.0, 1.5, -2.0, 2.5])),
    "b": st.one_of(st.none(), st.integers(-3, 3), st.sampled_from([0.5, -1.0])),
    "s": st.one_of(st.none(), st.sampled_from(["", "a", "ab", "B", "ba"])),
    "t": st.one_of(st.none(), st.booleans())})


def _typed_expressions() -> st.SearchStrategy[str]:
    """Mostly well-typed expressions, so values (not errors) reach every column path."""
    def numbers(depth: int) -> st.SearchStrategy[str]:
        leaves = st.sampled_from(["a", "b", "1", "0", "2.5", "-3", "null"])
        if depth == 0:
            return leaves
        inner = numbers(depth - 1)
        return st.one_of(
            leaves,
            st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "%"]), inner).map(" ".join).map("({})".format),
            inner.map("(-{})".format), inner.map("abs({})".format), inner.map("round({}, 1)".format),
            st.tuples(inner, inner).map(lambda p: f"coalesce({p[0]}, {p[1]})"), strings(0).map("len({})".format))

    def strings(depth: int) -> st.SearchStrategy[str]:
        leaves = st.sampled_from(["s", "'a'", "'B'", "_key", "null"])
        if depth == 0:
            return leaves
        inner = strings(depth - 1)
        return st.one_of(leaves, inner.map("lower({})".format), inner.map("upper({})".format),
                         st.tuples(inner, inner).map(lambda p: f"coalesce({p[0]}, {p[1]})"))

    def bools(depth: int) -> st.SearchStrategy[str]:
        leaves = st.one_of(
            st.sampled_from(["t", "true", "false", "null"]),
            st.tuples(numbers(1), st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), numbers(1)).map(" ".join),
            st.tuples(strings(1), st.sampled_from(["==", "<", ">="]), strings(1)).map(" ".join),
            numbers(1).map("{} in (1, 2.5, -3)".format), strings(1).map("{} not in ('a', 'ab')".format),
            st.tuples(strings(1), strings(1)).map(lambda p: f"startswith({p[0]}, {p[1]})"),
            numbers(1).map("{} is null".format), strings(1).map("{} is not null".format),
            st.tuples(st.sampled_from(["t", "a", "true"]), st.sampled_from(["==", "!="]),
                      st.sampled_from(["t", "a", "1", "0", "true", "false"])).map(" ".join))
        if depth == 0:
            return leaves
        inner = bools(depth - 1)
        logic = st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(" ".join).map("({})".format)
        return st.one_of(logic, leaves, logic, inner.map("(not {})".format),
                         st.tuples(inner, inner).map(lambda p: f"coalesce({p[0]}, {p[1]})"))
    return st.one_of(numbers(3), strings(2), bools(2))


def _any_expressions() -> st.SearchStrategy[str]:
    """Anything the grammar allows, type errors included."""
    leaves = st.sampled_from(["a", "b", "s", "t", "a.x", "1", "0", "2.5", "'a'", "true", "null", "_key"])

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        binary = st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "%", "==", "!=", "<", ">=", "and", "or"]), inner)
        return st.one_of(
            binary.map(lambda parts: f"({parts[0]} {parts[1]} {parts[2]})"),
            inner.map(lambda text: f"(not {text})"), inner.map(lambda text: f"(-{text})"),
            inner.map(lambda text: f"({text} is null)"), inner.map(lambda text: f"({text} in (1, 'a', true))"),
            st.tuples(st.sampled_from(["lower", "len", "abs", "round"]), inner).map(lambda p: f"{p[0]}({p[1]})"),
            st.tuples(inner, inner).map(lambda p: f"coalesce({p[0]}, {p[1]})"))
    return st.recursive(leaves, extend, max_leaves=6)


def _check_agreement(text: str, docs: list[Any]) -> bool:
    """Whether the expression gave values (True) or an error (False); asserts both paths agree."""
    try:
        compiled = compile_expression(parse_expression(text))
    except QueryError:
        return False                              # a constant part that cannot evaluate
    keys = [b"k%d" % index for index in range(len(docs))]
    try:
        expected: list[Any] | None = [compiled.evaluate(doc, key) for doc, key in zip(docs, keys)]
    except EvaluationError:
        expected = None
    if expected is None:
        with pytest.raises(EvaluationError):
            compiled(Batch(list(docs), keys))
        return False
    got = compiled(Batch(list(docs), keys))
    assert same(got, expected), (text, docs, got, expected)
    return True


@settings(max_examples=300, deadline=None, derandomize=True)
@given(text=_typed_expressions(), docs=st.lists(_typed_documents, min_size=1, max_size=8))
def test_expression_columns_agree_with_the_reference(text: str, docs: list[Any]) -> None:
    """On random, mostly well-typed expressions over documents with nulls and missing fields, a
    whole-batch column equals evaluate() record by record (same values and types)."""
    _check_agreement(text, docs)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(text=_any_expressions(), docs=st.lists(_documents, min_size=1, max_size=8))
def test_expression_columns_agree_with_the_reference_on_any_values(text: str, docs: list[Any]) -> None:
    """Any expression over values of any type: the same values, or EvaluationError on both paths."""
    _check_agreement(text, docs)


def test_expression_typed_generator_mostly_yields_values() -> None:
    """Guard for the property above: most generated cases evaluate (else it would test errors only)."""
    examples = st.tuples(_typed_expressions(), st.lists(_typed_documents, min_size=1, max_size=8))
    outcomes = []

    @settings(max_examples=200, deadline=None, derandomize=True)
    @given(example=examples)
    def record(example: tuple[str, list[Any]]) -> None:
        outcomes.append(_check_agreement(*example))
    record()
    assert sum(outcomes) > 0.7 * len(outcomes)


def test_expression_top_level_field_of_any_record_shape() -> None:
    """A top-level field read (itemgetter over the batch, the dict.get path when a record lacks
    the field or is not a dict) gives the field, or null for a missing field and for a record
    that is not a dict (list, str, bytes, number, bool, null), with values kept as stored
    (False, 0, 0.0, null, nested dicts); the nested path and the reference agree."""
    complete = [{"a": 1, "b": {"c": 2}}, {"a": False, "b": {"c": None}}, {"a": 0.0, "b": {}}, {"a": None, "b": 5}]
    assert same(column("a", complete), [1, False, 0.0, None])
    assert same(column("b.c", complete), [2, None, None, None])
    shapes: list[Any] = [{"a": 3}, {"z": 1}, ["a"], "a", b"a", 7, True, None, {"a": "x", 1: 2}, {1: "a"}]
    assert same(column("a", shapes), [3, None, None, None, None, None, None, None, "x", None])
    assert same(column("a", shapes), reference("a", shapes))
    assert same(column("a.b", shapes), reference("a.b", shapes))
    assert same(column("a + 1", [{"a": 1}, {"a": 2.5}, {"b": 1}]), [2, 3.5, None])


def test_a_binary_record_key_stays_bytes_in_every_path() -> None:
    """Found by hand: `select _key` of key b"\\x00\\xff\\xfe" gave '\\x00\\ufffd\\ufffd', which names no
    record. A key that is not UTF-8 is its bytes (as the client's scan returns it), in the column
    path, the record-at-a-time reference and string functions alike."""
    keys = [b"plain", b"\x00\xff\xfe", "caf\u00e9".encode()]
    docs: list[Any] = [{}, {}, {}]
    assert column("_key", docs, keys) == ["plain", b"\x00\xff\xfe", "caf\u00e9"]
    compiled = compile_expression(parse_expression("_key"))
    assert [compiled.evaluate(doc, key) for doc, key in zip(docs, keys)] == ["plain", b"\x00\xff\xfe", "caf\u00e9"]
    assert column("_key is not null and _key == 'plain'", docs, keys) == [True, False, False]
    with pytest.raises(EvaluationError, match="startswith"):
        column("startswith(_key, 'p')", docs, keys)   # bytes are not a str: said, not matched by accident
