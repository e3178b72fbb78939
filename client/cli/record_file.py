"""RecordFile: (key, value) records from a JSON lines or CSV file, for `shoal load`.

Input fidelity rules (README "The `shoal` command"): a load either keeps what the user
wrote or stops at the line that it cannot keep, with "FILE:LINE: reason". Never a guess
that silently changes the data:

- JSON (lines and `shoal put`) is strict: NaN, Infinity and numbers a 64-bit float
  cannot hold (1e400, 1e-400) are errors, not inf/nan/0.0; {"$bytes": BASE64} is bytes
  (json_values.py: the one rule for values, shared with `shoal get`).
- CSV has a header row of unique, non-empty names that do not look like numbers; a file
  without one needs --no-header (columns "1", "2", ...) or --columns NAMES.
- CSV is comma-separated unless --delimiter says otherwise (.tsv: tab); a header that is
  one column but contains ; | or a tab is an error naming the --delimiter to pass.
- A CSV cell becomes an int or float only when the number is exactly what was written
  ("007", "1e400", "0.1000000000000000055" stay text); --text-columns keeps whole columns
  as text.
- A CSV cell may be as long as a value may be (field_chars_max, the client's value limit),
  not csv's default 131,072 characters, so an oversized record meets the client's or the
  node's value limit, which names its key.
- An option that names a column the file does not have (--key, --text-columns), or a
  CSV option given for a JSON lines file, is an OptionError (a usage error), never
  silently ignored.

A bad line ends the input (records() stops and keeps the error instead of raising), so
Client.put_many still delivers every record before it and the command reports the line
and the count. The file is read as bytes so progress can follow the byte offset.
"""
from __future__ import annotations

import csv
import decimal
import itertools
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from shoal.client._codec import MESSAGE_HEADROOM_BYTES
from shoal.client.cli.json_values import JsonValueError, strict_json
from shoal.client.wire.channels import MESSAGE_BYTES_MAX

_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")
_LEADING_ZERO = re.compile(r"[+-]?0\d")
FLOAT_EXACT_DIGITS = 15          # any decimal with at most 15 significant digits survives a 64-bit float
SUSPECT_DELIMITERS = (";", "\t", "|")
CSV_FIELD_CHARS_MAX = MESSAGE_BYTES_MAX - MESSAGE_HEADROOM_BYTES   # the client's value limit (ValueEncoder)
_CSV_FIELD_LIMIT_ERROR = "field larger than field limit"
RecordCheck = Callable[[str, Any, int], None]   # (key, value, line bytes): raise ValueError to stop the load
__all__ = ["JsonValueError", "OptionError", "RecordCheck", "RecordFile", "strict_json"]


