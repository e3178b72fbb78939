"""Static types over a typed dataset: an expression that fails on every record is a QueryError up front.

A schema gives each top-level field the types its stored values have (int -> int, float ->
float, str, bool, timestamp -> int epoch ms; nullable adds null). `check_types` infers for
each expression the set of non-null types its value can have (UNKNOWN for what a schema does
not say: nested fields, schema-less data) and refuses an operator when *no* combination of
its operands' types is accepted (operators.py), with the message the record-at-a-time
evaluation would give, located like any QueryError ("where: column 1: cannot compare str with
int in `origin > 1`"). When some combination is accepted the query runs, as before: this
check never refuses a query that could succeed on a non-null record. One more: a `where`
condition that can never be a bool is refused (the run would silently keep no record).
"""
from __future__ import annotations

from collections.abc import Mapping
from itertools import product
from typing import Optional

from shoal.node.compute.errors import QueryError
from shoal.node.compute.operators import FUNCTION_ARGUMENTS, NUMBERS, ORDERABLE_ALONE
from shoal.node.compute.schema import Schema
from shoal.node.compute.spec import Plan
from shoal.node.compute.syntax import (
    Arithmetic, Call, Comparison, Field, InList, IsNull, Literal, Logical, Negate, Node, Not, RecordKey,
)
from shoal.node.compute.values import class_name

Types = Optional[frozenset[type]]   # the non-null types a value can have; None = unknown
UNKNOWN: Types = None
_SUMMABLE = frozenset({int, float, bool})
_STR = frozenset({str})
_BOOL = frozenset({bool})
FIELD_TYPES: Mapping[str, frozenset[type]] = {
    "int": frozenset({int}), "float": frozenset({float}), "str": _STR, "bool": _BOOL, "timestamp": frozenset({int}),
}


def schema_types(schema: Schema) -> dict[str, frozenset[type]]:
    """Each field's non-null Python types as queries see them (the `fields` of check_types)."""
    return {field.name: FIELD_TYPES[field.type] for field in schema.fields}


def check_types(plan: Plan, fields: Mapping[str, frozenset[type]]) -> None:
    """Raise QueryError for the first expression of `plan` that fails for every value of its types.

    fields: schema field name -> the non-null Python types of its stored values (FIELD_TYPES).
    """
    computed: dict[str, Types] = {}
    checker = _Checker(fields, computed)

    def check(node: Node, context: str) -> Types:
        try:
            return checker.infer(node)
        except QueryError as exc:
            raise exc.within(context) from None

    if plan.where is not None:   # a record is kept when its condition is true: never, for a non-bool
        types = check(plan.where, "where")
        if types and bool not in types:
            raise QueryError(f"the condition must be a bool, got {_names(types)} in `{plan.where.text}`",
                             position=plan.where.position, expression=plan.where.text, context="where")
    for index, (name, node) in enumerate(plan.with_columns):
        computed[name] = check(node, f"with_columns[{index}] ({name})")
    for index, (_, node) in enumerate(plan.group_by):
        check(node, f"group_by[{index}]")
    for index, (name, function, argument) in enumerate(plan.aggs):
        if argument is None:
            continue
        types = check(argument, f"aggs[{index}] ({name})")
        if function in ("sum", "mean") and types and not types & _SUMMABLE:
            raise QueryError(f"cannot sum or average {_names(types)} values of `{argument.text}`",
                             position=argument.position, expression=argument.text, context=f"aggs[{index}] ({name})")
    for index, (_, node) in enumerate(plan.select or ()):
        check(node, f"select[{index}]")
    for index, item in enumerate(plan.order_by):
        if item.node is not None:
            check(item.node, f"order_by[{index}]")


