"""Runtime faults of the `shoal` command with bad input: one truthful `error:` line, exit 1, no traceback.

Method: typer's CliRunner drives the real app in-process. Commands that need a cluster
get FakeClient (through their module's `connect`): a dict-backed stand-in whose put_many
fails as the real one does, before taking a record for an unknown dataset, or after
taking every record for a value a node refuses (storing the others, as other shards'
batches are stored meanwhile). RecordFile and the JSON rules are driven directly.
"""
from __future__ import annotations

import contextlib
import csv
import json
import socket
import types
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from shoal.client import ClientConfig, DatasetNotFoundError, InvalidArgumentError, JobNotFoundError
from shoal.client.cli import app, backup_cmds, data_cmds, query_cmds
from shoal.client.cli.json_values import JsonValueError, UnshowableValueError, rows_json, strict_json, value_json
from shoal.client.cli.query_cmds import show_rows
from shoal.client.cli.record_file import RecordFile

ENV = {"SHOAL_CLUSTER": None, "SHOAL_TIMEOUT": None, "COLUMNS": "120"}
DEEP = "[" * 1000 + "]" * 1000
LIMIT_MESSAGE = "put_many batch failed: dataset 'events': value of key b'a2' is 2097166 bytes, limit 1048576"


class FakeClient:
    """What `shoal load` and `shoal dataset export` call on a Client, over a dict."""

    def __init__(self, datasets: Iterable[str] = ("events",), refuse: str | None = None) -> None:
        self.config = ClientConfig()
        self.datasets = set(datasets)
        self.refuse = refuse
        self.stored: dict[str, Any] = {}

    def put_many(self, dataset: str, records: Iterable[tuple[str, Any]]) -> int:
        if dataset not in self.datasets:
            raise DatasetNotFoundError(f"dataset {dataset} does not exist", dataset=dataset)
        taken = list(records)
        self.stored.update((key, value) for key, value in taken if key != self.refuse)
        if any(key == self.refuse for key, _ in taken):
            raise InvalidArgumentError(LIMIT_MESSAGE, dataset=dataset, key=str(self.refuse).encode())
        return len(taken)

    def cluster_map(self) -> Any:
        infos = [types.SimpleNamespace(name=name, shards=2, replication=1, schema_json="", encryption_key_id="")
                 for name in self.datasets]
        return types.SimpleNamespace(datasets=infos)

    def scan(self, dataset: str) -> Iterator[tuple[str, Any]]:
        yield from self.stored.items()

    def _job_call(self, what: str, call: Any, *, extra_s: float = 0.0) -> Any:
        raise JobNotFoundError(f"{what} failed: unknown job 'BADID'", node="127.0.0.1:1")


def closed_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def with_fake(monkeypatch: pytest.MonkeyPatch, fake: FakeClient) -> None:
    @contextlib.contextmanager
    def connect(ctx: typer.Context) -> Iterator[FakeClient]:
        yield fake
    monkeypatch.setattr(data_cmds, "connect", connect)
    monkeypatch.setattr(backup_cmds, "connect", connect)
    monkeypatch.setattr(query_cmds, "connect", connect)


