"""The CLI's JSON for record values, both ways: what `shoal get` prints, `shoal put` and
`shoal load` (JSON lines) store back as the same value.

One rule (README "The `shoal` command"):

- Strict JSON: NaN, Infinity and numbers a 64-bit float cannot hold (1e400, 1e-400) are
  errors on input; a stored NaN or Infinity is an error on output, never invalid JSON.
- Bytes, which JSON lacks, are the object {"$bytes": "<standard base64>"} at any depth,
  in and out: b"hi" <-> {"$bytes": "aGk="}. A str is never rewritten: "base64:aGk=" is
  printed and read back as that str.
- That shape (an object whose one key is "$bytes") is reserved: on input its value must
  be a base64 string (else an error); a stored dict of that shape (only the Python client
  can write one) is an error on output rather than a line that reads as bytes. Objects
  with other keys, "$bytes" among them, are plain dicts.
- Dict keys are strings: a stored int or bytes key (Python client) is an error on output,
  since JSON would print it as a string and it would come back as one.

CSV cells are never bytes: a cell holding {"$bytes": ...} is that text.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any, Final

BYTES_KEY: Final = "$bytes"
_SHOWN_CHARS_MAX: Final = 40


class JsonValueError(ValueError):
    """Text that is not strict JSON (NaN, Infinity, an out-of-range number, a syntax error,
    a bad {"$bytes": ...})."""


class UnshowableValueError(ValueError):
    """A stored value the CLI's JSON cannot show faithfully; the message says which part."""


def strict_json(text: str) -> Any:
    """json.loads that refuses what JSON does not have, and reads {"$bytes": BASE64} as bytes."""
    try:
        return _STRICT_DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise JsonValueError(f"{exc.msg} at column {exc.colno}") from None
    except ValueError as exc:
        raise JsonValueError(str(exc)) from None


def value_json(value: Any) -> str:
    """The JSON text of a stored value (non-ASCII kept); UnshowableValueError if it has no faithful one."""
    return json.dumps(_showable(value), ensure_ascii=False, allow_nan=False)


def _showable(value: Any) -> Any:
    """`value` with bytes as {"$bytes": ...}; raises for what JSON would change or cannot hold."""
    if isinstance(value, bytes):
        return {BYTES_KEY: base64.b64encode(value).decode("ascii")}
    if isinstance(value, float) and not math.isfinite(value):
        raise UnshowableValueError("holds NaN or Infinity, which JSON does not have")
    if isinstance(value, (list, tuple)):
        return [_showable(item) for item in value]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise UnshowableValueError(f"holds a dict key {key!r:.{_SHOWN_CHARS_MAX}} ({type(key).__name__}); "
                                           "JSON keys are strings, so it would read back as a different key")
        if list(value) == [BYTES_KEY]:
            raise UnshowableValueError(f'holds a dict whose one key is "{BYTES_KEY}", which the CLI reads and '
                                       "prints as bytes")
        return {key: _showable(item) for key, item in value.items()}
    if value is None or isinstance(value, (str, int, float)):
        return value
    raise UnshowableValueError(f"holds a {type(value).__name__}, which JSON does not have")


def _object(pairs: list[tuple[str, Any]]) -> Any:
    if len(pairs) != 1 or pairs[0][0] != BYTES_KEY:
        return dict(pairs)
    encoded = pairs[0][1]
    if not isinstance(encoded, str):
        raise ValueError(f'{{"{BYTES_KEY}": ...}} must hold a base64 string (it stands for bytes), '
                         f"not {type(encoded).__name__}")
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        shown = json.dumps(encoded)[:_SHOWN_CHARS_MAX]
        raise ValueError(f'{{"{BYTES_KEY}": {shown}}} is not standard base64 ({exc})') from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number; quote it to store the text")


def _exact_range_float(text: str) -> float:
    number = float(text)
    if math.isinf(number) or (number == 0.0 and _has_nonzero_digit(text)):
        raise ValueError(f"{text} is out of the range of a 64-bit float; quote it to store the text")
    return number


def _has_nonzero_digit(text: str) -> bool:
    mantissa = re.split("[eE]", text, maxsplit=1)[0]
    return any(char in "123456789" for char in mantissa)


_STRICT_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_exact_range_float,
                                          object_pairs_hook=_object)
