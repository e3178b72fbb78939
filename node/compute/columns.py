"""Expressions compiled to column functions: one call evaluates a whole batch of records.

Why columns and not one closure call per record: a Python call costs about as much as
the decoding of a small record, so per-record closures cannot stay near a bare loop. A column
function runs its operator over the batch with a C-level `map` (operator.gt, dict.get,
str.lower, ...) when the types in the batch allow it (`Batch.types_of`: one `set(map(type,
column))`), and falls back to the reference functions of operators.py element by element
otherwise, so fast and slow paths give the same values and errors (`evaluate` is the
record-at-a-time reference the tests compare against).

Records are msgpack documents (field access: dict.get; a non-dict gives null) or, with a
schema, positional lists (a top-level field compiles to an index; unknown names are a
QueryError). `and`, `or` and `coalesce` evaluate later operands only for the records that
need them (left-to-right short circuit), as `evaluate` does.
"""
from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from itertools import compress, repeat
from typing import Any

from shoal.node.compute import operators
from shoal.node.compute.errors import EvaluationError, QueryError
from shoal.node.compute.syntax import (
    Arithmetic, Call, Comparison, Field, InList, IsNull, Literal, Logical, Negate, Node, Not, RecordKey,
    children, referenced_fields, uses_record_key,
)

Vector = Callable[["Batch"], list[Any]]
NONE = type(None)
NUMBERS = frozenset({int, float})
BOOLS = frozenset({bool})
_BOOL_OR_NULL = frozenset({bool, NONE})
_STR = frozenset({str})
_SIZED = frozenset({str, bytes, list, dict})
_ORDERABLE_ALONE = (frozenset({str}), frozenset({bool}), frozenset({bytes}))
_IN_FAST = frozenset({str, int, float})
_decode_key = operator.methodcaller("decode", "utf-8", "replace")


class Batch:
    """Records being evaluated together, with per-batch caches.

    records: decoded documents, or positional lists; keys: their record keys (bytes) when a
    step needs them, else None; computed: the with_columns values computed so far, by index.
    """

    __slots__ = ("records", "keys", "computed", "size", "fields", "_types")

    def __init__(self, records: list[Any], keys: list[bytes] | None, computed: list[list[Any]] | None = None):
        self.records = records
        self.keys = keys
        self.computed = computed if computed is not None else []
        self.size = len(records)
        self.fields: dict[object, list[Any]] = {}       # field path -> column (None: _key)
        self._types: dict[int, tuple[list[Any], set[type] | frozenset[type]]] = {}

    def types_of(self, column: list[Any]) -> set[type] | frozenset[type]:
        """The set of types in a column of this batch (cached by column identity)."""
        entry = self._types.get(id(column))
        if entry is not None and entry[0] is column:
            return entry[1]
        types = set(map(type, column))
        self._types[id(column)] = (column, types)
        return types

    def known(self, column: list[Any], types: frozenset[type]) -> list[Any]:
        """Record that `column` holds only (a subset of) `types`; returns the column."""
        self._types[id(column)] = (column, types)
        return column

    def subset(self, selectors: list[bool]) -> Batch:
        """The records whose selector is true (computed columns follow, caches start empty)."""
        keys = None if self.keys is None else list(compress(self.keys, selectors))
        computed = [list(compress(column, selectors)) for column in self.computed]
        return Batch(list(compress(self.records, selectors)), keys, computed)


class CompiledExpression:
    """One expression compiled for a record layout. Call it on a Batch to get its column.

    `constant` is set when the expression reads no record (then `value` is its value).
    """

    __slots__ = ("node", "text", "vector", "constant", "value", "_positions", "_computed")

    def __init__(self, node: Node, vector: Vector | None, value: Any = None, *,
                 positions: Mapping[str, int] | None, computed: Mapping[str, int]) -> None:
        self.node = node
        self.text = node.text
        self.vector = vector
        self.constant = vector is None
        self.value = value
        self._positions = positions
        self._computed = computed

    def __call__(self, batch: Batch) -> list[Any]:
        if self.vector is None:
            return [self.value] * batch.size
        return self.vector(batch)

    def referenced_fields(self) -> frozenset[str]:
        """Top-level record fields read (not computed columns, not _key)."""
        return frozenset(name for name in referenced_fields(self.node) if name not in self._computed)

    def uses_key(self) -> bool:
        """Whether the expression reads the record key."""
        return uses_record_key(self.node)

    def evaluate(self, record: Any, key: bytes = b"", computed: Sequence[Any] = ()) -> Any:
        """The value for one record (the reference the column paths agree with)."""
        return evaluate(self.node, record, key, computed, self._positions, self._computed)


