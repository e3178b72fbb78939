"""The `shoal` command: help everywhere, one-line errors, file parsing for `load`, status JSON.

Method: typer's CliRunner drives the real app in-process (no node needed): every
command's --help, user mistakes (bad JSON, a bad address, a closed port, a bad node
flag) must give exit code 1 and exactly one `error: ...` line on stderr, never a
traceback. RecordFile and the status assembly are tested directly on small inputs.
"""
from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner, Result

from shoal.client import UnavailableError
from shoal.client.wire.pb import data_pb2 as pb
from shoal.client._status import assemble
from shoal.client.cli import app
from shoal.client.cli.data_cmds import RecordFile

ENV = {"SHOAL_CLUSTER": None, "SHOAL_TIMEOUT": None, "COLUMNS": "120"}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env=ENV)


def closed_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def command_paths() -> Iterator[list[str]]:
    """Every command and group of the app, as argv prefixes."""
    def walk(command: object, path: list[str]) -> Iterator[list[str]]:
        yield path
        for name, child in sorted(getattr(command, "commands", {}).items()):
            yield from walk(child, [*path, name])
    yield from walk(typer.main.get_command(app), [])


def assert_one_error_line(result: Result, starts_with: str, code: int = 1) -> None:
    assert isinstance(result.exception, SystemExit), result.exception   # not a crash
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {starts_with}"), lines[0]
    assert "Traceback" not in result.output


def test_cli_commands_include_the_documented_surface() -> None:
    """The commands of DESIGN.md section 9 that this package owns are all registered."""
    names = {" ".join(path) for path in command_paths()}
    assert {"dataset create", "dataset ls", "dataset drop", "put", "get", "delete", "load", "status",
            "node start"} <= names


@pytest.mark.parametrize("path", list(command_paths()), ids=lambda path: " ".join(path) or "shoal")
def test_cli_every_command_has_help(runner: CliRunner, path: list[str]) -> None:
    """--help works (exit 0, a usage line) for the app, every group and every command."""
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, (path, result.output)
    assert "Usage" in result.output


def test_cli_put_bad_json_is_one_line(runner: CliRunner) -> None:
    """A value that is not JSON is refused before any connection, in one line."""
    result = runner.invoke(app, ["--cluster", closed_address(), "put", "events", "k1", "{bad"])
    assert_one_error_line(result, "the value is not valid JSON")


@pytest.mark.parametrize("argv", [["status"], ["get", "events", "k1"], ["dataset", "ls"],
                                  ["put", "events", "k1", '{"a": 1}']])
def test_cli_unreachable_cluster_is_one_line(runner: CliRunner, argv: list[str]) -> None:
    """Nothing listening at --cluster: "cannot reach the cluster at ADDR (...)", exit 1."""
    address = closed_address()
    result = runner.invoke(app, ["--cluster", address, "--timeout", "0.1", *argv])
    assert_one_error_line(result, f"cannot reach the cluster at {address} (")


def test_cli_cluster_from_environment(runner: CliRunner) -> None:
    """SHOAL_CLUSTER is the default for --cluster."""
    address = closed_address()
    result = runner.invoke(app, ["status"], env={**ENV, "SHOAL_CLUSTER": address, "SHOAL_TIMEOUT": "0.1"})
    assert_one_error_line(result, f"cannot reach the cluster at {address}")


def test_cli_bad_cluster_address_is_one_line(runner: CliRunner) -> None:
    """A malformed --cluster is a one-line usage error (exit 2) naming the bad address."""
    result = runner.invoke(app, ["--cluster", "nonsense", "dataset", "ls"])
    assert_one_error_line(result, "Invalid value for '--cluster'", code=2)
    assert "bad cluster address 'nonsense': expected HOST:PORT" in result.stderr


def test_cli_load_missing_file_is_one_line(runner: CliRunner, tmp_path: Path) -> None:
    """An unreadable input file is reported before contacting the cluster."""
    result = runner.invoke(app, ["--cluster", closed_address(), "load", "events", str(tmp_path / "none.jsonl")])
    assert_one_error_line(result, "cannot read")


def test_cli_node_start_bad_flag_is_one_line(runner: CliRunner, tmp_path: Path) -> None:
    """A config error from the node (a bad --listen) is one line, not a traceback."""
    result = runner.invoke(app, ["node", "start", "--id", "n1", "--data-dir", str(tmp_path / "n1"),
                                 "--listen", "not-an-address"])
    assert_one_error_line(result, "listen: expected HOST:PORT")


def test_cli_node_start_garbage_tls_files_are_one_line(runner: CliRunner, tmp_path: Path) -> None:
    """Found by hand: a --tls-dir of garbage files ended in a TlsError traceback; one line naming them."""
    tls = tmp_path / "tls"
    tls.mkdir()
    for name in ("ca.pem", "node.pem", "node.key", "client.pem", "client.key"):
        (tls / name).write_text("garbage\n")
    result = runner.invoke(app, ["node", "start", "--id", "n1", "--data-dir", str(tmp_path / "n1"),
                                 "--listen", closed_address(), "--tls-dir", str(tls)])
    assert_one_error_line(result, "TLS file")
    assert str(tls) in result.stderr     # names the garbled file (ca.pem, the first one checked)


def test_record_file_jsonl_keys_and_bad_line(tmp_path: Path) -> None:
    """JSON lines: "id" is the key when the first record has one; a bad line stops with FILE:LINE."""
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": 7, "a": 1}\n\n{"id": "x", "a": 2}\n{"id": 9, oops}\n{"id": 10}\n')
    with RecordFile.open(path, "auto", None) as source:
        records = list(source.records())
        assert records == [("7", {"id": 7, "a": 1}), ("x", {"id": "x", "a": 2})]
        assert source.error == (f"{path}:4: invalid JSON (Expecting property name enclosed in double quotes "
                                "at column 11)")