class OptionError(ValueError):
    """An option that does not fit the file (a column it does not have): a usage error naming the option."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option, self.message = option, message


class _BadLine(Exception):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line, self.reason = line, reason


class RecordFile:
    """(key, value) records from a JSON lines or CSV file; stops at the first bad line.

    Keys: the `key_field` of each record; by default "id" when the first record (JSON)
    or the header (CSV) has it, else the line number. After `records()` ends, `error` is
    None or "FILE:LINE: what is wrong"; `record_line` is the line of the last record
    yielded and `key_source` says where keys came from.
    """

    def __init__(self, path: Path, handle: IO[bytes], file_format: str, key_field: str | None,
                 size_bytes: int, *, delimiter: str | None = None, columns: list[str] | None = None,
                 no_header: bool = False, text_columns: frozenset[str] = frozenset(),
                 check: RecordCheck | None = None, skip: int = 0, field_chars_max: int = CSV_FIELD_CHARS_MAX) -> None:
        assert skip >= 0, skip
        self.field_chars_max = field_chars_max
        self.skip = skip     # records (non-blank JSON lines, CSV rows) passed over unread, to resume a load
        self.path, self.format, self.key_field, self.size_bytes = path, file_format, key_field, size_bytes
        self.delimiter, self.columns, self.text_columns, self.check = delimiter, columns, text_columns, check
        self.no_header = no_header
        self._handle = handle
        self.bytes_read = 0
        self.line_no = 0
        self.record_line = 0
        self.key_source = ""
        self.error: str | None = None

    @classmethod
    def open(cls, path: Path, file_format: str, key_field: str | None, *, delimiter: str | None = None,
             columns: list[str] | None = None, no_header: bool = False,
             text_columns: frozenset[str] = frozenset(), check: RecordCheck | None = None,
             skip: int = 0) -> RecordFile:
        """Open `path`: OSError if it cannot be read, OptionError for a CSV option given for JSON lines."""
        handle = open(path, "rb")
        size_bytes = path.stat().st_size
        suffix = path.suffix.lower()
        if file_format == "auto":
            if suffix in (".jsonl", ".ndjson", ".json"):
                file_format = "jsonl"
            elif suffix in (".csv", ".tsv"):
                file_format = "csv"
            else:
                file_format = "jsonl" if handle.peek(64).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{") else "csv"
        if file_format == "jsonl":
            given = {"--delimiter": delimiter is not None, "--columns": columns is not None, "--no-header": no_header,
                     "--text-columns": bool(text_columns)}
            for option, present in given.items():
                if present:
                    handle.close()
                    raise OptionError(option, f"is for CSV files, and {path} is read as JSON lines")
        if delimiter is None and suffix == ".tsv":
            delimiter = "\t"
        return cls(path, handle, file_format, key_field, size_bytes, delimiter=delimiter, columns=columns,
                   no_header=no_header, text_columns=text_columns, check=check, skip=skip)

    def __enter__(self) -> RecordFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._handle.close()

    def records(self) -> Iterator[tuple[str, Any]]:
        try:
            records = self._jsonl() if self.format == "jsonl" else self._csv()
            if self.check is None:
                yield from records
                return
            bytes_before = self.bytes_read
            for key, value in records:
                try:
                    self.check(key, value, self.bytes_read - bytes_before)
                except ValueError as exc:
                    raise _BadLine(self.record_line, str(exc)) from None
                bytes_before = self.bytes_read
                yield key, value
        except _BadLine as exc:
            self.error = f"{self.path}:{exc.line}: {exc.reason}"

    def _lines(self) -> Iterator[str]:
        for raw in self._handle:
            self.bytes_read += len(raw)
            self.line_no += 1
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _BadLine(self.line_no, f"not UTF-8 (byte {exc.start + 1} of the line)") from None
            yield line.lstrip("\ufeff") if self.line_no == 1 else line

    def _jsonl(self) -> Iterator[tuple[str, Any]]:
        field = self.key_field
        skip = self.skip
        for line in self._lines():
            if not line.strip():
                continue
            if skip:
                skip -= 1
                continue
            try:
                value = strict_json(line)
            except JsonValueError as exc:
                raise _BadLine(self.line_no, f"invalid JSON ({exc})") from None
            if not isinstance(value, dict):
                raise _BadLine(self.line_no, f"expected a JSON object, got {type(value).__name__}")
            if field is None:
                field = "id" if "id" in value else ""
                self.key_source = f"field {field!r}" if field else "line numbers (no --key, no \"id\" field)"
            self.record_line = self.line_no
            yield (_key_of(value, field, self.line_no) if field else str(self.line_no)), value

    def _csv(self) -> Iterator[tuple[str, Any]]:
        csv.field_size_limit(self.field_chars_max)     # process-wide: one load per process
        reader = csv.reader(self._lines(), delimiter=self.delimiter or ",", strict=True)
        rows: Iterator[list[str]] = reader
        try:
            header = self.columns
            if header is not None:
                _check_names(header, 1)
            elif self.no_header:
                first = next(reader, None)
                if first is None:
                    return
                header = [str(position) for position in range(1, len(first) + 1)]
                rows = itertools.chain([first], reader)
            else:
                header = next(reader, None)
                if header is None:
                    return
                _check_header(header, reader.line_num, self.delimiter)
            _check_options(header, self.key_field, self.text_columns)
            field = self.key_field or ("id" if "id" in header else None)
            self.key_source = (f"column {field!r}" if field is not None
                               else "line numbers (no --key, no \"id\" column)")
            index = header.index(field) if field is not None else -1
            text = [name in self.text_columns for name in header]
            skip = self.skip
            for row in rows:
                if not row:
                    continue
                if skip:
                    skip -= 1
                    continue
                if len(row) != len(header):
                    raise _BadLine(reader.line_num, f"expected {len(header)} fields, got {len(row)}")
                key = row[index] if index >= 0 else str(reader.line_num)
                if not key:
                    raise _BadLine(reader.line_num, f"empty key in column {field!r}")
                self.record_line = reader.line_num
                yield key, {name: cell if keep else _number(cell) for name, cell, keep in zip(header, row, text)}
        except csv.Error as exc:
            if _CSV_FIELD_LIMIT_ERROR in str(exc):
                raise _BadLine(reader.line_num, f"a CSV field is over {self.field_chars_max} characters, longer "
                               f"than a value may be ({self.field_chars_max} bytes)") from None
            raise _BadLine(reader.line_num, f"bad CSV ({exc})") from None


def _check_options(header: list[str], key_field: str | None, text_columns: frozenset[str]) -> None:
    """--key and --text-columns name columns of the header, else OptionError listing the columns."""
    columns = f"(columns: {', '.join(header)})"
    if key_field is not None and key_field not in header:
        raise OptionError("--key", f"no column {key_field!r} {columns}")
    unknown = sorted(text_columns.difference(header))
    if unknown:
        raise OptionError("--text-columns", f"no column{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(map(repr, unknown))} {columns}")


def _check_header(header: list[str], line: int, delimiter: str | None) -> None:
    """A header must be unique, non-empty names, not data; a one-column header hints at the delimiter."""
    if delimiter is None and len(header) == 1:
        for suspect in SUSPECT_DELIMITERS:
            if suspect in header[0]:
                shown = "'\\t'" if suspect == "\t" else f"'{suspect}'"
                raise _BadLine(line, f"the header is one column that contains {shown}: pass --delimiter {shown} "
                               "(or --delimiter , to load it as one column)")
    for position, name in enumerate(header, 1):
        if _INT.fullmatch(name.strip()) or _FLOAT.fullmatch(name.strip()):
            raise _BadLine(line, f"the first row looks like data, not a header (column {position} is the number "
                           f"{name!r}): add a header row, or pass --no-header or --columns NAME,NAME,...")
    _check_names(header, line)


def _check_names(names: list[str], line: int) -> None:
    seen: dict[str, int] = {}
    for position, name in enumerate(names, 1):
        if not name.strip():
            raise _BadLine(line, f"column {position} has no name: every column needs a unique name "
                           "(or pass --columns NAME,NAME,...)")
        if name in seen:
            raise _BadLine(line, f"column {position} repeats the name {name!r} of column {seen[name]}: "
                           "column names must be unique (rename one, or pass --columns NAME,NAME,...)")
        seen[name] = position


def _key_of(record: dict[str, Any], field: str, line: int) -> str:
    if field not in record:
        raise _BadLine(line, f"no field {field!r} (the key)")
    raw = record[field]
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise _BadLine(line, f"field {field!r} must be a string or an integer to be the key, got "
                       f"{type(raw).__name__}")
    if raw == "":
        raise _BadLine(line, f"field {field!r} (the key) is empty")
    return str(raw)


def _number(cell: str) -> int | float | str:
    """CSV cells that are exactly an int or a float become one; everything else stays text."""
    if _INT.fullmatch(cell):
        if _LEADING_ZERO.match(cell):     # "007", "01234": an identifier, not a number
            return cell
        number = int(cell)
        return number if -2**63 <= number < 2**64 else cell    # msgpack's integer range
    if _FLOAT.fullmatch(cell):
        if _LEADING_ZERO.match(cell):
            return cell
        value = float(cell)
        if math.isinf(value):
            return cell
        digits = sum(char.isdigit() for char in cell.split("e")[0].split("E")[0])
        if (digits > FLOAT_EXACT_DIGITS or value == 0.0) and decimal.Decimal(cell) != decimal.Decimal(repr(value)):
            return cell                    # the float would not be the number written
        return value
    return cell
