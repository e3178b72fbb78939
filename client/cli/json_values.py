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
- An object that repeats a key is an error on input: JSON parsers keep the last value
  and drop the other silently, which would lose a field.
- Nesting deeper than Python's recursion allows is an error ("nested too deeply"), not a
  RecursionError.

`value_json` prints one value (`shoal get`), `rows_json` the rows of a result (`shoal
query --json`, `shoal job watch --json`) by the same rule. `document_json` reads a JSON
document such as a schema file, refusing a repeated key at any depth. CSV cells are
never bytes: a cell holding {"$bytes": ...} is that text.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

BYTES_KEY: Final = "$bytes"
NESTED_TOO_DEEPLY: Final = "nested too deeply"
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
    except RecursionError:
        raise JsonValueError(NESTED_TOO_DEEPLY) from None


def document_json(text: str, *, top_key: str = "key") -> Any:
    """json.loads of a document (a schema file) that refuses a repeated object key at any depth:
    "field 'a': defined twice" at the top (top_key="field"), "fields[0]: key 'name' defined twice" below."""
    try:
        return _unique(json.loads(text, object_pairs_hook=_Pairs), "", top_key)
    except json.JSONDecodeError as exc:
        raise JsonValueError(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise JsonValueError(NESTED_TOO_DEEPLY) from None


def value_json(value: Any) -> str:
    """The JSON text of a stored value (non-ASCII kept); UnshowableValueError if it has no faithful one."""
    try:
        return json.dumps(_showable(value), ensure_ascii=False, allow_nan=False)
    except RecursionError:
        raise UnshowableValueError(f"is {NESTED_TOO_DEEPLY}") from None


def rows_json(rows: Iterable[Mapping[Any, Any]]) -> str:
    """A JSON array of result rows, each value by value_json's rule; UnshowableValueError names the
    row (from 1) and column of the first value without a faithful JSON form."""
    shown: list[dict[str, Any]] = []
    for number, row in enumerate(rows, 1):
        out: dict[str, Any] = {}
        for column, value in row.items():
            if not isinstance(column, str):
                raise UnshowableValueError(f"row {number} has a column named {column!r:.{_SHOWN_CHARS_MAX}} "
                                           f"({type(column).__name__}); JSON keys are strings")
            try:
                out[column] = _showable(value)
            except UnshowableValueError as exc:
                raise UnshowableValueError(f"row {number} column {column!r:.{_SHOWN_CHARS_MAX}} {exc}") from None
            except RecursionError:
                raise UnshowableValueError(f"row {number} column {column!r:.{_SHOWN_CHARS_MAX}} is "
                                           f"{NESTED_TOO_DEEPLY}") from None
        shown.append(out)
    return json.dumps(shown, ensure_ascii=False, allow_nan=False)


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
        result = dict(pairs)
        if len(result) != len(pairs):
            raise ValueError(f"key {_repeated(pairs)!r:.{_SHOWN_CHARS_MAX}} appears twice in one object: one of "
                             "its values would be lost")
        return result
    encoded = pairs[0][1]
    if not isinstance(encoded, str):
        raise ValueError(f'{{"{BYTES_KEY}": ...}} must hold a base64 string (it stands for bytes), '
                         f"not {type(encoded).__name__}")
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        shown = json.dumps(encoded)[:_SHOWN_CHARS_MAX]
        raise ValueError(f'{{"{BYTES_KEY}": {shown}}} is not standard base64 ({exc})') from None


def _repeated(pairs: list[tuple[str, Any]]) -> str:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            return key
        seen.add(key)
    raise AssertionError("no key repeats")


class _Pairs(list[tuple[str, Any]]):
    """An object's (key, value) pairs as parsed, repeats kept, until _unique checks them."""


def _unique(value: Any, path: str, top_key: str) -> Any:
    """`value` with every _Pairs a dict; JsonValueError at the first key an object repeats."""
    if isinstance(value, _Pairs):
        result: dict[str, Any] = {}
        for key, item in value:
            if key in result:
                where = f"{top_key} {key!r}:" if not path else f"{path}: key {key!r}"
                raise JsonValueError(f"{where} defined twice")
            result[key] = _unique(item, f"{path}.{key}" if path else key, top_key)
        return result
    if isinstance(value, list):
        return [_unique(item, f"{path}[{index}]", top_key) for index, item in enumerate(value)]
    return value


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
