"""Issue 16 point 5: the CLI an operator leans on (no node needed).

Method: typer's CliRunner drives the real app in-process against closed ports; the
option hoisting and the degraded-shard rule are pure functions tested directly.
"""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from shoal.client.cli import app
from shoal.client.cli._group import ShoalGroup
from shoal.client._status import assemble
from shoal.client.wire.pb import data_pb2 as pb

ENV = {"SHOAL_CLUSTER": None, "SHOAL_TIMEOUT": None, "SHOAL_LOG_LEVEL": None, "COLUMNS": "120"}


def closed_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def one_line(result: object, code: int, starts_with: str) -> None:
    assert result.exit_code == code, result.output                      # type: ignore[attr-defined]
    lines = result.stderr.splitlines()                                   # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].startswith(f"error: {starts_with}"), result.stderr   # type: ignore
    assert "Traceback" not in result.output and "╭" not in result.output   # type: ignore[attr-defined]


@pytest.mark.parametrize(("argv", "expected"), [
    (["status", "--cluster", "a:1"], ["--cluster", "a:1", "status"]),
    (["dataset", "create", "x", "--timeout=2", "--shards", "1"], ["--timeout=2", "dataset", "create", "x",
                                                                  "--shards", "1"]),
    (["--cluster", "a:1", "get", "ds", "k", "--timeout", "3"], ["--timeout", "3", "--cluster", "a:1", "get", "ds",
                                                                 "k"]),
    (["up", "--timeout", "5"], ["up", "--timeout", "5"]),                 # up's own --timeout stays
    (["down", "--timeout", "5", "--cluster", "a:1"], ["--cluster", "a:1", "down", "--timeout", "5"]),
    (["put", "ds", "k", "--", "--cluster"], ["put", "ds", "k", "--", "--cluster"]),
])
def test_issue16_global_options_after_the_subcommand_are_hoisted(argv: list[str], expected: list[str]) -> None:
    """--cluster/--timeout after the subcommand move in front of it, unless the command has its own."""
    group = typer.main.get_command(app)
    assert isinstance(group, ShoalGroup)
    with group.make_context("shoal", ["--help"], resilient_parsing=True) as ctx:
        assert group.hoist_global_options(ctx, argv) == expected


def test_issue16_cluster_after_the_subcommand_is_used() -> None:
    """`shoal status --cluster ADDR --timeout 0.1` talks to ADDR (end to end through the parser)."""
    address = closed_address()
    result = CliRunner(env=ENV).invoke(app, ["status", "--cluster", address, "--timeout", "0.1"])
    one_line(result, 1, f"cannot reach the cluster at {address}")


@pytest.mark.parametrize(("argv", "starts_with"), [
    (["dataset", "create", "x", "--shards", "0"], "Invalid value for '--shards'"),
    (["load", "ds", "f.csv", "--skip", "-1"], "Invalid value for '--skip'"),
    (["status", "--bogus"], "No such option: --bogus"),
    (["put", "ds"], "Missing argument"),
])
def test_issue16_usage_errors_are_one_line(argv: list[str], starts_with: str) -> None:
    """Usage errors: one `error:` line naming the command's --help, exit code 2, no box."""
    result = CliRunner(env=ENV).invoke(app, argv)
    one_line(result, 2, starts_with)
    assert "--help)" in result.stderr


def test_issue16_bad_log_level_is_one_line(tmp_path: Path) -> None:
    """--log-level LOUD (a usage error, exit 2), and the same through SHOAL_LOG_LEVEL (the node's config, exit
    1), are one line, no traceback."""
    runner = CliRunner(env={**ENV, "SHOAL_RAFT_PASSWORD": "password-for-tests"})
    argv = ["node", "start", "--id", "n1", "--data-dir", str(tmp_path / "n1"), "--listen", closed_address()]
    one_line(runner.invoke(app, [*argv, "--log-level", "LOUD"]), 2,
             "Invalid value for '--log-level': must be one of DEBUG")
    from_env = runner.invoke(app, argv, env={**ENV, "SHOAL_LOG_LEVEL": "LOUD"})
    one_line(from_env, 1, "log level: Unknown level: 'LOUD'")


def test_issue16_status_separates_unavailable_from_under_replicated() -> None:
    """A shard with no in-sync replica on an alive node is unavailable; one with fewer than wanted is
    under-replicated; both are listed with the copies left; the node's counts stay as sent."""
    shard_map = [pb.ShardInfo(index=0, primary="n1", replicas=["n1", "n2"]),
                 pb.ShardInfo(index=1, primary="n3", replicas=["n3"]),
                 pb.ShardInfo(index=2, primary="n2", replicas=["n2", "n3"], learners=["n1"])]
    cluster_map = pb.ClusterMap(
        version=3, controller="n1", under_replicated=2,
        nodes=[pb.NodeInfo(id="n1", address="a:1", state="alive"), pb.NodeInfo(id="n2", address="a:2", state="alive"),
               pb.NodeInfo(id="n3", address="a:3", state="dead")],
        datasets=[pb.DatasetInfo(name="events", shards=3, replication=2, shard_map=shard_map, under_replicated=2)])
    report = assemble(cluster_map, {})
    json.dumps(report)
    assert report["under_replicated"] == 2 and report["unavailable"] == 1
    assert [(e["shard"], e["state"], e["copies_left"], e["replicas"], e["learners"])
            for e in report["degraded_shards"]] == [(1, "unavailable", 0, ["n3"], []),
                                                    (2, "under-replicated", 1, ["n2", "n3"], ["n1"])]
    assert report["datasets"] == [{"name": "events", "shards": 3, "replication": 2, "under_replicated": 2}]


