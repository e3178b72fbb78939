"""What every `shoal` command shares: the global options, the client, one-line errors.

Errors are one line on stderr ("error: ...") and exit code 1, never a traceback, for
anything a user can cause: a bad address, an unknown dataset, an unreachable cluster.
`command_errors` is the one place that turns ShoalError into such a line; commands
raise or call `fail` and never print errors themselves. Plain typer.echo, not rich, for
errors: rich wraps long lines at the terminal width, and "one line" is part of the
contract scripts rely on.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console

from shoal.client import Client, ClientConfig, ShoalError

logger = logging.getLogger(__name__)

DEFAULT_CLUSTER = "127.0.0.1:7400"
DEFAULT_TIMEOUT_S = 10.0
LOCAL_DATA_DIR = Path("shoal-data")   # shoal up's default --data-dir (cluster_cmds.DEFAULT_DATA_DIR)
P = ParamSpec("P")
R = TypeVar("R")


@dataclasses.dataclass(frozen=True, slots=True)
class CliState:
    """The global options, stored in the typer context for every subcommand."""

    cluster: str = DEFAULT_CLUSTER
    timeout_s: float = DEFAULT_TIMEOUT_S
    tls_dir: str = ""
    token: str = dataclasses.field(default="", repr=False)


def main_options(
    ctx: typer.Context,
    cluster: Annotated[str, typer.Option(
        "--cluster", envvar="SHOAL_CLUSTER", metavar="HOST:PORT[,HOST:PORT...]",
        help="Any node(s) of the cluster; the others are found from there.")] = DEFAULT_CLUSTER,
    timeout_s: Annotated[float, typer.Option(
        "--timeout", envvar="SHOAL_TIMEOUT", min=0.1, metavar="SECONDS",
        help="Give up on a request (retries included) after this long.")] = DEFAULT_TIMEOUT_S,
    tls_dir: Annotated[str, typer.Option(
        "--tls-dir", envvar="SHOAL_TLS_DIR", metavar="DIR",
        help="Mutual TLS with DIR/ca.pem, client.pem and client.key (shoal certs init DIR).")] = "",
    token: Annotated[str, typer.Option(
        "--token", envvar="SHOAL_TOKEN", metavar="TOKEN", show_default=False,
        help="Bearer token (shoal token create); prefer SHOAL_TOKEN or --token-file: "
             "a flag shows in the process list.")] = "",
    token_file: Annotated[str, typer.Option(
        "--token-file", envvar="SHOAL_TOKEN_FILE", metavar="FILE",
        help="Read the bearer token from FILE.")] = "",
) -> None:
    """Shoal: a distributed data store. Start nodes, load data, look at the cluster."""
    if token_file and not token:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            fail(f"cannot read token file {token_file}: {exc.strerror}")
    ctx.obj = CliState(cluster, timeout_s, tls_dir, token)


def state(ctx: typer.Context) -> CliState:
    found = ctx.find_object(CliState)
    return found if found is not None else CliState()


@contextlib.contextmanager
def connect(ctx: typer.Context) -> Iterator[Client]:
    """A Client for the --cluster address, closed at the end of the block.

    When --cluster was not given (no flag, no SHOAL_CLUSTER) and ./shoal-data/cluster.json
    exists, its nodes' addresses follow the default one: `shoal status` next to a local
    cluster works when its first node is the dead one. Its TLS files (`shoal up --tls`) and
    admin token (`shoal up --auth`) are used too unless --tls-dir / a token were given.
    """
    options = state(ctx)
    seeds, tls_dir, token = options.cluster, options.tls_dir, options.token
    if _cluster_is_default(ctx):
        seeds = ",".join(dict.fromkeys([options.cluster, *local_cluster_addresses(LOCAL_DATA_DIR)]))
        if not tls_dir and (LOCAL_DATA_DIR / "tls" / "ca.pem").exists():   # next to a `shoal up --tls` cluster
            tls_dir = str(LOCAL_DATA_DIR / "tls")
        if not token and (LOCAL_DATA_DIR / "admin.token").exists():   # next to a `shoal up --auth` cluster
            token = (LOCAL_DATA_DIR / "admin.token").read_text().strip()
    client = Client(seeds, timeout_s=options.timeout_s, config=ClientConfig(tls_dir=tls_dir, token=token))
    try:
        yield client
    finally:
        client.close()


def _cluster_is_default(ctx: typer.Context) -> bool:
    root = ctx.find_root()
    try:
        source = root.get_parameter_source("cluster")
    except Exception:          # no such parameter (a command run outside the app)
        return False
    return source is not None and source.name in ("DEFAULT", "DEFAULT_MAP")


def local_cluster_addresses(data_dir: Path) -> list[str]:
    """The node addresses recorded by `shoal up` in DATA_DIR/cluster.json ([] if none or unreadable)."""
    from shoal.client.local import LocalClusterError, read_record

    try:
        record = read_record(data_dir.resolve())
    except (LocalClusterError, OSError):
        return []
    nodes = record.get("nodes", []) if record else []
    return [node["address"] for node in nodes if isinstance(node, dict) and isinstance(node.get("address"), str)]


def console(*, stderr: bool = False) -> Console:
    """A rich console; 140 columns when not a terminal, so piped tables are not cut at 80."""
    probe = Console(stderr=stderr)
    return probe if probe.is_terminal else Console(stderr=stderr, width=140)


def fail(message: str, *, code: int = 1) -> NoReturn:
    """Print one `error: ...` line on stderr and exit with `code`."""
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(code)


def one_line(text: str) -> str:
    return " ".join(text.split())


def command_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Decorate a command: ShoalError and Ctrl-C become one line and an exit code."""
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ShoalError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted", code=130)
    return wrapper
