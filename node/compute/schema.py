"""Typed dataset schemas: documents (dicts) <-> positional records (lists in field order).

A schema is a list of fields, each with a name, one of FIELD_TYPES and a nullable flag.
JSON forms (Schema.from_json accepts both; to_json writes the long one)::

    {"fields": [{"name": "carrier", "type": "str", "nullable": false}, ...]}   # long
    {"carrier": "str", "arr_delay": "float?"}                                  # short: "?" = nullable

encode(document) checks a dict against the schema and returns the positional list stored in
place of the document: a missing or None value is null (RecordError unless nullable); an
int is accepted for a float field and stored as float; bool is not an int; a timestamp is an
ISO-8601 string (a zone offset or Z; no zone means UTC) or an int of epoch milliseconds,
stored as int epoch ms (UTC, sub-millisecond digits dropped toward the past); fields that are
not in the schema are a RecordError. decode() is the inverse, with timestamps as ISO-8601
strings with milliseconds and a Z ("2024-05-01T12:00:00.000Z").

Errors are one line naming the field: SchemaError for a bad definition ("field 'x': unknown type
'double' (...)"), RecordError for a value ("field 'dep_delay': expected float or null, got str
'abc'"). Limits: FIELDS_MAX fields, names of 1..FIELD_NAME_CHARS_MAX characters, no duplicates.
"""
from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Mapping
from typing import Any

FIELD_TYPES = ("int", "float", "str", "bool", "timestamp")
FIELDS_MAX = 1_024
FIELD_NAME_CHARS_MAX = 128
_INT_MIN, _INT_MAX = -(2 ** 63), 2 ** 64 - 1            # what msgpack can store
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_MILLISECOND = datetime.timedelta(milliseconds=1)
_TIMESTAMP_MS_MIN = (datetime.datetime(1, 1, 1, tzinfo=datetime.timezone.utc) - _EPOCH) // _MILLISECOND
_TIMESTAMP_MS_MAX = (datetime.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=datetime.timezone.utc)
                     - _EPOCH) // _MILLISECOND
_SHOWN_CHARS_MAX = 40


class SchemaError(ValueError):
    """A bad schema definition; the message is one line naming the field."""


class RecordError(ValueError):
    """A document that does not fit its schema; the message names the field, what was expected and got."""


@dataclasses.dataclass(frozen=True, slots=True)
class Field:
    name: str
    type: str          # one of FIELD_TYPES
    nullable: bool