def test_issue18_status_shows_each_copy_under_way() -> None:
    """A learner's node reports its copy (phase, records of the primary's count, rate, ETA): status
    attaches it to the shard's degraded entry, and the table prints it; a learner that did not
    answer shows nothing."""
    from shoal.client.cli.data_cmds import _repair_text
    shard_map = [pb.ShardInfo(index=0, primary="n1", replicas=["n1", "n2"], learners=["n4"]),
                 pb.ShardInfo(index=1, primary="n2", replicas=["n2", "n1"], learners=["n3"])]
    cluster_map = pb.ClusterMap(
        version=9, controller="n1", under_replicated=2,
        nodes=[pb.NodeInfo(id=f"n{i}", address=f"a:{i}", state="alive") for i in (1, 2, 3, 4)],
        datasets=[pb.DatasetInfo(name="kv", shards=2, replication=3, shard_map=shard_map, under_replicated=2)])
    learner = pb.NodeStatus(id="n4", shards=[
        pb.ShardStatus(dataset="kv", index=0, role="learner", fill_phase="copying", fill_records_done=450,
                       fill_records_total=1000, fill_bytes_per_s=2 * 1024 * 1024, fill_eta_s=8.04),
        pb.ShardStatus(dataset="other", index=0, role="backup")])
    report = assemble(cluster_map, {"a:4": learner})
    json.dumps(report)
    repairs = {e["shard"]: e["repair"] for e in report["degraded_shards"]}
    assert repairs[1] == []
    assert repairs[0] == [{"node": "n4", "phase": "copying", "records_done": 450, "records_total": 1000,
                           "percent": 45.0, "bytes_per_s": 2097152, "eta_s": 8.0}]
    assert _repair_text(repairs[0][0]) == "n4 copying 45% 2.0 MiB/s ETA 8 s"


def test_issue16_status_falls_back_to_local_cluster_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --cluster, the addresses of ./shoal-data/cluster.json are tried after the default; an
    explicit --cluster is used alone."""
    recorded = closed_address()
    (tmp_path / "shoal-data").mkdir()
    (tmp_path / "shoal-data" / "cluster.json").write_text(json.dumps(
        {"format": 1, "voters": 1, "base_port": 7400, "env": {},
         "nodes": [{"id": "n1", "address": recorded, "host": "127.0.0.1", "data_dir": "shoal-data/n1"}]}))
    monkeypatch.chdir(tmp_path)
    from shoal.client.cli._common import local_cluster_addresses

    assert local_cluster_addresses(Path("shoal-data")) == [recorded]
    explicit = closed_address()
    result = CliRunner(env=ENV).invoke(app, ["--cluster", explicit, "--timeout", "0.2", "status"])
    one_line(result, 1, f"cannot reach the cluster at {explicit} (")
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 7400)) == 0:
            pytest.skip("something listens on the default address 127.0.0.1:7400")
    result = CliRunner(env=ENV).invoke(app, ["--timeout", "0.2", "status"])
    one_line(result, 1, "cannot reach the cluster at 127.0.0.1:7400")
    assert recorded in result.stderr


def test_token_create_out_never_leaves_a_token_without_its_file(tmp_path: Path) -> None:
    """Issue 19.2: `token create --out FILE` opens FILE before it asks the cluster, so a token is never made
    that nobody holds; an unwritable FILE and an unreachable cluster are one line each, and leave no file."""
    runner = CliRunner()
    address = closed_address()
    result = runner.invoke(app, ["--cluster", address, "--timeout", "1", "token", "create", "--role", "admin",
                                 "--out", str(tmp_path / "missing" / "admin.token")], env=ENV)
    one_line(result, 1, "cannot write token file")
    out = tmp_path / "admin.token"
    result = runner.invoke(app, ["--cluster", address, "--timeout", "1", "token", "create", "--role", "admin",
                                 "--out", str(out)], env=ENV)
    one_line(result, 1, "cannot reach the cluster")
    assert not out.exists()
    out.write_text("st_kept\n")
    result = runner.invoke(app, ["--cluster", address, "token", "create", "--out", str(out)], env=ENV)
    one_line(result, 1, "cannot write token file")
    assert out.read_text() == "st_kept\n"
    result = runner.invoke(app, ["--cluster", address, "token", "create", "--role", "root"], env=ENV)
    one_line(result, 2, "Invalid value for '--role': unknown role 'root'")


@pytest.mark.parametrize(("env", "starts_with"), [
    ({"SHOAL_TOKEN": "st_0123456789ab_secret\nmore"}, "token must be printable ASCII"),
    ({"SHOAL_TOKEN": "st_0123456789ab_caf\u00e9"}, "token must be printable ASCII"),
    ({"SHOAL_TOKEN_FILE": "BINARY"}, "token file"),
])
def test_a_token_that_cannot_travel_is_one_line(tmp_path: Path, env: dict[str, str], starts_with: str) -> None:
    """Found by hand: a token with a line break or a non-ASCII character gave gRPC's 'Invalid metadata'
    (and C-core log lines), a binary token file a UnicodeDecodeError traceback; the token is never shown."""
    binary = tmp_path / "token.bin"
    binary.write_bytes(bytes(range(128, 256)))
    env = {name: str(binary) if value == "BINARY" else value for name, value in env.items()}
    result = CliRunner(env={"SHOAL_TOKEN": None, **env}).invoke(app, ["--cluster", closed_address(), "status"])
    one_line(result, 1, starts_with)
    assert "secret" not in result.output and "caf" not in result.output
