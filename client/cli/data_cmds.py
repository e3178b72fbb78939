"""Data commands: `shoal dataset create|ls|drop`, `put`, `get`, `delete`, `load`, `status`.

Values are JSON with one rule both ways (json_values.py): `put`, `load` and `get` agree,
so what `get` prints, `put` stores back as the same value. Strict JSON (no NaN, Infinity
or out-of-range numbers); bytes, which JSON lacks, are {"$bytes": "<base64>"} at any
depth, and a str is never rewritten; a stored value JSON cannot show faithfully (NaN, a
non-str dict key) is an error, not a misleading line. `put` takes the value inline,
from `@FILE` or from stdin (`-`).

`load` reads JSON lines or CSV through RecordFile (record_file.py: the input fidelity
rules) and streams the records into Client.put_many in chunks of LOAD_CHUNK_RECORDS, so
a file of any size loads in constant memory and a failure part-way knows a prefix of
the file that is stored for sure: the error names FILE:LINE, the reason, that count,
and the `--skip N` that resumes (writes are idempotent, so loading a record twice is
harmless). A record a node refuses is found after put_many has read, and may have
stored, records after it in its chunk: the error names their lines too.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from shoal.client import Client, InvalidArgumentError, ShoalError
from shoal.client._arguments import REPLICATION_MAX, SHARDS_MAX
from shoal.client._codec import KEY_BYTES_MAX, ValueEncoder, encode_key
from shoal.client.cli import _common
from shoal.client.cli._common import check_dataset_name, command_errors, connect, error_text, fail, usage_error
from shoal.client.cli.json_values import JsonValueError, UnshowableValueError, document_json, strict_json, value_json
from shoal.client.cli.record_file import OptionError, RecordCheck, RecordFile

dataset_app = typer.Typer(help="Create, list and drop datasets.", no_args_is_help=True)
PROGRESS_EVERY_RECORDS = 1000
FORMATS = ("auto", "jsonl", "csv")
LOAD_CHUNK_RECORDS = 100_000      # one put_many per chunk, kept in memory until stored ...
LOAD_CHUNK_BYTES = 32 * 1024 * 1024   # ... and bounded by input bytes: a failure is exact within a chunk
VALUE_CHECK_RATIO = 3             # msgpack is at most ~3x a JSON/CSV line (a float "1." is 9 bytes)


def register(app: typer.Typer) -> None:
    app.add_typer(dataset_app, name="dataset")
    for name, command in (("put", put), ("get", get), ("delete", delete), ("load", load), ("status", status)):
        app.command(name)(command)


DatasetArg = Annotated[str, typer.Argument(help="Dataset name.", callback=check_dataset_name)]
KeyArg = Annotated[str, typer.Argument(help="Record key (a string).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


@dataset_app.command("create")
@command_errors
def create(
    ctx: typer.Context,
    name: DatasetArg,
    shards: Annotated[int, typer.Option("--shards", min=1, max=SHARDS_MAX, help="Number of shards (fixed for "
                                        "the dataset's life).")] = 8,
    replication: Annotated[int, typer.Option("--replication", min=0, max=REPLICATION_MAX, help="Copies of each "
                                             "shard; 0 = min(3, live nodes).")] = 0,
    schema: Annotated[Path | None, typer.Option(
        "--schema", metavar="FILE", dir_okay=False,
        help='JSON schema: {"carrier": "str", "arr_delay": "float?"} ("?" = nullable; types int, float, str, '
             'bool, timestamp) or {"fields": [{"name", "type", "nullable"}]}. Values are checked on write.')] = None,
    encrypt: Annotated[bool, typer.Option("--encrypt", help="Seal values at rest (AES-GCM) with the nodes' key: "
                                          "every node needs --encryption-key-file.")] = False,
) -> None:
    """Create a dataset (schema-less unless --schema, plain unless --encrypt)."""
    schema_doc = None
    if schema is not None:
        try:
            schema_doc = document_json(schema.read_text(encoding="utf-8"), top_key="field")
        except OSError as exc:
            fail(f"cannot read --schema {schema}: {exc.strerror or exc}")
        except (JsonValueError, UnicodeDecodeError) as exc:   # a repeated field too: JSON would keep the last
            fail(f"--schema {schema}: {exc}")
        if not isinstance(schema_doc, dict):
            fail(f"--schema {schema}: expected a JSON object, got {type(schema_doc).__name__}")
    with connect(ctx) as client:
        info = client.create_dataset(name, shards=shards, replication=replication, schema=schema_doc, encrypted=encrypt)
    sealed = f", encrypted with key {info.encryption_key_id}" if info.encryption_key_id else ""
    typer.echo(f"created dataset {info.name} ({info.shards} shards, replication {info.replication}{sealed})")


@dataset_app.command("ls")
@command_errors
def ls(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List datasets."""
    with connect(ctx) as client:
        datasets = client.list_datasets()
    if as_json:
        rows = [{"name": d.name, "shards": d.shards, "replication": d.replication,
                 "encryption_key_id": d.encryption_key_id} for d in datasets]
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("name", "shards", "replication", "encryption key")
    for info in datasets:
        table.add_row(info.name, str(info.shards), str(info.replication), info.encryption_key_id or "-")
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
                                             "'\"text\"'; bytes as '{\"$bytes\": \"<base64>\"}' (as get "
                                             "prints them); @FILE reads it from a file, - from stdin.")]) -> None:
    """Store one record. Bytes are {"$bytes": "<base64>"}, at any depth; a str is stored as written."""
    text, where = _value_text(value)
    try:
        decoded = strict_json(text)
    except JsonValueError as exc:
        fail(f"{where} is not valid JSON ({exc}): {text[:60]!r}")
    with connect(ctx) as client:
        client.put(dataset, key, decoded)
    typer.echo("OK")


