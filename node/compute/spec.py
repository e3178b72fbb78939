"""The query spec: its checks, and the Plan that query.py compiles (query.validate_spec runs both).

A spec is a plain dict (see the compute brief / DESIGN.md); missing keys take their defaults::

    {"where": str | None, "with_columns": [[name, expr], ...], "group_by": [expr, ...],
     "aggs": [[out_name, func, expr | None], ...], "select": [expr, ...] | None,
     "distinct": bool, "order_by": [[expr_or_output_column, descending], ...], "limit": int | None}

Checks (each failure is one QueryError naming the entry, e.g. "aggs[1] (delay): unknown
aggregate function 'median' (...)"): the types and shapes above, every expression parses,
names are 1..NAME_CHARS_MAX characters and unique among output columns, with_columns names
are unique and not `_key`, `where` does not read a with_columns name (where runs first),
select is not combined with group_by/aggs, count alone may omit its argument ("*" also means
rows), limit is an int >= 0. order_by entries name an output column, or else (select without
distinct, or whole documents) are expressions over the record; with group_by/aggs or with
select + distinct they must name an output column.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from shoal.node.compute.aggregates import AGGREGATE_FUNCTIONS
from shoal.node.compute.errors import QueryError
from shoal.node.compute.expressions import parse_expression
from shoal.node.compute.syntax import Node, referenced_fields, uses_record_key

SPEC_KEYS = ("where", "with_columns", "group_by", "aggs", "select", "distinct", "order_by", "limit")
NAME_CHARS_MAX = 128
WITH_COLUMNS_MAX = 100
GROUP_BY_MAX = 32
AGGS_MAX = 100
SELECT_MAX = 1_000
ORDER_BY_MAX = 32
LIMIT_MAX = 2 ** 63 - 1


@dataclasses.dataclass(frozen=True, slots=True)
class OrderItem:
    """One order_by entry: an output column (`column` = its index) or an expression (`node`)."""

    text: str
    descending: bool
    column: int | None
    node: Node | None


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """A validated spec. Names are output column names (expression text, stripped)."""

    where: Node | None
    with_columns: tuple[tuple[str, Node], ...]
    group_by: tuple[tuple[str, Node], ...]
    aggs: tuple[tuple[str, str, Node | None], ...]
    select: tuple[tuple[str, Node], ...] | None
    distinct: bool
    order_by: tuple[OrderItem, ...]
    limit: int | None
    columns: tuple[str, ...]

    @property
    def aggregated(self) -> bool:
        """Whether rows are groups (group_by and/or aggs) rather than records."""
        return bool(self.group_by or self.aggs)

    def expressions(self) -> list[Node]:
        """Every expression of the plan."""
        nodes = [self.where] if self.where is not None else []
        nodes += [node for _, node in self.with_columns] + [node for _, node in self.group_by]
        nodes += [node for _, _, node in self.aggs if node is not None]
        nodes += [node for _, node in self.select or ()] + [item.node for item in self.order_by if item.node]
        return nodes


def parse_spec(spec: object) -> Plan:
    """The Plan of a valid spec; QueryError otherwise (see the module docstring)."""
    if not isinstance(spec, Mapping):
        raise QueryError(f"the query spec must be a dict, got {type(spec).__name__}")
    for key in spec:
        if key not in SPEC_KEYS:
            raise QueryError(f"unknown key {key!r} in the query spec (known: {', '.join(SPEC_KEYS)})")
    where = _expression(spec.get("where"), "where", optional=True)
    with_columns = _with_columns(spec.get("with_columns"))
    if where is not None:
        clash = sorted(referenced_fields(where) & {name for name, _ in with_columns})
        if clash:
            raise QueryError(f"{clash[0]!r} is a with_columns name, but where runs before with_columns; "
                             "filter on its expression instead", context="where")
    group_by = tuple(_named_expression(text, f"group_by[{index}]")
                     for index, text in enumerate(_entries(spec.get("group_by"), "group_by", GROUP_BY_MAX)))
    aggs = _aggs(spec.get("aggs"))
    select = spec.get("select")
    selected = None
    if select is not None:
        if group_by or aggs:
            raise QueryError("select cannot be combined with group_by or aggs", context="select")
        entries = _entries(select, "select", SELECT_MAX)
        if not entries:
            raise QueryError("select needs at least one expression (or None for whole documents)", context="select")
        selected = tuple(_named_expression(text, f"select[{index}]") for index, text in enumerate(entries))
    columns = [name for name, _ in group_by] + [name for name, _, _ in aggs] + [name for name, _ in selected or ()]
    _check_unique(columns, group_by, aggs, selected)
    distinct = spec.get("distinct", False)
    if distinct is None:
        distinct = False
    if type(distinct) is not bool:
        raise QueryError(f"distinct must be a bool, got {type(distinct).__name__}", context="distinct")
    aggregated = bool(group_by or aggs)
    order_by = _order_by(spec.get("order_by"), columns, aggregated, distinct and selected is not None, distinct)
    return Plan(where, with_columns, group_by, aggs, selected, distinct, order_by, _limit(spec.get("limit")),
                tuple(columns))


def _expression(text: object, context: str, optional: bool = False) -> Any:
    if text is None and optional:
        return None
    try:
        return parse_expression(text)
    except QueryError as exc:
        raise exc.within(context) from None


def _named_expression(text: object, context: str) -> tuple[str, Node]:
    """(output column name, AST) of a group_by or select entry; QueryError for a non-string
    (parsed first: it names the entry, where `text.strip()` would raise AttributeError)."""
    node = _expression(text, context)
    assert isinstance(text, str)
    return text.strip(), node


def _entries(value: object, context: str, most: int) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise QueryError(f"expected a list, got {type(value).__name__}", context=context)
    if len(value) > most:
        raise QueryError(f"{len(value)} entries, at most {most}", context=context)
    return list(value)


def _name(value: object, context: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise QueryError(f"a name must be a non-empty string, got {value!r:.40}", context=context)
    if len(value) > NAME_CHARS_MAX:
        raise QueryError(f"name is {len(value)} characters long, at most {NAME_CHARS_MAX}", context=context)
    return value


def _with_columns(value: object) -> tuple[tuple[str, Node], ...]:
    result: list[tuple[str, Node]] = []
    for index, entry in enumerate(_entries(value, "with_columns", WITH_COLUMNS_MAX)):
        context = f"with_columns[{index}]"
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            raise QueryError("expected [name, expression]", context=context)
        name = _name(entry[0], context)
        context = f"with_columns[{index}] ({name})"
        if name == "_key":
            raise QueryError("_key is the record key and cannot be redefined", context=context)
        if any(name == earlier for earlier, _ in result):
            raise QueryError(f"column {name!r} is defined twice", context=context)
        result.append((name, _expression(entry[1], context)))
    return tuple(result)


def _aggs(value: object) -> tuple[tuple[str, str, Node | None], ...]:
    result: list[tuple[str, str, Node | None]] = []
    for index, entry in enumerate(_entries(value, "aggs", AGGS_MAX)):
        context = f"aggs[{index}]"
        if not isinstance(entry, (list, tuple)) or len(entry) != 3:
            raise QueryError("expected [output name, function, expression or None]", context=context)
        name = _name(entry[0], context)
        context = f"aggs[{index}] ({name})"
        function, text = entry[1], entry[2]
        if function not in AGGREGATE_FUNCTIONS:
            raise QueryError(f"unknown aggregate function {function!r:.40} (known: {', '.join(AGGREGATE_FUNCTIONS)})",
                             context=context)
        if function == "count" and isinstance(text, str) and text.strip() == "*":
            text = None
        if text is None and function != "count":
            raise QueryError(f"{function} needs an expression (only count may omit it)", context=context)
        result.append((name, function, None if text is None else _expression(text, context)))
    return tuple(result)


def _check_unique(columns: list[str], group_by: tuple[tuple[str, Node], ...],
                  aggs: tuple[tuple[str, str, Node | None], ...],
                  selected: tuple[tuple[str, Node], ...] | None) -> None:
    contexts = ([f"group_by[{i}]" for i in range(len(group_by))] + [f"aggs[{i}]" for i in range(len(aggs))]
                + [f"select[{i}]" for i in range(len(selected or ()))])
    seen: set[str] = set()
    for name, context in zip(columns, contexts):
        if name in seen:
            raise QueryError(f"output column {name!r} is defined twice", context=context)
        seen.add(name)


def _order_by(value: object, columns: list[str], aggregated: bool, selected_distinct: bool,
              distinct: bool) -> tuple[OrderItem, ...]:
    items: list[OrderItem] = []
    for index, entry in enumerate(_entries(value, "order_by", ORDER_BY_MAX)):
        context = f"order_by[{index}]"
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            raise QueryError("expected [expression or output column, descending]", context=context)
        text, descending = entry
        if not isinstance(text, str):
            raise QueryError(f"expected an expression string, got {type(text).__name__}", context=context)
        if type(descending) is not bool:
            raise QueryError(f"descending must be a bool, got {type(descending).__name__}", context=context)
        name = text.strip()
        if name in columns:
            items.append(OrderItem(name, descending, columns.index(name), None))
            continue
        if aggregated or selected_distinct:
            why = "with group_by or aggs" if aggregated else "with select and distinct"
            raise QueryError(f"{name!r:.60} is not an output column; {why}, order by one of: "
                             f"{', '.join(columns) or '(none)'}", context=context)
        node = _expression(text, context)
        if distinct and uses_record_key(node):
            raise QueryError("with distinct, order_by cannot read _key", context=context)
        items.append(OrderItem(name, descending, None, node))
    return tuple(items)


def _limit(value: object) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= LIMIT_MAX:
        raise QueryError(f"expected an int from 0 to {LIMIT_MAX}, got {value!r:.40}", context="limit")
    return value