def compile_expression(node: Node, *, fields: Sequence[str] | None = None,
                       computed: Mapping[str, int] | None = None) -> CompiledExpression:
    """Compile an AST for records laid out as `fields` (None: documents).

    computed: names of earlier with_columns -> their index in Batch.computed (they shadow
    fields of the same name). Raises QueryError for a name that is neither a schema field nor
    computed (positional records only), or for a constant part that cannot evaluate (`'a' > 1`).
    """
    positions = None if fields is None else {name: index for index, name in enumerate(fields)}
    scope = _Scope(positions, dict(computed or {}))
    return scope.compile(node)


class _Scope:
    def __init__(self, positions: dict[str, int] | None, computed: dict[str, int]) -> None:
        self.positions = positions
        self.computed = computed

    def compile(self, node: Node) -> CompiledExpression:
        if isinstance(node, Literal):
            return self._wrap(node, None, node.value)
        if isinstance(node, Field):
            return self._wrap(node, self._field(node))
        if isinstance(node, RecordKey):
            return self._wrap(node, _key_vector)
        parts = [self.compile(child) for child in children(node)]
        if all(part.constant for part in parts):
            try:
                value = evaluate(node, None, b"", (), self.positions, self.computed)
            except EvaluationError as exc:
                raise QueryError(str(exc), position=node.position, expression=node.text) from None
            return self._wrap(node, None, value)
        return self._wrap(node, _VECTORS[type(node)](node, parts))

    def _wrap(self, node: Node, vector: Vector | None, value: Any = None) -> CompiledExpression:
        return CompiledExpression(node, vector, value, positions=self.positions, computed=self.computed)

    def _field(self, node: Field) -> Vector:
        head, rest = node.path[0], node.path[1:]
        if head in self.computed:
            index = self.computed[head]
            return _nested(lambda batch: batch.computed[index], rest, None)
        if self.positions is not None:
            if head not in self.positions:
                known = ", ".join(self.positions) or "none"
                raise QueryError(f"unknown field {head!r} (schema fields: {known})",
                                 position=node.position, expression=node.text)
            return _nested(_positional(self.positions[head], len(self.positions)), rest, node.path)
        return _nested(_document_field(head), rest, node.path)


# --- field access ---

def _key_vector(batch: Batch) -> list[Any]:
    column = batch.fields.get(None)
    if column is None:
        assert batch.keys is not None, "the query needs record keys but the batch has none"
        column = batch.fields[None] = batch.known(list(map(_decode_key, batch.keys)), _STR)
    return column


def _get(column: list[Any], name: str) -> list[Any]:
    """name of each dict in column (null if missing, or if the value is not a dict).

    map(dict.get, ...) is a C loop (a third of methodcaller's cost); it raises TypeError at the
    first non-dict, and then the whole column takes the checked path.
    """
    try:
        return list(map(dict.get, column, repeat(name)))
    except TypeError:
        return [value.get(name) if value.__class__ is dict else None for value in column]


def _document_field(name: str) -> Vector:
    def vector(batch: Batch) -> list[Any]:
        return _get(batch.records, name)
    return vector


def _positional(index: int, width: int) -> Vector:
    getter = operator.itemgetter(index)

    def vector(batch: Batch) -> list[Any]:
        try:
            return list(map(getter, batch.records))
        except (IndexError, KeyError, TypeError):
            bad = next(r for r in batch.records if r.__class__ is not list or len(r) != width)
            shape = f"a list of {len(bad)}" if isinstance(bad, list) else type(bad).__name__
            raise EvaluationError(f"a record does not match the schema: expected a list of {width} values, "
                                  f"got {shape}") from None
    return vector


def _nested(head: Vector, rest: tuple[str, ...], cache_path: tuple[str, ...] | None) -> Vector:
    def vector(batch: Batch) -> list[Any]:
        if cache_path is not None:
            cached = batch.fields.get(cache_path)
            if cached is not None:
                return cached
        column = head(batch)
        for name in rest:
            column = _get(column, name)
        if cache_path is not None:
            batch.fields[cache_path] = column
        return column
    return vector


# --- operators ---

def _operand(batch: Batch, part: CompiledExpression) -> tuple[Any, set[type] | frozenset[type]]:
    """An operand as something to map over (a column, or repeat(constant)) and its types."""
    if part.constant:
        return repeat(part.value), frozenset({type(part.value)})
    column = part(batch)
    return column, batch.types_of(column)


