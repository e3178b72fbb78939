"""What every `shoal` command shares: the global options, the client, one-line errors.

Errors are one line on stderr ("error: ...") and exit code 1, never a traceback, for
anything a user can cause: an unknown dataset, an unreachable cluster, a missing TLS file.
`command_errors` is the one place that turns ShoalError into such a line; commands
raise or call `fail` and never print errors themselves. Plain typer.echo, not rich, for
errors: rich wraps long lines at the terminal width, and "one line" is part of the
contract scripts rely on. Control characters a user or a node put in a message (a NUL
in a name) are escaped, never printed raw; a dataset name that is not plain text is
shown as its repr in the `[dataset=...]` tag.

A bad option or argument is a usage error (exit 2, printed by _group.ShoalGroup): the
callbacks below check what typer's types cannot (finite seconds, a HOST:PORT list, a
dataset name the node can hold), and `usage_error` is the same for checks a command can
only make later (a CSV column named by --text-columns). Limits the node enforces come from
the client's mirror of them (_arguments.py), so the option names its range
(tests/unit/test_cli_limits.py pins them to the node's).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Final, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console

from shoal.client import Client, ClientConfig, InvalidArgumentError, ShoalError
from shoal.client._arguments import LIMIT_MAX, REPLICATION_MAX, SHARDS_MAX
from shoal.client._config import parse_addresses
from shoal.client.wire.tls import TlsError

logger = logging.getLogger(__name__)

DEFAULT_CLUSTER = "127.0.0.1:7400"
DEFAULT_TIMEOUT_S = 10.0
TIMEOUT_S_MIN: Final = 0.1
TIMEOUT_S_MAX: Final = 86_400.0   # one day: --timeout bounds one request, retries included (the
                                  # Python client's own bound, ClientConfig, is wider)
DATASET_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")   # node/metadata/fsm.py _DATASET_NAME
INT64_MAX: Final = LIMIT_MAX          # a query's --limit, a --seed: what msgpack and protobuf hold
_KEPT_CONTROLS = "\t\n\r\x0b\x0c"   # whitespace: one_line folds it into spaces
_CONTROL_ESCAPES: Final = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7f, 0xa0))
                           if chr(code) not in _KEPT_CONTROLS}
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


def seconds_range(minimum_s: float, maximum_s: float) -> Callable[[float | None], float | None]:
    """An option callback: a finite number of seconds within minimum_s..maximum_s, else a usage error.

    typer's min=/max= let NaN through and have no upper bound by default; inf or 1e308 s
    would overflow the first deadline it reaches.
    """
    def check(value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and minimum_s <= value <= maximum_s):
            raise typer.BadParameter(f"must be a finite number of seconds within {minimum_s:g}..{maximum_s:g}, "
                                     f"got {value:g}")
        return value
    return check


def check_cluster(value: str) -> str:
    """--cluster / SHOAL_CLUSTER: HOST:PORT[,HOST:PORT...], else a usage error naming the bad address."""
    try:
        parse_addresses(value)
    except InvalidArgumentError as exc:
        raise typer.BadParameter(exc.message) from None
    return value


def check_dataset_name(value: str | None) -> str | None:
    """A dataset argument: a name the node can hold (letters, digits, _ . -), else a usage error."""
    if value is not None and not DATASET_NAME.fullmatch(value):
        raise typer.BadParameter(f"dataset name {value!r} must match {DATASET_NAME.pattern} (letters, digits, "
                                 "_ . -; up to 128 characters)")
    return value


def usage_error(ctx: typer.Context, option: str, message: str) -> NoReturn:
    """A bad option found inside a command (exit 2, as typer's own): "Invalid value for 'OPTION': MESSAGE"."""
    raise typer.BadParameter(message, ctx=ctx, param_hint=[option])


def main_options(
    ctx: typer.Context,
    cluster: Annotated[str, typer.Option(
        "--cluster", envvar="SHOAL_CLUSTER", metavar="HOST:PORT[,HOST:PORT...]", callback=check_cluster,
        help="Any node(s) of the cluster; the others are found from there.")] = DEFAULT_CLUSTER,
    timeout_s: Annotated[float, typer.Option(
        "--timeout", envvar="SHOAL_TIMEOUT", metavar="SECONDS", callback=seconds_range(TIMEOUT_S_MIN, TIMEOUT_S_MAX),
        help=f"Give up on a request (retries included) after this long ({TIMEOUT_S_MIN:g} to {TIMEOUT_S_MAX:g}).")]
    = DEFAULT_TIMEOUT_S,
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
        except UnicodeDecodeError:
            fail(f"token file {token_file} is not text: it should hold the token shoal token create printed")
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
    """`text` on one line: whitespace runs become one space, other control characters \\xNN escapes."""
    return " ".join(text.translate(_CONTROL_ESCAPES).split())


def shown_name(name: str) -> str:
    """A name as written when it is plain printable text without spaces, else its repr."""
    return name if name and name.isprintable() and not any(char.isspace() for char in name) else repr(name)


def error_text(exc: ShoalError) -> str:
    """str(exc), with a dataset name that is not plain text shown as its repr in the [dataset=...] tag."""
    text = str(exc)
    if exc.dataset is not None and shown_name(exc.dataset) != exc.dataset:
        text = text.replace(f"[dataset={exc.dataset}", f"[dataset={shown_name(exc.dataset)}", 1)
    return text


def command_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Decorate a command: ShoalError and Ctrl-C become one line and an exit code."""
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ShoalError as exc:
            fail(error_text(exc))
        except TlsError as exc:          # a missing or unreadable --tls-dir file, found at the first call
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted", code=130)
    return wrapper
