"""What each operator and function does to one pair (or tuple) of values: the reference semantics.

columns.py evaluates whole columns with C-level fast paths where the types allow and falls
back to these functions element by element; `columns.evaluate` uses them for one record.

- null: any operand null -> null (except `is null`, and/or, coalesce).
- numbers are int and float (not bool). + - * on numbers; `/` is true division; `%` is Python's
  (the result takes the divisor's sign); division or modulo by zero -> null.
- `==` / `!=`: numbers compare by value (1 == 1.0); a bool equals only a bool; values of other
  different types are unequal. Never an error.
- `<` `<=` `>` `>=`: number with number, or two values of the same type among str, bool,
  bytes; anything else is an EvaluationError ("cannot compare str with int in `origin > 1`").
- and / or / not: three-valued (SQL) over bool and null; any other operand is an EvaluationError.
- `in (...)`: equality as `==`, against literals.
- functions: startswith/endswith/contains(str, str) -> bool; lower/upper(str) -> str;
  len(str | bytes | list | dict) -> int; abs(number); round(number[, int digits]) rounds half to
  even on the binary value (Python's round), keeping the type (round(2.5) == 2.0);
  coalesce(a, b, ...) -> the first non-null.
"""
from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from shoal.node.compute.errors import EvaluationError
from shoal.node.compute.values import type_name

BOOL_TAG = "b"
ORDER_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}
ARITHMETIC_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "%": operator.mod,
}
ORDERABLE_ALONE = frozenset({str, bool, bytes})   # ordered among themselves only
NUMBERS = frozenset({int, float})
SIZED = frozenset({str, bytes, list, dict})
_STR = frozenset({str})
# What each function (but coalesce) accepts, per argument, and how its error says so: `call`
# here, the column fast paths (vectors.py) and the up-front type check (typecheck.py) share it.
FUNCTION_ARGUMENTS: dict[str, tuple[tuple[frozenset[type], ...], str]] = {
    "startswith": ((_STR, _STR), "str arguments"), "endswith": ((_STR, _STR), "str arguments"),
    "contains": ((_STR, _STR), "str arguments"), "lower": ((_STR,), "a str"), "upper": ((_STR,), "a str"),
    "len": ((SIZED,), "a str, bytes, list or dict"), "abs": ((NUMBERS,), "a number"),
    "round": ((NUMBERS, frozenset({int})), "a number and an int"),
}


def compare(symbol: str, left: Any, right: Any, text: str) -> bool | None:
    """left <symbol> right for < <= > >=; null if either is null. Raises EvaluationError."""
    if left is None or right is None:
        return None
    left_type, right_type = left.__class__, right.__class__
    if (left_type in NUMBERS and right_type in NUMBERS) or (
            left_type is right_type and left_type in ORDERABLE_ALONE):
        result: bool = ORDER_OPERATORS[symbol](left, right)
        return result
    raise EvaluationError(f"cannot compare {type_name(left)} with {type_name(right)} in `{text}`")


def equal(left: Any, right: Any) -> bool | None:
    """left == right as the module docstring says; null if either is null."""
    if left is None or right is None:
        return None
    if (left.__class__ is bool) is not (right.__class__ is bool):
        return False
    return bool(left == right)


def not_equal(left: Any, right: Any) -> bool | None:
    """The negation of `equal` (null stays null)."""
    result = equal(left, right)
    return None if result is None else not result


def arithmetic(symbol: str, left: Any, right: Any, text: str) -> Any:
    """left <symbol> right for + - * / %; null if either is null or on division by zero."""
    if left is None or right is None:
        return None
    if left.__class__ not in NUMBERS or right.__class__ not in NUMBERS:
        raise EvaluationError(
            f"cannot apply '{symbol}' to {type_name(left)} and {type_name(right)} in `{text}`")
    if symbol in ("/", "%") and right == 0:
        return None
    try:
        return ARITHMETIC_OPERATORS[symbol](left, right)
    except OverflowError:
        raise EvaluationError(f"number too large for a float in `{text}`") from None


def negate(value: Any, text: str) -> Any:
    """-value for a number; null stays null."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and value.__class__ is not bool:
        return -value
    raise EvaluationError(f"cannot negate {type_name(value)} in `{text}`")


def check_bool(value: Any, keyword: str, text: str) -> bool | None:
    """value itself if it is a bool or null, else EvaluationError naming `keyword` (and, or, not)."""
    if value is None or value.__class__ is bool:
        return value
    raise EvaluationError(f"'{keyword}' needs bool operands, got {type_name(value)} in `{text}`")


def logical_not(value: Any, text: str) -> bool | None:
    """Three-valued not."""
    checked = check_bool(value, "not", text)
    return None if checked is None else not checked


def in_key(value: bool | int | float | str) -> Any:
    """How an `in` list stores a literal so that set membership behaves as `equal`."""
    return (BOOL_TAG, value) if value.__class__ is bool else value


def is_in(value: Any, keys: frozenset[Any]) -> bool | None:
    """value in the literal set `keys` (built with in_key); null if value is null."""
    if value is None:
        return None
    if value.__class__ is bool:
        return (BOOL_TAG, value) in keys
    try:
        return value in keys
    except TypeError:    # a list or dict: unhashable, equal to no literal
        return False


def call(function: str, arguments: tuple[Any, ...], text: str) -> Any:
    """A function of FUNCTION_ARITY other than coalesce (whose laziness the caller handles)."""
    if any(argument is None for argument in arguments):
        return None
    classes = tuple(argument.__class__ for argument in arguments)
    if function in ("startswith", "endswith", "contains"):
        if classes != (str, str):
            raise _function_error(function, arguments, text)
        source, part = arguments
        if function == "contains":
            return part in source
        return source.startswith(part) if function == "startswith" else source.endswith(part)
    (value, *rest) = arguments
    if function in ("lower", "upper"):
        if classes[0] is not str:
            raise _function_error(function, arguments, text)
        return value.lower() if function == "lower" else value.upper()
    if function == "len":
        if classes[0] not in SIZED:
            raise _function_error(function, arguments, text)
        return len(value)
    if classes[0] not in NUMBERS:
        raise _function_error(function, arguments, text)
    if function == "abs":
        return abs(value)
    assert function == "round", function
    digits = rest[0] if rest else 0
    if digits.__class__ is not int:
        raise _function_error(function, arguments, text)
    try:
        return round_number(value, digits)
    except OverflowError:
        raise EvaluationError(f"round() digits out of range in `{text}`") from None


def round_number(value: int | float, digits: int) -> int | float:
    """round(value, digits), except that an int with very negative digits answers 0 at once:
    Python builds 10 ** -digits first (30 s for digits = -10**7, hours past that), which hung
    a worker, or the node itself when the call was a constant folded at compile time."""
    if digits < 0 and value.__class__ is int and -digits > value.bit_length() // 3 + 2:
        return 0          # 10 ** -digits >= 2 ** (bit_length + 4) > 2 * |value|: rounds to 0
    return round(value, digits)


def _function_error(function: str, arguments: tuple[Any, ...], text: str) -> EvaluationError:
    got = " and ".join(type_name(argument) for argument in arguments)
    return EvaluationError(f"{function}() needs {FUNCTION_ARGUMENTS[function][1]}, got {got} in `{text}`")