class _Checker:
    def __init__(self, fields: Mapping[str, frozenset[type]], computed: Mapping[str, Types]) -> None:
        self.fields = fields
        self.computed = computed

    def infer(self, node: Node) -> Types:
        if isinstance(node, Literal):
            return frozenset() if node.value is None else frozenset({type(node.value)})
        if isinstance(node, RecordKey):
            return frozenset({str, bytes})
        if isinstance(node, Field):
            return self._field(node)
        if isinstance(node, Comparison):
            left, right = self.infer(node.left), self.infer(node.right)
            if node.operator not in ("==", "!=") and not _some(left, right, _orderable):
                pair = _first_pair(left, right)
                _fail(node, f"cannot compare {pair[0]} with {pair[1]} in `{node.text}`")
            return _BOOL
        if isinstance(node, Arithmetic):
            left, right = self.infer(node.left), self.infer(node.right)
            if not _some(left, right, lambda a, b: a in NUMBERS and b in NUMBERS):
                pair = _first_pair(left, right)
                _fail(node, f"cannot apply '{node.operator}' to {pair[0]} and {pair[1]} in `{node.text}`")
            if node.operator == "/":
                return frozenset({float})
            if left == frozenset({int}) and right == frozenset({int}):
                return frozenset({int})
            return NUMBERS
        if isinstance(node, Negate):
            operand = self.infer(node.operand)
            if operand and not operand & NUMBERS:
                _fail(node, f"cannot negate {_names(operand)} in `{node.text}`")
            return None if operand is None else operand & NUMBERS
        if isinstance(node, Not):
            self._bool_operand(node.operand, "not", node)
            return _BOOL
        if isinstance(node, Logical):
            for term in node.operands:
                self._bool_operand(term, node.operator, node)
            return _BOOL
        if isinstance(node, (IsNull, InList)):
            self.infer(node.operand)
            return _BOOL
        assert isinstance(node, Call), node
        return self._call(node)

    def _field(self, node: Field) -> Types:
        head = node.path[0]
        if len(node.path) > 1:
            return UNKNOWN
        if head in self.computed:
            return self.computed[head]
        return self.fields.get(head, UNKNOWN)

    def _bool_operand(self, operand: Node, keyword: str, node: Node) -> None:
        types = self.infer(operand)
        if types and bool not in types:
            _fail(node, f"'{keyword}' needs bool operands, got {_names(types)} in `{node.text}`")

    def _call(self, node: Call) -> Types:
        arguments = [self.infer(argument) for argument in node.arguments]
        function = node.function
        if function == "coalesce":
            if any(types is None for types in arguments):
                return UNKNOWN
            return frozenset().union(*[types for types in arguments if types is not None])
        wanted, needs = FUNCTION_ARGUMENTS[function]
        result = _RESULTS[function]
        for types, accepted in zip(arguments, wanted):
            if types and not types & accepted:
                got = " and ".join(_names(t) if t else "null" for t in arguments)
                _fail(node, f"{function}() needs {needs}, got {got} in `{node.text}`")
        if result is not None:
            return result
        return None if arguments[0] is None else arguments[0] & NUMBERS   # abs, round keep the number's type


def _orderable(left: type, right: type) -> bool:
    return (left in NUMBERS and right in NUMBERS) or (left is right and left in ORDERABLE_ALONE)


def _some(left: Types, right: Types, accepted: object) -> bool:
    """Whether some pair of non-null types is accepted (True when either side is unknown or only null)."""
    if not left or not right:
        return True
    return any(accepted(a, b) for a, b in product(left, right))   # type: ignore[operator]


def _first_pair(left: Types, right: Types) -> tuple[str, str]:
    assert left and right
    return _names(left), _names(right)


def _names(types: frozenset[type]) -> str:
    return " or ".join(sorted(map(class_name, types)))


def _fail(node: Node, problem: str) -> None:
    raise QueryError(problem, position=node.position, expression=node.text)


_RESULTS: dict[str, Types] = {   # each function's result type (None: abs and round keep their argument's)
    "startswith": _BOOL, "endswith": _BOOL, "contains": _BOOL, "lower": _STR, "upper": _STR,
    "len": frozenset({int}), "abs": None, "round": None,
}
