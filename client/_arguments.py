"""Argument checks of the public Client methods, before anything is sent.

Every check raises InvalidArgumentError naming the argument, the type or value it got
and what it wants, never a bare TypeError from deep inside (issue 16). Counts are ints
and timeouts numbers, and a bool is neither: `shards=True` is a mistake, not 1.
Keys and values are checked by _codec (encode_key, ValueEncoder).

Every int has an upper bound too, and every timeout a finite one: an int that reaches a
protobuf or msgpack field past its range would otherwise escape as a bare ValueError or
OverflowError, and a timeout of inf or 1e12 s as an OverflowError from the first lock or
gRPC deadline it meets. The bounds the node enforces are mirrored here (the client never
imports the node; tests/unit/test_client_ranges.py pins them to the node's).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sized
from typing import Any, Final

from shoal.client._errors import InvalidArgumentError

logger = logging.getLogger(__name__)

SHARDS_MAX: Final = 4096            # node/metadata/fsm.py SHARDS_MAX
REPLICATION_MAX: Final = 9          # node/metadata/fsm.py REPLICATION_MAX (0 = the node's default)
LIMIT_MAX: Final = 2 ** 63 - 1      # node/compute/spec.py LIMIT_MAX (a query's limit); a scan's too
GRPC_INT_MAX: Final = 2 ** 31 - 1   # gRPC channel options (message sizes) are C ints
# The longest timeout: a year. Python's lock waits stop at threading.TIMEOUT_MAX (about
# 292 years on 64-bit Linux: 2**63 ns) and beyond a few hundred years time_t overflows
# ("timestamp out of range for platform time_t"); gRPC deadlines are int64 ns too. A
# year plus the long-poll slack a call adds stays far below all of them.
SECONDS_MAX: Final = 365 * 24 * 3600
SCHEMA_EMPTY: Final = "a schema needs at least one field"   # the node's words (Schema.__post_init__)

_REPR_CHARS_MAX = 60
_INT_DIGITS_SHOWN_MAX = 40


def check_name(value: object, argument: str = "dataset") -> str:
    """A dataset name: a non-empty str."""
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{argument} must be a str, not {_described(value)}")
    if not value:
        raise InvalidArgumentError(f"{argument} must not be empty")
    return value


def check_int(value: object, argument: str, *, minimum: int, maximum: int, dataset: str | None = None) -> int:
    """A count: an int (not a bool) within minimum..maximum (both included).

    `maximum` is required: it is what keeps the value inside the protobuf or msgpack field
    it goes into (uint32, uint64, int64) or the limit the node enforces.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgumentError(f"{argument} must be an int, not {_described(value)}", dataset=dataset)
    if not minimum <= value <= maximum:
        raise InvalidArgumentError(f"{argument} must be within {minimum}..{maximum}, got {_shown(value)}",
                                   dataset=dataset)
    return value


def check_optional_int(value: object, argument: str, *, minimum: int, maximum: int,
                       dataset: str | None = None) -> int | None:
    return None if value is None else check_int(value, argument, minimum=minimum, maximum=maximum, dataset=dataset)


def check_seconds(value: object, argument: str, *, zero_ok: bool = False) -> float:
    """A timeout: a finite int or float (not a bool) of seconds, within (0, SECONDS_MAX].

    zero_ok: 0 is allowed too ("do not wait": Job.wait, Job.result). NaN, inf and
    negatives never are. Compared without float(), so a huge int cannot overflow here.
    """
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise InvalidArgumentError(f"{argument} must be a number of seconds, not {_described(value)}")
    in_range = (0 <= value if zero_ok else 0 < value) and value <= SECONDS_MAX   # False for NaN
    if not in_range:
        low = "[0" if zero_ok else "(0"
        raise InvalidArgumentError(f"{argument} must be a finite number of seconds within {low}, {SECONDS_MAX}] "
                                   f"({SECONDS_MAX // 86400} days), got {_shown(value)}")
    return float(value)


def check_optional_seconds(value: object, argument: str, *, zero_ok: bool = False) -> float | None:
    """None (no limit) or check_seconds."""
    return None if value is None else check_seconds(value, argument, zero_ok=zero_ok)


def check_schema(value: object, dataset: str) -> str:
    """A dataset schema as the JSON text the node parses (node/compute/schema.py Schema.from_json).

    Only None means schema-less ("" on the wire). An empty {}, [] or "" is refused as the
    node refuses {"fields": []}, instead of silently making the dataset schema-less. Every
    name (mapping key) must be a str: JSON would turn {1: "int"} into field "1".
    """
    if value is None:
        return ""
    if isinstance(value, Sized) and len(value) == 0:
        raise InvalidArgumentError(f"bad schema: {SCHEMA_EMPTY} (got {_described(value)}; schema=None makes a "
                                   "schema-less dataset)", dataset=dataset)
    if not isinstance(value, Mapping):
        raise InvalidArgumentError(f"schema must be a mapping, not {type(value).__name__}", dataset=dataset)
    try:
        return json.dumps(_json_ready(value, "schema", dataset), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidArgumentError(f"bad schema: {exc}", dataset=dataset) from None


def _json_ready(value: object, where: str, dataset: str) -> object:
    """`value` with every Mapping a dict and every sequence a list; a non-str key is refused."""
    if isinstance(value, Mapping):
        ready: dict[str, object] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                what = "field name" if where == "schema" else "key"
                inside = "" if where == "schema" else f" in {where}"
                raise InvalidArgumentError(f"bad schema: {what} {_shown(key)}{inside} must be a str, not "
                                           f"{type(key).__name__}", dataset=dataset)
            ready[key] = _json_ready(item, f"{where}[{key!r}]", dataset)
        return ready
    if isinstance(value, (list, tuple)):
        return [_json_ready(item, f"{where}[{index}]", dataset) for index, item in enumerate(value)]
    return value


def check_bound(value: object, argument: str, dataset: str) -> bytes:
    """A scan bound: None (no bound), str (as UTF-8) or bytes."""
    if value is None:
        return b""
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidArgumentError(f"{argument} is not valid UTF-8 ({exc.reason})", dataset=dataset) from None
    if isinstance(value, bytes):
        return value
    raise InvalidArgumentError(f"{argument} must be str or bytes, not {_described(value)}", dataset=dataset)


def check_records(value: object, dataset: str) -> Iterable[Any]:
    """put_many records: an iterable of (key, value) pairs; a mapping or a str is a mistake.

    Iterating a dict yields its keys, and a 2-character str key would unpack as a pair,
    so both are refused with the fix in the message.
    """
    if isinstance(value, Mapping):
        raise InvalidArgumentError("records must be (key, value) pairs, not a mapping: pass records.items()",
                                   dataset=dataset)
    if isinstance(value, (str, bytes, bytearray)) or not isinstance(value, Iterable):
        raise InvalidArgumentError(f"records must be an iterable of (key, value) pairs, not {_described(value)}",
                                   dataset=dataset)
    return value


def _described(value: object) -> str:
    return f"{type(value).__name__} ({_shown(value)})"


def _shown(value: object) -> str:
    """A short repr; a huge int by its size (its repr may take long, or raise ValueError past 4300 digits)."""
    if isinstance(value, int) and abs(value) >= 10 ** _INT_DIGITS_SHOWN_MAX:
        return f"an int of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= _REPR_CHARS_MAX else text[:_REPR_CHARS_MAX - 3] + "..."
