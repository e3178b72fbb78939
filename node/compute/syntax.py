"""The expression AST: frozen dataclasses, one per construct the grammar (expressions.py) allows.

Every node keeps its source text (EvaluationError messages quote it) and its 1-based column.
`and`/`or` are n-ary so that long chains stay shallow.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Union


@dataclasses.dataclass(frozen=True, slots=True)
class Literal:
    value: None | bool | int | float | str
    text: str
    position: int


@dataclasses.dataclass(frozen=True, slots=True)
class Field:
    path: tuple[str, ...]
    text: str
    position: int


@dataclasses.dataclass(frozen=True, slots=True)
class RecordKey:
    text: str
    position: int


@dataclasses.dataclass(frozen=True, slots=True)
class Negate:
    operand: Node
    text: str
    position: int


@dataclasses.dataclass(frozen=True, slots=True)
class Not:
    operand: Node
    text: str
    position: int


@dataclasses.dataclass(frozen=True, slots=True)
class Arithmetic:
    operator: str                    # + - * / %
    left: Node
    right: Node
    text: str
    position: int


@dataclasses.dataclass(frozen=True, slots=True)
class Comparison:
    operator: str                    # == != < <= > >=  ("=" is parsed as "==")
    left: Node
    right: Node
    text: str
    position: int


@dataclasses.dataclass(frozen=True, slots=True)
class Logical:
    operator: str                    # and, or: n-ary, so long chains stay shallow
    operands: tuple[Node, ...]
    text: str
    position: int


@dataclasses.dataclass(frozen=True, slots=True)
class IsNull:
    operand: Node
    negated: bool
    text: str
    position: int


@dataclasses.dataclass(frozen=True, slots=True)
class InList:
    operand: Node
    values: tuple[bool | int | float | str, ...]
    negated: bool
    text: str
    position: int


@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    function: str                    # lower case, a key of FUNCTION_ARITY
    arguments: tuple[Node, ...]
    text: str
    position: int


Node = Union[Literal, Field, RecordKey, Negate, Not, Arithmetic, Comparison, Logical, IsNull, InList, Call]


def children(node: Node) -> tuple[Node, ...]:
    """The direct sub-expressions of a node."""
    if isinstance(node, (Negate, Not, IsNull, InList)):
        return (node.operand,)
    if isinstance(node, (Arithmetic, Comparison)):
        return (node.left, node.right)
    if isinstance(node, Logical):
        return node.operands
    if isinstance(node, Call):
        return node.arguments
    return ()


def walk(node: Node) -> Iterator[Node]:
    """Every node of the tree, parents before children (iterative: no recursion limit)."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(children(current)))


def referenced_fields(node: Node) -> frozenset[str]:
    """Top-level names the expression reads (first path segments; `_key` not included)."""
    return frozenset(sub.path[0] for sub in walk(node) if isinstance(sub, Field))


def uses_record_key(node: Node) -> bool:
    """Whether the expression reads the `_key` pseudo-field."""
    return any(isinstance(sub, RecordKey) for sub in walk(node))
