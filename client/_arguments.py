"""Argument checks of the public Client methods, before anything is sent.

Every check raises InvalidArgumentError naming the argument, the type or value it got
and what it wants, never a bare TypeError from deep inside (issue 16). Counts are ints
and timeouts numbers, and a bool is neither: `shards=True` is a mistake, not 1.
Keys and values are checked by _codec (encode_key, ValueEncoder).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from shoal.client._errors import InvalidArgumentError

logger = logging.getLogger(__name__)

_REPR_CHARS_MAX = 60


def check_name(value: object, argument: str = "dataset") -> str:
    """A dataset name: a non-empty str."""
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{argument} must be a str, not {_described(value)}")
    if not value:
        raise InvalidArgumentError(f"{argument} must not be empty")
    return value


def check_int(value: object, argument: str, *, minimum: int, dataset: str | None = None) -> int:
    """A count: an int (not a bool) of at least `minimum`."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgumentError(f"{argument} must be an int, not {_described(value)}", dataset=dataset)
    if value < minimum:
        raise InvalidArgumentError(f"{argument} must be >= {minimum}, got {value}", dataset=dataset)
    return value


def check_optional_int(value: object, argument: str, *, minimum: int, dataset: str | None = None) -> int | None:
    return None if value is None else check_int(value, argument, minimum=minimum, dataset=dataset)


def check_seconds(value: object, argument: str) -> float:
    """A timeout: a positive int or float (not a bool), in seconds."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise InvalidArgumentError(f"{argument} must be a number of seconds, not {_described(value)}")
    if not value > 0:
        raise InvalidArgumentError(f"{argument} must be > 0, got {value!r}")
    return float(value)


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
    text = repr(value)
    if len(text) > _REPR_CHARS_MAX:
        text = text[:_REPR_CHARS_MAX - 3] + "..."
    return f"{type(value).__name__} ({text})"