def _value_text(value: str) -> tuple[str, str]:
    """The JSON text of `shoal put` and what to call it in errors: inline, @FILE or - (stdin).

    Neither "@..." nor "-" is valid JSON, so the forms cannot be confused with a value.
    """
    if value == "-":
        return sys.stdin.read(), "the value on stdin"
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            return path.read_text(encoding="utf-8"), f"the value in {path}"
        except OSError as exc:
            fail(f"cannot read {path}: {exc.strerror or exc}")
        except UnicodeDecodeError as exc:
            fail(f"the value in {path} is not UTF-8 (byte {exc.start + 1})")
    return value, "the value"


@command_errors
def get(ctx: typer.Context, dataset: DatasetArg, key: KeyArg) -> None:
    """Print one record's value as JSON; exit 1 if the key does not exist.

    Bytes print as {"$bytes": "<base64>"}, which put and load read back as bytes; a str prints as itself.

    A value JSON cannot show faithfully (NaN, a non-str dict key, a dict whose one key is "$bytes") is an error.
    """
    missing = object()
    with connect(ctx) as client:
        value = client.get(dataset, key, default=missing)
    if value is missing:
        fail(f"key {key!r} not found in dataset {dataset}")
    try:
        text = value_json(value)
    except UnshowableValueError as exc:
        fail(f"the value of key {key!r} {exc} (it was stored through the Python client; read it there)")
    typer.echo(text)


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
    delimiter: Annotated[str | None, typer.Option(
        "--delimiter", metavar="CHAR", help="CSV field separator (default \",\"; tab for .tsv; \\t for tab).")]
    = None,
    no_header: Annotated[bool, typer.Option(
        "--no-header", help="The CSV has no header row: columns are named \"1\", \"2\", ...")] = False,
    columns: Annotated[str | None, typer.Option(
        "--columns", metavar="NAME,NAME,...", help="The CSV has no header row: these are its column names.")]
    = None,
    text_columns: Annotated[str | None, typer.Option(
        "--text-columns", metavar="NAME,NAME,...", help="CSV columns kept as text (no number conversion).")]
    = None,
    skip: Annotated[int, typer.Option(
        "--skip", min=0, metavar="N", help="Skip the first N records (to resume a load that stopped).")] = 0,
) -> None:
    """Load a JSON lines or CSV file into a dataset (CSV numbers become int or float when exact).

    JSON values follow the rule of put and get: {"$bytes": "<base64>"} is bytes, a str stays a str.

    CSV cells are text or numbers, never bytes.
    """
    if file_format not in FORMATS:
        usage_error(ctx, "--format", f"must be one of {', '.join(FORMATS)}, got {file_format!r}")
    if no_header and columns is not None:
        usage_error(ctx, "--columns", "--no-header and --columns both say the file has no header: pass one of them")
    names = None if columns is None else [name.strip() for name in columns.split(",")]
    separator = _delimiter(ctx, delimiter)
    text_names = frozenset(name.strip() for name in (text_columns or "").split(",") if name.strip())
    started_s = time.monotonic()
    with connect(ctx) as client:
        try:
            source = RecordFile.open(file, file_format, key_field, delimiter=separator, columns=names,
                                     no_header=no_header, text_columns=text_names,
                                     check=_record_check(dataset, client), skip=skip)
        except OSError as exc:
            fail(f"cannot read {file}: {exc.strerror or exc}")
        except OptionError as exc:
            usage_error(ctx, exc.option, exc.message)
        with source, _progress(source.size_bytes) as progress:
            task = progress.add_task(f"loading {file.name}", total=source.size_bytes or None)
            try:
                outcome = _load_chunks(client, dataset, source, skip,
                                       lambda: progress.update(task, completed=source.bytes_read))
            except OptionError as exc:   # --key or --text-columns names no column of the CSV header
                usage_error(ctx, exc.option, exc.message)
    elapsed_s = max(time.monotonic() - started_s, 1e-9)
    loaded = outcome.stored
    if outcome.error is not None:
        fail(f"{outcome.error} ({_stopped_text(dataset, loaded, skip, outcome.maybe_stored)})")
    skipped = f", skipped the first {skip}" if skip else ""
    typer.echo(f"loaded {loaded} records into {dataset} in {elapsed_s:.2f} s ({loaded / elapsed_s:.0f} records/s"
               f"{skipped}); keys: {source.key_source or '-'}")