def one_error(result: Result, text: str, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def csv_limit() -> Iterator[None]:
    """csv.field_size_limit is process-wide: put it back after a test that sets it."""
    before = csv.field_size_limit()
    yield
    csv.field_size_limit(before)


def test_f4_load_into_an_unknown_dataset_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """F4: put_many failing before it takes a record (no such dataset) is that error, as put prints it, not an
    IndexError from the empty chunk."""
    path = tmp_path / "base.jsonl"
    path.write_text('{"id": "k1"}\n{"id": "k2"}\n')
    with_fake(monkeypatch, FakeClient())
    result = CliRunner(env=ENV).invoke(app, ["load", "nosuch", str(path)])
    line = one_error(result, "dataset nosuch does not exist [dataset=nosuch]")
    assert line == "error: dataset nosuch does not exist [dataset=nosuch] (nothing was loaded)"


def test_f4_load_into_an_unreachable_cluster_says_so(tmp_path: Path) -> None:
    """F4: the same with nothing listening: the unreachable error, exit 1."""
    path = tmp_path / "base.jsonl"
    path.write_text('{"id": "k1"}\n')
    address = closed_address()
    result = CliRunner(env=ENV).invoke(app, ["--cluster", address, "load", "base", str(path)])
    one_error(result, f"cannot reach the cluster at {address}")


def test_f14_refused_record_names_the_records_after_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """F14: a node refuses line 2 after put_many took lines 3-5 (stored meanwhile): the count before it is exact,
    lines 3 to 5 are named as maybe stored, and resuming with the --skip it names stores the same data."""
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps({"id": f"a{i}", "v": i}) + "\n" for i in range(1, 6)))
    fake = FakeClient(refuse="a2")
    with_fake(monkeypatch, fake)
    result = CliRunner(env=ENV).invoke(app, ["load", "events", str(path)])
    line = one_error(result, f"big.jsonl:2: {LIMIT_MESSAGE}")
    assert line.endswith("(loaded the 1 records before it into events; the records after it on lines 3 to 5 may "
                         "be stored too; resume after fixing it with --skip 1 (loading a record again is harmless))")
    assert sorted(fake.stored) == ["a1", "a3", "a4", "a5"]                  # what the message says may be
    fake.refuse = None
    resumed = CliRunner(env=ENV).invoke(app, ["load", "events", str(path), "--skip", "1"])
    assert resumed.exit_code == 0 and "loaded 4 records" in resumed.stdout, resumed.output
    assert fake.stored == {f"a{i}": {"id": f"a{i}", "v": i} for i in range(1, 6)}


def test_f14_refused_last_record_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """F14: when nothing after the refused record was taken, the message claims nothing after it."""
    path = tmp_path / "big.jsonl"
    path.write_text('{"id": "a1"}\n{"id": "a2"}\n')
    with_fake(monkeypatch, FakeClient(refuse="a2"))
    line = one_error(CliRunner(env=ENV).invoke(app, ["load", "events", str(path)]), "big.jsonl:2:")
    assert line.endswith("(loaded the 1 records before it into events; resume after fixing it with --skip 1)")


def test_f5_export_to_a_missing_directory_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """F5: export to a directory that does not exist is `cannot write FILE: reason` (not the .tmp's traceback),
    and no FILE.tmp is left; import of a file with a damaged header is one line too."""
    fake = FakeClient()
    fake.stored["k"] = b"v"
    with_fake(monkeypatch, fake)
    target = tmp_path / "nonexistent" / "x.shoal"
    result = CliRunner(env=ENV).invoke(app, ["dataset", "export", "events", str(target)])
    assert one_error(result, "") == f"error: cannot write {target}: No such file or directory"
    good = tmp_path / "x.shoal"
    assert CliRunner(env=ENV).invoke(app, ["dataset", "export", "events", str(good)]).exit_code == 0
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["x.shoal"]
    damaged = tmp_path / "damaged.shoal"
    damaged.write_bytes(good.read_bytes().replace(b"shards", b"shardz"))
    result = CliRunner(env=ENV).invoke(app, ["dataset", "import", str(damaged)])
    one_error(result, f"{damaged}: damaged header: 'shards' must be int")


