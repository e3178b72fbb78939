"""Usage errors of the `shoal` command: every bad option or argument is one line and exit 2.

Method: typer's CliRunner drives the real app in-process against a closed port; a usage
error is found while the arguments are parsed, before any connection. Each kind is
covered across every option of that kind (every integer option and its range, every
seconds option and inf/NaN/huge, every name and format the CLI checks), plus the limits
the CLI mirrors from the node, pinned to the node's own constants.
"""
from __future__ import annotations

import socket
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from shoal.client import DatasetNotFoundError
from shoal.client.cli import _common, app
from shoal.client.cli._common import error_text, one_line
from shoal.client.cli.query_cmds import parse_order_by

ENV = {"SHOAL_CLUSTER": None, "SHOAL_TIMEOUT": None, "SHOAL_LOG_LEVEL": None, "COLUMNS": "120"}
HUGE = "99999999999999999999999"


def closed_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def usage_error(result: Result, *words: str) -> None:
    """Exit 2, one `error: Invalid value ...` line naming the --help, no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "--help)" in lines[0], lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    assert "Traceback" not in result.output


def invoke(argv: list[str], **env: str) -> Result:
    return CliRunner(env={**ENV, **env}).invoke(app, ["--cluster", closed_address(), *argv])


@pytest.mark.parametrize(("argv", "option"), [
    (["dataset", "create", "z7", "--shards", HUGE], "'--shards'"),
    (["dataset", "create", "z7", "--shards", "4097"], "'--shards'"),
    (["dataset", "create", "z7", "--replication", "4294967296"], "'--replication'"),
    (["dataset", "create", "z7", "--replication", "10"], "'--replication'"),
    (["query", "ds", "--limit", HUGE], "'--limit'"),
    (["query", "ds", "--limit", "-1"], "'--limit'"),
    (["chaos", "run", "kill-primary", "--seed", HUGE], "'--seed'"),
    (["node", "start", "--workers", HUGE], "'--workers'"),
    (["up", "--nodes", HUGE], "'--nodes'"),
    (["up", "--port", HUGE], "'--port'"),
])
def test_f6_integer_options_out_of_range_are_usage_errors(argv: list[str], option: str) -> None:
    """F6: an integer past what its protobuf field or the node holds (uint32 shards, a 2**64 limit) is a usage
    error naming the option and its bound, never ValueError/OverflowError from protobuf."""
    usage_error(invoke(argv), f"Invalid value for {option}")


@pytest.mark.parametrize(("argv", "env", "option"), [
    (["--timeout", "inf", "get", "ds", "k1"], {}, "'--timeout'"),
    (["--timeout", "1e308", "get", "ds", "k1"], {}, "'--timeout'"),
    (["get", "ds", "k1", "--timeout", "nan"], {}, "'--timeout'"),
    (["--timeout", "0", "status"], {}, "'--timeout'"),
    (["status"], {"SHOAL_TIMEOUT": "1e12"}, "SHOAL_TIMEOUT"),
    (["up", "--timeout", "inf"], {}, "'--timeout'"),
    (["down", "--timeout", "nan"], {}, "'--timeout'"),
    (["node", "drain", "n1", "--wait-timeout", "inf"], {}, "'--wait-timeout'"),
    (["chaos", "run", "kill-primary", "--duration", "1e308"], {}, "'--duration'"),
    (["chaos", "check", "h.jsonl", "--timeout", "-inf"], {}, "'--timeout'"),
])
def test_f7_seconds_options_must_be_finite_and_bounded(argv: list[str], env: dict[str, str], option: str) -> None:
    """F7: inf, NaN, 1e308 or 1e12 seconds (flag or SHOAL_TIMEOUT) is a usage error naming the option and the
    range, not OverflowError from the first deadline (time_t)."""
    usage_error(invoke(argv, **env), option, "must be a finite number of seconds within")


def test_f7_global_timeout_names_its_range() -> None:
    """F7: the message gives the range of --timeout (0.1 to one day), and both ends of it are accepted."""
    usage_error(invoke(["--timeout", "inf", "status"]), f"within 0.1..{_common.TIMEOUT_S_MAX:g}, got inf")
    for seconds in ("0.1", f"{_common.TIMEOUT_S_MAX:g}"):
        assert invoke(["--timeout", seconds, "status", "--help"]).exit_code == 0


@pytest.mark.parametrize(("argv", "words"), [
    (["--cluster", "notanaddress", "status"], ("'--cluster'", "bad cluster address 'notanaddress'")),
    (["dataset", "create", "bad name"], ("dataset name 'bad name' must match",)),
    (["put", "x\x01y", "k", "1"], ("dataset name 'x\\x01y' must match",)),
    (["get", "a\nb", "k"], ("dataset name 'a\\nb' must match",)),
    (["query", "x/y"], ("dataset name 'x/y' must match",)),
    (["dataset", "import", "f.shoal", "--name", "-x"], ("'--name'",)),
    (["query", "ds", "--agg", "n=median(x)"], ("'--agg'", "expected NAME=FUNC(FIELD)")),
    (["query", "ds", "--with-column", "speed"], ("'--with-column'", "expected NAME=EXPR")),
    (["query", "ds", "--with-column", "speed="], ("'--with-column'", "expected NAME=EXPR")),
    (["query", "ds", "--order-by", "n:up"], ("'--order-by'", "expected FIELD, FIELD:desc or FIELD:asc")),
    (["token", "create", "--role", "root"], ("'--role'", "unknown role 'root'")),
    (["certs", "issue", "dir", "bogus"], ("must be one of node, client",)),
    (["node", "start", "--log-format", "xml"], ("'--log-format'",)),
])
def test_f17_format_errors_are_usage_errors(argv: list[str], words: tuple[str, ...]) -> None:
    """F17: a malformed address, dataset name, --agg, --with-column, --order-by, role or identity is a usage
    error (exit 2) before anything is sent; a name with a control character is shown escaped, never raw."""
    if argv[0] == "certs":
        result = CliRunner(env=ENV).invoke(app, argv)
    else:
        result = invoke(argv)
    usage_error(result, *words)
    assert "\x01" not in result.stderr and "a\nb" not in result.stderr


@pytest.mark.parametrize(("text", "expected"), [
    ("n", ("n", False)), ("n:desc", ("n", True)), ("n:asc", ("n", False)), ("n:DESC", ("n", True)),
    ("`odd:name`", ("`odd:name`", False)), ("`odd:name`:desc", ("`odd:name`", True)),
])
def test_f17_order_by_accepts_field_and_direction(text: str, expected: tuple[str, bool]) -> None:
    """F17: FIELD, FIELD:desc and FIELD:asc (any case) parse; a ':' inside a quoted name belongs to it."""
    assert parse_order_by(text) == expected
    with pytest.raises(typer.BadParameter, match="expected FIELD, FIELD:desc or FIELD:asc"):
        parse_order_by("n:descending")


def test_f17_error_lines_escape_control_characters() -> None:
    """F17: a NUL or newline in a dataset name shows as its repr in the [dataset=...] tag, and no control
    character reaches the terminal raw; plain names print as they are."""
    odd = DatasetNotFoundError("dataset a\nb\x00 does not exist", dataset="a\nb\x00")
    line = one_line(error_text(odd))
    assert line.endswith("[dataset='a\\nb\\x00']"), line
    assert line.isprintable()
    plain = DatasetNotFoundError("dataset nosuch does not exist", dataset="nosuch")
    assert one_line(error_text(plain)) == "dataset nosuch does not exist [dataset=nosuch]"


def test_cli_limits_mirror_the_node() -> None:
    """The node's limits that the CLI checks up front (shards, replication, dataset names) are the node's own:
    a change there must change the CLI, or the CLI would refuse what the node accepts."""
    from shoal.node.metadata import fsm

    assert _common.SHARDS_MAX == fsm.SHARDS_MAX
    assert _common.REPLICATION_MAX == fsm.REPLICATION_MAX
    assert _common.DATASET_NAME.pattern == fsm._DATASET_NAME.pattern


def test_f5_certs_init_unwritable_dir_is_one_line(tmp_path: Path) -> None:
    """F5 (same kind): certs init under a path that cannot be a directory is `cannot write PATH: reason`, exit 1."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = CliRunner(env=ENV).invoke(app, ["certs", "init", str(blocker / "tls")])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"error: cannot write {blocker}"), result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.output
