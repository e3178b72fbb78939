"""Issue 16 point 3 (values): `shoal get` output is unambiguous and `put`/`load` read it back.

Method: json_values.value_json (what `get` prints) and strict_json (what `put` and JSON
lines `load` parse) are driven directly, and a JSON lines file through RecordFile; no node
(the end-to-end round trip through a real node is tests/integration/test_cli_bytes.py).
The example is a str "base64:aGk=" against the bytes b"hi", which printed alike before;
the variants nest both in a dict and a list, and cover the reserved {"$bytes": ...} shape.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shoal.client.cli.json_values import JsonValueError, UnshowableValueError, strict_json, value_json
from shoal.client.cli.record_file import RecordFile


def round_trip(value: Any) -> Any:
    return strict_json(value_json(value))


def test_issue16_str_that_looks_like_base64_stays_a_str() -> None:
    """The example: "base64:aGk=" prints as that JSON string and reads back as the str, not bytes."""
    assert value_json("base64:aGk=") == '"base64:aGk="'
    assert round_trip("base64:aGk=") == "base64:aGk="
    assert type(round_trip("base64:aGk=")) is str


@pytest.mark.parametrize("value", [b"hi", b"", bytes(range(256)), b"base64:aGk="])
def test_issue16_bytes_print_as_the_bytes_object_and_round_trip(value: bytes) -> None:
    """Bytes print as {"$bytes": BASE64} and come back as the same bytes."""
    assert round_trip(value) == value and type(round_trip(value)) is bytes
    assert value_json(b"hi") == '{"$bytes": "aGk="}'


def test_issue16_dict_holding_bytes_and_a_lookalike_str_round_trips() -> None:
    """Variant: both at any depth in one value; every part keeps its type, and the two lines differ."""
    value = {"raw": b"hi", "text": "base64:aGk=", "list": [b"\x00\xff", "aGk=", {"$bytes": "x", "n": 1}],
             "nested": {"inner": b"hi"}, "unicode": "Grüße"}
    assert round_trip(value) == value
    assert value_json(value).startswith('{"raw": {"$bytes": "aGk="}, "text": "base64:aGk="')
    assert value_json(b"hi") != value_json("base64:aGk=") and value_json({"k": b"hi"}) != value_json({"k": "aGk="})


@pytest.mark.parametrize(("text", "reason"), [
    ('{"$bytes": 5}', "must hold a base64 string"),
    ('{"$bytes": "aGk"}', "is not standard base64"),
    ('{"$bytes": "a*k="}', "is not standard base64"),
    ('[{"$bytes": null}]', "must hold a base64 string"),
])
def test_issue16_bad_bytes_object_is_an_error(text: str, reason: str) -> None:
    """The reserved shape is never silently kept as a dict: a value that is not base64 is refused."""
    with pytest.raises(JsonValueError, match=reason):
        strict_json(text)


@pytest.mark.parametrize(("value", "reason"), [
    ({"$bytes": "aGk="}, 'one key is "\\$bytes"'),
    ({1: "a"}, "dict key 1 \\(int\\)"),
    ({"k": {b"raw": 1}}, "dict key b'raw' \\(bytes\\)"),
    ([float("nan")], "NaN or Infinity"),
    ({"t": object()}, "holds a object"),
])
def test_issue16_values_json_would_change_are_refused_on_output(value: Any, reason: str) -> None:
    """What would print like a different value (a stored bytes-shaped dict, an int key JSON turns
    into a string) or is not JSON is an error for `get`, never a misleading line."""
    with pytest.raises(UnshowableValueError, match=reason):
        value_json(value)


def test_issue16_jsonl_load_reads_the_bytes_object(tmp_path: Path) -> None:
    """`shoal load` of JSON lines applies the same rule as put: bytes objects become bytes, strs stay."""
    path = tmp_path / "blobs.jsonl"
    path.write_text('{"id": "a", "raw": {"$bytes": "aGk="}, "text": "base64:aGk="}\n'
                    '{"id": "b", "raw": {"$bytes": "aGk"}}\n')
    with RecordFile.open(path, "auto", None) as source:
        records = list(source.records())
        error = source.error
    assert records == [("a", {"id": "a", "raw": b"hi", "text": "base64:aGk="})]
    assert error is not None and error.startswith(f"{path}:2: invalid JSON (") and "not standard base64" in error