def test_f8_deeply_nested_json_is_an_error(tmp_path: Path) -> None:
    """F8: JSON nested past the recursion limit is "nested too deeply" for put @FILE, a load line (FILE:LINE, with
    the count/--skip hint) and a --schema file, not a RecursionError."""
    deep = tmp_path / "d.json"
    deep.write_text(DEEP)
    runner = CliRunner(env=ENV)
    put = runner.invoke(app, ["--cluster", closed_address(), "put", "ld2", "x", f"@{deep}"])
    one_error(put, f"the value in {deep} is not valid JSON (nested too deeply)")
    schema = runner.invoke(app, ["--cluster", closed_address(), "dataset", "create", "z", "--schema", str(deep)])
    one_error(schema, f"--schema {deep}: nested too deeply")
    lines = tmp_path / "deep.jsonl"
    lines.write_text('{"id": "a"}\n{"id": "b", "v": ' + DEEP + "}\n")
    with RecordFile.open(lines, "auto", None) as source:
        assert [key for key, _ in source.records()] == ["a"]
    assert source.error == f"{lines}:2: invalid JSON (nested too deeply)"


@pytest.mark.parametrize("text", ['{"a": "int", "a": "str"}', '{"b": "int", "a": "str", "a": "int?"}'])
def test_f13_schema_file_with_a_repeated_field_is_refused(tmp_path: Path, text: str) -> None:
    """F13: the object form of a schema file refuses a repeated field as the list form does, before connecting."""
    path = tmp_path / "s.json"
    path.write_text(text)
    result = CliRunner(env=ENV).invoke(app, ["--cluster", closed_address(), "dataset", "create", "z7", "--schema",
                                             str(path)])
    assert one_error(result, "") == f"error: --schema {path}: field 'a': defined twice"


def test_f13_schema_repeated_key_at_any_depth(tmp_path: Path) -> None:
    """F13: a repeated key inside a field of the long form is refused, naming where."""
    path = tmp_path / "s.json"
    path.write_text('{"fields": [{"name": "a", "type": "int", "type": "str"}]}')
    result = CliRunner(env=ENV).invoke(app, ["--cluster", closed_address(), "dataset", "create", "z7", "--schema",
                                             str(path)])
    one_error(result, "fields[0]: key 'type' defined twice")


def test_f13_records_with_a_repeated_key_are_refused(tmp_path: Path) -> None:
    """F13: put and load refuse an object that repeats a key (JSON would drop one value silently), at any depth;
    a load names FILE:LINE."""
    with pytest.raises(JsonValueError, match="key 'a' appears twice in one object"):
        strict_json('{"x": {"a": 1, "a": 2}}')
    result = CliRunner(env=ENV).invoke(app, ["--cluster", closed_address(), "put", "ds", "k", '{"a": 1, "a": 2}'])
    one_error(result, "the value is not valid JSON (key 'a' appears twice in one object")
    path = tmp_path / "dup.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b", "id": "c"}\n')
    with RecordFile.open(path, "auto", None) as source:
        assert [key for key, _ in source.records()] == ["a"]
    assert source.error is not None and source.error.startswith(f"{path}:2: invalid JSON (key 'id' appears twice")


def test_f15_csv_cells_longer_than_csvs_default_limit_load(tmp_path: Path, csv_limit: None) -> None:
    """F15: a 200,000-character cell is read (the value limit applies later, naming the key); a cell over the
    value limit itself is one line saying so, not csv's "field larger than field limit"."""
    path = tmp_path / "wide.csv"
    path.write_text(f"id,big\nc1,{'x' * 200_000}\nc2,z\n")
    with RecordFile.open(path, "auto", None) as source:
        records = list(source.records())
    assert source.error is None and [key for key, _ in records] == ["c1", "c2"]
    with RecordFile(path, open(path, "rb"), "csv", None, path.stat().st_size, field_chars_max=1000) as small:
        assert list(small.records()) == []
    assert small.error == f"{path}:2: a CSV field is over 1000 characters, longer than a value may be (1000 bytes)"


