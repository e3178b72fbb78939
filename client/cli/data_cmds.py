"""Data commands: `shoal dataset create|ls|drop`, `put`, `get`, `delete`, `load`, `status`.

Values on the command line and in files are JSON; `get` prints JSON (bytes values,
which JSON lacks, print as "base64:..." strings). `load` reads JSON lines or CSV with a
header through `RecordFile` and streams the records into Client.put_many, so a file of
any size loads in constant memory. A bad line ends the input (RecordFile stops and keeps
the error instead of raising), so put_many still delivers every record before it, and
the command then reports the line and the count. The file is read as bytes so progress
can follow the byte offset (a text file's tell() is disabled while iterating).
"""
from __future__ import annotations

import base64
import csv
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Annotated, Any

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from shoal.client.cli import _common
from shoal.client.cli._common import command_errors, connect, fail

dataset_app = typer.Typer(help="Create, list and drop datasets.", no_args_is_help=True)
PROGRESS_EVERY_RECORDS = 1000
FORMATS = ("auto", "jsonl", "csv")
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")


def register(app: typer.Typer) -> None:
    app.add_typer(dataset_app, name="dataset")
    for name, command in (("put", put), ("get", get), ("delete", delete), ("load", load), ("status", status)):
        app.command(name)(command)


DatasetArg = Annotated[str, typer.Argument(help="Dataset name.")]
KeyArg = Annotated[str, typer.Argument(help="Record key (a string).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


@dataset_app.command("create")
@command_errors
def create(
    ctx: typer.Context,
    name: DatasetArg,
    shards: Annotated[int, typer.Option("--shards", min=1, help="Number of shards (fixed for the dataset's "
                                        "life).")] = 8,
    replication: Annotated[int, typer.Option("--replication", min=0, help="Copies of each shard; 0 = "
                                             "min(3, live nodes).")] = 0,
) -> None:
    """Create a dataset."""
    with connect(ctx) as client:
        info = client.create_dataset(name, shards=shards, replication=replication)
    typer.echo(f"created dataset {info.name} ({info.shards} shards, replication {info.replication})")


@dataset_app.command("ls")
@command_errors
def ls(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List datasets."""
    with connect(ctx) as client:
        datasets = client.list_datasets()
    if as_json:
        rows = [{"name": d.name, "shards": d.shards, "replication": d.replication} for d in datasets]
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("name", "shards", "replication")
    for info in datasets:
        table.add_row(info.name, str(info.shards), str(info.replication))
    _common.console().print(table if datasets else "no datasets")


@dataset_app.command("drop")
@command_errors
def drop(ctx: typer.Context, name: DatasetArg) -> None:
    """Drop a dataset and every record in it."""
    with connect(ctx) as client:
        client.drop_dataset(name)
    typer.echo(f"dropped dataset {name}")


@command_errors
def put(ctx: typer.Context, dataset: DatasetArg, key: KeyArg,
        value: Annotated[str, typer.Argument(metavar="JSON", help="The value, as JSON: '{\"a\": 1}', '42', "
                                             "'\"text\"'.")]) -> None:
    """Store one record."""
    try:
        decoded = json.loads(value)
    except json.JSONDecodeError as exc:
        fail(f"the value is not valid JSON ({exc.msg} at column {exc.colno}): {value[:60]!r}")
    with connect(ctx) as client:
        client.put(dataset, key, decoded)
    typer.echo("OK")


@command_errors
def get(ctx: typer.Context, dataset: DatasetArg, key: KeyArg) -> None:
    """Print one record's value as JSON; exit 1 if the key does not exist."""
    missing = object()
    with connect(ctx) as client:
        value = client.get(dataset, key, default=missing)
    if value is missing:
        fail(f"key {key!r} not found in dataset {dataset}")
    typer.echo(json.dumps(value, ensure_ascii=False, default=_json_default))


@command_errors
def delete(ctx: typer.Context, dataset: DatasetArg, key: KeyArg) -> None:
    """Delete one record (not an error if it does not exist)."""
    with connect(ctx) as client:
        existed = client.delete(dataset, key)
    typer.echo("deleted" if existed else f"key {key!r} did not exist")


@command_errors
def load(
    ctx: typer.Context,
    dataset: DatasetArg,
    file: Annotated[Path, typer.Argument(help="JSON lines (one object per line) or CSV with a header row.",
                                         dir_okay=False)],
    key_field: Annotated[str | None, typer.Option(
        "--key", metavar="FIELD", help="Field holding the key (default: \"id\" if the first record has it, "
        "else the line number).")] = None,
    file_format: Annotated[str, typer.Option(
        "--format", help=f"One of {', '.join(FORMATS)}; auto looks at the extension, then the first byte.")]
    = "auto",
) -> None:
    """Load a JSON lines or CSV file into a dataset (CSV numbers become int or float)."""
    if file_format not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, got {file_format!r}")
    try:
        source = RecordFile.open(file, file_format, key_field)
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}")
    started_s = time.monotonic()
    with source, connect(ctx) as client, _progress(source.size_bytes) as progress:
        task = progress.add_task(f"loading {file.name}", total=source.size_bytes or None)

        def records() -> Any:
            for count, record in enumerate(source.records(), 1):
                if count % PROGRESS_EVERY_RECORDS == 0:
                    progress.update(task, completed=source.bytes_read)
                yield record

        loaded = client.put_many(dataset, records())
    elapsed_s = max(time.monotonic() - started_s, 1e-9)
    if source.error is not None:
        done = f"loaded the {loaded} records before it into {dataset}" if loaded else "nothing was loaded"
        fail(f"{source.error} ({done})")
    typer.echo(f"loaded {loaded} records into {dataset} in {elapsed_s:.2f} s ({loaded / elapsed_s:.0f} records/s)")


@command_errors
def status(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Show nodes (state, raft role, shards, primaries, disk), datasets and under-replicated shards."""
    with connect(ctx) as client:
        report = client.status()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    console = _common.console()
    nodes = Table("id", "address", "zone", "state", "raft role", "shards", "primaries", "disk free", "uptime",
                  title="nodes")
    for node in report["nodes"]:
        state = node["state"] if node["reachable"] else f"{node['state']} (unreachable)"
        color = "green" if node["state"] == "alive" and node["reachable"] else "red"
        nodes.add_row(node["id"], node["address"], node["zone"] or "-", f"[{color}]{state}[/]", node["raft_role"],
                      str(node["shards"]), str(node["primaries"]), _bytes_text(node["disk_free_bytes"]),
                      _uptime_text(node["uptime_s"]))
    datasets = Table("name", "shards", "replication", "under-replicated", title="datasets")
    for info in report["datasets"]:
        datasets.add_row(info["name"], str(info["shards"]), str(info["replication"]), str(info["under_replicated"]))
    console.print(nodes)
    console.print(datasets if report["datasets"] else "no datasets")
    color = "green" if report["under_replicated"] == 0 else "yellow"
    console.print(f"controller: {report['controller'] or '-'}   "
                  f"under-replicated shards: [{color}]{report['under_replicated']}[/]")


def _progress(total_bytes: int) -> Progress:
    console = _common.console(stderr=True)
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                    console=console, transient=True, disable=not console.is_terminal or not total_bytes)


def _json_default(value: object) -> str:
    if isinstance(value, bytes):
        return "base64:" + base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _bytes_text(size: int | None) -> str:
    if size is None:
        return "-"
    amount = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def _uptime_text(uptime_s: float | None) -> str:
    if uptime_s is None:
        return "-"
    minutes, seconds = divmod(int(uptime_s), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class _BadLine(Exception):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line, self.reason = line, reason


class RecordFile:
    """(key, value) records from a JSON lines or CSV file; stops at the first bad line.

    Keys: the `key_field` of each record; by default "id" when the first record (JSON)
    or the header (CSV) has it, else the line number. After `records()` ends, `error` is
    None or "FILE:LINE: what is wrong".
    """

    def __init__(self, path: Path, handle: IO[bytes], file_format: str, key_field: str | None,
                 size_bytes: int) -> None:
        self.path, self.format, self.key_field, self.size_bytes = path, file_format, key_field, size_bytes
        self._handle = handle
        self.bytes_read = 0
        self.line_no = 0
        self.error: str | None = None

    @classmethod
    def open(cls, path: Path, file_format: str, key_field: str | None) -> RecordFile:
        handle = open(path, "rb")
        size_bytes = path.stat().st_size
        if file_format == "auto":
            suffix = path.suffix.lower()
            if suffix in (".jsonl", ".ndjson", ".json"):
                file_format = "jsonl"
            elif suffix == ".csv":
                file_format = "csv"
            else:
                file_format = "jsonl" if handle.peek(64).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{") else "csv"
        return cls(path, handle, file_format, key_field, size_bytes)

    def __enter__(self) -> RecordFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._handle.close()

    def records(self) -> Iterator[tuple[str, Any]]:
        try:
            yield from (self._jsonl() if self.format == "jsonl" else self._csv())
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
        for line in self._lines():
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _BadLine(self.line_no, f"invalid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(value, dict):
                raise _BadLine(self.line_no, f"expected a JSON object, got {type(value).__name__}")
            if field is None:
                field = "id" if "id" in value else ""
            yield (_key_of(value, field, self.line_no) if field else str(self.line_no)), value

    def _csv(self) -> Iterator[tuple[str, Any]]:
        reader = csv.reader(self._lines())
        try:
            header = next(reader, None)
            if header is None:
                return
            field = self.key_field or ("id" if "id" in header else None)
            if field is not None and field not in header:
                raise _BadLine(reader.line_num, f"no column {field!r} in the header")
            index = header.index(field) if field is not None else -1
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    raise _BadLine(reader.line_num, f"expected {len(header)} fields, got {len(row)}")
                key = row[index] if index >= 0 else str(reader.line_num)
                if not key:
                    raise _BadLine(reader.line_num, f"empty key in column {field!r}")
                yield key, {name: _number(cell) for name, cell in zip(header, row)}
        except csv.Error as exc:
            raise _BadLine(reader.line_num, f"bad CSV ({exc})") from None


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
    """CSV cells that look like numbers become int or float; everything else stays text."""
    if _INT.fullmatch(cell):
        number = int(cell)
        return number if -2**63 <= number < 2**64 else cell    # msgpack's integer range
    if _FLOAT.fullmatch(cell):
        return float(cell)
    return cell
