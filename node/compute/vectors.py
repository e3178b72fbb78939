"""Column functions of the operators: C-level fast paths by the types in the batch, else operators.py.

Each factory takes an AST node and its compiled operands and returns a function Batch -> column.
A fast path runs when `Batch.types_of` shows types the C operator handles exactly as the
reference does (e.g. only numbers for `<`); otherwise the reference function of operators.py
runs element by element, which also raises the EvaluationError. Results that are known to
hold only bools are recorded (`Batch.known`) so later steps skip the type scan.
"""
from __future__ import annotations

import operator
from collections.abc import Callable
from itertools import repeat
from typing import TYPE_CHECKING, Any

from shoal.node.compute import operators
from shoal.node.compute.batch import Batch
from shoal.node.compute.syntax import Arithmetic, Call, Comparison, InList, IsNull, Logical, Negate, Node, Not

if TYPE_CHECKING:
    from shoal.node.compute.columns import CompiledExpression

Vector = Callable[[Batch], list[Any]]
NONE = type(None)
NUMBERS = operators.NUMBERS
BOOLS = frozenset({bool})
_BOOL_OR_NULL = frozenset({bool, NONE})
_ORDERABLE_ALONE = (frozenset({str}), frozenset({bool}), frozenset({bytes}))
_IN_FAST = frozenset({str, int, float})


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


_FAST_FUNCTIONS: dict[str, tuple[Callable[..., Any], tuple[frozenset[type], ...]]] = {   # accepted types by argument
    name: (fast, operators.FUNCTION_ARGUMENTS[name][0]) for name, fast in (
        ("startswith", str.startswith), ("endswith", str.endswith), ("contains", operator.contains),
        ("lower", str.lower), ("upper", str.upper), ("len", len), ("abs", abs), ("round", operators.round_number))
}
VECTORS: dict[type, Callable[[Node, list[CompiledExpression]], Vector]] = {
    Comparison: _comparison, Arithmetic: _arithmetic, Negate: _negate, Not: _not, Logical: _logical,
    IsNull: _is_null, InList: _in_list, Call: _call,
}