def _stopped_text(dataset: str, loaded: int, skip: int, maybe_stored: tuple[int, int] | None) -> str:
    """What a load that stopped at a bad or refused record stored, and the --skip that resumes it."""
    parts = [f"loaded the {loaded} records before it into {dataset}" if loaded else "nothing was loaded"]
    if maybe_stored is not None:
        first, last = maybe_stored
        lines = f"line {first}" if first == last else f"lines {first} to {last}"
        parts[0] = parts[0].replace("nothing was loaded", "no record before it was loaded")
        parts.append(f"the records after it on {lines} may be stored too")
    again = " (loading a record again is harmless)" if maybe_stored is not None else ""
    if skip + loaded:
        parts.append(f"resume after fixing it with --skip {skip + loaded}{again}")
    elif maybe_stored is not None:
        parts.append(f"load the file again after fixing it{again}")
    return "; ".join(parts)


def _delimiter(ctx: typer.Context, delimiter: str | None) -> str | None:
    if delimiter is None:
        return None
    text = {"\\t": "\t", "tab": "\t"}.get(delimiter, delimiter)
    if len(text) != 1 or text in "\"\r\n":
        usage_error(ctx, "--delimiter", f"must be one character (\\t for tab), got {delimiter!r}")
    return text


def _record_check(dataset: str, client: Client) -> RecordCheck:
    """Reject a record over the client's key or message limit in RecordFile, where it stops the input
    cleanly at its line; only lines long enough to be over are encoded twice."""
    encoder = ValueEncoder(client.config.message_bytes_max)
    threshold_bytes = encoder.value_bytes_max // VALUE_CHECK_RATIO

    def check(key: str, value: Any, line_bytes: int) -> None:
        try:
            if len(key) > KEY_BYTES_MAX // 4:
                encode_key(dataset, key)
            if line_bytes >= threshold_bytes:
                encoder.encode(dataset, key, value)
        except ShoalError as exc:
            raise ValueError(f"{exc.message} (key {key!r:.60})") from None
    return check


@dataclasses.dataclass(frozen=True, slots=True)
class _LoadOutcome:
    stored: int                             # records stored for sure: the file's first ones after --skip
    error: str | None                       # "FILE:LINE: reason" of the record that stopped the load
    maybe_stored: tuple[int, int] | None    # lines of records after it that put_many had taken (and may
                                            # have stored) when a node refused it; None = none after it


