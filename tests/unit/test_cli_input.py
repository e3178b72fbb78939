"""Issue 16 point 3: `shoal load` and `shoal put` keep what the user wrote, or stop with FILE:LINE.

Method: RecordFile is driven directly on small files written to tmp_path (no node); the
put/get value rules go through typer's CliRunner against a closed port, since a value is
refused before any connection. Each example of the issue has a test, plus variants of the
same kind (an empty header name, a tab file, leading zeros, 1e-400, a too-precise float).
"""
from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shoal.client.cli import app
from shoal.client.cli.record_file import JsonValueError, RecordFile, strict_json

ENV = {"SHOAL_CLUSTER": None, "SHOAL_TIMEOUT": None, "COLUMNS": "120"}


def closed_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def read(path: Path, text: str, **options: object) -> tuple[list[tuple[str, object]], str | None]:
    path.write_text(text)
    with RecordFile.open(path, "auto", options.pop("key", None), **options) as source:   # type: ignore[arg-type]
        return list(source.records()), source.error


def test_issue16_csv_repeated_header_is_an_error(tmp_path: Path) -> None:
    """`id,name,name` would keep one of the two names: refused at line 1, naming both columns."""
    records, error = read(tmp_path / "dup.csv", "id,name,name\nu2,Ann,Smith\n")
    assert records == []
    assert error == (f"{tmp_path / 'dup.csv'}:1: column 3 repeats the name 'name' of column 2: column names "
                     "must be unique (rename one, or pass --columns NAME,NAME,...)")


def test_issue16_csv_empty_header_name_is_an_error(tmp_path: Path) -> None:
    """Variant: a header with an empty name (a trailing comma) is refused too."""
    _, error = read(tmp_path / "e.csv", "id,name,\nu2,Ann,x\n")
    assert error is not None and ":1: column 3 has no name" in error


def test_issue16_csv_without_header_is_an_error(tmp_path: Path) -> None:
    """A first row with a number in it is data: refused, pointing at --no-header / --columns."""
    records, error = read(tmp_path / "n.csv", "u1,Ann,12\nu2,Bob,13\n")
    assert records == [] and error is not None
    assert ":1: the first row looks like data, not a header (column 3 is the number '12')" in error
    assert "--no-header" in error


def test_issue16_csv_no_header_and_columns_options(tmp_path: Path) -> None:
    """--no-header names columns "1", "2", ... and keeps the first row; --columns names them."""
    path = tmp_path / "n.csv"
    records, error = read(path, "u1,Ann,12\nu2,Bob,13\n", key="1", no_header=True)
    assert error is None
    assert records == [("u1", {"1": "u1", "2": "Ann", "3": 12}), ("u2", {"1": "u2", "2": "Bob", "3": 13})]
    records, error = read(path, "u1,Ann,12\nu2,Bob,13\n", columns=["id", "name", "age"])
    assert error is None and records[0] == ("u1", {"id": "u1", "name": "Ann", "age": 12})
    _, error = read(path, "u1,Ann\n", columns=["id", "id"])
    assert error is not None and "repeats the name 'id'" in error


def test_issue16_csv_semicolon_file_needs_delimiter(tmp_path: Path) -> None:
    """A one-column header holding ';' is refused with the option to pass; --delimiter ';' loads it."""
    path = tmp_path / "s.csv"
    records, error = read(path, "id;name\nu3;Cy\n")
    assert records == [] and error is not None and "pass --delimiter ';'" in error
    records, error = read(path, "id;name\nu3;Cy\n", delimiter=";")
    assert error is None and records == [("u3", {"id": "u3", "name": "Cy"})]
    records, error = read(path, "id;name\nu3;Cy\n", delimiter=",")   # explicit: one column, by choice
    assert error is None and records == [("2", {"id;name": "u3;Cy"})]


def test_issue16_tab_separated_variants(tmp_path: Path) -> None:
    """Variant: a tab-separated .csv is refused naming '\\t'; a .tsv file is tab-separated by default."""
    _, error = read(tmp_path / "t.csv", "id\tname\nu4\tDi\n")
    assert error is not None and "pass --delimiter '\\t'" in error
    records, error = read(tmp_path / "t.tsv", "id\tname\nu4\tDi\n")
    assert error is None and records == [("u4", {"id": "u4", "name": "Di"})]


@pytest.mark.parametrize("cell", ["01234", "007", "1e400", "-1e400", "1e-400", "0.10000000000000000555",
                                  "123456789012345678901234.5"])
def test_issue16_csv_numbers_that_would_change_stay_text(tmp_path: Path, cell: str) -> None:
    """A cell becomes a number only if the number is exactly what was written: else it stays text."""
    records, error = read(tmp_path / "z.csv", f"id,v\nz1,{cell}\n")
    assert error is None and records == [("z1", {"id": "z1", "v": cell})]


