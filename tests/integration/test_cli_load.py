"""Issue 16 point 3 against a real node: a load that fails part-way says FILE:LINE, why, what
is stored and how to resume; `put @FILE` / `put -`; `get` of a value JSON cannot show.

Method: one real node (LocalCluster, conftest `local_cluster`) and the typer app in-process
through CliRunner. The node failure is made deterministic: the record stream kills the node
after a fixed record, with LOAD_CHUNK_RECORDS lowered so earlier chunks are acknowledged.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shoal.client.cli import app, data_cmds
from shoal.client.cli.record_file import RecordFile
from shoal.client.local import LocalCluster

ClusterFactory = Callable[..., LocalCluster]


@pytest.fixture
def node(local_cluster: ClusterFactory) -> LocalCluster:
    cluster = local_cluster(1)
    with cluster.client() as client:
        client.create_dataset("events", shards=2, replication=1)
    return cluster


def shoal(cluster: LocalCluster, *argv: str, timeout_s: float = 10.0, stdin: str | None = None) -> Any:
    runner = CliRunner(env={"SHOAL_CLUSTER": None, "SHOAL_TIMEOUT": None, "COLUMNS": "200"})
    return runner.invoke(app, ["--cluster", cluster.cluster_address, "--timeout", str(timeout_s), *argv],
                         input=stdin)


@pytest.mark.parametrize("value_bytes", [2 * 1024 * 1024, 17 * 1024 * 1024], ids=["node-limit", "client-limit"])
def test_issue16_load_over_the_size_limit_names_line_and_count(node: LocalCluster, tmp_path: Path,
                                                               value_bytes: int) -> None:
    """A value over the node's value limit (1 MiB) or the client's message limit (16 MiB) on line 4 stops
    the load there: the 3 records before it are stored, and the error says FILE:4, the limit, the count,
    and the --skip that resumes."""
    path = tmp_path / "big.jsonl"
    with path.open("w") as out:
        for index in range(3):
            out.write(json.dumps({"id": f"r{index}"}) + "\n")
        out.write(json.dumps({"id": "huge", "v": "x" * value_bytes}) + "\n")
        out.write(json.dumps({"id": "after"}) + "\n")
    result = shoal(node, "load", "events", str(path))
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"error: {path}:4: "), result.stderr
    assert "bytes" in result.stderr and "limit" in result.stderr
    assert "loaded the 3 records before it into events; " in result.stderr
    assert "resume after fixing it with --skip 3" in result.stderr
    if value_bytes < 16 * 1024 * 1024:   # refused by a node: the record after it (line 5) may be stored already
        assert "the records after it on line 5 may be stored too" in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1
    resumed = shoal(node, "load", "events", str(path), "--skip", "4")
    assert resumed.exit_code == 0, resumed.output
    with node.client() as client:
        assert [client.get("events", key) for key in ("r0", "r2", "huge", "after")] == [
            {"id": "r0"}, {"id": "r2"}, None, {"id": "after"}]


def test_issue16_load_interrupted_by_node_failure_says_how_to_resume(
        node: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The node dies while chunk 3 (records 21-30) streams: the error names the line reached, that the 20
    records before line 21 are stored, and `--skip 20`; after a restart that resume loads all 50."""
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps({"id": f"m{index}", "v": index}) + "\n" for index in range(50)))
    monkeypatch.setattr(data_cmds, "LOAD_CHUNK_RECORDS", 10)
    original = RecordFile.records

    def dying(self: RecordFile) -> Iterator[tuple[str, Any]]:
        for count, record in enumerate(original(self), 1):
            if count == 25 and node.is_running("n1"):
                node.kill("n1")
            yield record

    monkeypatch.setattr(RecordFile, "records", dying)
    result = shoal(node, "load", "events", str(path), timeout_s=1.0)
    assert result.exit_code == 1, result.output
    line = result.stderr.strip()
    assert line.startswith(f"error: {path}:"), line
    assert "the 20 records before line 21 are stored; records from line 21 to line" in line
    assert f"resume with: shoal load events {path} --skip 20 and the same options" in line
    monkeypatch.setattr(RecordFile, "records", original)
    node.start_node("n1")
    node.wait_ready(timeout_s=60)
    resumed = shoal(node, "load", "events", str(path), "--skip", "20")
    assert resumed.exit_code == 0, resumed.output
    assert "loaded 30 records" in resumed.stdout
    with node.client() as client:
        assert sum(1 for _ in client.scan("events")) == 50