class _Chunk:
    """Up to LOAD_CHUNK_RECORDS records or LOAD_CHUNK_BYTES of input, kept (with their lines) until stored,
    then one peeked record that starts the next chunk. `lines` holds the records put_many has taken."""

    def __init__(self, first: tuple[str, Any], rest: Iterator[tuple[str, Any]], source: RecordFile) -> None:
        self.first, self.rest, self.source = first, rest, source
        self.first_line = source.record_line     # read already: the line of `first`
        self.records: list[tuple[str, Any]] = []
        self.lines: list[int] = []
        self.next_first: tuple[str, Any] | None = None

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        source = self.source
        end_bytes = source.bytes_read + LOAD_CHUNK_BYTES
        self.records.append(self.first)
        self.lines.append(self.first_line)
        yield self.first
        for record in self.rest:
            if len(self.records) >= LOAD_CHUNK_RECORDS or source.bytes_read > end_bytes:
                self.next_first = record
                return
            self.records.append(record)
            self.lines.append(source.record_line)
            yield record


def _load_chunks(client: Client, dataset: str, source: RecordFile, skip: int,
                 on_progress: Callable[[], object]) -> _LoadOutcome:
    """put_many chunk by chunk, until the end of the file or the record that stops the load.

    A record refused by the client or a node (InvalidArgumentError) is handled like a bad
    line: the records of its chunk before it are stored (_store_before_refused), so the
    count is exact; records after it that put_many had taken may be stored too (a node's
    refusal comes back while other batches are on their way), and the outcome names their
    lines. Any other failure (an unknown dataset, a node down, Ctrl-C) fails here with what
    is stored for sure and the --skip that resumes. OptionError (a column --key or
    --text-columns names is not in the CSV header) comes from the first record, before
    anything is sent.
    """
    def counted() -> Iterator[tuple[str, Any]]:
        for count, record in enumerate(source.records(), 1):
            if count % PROGRESS_EVERY_RECORDS == 0:
                on_progress()
            yield record

    records = counted()
    stored = 0
    first = next(records, None)
    while first is not None:
        chunk = _Chunk(first, records, source)
        try:
            stored += client.put_many(dataset, chunk)
        except InvalidArgumentError as exc:
            if not chunk.lines:      # refused before taking a record: the call, not a record
                fail(_interrupted(source, dataset, exc, stored, skip, chunk))
            try:
                count, index, refused = _store_before_refused(client, dataset, chunk.records, exc)
            except (ShoalError, KeyboardInterrupt) as again:
                fail(_interrupted(source, dataset, again, stored, skip, chunk))
            after = chunk.lines[index + 1:]
            return _LoadOutcome(stored + count, f"{source.path}:{chunk.lines[index]}: {refused.message}",
                                (after[0], after[-1]) if after else None)
        except (ShoalError, KeyboardInterrupt) as exc:
            fail(_interrupted(source, dataset, exc, stored, skip, chunk))
        first = chunk.next_first
    return _LoadOutcome(stored, source.error, None)


def _store_before_refused(client: Client, dataset: str, records: list[tuple[str, Any]],
                          refused: InvalidArgumentError) -> tuple[int, int, InvalidArgumentError]:
    """Store the records before the first one that is refused: (how many, its index, its error).

    The error names the key when the client refused the record; a node's error may not, so
    then the chunk is bisected with put_many (records are idempotent: sending one twice is
    harmless). Everything before `low` is stored; the range [low, high) holds a refused record.
    """
    if refused.key is not None:
        wanted = refused.key.decode("utf-8", "replace") if isinstance(refused.key, bytes) else refused.key
        index = next((i for i, (key, _) in enumerate(records) if key == wanted), None)
        if index is not None:
            return client.put_many(dataset, records[:index]), index, refused
    low, high = 0, len(records)
    while high - low > 1:
        middle = (low + high) // 2
        try:
            client.put_many(dataset, records[low:middle])
            low = middle
        except InvalidArgumentError as exc:
            refused, high = exc, middle
    return low, low, refused


def _interrupted(source: RecordFile, dataset: str, exc: ShoalError | KeyboardInterrupt, stored: int, skip: int,
                 chunk: _Chunk) -> str:
    """FILE:LINE: reason (what is stored for sure, what may be missing, how to resume).

    When put_many failed before taking a record of the chunk (an unknown dataset, no node
    answers), nothing of it was sent: the reason and the exact count, without FILE:LINE.
    """
    reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else error_text(exc)
    resume_skip = skip + stored
    again = f"shoal load {dataset} {source.path}" + (f" --skip {resume_skip}" if resume_skip else "")
    if not chunk.lines:
        if not stored:
            return f"{reason} (nothing was loaded)"
        return (f"{reason} (loaded the {stored} records before line {chunk.first_line} into {dataset}; resume "
                f"with: {again} and the same options)")
    chunk_line = chunk.first_line
    where = f"{source.path}:{source.record_line}" if source.record_line else str(source.path)
    before = (f"the {stored} records before line {chunk_line} are stored" if stored
              else "no record is known to be stored")
    fix = "fix that record, then " if isinstance(exc, InvalidArgumentError) else ""
    return (f"{where}: {reason} ({before}; records from line {chunk_line} to line {source.record_line} may be "
            f"missing; loading a record again is harmless, so {fix}resume with: {again} and the same options)")


