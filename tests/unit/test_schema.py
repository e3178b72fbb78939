"""Schemas: both JSON forms, limits, encode/decode round trips, one-line errors naming the field."""
from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.node.compute import RecordError, Schema, SchemaError
from shoal.node.compute.schema import Field

FLIGHTS = Schema.from_json({"carrier": "str", "dep_delay": "float?", "cancelled": "bool", "seats": "int?",
                            "departs": "timestamp"})


def test_schema_json_forms_agree_and_round_trip() -> None:
    """The short form ("float?" = nullable) and the long form give the same schema; to_json is the long form."""
    long_form = {"fields": [{"name": "carrier", "type": "str", "nullable": False},
                            {"name": "dep_delay", "type": "float", "nullable": True},
                            {"name": "cancelled", "type": "bool"},
                            {"name": "seats", "type": "int", "nullable": True},
                            {"name": "departs", "type": "timestamp", "nullable": False}]}
    assert Schema.from_json(long_form) == FLIGHTS
    assert Schema.from_json(FLIGHTS.to_json()) == FLIGHTS
    assert FLIGHTS.to_json()["fields"][2] == {"name": "cancelled", "type": "bool", "nullable": False}
    assert FLIGHTS.names == ["carrier", "dep_delay", "cancelled", "seats", "departs"]
    assert Schema.from_json({"fields": "str"}).fields == (Field("fields", "str", False),)   # a field named "fields"


@pytest.mark.parametrize(("value", "message"), [
    ({"a": "double"}, "field 'a': unknown type 'double' (known: int, float, str, bool, timestamp)"),
    ({"a": "int??"}, "field 'a': unknown type 'int?'"),
    ({"a": 5}, "field 'a': the type must be a string"),
    ({"fields": [{"name": "a", "type": "int"}, {"name": "a", "type": "str"}]}, "field 'a': defined twice"),
    ({"fields": [{"name": "a", "type": "int", "nullable": "yes"}]}, "field 'a': nullable must be true or false"),
    ({"fields": [{"name": "a", "type": "int", "default": 1}]}, "field 'a': unknown key 'default'"),
    ({"fields": [{"type": "int"}]}, "fields[0]: needs a name and a type"),
    ({"fields": ["a"]}, "fields[0]: expected an object with name and type, got str"),
    ({"": "int"}, "field names are strings of 1 to 128 characters, got ''"),
    ({"x" * 129: "int"}, "field names are strings of 1 to 128 characters"),
    ({f"f{i}": "int" for i in range(1025)}, "a schema has at most 1024 fields, got 1025"),
    ({}, "a schema needs at least one field"),
    ([["a", "int"]], "a schema is a JSON object, got list"),
])
def test_schema_errors_are_one_line_naming_the_field(value: Any, message: str) -> None:
    """A bad definition is a SchemaError whose single-line message names the field."""
    with pytest.raises(SchemaError) as caught:
        Schema.from_json(value)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_schema_allows_the_limits_exactly() -> None:
    """1,024 fields and 128-character names are fine."""
    assert len(Schema.from_json({f"f{i}": "int" for i in range(1024)}).fields) == 1024
    assert Schema.from_json({"x" * 128: "str"}).names == ["x" * 128]


def flight(**fields: Any) -> dict[str, Any]:
    """A valid flight document with some fields replaced (_ABSENT removes one)."""
    document: dict[str, Any] = {"carrier": "AA", "cancelled": False, "departs": 0}
    document.update(fields)
    return {name: value for name, value in document.items() if value is not _ABSENT}


_ABSENT = object()


@pytest.mark.parametrize(("document", "message"), [
    (flight(dep_delay="abc"), "field 'dep_delay': expected float or null, got str 'abc'"),
    (flight(carrier=_ABSENT), "field 'carrier': expected str, got missing"),
    (flight(carrier=None), "field 'carrier': expected str, got null"),
    (flight(cancelled=1), "field 'cancelled': expected bool, got int 1"),
    (flight(seats=True), "field 'seats': expected int or null, got bool True"),
    (flight(seats=2.0), "field 'seats': expected int or null, got float 2.0"),
    (flight(seats=2 ** 64), "field 'seats': expected int or null, got int"),
    (flight(dep_delay=True), "field 'dep_delay': expected float or null, got bool"),
    (flight(dep_delay=10 ** 400), "field 'dep_delay': expected float or null"),
    (flight(departs="yesterday"), "field 'departs': expected timestamp, got str 'yesterday'"),
    (flight(departs=1.5), "field 'departs': expected timestamp, got float 1.5"),
    (flight(departs=10 ** 15), "field 'departs': expected timestamp, got int"),
    (flight(gate="B2"), "field 'gate' is not in the schema"),
    (["AA"], "expected a document (a map of field names to values), got list"),
])
def test_schema_encode_errors_name_field_expected_and_got(document: Any, message: str) -> None:
    """A value that does not fit is a one-line RecordError naming the field, what was expected and got."""
    with pytest.raises(RecordError) as caught:
        FLIGHTS.encode(document)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_schema_encode_converts_and_decode_inverts() -> None:
    """int -> float for float fields, missing nullable -> None, timestamps -> int epoch ms (UTC)
    and back as ISO-8601 with milliseconds and a Z."""
    record = FLIGHTS.encode({"carrier": "AA", "dep_delay": 3, "cancelled": False,
                             "departs": "2024-05-01T12:00:00.5+02:00"})
    assert record == ["AA", 3.0, False, None, 1_714_557_600_500]
    assert type(record[1]) is float
    assert FLIGHTS.decode(record) == {"carrier": "AA", "dep_delay": 3.0, "cancelled": False, "seats": None,
                                      "departs": "2024-05-01T10:00:00.500Z"}
    assert FLIGHTS.encode(FLIGHTS.decode(record)) == record
    assert FLIGHTS.encode(flight(departs="1970-01-01T00:00:01"))[4] == 1000           # no zone: UTC
    assert FLIGHTS.encode(flight(departs="1969-12-31T23:59:59.9995Z"))[4] == -1       # toward the past
    assert FLIGHTS.encode(flight(departs=-5))[4] == -5
    with pytest.raises(RecordError, match="expected a list of 5 values, got a list of 2"):
        FLIGHTS.decode(["AA", 1.0])
    with pytest.raises(RecordError, match="expected a list of 5 values, got dict"):
        FLIGHTS.decode({"carrier": "AA"})


_documents = st.fixed_dictionaries(
    {"carrier": st.text(max_size=5), "cancelled": st.booleans(),
     "departs": st.integers(-62_135_596_800_000, 253_402_300_799_999)},
    optional={"dep_delay": st.one_of(st.none(), st.floats(allow_nan=False), st.integers(-10 ** 6, 10 ** 6)),
              "seats": st.one_of(st.none(), st.integers(-(2 ** 63), 2 ** 64 - 1))})


@settings(max_examples=200, deadline=None, derandomize=True)
@given(document=_documents)
def test_schema_round_trip(document: dict[str, Any]) -> None:
    """decode(encode(d)) is d with every field present, ints in float fields as floats and timestamps
    as ISO strings; encoding that again gives the same record."""
    record = FLIGHTS.encode(document)
    decoded = FLIGHTS.decode(record)
    assert set(decoded) == set(FLIGHTS.names)
    assert decoded["carrier"] == document["carrier"] and decoded["seats"] == document.get("seats")
    delay = document.get("dep_delay")
    assert decoded["dep_delay"] == (None if delay is None else float(delay))
    assert decoded["departs"].endswith("Z")
    assert FLIGHTS.encode(decoded) == record