def test_issue16_put_from_file_and_stdin_and_get_of_nan(node: LocalCluster, tmp_path: Path) -> None:
    """put @FILE and put - store a value too big for an argument; get of a stored NaN is one error line."""
    big = {"blob": "y" * 600_000}      # over Linux's 128 KiB limit for one argument
    (tmp_path / "v.json").write_text(json.dumps(big))
    assert shoal(node, "put", "events", "f", f"@{tmp_path / 'v.json'}").exit_code == 0
    assert shoal(node, "put", "events", "s", "-", stdin="[1, 2]").exit_code == 0
    assert json.loads(shoal(node, "get", "events", "f").stdout) == big
    assert shoal(node, "get", "events", "s").stdout == "[1, 2]\n"
    with node.client() as client:
        client.put("events", "nan", {"x": float("nan")})
    result = shoal(node, "get", "events", "nan")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("error: the value of key 'nan' holds NaN or Infinity")


def test_issue16_csv_load_keeps_columns(node: LocalCluster, tmp_path: Path) -> None:
    """End to end: a repeated header is refused and stores nothing; --columns loads the same rows."""
    path = tmp_path / "people.csv"
    path.write_text("id,name,name\nu2,Ann,Smith\n")
    refused = shoal(node, "load", "events", str(path))
    assert refused.exit_code == 1 and "repeats the name 'name'" in refused.stderr
    path.write_text("u2,Ann,Smith\n")
    loaded = shoal(node, "load", "events", str(path), "--columns", "id,first,last")
    assert loaded.exit_code == 0, loaded.output
    assert json.loads(shoal(node, "get", "events", "u2").stdout) == {"id": "u2", "first": "Ann", "last": "Smith"}


def test_dataset_export_then_import_restores_records_schema_and_layout(node: LocalCluster, tmp_path: Path) -> None:
    """Issue 19.9 (backup and restore): export a schema-less and a typed dataset, import both
    under new names: same records (bytes, NaN, nested values kept exactly), same shards,
    replication and schema. An existing target and a file cut short are one clear error each."""
    values = {"b": b"\x00\xff raw", "nan": float("nan"), "nested": {"a": [1, 2.5, None, "x"]}, "big": 2**62}
    with node.client() as client:
        for key, value in values.items():
            client.put("events", key, value)
        client.put_many("events", ((f"k{i:04d}", i) for i in range(2500)))
        client.create_dataset("typed", shards=3, replication=1, schema={"carrier": "str", "delay": "float?"})
        client.put_many("typed", ((f"f{i}", {"carrier": "AA", "delay": None if i % 3 else i / 2}) for i in range(50)))
    for name in ("events", "typed"):
        result = shoal(node, "dataset", "export", name, str(tmp_path / f"{name}.shoal"))
        assert result.exit_code == 0, result.output
        result = shoal(node, "dataset", "import", str(tmp_path / f"{name}.shoal"), "--name", f"{name}2")
        assert result.exit_code == 0 and "imported" in result.output, result.output
    with node.client() as client:
        for name in ("events", "typed"):
            before, after = dict(client.scan(name)), dict(client.scan(f"{name}2"))
            assert before.keys() == after.keys() and len(before) > 0
            for key, value in before.items():
                same = after[key] == value or (value != value and after[key] != after[key])   # NaN
                assert same, (name, key, value, after[key])
        layout = {d.name: (d.shards, d.replication, d.schema_json) for d in client.cluster_map().datasets}
        assert layout["typed2"] == layout["typed"] and layout["events2"][:2] == layout["events"][:2]
    again = shoal(node, "dataset", "import", str(tmp_path / "events.shoal"), "--name", "events2")
    assert again.exit_code != 0 and "--into-existing" in again.output, again.output
    cut = tmp_path / "cut.shoal"
    cut.write_bytes((tmp_path / "events.shoal").read_bytes()[:-200])
    broken = shoal(node, "dataset", "import", str(cut), "--name", "events3")
    assert broken.exit_code != 0 and ("incomplete" in broken.output or "damaged" in broken.output), broken.output