@command_errors
def status(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Show nodes (state, raft role, shards, primaries, disk), datasets, under-replicated and unavailable
    shards."""
    with connect(ctx) as client:
        report = client.status()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    console = _common.console()
    nodes = Table("id", "address", "zone", "state", "raft role", "shards", "primaries", "disk free", "uptime",
                  title="nodes")
    for node in report["nodes"]:
        state = f"suspect (silent {node['silent_s']:.1f} s)" if node["suspect"] else node["state"]
        state = state if node["reachable"] else f"{state} (unreachable)"
        color = "green" if node["state"] == "alive" and node["reachable"] and not node["suspect"] else "red"
        nodes.add_row(node["id"], node["address"], node["zone"] or "-", f"[{color}]{state}[/]", node["raft_role"],
                      str(node["shards"]), str(node["primaries"]), _bytes_text(node["disk_free_bytes"]),
                      _uptime_text(node["uptime_s"]))
    degraded = report.get("degraded_shards", [])
    unavailable = collections.Counter(entry["dataset"] for entry in degraded if entry["state"] == "unavailable")
    datasets = Table("name", "shards", "replication", "under-replicated", "unavailable", title="datasets")
    for info in report["datasets"]:
        lost = unavailable[info["name"]]
        datasets.add_row(info["name"], str(info["shards"]), str(info["replication"]), str(info["under_replicated"]),
                         f"[red]{lost}[/]" if lost else "0")
    console.print(nodes)
    console.print(datasets if report["datasets"] else "no datasets")
    if degraded:
        console.print(_degraded_table(degraded))
    color = "green" if report["under_replicated"] == 0 else "yellow"
    lost_color = "red" if report.get("unavailable") else "green"
    console.print(f"controller: {report['controller'] or '-'}   "
                  f"under-replicated shards: [{color}]{report['under_replicated']}[/]   "
                  f"unavailable shards: [{lost_color}]{report.get('unavailable', 0)}[/]")
    for warning in report.get("warnings", []):   # exit code stays 0: status reports, scripts read --json "quorum"
        console.print(f"[red]WARNING: {escape(warning)}[/]")


def _repair_text(repair: dict[str, Any]) -> str:
    """'n4 copying 45% 12.3 MiB/s ETA 8 s': one learner's copy as its node reports it."""
    parts = [repair["node"], repair["phase"]]
    if repair["percent"] is not None:
        parts.append(f"{repair['percent']:.0f}%")
    if repair["bytes_per_s"]:
        parts.append(f"{_bytes_text(repair['bytes_per_s'])}/s")
    if repair["eta_s"] is not None:
        parts.append(f"ETA {repair['eta_s']:.0f} s")
    return " ".join(parts)


def _degraded_table(degraded: list[dict[str, Any]]) -> Table:
    """Shards below their replication: unavailable (no live in-sync copy) in red, first."""
    table = Table("dataset", "shard", "state", "copies left", "in-sync replicas", "learners", "repair",
                  title="shards below their replication")
    for entry in degraded:
        color = "red" if entry["state"] == "unavailable" else "yellow"
        state = f"{entry['state']} ({entry['reason']})" if entry.get("reason") else entry["state"]
        table.add_row(entry["dataset"], str(entry["shard"]), f"[{color}]{state}[/]",
                      f"{entry['copies_left']}/{entry['replication']}", ",".join(entry["replicas"]) or "-",
                      ",".join(entry["learners"]) or "-", "; ".join(map(_repair_text, entry.get("repair", []))) or "-")
    return table


def _progress(total_bytes: int) -> Progress:
    console = _common.console(stderr=True)
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                    console=console, transient=True, disable=not console.is_terminal or not total_bytes)


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
