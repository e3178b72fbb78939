"""How stored documents compare: the rule of compare-and-set.

Values are msgpack documents. Two documents are the same when they decode to the same
structure, whatever the order of map keys or the width of an int encoding, and with
types kept apart: True is not 1, 1 is not 1.0, a str is not bytes (msgpack has no tuple:
a tuple and a list of the same items encode alike).
"""
from __future__ import annotations

import msgpack


def same_document(current: bytes, expected: bytes) -> bool:
    """CAS comparison: equal msgpack documents, whatever the map order or int width.

    Falls back to byte equality when either side does not decode.
    """
    if current == expected:
        return True
    try:
        left = msgpack.unpackb(current, raw=False, strict_map_key=False)
        right = msgpack.unpackb(expected, raw=False, strict_map_key=False)
    except Exception:  # undecodable on either side: only identical bytes match
        return False
    return same_value(left, right)


def same_value(left: object, right: object) -> bool:
    """Structural equality that keeps types apart (True != 1, 1 != 1.0)."""
    if type(left) is not type(right):
        return False
    if type(left) is dict:
        assert isinstance(right, dict)
        return left.keys() == right.keys() and all(
            same_value(value, right[key]) for key, value in left.items())
    if type(left) is list:
        assert isinstance(right, list)
        return len(left) == len(right) and all(map(same_value, left, right))
    return left == right