@dataclasses.dataclass(frozen=True)
class Schema:
    """The fields of a dataset, in storage order."""

    fields: tuple[Field, ...]

    def __post_init__(self) -> None:
        if not self.fields:
            raise SchemaError("a schema needs at least one field")
        if len(self.fields) > FIELDS_MAX:
            raise SchemaError(f"a schema has at most {FIELDS_MAX} fields, got {len(self.fields)}")
        seen: set[str] = set()
        for field in self.fields:
            if not isinstance(field.name, str) or not 1 <= len(field.name) <= FIELD_NAME_CHARS_MAX:
                raise SchemaError(f"field names are strings of 1 to {FIELD_NAME_CHARS_MAX} characters, "
                                  f"got {_show(field.name)}")
            if field.name in seen:
                raise SchemaError(f"field {field.name!r}: defined twice")
            seen.add(field.name)
            if field.type not in FIELD_TYPES:
                raise SchemaError(f"field {field.name!r}: unknown type {_show(field.type)} "
                                  f"(known: {', '.join(FIELD_TYPES)})")
            if type(field.nullable) is not bool:
                raise SchemaError(f"field {field.name!r}: nullable must be true or false, got {_show(field.nullable)}")
        checkers = [(field.name, _CHECKERS[field.type], field.nullable, field.type) for field in self.fields]
        object.__setattr__(self, "_checkers", checkers)
        object.__setattr__(self, "_names", frozenset(seen))

    @classmethod
    def from_json(cls, value: object) -> Schema:
        """A schema from its long or short JSON form (module docstring). Raises SchemaError."""
        if not isinstance(value, Mapping):
            raise SchemaError(f"a schema is a JSON object, got {type(value).__name__}")
        if set(value) == {"fields"} and isinstance(value["fields"], list):
            return cls(tuple(_long_field(entry, index) for index, entry in enumerate(value["fields"])))
        fields = []
        for name, kind in value.items():
            if not isinstance(kind, str):
                raise SchemaError(f"field {_show(name)}: the type must be a string like \"float\" or "
                                  f"\"float?\", got {_show(kind)}")
            nullable = kind.endswith("?")
            fields.append(Field(name, kind[:-1] if nullable else kind, nullable))
        return cls(tuple(fields))

    def to_json(self) -> dict[str, Any]:
        """The long JSON form."""
        return {"fields": [{"name": f.name, "type": f.type, "nullable": f.nullable} for f in self.fields]}

    @property
    def names(self) -> list[str]:
        """Field names in storage order (what compile_query takes as `fields`)."""
        return [field.name for field in self.fields]

    def encode(self, document: object) -> list[Any]:
        """A document as its positional record. Raises RecordError naming the first bad field."""
        if not isinstance(document, dict):
            raise RecordError(f"expected a document (a map of field names to values), got {type(document).__name__}")
        names: frozenset[str] = getattr(self, "_names")
        for name in document:
            if name not in names:
                raise RecordError(f"field {_show(name)} is not in the schema")
        record: list[Any] = []
        for name, check, nullable, kind in getattr(self, "_checkers"):
            value = document.get(name)
            if value is None:
                if not nullable:
                    got = "missing" if name not in document else "null"
                    raise RecordError(f"field {name!r}: expected {kind}, got {got}")
                record.append(None)
                continue
            try:
                record.append(check(value))
            except (TypeError, ValueError, OverflowError):
                expected = f"{kind} or null" if nullable else kind
                raise RecordError(f"field {name!r}: expected {expected}, got {type(value).__name__} "
                                  f"{_show(value)}") from None
        return record

    def decode(self, values: object) -> dict[str, Any]:
        """A positional record as its document (timestamps as ISO-8601 strings). RecordError if misshapen."""
        if not isinstance(values, list) or len(values) != len(self.fields):
            shape = f"a list of {len(values)}" if isinstance(values, list) else type(values).__name__
            raise RecordError(f"expected a list of {len(self.fields)} values, got {shape}")
        document: dict[str, Any] = {}
        for field, value in zip(self.fields, values):
            if field.type == "timestamp" and value is not None:
                value = format_timestamp(value)
            document[field.name] = value
        return document


def format_timestamp(epoch_ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC with milliseconds and a Z."""
    moment = _EPOCH + epoch_ms * _MILLISECOND
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_timestamp(value: object) -> int:
    """An ISO-8601 string or int epoch ms as int epoch ms (UTC). ValueError/TypeError if neither."""
    if type(value) is int:
        epoch_ms = value
    elif isinstance(value, str):
        moment = datetime.datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
        epoch_ms = (moment - _EPOCH) // _MILLISECOND
    else:
        raise TypeError("a timestamp is an ISO-8601 string or int epoch ms")
    if not _TIMESTAMP_MS_MIN <= epoch_ms <= _TIMESTAMP_MS_MAX:
        raise ValueError("timestamp outside years 1-9999")
    return epoch_ms


def _int(value: object) -> int:
    if type(value) is not int or not _INT_MIN <= value <= _INT_MAX:
        raise TypeError("not an int in msgpack's range")
    return value


def _float(value: object) -> float:
    if type(value) is float:
        return value
    if type(value) is int:
        return float(value)        # OverflowError past the float range
    raise TypeError("not a number")


def _exact(kind: type) -> Callable[[object], Any]:
    def check(value: object) -> Any:
        if type(value) is not kind:
            raise TypeError(kind.__name__)
        return value
    return check


_CHECKERS: dict[str, Callable[[object], Any]] = {
    "int": _int, "float": _float, "str": _exact(str), "bool": _exact(bool), "timestamp": parse_timestamp,
}


def _long_field(entry: object, index: int) -> Field:
    if not isinstance(entry, Mapping):
        raise SchemaError(f"fields[{index}]: expected an object with name and type, got {type(entry).__name__}")
    name = entry.get("name")
    label = f"field {_show(name)}" if isinstance(name, str) else f"fields[{index}]"
    for key in entry:
        if key not in ("name", "type", "nullable"):
            raise SchemaError(f"{label}: unknown key {_show(key)} (known: name, type, nullable)")
    if "name" not in entry or "type" not in entry:
        raise SchemaError(f"{label}: needs a name and a type")
    return Field(entry["name"], entry["type"], entry.get("nullable", False))


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS_MAX else text[:_SHOWN_CHARS_MAX] + "..."