def _comparison(node: Node, parts: list[CompiledExpression]) -> Vector:
    assert isinstance(node, Comparison)
    left, right = parts
    text, symbol = node.text, node.operator
    if symbol in ("==", "!="):
        fast = operator.eq if symbol == "==" else operator.ne
        slow: Callable[[Any, Any], Any] = operators.equal if symbol == "==" else operators.not_equal

        def equality(batch: Batch) -> list[Any]:
            a, a_types = _operand(batch, left)
            b, b_types = _operand(batch, right)
            kinds = (a_types | b_types) - {NONE}
            if bool in kinds and len(kinds) > 1:
                return list(map(slow, a, b))
            if NONE in a_types or NONE in b_types:
                return [None if x is None or y is None else fast(x, y) for x, y in zip(a, b)]
            return batch.known(list(map(fast, a, b)), BOOLS)
        return equality
    order = operators.ORDER_OPERATORS[symbol]

    def ordering(batch: Batch) -> list[Any]:
        a, a_types = _operand(batch, left)
        b, b_types = _operand(batch, right)
        kinds = (a_types | b_types) - {NONE}
        if kinds <= NUMBERS or kinds in _ORDERABLE_ALONE:
            if NONE in a_types or NONE in b_types:
                return [None if x is None or y is None else order(x, y) for x, y in zip(a, b)]
            return batch.known(list(map(order, a, b)), BOOLS)
        return list(map(lambda x, y: operators.compare(symbol, x, y, text), a, b))
    return ordering


def _arithmetic(node: Node, parts: list[CompiledExpression]) -> Vector:
    assert isinstance(node, Arithmetic)
    left, right = parts
    text, symbol = node.text, node.operator
    fast = operators.ARITHMETIC_OPERATORS[symbol]

    def vector(batch: Batch) -> list[Any]:
        a, a_types = _operand(batch, left)
        b, b_types = _operand(batch, right)
        if ((a_types | b_types) - {NONE}) <= NUMBERS:
            try:
                if NONE in a_types or NONE in b_types:
                    return [None if x is None or y is None else fast(x, y) for x, y in zip(a, b)]
                return list(map(fast, a, b))
            except (ZeroDivisionError, OverflowError):
                pass     # the reference path gives null (zero divisor) or the error (overflow)
        return list(map(lambda x, y: operators.arithmetic(symbol, x, y, text), a, b))
    return vector


def _negate(node: Node, parts: list[CompiledExpression]) -> Vector:
    (operand,) = parts
    text = node.text

    def vector(batch: Batch) -> list[Any]:
        column = operand(batch)
        types = batch.types_of(column)
        if types <= NUMBERS:
            return list(map(operator.neg, column))
        return [operators.negate(value, text) for value in column]
    return vector


def _not(node: Node, parts: list[CompiledExpression]) -> Vector:
    (operand,) = parts
    text = node.text

    def vector(batch: Batch) -> list[Any]:
        column = operand(batch)
        types = batch.types_of(column)
        if types <= BOOLS:
            return batch.known(list(map(operator.not_, column)), BOOLS)
        return [operators.logical_not(value, text) for value in column]
    return vector


def _logical(node: Node, parts: list[CompiledExpression]) -> Vector:
    assert isinstance(node, Logical)
    keyword, text = node.operator, node.text
    stop = keyword == "or"                 # the value that decides: True for or, False for and
    fast = operator.or_ if stop else operator.and_

    def checked(batch: Batch, column: list[Any]) -> list[Any]:
        if not batch.types_of(column) <= _BOOL_OR_NULL:
            for value in column:
                operators.check_bool(value, keyword, text)
        return column

    def vector(batch: Batch) -> list[Any]:
        result = checked(batch, parts[0](batch))
        for part in parts[1:]:
            need = list(map(operator.is_not, result, repeat(stop)))
            if not any(need):
                break
            if all(need):
                column = checked(batch, part(batch))
            else:
                subset = batch.subset(need)
                values = iter(checked(subset, part(subset)))
                column = [next(values) if needed else stop for needed in need]
            if NONE in batch.types_of(result) or NONE in batch.types_of(column):
                result = [stop if x is stop or y is stop else (None if x is None or y is None else not stop)
                          for x, y in zip(result, column)]
            else:
                result = batch.known(list(map(fast, result, column)), BOOLS)
        return result
    return vector


def _is_null(node: Node, parts: list[CompiledExpression]) -> Vector:
    assert isinstance(node, IsNull)
    (operand,) = parts
    test = operator.is_not if node.negated else operator.is_

    def vector(batch: Batch) -> list[Any]:
        return batch.known(list(map(test, operand(batch), repeat(None))), BOOLS)
    return vector


def _in_list(node: Node, parts: list[CompiledExpression]) -> Vector:
    assert isinstance(node, InList)
    (operand,) = parts
    keys = frozenset(map(operators.in_key, node.values))
    negated = node.negated

    def vector(batch: Batch) -> list[Any]:
        column = operand(batch)
        types = batch.types_of(column)
        if types <= _IN_FAST:
            hits = list(map(keys.__contains__, column))
            return batch.known(list(map(operator.not_, hits)) if negated else hits, BOOLS)
        results = [operators.is_in(value, keys) for value in column]
        return [None if hit is None else not hit for hit in results] if negated else results
    return vector


