"""The demo's jobs over the flights: each a Shoal query and the same computation in pandas.

A job (`FlightJob`) has a `title`, its output `columns` (the `keys` that identify a row first),
`queries(client, dataset)` (the Shoal queries, usually one, from `build`), `combine(results)`
(their results -> rows) and `reference(frame)` (the same rows computed by pandas from
`flights.read_pandas()`). Rows are `list[dict[str, object]]` with plain Python values (int,
float, str, None), in the same order on both sides: the order each job documents.

Jobs (`JOBS`):
- carriers: per carrier, flights, mean arr_delay (nulls skipped, as pandas) and total distance.
- routes: the ten busiest (origin, dest) by flights, ties by origin then dest; mean air_time.
- late: per origin and month, flights, arrived (non-null arr_delay), late (arr_delay > 60) and
  late_share = late / arrived. The query language has no `if` and sum over bools is not
  specified, so this is two queries (all flights; flights with `arr_delay > 60`) joined here.
- fleet: per carrier, distinct tailnums and distinct destinations (count_distinct: nulls
  skipped, as pandas' nunique).

`compare()` is the "exact" rule; `print_result()` shows a job's rows beside pandas' with rich.
The client query API (`Client.query(dataset) -> Query`) is used through the `QueryClient`
protocol below, so this module needs neither a cluster nor pandas to import.
"""
from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    import pandas  # type: ignore[import-untyped, unused-ignore]  # no stubs without pandas-stubs
    from rich.console import Console

Row = dict[str, Any]

FLOAT_REL_TOL = 1e-12    # floats "match" within this relative tolerance; see compare()
SHOWN_ROWS_MAX = 16      # print_result shows at most this many rows (all 16 carriers)


class Query(Protocol):
    """What the jobs use of `shoal.client`'s Query builder (each method returns a new Query).

    Repeated `order_by` calls add sort keys, the first call being the primary key.
    """

    def where(self, expression: str, /) -> Query: ...
    def group_by(self, *expressions: str) -> Query: ...
    def agg(self, **aggregates: tuple[str, str | None]) -> Query: ...
    def order_by(self, expression: str, /, *, descending: bool = False) -> Query: ...
    def limit(self, count: int, /) -> Query: ...
    def collect(self, timeout: float | None = None) -> list[Row]: ...


class QueryClient(Protocol):
    def query(self, dataset: str, /) -> Query: ...


class FlightJob(abc.ABC):
    """One demo job; subclasses set the class attributes and implement build and reference."""

    name: str                    # short id, e.g. "carriers"
    title: str                   # one line shown above the result
    keys: tuple[str, ...]        # the columns identifying a row (group keys)
    columns: tuple[str, ...]     # every output column in order, keys first

    @abc.abstractmethod
    def build(self, client: QueryClient, dataset: str) -> Query:
        """The (main) Shoal query of the job."""

    @abc.abstractmethod
    def reference(self, frame: pandas.DataFrame) -> list[Row]:
        """The same rows, in the same order, computed by pandas from `flights.read_pandas()`."""

    def queries(self, client: QueryClient, dataset: str) -> list[Query]:
        """Every query the job runs; `combine` gets their results in this order."""
        return [self.build(client, dataset)]

    def combine(self, results: Sequence[list[Row]]) -> list[Row]:
        """The job's rows from the results of `queries` (the one result by default)."""
        assert len(results) == 1, results
        return results[0]

    def run(self, client: QueryClient, dataset: str, timeout_s: float | None = None) -> list[Row]:
        """Run the queries on the cluster (one after the other) and combine their results."""
        return self.combine([query.collect(timeout=timeout_s) for query in self.queries(client, dataset)])


class CarrierDelays(FlightJob):
    """Per carrier: flights, mean arr_delay in minutes (nulls skipped), total distance in miles.

    Rows sorted by carrier.
    """

    name = "carriers"
    title = "flights, mean arrival delay and total distance per carrier"
    keys = ("carrier",)
    columns = ("carrier", "flights", "mean_arr_delay_min", "total_distance_mi")

    def build(self, client: QueryClient, dataset: str) -> Query:
        return (client.query(dataset).group_by("carrier")
                .agg(flights=("count", None), mean_arr_delay_min=("mean", "arr_delay"),
                     total_distance_mi=("sum", "distance"))
                .order_by("carrier"))

    def reference(self, frame: pandas.DataFrame) -> list[Row]:
        grouped = frame.groupby("carrier", sort=True).agg(
            flights=("carrier", "size"), mean_arr_delay_min=("arr_delay", "mean"),
            total_distance_mi=("distance", "sum"))
        return _records(grouped.reset_index(), self.columns)


class BusiestRoutes(FlightJob):
    """The ten (origin, dest) with the most flights, ties by origin then dest; mean air_time."""

    name = "routes"
    title = "the ten busiest routes"
    keys = ("origin", "dest")
    columns = ("origin", "dest", "flights", "mean_air_time_min")
    top = 10

    def build(self, client: QueryClient, dataset: str) -> Query:
        return (client.query(dataset).group_by("origin", "dest")
                .agg(flights=("count", None), mean_air_time_min=("mean", "air_time"))
                .order_by("flights", descending=True).order_by("origin").order_by("dest")
                .limit(self.top))

    def reference(self, frame: pandas.DataFrame) -> list[Row]:
        grouped = frame.groupby(["origin", "dest"], sort=True).agg(
            flights=("origin", "size"), mean_air_time_min=("air_time", "mean")).reset_index()
        ranked = grouped.sort_values(["flights", "origin", "dest"], ascending=[False, True, True],
                                     kind="stable")
        return _records(ranked.head(self.top), self.columns)


class LateShare(FlightJob):
    """Per origin and month: flights, arrived, late and late_share; rows sorted by origin, month.

    arrived = flights with a non-null arr_delay (the others were cancelled or diverted);
    late = flights with arr_delay > 60 minutes (so late <= arrived);
    late_share = late / arrived, None when arrived is 0.
    Two queries (the language has no `if`, and sum over bools is unspecified): one groups every
    flight, one only `arr_delay > 60`; a group absent from the second has late = 0.
    """

    name = "late"
    title = "share of flights more than an hour late, per origin and month"
    keys = ("origin", "month")
    columns = ("origin", "month", "flights", "arrived", "late", "late_share")

    def build(self, client: QueryClient, dataset: str) -> Query:
        return (client.query(dataset).group_by("origin", "month")
                .agg(flights=("count", None), arrived=("count", "arr_delay"))
                .order_by("origin").order_by("month"))

    def build_late(self, client: QueryClient, dataset: str) -> Query:
        return (client.query(dataset).where("arr_delay > 60").group_by("origin", "month")
                .agg(late=("count", None)))

    def queries(self, client: QueryClient, dataset: str) -> list[Query]:
        return [self.build(client, dataset), self.build_late(client, dataset)]

    def combine(self, results: Sequence[list[Row]]) -> list[Row]:
        totals, lates = results
        late_of = {(row["origin"], row["month"]): row["late"] for row in lates}
        rows = []
        for row in totals:
            late = late_of.get((row["origin"], row["month"]), 0)
            rows.append({"origin": row["origin"], "month": row["month"], "flights": row["flights"],
                         "arrived": row["arrived"], "late": late,
                         "late_share": late / row["arrived"] if row["arrived"] else None})
        return rows

    def reference(self, frame: pandas.DataFrame) -> list[Row]:
        # NaN > 60 is False in pandas, so `late` counts only known delays over an hour.
        flagged = frame.assign(late=frame["arr_delay"] > 60)
        grouped = flagged.groupby(["origin", "month"], sort=True).agg(
            flights=("origin", "size"), arrived=("arr_delay", "count"), late=("late", "sum"))
        grouped["late_share"] = grouped["late"] / grouped["arrived"]   # NaN (-> None) for 0/0
        return _records(grouped.reset_index(), self.columns)


class CarrierFleet(FlightJob):
    """Per carrier: distinct tailnums (planes) and distinct destinations; sorted by carrier."""

    name = "fleet"
    title = "planes and destinations per carrier (count_distinct)"
    keys = ("carrier",)
    columns = ("carrier", "planes", "destinations")

    def build(self, client: QueryClient, dataset: str) -> Query:
        return (client.query(dataset).group_by("carrier")
                .agg(planes=("count_distinct", "tailnum"), destinations=("count_distinct", "dest"))
                .order_by("carrier"))

    def reference(self, frame: pandas.DataFrame) -> list[Row]:
        grouped = frame.groupby("carrier", sort=True).agg(
            planes=("tailnum", "nunique"), destinations=("dest", "nunique"))
        return _records(grouped.reset_index(), self.columns)


JOBS: tuple[FlightJob, ...] = (CarrierDelays(), BusiestRoutes(), LateShare(), CarrierFleet())


def compare(shoal_rows: Sequence[Row], pandas_rows: Sequence[Row],
            keys: Sequence[str] = ()) -> tuple[bool, str]:
    """Whether two results match exactly, and a one-line detail (the first difference if not).

    Rows are compared in order. Exact means: the same number of rows with the same columns;
    null (None or NaN) only where the other is null; str, bool and int values equal; an int
    against a float equal as numbers (pandas holds int columns with NA as float64: 2 == 2.0);
    float against float equal within math.isclose(rel_tol=FLOAT_REL_TOL, abs_tol=0). Why a
    tolerance: Shoal sums floats exactly (Shewchuk partials, correctly rounded) while pandas
    sums float64 with pairwise or Kahan summation, which may differ in the last bits; 1e-12 is
    far above that noise and far below any real error. The detail says which applied.
    `keys` (the group key columns) name the row in the detail and find a missing group.
    """
    if len(shoal_rows) != len(pandas_rows):
        return False, f"{len(shoal_rows)} rows from shoal, {len(pandas_rows)} from pandas" + \
            _missing_group(shoal_rows, pandas_rows, keys)
    largest_rel_diff = 0.0
    float_count = 0
    for index, (ours, theirs) in enumerate(zip(shoal_rows, pandas_rows)):
        if set(ours) != set(theirs):
            return False, (f"row {index}: columns differ: shoal {sorted(ours)}, pandas {sorted(theirs)}")
        for column, value in ours.items():
            equal, rel_diff = _values_match(value, theirs[column])
            if not equal:
                return False, (f"row {index}{_row_label(ours, keys)}: {column} is {value!r} in shoal, "
                               f"{theirs[column]!r} in pandas")
            if rel_diff is not None:
                float_count += 1
                largest_rel_diff = max(largest_rel_diff, rel_diff)
    if not float_count:
        floats = "no float values"
    elif largest_rel_diff == 0.0:
        floats = f"{float_count} floats bit-identical (tolerance rel_tol {FLOAT_REL_TOL:g})"
    else:
        floats = (f"{float_count} floats within rel_tol {FLOAT_REL_TOL:g} "
                  f"(largest relative difference {largest_rel_diff:.1e})")
    return True, f"{len(shoal_rows)} rows, ints and strings identical, {floats}"


def print_result(console: Console, job: FlightJob, shoal_rows: Sequence[Row],
                 pandas_rows: Sequence[Row], seconds: float) -> bool:
    """Print the job's rows (at most SHOWN_ROWS_MAX) with pandas' value beside each value column,
    then "exact: yes" or "exact: NO (first difference)". Returns whether they match.
    """
    table = Table(title=f"{job.title}  [dim]({seconds:.2f} s on the cluster)[/dim]",
                  title_justify="left")
    for column in job.columns:
        table.add_column(column, justify="left" if column in job.keys else "right")
        if column not in job.keys:
            table.add_column("pandas", justify="right", style="dim")
    for index, row in enumerate(shoal_rows[:SHOWN_ROWS_MAX]):
        theirs = pandas_rows[index] if index < len(pandas_rows) else {}
        cells = []
        for column in job.columns:
            cells.append(_format(row.get(column)))
            if column not in job.keys:
                cells.append(_format(theirs.get(column)) if theirs else "")
        table.add_row(*cells)
    if len(shoal_rows) > SHOWN_ROWS_MAX:
        table.caption = f"first {SHOWN_ROWS_MAX} of {len(shoal_rows)} rows"
    console.print(table)
    exact, detail = compare(shoal_rows, pandas_rows, job.keys)
    if exact:
        console.print(f"exact: [bold green]yes[/bold green] [dim]({escape(detail)})[/dim]")
    else:
        console.print(f"exact: [bold red]NO[/bold red] ({escape(detail)})")
    return exact


def _records(frame: pandas.DataFrame, columns: Sequence[str]) -> list[Row]:
    """Rows of `frame` as dicts of plain Python values (int, float, str), NaN and NA -> None."""
    import pandas  # type: ignore[import-untyped, unused-ignore]  # no stubs without pandas-stubs

    def plain(value: Any) -> Any:
        if pandas.isna(value):
            return None
        return value.item() if hasattr(value, "item") else value   # a numpy scalar -> Python

    return [{column: plain(record[column]) for column in columns}
            for record in frame[list(columns)].to_dict("records")]


def _values_match(ours: Any, theirs: Any) -> tuple[bool, float | None]:
    """(equal, relative difference when both are floats) under compare()'s rule."""
    ours_null, theirs_null = _is_null(ours), _is_null(theirs)
    if ours_null or theirs_null:
        return ours_null and theirs_null, None
    if isinstance(ours, bool) or isinstance(theirs, bool):
        return type(ours) is type(theirs) and ours == theirs, None
    numbers = (int, float)
    if isinstance(ours, numbers) and isinstance(theirs, numbers):
        if isinstance(ours, float) and isinstance(theirs, float):
            if ours == theirs:
                return True, 0.0
            rel_diff = abs(ours - theirs) / max(abs(ours), abs(theirs))
            return math.isclose(ours, theirs, rel_tol=FLOAT_REL_TOL, abs_tol=0.0), rel_diff
        return ours == theirs, None        # int against int or float: exact numeric equality
    return type(ours) is type(theirs) and ours == theirs, None


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _row_label(row: Row, keys: Sequence[str]) -> str:
    if not keys:
        return ""
    return " (" + ", ".join(f"{key}={row.get(key)!r}" for key in keys) + ")"


def _missing_group(shoal_rows: Sequence[Row], pandas_rows: Sequence[Row], keys: Sequence[str]) -> str:
    if not keys:
        return ""
    ours = {tuple(row.get(key) for key in keys) for row in shoal_rows}
    theirs = {tuple(row.get(key) for key in keys) for row in pandas_rows}
    for side, missing in (("shoal", sorted(theirs - ours, key=repr)), ("pandas", sorted(ours - theirs, key=repr))):
        if missing:
            return f"; {side} has no row " + ", ".join(f"{key}={value!r}" for key, value in zip(keys, missing[0]))
    return ""


def _format(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "[dim]null[/dim]"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.6g}"
    return escape(str(value))