@pytest.mark.parametrize(("argv", "words"), [
    (["--text-columns", "nosuch"], ("'--text-columns'", "no column 'nosuch' (columns: id, name)")),
    (["--text-columns", "name,zz,aa"], ("'--text-columns'", "no columns 'aa', 'zz' (columns: id, name)")),
    (["--key", "nope"], ("'--key'", "no column 'nope' (columns: id, name)")),
    (["--no-header", "--key", "id"], ("'--key'", "no column 'id' (columns: 1, 2)")),
])
def test_f16_load_options_naming_unknown_columns_are_usage_errors(tmp_path: Path, argv: list[str],
                                                                 words: tuple[str, ...]) -> None:
    """F16: --text-columns or --key naming a column the CSV does not have is a usage error listing the columns,
    found from the header before anything is sent."""
    path = tmp_path / "ok.csv"
    path.write_text("id,name\nu1,Ann\n")
    result = CliRunner(env=ENV).invoke(app, ["--cluster", closed_address(), "load", "ld", str(path), *argv])
    line = one_error(result, "Invalid value for", code=2)
    assert all(word in line for word in words), line


def test_f16_csv_options_for_a_json_lines_file_are_usage_errors(tmp_path: Path) -> None:
    """F16 (same kind): a CSV-only option given for a JSON lines file is refused rather than ignored."""
    path = tmp_path / "a.jsonl"
    path.write_text('{"id": "a"}\n')
    for argv in (["--text-columns", "id"], ["--delimiter", ";"], ["--no-header"], ["--columns", "a,b"]):
        result = CliRunner(env=ENV).invoke(app, ["--cluster", closed_address(), "load", "ld", str(path), *argv])
        one_error(result, f"'{argv[0]}': is for CSV files, and {path} is read as JSON lines", code=2)


def test_f10_rows_json_follows_the_rule_of_get() -> None:
    """F10: query/job results print as get prints values: bytes as {"$bytes"}, which put/load read back the
    same, and only valid JSON."""
    rows = [{"a": b"hi\xff", "n": 1, "s": "base64:aGk=", "nested": {"b": [b"x", 1.5]}}]
    text = rows_json(rows)
    assert text == ('[{"a": {"$bytes": "aGn/"}, "n": 1, "s": "base64:aGk=", "nested": {"b": [{"$bytes": "eA=="}, '
                    '1.5]}}]')
    assert strict_json(text) == rows
    assert rows_json([{"v": 1}]) == "[" + value_json({"v": 1}) + "]"


@pytest.mark.parametrize(("rows", "reason"), [
    ([{"a": 1}, {"f": float("nan")}], "row 2 column 'f' holds NaN or Infinity"),
    ([{"f": float("inf")}], "row 1 column 'f' holds NaN or Infinity"),
    ([{"d": {1: "x"}}], "row 1 column 'd' holds a dict key 1 \\(int\\)"),
    ([{"d": {"$bytes": 5}}], "row 1 column 'd' holds a dict whose one key is"),
    ([{3: "x"}], "row 1 has a column named 3"),
])
def test_f10_rows_json_refuses_what_json_would_change(rows: list[dict[Any, Any]], reason: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """F10: a NaN, an int key or a stored {"$bytes": 5} is an error naming row and column, never bare NaN, a
    stringified key or a line that reads back as bytes; the command prints it as one `error:` line, exit 1."""
    with pytest.raises(UnshowableValueError, match=reason):
        rows_json(rows)
    with pytest.raises(typer.Exit) as stopped:
        show_rows(rows, [], as_json=True)
    assert stopped.value.exit_code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot print the result as JSON: row ") and len(err.splitlines()) == 1


def test_f17_job_cancel_of_an_unknown_id_says_cancel(monkeypatch: pytest.MonkeyPatch) -> None:
    """F17: `job cancel BADID` makes the cancel call itself, so its error says cancel, not "job status"."""
    with_fake(monkeypatch, FakeClient())
    result = CliRunner(env=ENV).invoke(app, ["job", "cancel", "BADID"])
    assert one_error(result, "") == "error: cancel job failed: unknown job 'BADID' [node=127.0.0.1:1]"
