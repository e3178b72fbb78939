"""What values are to the compute layer: type names, identity keys, the total order, wire ints.

Values are what msgpack decodes to: None (null), bool, int, float, str, bytes, list, dict.
Numbers are int and float; bool is not a number.

Identity (`identity_key`): group keys, distinct rows and count_distinct keep types apart, as
`shoal.node.storage.documents.same_value` does: 1, 1.0 and True are three values. Inside
one type the usual equality holds, with two IEEE fixes so that results do not depend on the
order records arrive in: 0.0 and -0.0 are one value, and every NaN is one value. A list or
dict is identified by its msgpack encoding (so map key order matters). Expressions compare
differently: `1 == 1.0` is true there (see expressions.py).

Order (`order_key`): one total order over every non-null value, used by order_by, by the
default order of group rows and by min/max: numbers (int and float together, by value; at
equal value the int first), then NaN, bools, strs, bytes, and lists and dicts by their
msgpack encoding. Where nulls go (last, also when descending) is up to the sorter.

Wire ints: partials travel as msgpack, whose ints stop at 64 bits; exact sums do not.
"""
from __future__ import annotations

import math
from typing import Any

import msgpack

from shoal.client.wire.ints import WIRE_INT_MAX, WIRE_INT_MIN

_BOOL_TAG = "b"
_FLOAT_TAG = "f"
_PACKED_TAG = "p"
_NAN_MARK = "nan"

# Types whose values are their own identity key (no two of them are == across types).
PLAIN_KEY_TYPES: frozenset[type] = frozenset({str, int, bytes, type(None)})
NUMBER_TYPES: frozenset[type] = frozenset({int, float})

_TYPE_NAMES: dict[type, str] = {
    type(None): "null", bool: "bool", int: "int", float: "float", str: "str",
    bytes: "bytes", list: "list", dict: "dict",
}


def type_name(value: object) -> str:
    """The name of a value's type as messages print it: null, bool, int, float, str, ..."""
    return class_name(type(value))


def class_name(cls: type) -> str:
    """The name of a type as messages print it (type_name of its values)."""
    return _TYPE_NAMES.get(cls, cls.__name__)


def pack(value: object) -> bytes:
    """msgpack bytes of a value (the encoding identity and order use for lists and dicts)."""
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def identity_key(value: object) -> Any:
    """A hashable key equal for identical values only (see the module docstring).

    str, int, bytes and None are their own keys; bool, float, list and dict become tagged
    tuples (a tuple never comes out of msgpack, so a tag cannot collide with a value).
    """
    cls = value.__class__
    if cls is str or cls is int or value is None or cls is bytes:
        return value
    if cls is bool:
        return (_BOOL_TAG, value)
    if cls is float:
        assert isinstance(value, float)
        return (_FLOAT_TAG, _NAN_MARK if value != value else value + 0.0)  # -0.0 + 0.0 == 0.0
    return (_PACKED_TAG, pack(value))


def identity_keys(values: list[object], types: set[type] | frozenset[type]) -> list[Any]:
    """identity_key of each value; `types` is the set of their types (skips the work when plain)."""
    if types <= PLAIN_KEY_TYPES:
        return values
    return list(map(identity_key, values))


def plain_value(key: Any) -> object:
    """The value an identity key stands for (the inverse of identity_key, up to -0.0 and NaN payloads)."""
    if key.__class__ is not tuple:
        return key
    tag, inner = key
    if tag == _BOOL_TAG:
        return inner
    if tag == _FLOAT_TAG:
        return math.nan if inner == _NAN_MARK else inner
    return msgpack.unpackb(inner, raw=False, strict_map_key=False)


def order_key(value: object) -> tuple[Any, ...]:
    """Sort key of a non-null value in the total order of the module docstring."""
    cls = value.__class__
    if cls is int:
        return (0, value, 0)
    if cls is float:
        return (1, 0, 0) if value != value else (0, value, 1)
    if cls is bool:
        return (2, value, 0)
    if cls is str:
        return (3, value, 0)
    if cls is bytes:
        return (4, value, 0)
    return (5, pack(value), 0)


def null_last_key(value: object, descending: bool) -> tuple[Any, ...]:
    """Sort key that puts nulls last when sorted with reverse=descending."""
    if value is None:
        return (0,) if descending else (1,)
    return (1, order_key(value)) if descending else (0, order_key(value))


def wire_int(value: int) -> int | bytes:
    """An int as it can travel in msgpack: itself within 64 bits, else signed little-endian bytes."""
    if WIRE_INT_MIN <= value <= WIRE_INT_MAX:
        return value
    return value.to_bytes(value.bit_length() // 8 + 1, "little", signed=True)


def unwire_int(value: object) -> int:
    """The inverse of wire_int."""
    if isinstance(value, bytes):
        return int.from_bytes(value, "little", signed=True)
    assert type(value) is int, f"expected a wire int, got {type_name(value)}"
    return value


def record_key(raw: bytes) -> str | bytes:
    """A record key as queries and mappers see it: str when it is UTF-8, else the bytes
    themselves (as the client's scan returns it; decoding with "replace" lost the key)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw
