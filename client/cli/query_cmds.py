"""`shoal query` and `shoal job ls|watch|cancel`: pushed-down queries from the shell.

    shoal query flights --where "dep_delay > 60" --group-by carrier \\
        --agg "n=count()" --agg "delay=mean(arr_delay)" --order-by n:desc --limit 5

`--agg NAME=FUNC(FIELD)` with FUNC in count, sum, min, max, mean, count_distinct
(`count()` counts rows). A progress bar (tasks done, records scanned, rate) runs on
stderr while the job runs; the result is a table, or with `--json` a JSON array of row
objects on stdout (DESIGN.md section 9), by the rule of `shoal get` (json_values.py:
bytes as {"$bytes": ...}; NaN, a non-str key or a {"$bytes"} lookalike is an error naming
the row and column, never invalid or lossy JSON). Ctrl-C detaches and prints the job id
(the job keeps running: `shoal job watch ID`, `shoal job cancel ID`).

A malformed --agg, --with-column or --order-by is a usage error (exit 2), found by the
option's callback before anything is sent.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shoal.client import Job, JobProgress, Query
from shoal.client._query import AGGREGATES
from shoal.client.cli._common import INT64_MAX, check_dataset_name, command_errors, connect, console, fail
from shoal.client.cli.json_values import UnshowableValueError, rows_json

job_app = typer.Typer(help="List, watch and cancel compute jobs.", no_args_is_help=True)
_AGG = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*([a-z_]+)\s*\((.*)\)\s*")
ORDER_DIRECTIONS = ("asc", "desc")
_QUOTES = "`'\""
ROWS_SHOWN_MAX = 100


def register(app: typer.Typer) -> None:
    app.command("query")(command_errors(query))
    app.add_typer(job_app, name="job")


def parse_agg(text: str) -> tuple[str, tuple[str, str | None]]:
    """"n=count()" -> ("n", ("count", None)); "d=mean(arr_delay)" -> ("d", ("mean", "arr_delay"))."""
    found = _AGG.fullmatch(text)
    if found is None or found.group(2) not in AGGREGATES:
        raise typer.BadParameter(f"{text!r}: expected NAME=FUNC(FIELD) with FUNC in {', '.join(AGGREGATES)}, e.g. "
                                 "n=count() or delay=mean(arr_delay)")
    name, function, argument = found.groups()
    return name, (function, argument.strip() or None)


def parse_with_column(text: str) -> tuple[str, str]:
    """"speed=distance / air_time" -> ("speed", "distance / air_time")."""
    name, sep, expression = text.partition("=")
    if not sep or not name.strip() or not expression.strip():
        raise typer.BadParameter(f"{text!r}: expected NAME=EXPR, e.g. speed=distance / air_time")
    return name.strip(), expression


def parse_order_by(text: str) -> tuple[str, bool]:
    """"n" -> ("n", False); "n:desc" -> ("n", True); "n:asc" -> ("n", False). A ':' inside quotes
    (`` `odd:name` ``) is part of the field."""
    head, sep, tail = text.rpartition(":")
    if not sep or any(head.count(quote) % 2 for quote in _QUOTES):
        return text, False
    if tail.strip().lower() not in ORDER_DIRECTIONS or not head.strip():
        raise typer.BadParameter(f"{text!r}: expected FIELD, FIELD:desc or FIELD:asc")
    return head, tail.strip().lower() == "desc"


def _each(parse: Callable[[str], object]) -> Callable[[list[str] | None], list[str] | None]:
    """An option callback: every value of a repeatable option parses, else a usage error (exit 2)."""
    def check(values: list[str] | None) -> list[str] | None:
        for value in values or []:
            parse(value)
        return values
    return check


def build(base: Query, where: str | None, with_columns: list[str], select: list[str], group_by: list[str],
          aggs: list[str], distinct: bool, order_by: list[str], limit: int | None) -> Query:
    q = base.where(where) if where else base
    for item in with_columns:
        q = q.with_column(*parse_with_column(item))
    if select:
        q = q.select(*select)
    if group_by:
        q = q.group_by(*group_by)
    if aggs:
        q = q.agg(**dict(parse_agg(a) for a in aggs))
    if distinct:
        q = q.distinct()
    for item in order_by:
        field, descending = parse_order_by(item)
        q = q.order_by(field, descending=descending)
    return q.limit(limit) if limit is not None else q


def query(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="Dataset to query.", callback=check_dataset_name)],
    where: Annotated[str | None, typer.Option("--where", metavar="EXPR", help="Filter, e.g. \"dep_delay > 60\".")]
    = None,
    with_column: Annotated[list[str] | None, typer.Option("--with-column", metavar="NAME=EXPR",
                                                          callback=_each(parse_with_column),
                                                          help="Computed column (repeatable).")] = None,
    select: Annotated[list[str] | None, typer.Option("--select", metavar="EXPR", help="Output column (repeatable).")]
    = None,
    group_by: Annotated[list[str] | None, typer.Option("--group-by", metavar="FIELD", help="Group key (repeatable).")]
    = None,
    agg: Annotated[list[str] | None, typer.Option("--agg", metavar="NAME=FUNC(FIELD)", callback=_each(parse_agg),
                                                  help="Aggregate (repeatable): count, sum, min, max, mean, "
                                                       "count_distinct.")] = None,
    distinct: Annotated[bool, typer.Option("--distinct", help="Distinct result rows.")] = False,
    order_by: Annotated[list[str] | None, typer.Option("--order-by", metavar="FIELD[:desc]",
                                                       callback=_each(parse_order_by),
                                                       help="Sort key (repeatable): FIELD, FIELD:desc or "
                                                            "FIELD:asc.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=0, max=INT64_MAX, help="At most this many rows.")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array of row objects.")] = False,
) -> None:
    """Run a query on the nodes that hold DATASET and print the result."""
    with connect(ctx) as client:
        q = build(client.query(dataset), where, with_column or [], select or [], group_by or [], agg or [],
                  distinct, order_by or [], limit)
        job = q.submit()
        try:
            _follow(job)
        except KeyboardInterrupt:
            fail(f"detached; job {job.id} keeps running (shoal job watch {job.id}, shoal job cancel {job.id})",
                 code=130)
        rows = job.result()
    show_rows(rows, job.columns, as_json)


def _follow(job: Job) -> JobProgress:
    """Show a progress bar on stderr until the job finished; the last progress."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("tasks  {task.fields[records]:,} records  {task.fields[rate]:,.0f} rec/s"),
                  TimeElapsedColumn(), console=console(stderr=True), transient=True) as bar:
        progress = job.progress()
        task = bar.add_task(f"job {job.id[:8]}", total=progress.tasks_total, records=0, rate=0.0)
        while True:
            bar.update(task, completed=progress.tasks_done, records=progress.records_scanned,
                       rate=progress.records_per_s)
            if progress.finished:
                return progress
            progress = job.wait(timeout=0.5)


def show_rows(rows: list[dict[str, Any]], columns: list[str], as_json: bool) -> None:
    """The result rows as a table, or as a JSON array by `shoal get`'s rule (an error if a value has no
    faithful JSON form)."""
    if not as_json:
        print_rows(rows, columns)
        return
    try:
        text = rows_json(rows)
    except UnshowableValueError as exc:
        fail(f"cannot print the result as JSON: {exc} (the table output, without --json, shows it)")
    typer.echo(text)


def print_rows(rows: list[dict[str, Any]], columns: list[str]) -> None:
    out = console()
    if not rows:
        out.print("(no rows)")
        return
    names = columns or list(dict.fromkeys(k for row in rows for k in row))
    table = Table(*names)
    for row in rows[:ROWS_SHOWN_MAX]:
        table.add_row(*(_cell(row.get(name)) for name in names))
    out.print(table)
    if len(rows) > ROWS_SHOWN_MAX:
        out.print(f"... {len(rows) - ROWS_SHOWN_MAX} more rows (use --json or --limit)")


def _cell(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


@job_app.command("ls")
@command_errors
def job_ls(ctx: typer.Context,
           as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False) -> None:
    """Running and recent jobs."""
    with connect(ctx) as client:
        jobs = client.jobs()
    if as_json:
        typer.echo(json.dumps([_progress_dict(p) for p in jobs]))
        return
    table = Table("job", "dataset", "kind", "state", "tasks", "records", "seconds", "error")
    for p in jobs:
        table.add_row(p.job_id, p.dataset, p.kind, p.state, f"{p.tasks_done}/{p.tasks_total}",
                      f"{p.records_scanned:,}", f"{p.elapsed_s:.2f}", p.error[:60])
    console().print(table)


@job_app.command("watch")
@command_errors
def job_watch(ctx: typer.Context, job_id: Annotated[str, typer.Argument(help="Job id (shoal job ls).")],
              as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array of row objects.")]
              = False) -> None:
    """Follow a job until it finishes, then print its result."""
    with connect(ctx) as client:
        job = client.job(job_id)
        progress = _follow(job)
        if progress.state != "done":
            fail(f"job {job_id} {progress.state}: {progress.error}")
        show_rows(job.result(), job.columns, as_json)


@job_app.command("cancel")
@command_errors
def job_cancel(ctx: typer.Context, job_id: Annotated[str, typer.Argument(help="Job id (shoal job ls).")]) -> None:
    """Cancel a running job (a finished one stays as it is)."""
    with connect(ctx) as client:
        progress = Job(client, job_id).cancel()    # one call: an unknown id fails as "cancel job failed: ..."
    typer.echo(f"job {job_id}: {progress.state}")


def _progress_dict(p: JobProgress) -> dict[str, Any]:
    return {"job_id": p.job_id, "dataset": p.dataset, "kind": p.kind, "state": p.state,
            "tasks_total": p.tasks_total, "tasks_done": p.tasks_done, "records_scanned": p.records_scanned,
            "elapsed_s": round(p.elapsed_s, 3), "attempts": p.attempts, "error": p.error}
