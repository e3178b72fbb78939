"""The ints msgpack carries (int64 and uint64), and finding one past them in a value.

Shared by the client (a value it cannot encode names the field holding the int) and the
nodes (a result that cannot be sent names its column): msgpack itself says only "Integer
value out of range".
"""
from __future__ import annotations

from typing import Any

WIRE_INT_MIN = -(2 ** 63)
WIRE_INT_MAX = 2 ** 64 - 1
WIRE_INT_RANGE = "-2^63..2^64-1"
_DEPTH_MAX = 100   # deeper than msgpack packs anyway (its own nesting limit raises first)
_DIGITS_SHOWN_MAX = 40


def int_past_64_bits(value: Any, path: str = "", depth: int = 0) -> tuple[str, int] | None:
    """(where, the int) of the first int (depth first, keys too) outside WIRE_INT_MIN..WIRE_INT_MAX,
    or None. `where` is a path from the top: "" for the value itself, "field 'a'[2]", "key of field 'a'"."""
    if value.__class__ is int:
        return None if WIRE_INT_MIN <= value <= WIRE_INT_MAX else (path, value)
    if depth > _DEPTH_MAX:
        return None
    if isinstance(value, dict):
        for name, item in value.items():
            step = f"field {name!r}" if not path else f"{path}[{name!r}]"
            found = int_past_64_bits(name, f"key of {step}", depth + 1) or int_past_64_bits(item, step, depth + 1)
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = int_past_64_bits(item, f"{path}[{index}]", depth + 1)
            if found is not None:
                return found
    return None


def shown_int(number: int) -> str:
    """The int as a message prints it: its digits, or its size when huge (str() of a huge int is
    slow, and refused past 4300 digits)."""
    return str(number) if abs(number) < 10 ** _DIGITS_SHOWN_MAX else f"an int of {number.bit_length()} bits"