def test_record_file_jsonl_line_number_keys_and_key_field(tmp_path: Path) -> None:
    """Without "id" the line number is the key; --key FIELD must exist in every record."""
    path = tmp_path / "data.json"
    path.write_text('{"name": "a"}\n{"name": "b"}\n{"other": 1}\n')
    with RecordFile.open(path, "jsonl", None) as source:
        assert [key for key, _ in source.records()] == ["1", "2", "3"] and source.error is None
    with RecordFile.open(path, "jsonl", "name") as source:
        assert [key for key, _ in source.records()] == ["a", "b"]
        assert source.error == f"{path}:3: no field 'name' (the key)"


def test_record_file_csv_numbers_and_errors(tmp_path: Path) -> None:
    """CSV: header row, numbers become int/float, text stays text; a short row is a FILE:LINE error."""
    path = tmp_path / "in.csv"
    path.write_text('id,amount,ratio,label\n1,12,0.5,DE\n2,-3,1e3,"a,b"\n3,x,.5,007x\n4,5\n')
    with RecordFile.open(path, "auto", None) as source:
        records = list(source.records())
    assert records == [("1", {"id": 1, "amount": 12, "ratio": 0.5, "label": "DE"}),
                       ("2", {"id": 2, "amount": -3, "ratio": 1000.0, "label": "a,b"}),
                       ("3", {"id": 3, "amount": "x", "ratio": 0.5, "label": "007x"})]
    assert source.error == f"{path}:5: expected 4 fields, got 2"
    assert source.bytes_read == path.stat().st_size


def test_record_file_sniffs_format_without_extension(tmp_path: Path) -> None:
    """--format auto: no known extension, so a leading "{" means JSON lines, anything else CSV."""
    jsonl, table = tmp_path / "a.txt", tmp_path / "b.txt"
    jsonl.write_text('{"v": 1}\n')
    table.write_text("v\n1\n")
    with RecordFile.open(jsonl, "auto", None) as one, RecordFile.open(table, "auto", None) as two:
        assert (one.format, two.format) == ("jsonl", "csv")
        assert list(one.records()) == [("1", {"v": 1})] and list(two.records()) == [("2", {"v": 1})]


def test_status_assemble_follows_the_json_contract() -> None:
    """nodes/datasets/under_replicated as DESIGN.md 9 says (counts as the node sent them); an unreachable
    node is reported, not raised."""
    shard_map = [pb.ShardInfo(index=0, epoch=2, primary="n1", replicas=["n1", "n2", "n3"]),
                 pb.ShardInfo(index=1, epoch=2, primary="n2", replicas=["n2", "n3"], learners=["n1"])]
    cluster_map = pb.ClusterMap(
        version=9, controller="n1", under_replicated=2,
        nodes=[pb.NodeInfo(id="n1", address="a:1", state="alive", zone="z1"),
               pb.NodeInfo(id="n2", address="a:2", state="alive"),
               pb.NodeInfo(id="n3", address="a:3", state="dead")],
        datasets=[pb.DatasetInfo(name="events", shards=2, replication=3, shard_map=shard_map, under_replicated=2)])
    statuses = {"a:1": pb.NodeStatus(id="n1", raft_role="leader", disk_free_bytes=10, uptime_s=1.5),
                "a:2": pb.NodeStatus(id="n2", raft_role="follower"),
                "a:3": UnavailableError("node status failed: Connection refused")}
    report = assemble(cluster_map, statuses)
    json.dumps(report)   # plain JSON types only
    assert report["controller"] == "n1" and report["under_replicated"] == 2
    assert report["datasets"] == [{"name": "events", "shards": 2, "replication": 3, "under_replicated": 2}]
    n1, n2, n3 = report["nodes"]
    assert (n1["id"], n1["raft_role"], n1["reachable"], n1["shards"], n1["primaries"], n1["learners"],
            n1["disk_free_bytes"]) == ("n1", "leader", True, 2, 1, 1, 10)
    assert (n2["shards"], n2["primaries"], n2["raft_role"]) == (2, 1, "follower")
    assert (n3["state"], n3["reachable"], n3["raft_role"], n3["disk_free_bytes"]) == ("dead", False, "unknown", None)
    assert n3["error"] == "node status failed: Connection refused"


def test_chaos_check_fails_a_stale_read_and_passes_a_good_history(tmp_path: Path) -> None:
    """`shoal chaos check` runs the linearizability checker on a history file; exit 1 when illegal."""
    def op(process: int, kind: str, value: int, start: float) -> dict[str, object]:
        return {"process": process, "kind": kind, "key": "x", "input": value if kind == "write" else None,
                "output": value if kind == "read" else None, "outcome": "ok", "start_s": start, "end_s": start + 1}

    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps([op(0, "write", 1, 0), op(1, "write", 2, 2), op(2, "read", 1, 4)]))
    good = tmp_path / "good.json"
    good.write_text(json.dumps([op(0, "write", 1, 0), op(1, "write", 2, 2), op(2, "read", 2, 4)]))
    runner = CliRunner()
    from shoal.client.cli import app

    bad_result = runner.invoke(app, ["chaos", "check", str(stale)])
    assert bad_result.exit_code == 1 and "illegal" in bad_result.output
    assert "p2 read x -> 1" in bad_result.output
    good_result = runner.invoke(app, ["chaos", "check", str(good)])
    assert good_result.exit_code == 0 and "linearizability: ok" in good_result.output