def test_issue16_csv_exact_numbers_and_text_columns(tmp_path: Path) -> None:
    """Exact numbers still convert (0.1, 1e3, 0, 1e-5); --text-columns keeps a column as text."""
    path = tmp_path / "x.csv"
    records, error = read(path, "id,a,b,c,d\nr,0.1,1e3,0,1e-5\n")
    assert error is None and records == [("r", {"id": "r", "a": 0.1, "b": 1000.0, "c": 0, "d": 1e-5})]
    records, error = read(path, "id,a,b,c,d\nr,0.1,1e3,0,1e-5\n", text_columns=frozenset({"a", "c"}))
    assert error is None and records == [("r", {"id": "r", "a": "0.1", "b": 1000.0, "c": "0", "d": 1e-5})]


@pytest.mark.parametrize("text", ["NaN", "-Infinity", '{"a": Infinity}', "[1e400]", "1e-400", '{"v": -1E999}'])
def test_issue16_strict_json_refuses_what_json_lacks(text: str) -> None:
    """NaN, Infinity and numbers a 64-bit float cannot hold are errors, never inf, nan or 0.0."""
    with pytest.raises(JsonValueError):
        strict_json(text)
    assert strict_json('{"a": 1.5, "b": 0.0, "c": 1e308}') == {"a": 1.5, "b": 0.0, "c": 1e308}


def test_issue16_jsonl_nan_stops_the_load_at_its_line(tmp_path: Path) -> None:
    """`shoal load` of JSON lines: NaN on line 2 ends the input there, after the record before it."""
    records, error = read(tmp_path / "n.jsonl", '{"id": "a"}\n{"id": "b", "v": NaN}\n{"id": "c"}\n')
    assert records == [("a", {"id": "a"})]
    assert error == f"{tmp_path / 'n.jsonl'}:2: invalid JSON (NaN is not a JSON number; quote it to store the text)"


def test_issue16_skip_passes_over_records_unread(tmp_path: Path) -> None:
    """--skip N passes over N records (even a bad one) without parsing; keys keep their line numbers."""
    path = tmp_path / "s.jsonl"
    records, error = read(path, '{"v": 1}\n\n{"v": oops}\n{"v": 3}\n', skip=2)
    assert error is None and records == [("4", {"v": 3})]
    records, error = read(tmp_path / "s.csv", "id,v\na,1\nb,x,y\nc,3\n", skip=2)
    assert error is None and records == [("c", {"id": "c", "v": 3})]


def test_issue16_record_check_stops_at_the_line(tmp_path: Path) -> None:
    """A record the check refuses (the CLI checks the size limit there) ends the input at its line."""
    def check(key: str, value: object, line_bytes: int) -> None:
        if key == "b":
            raise ValueError(f"too big ({line_bytes} bytes)")

    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c"}\n')
    with RecordFile.open(path, "auto", None, check=check) as source:
        assert list(source.records()) == [("a", {"id": "a"})]
    assert source.error == f"{path}:2: too big (12 bytes)"


@pytest.mark.parametrize("value", ["NaN", "Infinity", "[1e400]", '{"x": -Infinity}'])
def test_issue16_put_refuses_non_json_numbers(value: str) -> None:
    """`shoal put` refuses NaN/Infinity/overflow in one line, before connecting."""
    result = CliRunner(env=ENV).invoke(app, ["--cluster", closed_address(), "put", "events", "k", value])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: the value is not valid JSON (")


def test_issue16_put_value_from_file_and_stdin(tmp_path: Path) -> None:
    """@FILE and - read the value; their errors name the source (a missing file, bad JSON on stdin)."""
    runner = CliRunner(env=ENV)
    missing = runner.invoke(app, ["--cluster", closed_address(), "put", "events", "k", f"@{tmp_path / 'no.json'}"])
    assert missing.exit_code == 1 and missing.stderr.startswith(f"error: cannot read {tmp_path / 'no.json'}")
    bad = runner.invoke(app, ["--cluster", closed_address(), "put", "events", "k", "-"], input="{oops")
    assert bad.exit_code == 1 and bad.stderr.startswith("error: the value on stdin is not valid JSON")
    (tmp_path / "v.json").write_text('{"a": NaN}')
    nan = runner.invoke(app, ["--cluster", closed_address(), "put", "events", "k", f"@{tmp_path / 'v.json'}"])
    assert nan.exit_code == 1 and nan.stderr.startswith(f"error: the value in {tmp_path / 'v.json'} is not valid")


def test_issue16_load_option_conflicts_are_one_line(tmp_path: Path) -> None:
    """--no-header with --columns, and a delimiter that is not one character, are usage errors in one line."""
    path = tmp_path / "a.csv"
    path.write_text("a\n")
    runner = CliRunner(env=ENV)
    both = runner.invoke(app, ["load", "ds", str(path), "--no-header", "--columns", "a"])
    assert both.exit_code == 2 and both.stderr.startswith("error: Invalid value for '--columns': --no-header and "
                                                          "--columns")
    wide = runner.invoke(app, ["load", "ds", str(path), "--delimiter", ";;"])
    assert wide.exit_code == 2 and wide.stderr.startswith("error: Invalid value for '--delimiter': must be one "
                                                          "character")