def _call(node: Node, parts: list[CompiledExpression]) -> Vector:
    assert isinstance(node, Call)
    function, text = node.function, node.text
    if function == "coalesce":
        return _coalesce(parts)
    fast, accepted = _FAST_FUNCTIONS.get(function, (None, ()))

    def vector(batch: Batch) -> list[Any]:
        operands = [_operand(batch, part) for part in parts]
        if function == "round" and len(operands) == 1:
            operands.append((repeat(0), frozenset({int})))
        columns = [column for column, _ in operands]
        if fast is not None and all(types - {NONE} <= allowed for (_, types), allowed in zip(operands, accepted)):
            try:
                if all(NONE not in types for _, types in operands):
                    return list(map(fast, *columns))
                return [None if None in values else fast(*values) for values in zip(*columns)]
            except OverflowError:
                pass     # round() with absurd digits: the reference path gives the error
        return [operators.call(function, values, text) for values in zip(*columns)]
    return vector


def _coalesce(parts: list[CompiledExpression]) -> Vector:
    def vector(batch: Batch) -> list[Any]:
        result = parts[0](batch)
        for part in parts[1:]:
            need = list(map(operator.is_, result, repeat(None)))
            if not any(need):
                break
            subset = batch if all(need) else batch.subset(need)
            values = iter(part(subset))
            result = [next(values) if needed else value for needed, value in zip(need, result)]
        return result
    return vector


_INTS = frozenset({int})
_FAST_FUNCTIONS: dict[str, tuple[Callable[..., Any], tuple[frozenset[type], ...]]] = {   # accepted types by argument
    "startswith": (str.startswith, (_STR, _STR)), "endswith": (str.endswith, (_STR, _STR)),
    "contains": (operator.contains, (_STR, _STR)), "lower": (str.lower, (_STR,)), "upper": (str.upper, (_STR,)),
    "len": (len, (_SIZED,)), "abs": (abs, (NUMBERS,)), "round": (round, (NUMBERS, _INTS)),
}
_VECTORS: dict[type, Callable[[Node, list[CompiledExpression]], Vector]] = {
    Comparison: _comparison, Arithmetic: _arithmetic, Negate: _negate, Not: _not, Logical: _logical,
    IsNull: _is_null, InList: _in_list, Call: _call,
}


# --- the reference: one record at a time ---

def evaluate(node: Node, record: Any, key: bytes, computed: Sequence[Any],
             positions: Mapping[str, int] | None, computed_names: Mapping[str, int]) -> Any:
    """The value of `node` for one record (the semantics of operators.py; raises EvaluationError)."""
    def value_of(sub: Node) -> Any:
        return evaluate(sub, record, key, computed, positions, computed_names)

    if isinstance(node, Literal):
        return node.value
    if isinstance(node, RecordKey):
        return key.decode("utf-8", "replace")
    if isinstance(node, Field):
        return _field_value(node.path, record, computed, positions, computed_names)
    if isinstance(node, Comparison):
        left, right = value_of(node.left), value_of(node.right)
        if node.operator == "==":
            return operators.equal(left, right)
        if node.operator == "!=":
            return operators.not_equal(left, right)
        return operators.compare(node.operator, left, right, node.text)
    if isinstance(node, Arithmetic):
        return operators.arithmetic(node.operator, value_of(node.left), value_of(node.right), node.text)
    if isinstance(node, Negate):
        return operators.negate(value_of(node.operand), node.text)
    if isinstance(node, Not):
        return operators.logical_not(value_of(node.operand), node.text)
    if isinstance(node, IsNull):
        return (value_of(node.operand) is None) is not node.negated
    if isinstance(node, InList):
        hit = operators.is_in(value_of(node.operand), frozenset(map(operators.in_key, node.values)))
        return None if hit is None else hit is not node.negated
    if isinstance(node, Logical):
        stop = node.operator == "or"
        result: bool | None = not stop
        for operand in node.operands:
            value = operators.check_bool(value_of(operand), node.operator, node.text)
            if value is stop:
                return stop
            if value is None:
                result = None
        return result
    assert isinstance(node, Call), node
    if node.function == "coalesce":
        for argument in node.arguments:
            value = value_of(argument)
            if value is not None:
                return value
        return None
    return operators.call(node.function, tuple(map(value_of, node.arguments)), node.text)


def _field_value(path: tuple[str, ...], record: Any, computed: Sequence[Any],
                 positions: Mapping[str, int] | None, computed_names: Mapping[str, int]) -> Any:
    head = path[0]
    if head in computed_names:
        value = computed[computed_names[head]]
    elif positions is not None:
        value = record[positions[head]]
    else:
        value = record.get(head) if record.__class__ is dict else None
    for name in path[1:]:
        value = value.get(name) if value.__class__ is dict else None
    return value
