"""Expressions compiled to column functions: one call evaluates a whole batch of records.

Why columns and not one closure call per record: a Python call costs about as much as
the decoding of a small record, so per-record closures cannot stay near a bare loop. A column
function runs its operator over the batch with a C-level `map` (operator.gt, dict.get,
str.lower, ...) when the types in the batch allow it (vectors.py), and falls back to the
reference functions of operators.py element by element otherwise, so fast and slow paths give
the same values and errors (`evaluate` is the record-at-a-time reference the tests compare
against). This module compiles the tree and reads fields; batch.py holds the Batch.

Records are msgpack documents (field access: dict.get; a non-dict gives null) or, with a
schema, positional lists (a top-level field compiles to an index; unknown names are a
QueryError). `and`, `or` and `coalesce` evaluate later operands only for the records that
need them (left-to-right short circuit), as `evaluate` does.
"""
from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from itertools import repeat
from typing import Any

from shoal.node.compute import operators
from shoal.node.compute.batch import Batch
from shoal.node.compute.errors import EvaluationError, QueryError
from shoal.node.compute.syntax import (
    Arithmetic, Call, Comparison, Field, InList, IsNull, Literal, Logical, Negate, Node, Not, RecordKey,
    children, referenced_fields, uses_record_key,
)
from shoal.node.compute.values import record_key
from shoal.node.compute.vectors import VECTORS, Vector

__all__ = ["Batch", "CompiledExpression", "compile_expression", "evaluate"]
_STR = frozenset({str})
_decode_key = operator.methodcaller("decode", "utf-8")


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
        return self._wrap(node, VECTORS[type(node)](node, parts))

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
        if not rest:
            return _top_level_field(head, node.path)      # the common case: one closure, no nesting
        return _nested(_document_field(head), rest, node.path)


# --- field access ---

def _key_vector(batch: Batch) -> list[Any]:
    column = batch.fields.get(None)
    if column is None:
        assert batch.keys is not None, "the query needs record keys but the batch has none"
        try:
            column = batch.fields[None] = batch.known(list(map(_decode_key, batch.keys)), _STR)
        except UnicodeDecodeError:   # a binary key stays bytes (values.record_key)
            column = batch.fields[None] = list(map(record_key, batch.keys))
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


def _top_level_field(name: str, cache_path: tuple[str, ...]) -> Vector:
    """Field `name` of each document. itemgetter is the cheapest C call (a fifth less than
    map(dict.get)); only a dict can answer a str subscript (a list, str, bytes, number or null
    raises TypeError), so when a record lacks the field (KeyError) or is not a dict, the batch
    takes the dict.get path, which gives null for those."""
    getter = operator.itemgetter(name)

    def vector(batch: Batch) -> list[Any]:
        column = batch.fields.get(cache_path)
        if column is None:
            try:
                column = list(map(getter, batch.records))
            except (KeyError, TypeError):    # a missing field, a record that is not a dict
                column = _get(batch.records, name)
            batch.fields[cache_path] = column
        return column
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


# --- the reference: one record at a time ---

def evaluate(node: Node, record: Any, key: bytes, computed: Sequence[Any],
             positions: Mapping[str, int] | None, computed_names: Mapping[str, int]) -> Any:
    """The value of `node` for one record (the semantics of operators.py; raises EvaluationError)."""
    def value_of(sub: Node) -> Any:
        return evaluate(sub, record, key, computed, positions, computed_names)

    if isinstance(node, Literal):
        return node.value
    if isinstance(node, RecordKey):
        return record_key(key)
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
